"""Soak: a long virtual-time run with the models and reactions in the loop.

Run from the repository root::

    python benchmarks/soak.py                   # 10,000 frames (tens of minutes on 2 cores)
    python benchmarks/soak.py --frames 1000     # a quick look

One position on the simulator (``migration`` scene, seed 3, 20x, 256 x 256
sensor to keep it within the hour on 2 CPU cores), DAPI every 30 s of virtual
time, denoised by ``denoise-care`` and segmented by ``nuclei-seg``, with the
``center_on`` and ``adaptive_exposure`` reactions acting on every frame,
labels and denoised images saved. Samples the process's resident memory, open
file descriptors and threads every 2% of the run; reads frame → result and
frame → action latencies from the run's own ``events.jsonl`` and compares the
first and the last 1,000 frames. Writes ``benchmarks/results/soak-<date>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _p(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def soak(n_frames: int, sensor_px: int = 256) -> dict[str, Any]:
    from smartscope.controller import Controller
    from smartscope.hardware import load_core, release_core
    from smartscope.protocol import Protocol

    proto = Protocol.model_validate(
        {
            "name": "soak",
            "scene": "migration",
            "seed": 3,
            "objective": "20x",
            "laser_power_mw": 5,
            "sequence": {
                "channels": [{"config": "DAPI", "exposure": 40}],
                "stage_positions": [{"name": "cell", "x": 0, "y": 0}],
                "time_plan": {"interval": 30, "loops": n_frames},
            },
            "analysis": {
                "segmenter": "model",
                "model": "nuclei-seg",
                "denoise": "denoise-care",
                "diameter_um": 12,
            },
            "reactions": [
                {"type": "center_on", "max_step_um": 60},
                {
                    "type": "adaptive_exposure",
                    "target_adu": 1500,
                    "min_exposure_ms": 5,
                    "max_exposure_ms": 400,
                    "min_power_mw": 5,
                    "max_power_mw": 20,
                },
            ],
            "limits": {"xy_box_um": [-1400, 1400, -1400, 1400], "max_laser_mw": 20},
            "save": {"labels": True, "denoised": True},
        }
    )
    core = load_core(time_mode="virtual")
    core.setProperty("Camera", "SensorWidth_px", sensor_px)
    core.setProperty("Camera", "SensorHeight_px", sensor_px)
    samples: list[dict[str, float]] = []
    step = max(1, n_frames // 50)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run"
            ctl = Controller(core, proto, out_dir=out, device="cpu")

            def _sample(f: Any) -> None:
                if f.frame_index % step == 0:
                    samples.append(
                        {
                            "frame": f.frame_index,
                            "rss_mb": round(_rss_mb(), 1),
                            "fds": _fds(),
                            "threads": threading.active_count(),
                        }
                    )

            ctl.frame_acquired.connect(_sample)
            t = time.perf_counter()
            summary = ctl.run()
            wall = time.perf_counter() - t
            records = [
                json.loads(line)
                for line in (out / "events.jsonl").read_text().splitlines()
            ]
    finally:
        release_core(core)
    result_ms: dict[int, float] = {}
    action_ms: dict[int, list[float]] = {}
    for r in records:
        if r["kind"] == "analysis":
            result_ms[r["index"]] = r["latency_ms"]
        elif r["kind"] == "action" and r.get("latency_ms") is not None:
            action_ms.setdefault(r.get("frame_index") or -1, []).append(r["latency_ms"])
    n = summary["frames_acquired"]
    window = min(1000, n // 2)

    def _window(lo: int, hi: int) -> dict[str, Any]:
        res = [v for i, v in result_ms.items() if lo <= i < hi]
        act = [v for i, vs in action_ms.items() if lo <= i < hi for v in vs]
        return {
            "frames": [lo, hi],
            "result_p50_ms": _p(res, 50),
            "result_p99_ms": _p(res, 99),
            "action_p99_ms": _p(act, 99),
            "actions": len(act),
        }

    warm = [s for s in samples if s["frame"] >= n // 10]
    growth = (
        (warm[-1]["rss_mb"] - warm[0]["rss_mb"])
        / max(1, warm[-1]["frame"] - warm[0]["frame"])
        * 1000
        if len(warm) > 1
        else 0.0
    )
    return {
        "date": date.today().isoformat(),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs",
        "n_frames": n,
        "status": summary["status"],
        "frames_analysed": summary["frames_analysed"],
        "frames_skipped_analysis": summary["frames_skipped_analysis"],
        "sensor_px": sensor_px,
        "wall_s": round(wall, 1),
        "rss_mb_first_last": [samples[0]["rss_mb"], samples[-1]["rss_mb"]]
        if samples
        else None,
        "rss_growth_mb_per_1000_frames_after_warmup": round(growth, 3),
        "fds_first_last": [samples[0]["fds"], samples[-1]["fds"]] if samples else None,
        "fds_max": max(s["fds"] for s in samples) if samples else None,
        "threads_first_last": [samples[0]["threads"], samples[-1]["threads"]]
        if samples
        else None,
        "first_1000": _window(0, window),
        "last_1000": _window(n - window, n),
        "samples": samples,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--sensor-px", type=int, default=256)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    res = soak(args.frames, args.sensor_px)
    out = args.out or ROOT / "benchmarks" / "results" / f"soak-{res['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(json.dumps({k: v for k, v in res.items() if k != "samples"}, indent=2))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
