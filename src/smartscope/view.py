"""Looking at a run in napari, finished or while it runs: what ``smartscope
view RUN_DIR`` and ``smartscope run --view`` open.

The images come from the run's ``data.ome.zarr`` through napari-ome-zarr (the
field's reader, so what is shown is what any napari user sees): one layer
per position, denoised image and channel, with axes t, z, y, x in seconds and
µm, and each position's label image. On top, from the run's records:

- ``<position> tracks``: the tracked objects of ``measurements.csv`` as a
  napari Tracks layer (track ids shown), placed in the image of the frame
  each was measured in (a stage that follows a cell moves the image, not the
  track);
- ``actions``: where the controller moved the stage (MoveStage targets) and
  what it did otherwise, as points with text, at the time point of the frame
  that caused it.

The view reads the run folder, never the running controller: ``--follow``
polls it (what is on disk is what is shown), so a viewer that is closed,
slow or crashes cannot disturb the run. :class:`RunViewer` works on napari's
``ViewerModel`` (no window), which is what the tests drive.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smartscope.errors import SmartscopeError

__all__ = ["RunViewer", "ViewError", "open_viewer"]


class ViewError(SmartscopeError):
    """A folder that cannot be viewed (not a run folder, napari missing)."""


@dataclass(frozen=True)
class _Frame:
    series: str
    t: int
    z: int
    x_um: float
    y_um: float
    position: str


class RunViewer:
    """The layers of one run folder in a napari viewer (``napari.Viewer`` or
    ``napari.components.ViewerModel``); :meth:`refresh` brings them up to
    date with the folder."""

    def __init__(self, run_dir: str | Path, viewer: Any) -> None:
        self.run_dir = Path(run_dir)
        self.viewer = viewer
        self._seen: tuple[Any, ...] | None = None
        if not (self.run_dir / "events.jsonl").is_file():
            raise ViewError(f"{self.run_dir} is not a run folder (no events.jsonl)")

    # ------------------------------------------------------------ state

    def _state(self) -> tuple[Any, ...]:
        """What the view shows depends on: the images' shapes and the log's size."""
        from smartscope.io.read_images import list_images

        shapes = tuple((i.series, i.shape) for i in list_images(self.run_dir))
        log = self.run_dir / "events.jsonl"
        return shapes, log.stat().st_size if log.is_file() else 0

    def refresh(self) -> bool:
        """Reload the layers if the folder changed since the last load; whether
        it did."""
        state = self._state()
        if state == self._seen or not state[0]:
            return False
        self._load()
        self._seen = state
        return True

    # ------------------------------------------------------------ layers

    def _load(self) -> None:
        from napari.plugins import _initialize_plugins

        _initialize_plugins()
        v = self.viewer
        step = tuple(v.dims.current_step) if len(v.layers) else None
        # a view at the newest time point follows the run; one looking back stays
        at_end = step is None or step[0] >= v.dims.nsteps[0] - 1
        v.layers.clear()
        v.open(str(self.run_dir / "data.ome.zarr"), plugin="napari-ome-zarr")
        frames, px = self._frames()
        self._cut_to_frames(1 + max((f.t for f in frames.values()), default=-1))
        self._split_labels()
        for name, data, scale in self._tracks(frames, px):
            v.add_tracks(data, name=name, scale=scale, tail_length=30)
        points = self._actions(frames, px)
        if points is not None:
            data, text, scale = points
            v.add_points(
                data,
                name="actions",
                scale=scale,
                size=12,
                face_color="transparent",
                border_color="yellow",
                text={"string": text, "color": "yellow", "size": 9},
            )
        v.title = f"smartscope: {self.run_dir.name}"
        if step is not None and len(step) == len(v.dims.current_step):
            v.dims.current_step = step
        if at_end:
            v.dims.set_current_step(0, max(0, v.dims.nsteps[0] - 1))

    def _cut_to_frames(self, t_end: int) -> None:
        """Cut the layers' time axis after the last time point that holds a
        logged frame: while a run goes, its writer makes room ahead along t
        (smartscope.io.images), which would show as blank time points."""
        if t_end <= 0:
            return
        for layer in self.viewer.layers:
            if type(layer).__name__ not in ("Image", "Labels"):
                continue
            levels = layer.data if layer.multiscale else [layer.data]
            if levels[0].shape[0] <= t_end:
                continue
            cut = [level[:t_end] for level in levels]
            layer.data = cut if layer.multiscale else cut[0]

    def _split_labels(self) -> None:
        """One label layer per channel, with axes t, z, y, x like the image
        layers (napari-ome-zarr splits the images by channel but keeps a
        label image's c axis, and napari aligns layers by their last axes)."""
        from smartscope.io.read_images import list_images

        images = {i.series: i for i in list_images(self.run_dir)}
        v = self.viewer
        for layer in [la for la in v.layers if type(la).__name__ == "Labels"]:
            if tuple(layer.axis_labels[:3]) != ("t", "c", "z"):
                continue
            series = str(layer.name).split("/")[1] if "/" in layer.name else ""
            info = images.get(series)
            channels = info.channels if info is not None else ()
            levels = layer.data if layer.multiscale else [layer.data]
            scale = (layer.scale[0], *layer.scale[2:])
            index = v.layers.index(layer)
            v.layers.remove(layer)
            for c in range(levels[0].shape[1]):
                name = channels[c] if c < len(channels) else f"channel {c}"
                per_c = [level[:, c] for level in levels]
                new = v.add_labels(
                    per_c if layer.multiscale else per_c[0],
                    name=f"{info.name if info else series} labels: {name}",
                    scale=scale,
                    axis_labels=("t", "z", "y", "x"),
                    units=(layer.units[0], *layer.units[2:]),
                )
                v.layers.move(v.layers.index(new), index + c)

    def _frames(self) -> tuple[dict[int, _Frame], dict[str, tuple[float, ...]]]:
        """Frame records by index, and each raw image's (shape, scale)."""
        from smartscope.io.read_images import list_images

        images = {i.series: i for i in list_images(self.run_dir)}
        frames: dict[int, _Frame] = {}
        with (self.run_dir / "events.jsonl").open("rb") as fh:
            for line in fh:
                if b'"frame"' not in line:
                    continue
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                where = r.get("image") if r.get("kind") == "frame" else None
                if where and str(where["series"]) in images:
                    frames[int(r["index"])] = _Frame(
                        str(where["series"]),
                        int(where["t"]),
                        int(where["z"]),
                        float(r["x_um"]),
                        float(r["y_um"]),
                        str(r["position"]),
                    )
        geometry = {
            s: (*i.shape[3:], *i.scale) for s, i in images.items() if i.kind == "raw"
        }
        return frames, geometry

    @staticmethod
    def _to_image(
        f: _Frame, geometry: tuple[float, ...], x_um: float, y_um: float
    ) -> tuple[float, float]:
        """Stage µm -> (row, col) in the image of frame ``f`` (the image centre
        is at the frame's stage position; smartscope's pixel convention)."""
        h, w, *_, px = geometry
        row = (y_um - f.y_um) / px + h / 2 - 0.5
        col = (x_um - f.x_um) / px + w / 2 - 0.5
        return row, col

    def _tracks(
        self, frames: dict[int, _Frame], geometry: dict[str, tuple[float, ...]]
    ) -> list[tuple[str, np.ndarray, tuple[float, ...]]]:
        path = self.run_dir / "measurements.csv"
        if not path.is_file():
            return []
        rows: dict[str, list[list[float]]] = {}
        with path.open(newline="") as fh:
            for r in csv.DictReader(fh):
                try:
                    f = frames[int(r["frame"])]
                    track = int(r["track_id"])
                    x, y = float(r["x_um"]), float(r["y_um"])
                except (KeyError, ValueError):
                    continue  # a frame of another image kind, or a cut row
                if track < 0 or f.series not in geometry:
                    continue
                row, col = self._to_image(f, geometry[f.series], x, y)
                rows.setdefault(f.series, []).append([track, f.t, f.z, row, col])
        out = []
        for series, data in sorted(rows.items()):
            arr = np.asarray(data, dtype=float)
            # one point per track and time point (the first channel's)
            _, keep = np.unique(arr[:, :2], axis=0, return_index=True)
            arr = arr[np.sort(keep)]
            arr = arr[np.lexsort((arr[:, 1], arr[:, 0]))]
            name = next(f.position for f in frames.values() if f.series == series)
            out.append((f"{name} tracks", arr, _scale(geometry[series])))
        return out

    def _actions(
        self, frames: dict[int, _Frame], geometry: dict[str, tuple[float, ...]]
    ) -> tuple[np.ndarray, list[str], tuple[float, ...]] | None:
        points: list[list[float]] = []
        text: list[str] = []
        scale: tuple[float, ...] | None = None
        per_frame: dict[int, int] = {}
        with (self.run_dir / "events.jsonl").open("rb") as fh:
            for line in fh:
                if b'"action"' not in line:
                    continue
                try:
                    a = json.loads(line)
                except ValueError:
                    continue
                if a.get("kind") != "action" or a.get("status") not in (
                    "applied",
                    "clamped",
                ):
                    continue
                f = frames.get(a.get("frame_index", -1))
                if f is None or f.series not in geometry:
                    continue
                kind, after = str(a.get("type", "action")), a.get("after")
                if kind == "MoveStage" and isinstance(after, list) and len(after) >= 2:
                    row, col = self._to_image(
                        f, geometry[f.series], float(after[0]), float(after[1])
                    )
                    label = kind
                else:  # the frame's top-left corner, one line per action
                    at = per_frame.get(a["frame_index"], 0)
                    per_frame[a["frame_index"]] = at + 1
                    row, col = 10.0 + 14.0 * at, 10.0
                    value = f" {after:.4g}" if isinstance(after, (int, float)) else ""
                    label = kind + value
                points.append([f.t, f.z, row, col])
                text.append(label)
                scale = scale or _scale(geometry[f.series])
        if not points or scale is None:
            return None
        return np.asarray(points, dtype=float), text, scale


def _scale(geometry: tuple[float, ...]) -> tuple[float, ...]:
    """(t, z, y, x) scale of a raw image from its (h, w, t, c, z, y, x) geometry."""
    _, _, st, _, sz, sy, sx = geometry
    return (st, sz, sy, sx)


def open_viewer(
    run_dir: str | Path, *, follow: bool = False, poll_s: float = 1.0
) -> None:
    """Open napari on ``run_dir``; with ``follow``, keep it up to date while
    the run writes (waits for the first frame). Returns when the window is
    closed."""
    try:
        import napari
        from qtpy.QtCore import QTimer
    except ImportError as e:
        raise ViewError(
            f"the view needs napari and napari-ome-zarr ({e.name} is missing): "
            'pip install "smartscope[view]"'
        ) from e
    run_dir = Path(run_dir)
    if follow:  # `smartscope run --view` starts the view as the run starts
        waited = 0.0
        while not (run_dir / "events.jsonl").is_file() and waited < 120:
            time.sleep(poll_s)
            waited += poll_s
    viewer = napari.Viewer(title=f"smartscope: {run_dir.name}")
    view = RunViewer(run_dir, viewer)
    view.refresh()
    if follow:
        timer = QTimer()
        timer.timeout.connect(view.refresh)
        timer.start(int(poll_s * 1000))
        viewer.window._smartscope_timer = timer  # kept alive with the window
    napari.run()
