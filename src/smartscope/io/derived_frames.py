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
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DerivedArrayReport",
    "array_shape",
    "derived_arrays",
    "fit_derived_frames",
    "mend_derived_groups",
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


def _node(path: Path) -> dict[str, Any] | None:
    """``path``'s zarr.json, or None where it is missing or unreadable."""
    try:
        node = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    return node if isinstance(node, dict) else None


def _is_array(path: Path) -> bool:
    node = _node(path)
    return node is not None and node.get("node_type") == "array"


def _is_image(group: Path) -> bool:
    """A whole derived image: a group with NGFF multiscales and its array."""
    node = _node(group)
    if node is None or node.get("node_type") != "group":
        return False
    ome = node.get("attributes", {}).get("ome", {})
    return "multiscales" in ome and _is_array(group / "0")


def mend_derived_groups(zarr_root: Path) -> list[str]:
    """Finish what a kill while a derived image was being created left: a
    label or denoised image without its metadata or its array is removed (it
    cannot hold a frame yet: frames are written only once it is whole), the
    ``labels`` group lists the label images there are, and stray ``*.partial``
    metadata files go. Returns what was done, one sentence each."""
    import zarr

    done: list[str] = []
    if not zarr_root.is_dir():
        return done
    labels = zarr_root / "labels"
    images = [
        p
        for p in sorted(zarr_root.iterdir())
        if p.is_dir() and p != labels and not _is_array(p)
    ]
    if labels.is_dir():
        images += [p for p in sorted(labels.iterdir()) if p.is_dir()]
    for image in images:
        if not _is_image(image):
            shutil.rmtree(image)
            rel = image.relative_to(zarr_root).as_posix()
            done.append(
                f"{rel}: was being created when the run was killed (no frames); removed"
            )
    if labels.is_dir():
        names = sorted(p.name for p in labels.iterdir() if p.is_dir())
        node = _node(labels)
        listed = (node or {}).get("attributes", {}).get("ome", {}).get("labels")
        if not names:
            shutil.rmtree(labels)
            done.append("labels: no label image left; removed")
        elif node is None or sorted(listed or []) != names:
            for p in labels.glob("*.partial"):
                p.unlink()
            group = zarr.open_group(str(labels), mode="a")
            group.attrs["ome"] = {"version": "0.5", "labels": names}
            done.append(f"labels: metadata rewritten to list {', '.join(names)}")
    stray = [p for p in zarr_root.rglob("*.partial") if p.is_file()]
    for p in stray:
        p.unlink()
        done.append(
            f"{p.relative_to(zarr_root).as_posix()}: a half-written metadata file removed"
        )
    return done


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
