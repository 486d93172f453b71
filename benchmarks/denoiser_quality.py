"""Denoisers side by side: PSNR/SSIM on the validation frames of
``smartscope train evaluate`` (16 low-dose fields, seed 100001), float32 and
int8, and what each does for the segmenter downstream (nuclei-seg's mean
AP@0.5/0.75 on 16 frames of SEGMENT_VAL_SPEC and of DENOISE_SPEC, raw or
restored first, as the analysis pipeline feeds it).

    python benchmarks/denoiser_quality.py [--out FILE] [NAME ...]

Default names: denoise-care denoise-care-fast. Writes
``benchmarks/results/denoiser-quality-<date>.json`` unless ``--out``.
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    from smartscope.bench import machine_info
    from smartscope.metrics import average_precision
    from smartscope.nn.evaluate import score_denoiser
    from smartscope.nn.model import load_model
    from smartscope.nn.simdata import simulate_frames
    from smartscope.nn.train import DENOISE_SPEC, SEGMENT_VAL_SPEC

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", default=["denoise-care", "denoise-care-fast"])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    res: dict = {"machine": machine_info(), "psnr": {}, "segmentation_downstream": {}}
    pairs = [
        (f.image, f.clean) for f in simulate_frames(16, DENOISE_SPEC, seed=100_001)
    ]
    for name in args.names:
        for precision in ("float32", "int8"):
            model = load_model(name, device="cpu", precision=precision)
            _, s = score_denoiser(model, pairs)
            keep = ("psnr_db", "ssim", "psnr_db_input", "psnr_db_gaussian")
            res["psnr"][f"{name} ({precision})"] = {k: s[k] for k in keep}
            print(name, precision, res["psnr"][f"{name} ({precision})"], flush=True)
    seg = load_model("nuclei-seg", device="cpu")
    for spec_name, spec in (
        ("SEGMENT_VAL_SPEC", SEGMENT_VAL_SPEC),
        ("DENOISE_SPEC", DENOISE_SPEC),
    ):
        frames = simulate_frames(16, spec, seed=100_001)
        for name in ["none", *args.names]:
            den = None if name == "none" else load_model(name, device="cpu")
            aps = []
            for f in frames:
                img = f.image if den is None else den.predict(f.image)
                aps.append(average_precision(f.labels, seg.predict(img)))
            row = {
                f"ap{int(t * 100)}": round(float(np.mean([a[t] for a in aps])), 4)
                for t in (0.5, 0.75)
            }
            res["segmentation_downstream"][f"{spec_name}: {name}"] = row
            print(spec_name, name, row, flush=True)
    out = (
        args.out
        or ROOT / "benchmarks" / "results" / f"denoiser-quality-{date.today()}.json"
    )
    out.write_text(json.dumps(res, indent=1))
    print("written", out)


if __name__ == "__main__":
    main()
