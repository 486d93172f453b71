"""bioimage.io pre- and post-processing steps on numpy arrays.

:func:`apply_steps` applies the steps a model card declares
(:class:`~smartscope.nn.description.Step`) to a ``(B, C, Y, X)`` array, with
the formulas of bioimage.io's reference implementation (``bioimageio.core``):
statistics (percentiles, mean, standard deviation) are taken per sample over
the axes the step names (all axes when it names none), percentiles by linear
interpolation. On frames larger than 2**18 pixels per reduction, percentiles
are estimated on a strided sample, as :func:`smartscope.nn.normalize.percentile_range`
does, to keep the per-frame cost flat. ``ensure_dtype`` to an integer type
rounds and saturates (a 16-bit frame given to a card that declares uint8
input is clipped at 255, not wrapped).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from smartscope.nn.description import Step

__all__ = ["AXES", "apply_steps"]

#: Axis ids of the arrays handled here, in order.
AXES = ("batch", "channel", "y", "x")
_MAX_SAMPLES = 1 << 18


def apply_steps(
    steps: Sequence[Step],
    x: np.ndarray,
    *,
    references: Mapping[str, np.ndarray] | None = None,
) -> np.ndarray:
    """Apply ``steps`` in order.

    Parameters
    ----------
    steps : the card's processing steps (ids in
        :data:`smartscope.nn.description.POSTPROCESSING`)
    x : (B, C, Y, X) array
    references : tensors a step may name as ``reference_tensor`` (by tensor
        id), each (B, C', Y, X); a step naming no reference uses ``x``

    Returns
    -------
    (B, C, Y, X) array (float32, or the dtype an ``ensure_dtype`` or
    ``binarize`` step gives)
    """
    for step in steps:
        x = _STEPS[step.id](x, step.kwargs, references or {})
    return x


def _reduce_axes(kwargs: Mapping[str, Any]) -> tuple[int, ...]:
    axes = kwargs.get("axes")
    if axes is None:
        return tuple(range(len(AXES)))
    return tuple(AXES.index(str(a)) for a in axes)


def _along(kwargs: Mapping[str, Any], name: str, ndim: int) -> np.ndarray:
    """A scalar, or a list of values along ``kwargs['axis']``, shaped to broadcast."""
    value = np.asarray(kwargs.get(name), np.float32)
    axis = kwargs.get("axis")
    if axis is None or value.ndim == 0:
        return value.reshape(())
    shape = [1] * ndim
    shape[AXES.index(str(axis))] = value.size
    return value.reshape(shape)


def _stat(
    x: np.ndarray,
    axes: tuple[int, ...],
    fn: Callable[[np.ndarray], np.ndarray],
    *,
    sample: bool = False,
) -> np.ndarray:
    """``fn`` over the flattened ``axes`` of ``x`` (last axis), kept as size-1
    axes; ``sample``: on at most about 2**18 values, taken with a stride."""
    keep = [i for i in range(x.ndim) if i not in axes]
    moved = np.transpose(x, keep + list(axes))
    flat = moved.reshape([x.shape[i] for i in keep] + [-1])
    n = flat.shape[-1]
    if sample and n > _MAX_SAMPLES:
        flat = flat[..., :: n // _MAX_SAMPLES]
    out = np.asarray(fn(flat), np.float32)
    shape = [1 if i in axes else x.shape[i] for i in range(x.ndim)]
    return out.reshape(shape)


def _percentile(
    x: np.ndarray, axes: tuple[int, ...], q: float, *, method: str = "linear"
) -> np.ndarray:
    return _stat(
        x, axes, lambda a: np.percentile(a, q, axis=-1, method=method), sample=True
    )


def _source(
    x: np.ndarray, kwargs: Mapping[str, Any], refs: Mapping[str, np.ndarray]
) -> np.ndarray:
    ref = kwargs.get("reference_tensor")
    return x if ref is None else refs.get(str(ref), x)


def _float(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32, copy=False)


def _ensure_dtype(x: np.ndarray, kw: Mapping[str, Any], _: Any) -> np.ndarray:
    dtype = np.dtype(str(kw["dtype"]))
    if dtype.kind in "ui" and x.dtype.kind == "f":
        # a 16-bit frame given to a card that declares uint8 saturates, never wraps
        info = np.iinfo(dtype)
        x = np.clip(np.rint(x), info.min, info.max)
    return x.astype(dtype, copy=False)


def _scale_range(x: np.ndarray, kw: Mapping[str, Any], refs: Any) -> np.ndarray:
    axes = _reduce_axes(kw)
    src = _float(_source(x, kw, refs))
    low = _percentile(src, axes, float(kw.get("min_percentile", 0.0)))
    high = _percentile(src, axes, float(kw.get("max_percentile", 100.0)))
    eps = np.float32(kw.get("eps", 1e-6))
    return (_float(x) - low) / (high - low + eps)


def _zero_mean_unit_variance(
    x: np.ndarray, kw: Mapping[str, Any], _: Any
) -> np.ndarray:
    axes = _reduce_axes(kw)
    x = _float(x)
    mean, std = (
        _stat(x, axes, lambda a: a.mean(-1)),
        _stat(x, axes, lambda a: a.std(-1)),
    )
    return (x - mean) / (std + np.float32(kw.get("eps", 1e-6)))


def _fixed_zero_mean_unit_variance(
    x: np.ndarray, kw: Mapping[str, Any], _: Any
) -> np.ndarray:
    mean, std = _along(kw, "mean", x.ndim), _along(kw, "std", x.ndim)
    return (_float(x) - mean) / (std + np.float32(1e-6))


def _scale_linear(x: np.ndarray, kw: Mapping[str, Any], _: Any) -> np.ndarray:
    gain = _along({**kw, "gain": kw.get("gain", 1.0)}, "gain", x.ndim)
    offset = _along({**kw, "offset": kw.get("offset", 0.0)}, "offset", x.ndim)
    return _float(x) * gain + offset


def _clip(x: np.ndarray, kw: Mapping[str, Any], _: Any) -> np.ndarray:
    x = _float(x)
    axes = _reduce_axes(kw)
    low: Any = kw.get("min")
    high: Any = kw.get("max")
    if low is None and kw.get("min_percentile") is not None:
        # bioimageio.core clips at percentiles by the inverted CDF
        low = _percentile(x, axes, float(kw["min_percentile"]), method="inverted_cdf")
    if high is None and kw.get("max_percentile") is not None:
        high = _percentile(x, axes, float(kw["max_percentile"]), method="inverted_cdf")
    return np.clip(x, low, high)


def _binarize(x: np.ndarray, kw: Mapping[str, Any], _: Any) -> np.ndarray:
    return _float(x) > _along(kw, "threshold", x.ndim)


def _sigmoid(x: np.ndarray, kw: Mapping[str, Any], _: Any) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(_float(x), -80, 80)))).astype(np.float32)


def _softmax(x: np.ndarray, kw: Mapping[str, Any], _: Any) -> np.ndarray:
    axis = AXES.index(str(kw.get("axis", "channel")))
    x = _float(x)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _scale_mean_variance(
    x: np.ndarray, kw: Mapping[str, Any], refs: Mapping[str, np.ndarray]
) -> np.ndarray:
    axes = _reduce_axes(kw)
    eps = np.float32(kw.get("eps", 1e-6))
    x, ref = _float(x), _float(_source(x, kw, refs))

    def mean_std(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _stat(a, axes, lambda v: v.mean(-1)), _stat(a, axes, lambda v: v.std(-1))

    mean, std = mean_std(x)
    ref_mean, ref_std = mean_std(ref)
    return (x - mean) / (std + eps) * (ref_std + eps) + ref_mean


_STEPS: dict[
    str,
    Callable[[np.ndarray, Mapping[str, Any], Mapping[str, np.ndarray]], np.ndarray],
] = {
    "binarize": _binarize,
    "clip": _clip,
    "ensure_dtype": _ensure_dtype,
    "fixed_zero_mean_unit_variance": _fixed_zero_mean_unit_variance,
    "scale_linear": _scale_linear,
    "scale_mean_variance": _scale_mean_variance,
    "scale_range": _scale_range,
    "sigmoid": _sigmoid,
    "softmax": _softmax,
    "zero_mean_unit_variance": _zero_mean_unit_variance,
}
