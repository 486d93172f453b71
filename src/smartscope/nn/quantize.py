"""int8 weights for the CPU: quantise a model folder's U-Net, check it, record it.

``python -m smartscope.nn.quantize models/nuclei-seg`` (or ``smartscope train
quantize FOLDER``):

1. exports the U-Net (batch norm folded) to ONNX with free height and width;
2. calibrates int8 activation ranges (ONNX Runtime's static quantisation,
   QDQ format, per-channel int8 weights, uint8 activations, min/max ranges)
   on the networks' own inputs for frames simulated like its training data
   (:data:`smartscope.nn.train.SEGMENT_SPEC` or ``DENOISE_SPEC``, seeds that
   neither training nor validation uses), exactly as ``predict`` feeds them:
   normalised, rescaled, padded;
3. scores the float32 and the int8 network on the validation frames of
   ``smartscope train evaluate`` (segmenters: AP@0.5 and AP@0.75 on the
   validation and the shifted, real-looking frames; denoisers: PSNR);
4. writes ``weights_int8.onnx`` and the card's ``config.smartscope.int8``
   entry (file, sha256, calibration, both scores) only when every score of
   the int8 network is within tolerance of the float32 one (AP at most 0.01
   lower, PSNR at most 0.2 dB lower); otherwise raises
   :class:`QuantizationRejected` with the numbers and leaves the folder as it
   was.

Measured on the shipped models (docs/models.md): ``nuclei-seg`` keeps its AP
to within 0.002 at about 1.7x less network time; the denoisers lose 10-25 dB
(their full-resolution decoder layers cannot carry the image in 8 bits), so
they keep float32.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from smartscope.nn.card import INT8_NAME, RDF_NAME, ModelCard, read_rdf, sha256_of
from smartscope.nn.errors import ModelError

__all__ = [
    "AP_TOLERANCE",
    "PSNR_TOLERANCE_DB",
    "QuantizationRejected",
    "export_onnx",
    "quantize_folder",
]

#: how much lower the int8 network's AP (each of AP@0.5, AP@0.75, on each
#: validation set) may be than the float32 network's
AP_TOLERANCE = 0.01
#: how much lower the int8 denoiser's mean PSNR may be, dB
PSNR_TOLERANCE_DB = 0.2
#: seeds of the calibration frames (training uses 0.., validation 100_001..)
CALIBRATION_SEED = 70_001


class QuantizationRejected(ModelError):
    """The int8 network scored outside tolerance; ``scores`` has the numbers."""

    def __init__(self, message: str, *, path: Path, scores: dict[str, Any]) -> None:
        super().__init__(message, path=path)
        self.scores = scores


def export_onnx(model: Any) -> bytes:
    """The model's U-Net (batch norm folded) as an ONNX model whose input
    ``x`` is (B, 1, Y, X) float32 with free B, Y and X."""
    from smartscope.nn.predictor import fuse_batchnorm
    from smartscope.nn.unet import UNet

    if model.source_state is None:
        raise ModelError(
            "only smartscope U-Net models (weights.pt) can be quantised",
            path=model.path,
        )
    net = UNet(model.card.unet)
    net.load_state_dict(model.source_state)
    net = fuse_batchnorm(net.eval())
    m = model.card.unet.size_multiple
    example = torch.zeros(1, 1, 4 * m, 4 * m)
    buf = io.BytesIO()
    dims = {0: "batch", 2: "y", 3: "x"}
    with torch.inference_mode():
        torch.onnx.export(
            net,
            (example,),
            buf,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": dims, "y": dims},
            opset_version=17,
            dynamo=False,
        )
    return buf.getvalue()


def _network_inputs(model: Any, images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """What the network sees when ``model.predict`` runs on each image."""
    seen: list[np.ndarray] = []
    predictor = model.predictor
    forward = predictor._forward

    def grab(batch: torch.Tensor) -> torch.Tensor:
        seen.append(batch.detach().contiguous().cpu().numpy().copy())
        return forward(batch)

    predictor._forward = grab
    try:
        for image in images:
            model.predict(image)
    finally:
        predictor._forward = forward
    return seen


def _quantize(onnx_model: bytes, inputs: list[np.ndarray]) -> bytes:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(inputs)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {"x": x}

    with tempfile.TemporaryDirectory(prefix="smartscope-quantize-") as tmp:
        src, pre, out = (Path(tmp) / n for n in ("f32.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(onnx_model)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        return out.read_bytes()


def _scores(model: Any, sets: dict[str, list[tuple[np.ndarray, np.ndarray]]]) -> dict:
    from smartscope.nn.evaluate import score_denoiser, score_segmenter

    out: dict[str, float] = {}
    for key, data in sets.items():
        if model.kind == "segment":
            _, r = score_segmenter(model, data)
            out[f"{key}_ap50"] = r["ap50"]
            out[f"{key}_ap75"] = r["ap75"]
        else:
            _, r = score_denoiser(model, data)
            out[f"{key}_psnr_db"] = r["psnr_db"]
    return out


def _frames(kind: str, n_calibration: int, n_validation: int) -> tuple[list, dict]:
    from smartscope.nn.evaluate import shifted_frames
    from smartscope.nn.simdata import simulate_frames
    from smartscope.nn.train import DENOISE_SPEC, SEGMENT_SPEC, SEGMENT_VAL_SPEC

    if kind == "segment":
        calib = simulate_frames(n_calibration, SEGMENT_SPEC, seed=CALIBRATION_SEED)
        val = simulate_frames(n_validation, SEGMENT_VAL_SPEC, seed=100_001)
        sets = {
            "validation": [(f.image, f.labels) for f in val],
            "shifted": shifted_frames(max(2, n_validation * 3 // 4)),
        }
        what = f"SEGMENT_SPEC, {n_calibration} frames, seed {CALIBRATION_SEED}"
    else:
        calib = simulate_frames(n_calibration, DENOISE_SPEC, seed=CALIBRATION_SEED)
        val = simulate_frames(n_validation, DENOISE_SPEC, seed=100_001)
        sets = {"validation": [(f.image, f.clean) for f in val]}
        what = f"DENOISE_SPEC, {n_calibration} frames, seed {CALIBRATION_SEED}"
    return [f.image for f in calib], {"sets": sets, "what": what}


def quantize_folder(
    folder: str | Path,
    *,
    n_calibration: int = 8,
    n_validation: int = 16,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Quantise the U-Net of the model folder ``folder`` (see the module doc).

    Returns
    -------
    dict
        ``scores`` (``float32`` and ``int8``, per validation set and metric),
        ``calibration``, ``path`` of the ONNX file written.

    Raises
    ------
    QuantizationRejected
        when a score of the int8 network is outside tolerance (and ``force``
        is not set); nothing is written.
    ModelError
        for a folder that is not a smartscope U-Net model.
    """
    from smartscope.nn.model import load_model

    def say(what: str) -> None:
        if progress is not None:
            progress(what)

    folder = Path(folder)
    rdf_path = folder / RDF_NAME
    if not rdf_path.is_file():
        raise ModelError(f"not a model folder (no {RDF_NAME})", path=folder)
    model = load_model(folder, device="cpu", precision="float32")
    if model.kind not in ("segment", "denoise"):
        raise ModelError("only U-Net models can be quantised", path=folder)
    images, val = _frames(model.kind, n_calibration, n_validation)
    say("frames simulated")
    onnx_f32 = export_onnx(model)
    inputs = _network_inputs(model, images)
    onnx_int8 = _quantize(onnx_f32, inputs)
    say(f"quantised on {len(inputs)} network inputs")
    f32 = _scores(model, val["sets"])
    say("float32 scored")
    int8_model = load_model(folder, device="cpu", precision="float32")
    from smartscope.nn.predictor import OnnxRunner

    int8_model.predictor._onnx = OnnxRunner(onnx_int8)
    int8 = _scores(int8_model, val["sets"])
    say("int8 scored")
    scores = {"float32": f32, "int8": int8}
    worse = [
        f"{k}: {f32[k]} -> {int8[k]}"
        for k in f32
        if f32[k] - int8[k] > (PSNR_TOLERANCE_DB if k.endswith("_db") else AP_TOLERANCE)
    ]
    if worse and not force:
        raise QuantizationRejected(
            "the int8 network is less accurate than the float32 one beyond "
            f"tolerance (AP {AP_TOLERANCE}, PSNR {PSNR_TOLERANCE_DB} dB): "
            + "; ".join(worse)
            + "; nothing written",
            path=folder,
            scores=scores,
        )
    out = folder / INT8_NAME
    out.write_bytes(onnx_int8)
    _record(rdf_path, sha256_of(out), val["what"], scores)
    say(f"written {out}")
    return {"scores": scores, "calibration": val["what"], "path": str(out)}


def _record(rdf_path: Path, sha256: str, calibration: str, scores: dict) -> None:
    """Add (or replace) ``config.smartscope.int8`` in the card, nothing else."""
    rdf, card = read_rdf(rdf_path)
    entry = {
        "source": INT8_NAME,
        "sha256": sha256,
        "calibration": calibration,
        "accuracy": scores,
    }
    ModelCard.model_validate({**card.model_dump(mode="json"), "int8": entry})
    rdf["config"]["smartscope"]["int8"] = entry
    rdf_path.write_text(yaml.safe_dump(rdf, sort_keys=False, width=100))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m smartscope.nn.quantize", description=__doc__.splitlines()[0]
    )
    ap.add_argument("folder", type=Path, help="model folder (e.g. models/nuclei-seg)")
    ap.add_argument("--calibration-frames", type=int, default=8)
    ap.add_argument("--validation-frames", type=int, default=16)
    ap.add_argument(
        "--force", action="store_true", help="write it even when less accurate"
    )
    args = ap.parse_args(argv)
    try:
        res = quantize_folder(
            args.folder,
            n_calibration=args.calibration_frames,
            n_validation=args.validation_frames,
            force=args.force,
            progress=lambda what: print(f"quantize: {what}", file=sys.stderr),
        )
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        if isinstance(e, QuantizationRejected):
            print(yaml.safe_dump(e.scores, sort_keys=False), file=sys.stderr)
        return 1
    print(yaml.safe_dump(res, sort_keys=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
