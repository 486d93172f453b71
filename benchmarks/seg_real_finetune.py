"""Fine-tune ``nuclei-seg`` on real annotated nuclei mixed with simulated crops.

An experiment, not (yet) the shipped model: docs/models.md, "Nuclei
segmentation", reports what it gave. Real images come from ``--data DIR``
(``images/NAME.tif`` + ``masks/NAME.tif``, rebuilt as
``benchmarks/data/real_seg_SOURCES.md`` says) and, optionally, ``--extra
DIR`` (same layout; labels under 50 px are dropped, see below). Images are
grouped by name (up to the last ``_``; everything from ``--extra`` is one
group) and split within each group by alternation in name order: even
positions train, odd positions validate, so every group is on both sides but
no image is. Training crops: a ``--p-real`` share from the real training
images (offset removed: their 0.5th percentile; no synthetic noise), the
rest simulated as for the shipped model. The fit starts from ``--init``; its
own validation loss is on crops of real *training* images and simulated
validation frames, so nothing is selected on the real validation images.
Those are scored at the end with ``model.predict(image)`` (automatic size),
mean of per-image AP@0.5 / AP@0.75 per group and over all images.

Never point ``--data``/``--extra`` at DSB2018 / BBBC038 / BBBC039 images:
they are the project's reserved benchmark.

Usage::

    python benchmarks/seg_real_finetune.py --data DIR [--extra DIR] [--steps 3000]
        [--p-real 0.7] [--save weights.pt] [--json F]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import tifffile
import torch

from smartscope.metrics import average_precision
from smartscope.nn import load_model
from smartscope.nn.datasets import SegAugment, SegmentationSampler
from smartscope.nn.model import build_model
from smartscope.nn.train import TrainConfig, _data, _val_sampler, fit
from smartscope.nn.unet import UNet

Item = tuple[str, str, np.ndarray, np.ndarray]


def drop_small(labels: np.ndarray, min_px: int = 50) -> np.ndarray:
    """Labels under ``min_px`` pixels removed (the extra set's specks), ids
    kept: unlike ``instances._drop_small`` there is no renumbering, which
    would change the per-nucleus augmentation draws and so the recorded
    result (benchmarks/results/seg-real-finetune-2026-12-03.json)."""
    labels = labels.astype(np.int32)
    small = np.bincount(labels.ravel()) < min_px
    small[0] = False
    labels[small[labels]] = 0
    return labels


def load(root: Path, group: str | None = None, min_px: int = 0) -> list[Item]:
    out = []
    for p in sorted((root / "images").glob("*.tif")):
        lab = tifffile.imread(root / "masks" / p.name).astype(np.int32)
        if min_px:
            lab = drop_small(lab, min_px)
        out.append((p.stem, group or p.stem.rsplit("_", 1)[0], tifffile.imread(p), lab))
    return out


def split(items: list[Item]) -> tuple[list[Item], list[Item]]:
    by: dict[str, list[Item]] = defaultdict(list)
    for it in items:
        by[it[1]].append(it)
    train, val = [], []
    for group in by.values():
        for i, it in enumerate(group):
            (train if i % 2 == 0 else val).append(it)
    return train, val


def score(model, items: list[Item]) -> dict[str, list[float]]:
    groups: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for name, g, img, lab in items:
        ap = average_precision(lab, model.predict(img))
        groups[g].append((ap[0.5], ap[0.75]))
        print(name, round(ap[0.5], 3), round(ap[0.75], 3), flush=True)
    rows = dict(groups)
    rows["ALL"] = [r for v in groups.values() for r in v]
    return {
        g: [
            round(float(np.mean([r[0] for r in v])), 3),
            round(float(np.mean([r[1] for r in v])), 3),
            len(v),
        ]
        for g, v in rows.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--extra", type=Path, default=None)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--p-real", type=float, default=0.7)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--patch", type=int, default=96)
    ap.add_argument("--fields", type=int, default=64, help="simulated fields")
    ap.add_argument("--init", default="nuclei-seg")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--save", type=Path, default=None, help="state dict to write")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    items = load(args.data)
    if args.extra is not None:
        items += load(args.extra, group=args.extra.name, min_px=50)
    train, val = split(items)

    def offset_free(img: np.ndarray) -> np.ndarray:
        a = img.astype(np.float32)
        return np.clip(a - np.percentile(a, 0.5), 0, None)

    real = SegmentationSampler(
        [(offset_free(img), lab) for _, _, img, lab in train],
        patch_px=args.patch,
        aug=SegAugment(synthetic_noise=False, p_packed=0.0),
    )
    cfg = TrainConfig(
        method="segment",
        steps=args.steps,
        batch_size=args.batch,
        patch_px=args.patch,
        lr=args.lr,
        threads=args.threads,
        workers=1,
        train_fields=args.fields,
        val_fields=16,
        init=args.init,
    )
    sim_train, sim_val, _, _ = _data(cfg)
    sim = SegmentationSampler(sim_train, patch_px=args.patch, aug=SegAugment())

    class Mixed:
        def batch(self, n: int, rng: np.random.Generator):
            k = int(rng.binomial(n, args.p_real))
            parts = ([real.batch(k, rng)] if k else []) + (
                [sim.batch(n - k, rng)] if n - k else []
            )
            return (
                np.concatenate([p[0] for p in parts]),
                np.concatenate([p[1] for p in parts]),
            )

    val_batch = _val_sampler(
        cfg, [(img, lab) for _, _, img, lab in train[:20]] + sim_val[:8]
    ).batch(64, np.random.default_rng(1))
    start = load_model(args.init, device="cpu", precision="float32")
    net = UNet(start.card.unet)
    net.load_state_dict(start.source_state)
    history = fit(
        net,
        Mixed(),
        cfg,
        val_batch=val_batch,
        progress=lambda s, r: r and print(s, r, flush=True),
    )
    train_s = time.perf_counter() - t0
    if args.save:
        torch.save(net.state_dict(), args.save)
    scoring = UNet(start.card.unet)
    scoring.load_state_dict(net.state_dict())
    model = build_model(
        scoring, start.card, name="finetuned", device="cpu", precision="float32"
    )
    result = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "train_images": len(train),
        "val_images": len(val),
        "train_seconds": round(train_s, 1),
        "history": history,
        "real_val": score(model, val),
        "real_val_shipped": score(start, val),
    }
    print(json.dumps({k: result[k] for k in ("real_val", "real_val_shipped")}))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
