"""Model cards: what a shipped model is, how it was trained, how well it does.

A model folder holds ``rdf.yaml`` (a bioimage.io-style resource description)
and the weights it names. smartscope's own settings live under
``config.smartscope`` and are validated by :class:`ModelCard` when the model
is loaded, so a card with a missing or wrong field is refused with the file
and the field named.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from smartscope.nn.errors import ModelError
from smartscope.nn.unet import UNetConfig

__all__ = [
    "RDF_NAME",
    "ModelCard",
    "Normalization",
    "Postprocess",
    "read_rdf",
    "sha256_of",
    "write_rdf",
    "write_readme",
]

RDF_NAME = "rdf.yaml"
WEIGHTS_NAME = "weights.pt"
TORCHSCRIPT_NAME = "weights_torchscript.pt"


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
    auto_diameter_px: tuple[float, float] | None = Field(
        (10.0, 30.0),
        description=(
            "without diameter_px: when the diameter estimated from a first pass falls "
            "outside this range, predict again rescaled to train_diameter_px; None: never"
        ),
    )


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
        description="denoisers: average the predictions of the 8 rotations/flips "
        "(8x the time for about 0.6-0.9 dB)",
    )
    training: dict[str, Any] = Field(default_factory=dict)
    validation: dict[str, Any] = Field(default_factory=dict)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_rdf(path: Path) -> tuple[dict[str, Any], ModelCard]:
    """Parse ``rdf.yaml`` and validate its ``config.smartscope`` section.

    Raises
    ------
    ModelError
        naming the file and the field that is missing or wrong.
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


def _axes(kind: str, channels: list[str]) -> list[dict[str, Any]]:
    return [
        {"type": "batch"},
        {"type": "channel", "channel_names": channels},
        {"id": "y", "type": "space", "size": {"min": 16, "step": 16}},
        {"id": "x", "type": "space", "size": {"min": 16, "step": 16}},
    ]


def write_rdf(
    folder: Path,
    *,
    name: str,
    description: str,
    card: ModelCard,
    weights: dict[str, Path],
    documentation: str = "README.md",
    test_tensors: tuple[str, str] | None = None,
) -> Path:
    """Write ``folder/rdf.yaml`` for a model whose weight files are in ``folder``.

    Parameters
    ----------
    weights : {"pytorch_state_dict": path, "torchscript": path}, either or both
    test_tensors : (input .npy name, output .npy name) in ``folder``, if any
    """
    norm = card.normalization
    pre = [
        {
            "id": "scale_range",
            "kwargs": {
                "axes": ["y", "x"],
                "min_percentile": norm.p_low,
                "max_percentile": norm.p_high,
            },
        }
    ]
    out_channels = (
        ["restored"]
        if card.kind == "denoise"
        else ["foreground_logit", "distance_logit"]
    )
    inp: dict[str, Any] = {
        "id": "raw",
        "axes": _axes(card.kind, ["raw"]),
        "data": {"type": "float32"},
        "preprocessing": pre,
    }
    outp: dict[str, Any] = {
        "id": "prediction",
        "axes": _axes(card.kind, out_channels),
        "data": {"type": "float32"},
    }
    if test_tensors is not None:
        inp["test_tensor"] = {"source": test_tensors[0]}
        outp["test_tensor"] = {"source": test_tensors[1]}
    wd: dict[str, Any] = {}
    if "pytorch_state_dict" in weights:
        p = weights["pytorch_state_dict"]
        wd["pytorch_state_dict"] = {
            "source": p.name,
            "sha256": sha256_of(folder / p.name),
            "architecture": {
                "callable": "UNet",
                "import_from": "smartscope.nn.unet",
                "kwargs": {"config": card.unet.model_dump()},
            },
            "pytorch_version": _torch_version(),
        }
    if "torchscript" in weights:
        p = weights["torchscript"]
        wd["torchscript"] = {
            "source": p.name,
            "sha256": sha256_of(folder / p.name),
            "pytorch_version": _torch_version(),
        }
    rdf: dict[str, Any] = {
        "format_version": "0.5.3",
        "type": "model",
        "name": name,
        "description": description,
        "authors": [{"name": "smartscope contributors"}],
        "license": "BSD-3-Clause",
        "tags": ["fluorescence", "nuclei", "2d", "unet", card.kind, card.method],
        "documentation": documentation,
        "inputs": [inp],
        "outputs": [outp],
        "weights": wd,
        "training_data": {"description": str(card.training.get("data", ""))},
        "config": {"smartscope": card.model_dump(mode="json")},
    }
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
    ]
    path = folder / "README.md"
    path.write_text("\n".join(lines))
    return path


def _torch_version() -> str:
    import torch

    return str(torch.__version__).split("+")[0]
