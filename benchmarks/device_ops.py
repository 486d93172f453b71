"""What the models' device path asks of a GPU per frame: kernels and syncs.

On a GPU a 512² frame's arithmetic takes microseconds; what costs is each
operation torch launches (a few microseconds of host time each, in order)
and each point where the host waits for the card (a sync drains the queue:
the next kernels start only after the host has seen the answer). So before
any GPU is at hand, the device path's cost there is bounded below by how
many of each a frame takes. This script counts them, on any device, by
running the demo's analysis models (``denoise-care``, then ``nuclei-seg`` at
the demo's nucleus diameter) on the benchmarks' frame at each size
(:func:`smartscope.bench_scaling.demo_frame`) on the device path
(``keep_on_device``) under a ``TorchDispatchMode`` that sees every aten
operation:

- ``kernels``: operations that compute (not views: ``slice``, ``select``,
  ``unsqueeze`` ... allocate nothing and launch nothing on the card, though
  each still costs host time in eager mode, counted as ``views``);
- ``syncs``: operations whose result the host must read before it can go
  on (``equal``, ``nonzero``, ``item``, ``bincount``, boolean-mask indexing).

Usage::

    python benchmarks/device_ops.py --json benchmarks/results/device-ops-DATE.json
    python benchmarks/device_ops.py --device cuda --time   # also ms per frame
    python benchmarks/device_ops.py --time --compile on    # compiled watershed

The counts are of the eager path; ``--compile on`` (the default on CUDA)
runs the watershed's steps as one generated kernel each, which the timing
shows.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from smartscope.bench import machine_info
from smartscope.bench_scaling import PIXEL_SIZE_UM, demo_frame
from smartscope.nn import load_model
from smartscope.nn.op_count import OpCounter

#: the demo's nucleus (12 µm) at the 10x objective's 0.65 µm pixels
DIAMETER_PX = 12.0 / PIXEL_SIZE_UM


def _options(model) -> dict:
    """What the analysis tells ``model`` about a frame (a segmenter: the
    nuclei's diameter)."""
    return {"diameter_px": DIAMETER_PX} if model.card.kind == "segment" else {}


def count(models: dict, image: np.ndarray) -> dict:
    """Kernels, views and syncs of one frame through ``models`` (after one
    frame of warm-up)."""
    out = {}
    for name, model in models.items():
        kw = _options(model)
        model.predict(image, **kw)
        # the eager path: compiled code cannot run under a dispatch mode
        # (getattr: the script also counts code from before the option)
        chosen = getattr(model, "compile_postprocess", None)
        model.compile_postprocess = False
        counter = OpCounter()
        try:
            with counter:
                model.predict(image, **kw)
        finally:
            model.compile_postprocess = chosen
        out[name] = {
            "kernels": sum(counter.kernels.values()),
            "views": counter.views,
            "syncs": sum(counter.syncs.values()),
            "sync_ops": dict(counter.syncs.most_common()),
            "transfers": dict(counter.transfers),
            "top_kernels": dict(counter.kernels.most_common(12)),
        }
    return out


def time_frame(models: dict, image: np.ndarray, repeats: int) -> dict:
    """Median ms per frame of each model on its device path."""
    out = {}
    for name, model in models.items():
        kw = _options(model)
        model.predict(image, **kw)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model.predict(image, **kw)
            if model.predictor.device.type == "cuda":
                torch.cuda.synchronize()
            times.append((time.perf_counter() - t0) * 1e3)
        out[name] = float(np.median(times))
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--time", action="store_true", help="also ms per frame")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--tile-px",
        type=int,
        help="tiles from this size (default: the device's; 2560 = a GPU's)",
    )
    parser.add_argument(
        "--compile",
        choices=("auto", "on", "off"),
        default="auto",
        help="the segmenter's compiled watershed (auto: on CUDA); timing only",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    # the torch networks (bfloat16 on CUDA), as a GPU runs them; on the CPU
    # "auto" would pick the int8 ONNX copies, which no GPU runs
    precision = "float32" if args.device == "cpu" else "auto"
    models = {}
    for name in ("denoise-care", "nuclei-seg"):
        model = load_model(
            name, device=args.device, precision=precision, tile_px=args.tile_px
        )
        model.keep_on_device = True
        if args.compile != "auto":
            model.compile_postprocess = args.compile == "on"
        models[name] = model
    rows = []
    for size in args.sizes:
        image = demo_frame(size)
        row = {"size": size, "models": count(models, image)}
        if args.time:
            row["ms"] = time_frame(models, image, args.repeats)
        rows.append(row)
        totals = {
            k: sum(m[k] for m in row["models"].values())
            for k in ("kernels", "views", "syncs")
        }
        row.update(totals)
        print(
            f"{size}²: {totals['kernels']} kernels, {totals['views']} views, "
            f"{totals['syncs']} syncs" + (f", ms {row['ms']}" if args.time else "")
        )
        for name, m in row["models"].items():
            print(
                f"  {name}: {m['kernels']} kernels, {m['syncs']} syncs {m['sync_ops']}"
            )
    result = {
        "benchmark": "device_ops",
        "device": args.device,
        "compile": args.compile,
        "tile_px": models["nuclei-seg"].predictor.tile_px,
        "diameter_px": DIAMETER_PX,
        "machine": machine_info(),
        "rows": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
