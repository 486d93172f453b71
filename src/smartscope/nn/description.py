"""What a bioimage.io model description asks of whoever runs it (no torch).

A model package that smartscope did not write has no ``config.smartscope``
section; its ``rdf.yaml`` (bioimage.io format 0.5) alone says how to run it.
:func:`describe_model` reads the part of it smartscope can honour and
returns a :class:`ModelDescription`: the kind of model (denoiser or
segmenter), the valid input sizes and halo, the declared pre- and
post-processing, and the weights to load. Anything else is refused with a
:class:`~smartscope.nn.errors.ModelError` that names the file and the field.

What smartscope runs: one input and one output, each with the axes batch,
channel, y, x (in that order), one input channel, an output the same size
as the input, ``torchscript`` or ``pytorch_state_dict`` weights in the
package, and the processing steps in :data:`PREPROCESSING` and
:data:`POSTPROCESSING` (computed per frame, as bioimage.io tools do per
sample).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from smartscope.nn.errors import ModelError

__all__ = [
    "CARD_NAMES",
    "POSTPROCESSING",
    "PREPROCESSING",
    "Architecture",
    "AxisSize",
    "ModelDescription",
    "Step",
    "WeightsEntry",
    "card_name",
    "describe_model",
]

#: File names a bioimage.io package's description may have, in order of
#: preference (bioimage.io also accepts ``<anything>.<one of these>``).
CARD_NAMES = ("rdf.yaml", "bioimageio.yaml", "model.yaml")

#: Pre-processing steps smartscope applies (bioimage.io ids).
PREPROCESSING = frozenset(
    {
        "binarize",
        "clip",
        "ensure_dtype",
        "fixed_zero_mean_unit_variance",
        "scale_linear",
        "scale_range",
        "sigmoid",
        "zero_mean_unit_variance",
    }
)
#: Post-processing steps smartscope applies (bioimage.io ids).
POSTPROCESSING = PREPROCESSING | {"scale_mean_variance", "softmax"}

_INT_TYPES = frozenset(
    {"bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64"}
)
_AXES = ("batch", "channel", "y", "x")
WeightsFormat = Literal["torchscript", "pytorch_state_dict"]


def card_name(names: list[str] | set[str]) -> str | None:
    """The description file among ``names`` (a folder's or a zip's top level),
    or None: ``rdf.yaml`` first, then the other names bioimage.io accepts."""
    for wanted in CARD_NAMES:
        if wanted in names:
            return wanted
    for wanted in CARD_NAMES:
        hits = sorted(n for n in names if n.endswith("." + wanted) and "/" not in n)
        if hits:
            return hits[0]
    return None


@dataclass(frozen=True)
class Step:
    """One pre- or post-processing step: a bioimage.io processing ``id`` and
    its ``kwargs`` as written in the card."""

    id: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AxisSize:
    """Valid sizes of a y or x axis, pixels: ``min + n * step`` (n >= 0);
    ``step == 0`` means exactly ``min``."""

    min: int
    step: int

    def valid(self, n: int) -> int:
        """The smallest valid size >= ``n`` (``min`` for a fixed size)."""
        if n <= self.min or self.step == 0:
            return self.min
        return self.min + -(-(n - self.min) // self.step) * self.step


@dataclass(frozen=True)
class Architecture:
    """How to build the network a state dict belongs to: ``callable(**kwargs)``
    from the module ``import_from``, or from the package's Python file ``source``."""

    callable: str
    kwargs: Mapping[str, Any]
    import_from: str | None = None
    source: str | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class WeightsEntry:
    """The weights smartscope will load (a file inside the package)."""

    format: WeightsFormat
    source: str
    sha256: str | None
    architecture: Architecture | None = None
    strict: bool = True


@dataclass(frozen=True)
class ModelDescription:
    """What a bioimage.io card says about running its model (see module docs)."""

    kind: Literal["denoise", "segment"]
    """"denoise" (image to image) or "segment" (image to labels or probabilities)."""
    why_kind: str
    """The evidence for ``kind`` (for messages)."""
    name: str
    input_id: str
    output_id: str
    size_y: AxisSize
    size_x: AxisSize
    halo_px: int
    """Output border, pixels, that the card says is unreliable (0: none)."""
    preprocessing: tuple[Step, ...]
    postprocessing: tuple[Step, ...]
    output_channels: tuple[str, ...]
    output_dtype: str
    weights: WeightsEntry


def describe_model(rdf: Mapping[str, Any], where: Path) -> ModelDescription:
    """Read a bioimage.io model card (format 0.5) for smartscope to run.

    Parameters
    ----------
    rdf : the parsed ``rdf.yaml`` (``type: model``)
    where : the card's path, for messages

    Raises
    ------
    ModelError
        Naming ``where`` and the field smartscope cannot honour (another
        format version, 3D or time axes, several inputs or outputs, an output
        of another size, unsupported processing or weights formats).
    """
    version = str(rdf.get("format_version", ""))
    parts = version.split(".")
    if parts[:2] != ["0", "5"]:
        raise ModelError(
            f"format_version {version or '(missing)'}: smartscope reads bioimage.io "
            "model format 0.5; update the card with `bioimageio update-format "
            f"{where.name}` (pip install bioimageio.core)",
            path=where,
        )
    inputs = _list(rdf.get("inputs"), "inputs", where)
    outputs = _list(rdf.get("outputs"), "outputs", where)
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(
            f"{len(inputs)} inputs and {len(outputs)} outputs: smartscope runs "
            "models with one input and one output",
            path=where,
        )
    inp, out = (
        _mapping(inputs[0], "inputs[0]", where),
        _mapping(outputs[0], "outputs[0]", where),
    )
    input_id = str(inp.get("id", "input"))
    output_id = str(out.get("id", "output"))
    in_axes = _axes(inp, "inputs[0]", where)
    out_axes = _axes(out, "outputs[0]", where)
    names = in_axes[1].get("channel_names") or []
    if len(names) != 1:
        raise ModelError(
            f"inputs[0] has {len(names)} channels ({', '.join(map(str, names))}): "
            "smartscope feeds one channel",
            path=where,
        )
    out_channels = tuple(str(c) for c in out_axes[1].get("channel_names") or [])
    if not out_channels:
        raise ModelError("outputs[0].axes[1].channel_names is empty", path=where)
    size_y = _input_size(in_axes[2], "inputs[0].axes[2]", where)
    size_x = _input_size(in_axes[3], "inputs[0].axes[3]", where)
    halo = 0
    for i, (o_ax, i_ax, size) in enumerate(
        zip(out_axes[2:], in_axes[2:], (size_y, size_x), strict=True), start=2
    ):
        halo = max(halo, _output_size(o_ax, i_ax, size, input_id, i, where))
    pre = _steps(inp.get("preprocessing"), "inputs[0].preprocessing", where)
    post = _steps(out.get("postprocessing"), "outputs[0].postprocessing", where)
    for steps, allowed, loc in (
        (pre, PREPROCESSING, "inputs[0].preprocessing"),
        (post, POSTPROCESSING, "outputs[0].postprocessing"),
    ):
        for i, s in enumerate(steps):
            if s.id not in allowed:
                raise ModelError(
                    f"{loc}[{i}].id is {s.id!r}: smartscope applies "
                    f"{', '.join(sorted(allowed))}",
                    path=where,
                )
            ref = s.kwargs.get("reference_tensor")
            if ref is not None and str(ref) not in (input_id, output_id):
                raise ModelError(
                    f"{loc}[{i}].kwargs.reference_tensor {ref!r} is not a tensor "
                    "of this model",
                    path=where,
                )
    out_dtype = _dtype(out, "outputs[0]", where)
    kind, why = _kind(rdf, out_channels, out_dtype, post, where)
    return ModelDescription(
        kind=kind,
        why_kind=why,
        name=str(rdf.get("name") or where.parent.name),
        input_id=input_id,
        output_id=output_id,
        size_y=size_y,
        size_x=size_x,
        halo_px=halo,
        preprocessing=pre,
        postprocessing=post,
        output_channels=out_channels,
        output_dtype=out_dtype,
        weights=_weights(rdf.get("weights"), where),
    )


def _list(value: Any, loc: str, where: Path) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise ModelError(f"{loc} must be a non-empty list", path=where)
    return value


def _mapping(value: Any, loc: str, where: Path) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ModelError(f"{loc} must be a mapping", path=where)
    return value


def _axes(tensor: Mapping[str, Any], loc: str, where: Path) -> list[Mapping[str, Any]]:
    axes = tensor.get("axes")
    if not isinstance(axes, list) or not all(isinstance(a, Mapping) for a in axes):
        raise ModelError(
            f"{loc}.axes must be a list of axes (format 0.5, not an axes string)",
            path=where,
        )
    found = []
    for a in axes:
        kind = a.get("type")
        default = {"batch": "batch", "channel": "channel", "index": "index"}.get(
            str(kind), "time" if kind == "time" else "x"
        )
        found.append(str(a.get("id", default)) if kind != "batch" else "batch")
    if found != list(_AXES) or [a.get("type") for a in axes[2:]] != ["space"] * 2:
        what = "3D (a z axis)" if "z" in found else f"axes {', '.join(found)}"
        raise ModelError(
            f"{loc} has {what}: smartscope runs 2D models with the axes "
            "batch, channel, y, x",
            path=where,
        )
    if axes[0].get("size") not in (None, 1):
        raise ModelError(f"{loc}.axes[0] (batch) must allow batch size 1", path=where)
    return axes


def _int(value: Any, loc: str, where: Path, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ModelError(
            f"{loc} must be an integer >= {minimum}, got {value!r}", path=where
        )
    return value


def _input_size(axis: Mapping[str, Any], loc: str, where: Path) -> AxisSize:
    size = axis.get("size")
    if isinstance(size, int) and not isinstance(size, bool):
        return AxisSize(_int(size, f"{loc}.size", where, minimum=1), 0)
    if isinstance(size, Mapping) and "min" in size and "step" in size:
        return AxisSize(
            _int(size["min"], f"{loc}.size.min", where, minimum=1),
            _int(size["step"], f"{loc}.size.step", where, minimum=1),
        )
    raise ModelError(
        f"{loc}.size must be a number or {{min, step}}, got {size!r}: smartscope "
        "does not run inputs whose size depends on another tensor",
        path=where,
    )


def _output_size(
    o_ax: Mapping[str, Any],
    i_ax: Mapping[str, Any],
    in_size: AxisSize,
    input_id: str,
    i: int,
    where: Path,
) -> int:
    """Check an output y/x axis is the size of the input's; return its halo."""
    loc = f"outputs[0].axes[{i}]"
    size = o_ax.get("size")
    same = False
    if isinstance(size, Mapping):
        same = (
            str(size.get("tensor_id")) == input_id
            and str(size.get("axis_id")) == _AXES[i]
            and size.get("offset", 0) == 0
        )
    elif isinstance(size, int) and not isinstance(size, bool):
        same = in_size.step == 0 and size == in_size.min
    if not same or float(o_ax.get("scale", 1.0)) != float(i_ax.get("scale", 1.0)):
        raise ModelError(
            f"{loc}.size is {size!r}: smartscope runs models whose output is the "
            f"size of their input (size: {{tensor_id: {input_id}, axis_id: "
            f"{_AXES[i]}}}, same scale)",
            path=where,
        )
    return _int(o_ax.get("halo", 0), f"{loc}.halo", where)


def _steps(value: Any, loc: str, where: Path) -> tuple[Step, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ModelError(f"{loc} must be a list", path=where)
    steps = []
    for i, s in enumerate(value):
        if not isinstance(s, Mapping) or not isinstance(s.get("id"), str):
            raise ModelError(
                f"{loc}[{i}] must be a mapping with an 'id' (format 0.5)", path=where
            )
        kwargs = s.get("kwargs") or {}
        if not isinstance(kwargs, Mapping):
            raise ModelError(f"{loc}[{i}].kwargs must be a mapping", path=where)
        steps.append(Step(s["id"], dict(kwargs)))
    return tuple(steps)


def _dtype(tensor: Mapping[str, Any], loc: str, where: Path) -> str:
    data = tensor.get("data", {"type": "float32"})
    if isinstance(data, list) and data:
        data = data[0]
    if not isinstance(data, Mapping):
        raise ModelError(f"{loc}.data must be a mapping", path=where)
    return str(data.get("type", "float32"))


def _kind(
    rdf: Mapping[str, Any],
    channels: tuple[str, ...],
    dtype: str,
    post: tuple[Step, ...],
    where: Path,
) -> tuple[Literal["denoise", "segment"], str]:
    tags = [str(t).lower() for t in rdf.get("tags") or []]
    ids = [s.id for s in post]
    seg_tags = [t for t in tags if "segment" in t]
    den_tags = [t for t in tags if "denois" in t or "restor" in t]
    if seg_tags and not den_tags:
        return "segment", f"tag {seg_tags[0]!r}"
    if den_tags and not seg_tags:
        return "denoise", f"tag {den_tags[0]!r}"
    if dtype in _INT_TYPES:
        return "segment", f"its output is {dtype} (labels)"
    if ids and ids[-1] in ("binarize", "sigmoid", "softmax"):
        return "segment", f"its output ends with {ids[-1]} (a probability map)"
    if len(channels) == 1:
        return "denoise", "its output is one float channel, the size of its input"
    raise ModelError(
        f"cannot tell whether this model denoises or segments: its output has "
        f"{len(channels)} float channels and its tags ({', '.join(tags) or 'none'}) "
        "say neither; tag it 'denoising' or 'segmentation'",
        path=where,
    )


def _weights(value: Any, where: Path) -> WeightsEntry:
    if not isinstance(value, Mapping):
        raise ModelError("'weights' must be a mapping of weights formats", path=where)
    present = [k for k, v in value.items() if v is not None]
    fmt: WeightsFormat
    if value.get("torchscript") is not None:
        fmt = "torchscript"  # no Python code to import
    elif value.get("pytorch_state_dict") is not None:
        fmt = "pytorch_state_dict"
    else:
        raise ModelError(
            f"weights formats {', '.join(present) or '(none)'}: smartscope runs "
            "torchscript or pytorch_state_dict weights",
            path=where,
        )
    entry = _mapping(value[fmt], f"weights.{fmt}", where)
    source = _inside(entry.get("source"), f"weights.{fmt}.source", where)
    arch = None
    if fmt == "pytorch_state_dict":
        a = _mapping(entry.get("architecture"), f"weights.{fmt}.architecture", where)
        name = a.get("callable")
        if not isinstance(name, str) or not name.isidentifier():
            raise ModelError(
                f"weights.{fmt}.architecture.callable must be a Python name, got "
                f"{name!r}",
                path=where,
            )
        kwargs = a.get("kwargs") or {}
        if not isinstance(kwargs, Mapping):
            raise ModelError(
                f"weights.{fmt}.architecture.kwargs must be a mapping", path=where
            )
        if isinstance(a.get("import_from"), str):
            arch = Architecture(name, dict(kwargs), import_from=a["import_from"])
        else:
            src = _inside(a.get("source"), f"weights.{fmt}.architecture.source", where)
            sha = a.get("sha256")
            arch = Architecture(
                name, dict(kwargs), source=src, sha256=str(sha) if sha else None
            )
    sha = entry.get("sha256")
    return WeightsEntry(
        format=fmt,
        source=source,
        sha256=str(sha) if sha else None,
        architecture=arch,
        strict=bool(entry.get("strict", True)),
    )


def _inside(source: Any, loc: str, where: Path) -> str:
    """A file named relative to the package, never a URL or a path outside it."""
    if not isinstance(source, str) or not source:
        raise ModelError(f"{loc} is missing", path=where)
    if "://" in source:
        raise ModelError(
            f"{loc} is a URL ({source}): smartscope loads files inside the package "
            "only and never downloads; get the whole package first (e.g. "
            "`bioimageio package`)",
            path=where,
        )
    pure = PurePosixPath(source.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts:
        raise ModelError(
            f"{loc} must name a file inside the model, got {source!r}", path=where
        )
    return source
