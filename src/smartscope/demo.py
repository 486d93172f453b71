"""The demos: what ``smartscope demo`` reports, and ``smartscope sim-demo``.

``smartscope demo`` runs ``protocols/demo.yaml`` (models in the loop) and then
prints :func:`model_report`: what the segmenter found, what the denoiser
gained and which actions were taken, measured from the run folder alone.

``smartscope sim-demo`` (:func:`run_demo`) is a short multi-position
time-lapse on the simulator, the smallest end-to-end path through the stack:
the simulated microscope (``simulators/demo.cfg``) in virtual time, a
plain pymmcore-plus MDA (no controller, no analysis), raw frames written to
OME-Zarr by pymmcore-plus's own ome-writers sink, and the simulator's ground
truth captured on every ``frameReady`` and drawn on a PNG contact sheet.

Run folder::

    data.ome.zarr/        raw frames, one series per position, (t, c, y, x) uint16
    contact_sheet.png     rows = positions, columns = time points, DAPI,
                          ground-truth nucleus outlines in colour
    truth/cells.csv       every nucleus in every frame (Simulator.write_truth)
    truth/frames.csv      which simulator frame is which (position, t, channel)
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from smartscope.errors import SmartscopeError

if TYPE_CHECKING:
    from useq import MDAEvent

from smartscope.contact_sheet import contact_sheet, write_png

__all__ = [
    "DEMO_CHANNELS",
    "DEMO_POSITIONS_UM",
    "DemoResult",
    "ModelReport",
    "contact_sheet",
    "model_report",
    "run_demo",
    "snr",
]

#: Stage positions (x_um, y_um) of the demo, spread over the 3 mm sample.
DEMO_POSITIONS_UM: tuple[tuple[float, float], ...] = (
    (-900.0, -700.0),
    (100.0, 400.0),
    (1000.0, -300.0),
)
#: Channels (config in the ``Channel`` group, exposure_ms) of the demo.
DEMO_CHANNELS: tuple[tuple[str, float], ...] = (("DAPI", 50.0), ("GFP", 50.0))

ZARR_NAME = "data.ome.zarr"
SHEET_NAME = "contact_sheet.png"
CELLS_CSV = "truth/cells.csv"
FRAMES_CSV = "truth/frames.csv"

FRAMES_CSV_HEADER = (
    "frame",
    "position",
    "t_index",
    "channel",
    "t_s",
    "stage_x_um",
    "stage_y_um",
    "z_um",
    "focus_z_um",
    "exposure_ms",
)

# Outline colours (RGB) by the nucleus' true state.


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` wrote, and how long it took."""

    out_dir: Path
    zarr_path: Path
    contact_sheet_path: Path
    cells_csv_path: Path
    frames_csv_path: Path
    n_positions: int
    n_time_points: int
    n_channels: int
    pixel_size_um: float
    #: distinct nuclei seen in the DAPI frames
    n_cells_seen: int
    #: wall-clock time of the whole demo (load, acquire, write), s
    wall_s: float
    #: sample clock at the end of the acquisition (virtual time), s
    sim_time_s: float
    #: illumination energy delivered to the sample, mJ
    light_dose_mj: float

    @property
    def n_frames(self) -> int:
        """Images acquired: positions × time points × channels."""
        return self.n_positions * self.n_time_points * self.n_channels


class _TruthCapture:
    """Keeps what the contact sheet needs from each frame, on ``frameReady``.

    It must run synchronously on the runner thread (connected straight to
    ``core.mda.events.frameReady``, not passed as an ``output=`` handler, which
    pymmcore-plus relays on another thread): ``Simulator.truth()`` describes
    the most recent image only.
    """

    def __init__(
        self,
        sim: Any,
        *,
        sheet_channel: str,
        n_frames: int,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        self._sim = sim
        self._sheet_channel = sheet_channel
        self._n_frames = n_frames
        self._progress = progress
        self.frames = 0
        #: (p, t) -> DAPI image (Y, X) uint16, its labels (Y, X) int32 and the
        #: ids of nuclei in mitosis
        self.images: dict[tuple[int, int], np.ndarray] = {}
        self.labels: dict[tuple[int, int], np.ndarray] = {}
        self.mitotic: dict[tuple[int, int], np.ndarray] = {}
        self.dead: dict[tuple[int, int], np.ndarray] = {}
        self.rows: list[tuple[Any, ...]] = []

    def frameReady(self, img: np.ndarray, event: MDAEvent, meta: Any) -> None:
        truth = self._sim.truth()
        p = int(event.index.get("p", 0))
        t = int(event.index.get("t", 0))
        self.rows.append(
            (
                truth.frame_index,
                p,
                t,
                truth.channel,
                f"{truth.t_s:.3f}",
                f"{truth.stage_x_um:.3f}",
                f"{truth.stage_y_um:.3f}",
                f"{truth.z_um:.3f}",
                f"{truth.focus_z_um:.3f}",
                f"{truth.exposure_ms:.3f}",
            )
        )
        if truth.channel == self._sheet_channel:
            self.images[p, t] = np.array(img, dtype=np.uint16, copy=True)
            self.labels[p, t] = truth.labels  # the simulator hands out a copy
            self.mitotic[p, t] = np.array(
                [c.id for c in truth.cells if c.state == "mitosis"], dtype=np.int64
            )
            self.dead[p, t] = np.array(
                [c.id for c in truth.cells if c.state == "dead"], dtype=np.int64
            )
        self.frames += 1
        if self._progress is not None:
            self._progress(self.frames, self._n_frames)


def _default_out_dir() -> Path:
    return Path("runs") / f"demo-{datetime.now():%Y%m%d-%H%M%S}"


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise SmartscopeError(
            f"output folder {out_dir} is a file; choose another --out"
        )
    taken = [n for n in (ZARR_NAME, SHEET_NAME, "truth") if (out_dir / n).exists()]
    if taken:
        raise SmartscopeError(
            f"output folder {out_dir} already holds a run ({', '.join(taken)}); "
            "choose another --out or remove it"
        )


def run_demo(
    out_dir: str | Path | None = None,
    *,
    seed: int = 1,
    time_points: int = 6,
    interval_s: float = 300.0,
    config: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DemoResult:
    """Acquire a short multi-position time-lapse on the simulator and write it.

    Parameters
    ----------
    out_dir : str | Path | None
        Run folder; ``None``: ``./runs/demo-YYYYmmdd-HHMMSS``. Refused if it
        already holds a run.
    seed : int
        Sample seed (same seed, same cells, same noise).
    time_points : int
        Time points per position (≥ 1).
    interval_s : float
        Time-lapse interval in (virtual) sample seconds (≥ 0).
    config : str | Path | None
        Micro-Manager configuration with the simulator's devices; ``None``:
        ``simulators/demo.cfg``.
    progress : callable(frames_done, frames_total) | None
        Called after every frame, on the acquisition thread.

    Raises
    ------
    SmartscopeError
        Bad arguments, an occupied output folder, a configuration without the
        simulator (:class:`~smartscope.errors.SimulatorError`), a refused
        configuration (:class:`~smartscope.errors.ConfigError`).
    """
    if time_points < 1:
        raise SmartscopeError(f"time_points must be at least 1, got {time_points}")
    if not interval_s >= 0:
        raise SmartscopeError(f"interval_s must be 0 or more seconds, got {interval_s}")
    t_start = time.perf_counter()
    out_dir = Path(out_dir) if out_dir is not None else _default_out_dir()
    _check_out_dir(out_dir)

    import useq
    from ome_writers import AcquisitionSettings

    from smartscope.hardware import open_core
    from smartscope.sim import get_simulator

    n_pos, n_ch = len(DEMO_POSITIONS_UM), len(DEMO_CHANNELS)
    n_frames = n_pos * n_ch * time_points
    sequence = useq.MDASequence(
        stage_positions=[
            useq.Position(x=x, y=y, name=f"p{i}")
            for i, (x, y) in enumerate(DEMO_POSITIONS_UM)
        ],
        channels=[
            useq.Channel(config=name, group="Channel", exposure=ms)
            for name, ms in DEMO_CHANNELS
        ],
        time_plan=useq.TIntervalLoops(
            interval=timedelta(seconds=interval_s), loops=time_points
        ),
        axis_order="tpcz",
    )
    zarr_path = out_dir / ZARR_NAME
    output = AcquisitionSettings(
        root_path=str(zarr_path), format="ome-zarr", compression="blosc-zstd"
    )

    with open_core(config, seed=seed, time_mode="virtual") as core:
        sim = get_simulator(core)
        pixel_size_um = float(core.getPixelSizeUm())
        capture = _TruthCapture(
            sim,
            sheet_channel=DEMO_CHANNELS[0][0],
            n_frames=n_frames,
            progress=progress,
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        core.mda.events.frameReady.connect(capture.frameReady)
        try:
            core.mda.run(sequence, output=output)
        finally:
            core.mda.events.frameReady.disconnect(capture.frameReady)
        if capture.frames != n_frames:
            raise SmartscopeError(
                f"the demo acquired {capture.frames} of {n_frames} frames; "
                f"see the log, and {zarr_path} for what was written"
            )
        cells_csv = sim.write_truth(out_dir / CELLS_CSV)
        sim_time_s = sim.clock_s
        light_dose_mj = sim.light_dose_mj
    # open_core has released the core; hold no reference to it past this point
    del sim, core

    frames_csv = out_dir / FRAMES_CSV
    with frames_csv.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(FRAMES_CSV_HEADER)
        writer.writerows(capture.rows)

    keys = [[(p, t) for t in range(time_points)] for p in range(n_pos)]
    sheet = contact_sheet(
        np.stack([[capture.images[k] for k in row] for row in keys]),
        np.stack([[capture.labels[k] for k in row] for row in keys]),
        mitotic_ids=[[capture.mitotic[k] for k in row] for row in keys],
        dead_ids=[[capture.dead[k] for k in row] for row in keys],
        row_titles=[
            f"p{i}  x {x:.0f} um, y {y:.0f} um"
            for i, (x, y) in enumerate(DEMO_POSITIONS_UM)
        ],
        col_titles=[f"t = {t * interval_s / 60:g} min" for t in range(time_points)],
        title=(
            f"smartscope demo: DAPI, seed {seed}, {pixel_size_um:g} um/px. "
            "Ground-truth outlines: yellow interphase, magenta mitosis, blue dead"
        ),
    )
    sheet_path = out_dir / SHEET_NAME
    write_png(sheet, sheet_path)

    seen = {int(i) for lab in capture.labels.values() for i in np.unique(lab) if i}
    return DemoResult(
        out_dir=out_dir,
        zarr_path=zarr_path,
        contact_sheet_path=sheet_path,
        cells_csv_path=Path(cells_csv),
        frames_csv_path=frames_csv,
        n_positions=n_pos,
        n_time_points=time_points,
        n_channels=n_ch,
        pixel_size_um=pixel_size_um,
        n_cells_seen=len(seen),
        wall_s=time.perf_counter() - t_start,
        sim_time_s=sim_time_s,
        light_dose_mj=light_dose_mj,
    )


# ------------------------------------------------- what `smartscope demo` did


@dataclass(frozen=True)
class ModelReport:
    """What the models and reactions of a run did, measured from its folder
    (:func:`model_report`). SNR figures are medians over the frames measured."""

    #: "classical", or the segmentation model's name
    segmenter: str
    #: the denoising model's name; None: the run had no denoiser
    denoiser: str | None
    #: frames with an analysis result (no error)
    frames_analysed: int
    #: objects the segmenter found per analysed frame: median, min, max
    objects_median: float
    objects_min: int
    objects_max: int
    #: background: pixels farther than this from every segmented object, µm
    background_margin_um: float
    #: frames whose SNR could be measured (objects, and a background that
    #: is not flat, present)
    snr_frames: int
    #: nuclei-vs-background SNR of the raw frames (median over frames)
    snr_raw: float
    #: background noise std of the raw frames, ADU (median over frames)
    noise_raw_adu: float
    #: the same of the denoised frames; None without stored denoised frames
    snr_denoised: float | None
    noise_denoised_adu: float | None
    #: median over frames of snr(denoised) / snr(raw)
    snr_gain: float | None
    #: action type -> status (applied, clamped, refused, failed, not_applied)
    #: -> count, from events.jsonl
    actions: dict[str, dict[str, int]]

    @property
    def snr_gain_db(self) -> float | None:
        """:attr:`snr_gain` in decibels (20 log10: SNR is an amplitude ratio)."""
        return None if self.snr_gain is None else 20 * float(np.log10(self.snr_gain))

    def lines(self) -> list[tuple[str, str]]:
        """(label, text) rows, as ``smartscope demo`` prints them."""
        seg = (
            "classical" if self.segmenter == "classical" else f"model {self.segmenter}"
        )
        rows = [
            (
                "objects found",
                f"median {self.objects_median:g} per frame (min {self.objects_min}, "
                f"max {self.objects_max}) in {self.frames_analysed} frames, "
                f"segmenter {seg}",
            )
        ]
        bg = f"background: > {self.background_margin_um:g} µm from every object"
        if self.snr_gain is not None:
            rows.append(
                (
                    "denoiser",
                    f"{self.denoiser}: nuclei-vs-background SNR {self.snr_raw:.0f} "
                    f"raw → {self.snr_denoised:.0f} denoised, "
                    f"×{self.snr_gain:.1f} ({self.snr_gain_db:+.1f} dB); background "
                    f"noise {self.noise_raw_adu:.1f} → {self.noise_denoised_adu:.1f} "
                    f"ADU std; median of {self.snr_frames} frames, {bg}",
                )
            )
        else:
            rows.append(
                (
                    "denoiser",
                    f"none; raw SNR {self.snr_raw:.0f}, background noise "
                    f"{self.noise_raw_adu:.1f} ADU std ({bg})",
                )
            )
        by_type = "; ".join(
            f"{kind} "
            + ", ".join(f"{n} {st.replace('_', ' ')}" for st, n in statuses.items())
            for kind, statuses in self.actions.items()
        )
        refused = sum(v.get("refused", 0) for v in self.actions.values())
        clamped = sum(v.get("clamped", 0) for v in self.actions.values())
        rows.append(
            (
                "decisions",
                f"{by_type or 'no actions'}; {refused} refused, {clamped} clamped "
                "by the limits",
            )
        )
        return rows


#: time points read at once when measuring the SNR of a run's frames
_READ_BLOCK = 16


def snr(
    image: np.ndarray, objects: np.ndarray, background: np.ndarray
) -> tuple[float, float]:
    """Nuclei-vs-background SNR of one frame, and its background noise.

    ``image``: (Y, X) frame (any real dtype); ``objects``, ``background``:
    (Y, X) bool masks. Returns ``(SNR, noise)``: (mean over objects - mean
    over background) / noise, and noise = the background's standard deviation
    in the image's units (ADU); SNR is NaN where the background is flat.
    """
    im = np.asarray(image, dtype=np.float64)
    bg = im[background]
    noise = float(bg.std())
    if noise == 0:
        return float("nan"), noise
    return (float(im[objects].mean()) - float(bg.mean())) / noise, noise


def model_report(run_dir: str | Path) -> ModelReport:
    """Measure what the models and reactions of the run in ``run_dir`` did.

    Objects per frame come from the analysis records of ``events.jsonl``, the
    actions from its action records. SNR is measured on every acquisition
    frame with stored labels: objects are the stored label image's nuclei;
    background, every pixel farther than half the protocol's
    ``analysis.diameter_um`` from all of them (clear of the nuclei's blurred
    edges); the same masks on the raw and on the stored denoised frame.
    """
    import json

    from scipy import ndimage as ndi

    from smartscope.io.read_images import frame_places, list_images
    from smartscope.protocol import load_protocol

    run_dir = Path(run_dir)
    analysis = load_protocol(run_dir / "protocol.yaml").analysis
    n_objects: list[int] = []
    actions: dict[str, dict[str, int]] = {}
    acquisition: set[int] = set()
    with (run_dir / "events.jsonl").open() as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a torn last line after a crash
            kind = rec.get("kind")
            if kind == "analysis" and rec.get("error") is None:
                n_objects.append(int(rec["n_objects"]))
            elif kind == "action":
                by_status = actions.setdefault(str(rec["type"]), {})
                st = str(rec["status"])
                by_status[st] = by_status.get(st, 0) + 1
            elif kind == "frame" and rec.get("role", "acquisition") == "acquisition":
                acquisition.add(int(rec["index"]))
    if not n_objects:
        raise SmartscopeError(f"{run_dir}: no analysed frame in events.jsonl")

    import zarr

    images = list_images(run_dir)
    pixel_um = {i.series: float(i.scale[-1]) for i in images}
    denoised_of = {i.source: i.series for i in images if i.kind == "denoised"}
    root: Any = zarr.open_group(str(run_dir / ZARR_NAME), mode="r")
    margin_um = analysis.diameter_um / 2
    # (raw, labels, denoised or None) arrays of each raw image with labels
    arrays: dict[str, tuple[Any, Any, Any]] = {}
    for i in images:
        if i.kind == "raw" and i.has_labels:
            den = denoised_of.get(i.series)
            arrays[i.series] = (
                root[i.series]["0"],
                root[i.series]["labels/nuclei/0"],
                None if den is None else root[den]["0"],
            )
    places = sorted(
        (w.series, w.t, w.c, w.z)
        for index, w in frame_places(run_dir).items()
        if index in acquisition and w.series in arrays
    )
    raw_snr: list[float] = []
    raw_noise: list[float] = []
    den_snr: list[float] = []
    den_noise: list[float] = []
    gain: list[float] = []
    block: tuple[str, int] | None = None
    t0 = 0
    raws = labels = denoiseds = np.zeros((0,))
    for series, t, c, z in places:
        if block != (series, t // _READ_BLOCK):
            # one read per block of time points: per-plane reads cost more in
            # zarr's call overhead than in decompression
            block = (series, t // _READ_BLOCK)
            t0 = block[1] * _READ_BLOCK
            raw_a, labels_a, den_a = arrays[series]
            raws = np.asarray(raw_a[t0 : t0 + _READ_BLOCK])
            labels = np.asarray(labels_a[t0 : t0 + _READ_BLOCK])
            denoiseds = (
                np.zeros((0,))
                if den_a is None
                else np.asarray(den_a[t0 : t0 + _READ_BLOCK])
            )
        raw = raws[t - t0, c, z]
        denoised = denoiseds[t - t0, c, z] if denoiseds.size else None
        objects = labels[t - t0, c, z] > 0
        background = ndi.distance_transform_edt(~objects) > margin_um / pixel_um[series]
        if not objects.any() or background.sum() < 2:
            continue
        s, n = snr(raw, objects, background)
        sd, nd = (
            (np.nan, np.nan) if denoised is None else snr(denoised, objects, background)
        )
        if np.isnan(s) or (denoised is not None and np.isnan(sd)):
            continue  # a flat background: no noise to measure
        raw_snr.append(s)
        raw_noise.append(n)
        if denoised is not None:
            den_snr.append(sd)
            den_noise.append(nd)
            gain.append(sd / s)
    if not raw_snr:
        raise SmartscopeError(
            f"{run_dir}: no frame with stored labels and objects to measure the "
            "SNR on (the protocol needs `save: {labels: true}`)"
        )

    def med(values: list[float]) -> float | None:
        return float(np.median(values)) if values else None

    return ModelReport(
        segmenter=str(analysis.model) if analysis.segmenter == "model" else "classical",
        denoiser=analysis.denoise,
        frames_analysed=len(n_objects),
        objects_median=float(np.median(n_objects)),
        objects_min=min(n_objects),
        objects_max=max(n_objects),
        background_margin_um=margin_um,
        snr_frames=len(raw_snr),
        snr_raw=float(np.median(raw_snr)),
        noise_raw_adu=float(np.median(raw_noise)),
        snr_denoised=med(den_snr),
        noise_denoised_adu=med(den_noise),
        snr_gain=med(gain),
        actions=actions,
    )
