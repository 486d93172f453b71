"""Scoring models against ground truth and against classical baselines.

- Denoisers: PSNR and SSIM (``smartscope.metrics``) of the model output, of
  the noisy input and of the best Gaussian filter, whose sigma is tuned on the
  same frames (the strongest form of that baseline).
- Segmenters: AP at IoU 0.5 and 0.75 of the model and of Otsu +
  distance-transform watershed with its smoothing and peak distance tuned on
  the same frames.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from smartscope.metrics import average_precision, psnr, ssim
from smartscope.nn.card import Postprocess
from smartscope.nn.instances import (
    estimate_diameter_px,
    labels_from_maps,
    otsu_watershed,
)

__all__ = [
    "GAUSS_SIGMAS",
    "best_gaussian",
    "best_otsu_watershed",
    "score_denoiser",
    "score_segmenter",
    "tune_postprocess",
]

GAUSS_SIGMAS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0)
OTSU_GRID = tuple((s, d) for s in (1.0, 2.0) for d in (3, 5, 7, 10, 14))


def best_gaussian(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
) -> tuple[float, list[float]]:
    """The Gaussian sigma (px) with the best mean PSNR on (noisy, clean) pairs,
    and the per-image PSNR at that sigma."""
    best: tuple[float, float, list[float]] = (-np.inf, 0.0, [])
    for sigma in GAUSS_SIGMAS:
        vals = [
            psnr(c, ndi.gaussian_filter(np.asarray(n, np.float32), sigma))
            for n, c in pairs
        ]
        if np.mean(vals) > best[0]:
            best = (float(np.mean(vals)), sigma, vals)
    return best[1], best[2]


def score_denoiser(
    model: Any, pairs: Sequence[tuple[np.ndarray, np.ndarray]]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-image and mean PSNR/SSIM of the model, the input and the best Gaussian.

    Parameters
    ----------
    model : a denoising Model
    pairs : ((Y, X) noisy, (Y, X) clean) in the same units (ADU)
    """
    sigma, gauss = best_gaussian(pairs)
    rows = []
    for i, (noisy, clean) in enumerate(pairs):
        out = model.predict(noisy)
        g = ndi.gaussian_filter(np.asarray(noisy, np.float32), sigma)
        rows.append(
            {
                "image": i,
                "psnr_input": psnr(clean, noisy),
                "psnr_gaussian": gauss[i],
                "psnr_model": psnr(clean, out),
                "ssim_input": ssim(clean, noisy),
                "ssim_gaussian": ssim(clean, g),
                "ssim_model": ssim(clean, out),
            }
        )
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "image"}
    metrics = {
        "psnr_db": round(mean["psnr_model"], 2),
        "ssim": round(mean["ssim_model"], 4),
        "psnr_db_input": round(mean["psnr_input"], 2),
        "psnr_db_gaussian": round(mean["psnr_gaussian"], 2),
        "ssim_gaussian": round(mean["ssim_gaussian"], 4),
        "gaussian_sigma_px": sigma,
        "psnr_gain_over_gaussian_db": round(
            mean["psnr_model"] - mean["psnr_gaussian"], 2
        ),
        "psnr_gain_over_input_db": round(mean["psnr_model"] - mean["psnr_input"], 2),
        "n_images": len(rows),
        "psnr_data_range": "max - min of the noise-free truth, per image",
    }
    return rows, metrics


def best_otsu_watershed(
    items: Sequence[tuple[np.ndarray, np.ndarray]],
) -> tuple[dict[str, float], list[np.ndarray]]:
    """Otsu + watershed with (smoothing, peak distance) tuned for the best mean of
    AP@0.5 and AP@0.75 on (image, labels) items; returns the settings and labels."""
    best: tuple[float, dict[str, float], list[np.ndarray]] = (-1.0, {}, [])
    for sigma, dmin in OTSU_GRID:
        preds = [
            otsu_watershed(img, smooth_sigma_px=sigma, min_distance_px=dmin)
            for img, _ in items
        ]
        ap = average_precision([lab for _, lab in items], preds)
        score = (ap[0.5] + ap[0.75]) / 2
        if score > best[0]:
            best = (score, {"smooth_sigma_px": sigma, "min_distance_px": dmin}, preds)
    return best[1], best[2]


def tune_postprocess(
    model: Any,
    items: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    auto_size: bool = False,
    also: Sequence[tuple[np.ndarray, np.ndarray]] = (),
) -> tuple[Postprocess, dict[str, Any]]:
    """Thresholds with the best mean of AP@0.5 and AP@0.75 on (image, labels).

    ``also``: a second set (e.g. simulated frames beside the user's images),
    scored the same way; the two sets' scores are averaged, so neither kind
    of image is given up for the other.

    ``auto_size``: each image's maps at the scale ``model.predict`` finds
    without ``diameter_px`` (images of any nucleus size, e.g. the user's);
    otherwise at the image's own scale (simulated frames at the training
    scale). The grid also tries larger smallest-nucleus sizes there, since
    real images hold debris that simulated ones do not.
    """
    sets = [list(items), *([list(also)] if also else [])]
    if auto_size:
        scaled = [[model.maps_auto_size(img) for img, _ in s] for s in sets]
    else:
        scaled = [[(*model.maps(img), 1.0) for img, _ in s] for s in sets]
    truths = [[lab for _, lab in s] for s in sets]
    base = model.card.postprocess or Postprocess()
    if auto_size:
        # the user's images at the automatic size. At the training diameter
        # (20 px) a nucleus covers about 300 px: 64-192 px drop the fragments
        # a textured real nucleus breaks into, while nuclei cut by the image
        # border keep a smaller limit; a grid whose best lay on its edge
        # (foreground 0.6 of 0.4-0.6, 128 px of 8-128) was widened
        # (docs/models.md, "Trained on real annotations")
        grid = {
            "fg_threshold": (0.5, 0.6, 0.7, 0.8),
            "seed_threshold": (0.4, 0.5, 0.6),
            "min_size_px": (32, 64, 128, 192),
            "border_min_size_px": (8, 32),
        }
    else:
        grid = {
            "fg_threshold": (0.4, 0.5, 0.6),
            "seed_threshold": (0.3, 0.4, 0.5, 0.6, 0.7),
            "min_size_px": (base.min_size_px,),
            "border_min_size_px": (base.border_min_size_px,),
        }
    best: tuple[float, Postprocess] = (-1.0, base)
    for values in itertools.product(*grid.values()):
        post = base.model_copy(update=dict(zip(grid, values, strict=True)))
        scores = []
        for maps, truth in zip(scaled, truths, strict=True):
            preds = [
                labels_from_maps(
                    f,
                    d,
                    fg_threshold=post.fg_threshold,
                    seed_threshold=post.seed_threshold,
                    min_size_px=max(1, round(post.min_size_px / factor**2)),
                    border_min_size_px=max(
                        1, round(post.border_min_size_px / factor**2)
                    ),
                )
                for f, d, factor in maps
            ]
            ap = average_precision(truth, preds)
            scores.append((ap[0.5] + ap[0.75]) / 2)
        score = float(np.mean(scores))
        if score > best[0]:
            best = (score, post)
    return best[1], {
        "grid": "; ".join(f"{k} {v}" for k, v in grid.items())
        + (", at the automatic size" if auto_size else "")
        + (f"; mean over {len(items)} + {len(also)} images" if also else ""),
        "score": round(best[0], 4),
    }


def score_segmenter(
    model: Any,
    items: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    diameter_px: float | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-image and pooled AP@0.5/0.75 of the model and the tuned Otsu baseline."""
    settings, baseline = best_otsu_watershed(items)
    rows = []
    preds = []
    for i, (img, lab) in enumerate(items):
        pred = model.predict(img, diameter_px=diameter_px)
        preds.append(pred)
        ap_m = average_precision(lab, pred)
        ap_b = average_precision(lab, baseline[i])
        rows.append(
            {
                "image": i,
                "n_true": int(len(np.unique(lab)) - 1),
                "n_pred": int(pred.max()),
                "ap50_model": ap_m[0.5],
                "ap75_model": ap_m[0.75],
                "ap50_otsu": ap_b[0.5],
                "ap75_otsu": ap_b[0.75],
            }
        )
    truths = [lab for _, lab in items]
    ap_m = average_precision(truths, preds)
    ap_b = average_precision(truths, baseline)
    metrics = {
        "ap50": round(ap_m[0.5], 4),
        "ap75": round(ap_m[0.75], 4),
        "ap50_otsu_watershed": round(ap_b[0.5], 4),
        "ap75_otsu_watershed": round(ap_b[0.75], 4),
        "otsu_watershed_settings": settings,
        "n_images": len(rows),
        "n_nuclei": int(sum(r["n_true"] for r in rows)),
        "ap_definition": "TP/(TP+FP+FN) pooled over images, one-to-one IoU matching",
    }
    return rows, metrics


def segmentation_ablation(
    model: Any, items: Sequence[tuple[np.ndarray, np.ndarray]]
) -> dict[str, dict[str, float]]:
    """AP@0.5/0.75 of the segmenter's parts: the foreground map alone (connected
    components), foreground + distance watershed at the image's own scale, and
    the full ``predict`` (with the automatic rescaling)."""
    post = model.card.postprocess or Postprocess()
    truths = [lab for _, lab in items]
    cc, ws, full = [], [], []
    for img, _ in items:
        fg, dist = model.maps(img)
        cc.append(ndi.label(fg > post.fg_threshold)[0])
        # the smallest object kept scales with the nuclei, as in predict
        size = model._size_factor(1.0, estimate_diameter_px(fg > post.fg_threshold))
        ws.append(model._labels(fg, dist, size, post))
        full.append(model.predict(img))
    out = {}
    for name, preds in (
        ("foreground_components", cc),
        ("distance_watershed", ws),
        ("distance_watershed_auto_rescale", full),
    ):
        ap = average_precision(truths, preds)
        out[name] = {"ap50": round(ap[0.5], 4), "ap75": round(ap[0.75], 4)}
    return out


# ------------------------------------------------------- shifted test set

#: settings deliberately outside the segmentation training ranges
SHIFTED_SPEC_ARGS: dict[str, Any] = {
    "objectives": ("4x", "40x"),
    "channels": ("GFP",),
    "power_mw": (5.0, 40.0),
    "exposure_ms": (20.0, 200.0),
    "density_per_mm2": (150.0, 1500.0),
    "texture": (0.45, 0.6),
    "brightness_sd": (0.6, 0.8),
    "elongation_sd": (0.35, 0.5),
    "bit_depth": (12,),
    "gain_e_per_adu": (1.5, 2.5),
    "read_noise_e": (3.0, 5.0),
}


def shifted_frames(n: int, *, seed: int = 7) -> list[tuple[np.ndarray, np.ndarray]]:
    """Real-looking frames made with settings the segmenter never saw in training.

    4x (nuclei ~10-12 px, radius 8-10 µm, 150-1500 /mm², defocus up to 4 µm)
    and 40x (nuclei ~30-45 px, radius 2.5-3.5 µm, 2500-5000 /mm², defocus up
    to 0.3 µm) objectives, GFP channel, strong chromatin texture, wide
    brightness spread, elongated nuclei, a 12-bit camera with 2 e-/ADU gain and
    4 e- read noise; then, after the camera, vignetting (up to 35% fall-off),
    a background ramp, and every other frame stored as 8-bit.

    Returns (image, labels) pairs; images are float32 (16-bit range) or uint8.
    """
    from smartscope.nn.simdata import SimDataSpec, simulate_frames

    out: list[tuple[np.ndarray, np.ndarray]] = []
    rng = np.random.default_rng([seed, 0x5F1F7])
    per = max(1, n // 2)
    # (objective, radius µm, density /mm², defocus µm): at NA 0.95 a micrometre
    # of defocus already blurs nuclei far beyond their outline
    views = (
        ("4x", (8.0, 10.0), (150.0, 1500.0), (0.0, 4.0)),
        ("40x", (2.5, 3.5), (2500.0, 5000.0), (0.0, 0.3)),
    )
    for k, (obj, radius, density, defocus) in enumerate(views):
        spec = SimDataSpec(
            size_px=512,
            radius_um_mean=radius,
            **{
                **SHIFTED_SPEC_ARGS,
                "objectives": (obj,),
                "density_per_mm2": density,
                "defocus_um": defocus,
            },
        )
        for f in simulate_frames(per if k == 0 else n - per, spec, seed=seed * 10 + k):
            img = f.image.astype(np.float32) - f.offset_adu
            h, w = img.shape
            yy, xx = np.mgrid[0:h, 0:w]
            r2 = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / (h * h / 2)
            img = img * (1.0 - rng.uniform(0.15, 0.35) * r2)
            peak = float(np.percentile(img, 99.9))
            ang = rng.uniform(0, 2 * np.pi)
            ramp = (np.cos(ang) * yy + np.sin(ang) * xx) / max(h, w)
            img = img + rng.uniform(0.05, 0.2) * peak * (ramp - ramp.min())
            img = img + f.offset_adu
            if len(out) % 2:
                img = np.clip(img / np.percentile(img, 99.95) * 255, 0, 255).astype(
                    np.uint8
                )
            out.append((img, f.labels))
    return out


class _TTA:
    """A denoiser with test-time augmentation forced on or off."""

    def __init__(self, model: Any, tta: bool) -> None:
        self.model, self.tta = model, tta

    def predict(self, image: np.ndarray) -> np.ndarray:
        return self.model.predict(image, tta=self.tta)


#: steps of :func:`evaluate_shipped`, for a progress display
EVALUATE_STEPS = 14


def evaluate_shipped(
    *,
    n_val: int = 16,
    n_shifted: int = 12,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Score the shipped models on the validation sets their cards describe and
    the segmenter on :func:`shifted_frames`; returns a JSON-able dict.
    ``progress(step)`` is called as each of the EVALUATE_STEPS steps ends."""

    def done(step: str) -> None:
        if progress is not None:
            progress(step)

    from smartscope.nn.model import load_model
    from smartscope.nn.simdata import simulate_frames
    from smartscope.nn.train import DENOISE_SPEC, SEGMENT_VAL_SPEC

    res: dict[str, Any] = {}
    pairs = [
        (f.image, f.clean)
        for f in simulate_frames(n_val, DENOISE_SPEC, seed=seed + 100_001)
    ]
    done("denoising validation frames simulated")
    for name in ("denoise-care", "denoise-n2v"):
        model = load_model(name, device="cpu")
        _, res[name] = score_denoiser(model, pairs)  # as the card says
        done(f"{name} scored")
        # and with / without 8-fold test-time augmentation, whatever the card says
        for tta, suffix in ((True, "tta"), (False, "no-tta")):
            _, res[f"{name}-{suffix}"] = score_denoiser(_TTA(model, tta), pairs)
            done(f"{name} ({suffix}) scored")
    care, n2v = res["denoise-care"], res["denoise-n2v"]
    res["n2v_fraction_of_care_gain"] = round(
        n2v["psnr_gain_over_input_db"] / care["psnr_gain_over_input_db"], 3
    )
    res["n2v_fraction_of_care_tta_gain"] = round(
        n2v["psnr_gain_over_input_db"]
        / res["denoise-care-tta"]["psnr_gain_over_input_db"],
        3,
    )
    seg = load_model("nuclei-seg", device="cpu")
    items = [
        (f.image, f.labels)
        for f in simulate_frames(n_val, SEGMENT_VAL_SPEC, seed=seed + 100_001)
    ]
    done("segmentation validation frames simulated")
    _, res["nuclei-seg"] = score_segmenter(seg, items)
    done("nuclei-seg scored")
    shifted = shifted_frames(n_shifted)
    _, res["nuclei-seg-shifted"] = score_segmenter(seg, shifted)
    done("nuclei-seg scored on shifted frames")
    # crowded dishes: many touching nuclei, where splitting them is the whole job
    crowded_spec = SEGMENT_VAL_SPEC.model_copy(
        update={"density_per_mm2": (3500.0, 5000.0), "radius_um_mean": (6.0, 8.0)}
    )
    crowded = [
        (f.image, f.labels) for f in simulate_frames(8, crowded_spec, seed=31337)
    ]
    _, res["nuclei-seg-crowded"] = score_segmenter(seg, crowded)
    done("nuclei-seg scored on crowded dishes")
    res["nuclei-seg-ablation"] = {}
    for key, data in (
        ("validation", items),
        ("crowded", crowded),
        ("shifted", shifted),
    ):
        res["nuclei-seg-ablation"][key] = segmentation_ablation(seg, data)
        done(f"ablation on {key} frames")
    res["nuclei-seg-shifted"]["settings"] = {
        k: list(v) if isinstance(v, tuple) else v for k, v in SHIFTED_SPEC_ARGS.items()
    }
    return res


def _evaluate_with_progress() -> dict[str, Any]:
    """evaluate_shipped with a progress bar and ETA on stderr (minutes on a CPU)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]evaluating[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("loading", total=EVALUATE_STEPS)

        def step(what: str) -> None:
            bar.update(task, advance=1, description=what)
            if not console.is_terminal:  # a log file gets a line per step
                console.print(f"evaluate: {what}", highlight=False)

        return evaluate_shipped(progress=step)


def main(argv: list[str] | None = None) -> int:
    """``python -m smartscope.nn.evaluate [--out FILE.json]``: print the tables of docs/models.md."""
    import argparse
    import json
    from pathlib import Path

    import torch

    parser = argparse.ArgumentParser(description="score the shipped models")
    parser.add_argument(
        "--out", type=Path, default=None, help="write the numbers as JSON"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    res = _evaluate_with_progress()
    c, n = res["denoise-care"], res["denoise-n2v"]
    print("| method | PSNR (dB) | SSIM |\n|---|---:|---:|")
    print(f"| noisy input | {c['psnr_db_input']:.2f} | |")
    print(
        f"| Gaussian, best sigma {c['gaussian_sigma_px']} px | {c['psnr_db_gaussian']:.2f} "
        f"| {c['ssim_gaussian']:.3f} |"
    )
    print(f"| CARE (denoise-care) | {c['psnr_db']:.2f} | {c['ssim']:.3f} |")
    print(f"| Noise2Void (denoise-n2v) | {n['psnr_db']:.2f} | {n['ssim']:.3f} |")
    for key, label in (
        ("denoise-care-tta", "CARE, 8-fold TTA"),
        ("denoise-care-no-tta", "CARE, no TTA"),
        ("denoise-n2v-tta", "Noise2Void, 8-fold TTA"),
        ("denoise-n2v-no-tta", "Noise2Void, no TTA"),
    ):
        r = res[key]
        print(f"| {label} | {r['psnr_db']:.2f} | {r['ssim']:.3f} |")
    print(
        "N2V recovers "
        f"{100 * res['n2v_fraction_of_care_tta_gain']:.0f}% of CARE+TTA's PSNR gain"
    )
    print(
        f"\nN2V recovers {100 * res['n2v_fraction_of_care_gain']:.0f}% of CARE's PSNR gain\n"
    )
    for key in ("nuclei-seg", "nuclei-seg-crowded", "nuclei-seg-shifted"):
        s = res[key]
        print(
            f"{key}: AP@0.5 {s['ap50']:.3f} (Otsu {s['ap50_otsu_watershed']:.3f}), "
            f"AP@0.75 {s['ap75']:.3f} (Otsu {s['ap75_otsu_watershed']:.3f}), "
            f"{s['n_images']} images, {s['n_nuclei']} nuclei, Otsu {s['otsu_watershed_settings']}"
        )
    for key, abl in res["nuclei-seg-ablation"].items():
        print(
            f"ablation ({key}): "
            + ", ".join(f"{k} {v['ap50']:.3f}/{v['ap75']:.3f}" for k, v in abl.items())
        )
    if args.out is not None:
        args.out.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
