"""The segmenter's device post-processing against the host's, and its cost.

For each image, ``nuclei-seg``'s maps (automatic size, as
``SegmentModel.maps_auto_size`` settles on) are turned into labels twice:
by :func:`smartscope.nn.instances.labels_from_maps` (scipy + scikit-image's
watershed, the host path) and by
:func:`smartscope.nn.device_labels.labels_from_maps_t` (torch, what runs on
a GPU), with the card's thresholds and size limits. Reported: average
precision of the device labels against the host labels at IoU 0.5 / 0.75 /
0.9, the share of pixels with the same label, and both times (on the device
given; timing on CUDA syncs before reading the clock).

Images: simulated frames of the demo microscope (10x and 20x, seeds 1-8),
and, with ``--images DIR``, every ``.tif`` in it (e.g. the project's own
real validation images, benchmarks/data/real_seg_SOURCES.md; not the
reserved DSB 2018 / BBBC038 / BBBC039 set). Where a ``masks`` folder beside
it holds an image's annotation (same name), both label images are also
scored against it (``truth_ap``: AP@0.5 / 0.75 of host and device labels).

Usage::

    python benchmarks/device_labels.py --images /work/data/real_seg_split/val/images \
        --json benchmarks/results/device-labels-2026-12-03.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from smartscope.bench import machine_info
from smartscope.hardware import open_core
from smartscope.metrics import average_precision
from smartscope.nn import load_model
from smartscope.nn.device_labels import labels_from_maps_t
from smartscope.nn.instances import labels_from_maps


def _sim_frames() -> list[tuple[str, np.ndarray]]:
    out = []
    for objective in ("10x", "20x"):
        for seed in range(1, 9):
            with open_core(seed=seed) as core:
                core.setConfig("Objective", objective)
                core.snapImage()
                out.append((f"sim-{objective}-seed{seed}", core.getImage().copy()))
    return out


def _read(path: Path) -> np.ndarray:
    import tifffile

    image = tifffile.imread(path)
    return image if image.ndim == 2 else image[..., 0]


def _timed(device: torch.device, fn, *args, **kwargs) -> tuple[object, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, (time.perf_counter() - t) * 1000.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, help="a folder of .tif images")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the torch side)")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    device = torch.device(args.device)
    model = load_model("nuclei-seg", device="cpu", precision="float32")
    post = model.card.postprocess
    images = _sim_frames()
    masks: dict[str, Path] = {}
    if args.images is not None:
        images += [(p.name, _read(p)) for p in sorted(args.images.glob("*.tif"))]
        folder = args.images.parent / "masks"
        masks = {p.name: p for p in folder.glob("*.tif")} if folder.is_dir() else {}
    rows = []
    for name, image in images:
        fg, dist, size = model.maps_auto_size(image)
        limits = {
            "min_size_px": max(1, round(post.min_size_px / size**2)),
            "border_min_size_px": max(1, round(post.border_min_size_px / size**2)),
        }
        kw = {
            "fg_threshold": post.fg_threshold,
            "seed_threshold": post.seed_threshold,
            **limits,
        }
        host, host_ms = _timed(device, labels_from_maps, fg, dist, **kw)
        fg_t = torch.from_numpy(fg).to(device)
        dist_t = torch.from_numpy(dist).to(device)
        labels_from_maps_t(fg_t, dist_t, **kw)  # first call: allocations
        dev, dev_ms = _timed(device, labels_from_maps_t, fg_t, dist_t, **kw)
        dev = dev.cpu().numpy()
        ap_ = average_precision(host, dev, thresholds=(0.5, 0.75, 0.9))
        rows.append(
            {
                "image": name,
                "shape": list(image.shape),
                "objects_host": int(host.max()),
                "objects_device": int(dev.max()),
                "ap": {str(k): round(float(v), 4) for k, v in ap_.items()},
                "same_label_px": round(float((host == dev).mean()), 6),
                "host_ms": round(host_ms, 2),
                "device_ms": round(dev_ms, 2),
            }
        )
        if name in masks:
            import tifffile

            truth = tifffile.imread(masks[name]).astype(np.int32)
            rows[-1]["truth_ap"] = {
                side: {
                    str(k): round(float(v), 4)
                    for k, v in average_precision(truth, labels).items()
                    if k in (0.5, 0.75)
                }
                for side, labels in (("host", host), ("device", dev))
            }
        print(
            f"{name}: {rows[-1]['objects_host']} / {rows[-1]['objects_device']} "
            f"objects, AP {rows[-1]['ap']}, same {rows[-1]['same_label_px']}, "
            f"host {host_ms:.1f} ms, device {dev_ms:.1f} ms"
        )
    summary = {
        "images": len(rows),
        "mean_ap": {
            t: round(float(np.mean([r["ap"][t] for r in rows])), 4)
            for t in ("0.5", "0.75", "0.9")
        },
        "min_ap_0.75": min(r["ap"]["0.75"] for r in rows),
        "mean_same_label_px": round(
            float(np.mean([r["same_label_px"] for r in rows])), 6
        ),
        "identical_images": sum(r["same_label_px"] == 1.0 for r in rows),
    }
    scored = [r["truth_ap"] for r in rows if "truth_ap" in r]
    if scored:
        summary["truth_ap_mean"] = {
            side: {
                t: round(float(np.mean([s[side][t] for s in scored])), 4)
                for t in ("0.5", "0.75")
            }
            for side in ("host", "device")
        }
        summary["truth_scored_images"] = len(scored)
    print(json.dumps(summary))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine_info(),
                    "device": str(device),
                    "summary": summary,
                    "rows": rows,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
