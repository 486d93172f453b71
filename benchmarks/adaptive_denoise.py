"""How much a Noise2Void denoiser gains by adapting to the run's own frames.

Runs a protocol with ``analysis.denoise: {model: ..., adapt: true}`` on the
simulator and scores every denoised frame of the stream against the
simulator's noise-free image of that frame (``FrameTruth.expected_adu``):

- the stream at its start (frames denoised by the weights as loaded) and at
  its end (the last versions);
- the weights as loaded, run afterwards on the end's frames (the same frames,
  so the gain is not a change of sample);
- the adapted package the run saved, reloaded from the run folder;
- the best Gaussian filter (sigma chosen per run on the truth).

PSNR uses each frame's noise-free range (max - min), as
``smartscope.nn.evaluate.psnr`` does.

Usage::

    python benchmarks/adaptive_denoise.py [--protocol protocols/adaptive_denoise.yaml]
        [--loops N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from smartscope.controller import Controller
from smartscope.hardware import load_core, release_core
from smartscope.nn import load_model
from smartscope.nn.evaluate import best_gaussian, psnr
from smartscope.protocol import load_protocol
from smartscope.sim import get_simulator

ROOT = Path(__file__).resolve().parents[1]


def run_adaptive(protocol: Path, out: Path, *, loops: int | None = None) -> dict:
    """Run ``protocol`` into ``out``; per-frame raw, truth, denoised, version."""
    proto = load_protocol(protocol)
    if loops is not None:
        data = proto.model_dump(mode="json", exclude_none=True)
        data["sequence"]["time_plan"]["loops"] = loops
        data["save"]["report"] = False
        proto = type(proto).model_validate(data)
    core = load_core(seed=proto.seed, scene=proto.scene, time_mode=proto.time_mode)
    sim = get_simulator(core)
    truth: dict[bytes, np.ndarray] = {}
    frames: list[dict[str, Any]] = []

    def on_frame(image: np.ndarray, *_: Any) -> None:
        truth[np.asarray(image).tobytes()[:4096] + bytes(image.shape[0])] = (
            sim.truth().expected_adu.copy()
        )

    def on_result(result: Any) -> None:
        if result.error is not None or result.denoised is None:
            return
        raw = np.asarray(result.frame.image)
        frames.append(
            {
                "index": result.frame.frame_index,
                "raw": raw.copy(),
                "denoised": np.asarray(result.denoised, np.float32).copy(),
                "version": int(result.extra.get("denoiser_version", 0)),
                "key": raw.tobytes()[:4096] + bytes(raw.shape[0]),
            }
        )

    core.mda.events.frameReady.connect(on_frame)
    ctl = Controller(core, proto, out_dir=out, device="cpu")
    ctl.frame_analysed.connect(on_result)
    t0 = time.perf_counter()
    try:
        summary = ctl.run()
    finally:
        release_core(core)
    wall = time.perf_counter() - t0
    for f in frames:
        f["clean"] = truth[f.pop("key")]
    frames.sort(key=lambda f: f["index"])
    return {"frames": frames, "summary": summary, "wall_s": wall, "protocol": proto}


def score(res: dict, out: Path) -> dict[str, Any]:
    frames = res["frames"]
    proto = res["protocol"]
    k = proto.analysis.denoise_adapt.frames_per_version
    start = [f for f in frames if f["version"] == 0]
    last_v = max(f["version"] for f in frames)
    end = frames[-k:]
    shipped = load_model(proto.analysis.denoise, device="cpu")
    saved = load_model(out / "models" / f"{shipped.name}-adapted", device="cpu")
    sigma, _ = best_gaussian([(f["raw"], f["clean"]) for f in frames])
    from scipy import ndimage as ndi

    def mean(xs: list[float]) -> float:
        return round(float(np.mean(xs)), 2)

    records = [
        json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()
    ]
    versions = [r for r in records if r["kind"] == "denoiser_adapted"]
    saved_rec = [r for r in records if r["kind"] == "denoiser_saved"]
    return {
        "frames": len(frames),
        "versions": len(versions),
        "last_version": last_v,
        "end_versions": sorted({f["version"] for f in end}),
        "psnr_input_end": mean([psnr(f["clean"], f["raw"]) for f in end]),
        "psnr_stream_start": mean([psnr(f["clean"], f["denoised"]) for f in start]),
        "psnr_stream_end": mean([psnr(f["clean"], f["denoised"]) for f in end]),
        "psnr_shipped_end": mean(
            [psnr(f["clean"], shipped.predict(f["raw"])) for f in end]
        ),
        "psnr_saved_end": mean(
            [psnr(f["clean"], saved.predict(f["raw"])) for f in end]
        ),
        "psnr_saved_start": mean(
            [psnr(f["clean"], saved.predict(f["raw"])) for f in start]
        ),
        "psnr_shipped_start": mean(
            [psnr(f["clean"], shipped.predict(f["raw"])) for f in start]
        ),
        "psnr_gaussian_end": mean(
            [
                psnr(
                    f["clean"], ndi.gaussian_filter(f["raw"].astype(np.float32), sigma)
                )
                for f in end
            ]
        ),
        "gaussian_sigma_px": sigma,
        "skipped": res["summary"].get("frames_skipped_analysis"),
        "wall_s": round(res["wall_s"], 1),
        "saved": saved_rec[-1] if saved_rec else None,
        "steps": versions[-1]["steps"] if versions else 0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--protocol", type=Path, default=ROOT / "protocols" / "adaptive_denoise.yaml"
    )
    ap.add_argument(
        "--loops", type=int, default=None, help="time points (default: as shipped)"
    )
    ap.add_argument(
        "--out", type=Path, default=None, help="run folder (default: temporary)"
    )
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "run"
        res = run_adaptive(args.protocol, out, loops=args.loops)
        result = score(res, out)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
