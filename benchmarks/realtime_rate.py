"""Realtime runs of the issue-12 targets with the frame rate taken, for
comparing two versions of the code alternated.

Run from the repository root::

    python benchmarks/realtime_rate.py OUT.jsonl LABEL NAME:INTERVAL_S:FRAMES:BUSY ...
    python benchmarks/realtime_rate.py /tmp/rt.jsonl after q:0.05:600:0 b:0.1:600:2

Each ``NAME:INTERVAL_S:FRAMES:BUSY`` is one realtime run of
``smartscope.bench_realtime.realtime_protocol`` (the demo protocol in
realtime, ``center_on`` on every frame, 10-ms exposures) with
``denoise-care-fast``, beside BUSY busy processes, in this process one after
the other, as ``smartscope bench --realtime`` runs its targets. Appends one
JSON line per run to OUT.jsonl (LABEL, frames per second taken and how late
the frames were against the plan, frames analysed and skipped, frame→result
and frame→action) and prints it.

The rate is computed here from the run's ``events.jsonl`` (not with
``bench_realtime.frame_timing``), so the script also measures code from
before the rate was measured. To alternate two versions::

    git worktree add /tmp/before <commit>
    for i in 1 2; do
      PYTHONPATH=src python benchmarks/realtime_rate.py out.jsonl after q:0.05:600:0 b:0.1:600:2
      PYTHONPATH=/tmp/before/src python benchmarks/realtime_rate.py out.jsonl before q:0.05:600:0 b:0.1:600:2
    done
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def frame_rate(events: Path, interval_s: float) -> tuple[float, float]:
    """(frames per second first to last, p99 of how late frames began
    against the plan in ms), from a run's acquisition frames."""
    ts = []
    for line in events.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") == "frame" and rec.get("role") == "acquisition":
            ts.append(float(rec["t_s"]))
    t = np.asarray(ts)
    late = np.maximum(t - t[0] - np.arange(t.size) * interval_s, 0.0) * 1000.0
    return (t.size - 1) / (t[-1] - t[0]), float(np.percentile(late, 99))


def one(label: str, name: str, interval_s: float, frames: int, busy: int) -> dict:
    from smartscope.bench_realtime import busy_processes, realtime_protocol
    from smartscope.controller import Controller
    from smartscope.hardware import load_core, release_core
    from smartscope.protocol import Protocol

    proto = Protocol.model_validate(
        realtime_protocol(interval_s, frames, denoise="denoise-care-fast")
    )
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with (
        busy_processes(busy),
        tempfile.TemporaryDirectory(prefix="smartscope-rate-") as tmp,
    ):
        out = Path(tmp) / "run"
        core = load_core(seed=proto.seed, scene=proto.scene, time_mode="realtime")
        try:
            s = Controller(core, proto, out_dir=out).run()
        finally:
            release_core(core)
        fps, late_p99 = frame_rate(out / "events.jsonl", interval_s)
    return {
        "label": label,
        "run": name,
        "started_utc": started,
        "interval_s": interval_s,
        "busy": busy,
        "frames": s["frames_acquired"],
        "fps": round(fps, 3),
        "frame_late_p99_ms": round(late_p99, 1),
        "frames_analysed": s["frames_analysed"],
        "frames_skipped_analysis": s["frames_skipped_analysis"],
        "frame_to_result_ms": s["latency_frame_to_result_ms"],
        "frame_to_action_ms": s["latency_frame_to_action_ms"],
        "wall_s": s["wall_time_s"],
    }


def main(argv: list[str]) -> None:
    if len(argv) < 3:
        sys.exit(__doc__)
    path, label = Path(argv[0]), argv[1]
    for spec in argv[2:]:
        name, interval, frames, busy = spec.split(":")
        rec = one(label, name, float(interval), int(frames), int(busy))
        with path.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
        print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
