"""Noise2Void trained on the noisy image itself, on real fluorescence images.

Each clean, high-SNR real image in ``--images`` (default
``benchmarks/data/real_denoise``, sources in its ``SOURCES.md``) is turned into
a low-light acquisition: its offset (0.1th percentile) is removed, it is
scaled so that its 99.9th percentile is ``--photons`` photons, and a Poisson
draw of that (seeded) is the noisy image. The noise-free scaled image is the
truth. Then, per image:

- the best Gaussian filter (sigma chosen on the truth, as a generous baseline);
- the shipped ``denoise-n2v`` as it is;
- ``smartscope train n2v --data noisy.tif`` with the CLI's defaults (plus
  ``--ours-args``), timed, then the trained model on the whole noisy image;
- optionally CAREamics' N2V (``--careamics-python`` and ``--careamics-script``,
  a script taking ``--noisy --out --budget-s``) with the same wall-clock budget
  as ours took;
- optionally BM3D behind the Anscombe transform, given the true (Poisson)
  noise model (``--bm3d-python`` and ``--bm3d-script``, a script taking
  ``--noisy --out``; ``benchmarks/bm3d_reference/``): the classical single-image
  reference.

PSNR is against the truth with its own range (max - min). Prints a table and
writes ``--json``.

Usage::

    python benchmarks/n2v_real_images.py [--images DIR] [--photons 15]
        [--only NAME ...] [--careamics-python PY --careamics-script PATH]
        [--bm3d-python PY --bm3d-script PATH] [--json F]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from smartscope.metrics import psnr
from smartscope.nn import load_model
from smartscope.nn.evaluate import best_gaussian

ROOT = Path(__file__).resolve().parents[1]


def low_light(
    clean: np.ndarray, photons: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(truth in photons, Poisson noisy image) for a clean image."""
    a = clean.astype(np.float64)
    lo, hi = np.percentile(a, [0.1, 99.9])
    lam = np.clip((a - lo) / (hi - lo), 0, None) * photons
    noisy = np.random.default_rng(seed).poisson(lam).astype(np.float32)
    return lam.astype(np.float32), noisy


def run_ours(noisy_path: Path, out: Path, extra: list[str]) -> float:
    cmd = [
        sys.executable,
        "-m",
        "smartscope",
        "train",
        "n2v",
        "--data",
        str(noisy_path),
        "--out",
        str(out),
        *extra,
    ]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def run_careamics(
    python: str, script: str, noisy_path: Path, out: Path, budget_s: float
) -> tuple[np.ndarray, dict]:
    # CAREamics predicts only sizes that are multiples of 2**depth: mirror-pad
    # to a multiple of 16 and crop its output back
    noisy = tifffile.imread(noisy_path)
    h, w = noisy.shape
    padded = out.with_name(out.stem + "_input.tif")
    tifffile.imwrite(padded, np.pad(noisy, ((0, -h % 16), (0, -w % 16)), "reflect"))
    cmd = [
        python,
        script,
        "--noisy",
        str(padded),
        "--out",
        str(out),
        "--budget-s",
        f"{budget_s:.0f}",
    ]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, check=True, capture_output=True, text=True)
    info = {"wall_s": round(time.perf_counter() - t0, 1)}
    for line in p.stdout.splitlines()[::-1]:
        if line.startswith("{"):
            info.update(json.loads(line))
            break
    return tifffile.imread(out).astype(np.float32)[:h, :w], info


def run_bm3d(python: str, script: str, noisy_path: Path, out: Path) -> np.ndarray:
    cmd = [python, script, "--noisy", str(noisy_path), "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return tifffile.imread(out).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--images", type=Path, default=ROOT / "benchmarks/data/real_denoise"
    )
    ap.add_argument("--photons", type=float, default=15.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", default=None, help="image file stems")
    ap.add_argument("--ours-args", default="", help="extra `train n2v` options")
    ap.add_argument("--careamics-python", default=None)
    ap.add_argument("--careamics-script", default=None)
    ap.add_argument("--bm3d-python", default=None)
    ap.add_argument("--bm3d-script", default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    shipped = load_model("denoise-n2v", device="cpu")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in sorted(args.images.glob("*.tif")):
            if args.only and path.stem not in args.only:
                continue
            clean = tifffile.imread(path)
            truth, noisy = low_light(clean, args.photons, args.seed)
            noisy_path = Path(tmp) / f"{path.stem}_noisy.tif"
            tifffile.imwrite(noisy_path, noisy)
            sigma, gauss = best_gaussian([(noisy, truth)])
            row = {
                "image": path.stem,
                "shape": list(noisy.shape),
                "psnr_input": round(psnr(truth, noisy), 2),
                "psnr_gaussian": round(gauss[0], 2),
                "gaussian_sigma_px": sigma,
                "psnr_shipped_n2v": round(psnr(truth, shipped.predict(noisy)), 2),
            }
            model_dir = Path(tmp) / f"{path.stem}_model"
            row["ours_wall_s"] = round(
                run_ours(noisy_path, model_dir, shlex.split(args.ours_args)), 1
            )
            ours = load_model(model_dir, device="cpu")
            row["psnr_ours"] = round(psnr(truth, ours.predict(noisy)), 2)
            row["ours_gain_over_gaussian_db"] = round(
                row["psnr_ours"] - row["psnr_gaussian"], 2
            )
            if args.careamics_python and args.careamics_script:
                den, info = run_careamics(
                    args.careamics_python,
                    args.careamics_script,
                    noisy_path,
                    Path(tmp) / f"{path.stem}_careamics.tif",
                    row["ours_wall_s"],
                )
                row["psnr_careamics"] = round(psnr(truth, den), 2)
                row["careamics"] = info
            if args.bm3d_python and args.bm3d_script:
                den = run_bm3d(
                    args.bm3d_python,
                    args.bm3d_script,
                    noisy_path,
                    Path(tmp) / f"{path.stem}_bm3d.tif",
                )
                row["psnr_bm3d_anscombe"] = round(psnr(truth, den), 2)
                row["bm3d_gain_over_gaussian_db"] = round(
                    row["psnr_bm3d_anscombe"] - row["psnr_gaussian"], 2
                )
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {
        "photons_peak": args.photons,
        "seed": args.seed,
        "ours_args": args.ours_args,
        "rows": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
