"""The trained-model slots of the analysis pipeline: a denoiser and a segmenter.

Models come from :func:`smartscope.nn.load_model` (by name from ``models/``
or by path), imported only when a model is actually configured so that the
classical pipeline never imports torch. A model is anything with
``predict(image, *, diameter_px=None) -> ndarray``: int32 labels for a
segmenter, a float32 image in the raw intensity units for a denoiser.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Literal, Protocol

import numpy as np

from smartscope.errors import SmartscopeError

__all__ = [
    "AnalysisModel",
    "ModelLoadError",
    "accepts_min_size",
    "load_analysis_model",
    "predict_denoised",
    "predict_denoised_batch",
    "predict_labels",
    "predict_labels_batch",
]

Role = Literal["segmenter", "denoiser"]
#: the model card's ``config.smartscope.kind`` each role needs
_KIND: dict[str, str] = {"segmenter": "segment", "denoiser": "denoise"}


class ModelLoadError(SmartscopeError, RuntimeError):
    """A denoising or segmentation model named in the analysis settings could
    not be loaded or does not behave like a model. The message names it."""

    def __init__(self, message: str, *, model: str, role: Role) -> None:
        self.model = model
        self.role = role
        super().__init__(message)


class AnalysisModel(Protocol):
    """What the pipeline needs from a model returned by ``smartscope.nn.load_model``."""

    def predict(
        self, image: np.ndarray, *, diameter_px: float | None = None
    ) -> np.ndarray:
        """image: (Y, X) → (Y, X) int32 labels (segmenter) or float32 image (denoiser)."""
        ...


def load_analysis_model(
    name: str, *, role: Role, device: str = "auto", precision: str = "auto"
) -> AnalysisModel:
    """Load a model with ``smartscope.nn.load_model(name, device=device,
    precision=precision)``,
    warmed up so that the first frame does not pay for it.

    Raises
    ------
    ModelLoadError
        If ``smartscope.nn`` cannot be imported, loading fails, the object
        returned has no ``predict`` method, or its ``kind`` is not the role's
        ("segment" for a segmenter, "denoise" for a denoiser). The message
        names the model.
    """
    try:
        nn = importlib.import_module("smartscope.nn")
    except ImportError as e:
        raise ModelLoadError(
            f"cannot load the {role} model {name!r}: smartscope.nn is not available "
            f"({e}); install smartscope with its torch dependency, or use "
            "segmenter='classical' and no denoiser",
            model=name,
            role=role,
        ) from e
    try:
        model: Any = nn.load_model(
            name, device=device, precision=precision, warm_up=True
        )
    except Exception as e:
        raise ModelLoadError(
            f"cannot load the {role} model {name!r}: {type(e).__name__}: {e}",
            model=name,
            role=role,
        ) from e
    if not callable(getattr(model, "predict", None)):
        raise ModelLoadError(
            f"the {role} model {name!r} loaded as {type(model).__name__}, which has "
            "no predict(image, *, diameter_px=None) method",
            model=name,
            role=role,
        )
    # a smartscope model says what it is; a denoiser in the segmenter's slot
    # would fail on every frame, a segmenter in the denoiser's would "denoise"
    # into labels
    kind = getattr(model, "kind", None)
    if isinstance(kind, str) and kind != _KIND[role]:
        raise ModelLoadError(
            f"{name!r} is a {kind!r} model, not a {role}; name a "
            f"{_KIND[role]!r} model (its card's config.smartscope.kind) here",
            model=name,
            role=role,
        )
    return model  # type: ignore[no-any-return]


def predict_labels(
    model: AnalysisModel,
    image: np.ndarray,
    *,
    diameter_px: float,
    name: str = "?",
    min_size_px: float | None = None,
) -> np.ndarray:
    """Run a segmentation model and check its output.

    Parameters
    ----------
    image : (Y, X) ndarray
        Raw or denoised frame.
    diameter_px : float
        Expected nucleus diameter, pixels.
    min_size_px : float, optional
        Smallest object the model's post-processing keeps, pixels (passed on
        only when given: a model needs a ``min_size_px`` keyword for it,
        :func:`accepts_min_size`); None: the model's own limits.

    Returns
    -------
    (Y, X) int32 ndarray
        Instance labels, 0 = background.
    """
    if min_size_px is None:
        labels = np.asarray(model.predict(image, diameter_px=diameter_px))
    else:
        labels = np.asarray(
            model.predict(  # type: ignore[call-arg]
                image, diameter_px=diameter_px, min_size_px=min_size_px
            )
        )
    return _checked_labels(labels, image, name)


def _checked_labels(labels: np.ndarray, image: np.ndarray, name: str) -> np.ndarray:
    if labels.shape != image.shape:
        raise ValueError(
            f"segmenter model {name!r} returned shape {labels.shape} for an image "
            f"of shape {image.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"segmenter model {name!r} returned {labels.dtype} values; expected "
            "integer instance labels"
        )
    return labels.astype(np.int32, copy=False)


def accepts_min_size(model: AnalysisModel) -> bool:
    """Whether ``model.predict`` takes ``min_size_px`` (smartscope's
    segmenters do; ``analysis.model_min_area_um2`` needs it)."""
    try:
        params = inspect.signature(model.predict).parameters
    except (TypeError, ValueError):
        return False
    return "min_size_px" in params or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
    )


def predict_denoised(
    model: AnalysisModel, image: np.ndarray, *, name: str = "?"
) -> np.ndarray:
    """Run a denoising model and check its output.

    Parameters
    ----------
    image : (Y, X) ndarray
        Raw frame.

    Returns
    -------
    (Y, X) float32 ndarray
        Denoised image in the raw image's intensity units.
    """
    return _checked_denoised(np.asarray(model.predict(image)), image, name)


def _checked_denoised(out: np.ndarray, image: np.ndarray, name: str) -> np.ndarray:
    if out.shape != image.shape:
        raise ValueError(
            f"denoiser model {name!r} returned shape {out.shape} for an image of "
            f"shape {image.shape}"
        )
    return out.astype(np.float32, copy=False)


def _batch_outputs(
    model: AnalysisModel, images: list[np.ndarray], name: str, **kwargs: object
) -> list[np.ndarray] | None:
    """``model.predict_batch(images, **kwargs)`` where the model has it
    (smartscope's models), as arrays, one per image; None where it has not."""
    predict_batch = getattr(model, "predict_batch", None)
    if not callable(predict_batch):
        return None
    out = [np.asarray(o) for o in predict_batch(images, **kwargs)]
    if len(out) != len(images):
        raise ValueError(
            f"model {name!r} returned {len(out)} results for a batch of "
            f"{len(images)} images"
        )
    return out


def predict_labels_batch(
    model: AnalysisModel,
    images: list[np.ndarray],
    *,
    diameter_px: float,
    name: str = "?",
    min_size_px: float | None = None,
) -> list[np.ndarray]:
    """:func:`predict_labels` of several images in one call where the model
    takes batches (``predict_batch``), else one by one; each output is
    checked as :func:`predict_labels` checks it.

    Returns
    -------
    list of (Y, X) int32 ndarray, one per image
    """
    kwargs: dict[str, object] = {"diameter_px": diameter_px}
    if min_size_px is not None:
        kwargs["min_size_px"] = min_size_px
    out = _batch_outputs(model, images, name, **kwargs)
    if out is None:
        return [
            predict_labels(
                model, im, diameter_px=diameter_px, name=name, min_size_px=min_size_px
            )
            for im in images
        ]
    return [
        _checked_labels(labels, im, name)
        for labels, im in zip(out, images, strict=True)
    ]


def predict_denoised_batch(
    model: AnalysisModel, images: list[np.ndarray], *, name: str = "?"
) -> list[np.ndarray]:
    """:func:`predict_denoised` of several images in one call where the model
    takes batches (``predict_batch``), else one by one.

    Returns
    -------
    list of (Y, X) float32 ndarray, one per image
    """
    out = _batch_outputs(model, images, name)
    if out is None:
        return [predict_denoised(model, im, name=name) for im in images]
    return [_checked_denoised(d, im, name) for d, im in zip(out, images, strict=True)]
