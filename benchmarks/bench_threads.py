"""The models' CPU threads under contention: 2 fixed, 1 fixed, or 'auto'.

Run from the repository root (on an otherwise quiet machine)::

    python benchmarks/bench_threads.py                # 60 frames per case
    python benchmarks/bench_threads.py --frames 120

Analyses one simulated 512 x 512 DAPI frame (10x) again and again with
``FrameAnalyser`` (``denoise-care`` then ``nuclei-seg``, measure, track: the
demo's analysis) on the CPU, with 0, 1 and 2 competing CPU-bound processes
(pure-Python busy loops) started beside it, for ``analysis.threads`` 2, 1
and ``auto`` (:class:`smartscope.analysis.threads.ThreadTuner`). Prints the
median and p95 time per frame of each case and, for ``auto``, the thread
counts it used; writes ``benchmarks/results/threads-<YYYY-MM-DD>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=60)
    args = ap.parse_args()

    import torch

    from smartscope.analysis.analyser import FrameAnalyser
    from smartscope.analysis.settings import AnalysisSettings
    from smartscope.bench_realtime import busy_processes
    from smartscope.bench_scaling import demo_frame, demo_frame_input

    img = demo_frame()
    rows = []
    for burners in (0, 1, 2):
        with busy_processes(burners):
            time.sleep(1.0)
            for mode in (2, 1, "auto"):
                a = FrameAnalyser(
                    AnalysisSettings(
                        denoise="denoise-care",
                        segmenter="model",
                        model="nuclei-seg",
                        diameter_um=12,
                        threads=mode,
                    ),
                    device="cpu",
                )
                a.load_models()
                times, used = [], []
                for k in range(args.frames + 3):
                    f = demo_frame_input(img, k)
                    t0 = time.perf_counter()
                    r = a.analyse(f)
                    dt = (time.perf_counter() - t0) * 1000
                    if k >= 3:  # warm-up frames left out
                        times.append(dt)
                        used.append(r.extra.get("threads"))
                row = {
                    "competing_processes": burners,
                    "threads": mode,
                    "frames": len(times),
                    "median_ms": round(float(np.median(times)), 1),
                    "p95_ms": round(float(np.percentile(times, 95)), 1),
                    "threads_used": {str(n): used.count(n) for n in sorted(set(used))},
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    out = ROOT / "benchmarks" / "results" / f"threads-{date.today()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "command": f"python benchmarks/bench_threads.py --frames {args.frames}",
                "machine": f"{platform.processor() or platform.machine()}, "
                f"{os.cpu_count()} CPUs, torch {torch.__version__}",
                "date": str(date.today()),
                "rows": rows,
            },
            indent=1,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
