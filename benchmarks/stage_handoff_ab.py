"""The realtime targets with the two analysis stages' hand-off as it is and
as it was: A/B, alternated, one target per call.

As it is (``waits``, since 71b9196): the first stage (the denoiser) takes a
new frame only once the second has taken the last. As it was (``ahead``):
the first stage took the next frame while the frame it had finished still
waited for the second (here: ``queue.Queue.join`` made a no-op for the
process; the hand-off's is the only ``join`` of a queue in a run).
Each variant runs ``measure_realtime`` (the demo in realtime, 600 frames,
``denoise-care-fast``) twice, in the order waits, ahead, waits, ahead.

Usage::

    python benchmarks/stage_handoff_ab.py quiet_20 OUT.json
    python benchmarks/stage_handoff_ab.py busy_10 OUT.json
"""

from __future__ import annotations

import json
import queue
import sys

import smartscope.analysis.pipeline as pipeline
from smartscope.bench_realtime import TARGETS, measure_realtime


class _Ahead(queue.Queue):
    def join(self) -> None:  # the first stage does not wait
        return None


def main() -> None:
    want, out_path = sys.argv[1], sys.argv[2]
    targets = tuple(t for t in TARGETS if t[0] == want)
    if not targets:
        raise SystemExit(f"target must be one of {[t[0] for t in TARGETS]}")
    out = []
    try:
        for variant in ("waits", "ahead", "waits", "ahead"):
            pipeline.queue.Queue = _Ahead if variant == "ahead" else queue.Queue
            r = measure_realtime(
                frames=600, targets=targets, denoise="denoise-care-fast"
            )
            run = r["runs"][want]
            run["variant"] = variant
            out.append(run)
            print(
                variant,
                run["frames_analysed"],
                run["frames_skipped_analysis"],
                run["frame_to_action_ms"],
                flush=True,
            )
    finally:
        pipeline.queue.Queue = queue.Queue
    with open(out_path, "w") as fh:
        json.dump(out, fh, indent=1)


if __name__ == "__main__":  # busy_processes starts processes (spawn)
    main()
