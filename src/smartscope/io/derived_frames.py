"""The label and denoised arrays of a run's ``data.ome.zarr``, and making them
as long as the raw frames.

Derived images (:class:`~smartscope.io.image_store.DerivedImageStore`) share
the raw frames' frame axis but are written after each frame is analysed, so a
killed run leaves them shorter than the raw array (or longer, once
:func:`~smartscope.io.raw_frames.fit_raw_frames` has cut the raw array back to
its written frames), with half-written ``*.partial`` chunk files about.
:func:`fit_derived_frames` removes those and pads or cuts each derived array to
the raw frame count; a frame never analysed reads as zeros, as a frame skipped
for analysis does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DerivedArrayReport",
    "array_shape",
    "derived_arrays",
    "fit_derived_frames",
]


@dataclass(frozen=True)
class DerivedArrayReport:
    """One derived array before and after :func:`fit_derived_frames`."""

    path: Path
    #: the whole shape, ``(frame, y, x)``
    shape_before: list[int]
    shape_after: list[int]
    partial_files_removed: int


def array_shape(array: Path) -> list[int]:
    """The shape of ``array`` (a zarr v3 array folder), from its metadata."""
    return [int(n) for n in json.loads((array / "zarr.json").read_text())["shape"]]


def _is_array(path: Path) -> bool:
    try:
        node = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    return node.get("node_type") == "array"


def derived_arrays(zarr_root: Path) -> list[Path]:
    """The label and denoised arrays (``labels/<name>/0``, ``<group>/0``)."""
    out: list[Path] = []
    if not zarr_root.is_dir():
        return out
    groups = [p for p in sorted(zarr_root.iterdir()) if p.is_dir() and not _is_array(p)]
    labels = zarr_root / "labels"
    if labels.is_dir():
        groups.remove(labels)
        groups += [p for p in sorted(labels.iterdir()) if p.is_dir()]
    for group in groups:
        out += [a for a in sorted(group.iterdir()) if a.is_dir() and _is_array(a)]
    return out


def fit_derived_frames(zarr_root: Path, n_frames: int) -> list[DerivedArrayReport]:
    """Remove half-written chunks and pad (or cut) each derived array to
    ``n_frames`` frames."""
    import zarr

    reports = []
    for array in derived_arrays(zarr_root):
        partial = [p for p in array.rglob("*.partial") if p.is_file()]
        for p in partial:
            p.unlink(missing_ok=True)
        before = array_shape(array)
        after = before
        if before[0] != n_frames:
            arr = zarr.open_array(str(array), mode="r+")
            arr.resize((n_frames, *arr.shape[1:]))
            after = [n_frames, *before[1:]]
        reports.append(
            DerivedArrayReport(
                path=array,
                shape_before=before,
                shape_after=after,
                partial_files_removed=len(partial),
            )
        )
    return reports
