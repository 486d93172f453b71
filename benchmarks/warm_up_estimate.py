"""How well the analysis' warm-up foretells a realtime run's time a frame.

Runs ``realtime_protocol(INTERVAL, FRAMES, denoise=DENOISE)`` (the demo in
realtime, ``center_on`` every frame: what ``smartscope bench --realtime``
runs) REPEATS times and prints, per run, the warm-up's figures
(``analysis_warm_up_ms``: what the run compares with the plan's pace to warn
before its first frame) beside the run's medians of the same stages
(``analysis_stages_ms``), and appends them to OUT (JSON lines)::

    python benchmarks/warm_up_estimate.py OUT [--interval 0.05] [--frames 200]
        [--repeats 2] [--denoise denoise-care-fast]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from datetime import datetime, timezone
from pathlib import Path


def one_run(interval_s: float, frames: int, denoise: str) -> dict:
    from smartscope.bench_realtime import realtime_protocol
    from smartscope.controller import Controller
    from smartscope.hardware import load_core, release_core
    from smartscope.protocol import Protocol

    proto = Protocol.model_validate(
        realtime_protocol(interval_s, frames, denoise=denoise)
    )
    with tempfile.TemporaryDirectory(prefix="smartscope-warm-") as tmp:
        core = load_core(seed=proto.seed, scene=proto.scene, time_mode="realtime")
        try:
            s = Controller(core, proto, out_dir=Path(tmp) / "run").run()
        finally:
            release_core(core)
    return {
        "warm_up_ms": s["analysis_warm_up_ms"],
        "run_p50_ms": {k: v["p50"] for k, v in s["analysis_stages_ms"].items()},
        "frames_analysed": s["frames_analysed"],
        "frames_skipped_analysis": s["frames_skipped_analysis"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--interval", type=float, default=0.05)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--denoise", default="denoise-care-fast")
    a = ap.parse_args()
    from smartscope.bench import machine_info

    for _ in range(a.repeats):
        r = one_run(a.interval, a.frames, a.denoise)
        w, m = r["warm_up_ms"], r["run_p50_ms"]
        print(
            f"denoise warm-up {w.get('denoise')} / run {m.get('denoise')} ms; "
            f"segment warm-up {w['segment']} / run {m['segment']} ms; "
            f"{r['frames_analysed']} analysed, {r['frames_skipped_analysis']} skipped"
        )
        r |= {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "interval_s": a.interval,
            "frames": a.frames,
            "denoise": a.denoise,
            "machine": machine_info(),
        }
        with a.out.open("a") as fh:
            fh.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
