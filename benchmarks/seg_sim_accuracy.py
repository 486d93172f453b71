"""nuclei-seg on simulated frames with ground truth: AP@0.5 / 0.75.

Three sets, as ``python -m smartscope.nn.evaluate`` builds them: the
validation frames of the segmentation training spec (16, seed 100001),
crowded dishes (8, 3500-5000 nuclei/mm², seed 31337) and the shifted frames
(12: another microscope's noise and blur). Each is segmented with the
automatic size (no ``diameter_px``) and with the true diameter (the
area-weighted median of the truth's objects, what a protocol's
``diameter_um`` gives), by the int8 copy the analysis uses (``auto`` on the
CPU) and the float32 network. One thread. For checking that a change of the
segmenter's pre- or post-processing keeps its accuracy: run it before and
after.

Usage::

    python benchmarks/seg_sim_accuracy.py --json OUT.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from smartscope.analysis.analyser import load_analysis_model
from smartscope.metrics import average_precision
from smartscope.nn.evaluate import shifted_frames
from smartscope.nn.instances import object_diameter_px
from smartscope.nn.simdata import simulate_frames
from smartscope.nn.train import SEGMENT_VAL_SPEC


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    val = [
        (f.image, f.labels) for f in simulate_frames(16, SEGMENT_VAL_SPEC, seed=100_001)
    ]
    crowded_spec = SEGMENT_VAL_SPEC.model_copy(
        update={"density_per_mm2": (3500.0, 5000.0), "radius_um_mean": (6.0, 8.0)}
    )
    crowded = [
        (f.image, f.labels) for f in simulate_frames(8, crowded_spec, seed=31337)
    ]
    sets = {"val": val, "crowded": crowded, "shifted": shifted_frames(12)}
    out: dict[str, list[float]] = {}
    for precision in ("auto", "float32"):
        seg = load_analysis_model(
            "nuclei-seg", role="segmenter", device="cpu", precision=precision
        )
        for name, data in sets.items():
            for size in ("auto", "truth"):
                preds = [
                    seg.predict(
                        image,
                        diameter_px=object_diameter_px(truth)
                        if size == "truth"
                        else None,
                    )
                    for image, truth in data
                ]
                res = average_precision([t for _, t in data], preds)
                key = f"{precision}/{name}/{size}"
                out[key] = [round(res[0.5], 4), round(res[0.75], 4)]
                print(key, out[key], flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
