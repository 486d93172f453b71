"""What of the raw frames is really on disk, and making the array say so.

pymmcore-plus's OME-Zarr sink (ome-writers) grows the raw ``(frame, y, x)``
array *before* it writes a frame's chunk, and zarr writes each chunk
atomically (a temporary ``*.partial`` file renamed into place). A run cut
short between the two (a full disk, a killed process) leaves an array one
frame longer than the frames written; that frame would read as zeros. Here the
chunks present are counted and the array is cut back to them, so the array's
length is the number of frames acquired.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RawArrayReport", "fit_raw_frames", "frames_on_disk", "raw_arrays"]


@dataclass(frozen=True)
class RawArrayReport:
    """One raw array before and after :func:`fit_raw_frames`."""

    path: Path
    shape_before: int
    frames_on_disk: int
    shape_after: int
    partial_files_removed: int

    @property
    def changed(self) -> bool:
        return self.shape_before != self.shape_after or bool(self.partial_files_removed)


def raw_arrays(zarr_root: Path) -> list[Path]:
    """The raw image arrays of a run's ``data.ome.zarr`` (top-level arrays; the
    derived ``labels/`` and ``denoised/`` images are not raw)."""
    if not zarr_root.is_dir():
        return []
    out = []
    for child in sorted(zarr_root.iterdir()):
        meta = child / "zarr.json"
        if not meta.is_file():
            continue
        try:
            node = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        if node.get("node_type") == "array":
            out.append(child)
    return out


def _chunk_frames(array: Path) -> tuple[int, int]:
    """(frames along axis 0 up to the last one whose chunks all exist; chunk
    length along axis 0). A frame whose chunk folder was made but whose chunk
    file never landed does not count; a gap before the last written frame is
    kept (cutting there would delete written frames)."""
    meta = json.loads((array / "zarr.json").read_text())
    chunks = [int(c) for c in meta["chunk_grid"]["configuration"]["chunk_shape"]]
    shape = [int(n) for n in meta["shape"]]
    sep = (
        meta.get("chunk_key_encoding", {})
        .get("configuration", {})
        .get("separator", "/")
    )
    per_frame = math.prod(
        -(-n // c) for n, c in zip(shape[1:], chunks[1:], strict=True)
    )
    found: Counter[int] = Counter()
    if sep == "/":
        root = array / "c"
        files = root.rglob("*") if root.is_dir() else iter(())
        for f in files:
            parts = f.relative_to(root).parts
            if f.is_file() and not f.name.endswith(".partial") and parts[0].isdigit():
                found[int(parts[0])] += 1
    else:  # "c.0.0.0" keys
        for f in array.glob(f"c{sep}*"):
            key = f.name.split(sep)
            if f.is_file() and not f.name.endswith(".partial") and key[1].isdigit():
                found[int(key[1])] += 1
    complete = [i for i, n in found.items() if n >= per_frame]
    end = max(complete) + 1 if complete else 0  # after the last written frame
    return min(end * chunks[0], shape[0]), chunks[0]


def frames_on_disk(array: Path) -> int:
    """Frames of ``array`` (a zarr v3 array folder) up to the last one whose
    chunks were written."""
    return _chunk_frames(array)[0]


def fit_raw_frames(zarr_root: Path) -> list[RawArrayReport]:
    """Remove half-written chunk files and cut each raw array back to its last
    written frame (never cuts a written frame)."""
    import zarr

    reports = []
    for array in raw_arrays(zarr_root):
        partial = [p for p in array.rglob("*.partial") if p.is_file()]
        for p in partial:
            p.unlink(missing_ok=True)
        meta = json.loads((array / "zarr.json").read_text())
        before = int(meta["shape"][0])
        on_disk, _ = _chunk_frames(array)
        after = before
        if on_disk < before:
            arr = zarr.open_array(str(array), mode="r+")
            arr.resize((on_disk, *arr.shape[1:]))
            after = on_disk
        reports.append(
            RawArrayReport(
                path=array,
                shape_before=before,
                frames_on_disk=on_disk,
                shape_after=after,
                partial_files_removed=len(partial),
            )
        )
    return reports
