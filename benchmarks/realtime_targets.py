"""The two CPU realtime targets of issue 12, for each denoiser named.

Run from the repository root::

    python benchmarks/realtime_targets.py OUT.json denoise-care denoise-care-fast

For each denoiser, ``smartscope.bench_realtime.measure_realtime`` (what
``smartscope bench --realtime`` runs): the demo in realtime, 600 frames, at
20 frames/s on a quiet machine and at 10 frames/s beside two busy processes.
Prints a line a run (frames analysed and skipped, frame->action, the
denoise and segment stages' medians, whether the target holds) and writes
every run's figures to OUT.json.
"""

from __future__ import annotations

import json
import sys
import time

from smartscope.bench_realtime import TARGETS, measure_realtime


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    out = []
    for den in sys.argv[2:]:
        r = measure_realtime(
            frames=600,
            targets=TARGETS,
            denoise=None if den == "denoise-care" else den,
        )
        for name, run in r["runs"].items():
            run.update(
                denoise=den, target=name, utc=time.strftime("%H:%M", time.gmtime())
            )
            out.append(run)
            stages = run["analysis_stages_ms"]
            print(
                name,
                den,
                run["frames_analysed"],
                run["frames_skipped_analysis"],
                run["frame_to_action_ms"],
                stages.get("denoise", {}).get("p50"),
                stages.get("segment", {}).get("p50"),
                run["met"],
                flush=True,
            )
    with open(sys.argv[1], "w") as fh:
        json.dump(out, fh, indent=1)


if __name__ == "__main__":  # busy processes are spawned: guard the main module
    main()
