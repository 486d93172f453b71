"""The report's only reader of a run's images (``data.ome.zarr``).

Everything :mod:`smartscope.report` shows of the pixels comes through the two
functions here, so that a change of the image layout touches this module
alone. Two layouts are read:

- one NGFF image per position, axes ``t, c, z, y, x``, listed in
  ``data.ome.zarr/OME`` (``events.jsonl`` schema 3, each frame record says
  where its frame is): read with :mod:`smartscope.io.read_images`;
- before that (schema 2): the raw frames as one ``(frame, y, x)`` array at
  ``data.ome.zarr/0``, labels at ``labels/nuclei/0`` and denoised images at
  ``denoised/0`` on the same frame axis (a frame never analysed reads as
  zeros).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["field_of_view_um", "frame_images"]

_ZARR = "data.ome.zarr"
_RAW = "0"
_LABELS = "labels/nuclei/0"
_DENOISED = "denoised/0"


def frame_images(
    run_dir: str | Path, frame_index: int
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """One frame of a run: ``(raw, denoised, labels)``.

    ``frame_index`` is the ``index`` of the frame's record in ``events.jsonl``.
    Returns ``raw : (Y, X)`` in the camera's dtype (uint16), ``denoised :
    (Y, X) float32`` or None where the run saved no denoised images (or not
    this frame), ``labels : (Y, X) int32`` (0 is background) or None likewise.
    Raises ``FileNotFoundError`` when the run has no raw frames and
    ``IndexError`` when ``frame_index`` is not on disk.
    """
    root = Path(run_dir) / _ZARR
    if (root / "OME").is_dir():
        return _ngff_frame(run_dir, frame_index)
    raw_array = _open(root / _RAW)
    if raw_array is None:
        raise FileNotFoundError(f"{root / _RAW}: no raw frames")
    if not 0 <= frame_index < raw_array.shape[0]:
        raise IndexError(
            f"frame {frame_index} is not in {root / _RAW} "
            f"({raw_array.shape[0]} frames on disk)"
        )
    raw = np.asarray(raw_array[frame_index])
    return (
        raw,
        _derived(root / _DENOISED, frame_index),
        _derived(root / _LABELS, frame_index),
    )


def field_of_view_um(run_dir: str | Path) -> tuple[float, float] | None:
    """The raw frames' field of view, ``(height_um, width_um)``: the image size
    times the pixel size of the image's NGFF metadata; None when either is
    missing."""
    root = Path(run_dir) / _ZARR
    if (root / "OME").is_dir():
        from smartscope.io.read_images import list_images

        raw = [i for i in list_images(run_dir) if i.kind != "denoised"]
        if not raw:
            return None
        (h, w), (sy, sx) = raw[0].shape[-2:], raw[0].scale[-2:]
        return float(h) * float(sy), float(w) * float(sx)
    try:
        shape = json.loads((root / _RAW / "zarr.json").read_text())["shape"]
        ms = json.loads((root / "zarr.json").read_text())["attributes"]["ome"]
        datasets = ms["multiscales"][0]["datasets"]
        scale = next(
            t["scale"]
            for d in datasets
            if d["path"] == _RAW
            for t in d["coordinateTransformations"]
            if t["type"] == "scale"
        )
        return float(shape[-2]) * float(scale[-2]), float(shape[-1]) * float(scale[-1])
    except (OSError, ValueError, KeyError, IndexError, TypeError, StopIteration):
        return None


def _ngff_frame(
    run_dir: str | Path, frame_index: int
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    from smartscope.io.read_images import read_derived, read_frame

    try:
        raw = read_frame(run_dir, frame_index)
    except KeyError:
        raise IndexError(f"frame {frame_index} is not in {run_dir}") from None
    found = []
    for kind in ("denoised", "labels"):
        image = read_derived(run_dir, frame_index, kind)
        found.append(image if image is not None and image.any() else None)
    return raw, found[0], found[1]


def _open(path: Path) -> Any:
    """The zarr array at ``path``, or None where there is none."""
    if not (path / "zarr.json").is_file():
        return None
    import zarr

    return zarr.open_array(str(path), mode="r")


def _derived(path: Path, frame_index: int) -> np.ndarray | None:
    """Frame ``frame_index`` of a derived array; None where it is absent or
    the frame was never written (all zeros)."""
    array = _open(path)
    if array is None or frame_index >= array.shape[0]:
        return None
    image = np.asarray(array[frame_index])
    return image if image.any() else None
