"""Making a killed run's ``data.ome.zarr`` whole again (what ``smartscope
recover`` does to the images; layout in :mod:`smartscope.io.ngff`).

A run killed mid-way can leave: an image array grown (along t, c or z)
before the plane that needed the room was written; half-written chunk or
metadata files (zarr writes each file atomically: a ``*.partial`` file renamed
into place); an image, a label image or a denoised image that was being
created (no metadata yet, or no array), which holds no frame yet; the list of
images (``OME/series``) or of label images missing one that was being added;
and label and denoised images behind their raw image.

:func:`repair_images` removes the half-written files and incomplete images,
cuts each raw image back to the planes written (never cutting a written
one), sizes label and denoised images as their raw image, rewrites the lists,
and counts the frames on disk: one chunk file is one frame.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smartscope.io import ngff

__all__ = [
    "ImageReport",
    "RepairReport",
    "planes_on_disk",
    "repair_images",
    "write_ome_xml",
]

#: image kinds that hold raw frames (denoised images are derived)
RAW_KINDS = ("raw", "autofocus", "extra")


@dataclass
class ImageReport:
    """One array (an image's or a label image's) before and after."""

    path: str
    kind: str
    shape_before: list[int]
    shape_after: list[int]
    frames_on_disk: int
    partial_files_removed: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "frames_on_disk": self.frames_on_disk,
            "shape_before": self.shape_before,
            "shape_after": self.shape_after,
            "partial_files_removed": self.partial_files_removed,
        }


@dataclass
class RepairReport:
    """What :func:`repair_images` found and did."""

    #: frames of the raw images on disk (one chunk file each)
    frames_on_disk: int = 0
    raw: list[ImageReport] = field(default_factory=list)
    derived: list[ImageReport] = field(default_factory=list)
    #: what else was done, one sentence each
    notes: list[str] = field(default_factory=list)


def _node(path: Path) -> dict[str, Any] | None:
    try:
        node = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    return node if isinstance(node, dict) else None


def _is_array(path: Path) -> bool:
    node = _node(path)
    return node is not None and node.get("node_type") == "array"


def _image_meta(group: Path) -> dict[str, Any] | None:
    """The attributes of a whole image (multiscales and its array), else None."""
    node = _node(group)
    if node is None or node.get("node_type") != "group":
        return None
    attrs = node.get("attributes", {})
    if "multiscales" not in attrs.get("ome", {}) or not _is_array(group / "0"):
        return None
    return attrs


def planes_on_disk(array: Path) -> set[tuple[int, int, int]]:
    """The (t, c, z) planes of a ``(t, c, z, y, x)`` array whose chunk file is
    on disk (one chunk per plane; ``*.partial`` files do not count)."""
    root = array / "c"
    found: set[tuple[int, int, int]] = set()
    if not root.is_dir():
        return found
    for f in root.rglob("*"):
        if not f.is_file() or f.name.endswith(".partial"):
            continue
        parts = f.relative_to(root).parts
        if len(parts) == 5 and all(p.isdigit() for p in parts):
            found.add((int(parts[0]), int(parts[1]), int(parts[2])))
    return found


def _remove_partial(path: Path) -> int:
    partial = [p for p in path.rglob("*.partial") if p.is_file()]
    for p in partial:
        p.unlink(missing_ok=True)
    return len(partial)


def _fit_array(
    array: Path, shape3: tuple[int, int, int] | None
) -> tuple[list[int], list[int]]:
    """Cut (or pad) ``array``'s t, c, z to ``shape3``, or, when None, to its
    last written plane on each axis. The shapes before and after."""
    import zarr

    before = [int(n) for n in json.loads((array / "zarr.json").read_text())["shape"]]
    if shape3 is None:
        planes = planes_on_disk(array)
        shape3 = tuple(  # type: ignore[assignment]
            max((p[i] for p in planes), default=-1) + 1 for i in range(3)
        )
        if not planes:
            shape3 = (0, 0, 0)
    after = [*shape3, *before[3:]]  # type: ignore[misc]
    if after != before:
        arr = zarr.open_array(str(array), mode="r+")
        arr.resize(tuple(after))
    return before, after


def repair_images(zarr_root: Path) -> RepairReport:
    """Repair ``zarr_root`` (a run's ``data.ome.zarr``) in place."""
    import zarr

    report = RepairReport()
    if not zarr_root.is_dir():
        return report
    node = _node(zarr_root)
    if node is None or "bioformats2raw.layout" not in node.get("attributes", {}).get(
        "ome", {}
    ):
        zarr.open_group(str(zarr_root), mode="a").attrs.put(ngff.root_attrs({}))
        report.notes.append("data.ome.zarr: root metadata was half-written; rewritten")
    series: list[str] = []
    raw_shapes: dict[str, tuple[int, int, int]] = {}
    denoised: list[tuple[Path, dict[str, Any]]] = []
    names = sorted(
        (p for p in zarr_root.iterdir() if p.is_dir() and p.name.isdigit()),
        key=lambda p: int(p.name),
    )
    for group in names:
        attrs = _image_meta(group)
        if attrs is None:
            shutil.rmtree(group)
            report.notes.append(
                f"{group.name}: an image being created when the run was killed "
                "(no frames); removed"
            )
            continue
        series.append(group.name)
        kind = attrs.get("smartscope", {}).get("kind", "raw")
        if kind == "denoised":
            denoised.append((group, attrs))
            continue
        array = group / "0"
        removed = _remove_partial(array)
        planes = len(planes_on_disk(array))
        before, after = _fit_array(array, None)
        raw_shapes[group.name] = tuple(after[:3])  # type: ignore[assignment]
        _fit_channels(group, attrs, after[1], report)
        report.frames_on_disk += planes
        report.raw.append(
            ImageReport(f"{group.name}/0", kind, before, after, planes, removed)
        )
        _repair_labels(group, tuple(after[:3]), report)  # type: ignore[arg-type]
    for group, attrs in denoised:
        source = str(attrs.get("smartscope", {}).get("source", ""))
        shape3 = raw_shapes.get(source, (0, 0, 0))
        array = group / "0"
        removed = _remove_partial(array)
        before, after = _fit_array(array, shape3)
        report.derived.append(
            ImageReport(f"{group.name}/0", "denoised", before, after, 0, removed)
        )
    ome = zarr_root / "OME"
    listed = (_node(ome) or {}).get("attributes", {}).get("ome", {}).get("series")
    if series and listed != series:
        if ome.is_dir():
            _remove_partial(ome)
        zarr.open_group(str(ome), mode="a").attrs.put(ngff.series_attrs(series))
        report.notes.append(f"OME/series rewritten to list the images {series}")
    elif not series and ome.is_dir():
        shutil.rmtree(ome)
    if series:
        write_ome_xml(zarr_root, series)
    for p in sorted(zarr_root.rglob("*.partial")):
        if p.is_file():
            p.unlink()
            report.notes.append(
                f"{p.relative_to(zarr_root).as_posix()}: a half-written file removed"
            )
    return report


def _fit_channels(
    group: Path, attrs: dict[str, Any], n: int, report: RepairReport
) -> None:
    """List as many channels (``omero``) as the image has after its cut."""
    import zarr

    channels = attrs.get("ome", {}).get("omero", {}).get("channels")
    if channels is None or len(channels) == n or n == 0:
        return
    channels = channels[:n]
    while len(channels) < n:
        channels.append({**channels[-1], "label": f"channel {len(channels)}"})
    attrs["ome"]["omero"]["channels"] = channels
    zarr.open_group(str(group), mode="a").attrs.put(attrs)
    report.notes.append(f"{group.name}: its channel list fitted to {n} channel(s)")


def _repair_labels(
    image: Path, shape3: tuple[int, int, int], report: RepairReport
) -> None:
    """Size the label images of ``image`` as it; remove one being created."""
    import zarr

    labels = image / "labels"
    if not labels.is_dir():
        return
    names = []
    for group in sorted(p for p in labels.iterdir() if p.is_dir()):
        rel = group.relative_to(image.parent).as_posix()
        if _image_meta(group) is None:
            shutil.rmtree(group)
            report.notes.append(
                f"{rel}: a label image being created when the run was killed "
                "(no frames); removed"
            )
            continue
        names.append(group.name)
        array = group / "0"
        removed = _remove_partial(array)
        before, after = _fit_array(array, shape3)
        report.derived.append(
            ImageReport(f"{rel}/0", "labels", before, after, 0, removed)
        )
    rel = labels.relative_to(image.parent).as_posix()
    if not names:
        shutil.rmtree(labels)
        report.notes.append(f"{rel}: no label image left; removed")
        return
    listed = (_node(labels) or {}).get("attributes", {}).get("ome", {}).get("labels")
    if sorted(listed or []) != names:
        _remove_partial(labels)
        zarr.open_group(str(labels), mode="a").attrs.put(ngff.labels_group_attrs(names))
        report.notes.append(f"{rel}: rewritten to list {', '.join(names)}")


def write_ome_xml(zarr_root: Path, series: list[str]) -> None:
    """Rewrite ``OME/METADATA.ome.xml`` from the images' own metadata (their
    sizes as they are now)."""
    import os

    images = []
    for s in series:
        attrs = (_node(zarr_root / s) or {}).get("attributes", {})
        ome = attrs.get("ome", {})
        ms = ome["multiscales"][0]
        scale = ms["datasets"][0]["coordinateTransformations"][0]["scale"]
        array = _node(zarr_root / s / "0") or {}
        images.append(
            {
                "series": s,
                "name": ms.get("name", s),
                "dtype": array.get("data_type", "uint16"),
                "shape": array.get("shape", [0, 0, 0, 1, 1]),
                "channels": [
                    c.get("label", "") for c in ome.get("omero", {}).get("channels", [])
                ],
                "pixel_um": scale[-1],
                "z_step_um": scale[2],
                "interval_s": scale[0],
            }
        )
    path = zarr_root / "OME" / "METADATA.ome.xml"
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(ngff.ome_xml(images), encoding="utf-8")
    os.replace(tmp, path)
