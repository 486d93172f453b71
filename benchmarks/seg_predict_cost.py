"""Segmenters' predict time on one simulated 512 x 512 10x frame, interleaved.

Times ``model.predict(frame, diameter_px=D)`` (the path a run takes: the
protocol gives the nucleus diameter) and ``model.predict(frame)`` (the
automatic size: several passes, and the probe pass) for each model named,
with 2 torch threads on the CPU, ``precision: auto``; medians of
``--repeats`` interleaved repeats after 3 warm-up calls each.

Usage::

    python benchmarks/seg_predict_cost.py [--models nuclei-seg nuclei-seg-sim]
        [--repeats 20] [--json F]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from smartscope.nn import load_model
from smartscope.nn.simdata import equivalent_diameter_px, simulate_frames
from smartscope.nn.train import SEGMENT_VAL_SPEC


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["nuclei-seg", "nuclei-seg-sim"])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    spec = SEGMENT_VAL_SPEC.model_copy(
        update={"objectives": ("10x",), "channels": ("DAPI",)}
    )
    frame = simulate_frames(1, spec, seed=11)[0]
    diameter = equivalent_diameter_px(frame.labels)
    models = {n: load_model(n, device="cpu") for n in args.models}
    for m in models.values():
        for _ in range(3):
            m.predict(frame.image, diameter_px=diameter)
            m.predict(frame.image)
    times: dict[str, list[float]] = {
        f"{n} {k}": [] for n in models for k in ("with diameter", "automatic size")
    }
    for _ in range(args.repeats):
        for n, m in models.items():
            t0 = time.perf_counter()
            m.predict(frame.image, diameter_px=diameter)
            times[f"{n} with diameter"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            m.predict(frame.image)
            times[f"{n} automatic size"].append(time.perf_counter() - t0)
    result = {
        "median_ms": {
            k: round(1000 * float(np.median(v)), 1) for k, v in times.items()
        },
        "precision": {n: m.predictor.precision for n, m in models.items()},
        "diameter_px": round(diameter, 1),
        "repeats": args.repeats,
        "machine": platform.processor() or platform.machine(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
