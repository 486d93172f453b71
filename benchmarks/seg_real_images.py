"""A segmentation model on real annotated nuclei, with automatic size.

``--data DIR`` holds ``images/NAME.tif`` and ``masks/NAME.tif`` (integer
instance labels, same names). Images are grouped by their name up to the last
``_`` (``coelho2009_gnf_U2OS_dna-0`` → ``coelho2009_gnf_U2OS``), or as
``DIR/groups.json`` (name -> group) says where there is one (the folders
``benchmarks/data/build/split_real_seg.py`` writes). Each image is
segmented by ``model.predict(image)`` without ``diameter_px`` (the automatic
size) and scored with :func:`smartscope.metrics.average_precision`; the table
gives each group's mean of the per-image AP@0.5 / AP@0.75 and the pooled AP,
and the mean over all images.

The set used in docs/models.md (107 images: Coelho et al. 2009 U2OS and NIH 3T3,
Cell Tracking Challenge GOWT1 and HeLa) is not shipped (no licence to
redistribute); ``benchmarks/data/real_seg_SOURCES.md`` says where each file
comes from and how it was converted. Never point this at DSB2018 / BBBC038 /
BBBC039 images for model selection: they are the project's reserved benchmark.

Usage::

    python benchmarks/seg_real_images.py --data DIR [--model nuclei-seg]
        [--precision auto] [--tta] [--json F]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import tifffile

from smartscope.metrics import average_precision
from smartscope.nn import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--model", default="nuclei-seg")
    ap.add_argument(
        "--precision",
        default="auto",
        help="as load_model: auto (int8 ONNX on CPUs with VNNI), float32, ...",
    )
    ap.add_argument(
        "--tta", action="store_true", help="predict(image, tta=True): 4 flips"
    )
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    model = load_model(args.model, device="cpu", precision=args.precision)
    named = args.data / "groups.json"
    group_of = json.loads(named.read_text()) if named.is_file() else {}
    groups: dict[str, list[dict]] = defaultdict(list)
    truths: dict[str, list[np.ndarray]] = defaultdict(list)
    preds: dict[str, list[np.ndarray]] = defaultdict(list)
    for path in sorted((args.data / "images").glob("*.tif")):
        mask = args.data / "masks" / path.name
        if not mask.is_file():
            raise SystemExit(f"{path}: no mask {mask}")
        image = tifffile.imread(path)
        truth = tifffile.imread(mask).astype(np.int32)
        t0 = time.perf_counter()
        labels = model.predict(image, tta=args.tta or None)
        ap = average_precision(truth, labels)
        group = group_of.get(path.stem) or path.stem.rsplit("_", 1)[0]
        groups[group].append(
            {
                "image": path.stem,
                "ap50": round(ap[0.5], 4),
                "ap75": round(ap[0.75], 4),
                "seconds": round(time.perf_counter() - t0, 2),
            }
        )
        truths[group].append(truth)
        preds[group].append(labels)
        print(json.dumps(groups[group][-1]), flush=True)
    summary = {}
    print("\n| group | images | mean AP@0.5 | mean AP@0.75 | pooled AP@0.5 / 0.75 |")
    print("|---|---:|---:|---:|---:|")
    for group, rows in groups.items():
        pooled = average_precision(truths[group], preds[group])
        summary[group] = {
            "images": len(rows),
            "mean_ap50": round(float(np.mean([r["ap50"] for r in rows])), 3),
            "mean_ap75": round(float(np.mean([r["ap75"] for r in rows])), 3),
            "pooled_ap50": round(pooled[0.5], 3),
            "pooled_ap75": round(pooled[0.75], 3),
        }
        s = summary[group]
        print(
            f"| {group} | {s['images']} | {s['mean_ap50']:.3f} | {s['mean_ap75']:.3f} "
            f"| {s['pooled_ap50']:.3f} / {s['pooled_ap75']:.3f} |"
        )
    every = [r for rows in groups.values() for r in rows]
    summary["ALL"] = {
        "images": len(every),
        "mean_ap50": round(float(np.mean([r["ap50"] for r in every])), 3),
        "mean_ap75": round(float(np.mean([r["ap75"] for r in every])), 3),
    }
    s = summary["ALL"]
    print(f"| all | {s['images']} | {s['mean_ap50']:.3f} | {s['mean_ap75']:.3f} | |")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "model": args.model,
                    "precision": args.precision,
                    "tta": args.tta,
                    "model_precision": model.predictor.precision,
                    "data": str(args.data),
                    "groups": summary,
                    "rows": groups,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
