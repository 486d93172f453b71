"""The images of a run: ``data.ome.zarr`` as OME-NGFF 0.5, written frame by
frame (layout in :mod:`smartscope.io.ngff`).

A reactive run does not know its shape in advance: positions are added,
intervals change, autofocus sweeps come and go. So each image is a
``(t, c, z, y, x)`` zarr array that grows as frames arrive, one chunk per
plane, and a frame goes where its MDA event says (its position, grid tile,
time point, channel and z plane). Every frame is written before the runner
announces it; :meth:`RunImages.store_frame` says where it went, and the frame
record in ``events.jsonl`` keeps that (``image``: series, t, c, z), so the
frames can be read back in the order they were taken
(:mod:`smartscope.io.read_images`).

Nothing acquired is overwritten: a frame whose place is taken already (a
plan that revisits a time point), or whose size differs from its image's,
goes to an image of its own for that position (``kind: extra``).

While a run goes, each array's time axis has room made ahead of the frames
(a few metadata rewrites a run instead of one per time point); a reader
looking during the run sees those time points as zeros until they are
written (``smartscope view`` cuts them off by the frame records), and
finishing the run, or ``smartscope recover`` after a kill, cuts every array
back to the planes placed.

Label images (``<series>/labels/nuclei``) and denoised images (a series of
their own, ``kind: denoised``) have their raw image's shape and are written
at the frame's place once it is analysed; frames not analysed stay zero.
Thread-safe: raw frames come from the runner thread, derived images from
the recorder's results thread.

Every array is compressed with Blosc LZ4 + bit-shuffle (level 1): on noisy
512 × 512 uint16 frames it wrote a plane in 1.8 ms against 6.6 ms for zarr's
default Zstd and kept the files slightly smaller (204 against 228 KB a
frame), which is what kept the controller's overhead within a few percent of
a plain MDA's writer (docs/benchmarks.md).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from zarr.codecs import BloscCodec

from smartscope.io import ngff

#: the codec of every array (see the module's text)
_CODEC = BloscCodec(cname="lz4", clevel=1, shuffle="bitshuffle")

__all__ = ["TIME_AXIS_NOTE", "RunImages", "Where"]

#: what the time axis means, written into every image's metadata
TIME_AXIS_NOTE = (
    "t is the run's time point (useq index t; for autofocus images, the sweep); "
    "its scale is the planned interval. Intervals can change while a run "
    "reacts: each frame's own time is in events.jsonl (frame records: image, t_s)."
)


@dataclass(frozen=True)
class Where:
    """Where a frame is stored: an image (``series``) and its plane."""

    series: str
    t: int
    c: int
    z: int

    def as_dict(self) -> dict[str, Any]:
        return {"series": self.series, "t": self.t, "c": self.c, "z": self.z}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Where:
        return cls(str(d["series"]), int(d["t"]), int(d["c"]), int(d["z"]))


#: the time axis grows ahead of the frames by its length so far (at least
#: 16, at most 256 time points): a handful of metadata rewrites per run
#: instead of one per time point (1.3 ms each on a 512 x 512 plane here);
#: :meth:`RunImages.finish` (or ``smartscope recover``) cuts it back
T_SLACK_MIN, T_SLACK_MAX = 16, 256


@dataclass
class _Image:
    """One image group and its growing array."""

    series: str
    group: Any
    array: Any
    name: str
    meta: dict[str, Any]
    channels: list[str]
    pixel_um: float
    dtype_max: float
    #: display window (start, end) per channel, from its first plane
    windows: list[tuple[float, float]] = field(default_factory=list)
    written: set[tuple[int, int, int]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: (t, c, z) extent of the planes placed so far; the array's own time
    #: axis may be longer (room made ahead, cut back by :meth:`trim`)
    tcz: tuple[int, int, int] = (0, 0, 0)

    @property
    def yx(self) -> tuple[int, int]:
        return tuple(self.array.shape[3:])  # type: ignore[return-value]

    @property
    def shape(self) -> tuple[int, ...]:
        """(t, c, z, y, x) of the planes placed so far."""
        return (*self.tcz, *self.yx)

    def grow_to(self, t: int, c: int, z: int) -> bool:
        """Make room for plane (t, c, z); whether the image grew."""
        want = (
            max(self.tcz[0], t + 1),
            max(self.tcz[1], c + 1),
            max(self.tcz[2], z + 1),
        )
        if want == self.tcz:
            return False
        self.tcz = want
        shape = self.array.shape
        if want[0] <= shape[0] and want[1:] == tuple(shape[1:3]):
            return True
        room_t = shape[0]
        if want[0] > room_t:
            room_t = want[0] + min(max(want[0], T_SLACK_MIN), T_SLACK_MAX)
        self.array.resize((room_t, *want[1:], *shape[3:]))
        return True

    def trim(self) -> None:
        """Cut the array to the planes placed (the room made ahead goes)."""
        if tuple(self.array.shape[:3]) != self.tcz:
            self.array.resize(self.shape)


class RunImages:
    """Writes the images of one run into ``root`` (``data.ome.zarr``).

    ``interval_s`` and ``z_step_um`` are the planned time and z steps (the
    images' scales); ``run`` goes into the root's ``smartscope`` metadata.
    """

    LABEL_NAME = "nuclei"

    def __init__(
        self,
        root: str | Path,
        *,
        run: dict[str, Any],
        interval_s: float,
        z_step_um: float,
        save_labels: bool,
        save_denoised: bool,
    ) -> None:
        import zarr

        self.root = Path(root)
        self.interval_s = float(interval_s)
        self.z_step_um = float(z_step_um)
        self.save_labels = save_labels
        self.save_denoised = save_denoised
        self._zarr = zarr
        self._group = zarr.open_group(str(self.root), mode="a")
        self._group.attrs.put(
            ngff.root_attrs({"images": "one per position; see OME/series", **run})
        )
        self._lock = threading.Lock()
        self._series: list[str] = []
        self._images: dict[tuple[Any, ...], _Image] = {}
        self._by_series: dict[str, _Image] = {}
        self._labels: dict[str, _Image] = {}  # by raw series
        self._denoised: dict[str, _Image] = {}  # by raw series
        self._sweeps: dict[tuple[str, int], int] = {}  # (position, id) -> t
        self.frames_stored = 0
        #: a raw frame's write raised: an image may have room for a plane
        #: never written (the recorder then repairs the images)
        self.write_failed = False

    # ------------------------------------------------------------ raw frames

    def store_frame(
        self,
        image: np.ndarray,
        *,
        position: str,
        index: dict[str, int],
        channel: str,
        pixel_um: float,
        autofocus: dict[str, Any] | None = None,
    ) -> Where:
        """Write one raw frame (``index``: its MDA event's index) and say where
        it went. ``autofocus`` (a sweep plane: ``sweep`` id and ``plane``)
        goes to the position's autofocus image. A write that raises (a full
        disk) sets :attr:`write_failed` and raises on."""
        try:
            return self._store_frame(
                image, position, index, channel, pixel_um, autofocus
            )
        except BaseException:
            self.write_failed = True
            raise

    def _store_frame(
        self,
        image: np.ndarray,
        position: str,
        index: dict[str, int],
        channel: str,
        pixel_um: float,
        autofocus: dict[str, Any] | None,
    ) -> Where:
        grid = index.get("g")
        if autofocus is not None:
            key: tuple[Any, ...] = ("autofocus", position, image.shape)
            with self._lock:
                sweep = (position, int(autofocus["sweep"]))
                n = sum(p == position for p, _ in self._sweeps)
                t = self._sweeps.setdefault(sweep, n)
            c, z = 0, int(autofocus["plane"])
        else:
            key = ("raw", position, grid, image.shape)
            t, c, z = (int(index.get(k, 0)) for k in ("t", "c", "z"))
        img = self._image(key, image, pixel_um, position=position, grid=grid)
        with img.lock:
            taken = (t, c, z) in img.written
            if not taken:
                self._write(img, t, c, z, image, channel)
        if taken:  # never overwrite a frame: keep it apart
            img = self._image(
                ("extra", position, image.shape),
                image,
                pixel_um,
                position=position,
                grid=grid,
            )
            with img.lock:
                t, c, z = img.tcz[0], 0, 0
                self._write(img, t, c, z, image, channel)
        self.frames_stored += 1
        return Where(img.series, t, c, z)

    def _write(
        self, img: _Image, t: int, c: int, z: int, plane: np.ndarray, channel: str
    ) -> None:
        img.grow_to(t, c, z)
        # the metadata names the channels; it changes only when they do
        named = len(img.channels) <= c
        while len(img.channels) <= c:
            img.channels.append("")
        if channel and not img.channels[c]:
            img.channels[c] = channel
            named = True
        while len(img.windows) <= c:
            img.windows.append((0.0, 0.0))
        if img.windows[c][1] <= img.windows[c][0]:  # the channel's first plane
            lo, hi = np.percentile(plane, (0.1, 99.9))
            img.windows[c] = (float(lo), float(hi))
            named = True
        if named:
            self._put_image_attrs(img)
        img.array[t, c, z] = plane
        img.written.add((t, c, z))

    # ------------------------------------------------------------ derived

    def store_derived(
        self,
        where: Where,
        *,
        labels: np.ndarray | None = None,
        denoised: np.ndarray | None = None,
    ) -> None:
        """Write the label and denoised images of the frame stored at ``where``."""
        raw = self._by_series.get(where.series)
        if raw is None:
            return
        if labels is not None and self.save_labels:
            lab = self._derived(raw, "labels", labels)
            self._write_derived(lab, where, labels)
        if denoised is not None and self.save_denoised:
            den = self._derived(raw, "denoised", denoised)
            self._write_derived(den, where, denoised)

    def _write_derived(self, img: _Image, where: Where, plane: np.ndarray) -> None:
        if plane.shape != img.yx:
            return  # not this image's size (cannot happen for a whole frame)
        with img.lock:
            img.grow_to(where.t, where.c, where.z)
            img.array[where.t, where.c, where.z] = plane.astype(
                img.array.dtype, copy=False
            )

    def finish(self) -> None:
        """Make every label and denoised image as large as its raw image, and
        every array as large as its planes (no room left ahead)."""
        for series, raw in list(self._by_series.items()):
            t, c, z = raw.tcz
            for derived in (self._labels.get(series), self._denoised.get(series)):
                if derived is not None:
                    with derived.lock:
                        derived.grow_to(t - 1, c - 1, z - 1)
            den = self._denoised.get(series)
            if den is not None and (den.channels, den.windows) != (
                raw.channels,
                raw.windows,
            ):
                den.channels, den.windows = list(raw.channels), list(raw.windows)
                self._put_image_attrs(den)
        for img in [*self._by_series.values(), *self._labels.values()]:
            with img.lock:
                img.trim()
        with self._lock:
            self._write_ome_xml()

    # ------------------------------------------------------------ creation

    def _image(
        self,
        key: tuple[Any, ...],
        image: np.ndarray,
        pixel_um: float,
        *,
        position: str,
        grid: int | None,
    ) -> _Image:
        found = self._images.get(key)
        if found is not None:
            return found
        with self._lock:
            found = self._images.get(key)
            if found is not None:
                return found
            kind = key[0]
            name = position if grid is None else f"{position} tile {grid}"
            if kind != "raw":
                name = f"{position} {kind}"
            same = [k for k in self._images if k[:2] == key[:2]]
            if same:  # another frame size at this position
                name += f" ({image.shape[1]}x{image.shape[0]})"
            meta = {"kind": kind, "position": position, "time_axis": TIME_AXIS_NOTE}
            if grid is not None:
                meta["grid"] = grid
            img = self._new_image(name, meta, image.shape, image.dtype, pixel_um)
            self._images[key] = img
            return img

    def _new_image(
        self,
        name: str,
        meta: dict[str, Any],
        yx: tuple[int, ...],
        dtype: np.dtype,
        pixel_um: float,
    ) -> _Image:
        """A new series (call with the lock held)."""
        series = str(len(self._series))
        group = self._group.create_group(series)
        dtype = np.dtype(dtype)
        dmax = float(np.iinfo(dtype).max) if dtype.kind in "ui" else 1.0
        img = _Image(
            series=series,
            group=group,
            array=None,
            name=name,
            meta=meta,
            channels=[],
            pixel_um=float(pixel_um),
            dtype_max=dmax,
        )
        self._put_image_attrs(img)
        img.array = group.create_array(
            "0",
            shape=(0, 0, 0, *yx),
            chunks=(1, 1, 1, *yx),
            dtype=dtype,
            fill_value=0,
            compressors=_CODEC,
            dimension_names=ngff.AXES,
            # a frame of zeros is a frame: its chunk file is what says so
            config={"write_empty_chunks": True},
        )
        self._series.append(series)
        self._by_series[series] = img
        self._group.require_group("OME").attrs.put(ngff.series_attrs(self._series))
        self._write_ome_xml()
        return img

    def _write_ome_xml(self) -> None:
        """``OME/METADATA.ome.xml``: the images with their sizes now."""
        images = [
            {
                "series": img.series,
                "name": img.name,
                "dtype": img.array.dtype if img.array is not None else "float32",
                "shape": img.shape,
                "channels": img.channels,
                "pixel_um": img.pixel_um,
                "z_step_um": self.z_step_um,
                "interval_s": self.interval_s,
            }
            for img in list(self._by_series.values())
            if img.array is not None
        ]
        if not images:
            return
        path = self.root / "OME" / "METADATA.ome.xml"
        tmp = path.with_name(path.name + ".partial")
        tmp.write_text(ngff.ome_xml(images), encoding="utf-8")
        os.replace(tmp, path)

    def _derived(self, raw: _Image, kind: str, plane: np.ndarray) -> _Image:
        table = self._labels if kind == "labels" else self._denoised
        found = table.get(raw.series)
        if found is not None:
            return found
        with self._lock:
            found = table.get(raw.series)
            if found is not None:
                return found
            t, c, z = raw.tcz
            if kind == "denoised":
                meta = {**raw.meta, "kind": "denoised", "source": raw.series}
                img = self._new_image(
                    f"{raw.name} denoised",
                    meta,
                    raw.yx,
                    np.dtype("float32"),
                    raw.pixel_um,
                )
                img.channels = list(raw.channels)
                img.windows = list(raw.windows)
                self._put_image_attrs(img)
            else:
                labels = raw.group.require_group("labels")
                labels.attrs.put(ngff.labels_group_attrs([self.LABEL_NAME]))
                group = labels.create_group(self.LABEL_NAME)
                group.attrs.put(
                    ngff.label_attrs(
                        self.LABEL_NAME,
                        interval_s=self.interval_s,
                        z_step_um=self.z_step_um,
                        pixel_um=raw.pixel_um,
                    )
                )
                array = group.create_array(
                    "0",
                    shape=(0, 0, 0, *raw.yx),
                    chunks=(1, 1, 1, *raw.yx),
                    dtype="int32",
                    fill_value=0,
                    compressors=_CODEC,
                    dimension_names=ngff.AXES,
                )
                img = _Image(
                    series=raw.series,
                    group=group,
                    array=array,
                    name=self.LABEL_NAME,
                    meta={},
                    channels=[],
                    pixel_um=raw.pixel_um,
                    dtype_max=0,
                )
            img.grow_to(t - 1, c - 1, z - 1)
            table[raw.series] = img
            return img

    def _put_image_attrs(self, img: _Image) -> None:
        img.group.attrs.put(
            ngff.image_attrs(
                img.name,
                channels=img.channels or [""],
                interval_s=self.interval_s,
                z_step_um=self.z_step_um,
                pixel_um=img.pixel_um,
                dtype_max=img.dtype_max,
                smartscope=img.meta,
                windows=img.windows,
            )
        )
