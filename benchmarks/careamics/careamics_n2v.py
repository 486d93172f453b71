#!/usr/bin/env python
"""Train CAREamics Noise2Void (2D) on one noisy image and denoise that same image.

Usage (inside /work/venv-careamics):
    python careamics_n2v.py --noisy noisy.tif --out denoised.tif --budget-s 180 \
        [--epochs N] [--steps-per-epoch N] [--batch-size 8] [--patch 64] [--seed 1]

The config is CAREamics' own `create_n2v_config` factory (careamics/config/factories/
n2v_factory.py) with its defaults, except: CPU accelerator, torch threads = --threads (2),
num_workers = 0, no progress bar, Lightning `max_time` = --budget-s, and
max_epochs = --epochs (default: effectively unbounded, so the time budget decides).
Validation: CAREamics' default split (n_val_patches=8 patches held out of the training
image). The last line on stdout is a JSON summary.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# Offline / quiet: no experiment tracker may phone home. CAREamics' logger="none"
# already means "CSVLogger only" (a local file), these are belt and braces.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_DISABLED", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("BIOIMAGEIO_CACHE_PATH", tempfile.gettempdir())


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--noisy", required=True, help="2D noisy image (TIFF, YX)")
    p.add_argument("--out", required=True, help="denoised float32 TIFF to write")
    p.add_argument(
        "--budget-s",
        type=float,
        default=180.0,
        help="wall-clock limit for training (Lightning Trainer max_time)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="max_epochs; default: unbounded (10**6), the budget stops it",
    )
    p.add_argument(
        "--steps-per-epoch",
        type=int,
        default=None,
        help="num_steps (Lightning limit_train_batches); default: CAREamics' "
        "default (one pass over the random patches of the image)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="batch size (mandatory in create_n2v_config; 8 as in CAREamics' "
        "own N2V docs examples)",
    )
    p.add_argument("--patch", type=int, default=64, help="square patch side (64)")
    p.add_argument("--n2v2", action="store_true", help="use N2V2 instead of N2V")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=1, help="CAREamics seed (>0)")
    p.add_argument(
        "--tile",
        type=int,
        default=256,
        help="prediction tile side when the image is larger than 2*tile",
    )
    p.add_argument(
        "--work-dir",
        default=None,
        help="CAREamics work dir (checkpoints, csv logs); default: a temp dir, "
        "deleted afterwards",
    )
    p.add_argument(
        "--config-out",
        default=None,
        help="optional path to write the resolved CAREamics config as JSON",
    )
    return p.parse_args()


def main() -> int:
    args = _parse()
    t_start = time.perf_counter()

    import numpy as np
    import tifffile
    import torch

    torch.set_num_threads(args.threads)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)

    from careamics.config.factories import create_advanced_n2v_config

    import careamics
    from careamics import CAREamist

    noisy = np.asarray(tifffile.imread(args.noisy))
    noisy = np.squeeze(noisy)
    if noisy.ndim != 2:
        sys.exit(f"expected a 2D image, got shape {noisy.shape}")
    noisy = noisy.astype(np.float32)
    h, w = noisy.shape
    if min(h, w) < args.patch:
        sys.exit(f"image {noisy.shape} is smaller than the patch size {args.patch}")

    max_epochs = args.epochs if args.epochs is not None else 10**6
    trainer_params = {
        "accelerator": "cpu",
        "devices": 1,
        # Lightning's Timer callback: checked after every training batch (interval
        # "step"), stops the fit loop once exceeded. Counts from on_train_start, i.e.
        # it does not include dataset setup / normalisation statistics; it does include
        # validation time.
        "max_time": {"seconds": float(args.budget_s)},
        "enable_model_summary": False,
    }

    # Everything not named here is left at create_advanced_n2v_config's default
    # (which is exactly what create_n2v_config passes on).
    config = create_advanced_n2v_config(
        experiment_name="careamics_n2v_cmp",
        data_type="array",
        axes="YX",
        patch_size=[args.patch, args.patch],
        batch_size=args.batch_size,
        num_epochs=max_epochs,
        num_steps=args.steps_per_epoch,
        use_n2v2=args.n2v2,
        num_workers=0,
        trainer_params=trainer_params,
        logger="none",
        seed=args.seed,
    )
    if args.config_out:
        Path(args.config_out).write_text(
            json.dumps(config.model_dump(mode="json"), indent=2, default=str)
        )

    tmp = None
    if args.work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="careamics_n2v_")
        work_dir = Path(tmp.name)
    else:
        work_dir = Path(args.work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)

    careamist = CAREamist(config, work_dir=work_dir, enable_progress_bar=False)

    t0 = time.perf_counter()
    careamist.train(train_data=noisy)
    seconds_train = time.perf_counter() - t0
    trainer = careamist.trainer
    steps = int(trainer.global_step)
    epochs_done = int(
        trainer.current_epoch
    )  # completed epochs (+1 if stopped mid-epoch)
    n_train_batches = trainer.num_training_batches
    stopped_by_time = False
    for cb in trainer.callbacks:
        if type(cb).__name__ == "Timer":
            stopped_by_time = bool(
                cb.time_remaining() is not None and cb.time_remaining() <= 0
            )

    # careamist.predict() reloads a checkpoint before predicting ("last" for N2V, which
    # ModelCheckpoint writes after each validation). Save the final weights explicitly
    # and predict from them, so a mid-epoch stop by the time budget cannot lose steps.
    final_ckpt = work_dir / "final_weights.ckpt"
    trainer.save_checkpoint(final_ckpt)

    t1 = time.perf_counter()
    if h > 2 * args.tile or w > 2 * args.tile:
        tile = (min(args.tile, h), min(args.tile, w))
        overlap = (min(48, tile[0] // 4 * 2), min(48, tile[1] // 4 * 2))
        preds, _ = careamist.predict(
            noisy,
            tile_size=tile,
            tile_overlap=overlap,
            axes="YX",
            num_workers=0,
            checkpoint=final_ckpt,
        )
        tiling = {"tile_size": list(tile), "tile_overlap": list(overlap)}
    else:
        preds, _ = careamist.predict(
            noisy, axes="YX", num_workers=0, checkpoint=final_ckpt
        )
        tiling = None
    seconds_predict = time.perf_counter() - t1

    pred = preds[0] if isinstance(preds, (list, tuple)) else preds
    pred = np.squeeze(np.asarray(pred)).astype(np.float32)
    if pred.shape != noisy.shape:
        sys.exit(f"prediction shape {pred.shape} != input shape {noisy.shape}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(args.out, pred)

    if tmp is not None:
        tmp.cleanup()

    summary = {
        "seconds_train": round(seconds_train, 3),
        "seconds_predict": round(seconds_predict, 3),
        "seconds_total": round(time.perf_counter() - t_start, 3),
        "epochs": epochs_done,  # Lightning trainer.current_epoch after fit
        "steps": steps,
        "epochs_float": round(steps / n_train_batches, 3)
        if isinstance(n_train_batches, int) and n_train_batches > 0
        else None,
        "train_batches_per_epoch": n_train_batches
        if isinstance(n_train_batches, (int, float)) and n_train_batches != float("inf")
        else None,
        "stopped_by_time": stopped_by_time,
        "budget_s": args.budget_s,
        "batch_size": args.batch_size,
        "patch_size": [args.patch, args.patch],
        "tiling": tiling,
        "shape": [h, w],
        "careamics_version": careamics.__version__,
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
