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
4. when a score of the all-int8 network is out of tolerance (AP more than
   0.01 lower, PSNR more than 0.2 dB lower), looks for a mixed network: each
   convolution quantised alone and scored, then convolutions added from the
   least to the most harmful while the scores stay within tolerance; the
   others stay float32;
5. writes ``weights_int8.onnx`` and the card's ``config.smartscope.int8``
   entry (file, sha256, calibration, the convolutions kept in float32, both
   scores) only when the network found is within tolerance; otherwise raises
   :class:`QuantizationRejected` with the numbers and leaves the folder as it
   was.

Measured on the shipped models (docs/models.md): ``nuclei-seg`` is all int8
and keeps its AP to within 0.005 at about 1.8x less network time. The
denoisers lose 10-25 dB all in int8: their full-resolution layers cannot
carry the image in 8 bits; they ship mixed, those layers in float32.
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


def _prepared(onnx_model: bytes) -> bytes:
    """The model after ONNX Runtime's pre-processing for quantisation."""
    from onnxruntime.quantization import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="smartscope-quantize-") as tmp:
        src, pre = Path(tmp) / "f32.onnx", Path(tmp) / "pre.onnx"
        src.write_bytes(onnx_model)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        return pre.read_bytes()


def _convolutions(prepared: bytes) -> list[str]:
    import onnx

    graph = onnx.load_model_from_string(prepared).graph
    return [n.name for n in graph.node if n.op_type == "Conv"]


def _quantize(
    prepared: bytes, inputs: list[np.ndarray], nodes: list[str] | None = None
) -> bytes:
    """Static int8 quantisation of every node, or of ``nodes`` only."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(inputs)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {"x": x}

    with tempfile.TemporaryDirectory(prefix="smartscope-quantize-") as tmp:
        pre, out = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        pre.write_bytes(prepared)
        quantize_static(
            str(pre),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            **({} if nodes is None else {"nodes_to_quantize": list(nodes)}),
        )
        return out.read_bytes()


def _scores(model: Any, sets: dict[str, list[tuple[np.ndarray, np.ndarray]]]) -> dict:
    """Segmenters: AP@0.5 and AP@0.75 pooled over each set's images
    (``smartscope train evaluate``'s definition); denoisers: mean PSNR
    against the noise-free truth."""
    from smartscope.metrics import average_precision, psnr

    out: dict[str, float] = {}
    for key, data in sets.items():
        if model.kind == "segment":
            preds = [model.predict(img) for img, _ in data]
            ap = average_precision([lab for _, lab in data], preds)
            out[f"{key}_ap50"] = round(float(ap[0.5]), 4)
            out[f"{key}_ap75"] = round(float(ap[0.75]), 4)
        else:
            vals = [psnr(clean, model.predict(noisy)) for noisy, clean in data]
            out[f"{key}_psnr_db"] = round(float(np.mean(vals)), 2)
    return out


def _worse(f32: dict[str, float], int8: dict[str, float]) -> list[str]:
    """The scores of ``int8`` out of tolerance, as "name: float32 -> int8"."""
    return [
        f"{k}: {f32[k]} -> {int8[k]}"
        for k in f32
        if f32[k] - int8[k] > (PSNR_TOLERANCE_DB if k.endswith("_db") else AP_TOLERANCE)
    ]


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
    mixed: bool = True,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Quantise the U-Net of the model folder ``folder`` (see the module doc).

    ``mixed``: when the all-int8 network is out of tolerance, look for one
    with some convolutions in float32 (two rounds of quantising and scoring,
    one per convolution: 15 s for denoise-care on 2 cores). The
    convolutions are chosen on the validation frames the scores are then
    reported on, so for a mixed network those scores lean optimistic.

    Returns
    -------
    dict
        ``scores`` (``float32`` and ``int8``, per validation set and metric),
        ``float32_layers`` (the convolutions left in float32), ``calibration``,
        ``path`` of the ONNX file written.

    Raises
    ------
    QuantizationRejected
        when no network within tolerance was found (and ``force`` is not
        set); nothing is written.
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
    sets = val["sets"]
    say("frames simulated")
    prepared = _prepared(export_onnx(model))
    inputs = _network_inputs(model, images)
    f32 = _scores(model, sets)
    say(f"float32 scored: {f32}")
    trial = load_model(folder, device="cpu", precision="float32")

    def scored(nodes: list[str] | None) -> tuple[bytes, dict[str, float]]:
        onnx_int8 = _quantize(prepared, inputs, nodes)
        trial.predictor.use_int8(onnx_int8)
        return onnx_int8, _scores(trial, sets)

    convs = _convolutions(prepared)
    onnx_int8, int8 = scored(None)
    kept: list[str] = []
    say(f"all int8 scored: {int8}")
    if _worse(f32, int8) and mixed:
        # how much each convolution costs alone, then the cheapest first
        cost: dict[str, float] = {}
        for name in convs:
            _, alone = scored([name])
            cost[name] = sum(f32[k] - alone[k] for k in f32)
            say(f"{name} alone: {alone}")
        chosen: list[str] = []
        best: tuple[bytes, dict[str, float]] | None = None
        for name in sorted(convs, key=lambda n: cost[n]):
            candidate = scored([*chosen, name])
            if _worse(f32, candidate[1]):
                break
            chosen.append(name)
            best = candidate
            say(f"{len(chosen)} convolutions in int8: {candidate[1]}")
        if best is not None:
            onnx_int8, int8 = best
            kept = [n for n in convs if n not in chosen]
    scores = {"float32": f32, "int8": int8}
    worse = _worse(f32, int8)
    if worse and not force:
        raise QuantizationRejected(
            "the int8 network is less accurate than the float32 one beyond "
            f"tolerance (AP {AP_TOLERANCE}, PSNR {PSNR_TOLERANCE_DB} dB"
            + (", every convolution alone and the mixed search tried" if mixed else "")
            + "): "
            + "; ".join(worse)
            + "; nothing written",
            path=folder,
            scores=scores,
        )
    out = folder / INT8_NAME
    out.write_bytes(onnx_int8)
    _record(rdf_path, sha256_of(out), val["what"], scores, kept)
    say(f"written {out}")
    return {
        "scores": scores,
        "float32_layers": kept,
        "calibration": val["what"],
        "path": str(out),
    }


def _record(
    rdf_path: Path, sha256: str, calibration: str, scores: dict, kept: list[str]
) -> None:
    """Add (or replace) ``config.smartscope.int8`` in the card, nothing else."""
    rdf, card = read_rdf(rdf_path)
    entry = {
        "source": INT8_NAME,
        "sha256": sha256,
        "calibration": calibration,
        "float32_layers": kept,
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
        "--no-mixed",
        action="store_true",
        help="all int8 or nothing (no search for float32 layers)",
    )
    ap.add_argument(
        "--force", action="store_true", help="write it even when less accurate"
    )
    args = ap.parse_args(argv)
    try:
        res = quantize_folder(
            args.folder,
            n_calibration=args.calibration_frames,
            n_validation=args.validation_frames,
            mixed=not args.no_mixed,
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
