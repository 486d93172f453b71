"""Models from bioimage.io packages that smartscope did not write.

A package without a ``config.smartscope`` section runs as its own card says
(:class:`~smartscope.nn.description.ModelDescription`): the declared
preprocessing on the whole frame, the network (padded to a valid size,
tiled with an overlap of twice the declared halo on large frames), the
declared postprocessing, then

- a denoiser (:class:`ImportedDenoiser`): channel 0 of the output, as float32
  in whatever units the card's postprocessing gives (a package that leaves its
  output normalised returns normalised values);
- a segmenter (:class:`ImportedSegmenter`): integer outputs are taken as
  instance labels (0/1 masks are split into connected components); a float
  output is read as a foreground probability (the channel whose name contains
  "foreground", else the first), thresholded at 0.5 and split into connected
  components.

``diameter_px`` is accepted and ignored: such a card does not say at which
object size the model was trained.

Loading a ``pytorch_state_dict`` entry imports the architecture the card
names (an installed module, or the package's own Python file): code from the
package runs, as it does in bioimage.io tools. A ``torchscript`` entry, which
runs no Python, is preferred when both are present.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage as ndi
from torch import nn

from smartscope.nn.card import sha256_of
from smartscope.nn.description import AxisSize, ModelDescription
from smartscope.nn.errors import ModelError
from smartscope.nn.normalize import as_2d_float
from smartscope.nn.predictor import (
    Device,
    Precision,
    Predictor,
    default_tile_px,
    resolve_device,
)
from smartscope.nn.processing import apply_steps

__all__ = [
    "ImportedDenoiser",
    "ImportedModel",
    "ImportedSegmenter",
    "build_imported",
    "load_network",
]

_FLOAT_KINDS = "f"


class _FirstOutput(nn.Module):
    """A network that returns a tuple or list, reduced to its first output."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.network(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out


class _SizedPredictor(Predictor):
    """A :class:`Predictor` that pads to the sizes a card allows
    (``min + n * step`` per axis, or one fixed size) instead of a multiple."""

    def __init__(
        self,
        network: nn.Module,
        *,
        size_y: AxisSize,
        size_x: AxisSize,
        halo_px: int,
        device: Device | str,
        precision: Precision,
        tile_px: int | None,
    ) -> None:
        if tile_px is None:
            tile_px = default_tile_px(resolve_device(device), precision)
        fixed = size_y.step == 0 or size_x.step == 0
        tile = min(size_y.min, size_x.min) if fixed else max(tile_px, size_y.min)
        super().__init__(
            network,
            size_multiple=1,
            device=device,
            precision=precision,
            tile_px=tile,
            overlap_px=max(2 * halo_px, 0 if fixed else 32),
        )
        # a foreign network may reshape activations: keep the default layout
        self.network = self.network.to(memory_format=torch.contiguous_format)
        self.channels_last = False
        self.size_y, self.size_x = size_y, size_x

    def _tile_size(self, size: int, *, axis: int) -> int:
        return (self.size_y if axis == 0 else self.size_x).valid(size)

    def _padding(self, h: int, w: int) -> tuple[int, int]:
        return self.size_y.valid(h) - h, self.size_x.valid(w) - w


class ImportedModel(ABC):
    """A model from a foreign bioimage.io package. Use
    :func:`smartscope.nn.load_model` to get one.

    Attributes
    ----------
    name : str
    description : ModelDescription, what its card says
    path : Path or None, the folder or ``.zip`` package it was loaded from
    rdf : dict, the card
    predictor : Predictor, holding the network, device and precision
    """

    def __init__(
        self,
        network: nn.Module,
        description: ModelDescription,
        *,
        name: str,
        path: Path | None = None,
        rdf: dict[str, Any] | None = None,
        device: Device | str = "auto",
        precision: Precision = "auto",
        tile_px: int | None = None,
        warm_up: bool = False,
    ) -> None:
        self.name = name
        self.description = description
        self.path = path
        self.rdf = rdf or {}
        self.predictor = _SizedPredictor(
            _FirstOutput(network),
            size_y=description.size_y,
            size_x=description.size_x,
            halo_px=description.halo_px,
            device=device,
            precision=precision,
            tile_px=tile_px,
        )
        if warm_up:
            self.predictor.warm_up((description.size_y.min, description.size_x.min))

    @property
    def kind(self) -> str:
        """ "denoise" or "segment"."""
        return self.description.kind

    def outputs(self, image: np.ndarray) -> np.ndarray:
        """What the package outputs for ``image``.

        Parameters
        ----------
        image : (Y, X) uint8/uint16/float array, any size

        Returns
        -------
        (C, Y, X) array of the card's output dtype, after its postprocessing
        """
        x = as_2d_float(image)[None, None]
        d = self.description
        pre = apply_steps(d.preprocessing, x)
        out = self.predictor.run(np.asarray(pre[0, 0], np.float32))[None]
        post = apply_steps(d.postprocessing, out, references={d.input_id: x})
        return post[0].astype(d.output_dtype, copy=False)

    @abstractmethod
    def predict(
        self, image: np.ndarray, *, diameter_px: float | None = None
    ) -> np.ndarray:
        """Predict one image; see the subclasses for what comes back."""

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, "
            f"weights={self.description.weights.format!r}, "
            f"device={self.predictor.device.type!r})"
        )


class ImportedDenoiser(ImportedModel):
    """An image-to-image model from a foreign package."""

    def predict(
        self, image: np.ndarray, *, diameter_px: float | None = None
    ) -> np.ndarray:
        """Restore ``image`` ((Y, X), any dtype): (Y, X) float32, channel 0 of
        the package's output (``diameter_px`` is ignored)."""
        return np.asarray(self.outputs(image)[0], np.float32)


class ImportedSegmenter(ImportedModel):
    """An image-to-labels (or -probabilities) model from a foreign package."""

    def predict(
        self, image: np.ndarray, *, diameter_px: float | None = None
    ) -> np.ndarray:
        """Segment ``image`` ((Y, X), any dtype): (Y, X) int32 instance labels,
        0 = background (``diameter_px`` is ignored)."""
        out = self.outputs(image)
        if out.dtype.kind in _FLOAT_KINDS:
            names = self.description.output_channels
            fg = next((i for i, n in enumerate(names) if "foreground" in n.lower()), 0)
            mask = out[fg] > 0.5
        else:
            labels = np.asarray(out[0])
            if labels.size and labels.max() > 1:
                return labels.astype(np.int32, copy=False)
            mask = labels > 0
        labels, _ = ndi.label(mask)
        return labels.astype(np.int32, copy=False)


_CLASSES: dict[str, type[ImportedModel]] = {
    "denoise": ImportedDenoiser,
    "segment": ImportedSegmenter,
}


def build_imported(
    network: nn.Module, description: ModelDescription, **kwargs: Any
) -> ImportedModel:
    """Wrap a network and its card's description in the right class."""
    return _CLASSES[description.kind](network, description, **kwargs)


def load_network(folder: Path, description: ModelDescription, where: Path) -> nn.Module:
    """Load the weights ``description`` chose from the package in ``folder``.

    Raises
    ------
    ModelError
        Naming the file: missing, corrupt (sha256), not loadable, or an
        architecture that cannot be imported or built.
    """
    entry = description.weights
    wpath = folder / entry.source
    if not wpath.is_file():
        raise ModelError(
            f"weights file named in {where.name} does not exist", path=wpath
        )
    if entry.sha256 and sha256_of(wpath) != entry.sha256:
        raise ModelError(
            f"weights file is corrupt: its sha256 does not match the one in "
            f"{where.name}",
            path=wpath,
        )
    if entry.format == "torchscript":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return torch.jit.load(str(wpath), map_location="cpu")
        except Exception as e:
            raise ModelError(f"cannot load TorchScript weights: {e}", path=wpath) from e
    arch = entry.architecture
    assert arch is not None  # describe_model sets it for state dicts
    if arch.import_from is not None:
        try:
            module = importlib.import_module(arch.import_from)
        except Exception as e:
            raise ModelError(
                f"weights.pytorch_state_dict.architecture: cannot import "
                f"{arch.import_from!r} ({type(e).__name__}: {e}); install the "
                "package that provides it",
                path=where,
            ) from e
    else:
        assert arch.source is not None
        module = _module_from_file(folder / arch.source, arch.sha256, where)
    factory = getattr(module, arch.callable, None)
    if not callable(factory):
        raise ModelError(
            f"weights.pytorch_state_dict.architecture: {module.__name__} has no "
            f"callable {arch.callable!r}",
            path=where,
        )
    try:
        net = factory(**arch.kwargs)
    except Exception as e:
        raise ModelError(
            f"weights.pytorch_state_dict.architecture: {arch.callable}"
            f"(**{dict(arch.kwargs)}) failed: {type(e).__name__}: {e}",
            path=where,
        ) from e
    if not isinstance(net, nn.Module):
        raise ModelError(
            f"weights.pytorch_state_dict.architecture: {arch.callable} returned "
            f"{type(net).__name__}, not a torch.nn.Module",
            path=where,
        )
    try:
        state = torch.load(wpath, map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=entry.strict)
    except Exception as e:
        detail = " ".join(str(e).split())[:600]
        raise ModelError(
            f"cannot load the state dict into {arch.callable}: {detail}", path=wpath
        ) from e
    return net


def _module_from_file(path: Path, sha256: str | None, where: Path) -> Any:
    """Import a package's architecture file (its code runs, as in bioimage.io tools)."""
    if not path.is_file():
        raise ModelError(
            f"architecture file named in {where.name} does not exist", path=path
        )
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if sha256 and digest != sha256:
        raise ModelError(
            f"architecture file is corrupt: its sha256 does not match the one in "
            f"{where.name}",
            path=path,
        )
    # one module per file content, so two packages never share a module by name
    name = f"smartscope_package_{digest[:16]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelError("cannot import the architecture file", path=path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise ModelError(
            f"importing the architecture file failed: {type(e).__name__}: {e}",
            path=path,
        ) from e
    return module
