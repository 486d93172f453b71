"""Model cards: what a shipped model is, how it was trained, how well it does.

A model folder holds ``rdf.yaml`` (a bioimage.io model description, format
0.5, that ``bioimageio.spec`` validates: :func:`write_rdf`) and the weights it
names. smartscope's own settings live under ``config.smartscope`` and are
validated by :class:`ModelCard` when the model is loaded, so a card with a
missing or wrong field is refused with the file and the field named.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from smartscope.nn.errors import ModelError
from smartscope.nn.unet import UNetConfig

__all__ = [
    "FORMAT_VERSION",
    "INT8_NAME",
    "RDF_NAME",
    "Int8Weights",
    "ModelCard",
    "Normalization",
    "Postprocess",
    "bioimageio_name",
    "package_sizes",
    "read_card",
    "read_rdf",
    "sha256_of",
    "tile_overlap_px",
    "write_rdf",
    "write_readme",
]

RDF_NAME = "rdf.yaml"
WEIGHTS_NAME = "weights.pt"
TORCHSCRIPT_NAME = "weights_torchscript.pt"
INT8_NAME = "weights_int8.onnx"


class Normalization(BaseModel):
    """Input scaling: ``(x - P[p_low]) / (P[p_high] - P[p_low])`` per image."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    p_low: float = Field(1.0, ge=0, lt=50)
    p_high: float = Field(99.8, gt=50, le=100)


class Postprocess(BaseModel):
    """Segmentation post-processing (see ``smartscope.nn.instances.labels_from_maps``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fg_threshold: float = Field(0.5, gt=0, lt=1)
    seed_threshold: float = Field(0.5, gt=0, lt=1)
    min_size_px: int = Field(8, ge=0, description="at the training scale")
    border_min_size_px: int = Field(
        8,
        ge=0,
        description="at the training scale, for objects touching the image border "
        "(nuclei the border cuts are small but real)",
    )
    auto_diameter_px: tuple[float, float] | None = Field(
        (10.0, 30.0),
        description=(
            "without diameter_px: when the diameter estimated from a first pass falls "
            "outside this range, predict again rescaled to train_diameter_px; None: never"
        ),
    )


class Int8Weights(BaseModel):
    """An int8 copy of the network for the CPU, run by ONNX Runtime.

    Written by :mod:`smartscope.nn.quantize` only when the quantised network
    scored within tolerance of the float32 one on the validation frames;
    ``accuracy`` holds both scores. Not a bioimage.io weights entry (its
    outputs are not within bioimage.io's test tolerance of the float32 test
    output): smartscope's own loader uses it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str = Field(INT8_NAME, description="ONNX file in the model folder")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    calibration: str = Field(description="the frames the activation ranges came from")
    float32_layers: list[str] = Field(
        default_factory=list,
        description="convolutions left in float32 (the ones 8 bits spoil)",
    )
    accuracy: dict[str, Any] = Field(default_factory=dict)


class ModelCard(BaseModel):
    """smartscope's part of a model's ``rdf.yaml`` (under ``config.smartscope``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    kind: Literal["denoise", "segment"]
    method: str = Field(description="care, n2v or distance-watershed")
    unet: UNetConfig
    normalization: Normalization = Normalization()
    postprocess: Postprocess | None = None
    pixel_size_um: float | None = Field(
        None, gt=0, description="typical pixel size at training"
    )
    train_diameter_px: float | None = Field(
        None, gt=0, description="object diameter that diameter_px rescales to"
    )
    test_time_augmentation: bool = Field(
        False,
        description="the default of predict(tta=...): denoisers average the "
        "predictions of the 8 rotations/flips (8x the time for about 0.6-0.9 "
        "dB); segmenters the maps of the image and its 3 flips (4x the "
        "network time; +0.006 AP@0.5 on 78 real images, docs/models.md)",
    )
    training: dict[str, Any] = Field(default_factory=dict)
    validation: dict[str, Any] = Field(default_factory=dict)
    int8: Int8Weights | None = Field(
        None,
        description="int8 ONNX weights for the CPU (precision 'auto' uses them "
        "when onnxruntime is installed)",
    )


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_card(path: Path) -> dict[str, Any]:
    """Parse a model card (strict YAML, ``type: model``), any section.

    Raises
    ------
    ModelError
        naming the file (and the line) when it is not YAML or not a model card.
    """
    from smartscope.yaml_strict import YAMLInputError, load_yaml_file

    try:
        rdf = load_yaml_file(path, what="model card").data
    except YAMLInputError as e:
        line = f"line {e.line}: " if e.line is not None else ""
        raise ModelError(f"{line}{e.problem}", path=path) from e
    if not isinstance(rdf, dict):
        raise ModelError("model card must be a YAML mapping", path=path)
    if rdf.get("type") != "model":
        raise ModelError(f"'type' must be 'model', got {rdf.get('type')!r}", path=path)
    return rdf


def read_rdf(path: Path) -> tuple[dict[str, Any], ModelCard]:
    """Parse ``rdf.yaml`` and validate its ``config.smartscope`` section.

    Raises
    ------
    ModelError
        naming the file and the field that is missing or wrong.
    """
    rdf = read_card(path)
    section = (rdf.get("config") or {}).get("smartscope")
    if not isinstance(section, dict):
        raise ModelError(
            "no 'config.smartscope' section: not a smartscope model card", path=path
        )
    try:
        card = ModelCard.model_validate(section)
    except ValidationError as e:
        msgs = "; ".join(
            f"config.smartscope.{'.'.join(map(str, err['loc']))}: {err['msg']}"
            for err in e.errors()
        )
        raise ModelError(f"invalid model card: {msgs}", path=path) from e
    return rdf, card


#: bioimage.io format version the cards are written in (read by every 0.5 reader;
#: bioimageio.spec updates it to its own 0.5.x on load).
FORMAT_VERSION = "0.5.3"

_CITE = {
    "unet": {
        "text": "Ronneberger, Fischer and Brox: U-Net: Convolutional Networks for "
        "Biomedical Image Segmentation. MICCAI 2015.",
        "doi": "10.1007/978-3-319-24574-4_28",
    },
    "care": {
        "text": "Weigert et al.: Content-aware image restoration: pushing the limits "
        "of fluorescence microscopy. Nature Methods 15, 1090-1097 (2018).",
        "doi": "10.1038/s41592-018-0216-7",
    },
    "n2v": {
        "text": "Krull, Buchholz and Jug: Noise2Void - Learning Denoising From "
        "Single Noisy Images. CVPR 2019.",
        "doi": "10.1109/CVPR.2019.00223",
    },
}


def tile_overlap_px(unet: UNetConfig) -> int:
    """Overlap between neighbouring tiles, pixels: twice the halo a card declares."""
    return max(32, 4 * unet.size_multiple)


def package_sizes(unet: UNetConfig) -> tuple[int, int, int]:
    """``(min_px, step_px, halo_px)`` of the y and x axes a card declares: inputs
    of ``min_px + n * step_px`` pixels, outputs whose outer ``halo_px`` pixels
    (half the tile overlap) bioimage.io tools crop when they tile."""
    step = unet.size_multiple
    halo = tile_overlap_px(unet) // 2
    return 2 * halo + step, step, halo


def training_data_entry(name: str, training: dict[str, Any]) -> dict[str, Any] | None:
    """The card's ``training_data`` (an inline bioimage.io dataset description)
    from the smartscope card's ``training`` section; None when it says nothing
    about its data."""
    data = str(training.get("data", "")).strip()
    if not data:
        return None
    config = training.get("config") or {}
    entry: dict[str, Any] = {
        "type": "dataset",
        "format_version": "0.3.0",
        "name": bioimageio_name(f"{name} training data"),
        "description": data[:1024],
        "authors": [{"name": "smartscope contributors"}],
        "license": "BSD-3-Clause",
        "tags": ["fluorescence", "nuclei", "2d", "simulated"],
    }
    if config.get("data_dir"):
        # the user's images: their licence is not smartscope's to declare
        del entry["license"]
        entry["tags"] = ["fluorescence", "nuclei", "2d", "user images"] + (
            ["simulated"] if config.get("sim_fraction") else []
        )
    return entry


def bioimageio_name(name: str) -> str:
    """``name`` as bioimage.io allows it: 5-128 letters, digits, spaces, ``_+-()``."""
    clean = re.sub(r"[^A-Za-z0-9_+\- ()]", "-", name).strip() or "model"
    if len(clean) < 5:
        clean = f"smartscope-{clean}"
    return clean[:128]


def _space_axes(unet: UNetConfig, *, output_of: str | None) -> list[dict[str, Any]]:
    low, step, halo = package_sizes(unet)
    axes: list[dict[str, Any]] = []
    for axis in ("y", "x"):
        if output_of is None:
            axes.append(
                {"id": axis, "type": "space", "size": {"min": low, "step": step}}
            )
        else:
            size = {"tensor_id": output_of, "axis_id": axis}
            axes.append({"id": axis, "type": "space", "size": size, "halo": halo})
    return axes


def _architecture(card: ModelCard) -> dict[str, Any]:
    kwargs: dict[str, Any] = card.unet.model_dump(mode="json")
    if card.kind == "denoise":
        kwargs.update(p_low=card.normalization.p_low, p_high=card.normalization.p_high)
    return {
        "callable": "DenoisingUNet" if card.kind == "denoise" else "SegmentationUNet",
        "import_from": "smartscope.nn.architectures",
        "kwargs": kwargs,
    }


def _tensors(card: ModelCard) -> tuple[dict[str, Any], dict[str, Any]]:
    """The input and output tensor descriptions (bioimage.io 0.5)."""
    norm = card.normalization
    inp: dict[str, Any] = {
        "id": "raw",
        "axes": [
            {"type": "batch"},
            {"type": "channel", "channel_names": ["raw"]},
            *_space_axes(card.unet, output_of=None),
        ],
        "data": {"type": "float32"},
    }
    if card.kind == "denoise":
        inp["description"] = "raw image, any intensity units (e.g. camera ADU)"
        out: dict[str, Any] = {
            "id": "restored",
            "description": "restored image in the input's intensity units "
            f"(normalised by its P{norm.p_low}/P{norm.p_high} and back in the network)",
            "axes": [
                {"type": "batch"},
                {"type": "channel", "channel_names": ["restored"]},
                *_space_axes(card.unet, output_of="raw"),
            ],
            "data": {"type": "float32"},
        }
        return inp, out
    inp["description"] = "raw image, any intensity units (scale_range to the network)"
    inp["preprocessing"] = [
        {
            "id": "scale_range",
            "kwargs": {
                "axes": ["y", "x"],
                "min_percentile": norm.p_low,
                "max_percentile": norm.p_high,
            },
        }
    ]
    out = {
        "id": "maps",
        "description": "nucleus probability and normalised distance to the border; "
        "smartscope's watershed makes labels",
        "axes": [
            {"type": "batch"},
            {"type": "channel", "channel_names": ["foreground", "distance"]},
            *_space_axes(card.unet, output_of="raw"),
        ],
        "data": {"type": "float32", "range": [0.0, 1.0]},
        "postprocessing": [{"id": "sigmoid"}],
    }
    return inp, out


def write_rdf(
    folder: Path,
    *,
    name: str,
    description: str,
    card: ModelCard,
    weights: dict[str, Path],
    documentation: str = "README.md",
    test_tensors: tuple[str, str] | None = None,
    covers: tuple[str, ...] = (),
) -> Path:
    """Write ``folder/rdf.yaml``, a bioimage.io model description (format 0.5)
    with smartscope's card under ``config.smartscope``, for a model whose
    files are in ``folder``.

    Parameters
    ----------
    weights : {"pytorch_state_dict": path, "torchscript": path}, either or both;
        the state dict is rebuilt by
        ``smartscope.nn.architectures.DenoisingUNet`` / ``SegmentationUNet``
    test_tensors : (input .npy name, output .npy name) in ``folder``: the raw
        test image (1, 1, Y, X) and what the package outputs for it
    covers : cover image names in ``folder``
    """
    inp, outp = _tensors(card)
    if test_tensors is not None:
        inp["test_tensor"] = {"source": test_tensors[0]}
        outp["test_tensor"] = {"source": test_tensors[1]}
    wd: dict[str, Any] = {}
    if "pytorch_state_dict" in weights:
        p = weights["pytorch_state_dict"]
        wd["pytorch_state_dict"] = {
            "source": p.name,
            "sha256": sha256_of(folder / p.name),
            "architecture": _architecture(card),
            "pytorch_version": _torch_version(),
        }
    if "torchscript" in weights:
        p = weights["torchscript"]
        wd["torchscript"] = {
            "source": p.name,
            "sha256": sha256_of(folder / p.name),
            "pytorch_version": _torch_version(),
        }
        if "pytorch_state_dict" in wd:
            wd["torchscript"]["parent"] = "pytorch_state_dict"
    task = "denoising" if card.kind == "denoise" else "segmentation"
    rdf: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "type": "model",
        "name": bioimageio_name(name),
        "description": description,
        "authors": [{"name": "smartscope contributors"}],
        "cite": [
            _CITE["unet"],
            *([_CITE[card.method]] if card.method in _CITE else []),
        ],
        "license": "BSD-3-Clause",
        "tags": ["fluorescence", "nuclei", "2d", "unet", "pytorch", task, card.kind],
        "documentation": documentation,
        "covers": list(covers),
        "inputs": [inp],
        "outputs": [outp],
        "weights": wd,
    }
    if card.method not in rdf["tags"]:
        rdf["tags"].append(card.method)
    if not covers:
        del rdf["covers"]
    data = training_data_entry(name, card.training)
    if data is not None:
        rdf["training_data"] = data
    rdf["config"] = {"smartscope": card.model_dump(mode="json")}
    path = folder / RDF_NAME
    path.write_text(yaml.safe_dump(rdf, sort_keys=False, width=100))
    return path


def write_readme(folder: Path, *, name: str, description: str, card: ModelCard) -> Path:
    """Write ``folder/README.md``: the documentation file ``rdf.yaml`` points to."""
    lines = [
        f"# {name}",
        "",
        description,
        "",
        f"- method: {card.method}; network: U-Net {card.unet.model_dump()}",
        f"- input normalisation: percentiles {card.normalization.p_low} / "
        f"{card.normalization.p_high} of each image mapped to 0 / 1",
        f"- training data: {card.training.get('data', '')}",
        f"- pixel size at training (µm): {card.training.get('pixel_size_um', '')}",
        f"- object size at training: {card.training.get('object_diameter_px', '')}",
        f"- reproduce: `{card.training.get('command', '')}`",
        "",
        "## Validation",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in card.validation.items()]
    lines += [
        "",
        "Training curve and per-image scores: `qc/report.md` (when present).",
        "",
        *_package_lines(card),
        "",
    ]
    path = folder / "README.md"
    path.write_text("\n".join(lines))
    return path


def _package_lines(card: ModelCard) -> list[str]:
    """What a bioimage.io consumer of this folder gets (README section)."""
    low, step, halo = package_sizes(card.unet)
    n = card.normalization
    lines = [
        "## As a bioimage.io package",
        "",
        f"- input `raw`: (batch, channel, y, x) float32, one channel; y and x of "
        f"{low} + n * {step} pixels (smartscope pads any frame to that).",
    ]
    if card.kind == "denoise":
        lines += [
            "- output `restored`: the restored image in the input's intensity units. "
            "The network (`smartscope.nn.architectures.DenoisingUNet`) maps each "
            f"image by its own {n.p_low} and {n.p_high} percentiles to 0 and 1, runs "
            "the U-Net and maps the result back, so there is no pre- or "
            "post-processing to declare; smartscope's own `predict` does the same.",
        ]
    else:
        pp = card.postprocess or Postprocess()
        lines += [
            f"- preprocessing: `scale_range`, percentiles {n.p_low} / {n.p_high} of "
            "each image to 0 / 1.",
            "- output `maps`: channel `foreground` (probability that a pixel lies in "
            "a nucleus) and channel `distance` (distance to the nucleus border "
            "divided by the largest one in that nucleus: 1 at centres, 0 at borders "
            "and where nuclei touch), after the declared `sigmoid`.",
            "- not in the package: the instance labels. smartscope makes them from the "
            "two maps by a seeded watershed (`smartscope.nn.instances.labels_from_maps`:"
            f" foreground > {pp.fg_threshold}, seeds where distance > "
            f"{pp.seed_threshold}, objects under {pp.min_size_px} px dropped"
            + (
                f", {pp.border_min_size_px} px where they touch the image border"
                if pp.border_min_size_px != pp.min_size_px
                else ""
            )
            + ", sizes at the training diameter) and "
            "optionally rescales frames to nuclei of "
            f"{card.train_diameter_px} px first; a bioimage.io tool gets the maps only.",
        ]
    lines += [
        f"- output halo: {halo} px per side. bioimage.io tools mirror the input by "
        "that much on each side before predicting and crop it after (so pixels "
        "near the border, and the denoiser's percentiles, differ slightly from "
        "smartscope's, which pads only to a valid size); smartscope's tiles "
        "overlap by twice the halo.",
        "- weights: `pytorch_state_dict` (rebuilt by "
        "`smartscope.nn.architectures`, needs smartscope installed) and, in exported "
        "packages, `torchscript` (needs only PyTorch).",
        "- `test_input.npy` / `test_output.npy`: a synthetic test image and what "
        "the package outputs for it (`bioimageio test` reproduces it).",
    ]
    return lines


def _torch_version() -> str:
    import torch

    return str(torch.__version__).split("+")[0]
