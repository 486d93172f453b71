"""Reading a run's images back: by image (series) or frame by frame in the
order they were taken (each frame record in ``events.jsonl`` says where its
frame is stored; :mod:`smartscope.io.images`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smartscope.io.images import Where

__all__ = [
    "ImageInfo",
    "frame_places",
    "frame_roles",
    "frames_on_disk",
    "list_images",
    "read_derived",
    "read_frame",
    "read_frames",
]

ZARR_NAME = "data.ome.zarr"


@dataclass(frozen=True)
class ImageInfo:
    """One image of a run: its series, what it is and its (t, c, z, y, x) shape."""

    series: str
    name: str
    kind: str
    position: str
    shape: tuple[int, ...]
    #: the scale of each axis (s, 1, µm, µm, µm)
    scale: tuple[float, ...]
    channels: tuple[str, ...]
    #: the raw image a denoised one was made from
    source: str | None = None
    has_labels: bool = False


def _root(run_dir: str | Path) -> Any:
    import zarr

    return zarr.open_group(str(Path(run_dir) / ZARR_NAME), mode="r")


def list_images(run_dir: str | Path) -> list[ImageInfo]:
    """The images of the run in ``run_dir``, in series order."""
    if not (Path(run_dir) / ZARR_NAME / "OME").is_dir():
        return []
    root = _root(run_dir)
    try:
        series = root["OME"].attrs["ome"]["series"]
    except KeyError:
        return []
    out = []
    for s in series:
        group = root[s]
        attrs = group.attrs.asdict()
        ms = attrs["ome"]["multiscales"][0]
        meta = attrs.get("smartscope", {})
        channels = [
            c.get("label", "")
            for c in attrs["ome"].get("omero", {}).get("channels", [])
        ]
        out.append(
            ImageInfo(
                series=s,
                name=ms.get("name", s),
                kind=meta.get("kind", "raw"),
                position=meta.get("position", ""),
                shape=tuple(group["0"].shape),
                scale=tuple(ms["datasets"][0]["coordinateTransformations"][0]["scale"]),
                channels=tuple(channels),
                source=meta.get("source"),
                has_labels="labels" in group,
            )
        )
    return out


def frame_places(run_dir: str | Path) -> dict[int, Where]:
    """Where each frame of the run is stored, by frame index (frame records
    of ``events.jsonl``; lines that do not parse are passed over)."""
    places: dict[int, Where] = {}
    with (Path(run_dir) / "events.jsonl").open("rb") as fh:
        for line in fh:
            if b'"frame"' not in line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("kind") == "frame" and rec.get("image"):
                places[int(rec["index"])] = Where.from_dict(rec["image"])
    return places


def frames_on_disk(run_dir: str | Path) -> int:
    """Raw frames on disk (one chunk file each), whatever the log says."""
    from smartscope.io.image_repair import RAW_KINDS, planes_on_disk

    root = Path(run_dir) / ZARR_NAME
    return sum(
        len(planes_on_disk(root / i.series / "0"))
        for i in list_images(run_dir)
        if i.kind in RAW_KINDS
    )


def read_frame(run_dir: str | Path, index: int) -> np.ndarray:
    """Raw frame ``index`` (the frame record's index), as stored."""
    where = frame_places(run_dir)[index]
    return np.asarray(_root(run_dir)[where.series]["0"][where.t, where.c, where.z])


def read_frames(run_dir: str | Path, *, role: str | None = None) -> np.ndarray:
    """Every raw frame in the order taken, ``(n, y, x)`` (all frames must have
    one size). ``role``: only frames of that role ("acquisition", "autofocus")."""
    places = frame_places(run_dir)
    if role is not None:
        roles = frame_roles(run_dir)
        places = {i: w for i, w in places.items() if roles.get(i) == role}
    root = _root(run_dir)
    arrays: dict[str, Any] = {}
    frames = []
    for i in sorted(places):
        w = places[i]
        if w.series not in arrays:
            arrays[w.series] = root[w.series]["0"]
        frames.append(np.asarray(arrays[w.series][w.t, w.c, w.z]))
    if not frames:
        return np.zeros((0, 0, 0), dtype=np.uint16)
    return np.stack(frames)


def read_derived(run_dir: str | Path, index: int, kind: str) -> np.ndarray | None:
    """The ``kind`` ("labels" or "denoised") image of frame ``index``; None
    where the run stored none."""
    where = frame_places(run_dir)[index]
    root = _root(run_dir)
    if kind == "labels":
        path = f"{where.series}/labels/nuclei/0"
    else:
        found = [
            i.series
            for i in list_images(run_dir)
            if i.kind == "denoised" and i.source == where.series
        ]
        if not found:
            return None
        path = f"{found[0]}/0"
    try:
        arr = root[path]
    except KeyError:
        return None
    return np.asarray(arr[where.t, where.c, where.z])


def frame_roles(run_dir: str | Path) -> dict[int, str]:
    """Each frame record's role ("acquisition", "autofocus"), by frame index."""
    roles = {}
    with (Path(run_dir) / "events.jsonl").open("rb") as fh:
        for line in fh:
            if b'"frame"' in line:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec.get("kind") == "frame":
                    roles[int(rec["index"])] = rec.get("role", "acquisition")
    return roles
