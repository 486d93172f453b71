"""What scoring a run reads from its folder: the frames with their fields of
view, the simulator's truth rows, the scene preset and the objective.

:func:`read_inputs` gathers them once for :func:`smartscope.score.score_run`.
The log and summary come from :func:`smartscope.report_data.load_run` (which
also reads a damaged log); ``truth/cells.csv`` is read here again with every
column (the report's reader keeps fewer), and images only through
:mod:`smartscope.io.read_images`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from smartscope.controller import records as R
from smartscope.errors import SmartscopeError
from smartscope.report_data import RunData, load_run
from smartscope.sim.truth import CELLS_CSV_HEADER

if TYPE_CHECKING:
    from smartscope.sim.scene import ScenePreset
    from smartscope.sim.turrets import ObjectiveSpec

__all__ = [
    "ImagedFrame",
    "ScoreError",
    "ScoreInputs",
    "TruthRows",
    "objective_of",
    "read_inputs",
]


class ScoreError(SmartscopeError):
    """A folder that cannot be scored (not a run folder, or no ground truth)."""


@dataclass(frozen=True)
class TruthRows:
    """``truth/cells.csv``: one row per cell per frame in which it had at
    least one labelled pixel, as (N,) columns (only rows of frames the log
    records are kept)."""

    frame: np.ndarray  # int64, frame index as in events.jsonl
    t_s: np.ndarray  # float64, sample clock at the start of the exposure
    cell_id: np.ndarray  # int64
    parent_id: np.ndarray  # int64, 0 for the founding population
    x_um: np.ndarray  # float64, stage coordinates that centre the cell
    y_um: np.ndarray  # float64
    radius_um: np.ndarray  # float64, equivalent radius sqrt(a*b)
    state: np.ndarray  # str: interphase | mitosis | dead
    #: fluence received before this frame's exposure, J/cm² (cumulative)
    dose_j_cm2: np.ndarray
    #: bool, the cell is one of the scene's rare targets (all False in a
    #: cells.csv written before the column existed)
    target: np.ndarray

    def __len__(self) -> int:
        return len(self.frame)

    def rows_by_frame(self) -> dict[int, np.ndarray]:
        """Row indices ((K,) int64) of each frame index that has rows."""
        order = np.argsort(self.frame, kind="stable")
        frames, first, count = np.unique(
            self.frame[order], return_index=True, return_counts=True
        )
        return {
            int(f): order[s : s + n]
            for f, s, n in zip(
                frames.tolist(), first.tolist(), count.tolist(), strict=True
            )
        }


@dataclass(frozen=True)
class ImagedFrame:
    """One frame record with the field of view its image covers."""

    record: R.FrameRecord
    #: image size (rows, columns) and pixel size, µm (from data.ome.zarr)
    shape_yx: tuple[int, int]
    pixel_um: float
    #: the simulator objective that took it (the record's ``objective``, else
    #: the one whose pixel size fits); None where unknown (taken as aligned)
    objective: ObjectiveSpec | None = None
    #: the offsets (x, y, z µm) the protocol's calibration gave the record's
    #: objective (``devices.objective_offsets``), which the record's
    #: coordinates include; 0 where it gave none
    calibrated_offset_um: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def stage_x_um(self) -> float:
        """The XY stage position (the record's sample coordinates less the
        calibrated offset)."""
        return self.record.x_um - self.calibrated_offset_um[0]

    @property
    def stage_y_um(self) -> float:
        return self.record.y_um - self.calibrated_offset_um[1]

    @property
    def stage_z_um(self) -> float:
        """The focus drive's position (the record's ``z_um`` is the sample
        coordinate: the drive less the calibrated z offset)."""
        return self.record.z_um + self.calibrated_offset_um[2]

    @property
    def parfocal_z_um(self) -> float:
        """The objective's true focus offset from the reference, µm: the drive
        is in focus at the scene's focal plane plus this."""
        o = self.objective
        return o.parfocal_z_um if o is not None else 0.0

    @property
    def center_x_um(self) -> float:
        """x of the sample point really at the image centre, in the truth's
        coordinates: the stage position plus the objective's true offset
        (equal to the record's ``x_um`` when the calibration is right)."""
        o = self.objective
        return self.stage_x_um + (o.offset_x_um if o is not None else 0.0)

    @property
    def center_y_um(self) -> float:
        o = self.objective
        return self.stage_y_um + (o.offset_y_um if o is not None else 0.0)

    @property
    def half_w_um(self) -> float:
        return self.shape_yx[1] * self.pixel_um / 2.0

    @property
    def half_h_um(self) -> float:
        return self.shape_yx[0] * self.pixel_um / 2.0

    @property
    def time_point(self) -> tuple[str, int]:
        """(position, time index): frames of one time point (channels, z
        planes) share it; a frame without a time index is its own."""
        rec = self.record
        return rec.position, int(rec.event_index.get("t", -1 - rec.index))

    def contains(self, x_um: np.ndarray, y_um: np.ndarray) -> np.ndarray:
        """(N,) bool: which stage points lie inside the field (centre ± half
        size)."""
        return (np.abs(np.asarray(x_um) - self.center_x_um) <= self.half_w_um) & (
            np.abs(np.asarray(y_um) - self.center_y_um) <= self.half_h_um
        )


@dataclass
class ScoreInputs:
    """Everything scoring reads, read once."""

    run_dir: Path
    data: RunData
    #: None when the truth cannot be used (see ``notes``)
    truth: TruthRows | None
    #: frame index -> its rows in ``truth``
    rows_of: dict[int, np.ndarray]
    #: frame index -> the frame with its field; frames without an image are absent
    imaged: dict[int, ImagedFrame]
    #: the scene preset the run's simulator used (None: unknown, see notes)
    preset: ScenePreset | None
    #: the protocol as the run saved it (protocol.yaml), {} when unreadable
    protocol: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def acquisition(self) -> list[ImagedFrame]:
        """The planned frames that have an image, in the order taken."""
        return [
            self.imaged[f.index]
            for f in self.data.frames
            if f.role == "acquisition" and f.index in self.imaged
        ]


def read_inputs(run_dir: str | Path) -> ScoreInputs:
    """Read a run folder for scoring.

    Raises :class:`ScoreError` for a folder that is not a run folder or has
    no ``truth/cells.csv`` (a run on a real microscope, or ``save: {truth:
    false}``); anything else missing is a note, and the metrics that need it
    are null.
    """
    from smartscope.report_data import ReportError

    run_dir = Path(run_dir)
    cells_csv = run_dir / "truth" / "cells.csv"
    try:
        data = load_run(run_dir)
    except ReportError as e:
        raise ScoreError(str(e)) from e
    if not cells_csv.is_file():
        raise ScoreError(
            f"{run_dir} has no truth/cells.csv: only a run on the simulator, "
            "with save: {truth: true} (the default), has the ground truth a score "
            "needs"
        )
    notes = list(data.notes)
    logged = {f.index for f in data.frames}
    truth = _read_truth_rows(cells_csv, logged, notes)
    protocol = _protocol_fields(run_dir / "protocol.yaml", notes)
    imaged = _imaged_frames(run_dir, data.frames, notes, _calibration(protocol))
    rows_of = truth.rows_by_frame() if truth is not None else {}
    if truth is not None and not _truth_lines_up(truth, rows_of, imaged, notes):
        truth, rows_of = None, {}
    return ScoreInputs(
        run_dir=run_dir,
        data=data,
        truth=truth,
        rows_of=rows_of,
        imaged=imaged,
        preset=_scene_preset(data, notes),
        protocol=protocol,
        notes=notes,
    )


def _read_truth_rows(
    path: Path, logged: set[int], notes: list[str]
) -> TruthRows | None:
    """``cells.csv`` rows of the logged frames (a killed run may have truth
    of a frame its log never recorded; a row cut short is left out)."""
    # the simulator's own columns, in its order; "target" came last and later:
    # a file without it has no targets
    names = CELLS_CSV_HEADER[:-1]
    kinds = (int, float, int, int, float, float, float, str, float)
    cols: list[list[Any]] = [[] for _ in CELLS_CSV_HEADER]
    unlogged = 0
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                try:
                    values = [k(row[n]) for k, n in zip(kinds, names, strict=True)]
                    values.append(int(row.get("target") or 0) != 0)
                except (KeyError, TypeError, ValueError):
                    continue
                if values[0] not in logged:
                    unlogged += 1
                    continue
                for col, v in zip(cols, values, strict=True):
                    col.append(v)
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        notes.append(f"truth/cells.csv cannot be read ({type(e).__name__})")
        return None
    if unlogged:
        notes.append(
            f"truth/cells.csv: {unlogged} row(s) of frames the log does not record "
            "were left out (a killed run)"
        )
    f64, i64 = np.float64, np.int64
    return TruthRows(
        frame=np.asarray(cols[0], i64),
        t_s=np.asarray(cols[1], f64),
        cell_id=np.asarray(cols[2], i64),
        parent_id=np.asarray(cols[3], i64),
        x_um=np.asarray(cols[4], f64),
        y_um=np.asarray(cols[5], f64),
        radius_um=np.asarray(cols[6], f64),
        state=np.asarray(cols[7], dtype=str),
        dose_j_cm2=np.asarray(cols[8], f64),
        target=np.asarray(cols[9], bool),
    )


def _calibration(protocol: dict[str, Any]) -> dict[str, tuple[float, float, float]]:
    """The protocol's ``devices.objective_offsets``: objective preset ->
    (x, y, z) µm (entries that are not numbers are left out)."""
    devices = protocol.get("devices")
    table = devices.get("objective_offsets") if isinstance(devices, dict) else None
    out: dict[str, tuple[float, float, float]] = {}
    if not isinstance(table, dict):
        return out
    for name, o in table.items():
        if not isinstance(o, dict):
            continue
        try:
            out[str(name)] = tuple(  # type: ignore[assignment]
                float(o.get(k, 0.0)) for k in ("x_um", "y_um", "z_um")
            )
        except (TypeError, ValueError):
            continue
    return out


def _imaged_frames(
    run_dir: Path,
    frames: list[R.FrameRecord],
    notes: list[str],
    calibration: dict[str, tuple[float, float, float]],
) -> dict[int, ImagedFrame]:
    """Each frame with its image size and pixel size (from its series in
    data.ome.zarr); frames whose image is not stored are left out."""
    from smartscope.io.read_images import list_images

    try:
        series = {i.series: i for i in list_images(run_dir)}
    except Exception as e:  # a damaged store: the frames have no field
        notes.append(f"data.ome.zarr cannot be read ({type(e).__name__}: {e})")
        series = {}
    out: dict[int, ImagedFrame] = {}
    missing = 0
    for f in frames:
        info = series.get(str((f.image or {}).get("series")))
        if info is None:
            missing += 1
            continue
        py, px = float(info.scale[-2]), float(info.scale[-1])
        if abs(py - px) > 1e-9 * max(px, 1.0):
            missing += 1
            continue
        out[f.index] = ImagedFrame(
            record=f,
            shape_yx=(int(info.shape[-2]), int(info.shape[-1])),
            pixel_um=px,
            objective=objective_of(f, px),
            calibrated_offset_um=calibration.get(
                str(getattr(f, "objective", None)), (0.0, 0.0, 0.0)
            ),
        )
    if missing:
        notes.append(
            f"{missing} frame record(s) have no image in data.ome.zarr (or "
            "non-square pixels): their field of view is unknown and they are not scored"
        )
    return out


def objective_of(record: R.FrameRecord, pixel_um: float) -> ObjectiveSpec | None:
    """The simulator objective behind a frame: the record's ``objective``
    label where it names one whose magnification gives the image's
    ``pixel_um`` (with some binning), else the one that gives it unbinned,
    else the only one that gives it with some binning; None when none (or
    several) fit."""
    from smartscope.sim.camera import BINNINGS, SimCamera
    from smartscope.sim.turrets import OBJECTIVES

    def fits(o: ObjectiveSpec, binning: int) -> bool:
        px = SimCamera.pixel_pitch_um * binning / o.magnification
        return abs(px - pixel_um) <= 1e-6 * pixel_um

    label = getattr(record, "objective", None)
    for o in OBJECTIVES:
        if o.label == label and any(fits(o, b) for b in BINNINGS):
            return o

    for binnings in ((1,), BINNINGS):
        found = [o for o in OBJECTIVES if any(fits(o, b) for b in binnings)]
        if len(found) == 1:
            return found[0]
    return None


def _truth_lines_up(
    truth: TruthRows,
    rows_of: dict[int, np.ndarray],
    imaged: dict[int, ImagedFrame],
    notes: list[str],
) -> bool:
    """Whether the truth's frame numbers are the log's: a cell in a frame's
    truth has a labelled pixel in its image, so its centre lies within the
    field grown by its size. (The simulator counts frames from its last
    reset; a core that took frames before the run would shift them.)"""
    checked = inside = 0
    for index, rows in rows_of.items():
        frame = imaged.get(index)
        if frame is None:
            continue
        margin = 2.0 * truth.radius_um[rows] + frame.pixel_um
        ok = (
            np.abs(truth.x_um[rows] - frame.center_x_um) <= frame.half_w_um + margin
        ) & (np.abs(truth.y_um[rows] - frame.center_y_um) <= frame.half_h_um + margin)
        checked += rows.size
        inside += int(ok.sum())
    if checked and inside < 0.9 * checked:
        notes.append(
            f"truth/cells.csv does not line up with the frame records ({checked - inside} "
            f"of {checked} cells lie outside the field of the frame they are listed "
            "in; did the simulator take frames before the run started?): no metric "
            "uses the truth"
        )
        return False
    return True


def _scene_preset(data: RunData, notes: list[str]) -> ScenePreset | None:
    """The scene preset named in the run_started record, loaded as the
    simulator would load it now (None, with a note, where it cannot be)."""
    from smartscope.sim.simulator import resolve_scene_preset

    sim = data.started.simulator if data.started is not None else None
    name = sim.get("scene") if isinstance(sim, dict) else None
    if not isinstance(name, str):
        notes.append("events.jsonl names no simulator scene (run_started.simulator)")
        return None
    if name.startswith("<"):
        notes.append(
            f"the run's scene preset was given as an object ({name}), not a name or "
            "file: its focal plane is unknown"
        )
        return None
    try:
        return resolve_scene_preset(name)
    except SmartscopeError as e:
        notes.append(f"scene preset {name!r} cannot be loaded: {e}")
        return None


def _protocol_fields(path: Path, notes: list[str]) -> dict[str, Any]:
    from smartscope.yaml_strict import load_yaml_file

    if not path.is_file():
        notes.append("no protocol.yaml in the run folder")
        return {}
    try:
        data = load_yaml_file(path, what="protocol").data
    except SmartscopeError as e:
        notes.append(f"protocol.yaml cannot be read: {e}")
        return {}
    return data if isinstance(data, dict) else {}
