"""The mitosis classifier: a small CNN on nucleus crops, its card and its files.

Sits after segmentation and measurement: a frame's image, its instance labels
and its measured objects in, one mitosis probability per object out
(:class:`MitosisClassifier`, used by
:class:`smartscope.analysis.mitosis.MitosisDetector` with ``method: model``).

Each object becomes a four-channel crop (:func:`frame_inputs`): a window of
``crop_um`` around its centroid, resampled to ``crop_px`` pixels a side so the
network sees the same physical scale at any objective. Channel ``signal`` is
the raw frame minus its background divided by the frame's median nucleus
signal; ``mask`` is 1 on the object's own pixels (which nucleus of the window
is meant, its size and shape; -1 outside the frame); ``track`` is the frame minus background divided
by the reference signal of the object's track (:class:`TrackReferences`: a
running mean over the track's frames not called mitotic), so a nucleus reads
about 1 against its own past and about 2 when its chromatin condenses, however
bright it is among its neighbours; ``area`` is a constant plane, the object's
area over its track's reference area (a pyknotic dead nucleus shrinks to a
third). All objects of a frame go through the network in one batch.

A model folder (``models/mitosis-clf``) is a bioimage.io model description
(``rdf.yaml``, format 0.5: crops in, one probability out) with smartscope's
card under ``config.smartscope`` (``kind: event``, :class:`ClassifierCard`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from smartscope.nn.card import (
    FORMAT_VERSION,
    RDF_NAME,
    WEIGHTS_NAME,
    bioimageio_name,
    sha256_of,
    training_data_entry,
)
from smartscope.nn.errors import ModelError

__all__ = [
    "ClassifierCard",
    "CropSettings",
    "FrameObjects",
    "MitosisClassifier",
    "MitosisNet",
    "TrackReferences",
    "edge_objects",
    "frame_inputs",
    "load_classifier",
    "object_crops",
    "save_classifier",
]

CHANNELS = ("signal", "mask", "track", "area")
TEST_INPUT_NAME = "test_input.npy"
TEST_OUTPUT_NAME = "test_output.npy"
COVER_NAME = "cover.png"


class MitosisNet(nn.Module):
    """Crops ``(B, 4, S, S)`` float32 → mitosis logits ``(B, 1)`` float32.

    Three 3x3 conv blocks (BatchNorm, ReLU), two 2x max-pools, then global
    average and max pooling and a linear layer: about 25k parameters.
    """

    def __init__(self, in_channels: int = 4, width: int = 16) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]

        w = width
        self.features = nn.Sequential(
            *block(in_channels, w),
            *block(w, w),
            nn.MaxPool2d(2),
            *block(w, 2 * w),
            nn.MaxPool2d(2),
            *block(2 * w, 2 * w),
        )
        self.head = nn.Linear(4 * w, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        pooled = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)
        return self.head(pooled)


class CropSettings(BaseModel):
    """How an object becomes the network's input (see :func:`object_crops`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    crop_px: int = Field(32, ge=8, le=128, description="crop side, pixels")
    crop_um: float = Field(
        24.0, gt=0, description="side of the window around the centroid, µm"
    )
    min_area_um2: float = Field(
        20.0,
        ge=0,
        description="objects smaller than this are not classified (and not "
        "counted in the frame's median signal), µm²",
    )


class ClassifierCard(BaseModel):
    """smartscope's part of a classifier's ``rdf.yaml`` (``config.smartscope``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    kind: Literal["event"] = "event"
    method: Literal["mitosis-crop-cnn"] = "mitosis-crop-cnn"
    width: int = Field(16, ge=4, le=128, description="channels of the first block")
    crop: CropSettings = CropSettings()
    threshold: float = Field(
        0.5, gt=0, lt=1, description="an object is mitotic above this probability"
    )
    training: dict[str, Any] = Field(default_factory=dict)
    validation: dict[str, Any] = Field(default_factory=dict)


def frame_reference(
    signal: np.ndarray, area_um2: np.ndarray, *, min_area_um2: float
) -> tuple[float, float]:
    """The frame's median nucleus: ``(signal, ADU above background; area, µm²)``,
    medians over the objects of at least ``min_area_um2``; ``(1, 1)`` when
    there are none (and a signal of at least 1)."""
    keep = area_um2 >= min_area_um2
    if not keep.any():
        return 1.0, 1.0
    return max(1.0, float(np.median(signal[keep]))), float(np.median(area_um2[keep]))


class TrackReferences:
    """Each track's reference nucleus: running means (weight ``weight`` for
    the newest frame) of its signal over its first sighting and the frames in
    which it was not called mitotic, and of its area over those of them in
    which it did not touch the frame's edge (a nucleus cut by the edge is
    smaller than it is; its mean intensity is about right). One per stage
    position (track ids are per position).

    A track not seen before (or seen only cut by the edge, for the area) is
    compared with the frame's median nucleus instead.
    """

    def __init__(self, weight: float = 0.3) -> None:
        self.weight = weight
        #: track id -> reference signal, ADU above background
        self._signal: dict[int, float] = {}
        #: track id -> reference area, µm²
        self._area: dict[int, float] = {}

    def reset(self) -> None:
        self._signal.clear()
        self._area.clear()

    def get(
        self, track_ids: np.ndarray, *, default: tuple[float, float]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(N,) reference signal and (N,) reference area of each track
        (``default``, the frame's median nucleus, where it has none)."""
        ids = [int(t) for t in track_ids]
        sig = np.array([self._signal.get(t, default[0]) for t in ids], np.float64)
        area = np.array([self._area.get(t, default[1]) for t in ids], np.float64)
        return sig.reshape(-1), area.reshape(-1)

    def update(
        self,
        track_ids: np.ndarray,
        signal: np.ndarray,
        area_um2: np.ndarray,
        *,
        mitotic: np.ndarray,
        edge: np.ndarray,
    ) -> None:
        """Fold this frame's objects into their tracks, except those (N,) bool
        ``mitotic`` (called so, or uncertain) of tracks seen before; those on
        the frame's ``edge`` (:func:`edge_objects`) update the signal only."""
        w = self.weight
        for t, sg, a, m, e in zip(
            track_ids.tolist(),
            signal.tolist(),
            area_um2.tolist(),
            np.asarray(mitotic, bool).tolist(),
            np.asarray(edge, bool).tolist(),
            strict=True,
        ):
            # a track's first sighting becomes its reference whatever it was
            # called (as in the threshold rule): a bright interphase nucleus
            # called mitotic at its first sighting would otherwise keep the
            # frame's median as its reference, and its call, for good
            old = self._signal.get(t)
            if old is None or not m:
                self._signal[t] = sg if old is None else (1 - w) * old + w * sg
            old = self._area.get(t)
            if not e and (old is None or not m):
                self._area[t] = a if old is None else (1 - w) * old + w * a


def edge_objects(labels: np.ndarray, label_ids: np.ndarray) -> np.ndarray:
    """(N,) bool: which of the objects ``label_ids`` touch the border of
    ``labels`` (Y, X)."""
    rim = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    return np.isin(np.asarray(label_ids), rim[rim > 0])


def object_crops(
    image: np.ndarray,
    labels: np.ndarray,
    *,
    label_ids: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    background: float,
    reference: float,
    track_signal: np.ndarray,
    area_ratio: np.ndarray,
    pixel_size_um: float,
    crop: CropSettings,
) -> np.ndarray:
    """The network input of each object: ``(N, 4, S, S)`` float32.

    Parameters
    ----------
    image : (Y, X) raw frame (uint16 or float), ADU
    labels : (Y, X) int instance labels of ``image``
    label_ids, rows, cols : (N,) each object's label and centroid (pixels)
    background : the frame's background, ADU
    reference : the frame's median nucleus signal, ADU above background
        (:func:`frame_reference`)
    track_signal : (N,) each object's track reference signal, ADU above
        background (:class:`TrackReferences`)
    area_ratio : (N,) each object's area / its track's reference area
    pixel_size_um : of ``image``
    crop : window side (µm) and crop side (pixels)

    Returns
    -------
    (N, 4, S, S) float32: ``signal`` = (image - background) / reference
    (bilinear), ``mask`` = 1 on the object's own pixels, 0 elsewhere in the
    frame, -1 outside it (nearest), ``track`` =
    (image - background) / the track's reference signal, ``area`` = the area
    ratio (a constant plane, clipped to 0..4); 0 outside the frame.
    """
    from scipy.ndimage import map_coordinates

    n, s = len(label_ids), crop.crop_px
    out = np.zeros((n, len(CHANNELS), s, s), np.float32)
    if n == 0:
        return out
    step = crop.crop_um / s / pixel_size_um  # frame pixels per crop pixel
    offs = (np.arange(s, dtype=np.float32) - (s - 1) / 2) * step
    rr = np.asarray(rows, np.float32)[:, None, None] + offs[None, :, None]
    cc = np.asarray(cols, np.float32)[:, None, None] + offs[None, None, :]
    rr, cc = np.broadcast_arrays(rr, cc)
    coords = np.stack([rr.ravel(), cc.ravel()])
    x = image.astype(np.float32) - np.float32(background)
    sig = map_coordinates(x, coords, order=1, mode="constant", cval=0.0).reshape(
        n, s, s
    )
    out[:, 0] = sig / np.float32(reference)
    lab = map_coordinates(labels, coords, order=0, mode="constant", cval=-1)
    lab = lab.reshape(n, s, s)
    # outside the frame reads -1: a nucleus cut by the frame's edge is seen as cut
    out[:, 1] = np.where(
        lab == np.asarray(label_ids)[:, None, None], 1.0, np.where(lab < 0, -1.0, 0.0)
    )
    track = np.maximum(np.asarray(track_signal, np.float32), 1.0)
    out[:, 2] = sig / track[:, None, None]
    ratio = np.clip(np.asarray(area_ratio, np.float32), 0.0, 4.0)
    out[:, 3] = ratio[:, None, None]
    return out


@dataclass(frozen=True)
class FrameObjects:
    """A frame's measured objects as arrays, each (N,).

    ``label`` in the frame's labels, ``track`` id, centroid ``row``/``col``
    (pixels), ``signal`` (mean intensity minus background, ADU), ``area_um2``.
    """

    label: np.ndarray
    track: np.ndarray
    row: np.ndarray
    col: np.ndarray
    signal: np.ndarray
    area_um2: np.ndarray

    @classmethod
    def of(cls, objects: Sequence[Any], *, background: float) -> FrameObjects:
        """From :class:`~smartscope.analysis.result.ObjectMeasurement` values."""
        return cls(
            label=np.array([o.label for o in objects], np.int64),
            track=np.array([o.track_id for o in objects], np.int64),
            row=np.array([o.row for o in objects], np.float64),
            col=np.array([o.col for o in objects], np.float64),
            signal=np.array(
                [o.mean_intensity - background for o in objects], np.float64
            ),
            area_um2=np.array([o.area_um2 for o in objects], np.float64),
        )


def frame_inputs(
    image: np.ndarray,
    labels: np.ndarray,
    objects: FrameObjects,
    *,
    tracks: TrackReferences,
    background: float,
    pixel_size_um: float,
    crop: CropSettings,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The network input of a frame's objects, exactly as in training.

    Returns
    -------
    crops : (M, 4, S, S) float32, of the objects of at least
        ``crop.min_area_um2`` (:func:`object_crops`)
    keep : (N,) bool, which objects those are
    edge : (M,) bool, which of those touch the frame's edge (they must not
        update their track's reference: :meth:`TrackReferences.update`)
    """
    keep = objects.area_um2 >= crop.min_area_um2
    ref_sig, ref_area = frame_reference(
        objects.signal, objects.area_um2, min_area_um2=crop.min_area_um2
    )
    t_sig, t_area = tracks.get(objects.track[keep], default=(ref_sig, ref_area))
    crops = object_crops(
        image,
        labels,
        label_ids=objects.label[keep],
        rows=objects.row[keep],
        cols=objects.col[keep],
        background=background,
        reference=ref_sig,
        track_signal=t_sig,
        area_ratio=objects.area_um2[keep] / np.maximum(t_area, 1e-6),
        pixel_size_um=pixel_size_um,
        crop=crop,
    )
    return crops, keep, edge_objects(labels, objects.label[keep])


class MitosisClassifier:
    """A loaded mitosis classifier: :meth:`probabilities` of a frame's objects.

    Use :func:`load_classifier` (or :func:`smartscope.nn.load_model` on its
    folder) to get one.
    """

    def __init__(
        self,
        network: MitosisNet,
        card: ClassifierCard,
        *,
        name: str = "mitosis-clf",
        path: Path | None = None,
        device: str = "cpu",
    ) -> None:
        self.name = name
        self.card = card
        self.path = path
        cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        self.device = torch.device("cuda" if cuda else "cpu")
        self.network = network.to(self.device).eval()

    @property
    def kind(self) -> str:
        """ "event"."""
        return self.card.kind

    def predict_crops(self, crops: np.ndarray) -> np.ndarray:
        """``crops`` (N, 4, S, S) float32 → (N,) float32 mitosis probabilities."""
        if len(crops) == 0:
            return np.zeros(0, np.float32)
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(crops)).to(self.device)
            p = torch.sigmoid(self.network(t))[:, 0]
        return p.float().cpu().numpy()

    def probabilities(
        self,
        image: np.ndarray,
        labels: np.ndarray,
        objects: FrameObjects,
        *,
        tracks: TrackReferences,
        background: float,
        pixel_size_um: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mitosis probability of each of a frame's ``objects``.

        Returns
        -------
        p : (N,) float32 (objects below the card's ``min_area_um2``: 0)
        edge : (N,) bool, the objects that touch the frame's edge

        ``tracks`` is read, not updated: the caller folds in its calls
        (:meth:`TrackReferences.update`, with ``edge``).
        """
        crops, keep, edge_kept = frame_inputs(
            image,
            labels,
            objects,
            tracks=tracks,
            background=background,
            pixel_size_um=pixel_size_um,
            crop=self.card.crop,
        )
        p = np.zeros(len(keep), np.float32)
        p[keep] = self.predict_crops(crops)
        edge = np.zeros(len(keep), bool)
        edge[keep] = edge_kept
        return p, edge

    def __repr__(self) -> str:
        return f"MitosisClassifier(name={self.name!r}, device={self.device.type!r})"


def _card_of(rdf: dict[str, Any], rdf_path: Path) -> ClassifierCard:
    section = (rdf.get("config") or {}).get("smartscope")
    try:
        return ClassifierCard.model_validate(section)
    except ValidationError as e:
        msgs = "; ".join(
            f"config.smartscope.{'.'.join(map(str, err['loc']))}: {err['msg']}"
            for err in e.errors()
        )
        raise ModelError(f"invalid classifier card: {msgs}", path=rdf_path) from e


def load_classifier_folder(
    folder: Path, rdf: dict[str, Any], rdf_path: Path, *, source: Path, device: str
) -> MitosisClassifier:
    """Build the classifier of a model folder whose card (``rdf``, read from
    ``rdf_path``) says ``kind: event``; called by :func:`load_classifier`
    and :func:`smartscope.nn.load_model`."""
    card = _card_of(rdf, rdf_path)
    entry = (rdf.get("weights") or {}).get("pytorch_state_dict") or {}
    from smartscope.nn.model import checked_weights_file, read_state_dict

    wpath = checked_weights_file(
        folder / str(entry.get("source") or WEIGHTS_NAME), entry.get("sha256")
    )
    state = read_state_dict(wpath)
    net = MitosisNet(len(CHANNELS), card.width)
    try:
        net.load_state_dict(state, strict=True)
    except (RuntimeError, AttributeError) as e:
        detail = " ".join(str(e).split())[:400]
        raise ModelError(
            f"weights do not match config.smartscope.width = {card.width}: {detail}",
            path=wpath,
        ) from e
    name = str(rdf.get("name") or source.stem)
    return MitosisClassifier(net, card, name=name, path=source, device=device)


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, device: str) -> MitosisClassifier:
    return load_classifier(path, device=device)


def load_classifier(
    name_or_path: str | Path, *, device: str = "cpu", cached: bool = False
) -> MitosisClassifier:
    """Load a mitosis classifier by shipped name (``"mitosis-clf"``) or path.

    ``cached``: share one loaded classifier per resolved path and device (the
    detectors of a run's positions use one network; it is only read).

    Raises
    ------
    ModelError
        Naming the model or file: not found, not a classifier, corrupt.
    """
    from smartscope.nn.card import read_card
    from smartscope.nn.locate import resolve_model_path

    path = resolve_model_path(name_or_path)
    if cached:
        return _load_cached(str(path.resolve()), device)
    folder = path.parent if path.is_file() else path
    rdf_path = folder / RDF_NAME
    if not rdf_path.is_file():
        raise ModelError(f"model folder has no {RDF_NAME}", path=folder)
    rdf = read_card(rdf_path)
    section = (rdf.get("config") or {}).get("smartscope")
    kind = section.get("kind") if isinstance(section, dict) else None
    if kind != "event":
        raise ModelError(
            f"{str(name_or_path)!r} is not a mitosis classifier (its card says "
            f"kind: {kind}); shipped classifier: mitosis-clf",
            path=rdf_path,
        )
    return load_classifier_folder(folder, rdf, rdf_path, source=folder, device=device)


# ------------------------------------------------------------------ saving


def _rdf(
    card: ClassifierCard, *, name: str, description: str, sha: str
) -> dict[str, Any]:
    s = card.crop.crop_px
    inp = {
        "id": "crops",
        "description": (
            f"object crops, {card.crop.crop_um:g} µm at {s} px: signal / frame and "
            "track reference nucleus, mask, area ratio"
        ),
        "axes": [
            {"type": "batch"},
            {"type": "channel", "channel_names": list(CHANNELS)},
            {"id": "y", "type": "space", "size": s},
            {"id": "x", "type": "space", "size": s},
        ],
        "data": {"type": "float32"},
        "test_tensor": {"source": TEST_INPUT_NAME},
    }
    out = {
        "id": "probability",
        "description": "probability that the object is a mitotic nucleus",
        "axes": [{"type": "batch"}, {"type": "channel", "channel_names": ["mitosis"]}],
        "data": {"type": "float32", "range": [0.0, 1.0]},
        "postprocessing": [{"id": "sigmoid"}],
        "test_tensor": {"source": TEST_OUTPUT_NAME},
    }
    rdf: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "type": "model",
        "name": bioimageio_name(name),
        "description": description,
        "authors": [{"name": "smartscope contributors"}],
        "cite": [
            {
                "text": "Mahecic et al.: Event-driven acquisition for content-enriched "
                "microscopy. Nature Methods 19, 1262-1267 (2022).",
                "doi": "10.1038/s41592-022-01589-x",
            }
        ],
        "license": "BSD-3-Clause",
        "tags": [
            "fluorescence",
            "nuclei",
            "2d",
            "pytorch",
            "classification",
            "mitosis",
            "event-detection",
        ],
        "documentation": "README.md",
        "covers": [COVER_NAME],
        "inputs": [inp],
        "outputs": [out],
        "weights": {
            "pytorch_state_dict": {
                "source": WEIGHTS_NAME,
                "sha256": sha,
                "architecture": {
                    "callable": "MitosisNet",
                    "import_from": "smartscope.nn.mitosis_model",
                    "kwargs": {"in_channels": len(CHANNELS), "width": card.width},
                },
                "pytorch_version": str(torch.__version__).split("+")[0],
            }
        },
    }
    data = training_data_entry(name, card.training)
    if data is not None:
        rdf["training_data"] = data
    rdf["config"] = {"smartscope": card.model_dump(mode="json")}
    return rdf


def _write_cover(path: Path, crops: np.ndarray, probs: np.ndarray) -> None:
    """A 2:1 PNG of the test crops (signal channel), framed orange where the
    network calls them mitotic."""
    from PIL import Image

    n = min(8, len(crops))
    s = crops.shape[-1]
    tiles = []
    for i in range(8):
        t = np.zeros((s, s, 3), np.uint8)
        if i < n:
            g = np.clip(crops[i, 0] / 3.0 * 255, 0, 255).astype(np.uint8)
            t = np.repeat(g[..., None], 3, axis=2)
            if probs[i] > 0.5:
                t[:2], t[-2:], t[:, :2], t[:, -2:] = 255, 255, 255, 255
                t[:2, :, 1:] = t[-2:, :, 1:] = t[:, :2, 1:] = t[:, -2:, 1:] = 0
                t[:2, :, 1] = t[-2:, :, 1] = t[:, :2, 1] = t[:, -2:, 1] = 120
        tiles.append(t)
    grid = np.concatenate(
        [np.concatenate(tiles[:4], axis=1), np.concatenate(tiles[4:], axis=1)], axis=0
    )
    grid = np.kron(grid, np.ones((4, 4, 1), np.uint8))
    Image.fromarray(grid).save(path, optimize=True)


def save_classifier(
    network: MitosisNet,
    card: ClassifierCard,
    folder: str | Path,
    *,
    name: str,
    description: str,
    test_crops: np.ndarray,
) -> Path:
    """Write a classifier folder: ``weights.pt`` (state dict), ``rdf.yaml``,
    ``test_input.npy`` (``test_crops``, (N, 2, S, S) float32) and
    ``test_output.npy`` (what the network makes of them, (N, 1)), and a
    ``cover.png``. ``README.md`` is written by the trainer. Returns ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    network = network.cpu().eval()
    state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
    torch.save(state, folder / WEIGHTS_NAME)
    x = np.ascontiguousarray(test_crops, np.float32)
    with torch.inference_mode():
        y = torch.sigmoid(network(torch.from_numpy(x))).numpy().astype(np.float32)
    np.save(folder / TEST_INPUT_NAME, x)
    np.save(folder / TEST_OUTPUT_NAME, y)
    _write_cover(folder / COVER_NAME, x, y[:, 0])
    rdf = _rdf(
        card, name=name, description=description, sha=sha256_of(folder / WEIGHTS_NAME)
    )
    (folder / RDF_NAME).write_text(yaml.safe_dump(rdf, sort_keys=False, width=100))
    return folder
