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
import multiprocessing as mp
import os
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _burn(stop: mp.Event) -> None:  # type: ignore[valid-type]
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=60)
    args = ap.parse_args()

    import torch

    from smartscope.analysis.analyser import FrameAnalyser
    from smartscope.analysis.result import FrameInput
    from smartscope.analysis.settings import AnalysisSettings
    from smartscope.bench_scaling import demo_frame

    img = demo_frame()
    rows = []
    for burners in (0, 1, 2):
        stop = mp.Event()
        procs = [
            mp.Process(target=_burn, args=(stop,), daemon=True) for _ in range(burners)
        ]
        for p in procs:
            p.start()
        time.sleep(1.0)
        try:
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
                    f = FrameInput(
                        image=img,
                        frame_index=k,
                        position="a",
                        stage_x_um=0,
                        stage_y_um=0,
                        z_um=0,
                        pixel_size_um=0.65,
                        exposure_ms=20,
                        t_frame=time.perf_counter(),
                        t_s=float(k),
                    )
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
        finally:
            stop.set()
            for p in procs:
                p.join(5)
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
