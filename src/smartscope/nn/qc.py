"""Quality-control report written next to a trained model.

``write_report(result, folder)`` writes into ``folder/qc/``:
- ``loss.png``: training and validation loss against step (log scale);
- ``per_image.csv``: the validation score of every image, model and baseline;
- ``report.md``: a short page with the run's settings, the loss table, the
  validation metrics side by side with the classical baseline, and the
  per-image scores.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_losses", "write_report"]


def plot_losses(
    history: list[dict[str, float]], path: Path, *, size: tuple[int, int] = (640, 400)
) -> Path:
    """Draw train/validation loss against step as a PNG (Pillow, no matplotlib)."""
    from PIL import Image, ImageDraw

    w, h = size
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    left, right, top, bottom = 70, 20, 30, 50
    d.rectangle([left, top, w - right, h - bottom], outline="black")
    log = bool(history) and all(
        r["train_loss"] > 0 and r["val_loss"] > 0 for r in history
    )
    scale = "log scale" if log else "linear scale"
    d.text((left, 8), f"loss ({scale}): train = blue, validation = red", fill="black")
    if history:
        steps = np.array([r["step"] for r in history], float)
        series = {
            "train_loss": np.array([r["train_loss"] for r in history], float),
            "val_loss": np.array([r["val_loss"] for r in history], float),
        }

        def f(a: object) -> np.ndarray:
            a = np.asarray(a, float)
            return np.log10(a) if log else a

        vals = np.concatenate(list(series.values()))
        lo, hi = float(np.min(f(vals))), float(np.max(f(vals)))
        if hi - lo < 1e-6:
            lo, hi = lo - 0.5, hi + 0.5
        s0, s1 = 0.0, max(float(steps.max()), 1.0)

        def xy(s: float, v: float) -> tuple[float, float]:
            x = left + (s - s0) / (s1 - s0) * (w - left - right)
            y = top + (hi - float(f(v))) / (hi - lo) * (h - top - bottom)
            return float(x), float(y)

        for key, colour in (("train_loss", "blue"), ("val_loss", "red")):
            pts = [xy(s, v) for s, v in zip(steps, series[key], strict=False)]
            if len(pts) > 1:
                d.line(pts, fill=colour, width=2)
            for x, y in pts:
                d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        for frac in (0.0, 0.5, 1.0):
            v = hi - frac * (hi - lo)
            v = 10**v if log else v
            y = top + frac * (h - top - bottom)
            d.text((4, y - 6), f"{v:.3g}", fill="black")
        for frac in (0.0, 0.5, 1.0):
            s = s0 + frac * (s1 - s0)
            x = left + frac * (w - left - right)
            d.text((x - 10, h - bottom + 6), f"{s:.0f}", fill="black")
        d.text((w // 2 - 15, h - 22), "step", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_report(result: Any, folder: str | Path) -> Path:
    """Write ``folder/qc/{loss.png, per_image.csv, report.md}``; returns report.md's path."""
    qc = Path(folder) / "qc"
    qc.mkdir(parents=True, exist_ok=True)
    plot_losses(result.history, qc / "loss.png")
    rows = result.per_image
    if rows:
        with (qc / "per_image.csv").open("w", newline="") as fh:
            wr = csv.DictWriter(fh, fieldnames=list(rows[0]))
            wr.writeheader()
            wr.writerows(rows)
    card = result.model.card
    lines = [
        f"# QC report: {result.model.name} ({card.method})",
        "",
        f"- data: {card.training.get('data', '')}",
        f"- command: `{card.training.get('command', '')}`",
        f"- steps: {result.config.steps}, batch {result.config.batch_size} x "
        f"{result.config.patch_px}² px, seed {result.config.seed}, "
        f"wall time {result.seconds / 60:.1f} min",
        f"- network: U-Net {card.unet.model_dump()}, "
        f"{result.network.n_parameters():,} parameters",
        "",
        "![loss](loss.png)",
        "",
        "## Loss",
        "",
        "| step | train | validation |",
        "|---:|---:|---:|",
    ]
    lines += [
        f"| {r['step']} | {r['train_loss']:.4g} | {r['val_loss']:.4g} |"
        for r in result.history
    ]
    lines += ["", "## Validation metrics", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in result.metrics.items()]
    if rows:
        keys = list(rows[0])
        lines += [
            "",
            "## Per validation image",
            "",
            "| " + " | ".join(keys) + " |",
            "|" + "---:|" * len(keys),
        ]
        lines += ["| " + " | ".join(_fmt(r[k]) for k in keys) + " |" for r in rows]
    path = qc / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
