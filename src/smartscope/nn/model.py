"""Loading, saving and using trained models: ``load_model(name_or_path).predict(image)``.

A model is a folder (or a ``.zip`` bioimage.io package) with ``rdf.yaml`` and
weights. :func:`load_model` finds it by name in the shipped ``models/`` folder
or by path, checks the card and the weights' checksum, builds the network and
wraps it in a :class:`~smartscope.nn.predictor.Predictor`. Every problem with
the files surfaces as a :class:`~smartscope.nn.errors.ModelError` that names
the file.
"""

from __future__ import annotations

import math
import tempfile
import time
import warnings
import zipfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from smartscope.nn import twins
from smartscope.nn.card import (
    RDF_NAME,
    WEIGHTS_NAME,
    ModelCard,
    Postprocess,
    read_card,
    read_rdf,
    sha256_of,
    tile_overlap_px,
)
from smartscope.nn.description import card_name
from smartscope.nn.device_labels import (
    labels_from_maps_t,
    normalize_t,
    percentile_range_t,
)
from smartscope.nn.errors import ModelError
from smartscope.nn.instances import (
    estimate_diameter_px,
    labels_from_maps,
    object_diameter_px,
)
from smartscope.nn.locate import available_models, resolve_model_path
from smartscope.nn.normalize import (
    as_2d,
    as_2d_float,
    denormalize,
    normalize,
    percentile_range,
)
from smartscope.nn.predictor import (
    Device,
    Precision,
    Predictor,
    onnxruntime_available,
    resolve_device,
)
from smartscope.nn.unet import UNet

if TYPE_CHECKING:
    from smartscope.nn.imported import ImportedModel
    from smartscope.nn.mitosis_model import MitosisClassifier

__all__ = [
    "DenoiseModel",
    "Model",
    "SegmentModel",
    "available_models",
    "build_model",
    "load_model",
    "save_model",
]

#: most network passes :meth:`SegmentModel.predict` makes to find the nuclei's
#: scale when no ``diameter_px`` is given (the first at the image's own scale)
AUTO_SIZE_PASSES = 4
#: once rescaled, nuclei measured within this factor of the training diameter
#: are left at that scale
AUTO_SIZE_TOLERANCE = 1.3
#: nuclei found at the image's own scale are checked by a pass at half that
#: size: real nuclei measure the same there; fragments of a textured nucleus
#: far larger than any trained on (the network finds training-sized pieces at
#: any scale) measure this many times larger, and the larger size is taken
AUTO_SIZE_PROBE_RATIO = 1.5


class Model(ABC):
    """A trained model ready to predict. Use :func:`load_model` to get one.

    Attributes
    ----------
    name : str
    card : ModelCard
    path : Path or None, the folder or ``.zip`` package it was loaded from
    predictor : Predictor, holding the network, device and precision
    timings_ms : dict
        Where the last :meth:`predict` (or ``predict_batch``) call spent its
        time, ms: ``transfer`` (to and from the device; device path only),
        ``normalise`` (percentiles, normalisation, rescaling to the
        training diameter), ``network``, ``postprocess`` (sigmoid, resizing
        back, labels, size limits; a denoiser's de-normalisation). On CUDA
        each step is synchronised before it is timed. Not for concurrent
        calls (each analysis stage has its own model).
    keep_on_device : bool or None
        Whether :meth:`predict` keeps the frame on the predictor's device
        from normalisation to the result (percentiles, rescaling, the
        network, and for a segmenter the labels: :mod:`smartscope.nn.device_labels`),
        with one copy in and one out. ``None`` (the default): on CUDA with
        a torch network. On the CPU the host path (numpy, scikit-image's
        watershed) is faster; setting this there runs the device path's
        code on the CPU, as the tests do.
    compile_postprocess : bool or None
        Whether a segmenter's device path spreads its watershed through
        ``torch.compile`` (:func:`smartscope.nn.device_labels.compiled_spreading`:
        each step one fused kernel instead of six launches; the same labels;
        each new frame size compiles once, seconds, in the warm-up where
        the controller runs one; a failure to compile falls back to eager
        steps with a warning). ``None`` (the default): on CUDA.
    keep_inputs : bool
        Whether the device path leaves each frame it copies to the device
        there as the host frame's twin (:mod:`smartscope.nn.twins`), for
        the next step to take instead of copying it again: the analysis
        sets it on the model that first receives the raw frames, whose
        pixels the measurements on the device read
        (:mod:`smartscope.analysis.measure_device`). Default False.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        card: ModelCard,
        *,
        name: str = "model",
        path: Path | None = None,
        rdf: dict[str, Any] | None = None,
        device: Device | str = "auto",
        precision: Precision = "auto",
        tile_px: int | None = None,
        warm_up: bool = False,
        int8_onnx: bytes | None = None,
    ) -> None:
        self.name = name
        self.card = card
        self.path = path
        self.rdf = rdf or {}
        #: the U-Net's weights before the predictor folds its batch norm (None
        #: for TorchScript), what :mod:`smartscope.nn.adapt` fine-tunes
        self.source_state: dict[str, torch.Tensor] | None = (
            {k: v.detach().clone() for k, v in network.state_dict().items()}
            if isinstance(network, UNet)
            else None
        )
        self.predictor = Predictor(
            network,
            size_multiple=card.unet.size_multiple,
            device=device,
            precision=precision,
            tile_px=tile_px,
            overlap_px=tile_overlap_px(card.unet),
            int8_onnx=int8_onnx,
        )
        self.keep_on_device: bool | None = None
        self.compile_postprocess: bool | None = None
        self.keep_inputs = False
        self.timings_ms: dict[str, float] = {}
        self._clock_t = 0.0
        if warm_up:
            self.predictor.warm_up()

    def _start_clock(self) -> None:
        self.timings_ms = {}
        self._clock_t = time.perf_counter()

    def _mark(self, stage: str) -> None:
        """Add the time since the last mark to ``timings_ms[stage]``."""
        if self.predictor.device.type == "cuda":
            # the stream's work, not the device's: a device-wide sync is not
            # allowed while another thread records a CUDA graph
            torch.cuda.current_stream(self.predictor.device).synchronize()
        now = time.perf_counter()
        ms = (now - self._clock_t) * 1000.0
        self.timings_ms[stage] = self.timings_ms.get(stage, 0.0) + ms
        self._clock_t = now

    def _summed_timings(self, calls: list[dict[str, float]]) -> None:
        total: dict[str, float] = {}
        for t in calls:
            for k, v in t.items():
                total[k] = total.get(k, 0.0) + v
        self.timings_ms = total

    @property
    def on_device(self) -> bool:
        """Whether :meth:`predict` takes the device path (see
        ``keep_on_device``)."""
        if self.keep_on_device is not None:
            return self.keep_on_device
        p = self.predictor
        return p.device.type == "cuda" and p.precision != "int8"

    @property
    def compiles_postprocess(self) -> bool:
        """Whether the device path's watershed runs compiled (see
        ``compile_postprocess``)."""
        if self.compile_postprocess is not None:
            return self.compile_postprocess
        return self.predictor.device.type == "cuda"

    def load_state(self, state: dict[str, Any]) -> None:
        """Predict with new weights from now on: ``state`` is a U-Net state
        dict (tensors or arrays) for this model's card. The new predictor is
        built first and then swapped in, so a concurrent ``predict`` uses one
        set of weights or the other."""
        net = UNet(self.card.unet)
        net.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
        old = self.predictor
        self.predictor = Predictor(
            net,
            size_multiple=old.size_multiple,
            device=str(old.device),
            # the int8 copy is of the old weights
            precision="float32" if old.precision == "int8" else old.precision,
            tile_px=old.tile_px,
            overlap_px=old.overlap_px,
            cuda_graphs=old.cuda_graphs,
        )
        self.predictor.graphs_failed = old.graphs_failed
        self.source_state = {k: v.detach().clone() for k, v in net.state_dict().items()}

    @property
    def kind(self) -> str:
        """ "denoise" or "segment"."""
        return self.card.kind

    @abstractmethod
    def predict(
        self, image: np.ndarray, *, diameter_px: float | None = None
    ) -> np.ndarray:
        """Predict one image; see the subclasses for what comes back."""

    def _normalized(self, image: np.ndarray) -> tuple[np.ndarray, float, float]:
        raw = as_2d(image)
        x = as_2d_float(raw)
        n = self.card.normalization
        # a camera's 8- or 16-bit frame: its percentiles from a histogram
        counted = raw if raw.dtype in (np.uint8, np.uint16) else x
        low, high = percentile_range(counted, p_low=n.p_low, p_high=n.p_high)
        return normalize(x, low, high), low, high

    def _normalized_t(
        self, images: list[np.ndarray] | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Y, X) images of one shape (:func:`as_2d`'s) on the predictor's
        device in one copy (in their own dtype), each normalised by its own
        percentiles there: (B, Y, X) float32 Tensor, low and high ((B,)).
        Images another model has just brought back from this device (a
        denoiser's output) are not copied again: their twins are taken
        (:mod:`smartscope.nn.twins`). A (B, Y, X) Tensor (another model's
        output left on the device) is taken as it is."""
        device = self.predictor.device
        if isinstance(images, torch.Tensor):
            x = images.to(device)
            self._mark("transfer")
            return self._normalized_here(x)
        kept = [twins.take(a, device) for a in images]
        missing = [i for i, t in enumerate(kept) if t is None]
        if len(missing) == len(images):
            host = images[0][None] if len(images) == 1 else np.stack(images)
            x = self.predictor.to_device(host)
            self._keep_inputs(images, x)
        else:
            if missing:  # the rest of a batch whose twins were pushed out
                sent = self.predictor.to_device(np.stack([images[i] for i in missing]))
                self._keep_inputs([images[i] for i in missing], sent)
                for i, t in zip(missing, sent, strict=True):
                    kept[i] = t
            x = torch.stack([t.float() for t in kept])  # type: ignore[union-attr]
        self._mark("transfer")
        return self._normalized_here(x)

    def _normalized_here(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`_normalized_t` of a (B, Y, X) Tensor on the device."""
        x = torch.nan_to_num(x.float(), nan=0.0, posinf=0.0, neginf=0.0)
        n = self.card.normalization
        low, high = percentile_range_t(x, p_low=n.p_low, p_high=n.p_high)
        x = normalize_t(x, low, high)
        self._mark("normalise")
        return x, low, high

    def _keep_inputs(self, images: list[np.ndarray], sent: torch.Tensor) -> None:
        """Leave the frames just copied to the device there as their host
        arrays' twins, where ``keep_inputs`` asks for it (each its own
        memory where several crossed together)."""
        if not self.keep_inputs:
            return
        for host, t in zip(images, sent, strict=True):
            twins.remember(host, t.clone() if len(images) > 1 else t)

    def _batchable(self, images: list[np.ndarray] | torch.Tensor) -> bool:
        """Whether ``images`` (:func:`as_2d`'s, or a (B, Y, X) Tensor) go
        through the device path together: it is on, and they have one
        shape."""
        if isinstance(images, torch.Tensor):
            return self.on_device and images.ndim == 3
        return self.on_device and len({a.shape for a in images}) == 1

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, method={self.card.method!r}, "
            f"device={self.predictor.device.type!r})"
        )


class DenoiseModel(Model):
    """A restoration model (CARE or Noise2Void)."""

    def predict(
        self,
        image: np.ndarray,
        *,
        diameter_px: float | None = None,
        tta: bool | None = None,
    ) -> np.ndarray:
        """Denoise ``image``.

        Parameters
        ----------
        image : (Y, X) uint8/uint16/float array, any size
        diameter_px : ignored (denoising works at any scale); accepted so every
            model has the same call
        tta : average over the 8 rotations/flips (8x the time); ``None``: as
            the card says (``card.test_time_augmentation``)

        Returns
        -------
        (Y, X) float32 in the input's intensity units (e.g. ADU)
        """
        if tta is None:
            tta = self.card.test_time_augmentation
        self._start_clock()
        if self.on_device:
            return self._predict_t([as_2d(image)], tta)[0]
        x, low, high = self._normalized(image)
        self._mark("normalise")
        out = self._run_tta(x) if tta else self.predictor.run(x)[0]
        self._mark("network")
        out = denormalize(out, low, high)
        self._mark("postprocess")
        return out

    def predict_batch(
        self, images: list[np.ndarray], *, tta: bool | None = None
    ) -> list[np.ndarray]:
        """Denoise several images: with the device path on
        (``keep_on_device``) and one shape, in one copy to the device and
        one network call (a batch); else one by one with :meth:`predict`.

        Returns
        -------
        list of (Y, X) float32, one per image, as :meth:`predict` returns
        """
        if tta is None:
            tta = self.card.test_time_augmentation
        arrays = [as_2d(im) for im in images]
        if not arrays or not self._batchable(arrays):
            outs, calls = [], []
            for a in arrays:
                outs.append(self.predict(a, tta=tta))
                calls.append(self.timings_ms)
            self._summed_timings(calls)
            return outs
        self._start_clock()
        return self._predict_t(arrays, tta)

    def predict_batch_t(
        self, images: list[np.ndarray], *, tta: bool | None = None
    ) -> torch.Tensor | None:
        """:meth:`predict_batch` with the denoised frames left on the
        device, for a segmenter there to take (where nothing needs them on
        the host: a 2048² frame is 16 MB of float32 to copy back); None
        where the device path does not apply (it is off, or the images
        have several shapes), for :meth:`predict_batch` to do.

        Returns
        -------
        (B, Y, X) float32 Tensor on the predictor's device, in the inputs'
        intensity units, or None
        """
        arrays = [as_2d(im) for im in images]
        if not arrays or not self._batchable(arrays):
            return None
        if tta is None:
            tta = self.card.test_time_augmentation
        self._start_clock()
        with torch.inference_mode():
            return self._denoised_t(arrays, tta)

    def _denoised_t(self, arrays: list[np.ndarray], tta: bool) -> torch.Tensor:
        """The device path up to the denoised frames, (B, Y, X) on the device."""
        xt, lo, hi = self._normalized_t(arrays)
        yt = self._run_tta_t(xt) if tta else self.predictor.run_t(xt)[:, 0]
        self._mark("network")
        yt = yt * (hi - lo)[:, None, None] + lo[:, None, None]
        self._mark("postprocess")
        return yt

    def _predict_t(self, arrays: list[np.ndarray], tta: bool) -> list[np.ndarray]:
        """The device path of :meth:`predict_batch` (images of one shape)."""
        with torch.inference_mode():
            yt = self._denoised_t(arrays, tta)
            out = list(self.predictor.to_host(yt))
            for host, t in zip(out, yt, strict=True):
                # the segmenter takes it, not the host copy; each its own
                # memory (a view would keep the whole batch on the device)
                twins.remember(host, t.clone() if len(out) > 1 else t)
            self._mark("transfer")
            return out

    def _run_tta_t(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`_run_tta` on the device: (B, Y, X) Tensor → (B, Y, X)."""
        acc = torch.zeros_like(x)
        for k in range(4):
            for flip in (False, True):
                a = torch.rot90(x, k, (1, 2))
                if flip:
                    a = a.flip(2)
                out = self.predictor.run_t(a.contiguous())[:, 0]
                if flip:
                    out = out.flip(2)
                acc += torch.rot90(out, -k, (1, 2))
        return acc / 8.0

    def _run_tta(self, x: np.ndarray) -> np.ndarray:
        """Mean prediction over the 8 rotations and flips of ``x``."""
        acc = np.zeros(x.shape, np.float32)
        for k in range(4):
            for flip in (False, True):
                a = np.rot90(x, k)
                if flip:
                    a = a[:, ::-1]
                out = self.predictor.run(np.ascontiguousarray(a))[0]
                if flip:
                    out = out[:, ::-1]
                acc += np.rot90(out, -k)
        acc /= 8.0
        return acc


class SegmentModel(Model):
    """A nuclei instance segmentation model."""

    def maps(
        self, image: np.ndarray, *, diameter_px: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Foreground probability and normalised distance, each (Y, X) float32 in [0, 1].

        ``diameter_px`` rescales as in :meth:`predict`; here ``None`` means no
        rescaling (no automatic estimate).
        """
        self._start_clock()
        x, _, _ = self._normalized(image)
        self._mark("normalise")
        return self._maps(x, self._scale_factor(diameter_px))

    def _maps(
        self, x: np.ndarray, factor: float, tta: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        self._mark("postprocess")  # what came before: sizing a pass's labels
        shape = x.shape
        if factor != 1.0:
            x = _resize(
                x,
                (max(16, round(shape[0] * factor)), max(16, round(shape[1] * factor))),
            )
        self._mark("normalise")
        logits = self._flip_mean_logits(x) if tta else self.predictor.run(x)
        self._mark("network")
        # both maps at once, in torch (no copy in or out)
        probs_t = torch.sigmoid(
            torch.from_numpy(np.require(logits, np.float32, ["C", "W"]))
        )
        if factor != 1.0:
            probs_t = _resize_t(probs_t[None], shape)[0]
        probs = probs_t.numpy()
        self._mark("postprocess")
        return probs[0], probs[1]

    def _flip_mean_logits(self, x: np.ndarray) -> np.ndarray:
        """Mean logits over the input as is and flipped up-down, left-right
        and both (4x the network time)."""
        acc = np.zeros((2, *x.shape), np.float32)
        for flip_y in (False, True):
            for flip_x in (False, True):
                a = x[::-1] if flip_y else x
                a = a[:, ::-1] if flip_x else a
                out = self.predictor.run(np.ascontiguousarray(a))
                out = out[:, ::-1] if flip_y else out
                acc += out[:, :, ::-1] if flip_x else out
        return acc / 4.0

    def _maps_t(
        self, x: torch.Tensor, factor: float, tta: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`_maps` on the device: (B, Y, X) float32 Tensor → foreground,
        distance, each (B, Y, X) float32 Tensor on the same device."""
        shape = (int(x.shape[1]), int(x.shape[2]))
        if factor != 1.0:
            x = _resize_t(
                x[:, None],
                (max(16, round(shape[0] * factor)), max(16, round(shape[1] * factor))),
            )[:, 0]
        self._mark("normalise")
        if tta:
            acc: torch.Tensor | None = None
            for dims in ((), (1,), (2,), (1, 2)):
                a = x.flip(dims).contiguous() if dims else x
                out = self.predictor.run_t(a)[:, :2]
                out = out.flip(tuple(d + 1 for d in dims)) if dims else out
                acc = out if acc is None else acc + out
            logits = acc / 4.0  # type: ignore[operator]
        else:
            logits = self.predictor.run_t(x)[:, :2]
        self._mark("network")
        probs = torch.sigmoid(logits.clamp(-30.0, 30.0))
        if factor != 1.0:
            probs = _resize_t(probs, shape)
        return probs[:, 0], probs[:, 1]

    def _scale_factor(self, diameter_px: float | None) -> float:
        if diameter_px is None or self.card.train_diameter_px is None:
            return 1.0
        if not diameter_px > 0:
            raise ValueError(f"diameter_px must be > 0, got {diameter_px}")
        factor = float(self.card.train_diameter_px) / float(diameter_px)
        return 1.0 if abs(factor - 1.0) < 0.05 else factor

    def predict(
        self,
        image: np.ndarray,
        *,
        diameter_px: float | None = None,
        tta: bool | None = None,
        min_size_px: float | None = None,
    ) -> np.ndarray:
        """Segment nuclei.

        Parameters
        ----------
        image : (Y, X) uint8/uint16/float array, any size
        diameter_px : typical nucleus diameter in ``image``, pixels. The image
            is rescaled so nuclei have the training diameter
            (``card.train_diameter_px``), and the result back. ``None``:
            predict at the image's own scale (the model was trained on
            diameters of about 8 to 48 px), then, while the nuclei found
            measure outside ``card.postprocess.auto_diameter_px``, again
            rescaled to the training diameter using what was measured
            (at most ``AUTO_SIZE_PASSES`` passes; see ``_predict_auto``).
        tta : average the network's maps over the image and its three flips
            (4x the network time; on 12 held-out real images AP@0.5 / 0.75
            +0.013 / +0.032, docs/models.md); ``None``: as the card says
            (``card.test_time_augmentation``, off for the shipped models)
        min_size_px : smallest object kept, in ``image``'s pixels, also where
            it touches the border; ``None``: the card's fragment limits
            (``card.postprocess.min_size_px`` and ``border_min_size_px``, at
            the training diameter, scaled with the nuclei). Lower it to keep
            micronuclei or apoptotic bodies: the network's fragments of
            larger nuclei are then kept too. With the automatic size, the
            passes that find the scale keep the card's limits; only the
            final labels use this one.

        Returns
        -------
        (Y, X) int32 instance labels, 0 = background
        """
        _check_min_size(min_size_px)
        post = self.card.postprocess or Postprocess()
        if tta is None:
            tta = self.card.test_time_augmentation
        factor = self._scale_factor(diameter_px)
        auto = post.auto_diameter_px
        find_size = self._finds_size(diameter_px)
        self._start_clock()
        if self.on_device and not find_size:
            labels = self._predict_t([as_2d(image)], factor, tta, post, min_size_px)
            return labels[0]
        x, _, _ = self._normalized(image)
        self._mark("normalise")
        fg, dist = self._maps(x, factor, tta)
        if find_size and auto is not None:
            labels, fg, dist, size = self._predict_auto(x, fg, dist, post, auto, tta)
            if min_size_px is not None:
                labels = self._labels(fg, dist, size, post, min_size_px)
        else:
            labels = self._labels(fg, dist, factor, post, min_size_px)
        self._mark("postprocess")
        return labels

    def predict_batch(
        self,
        images: list[np.ndarray],
        *,
        diameter_px: float | None = None,
        tta: bool | None = None,
        min_size_px: float | None = None,
    ) -> list[np.ndarray]:
        """Segment several images (e.g. the frames of several stage
        positions): with the device path on (``keep_on_device``), one shape
        and a ``diameter_px``, in one copy to the device and one network call
        (a batch), the labels of each made on the device; else one by one
        with :meth:`predict`. The options are :meth:`predict`'s, the same
        for every image.

        Returns
        -------
        list of (Y, X) int32 instance labels, one per image
        """
        _check_min_size(min_size_px)
        if tta is None:
            tta = self.card.test_time_augmentation
        factor = self._scale_factor(diameter_px)
        arrays = [as_2d(im) for im in images]
        if not arrays or self._finds_size(diameter_px) or not self._batchable(arrays):
            outs, calls = [], []
            for a in arrays:
                outs.append(
                    self.predict(
                        a, diameter_px=diameter_px, tta=tta, min_size_px=min_size_px
                    )
                )
                calls.append(self.timings_ms)
            self._summed_timings(calls)
            return outs
        post = self.card.postprocess or Postprocess()
        self._start_clock()
        return self._predict_t(arrays, factor, tta, post, min_size_px)

    def predict_batch_t(
        self,
        images: list[np.ndarray] | torch.Tensor,
        *,
        diameter_px: float,
        tta: bool | None = None,
        min_size_px: float | None = None,
    ) -> torch.Tensor | None:
        """:meth:`predict_batch` with the labels left on the device, for
        steps that follow there (the analysis's area filter and
        measurements: :mod:`smartscope.analysis.measure_device`); None
        where the device path does not apply (it is off, or the images
        have several shapes), for :meth:`predict_batch` to do. ``images``
        may also be a (B, Y, X) Tensor already on the device (a denoiser's
        frames left there: ``DenoiseModel.predict_batch_t``).

        Returns
        -------
        (B, Y, X) int32 Tensor on the predictor's device, or None
        """
        _check_min_size(min_size_px)
        arrays = (
            images if isinstance(images, torch.Tensor) else [as_2d(im) for im in images]
        )
        if len(arrays) == 0 or self._finds_size(diameter_px):
            return None
        if not self._batchable(arrays):
            return None
        if tta is None:
            tta = self.card.test_time_augmentation
        factor = self._scale_factor(diameter_px)
        post = self.card.postprocess or Postprocess()
        self._start_clock()
        with torch.inference_mode():
            return self._labels_t(arrays, factor, tta, post, min_size_px)

    def _finds_size(self, diameter_px: float | None) -> bool:
        """Whether :meth:`predict` finds the nuclei's size itself."""
        post = self.card.postprocess or Postprocess()
        return (
            diameter_px is None
            and post.auto_diameter_px is not None
            and bool(self.card.train_diameter_px)
        )

    def _predict_t(
        self,
        arrays: list[np.ndarray],
        factor: float,
        tta: bool,
        post: Postprocess,
        min_size_px: float | None,
    ) -> list[np.ndarray]:
        """The device path: images of one shape cross once each way, in as
        they came and out as labels."""
        with torch.inference_mode():
            labels = self._labels_t(arrays, factor, tta, post, min_size_px)
            out = list(self.predictor.to_host(labels))
            self._mark("transfer")
            return out

    def _labels_t(
        self,
        arrays: list[np.ndarray] | torch.Tensor,
        factor: float,
        tta: bool,
        post: Postprocess,
        min_size_px: float | None,
    ) -> torch.Tensor:
        """The device path up to the labels, (B, Y, X) int32 on the device."""
        inner, border = self._limits(factor, post, min_size_px)
        xt, _, _ = self._normalized_t(arrays)
        fg, dist = self._maps_t(xt, factor, tta)
        labels = torch.stack(
            [
                labels_from_maps_t(
                    fg[i],
                    dist[i],
                    fg_threshold=post.fg_threshold,
                    seed_threshold=post.seed_threshold,
                    min_size_px=inner,
                    border_min_size_px=border,
                    compiled=self.compiles_postprocess,
                )
                for i in range(len(arrays))
            ]
        )
        self._mark("postprocess")
        return labels

    def maps_auto_size(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Foreground, distance and the size factor :meth:`predict` without
        ``diameter_px`` settles on (``min_size_px`` is divided by its square;
        1.0 without automatic size), e.g. to tune the post-processing on
        images of any nucleus size."""
        self._start_clock()
        x, _, _ = self._normalized(image)
        self._mark("normalise")
        post = self.card.postprocess or Postprocess()
        fg, dist = self._maps(x, 1.0)
        auto = post.auto_diameter_px
        if auto is None or not self.card.train_diameter_px:
            return fg, dist, 1.0
        return self._predict_auto(x, fg, dist, post, auto)[1:]

    def _labels(
        self,
        fg: np.ndarray,
        dist: np.ndarray,
        factor: float,
        post: Postprocess,
        min_size_px: float | None = None,
    ) -> np.ndarray:
        """Instances from the maps; ``factor``: how much the image was scaled
        to reach the training diameter (``post.min_size_px`` is at that
        diameter, so it shrinks or grows with the nuclei); ``min_size_px``
        (image pixels) replaces both of the card's limits."""
        inner, border = self._limits(factor, post, min_size_px)
        return labels_from_maps(
            fg,
            dist,
            fg_threshold=post.fg_threshold,
            seed_threshold=post.seed_threshold,
            min_size_px=inner,
            border_min_size_px=border,
        )

    @staticmethod
    def _limits(
        factor: float, post: Postprocess, min_size_px: float | None
    ) -> tuple[int, int]:
        """The smallest objects kept inside the image and at its border,
        pixels (:meth:`_labels`)."""
        if min_size_px is None:
            inner = max(1, round(post.min_size_px / factor**2))
            border = max(1, round(post.border_min_size_px / factor**2))
        else:
            inner = border = max(1, round(min_size_px))
        return inner, border

    def _size_factor(self, factor: float, estimate: float | None) -> float:
        """The factor that scales ``min_size_px`` on a pass at ``factor``: a
        pass at the image's own scale, where the nuclei may be anything the
        network handles (``auto_diameter_px``), uses their estimated size
        instead (else 100-px fragment limits tuned on real images dropped
        12-px simulated nuclei whole)."""
        train = self.card.train_diameter_px
        if factor != 1.0 or not estimate or not train:
            return factor
        return float(train) / float(estimate)

    def _predict_auto(
        self,
        x: np.ndarray,
        fg: np.ndarray,
        dist: np.ndarray,
        post: Postprocess,
        auto: tuple[float, float],
        tta: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """Labels at a scale found from the image itself (no ``diameter_px``),
        with the maps they came from and the factor that scaled the smallest
        object kept (:meth:`_size_factor`).

        The first pass (``fg``, ``dist``: native scale) gives a rough size
        from its foreground; nuclei far outside the sizes the network was
        trained on come out fragmented or merged there, so that estimate is
        only a start. Each further pass measures the nuclei it segmented
        (:func:`object_diameter_px`, at the pass's scale) and, while they lie
        outside ``auto``, predicts again rescaled to the training diameter,
        at most :data:`AUTO_SIZE_PASSES` passes in all. On 78 real images
        (docs/models.md) one correction was not enough where 90-px nuclei
        first measured 24 px: shattered into pieces at that scale. Where the
        first pass is kept at the image's own scale, a probe pass at half
        the size found checks it (:data:`AUTO_SIZE_PROBE_RATIO`; one pass
        more than :data:`AUTO_SIZE_PASSES`): 90-px textured nuclei had come
        out as 28-px pieces, a size the network accepts.
        """
        factor = 1.0
        estimate = estimate_diameter_px(fg > post.fg_threshold)
        if estimate is not None and not auto[0] <= estimate <= auto[1]:
            factor = self._scale_factor(estimate)
            if factor != 1.0:
                fg, dist = self._maps(x, factor, tta)
        labels = self._labels(fg, dist, self._size_factor(factor, estimate), post)
        target = float(self.card.train_diameter_px)  # set: predict checked
        native = object_diameter_px(labels) if factor == 1.0 else None
        if native is not None:
            # the probe (not counted in AUTO_SIZE_PASSES): at half the size
            # found, real nuclei measure the same
            probe = self._scale_factor(2.0 * native)
            pfg, pdist = self._maps(x, probe, tta)
            seen = object_diameter_px(self._labels(pfg, pdist, probe, post))
            if seen is not None and seen > AUTO_SIZE_PROBE_RATIO * native:
                factor = self._scale_factor(seen)
                fg, dist = self._maps(x, factor, tta)
                labels = self._labels(fg, dist, factor, post)
        for _ in range(AUTO_SIZE_PASSES - (1 if factor == 1.0 else 2)):
            measured = object_diameter_px(labels)
            # at the image's own scale any size the network handles will do;
            # once rescaled, the training diameter within AUTO_SIZE_TOLERANCE
            lo, hi = (
                auto
                if factor == 1.0
                else (target / AUTO_SIZE_TOLERANCE, target * AUTO_SIZE_TOLERANCE)
            )
            if measured is None or lo <= measured * factor <= hi:
                break
            new = self._scale_factor(measured)
            if new == factor:
                break
            factor = new
            fg, dist = self._maps(x, factor, tta)
            labels = self._labels(fg, dist, factor, post)
        return labels, fg, dist, self._size_factor(factor, estimate)


#: shrinking by this factor or more averages areas; below it, bilinear
AREA_SHRINK = 2.0


def _resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a (Y, X) float32 image: :func:`_resize_t`."""
    t = torch.from_numpy(np.ascontiguousarray(image, np.float32))[None, None]
    return _resize_t(t, shape)[0, 0].numpy()


def _resize_t(image: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Resize a (B, C, Y, X) float32 Tensor on its device: bilinear, and
    area-averaged where an axis shrinks by :data:`AREA_SHRINK` or more.

    Below 2x every input pixel still lies within one pixel of an output
    sample, so bilinear leaves none out; and torch's ``area`` at a
    non-integer ratio (an adaptive average pooling) costs 3x as much: at the
    segmenter's usual 1.08 (2219² maps back to 2048²) 85 against 28 ms on
    one core.
    """
    ratio = max(image.shape[-2] / shape[0], image.shape[-1] / shape[1])
    if ratio >= AREA_SHRINK:
        return torch.nn.functional.interpolate(image, size=shape, mode="area")
    return torch.nn.functional.interpolate(
        image, size=shape, mode="bilinear", align_corners=False
    )


def _check_min_size(min_size_px: float | None) -> None:
    if min_size_px is not None and not 0 <= min_size_px < math.inf:
        raise ValueError(f"min_size_px must be a finite number >= 0, got {min_size_px}")


_CLASSES: dict[str, type[Model]] = {"denoise": DenoiseModel, "segment": SegmentModel}


def build_model(network: torch.nn.Module, card: ModelCard, **kwargs: Any) -> Model:
    """Wrap a network and its card in the right :class:`Model` subclass."""
    return _CLASSES[card.kind](network, card, **kwargs)


def _unpack(path: Path, out: Path) -> str:
    """Extract a .zip package into the folder ``out``; return its card's name."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            card = card_name(names)
            if card is None:
                raise ModelError(
                    f"package has no {RDF_NAME} (or bioimageio.yaml) at its top level",
                    path=path,
                )
            for n in names:  # refuse paths that would escape the folder
                if Path(n).is_absolute() or ".." in Path(n).parts:
                    raise ModelError(
                        f"package member {n!r} has an unsafe path", path=path
                    )
            zf.extractall(out)
    except zipfile.BadZipFile as e:
        raise ModelError(f"not a valid .zip model package: {e}", path=path) from e
    return card


class _NormalizedForward(torch.nn.Module):
    """The bare U-Net of a smartscope denoiser's TorchScript (its
    ``forward_normalized``): the package's ``forward`` normalises each input
    itself, and smartscope normalises the whole frame before tiling."""

    def __init__(self, scripted: torch.nn.Module) -> None:
        super().__init__()
        self.scripted = scripted

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scripted.forward_normalized(x)  # type: ignore[no-any-return]


def checked_weights_file(wpath: Path, sha256: str | None) -> Path:
    """``wpath``, once it exists and matches the card's ``sha256`` (if given)."""
    if not wpath.is_file():
        raise ModelError(f"weights file named in {RDF_NAME} does not exist", path=wpath)
    if sha256 and sha256_of(wpath) != sha256:
        raise ModelError(
            f"weights file is corrupt: its sha256 does not match the one in {RDF_NAME}",
            path=wpath,
        )
    return wpath


def read_state_dict(wpath: Path) -> dict[str, Any]:
    """The PyTorch state dict in ``wpath`` (weights only, on the CPU)."""
    try:
        state = torch.load(wpath, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelError(
            f"cannot read weights (corrupt or not a PyTorch state dict): {e}",
            path=wpath,
        ) from e
    if not isinstance(state, dict):
        raise ModelError("weights file does not hold a state dict", path=wpath)
    return state


def _load_network(
    folder: Path, rdf: dict[str, Any], card: ModelCard, rdf_path: Path
) -> torch.nn.Module:
    weights = rdf.get("weights") or {}
    if not isinstance(weights, dict) or not (
        "pytorch_state_dict" in weights or "torchscript" in weights
    ):
        raise ModelError(
            "'weights' must name 'pytorch_state_dict' or 'torchscript' weights",
            path=rdf_path,
        )
    fmt = "pytorch_state_dict" if "pytorch_state_dict" in weights else "torchscript"
    entry = weights[fmt] or {}
    source = entry.get("source")
    if not source:
        raise ModelError(f"weights.{fmt}.source is missing", path=rdf_path)
    wpath = checked_weights_file(folder / str(source), entry.get("sha256"))
    if fmt == "torchscript":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                scripted = torch.jit.load(str(wpath), map_location="cpu")
        except Exception as e:
            raise ModelError(f"cannot load TorchScript weights: {e}", path=wpath) from e
        if card.kind == "denoise" and hasattr(scripted, "forward_normalized"):
            return _NormalizedForward(scripted)
        return scripted
    state = read_state_dict(wpath)
    net = UNet(card.unet)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:600]
        raise ModelError(
            f"weights do not match the architecture in {RDF_NAME} "
            f"(config.smartscope.unet = {card.unet.model_dump()}): {detail}",
            path=wpath,
        ) from e
    return net


def _read_int8(folder: Path, card: ModelCard, options: dict[str, Any]) -> bytes | None:
    """The card's int8 ONNX weights (checked against their sha256), when the
    requested precision may use them."""
    if card.int8 is None or options.get("precision") not in ("auto", "int8"):
        return None
    if options.get("precision") == "auto" and (
        resolve_device(str(options.get("device", "auto"))).type != "cpu"
        or not onnxruntime_available()
    ):
        return None
    return checked_weights_file(
        folder / card.int8.source, card.int8.sha256
    ).read_bytes()


def _read_folder(
    folder: Path, card_file: str | None, *, source: Path, **options: Any
) -> Model | ImportedModel | MitosisClassifier:
    """Load the model in ``folder`` (its card ``card_file``, or found there):
    by its ``config.smartscope`` section, or else as a foreign bioimage.io
    package, as its card describes it."""
    if card_file is None:
        card_file = card_name({p.name for p in folder.iterdir() if p.is_file()})
        if card_file is None:
            raise ModelError(f"model folder has no {RDF_NAME}", path=folder)
    rdf_path = folder / card_file
    if not rdf_path.is_file():
        raise ModelError(f"model folder has no {card_file}", path=folder)
    rdf = read_card(rdf_path)
    config = rdf.get("config")
    if isinstance(config, dict) and "smartscope" in config:
        section = config["smartscope"]
        if isinstance(section, dict) and section.get("kind") == "event":
            # the mitosis classifier: crops in, a probability out (no U-Net)
            from smartscope.nn.mitosis_model import load_classifier_folder

            return load_classifier_folder(
                folder, rdf, rdf_path, source=source, device=options["device"]
            )
        rdf, card = read_rdf(rdf_path)
        net = _load_network(folder, rdf, card, rdf_path)
        name = str(rdf.get("name") or source.stem)
        int8 = _read_int8(folder, card, options)
        return build_model(
            net, card, name=name, path=source, rdf=rdf, int8_onnx=int8, **options
        )
    from smartscope.nn.description import describe_model
    from smartscope.nn.imported import build_imported, load_network

    try:
        description = describe_model(rdf, rdf_path)
    except ModelError as e:
        raise ModelError(
            "no 'config.smartscope' section (not a smartscope model card), and not "
            f"a bioimage.io model smartscope can run: {e.message}",
            path=rdf_path,
        ) from e
    return build_imported(
        load_network(folder, description, rdf_path),
        description,
        name=description.name,
        path=source,
        rdf=rdf,
        **options,
    )


def load_model(
    name_or_path: str | Path,
    *,
    device: Device | str = "auto",
    precision: Precision = "auto",
    tile_px: int | None = None,
    warm_up: bool = False,
) -> Model | ImportedModel | MitosisClassifier:
    """Load a model by shipped name (``"nuclei-seg"``, ``"denoise-care"``,
    ``"denoise-n2v"``) or by path (model folder, its ``rdf.yaml``, or a
    bioimage.io ``.zip`` package).

    A card with a ``config.smartscope`` section gives a :class:`Model` (or,
    for ``kind: event``, a
    :class:`~smartscope.nn.mitosis_model.MitosisClassifier`); any
    other bioimage.io model (format 0.5, 2D, one input and one output,
    torchscript or pytorch_state_dict weights) gives an
    :class:`~smartscope.nn.imported.ImportedModel` run as its card says (see
    :mod:`smartscope.nn.imported`).

    Parameters
    ----------
    device : "auto" (CUDA if available), "cpu" or "cuda"
    precision : "auto", "float32", "bfloat16" or "int8". "auto": bfloat16
        autocast on CUDA; on the CPU the card's int8 ONNX weights in ONNX
        Runtime when the card has them and onnxruntime is installed
        (:mod:`smartscope.nn.quantize`), else float32
    tile_px : frames larger than this are predicted in overlapping tiles
        (default 1024; 2048 for an int8 network, which runs a 2048² frame
        faster in one piece)
    warm_up : run the network once on a blank frame before returning

    Raises
    ------
    ModelError
        naming the file, for a missing, malformed, corrupt or mismatched model.
    """
    path = resolve_model_path(name_or_path)
    options: dict[str, Any] = {
        "device": device,
        "precision": precision,
        "tile_px": tile_px,
        "warm_up": warm_up,
    }
    if path.is_file() and path.suffix == ".zip":
        # the weights are read into memory, so the extracted copy can go
        with tempfile.TemporaryDirectory(prefix="smartscope-model-") as tmp:
            card_file = _unpack(path, Path(tmp))
            try:
                model = _read_folder(Path(tmp), card_file, source=path, **options)
            except ModelError as e:
                # name the member inside the package, not the temporary copy
                if e.path is None or not e.path.is_relative_to(tmp):
                    raise
                member = e.path.relative_to(tmp)
                where = f"{path}/{member}" if str(member) != "." else path
                raise ModelError(e.message, path=where) from e
        return model
    if path.is_file():
        card_file = path.name if card_name([path.name]) else None
        return _read_folder(path.parent, card_file, source=path.parent, **options)
    return _read_folder(path, None, source=path, **options)


def save_model(
    network: UNet,
    card: ModelCard,
    folder: str | Path,
    *,
    name: str,
    description: str,
) -> Path:
    """Write a bioimage.io model folder: ``weights.pt`` (state dict),
    ``rdf.yaml``, ``README.md``, test input/output and cover
    (:func:`smartscope.nn.export.write_package_files`). A card's int8 entry
    is dropped: its copy was made from other weights (``smartscope train
    quantize`` makes one for these)."""
    from smartscope.nn.export import write_package_files

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
    torch.save(state, folder / WEIGHTS_NAME)
    if card.int8 is not None:
        card = card.model_copy(update={"int8": None})
    return write_package_files(folder, card, name=name, description=description)
