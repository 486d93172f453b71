"""What the run report plots, read from a run folder and reduced to arrays.

:func:`load_run` reads ``events.jsonl`` with the record models
(:func:`smartscope.recover_log.read_events`, so a damaged log still gives
every line it can), ``summary.json`` and, on the simulator,
``truth/cells.csv``. The functions below turn those records into the numbers
each plot needs; they are pure functions of a :class:`RunData`, with units in
their names. Images are not read here (:mod:`smartscope.report_images`).
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from smartscope.controller import records as R
from smartscope.errors import SmartscopeError

__all__ = [
    "Followed",
    "ReportError",
    "RunData",
    "TruthCells",
    "dose_per_position_mj",
    "followed_cell",
    "frame_dose_mj",
    "latencies_ms",
    "load_run",
    "measured_dose_per_track_mj",
    "time_point_intervals_s",
    "truth_dose_per_cell_j_cm2",
    "wall_to_sample_s",
]


class ReportError(SmartscopeError):
    """A folder the report cannot be made of (not a run folder, unreadable)."""


@dataclass(frozen=True)
class TruthCells:
    """``truth/cells.csv``: one row per cell per frame it was in the field of
    view (the simulator's ground truth), as (N,) columns."""

    frame: np.ndarray  # int64, the frame index (as in events.jsonl)
    t_s: np.ndarray  # float64, sample clock
    cell_id: np.ndarray  # int64
    x_um: np.ndarray  # float64, stage coordinates
    y_um: np.ndarray  # float64
    state: np.ndarray  # str
    #: the fluence the cell had received by then, J/cm² (cumulative)
    dose_j_cm2: np.ndarray

    def __len__(self) -> int:
        return len(self.frame)


@dataclass(frozen=True)
class RunData:
    """One run folder, as the report reads it."""

    run_dir: Path
    #: summary.json (None: missing or unreadable; see ``notes``)
    summary: dict[str, Any] | None
    started: R.RunStartedRecord | None
    finished: R.RunFinishedRecord | None
    #: every frame record, in log order (autofocus planes included)
    frames: list[R.FrameRecord]
    #: analysis records by frame index
    analyses: dict[int, R.AnalysisRecord]
    actions: list[R.ActionRecord]
    skipped: list[R.AnalysisSkippedRecord]
    analysis_errors: list[R.AnalysisErrorRecord]
    truth: TruthCells | None
    #: what could not be read, one sentence each
    notes: list[str] = field(default_factory=list)

    @property
    def protocol(self) -> str:
        if self.summary and self.summary.get("protocol"):
            return str(self.summary["protocol"])
        return self.started.protocol if self.started is not None else self.run_dir.name

    @property
    def status(self) -> str:
        if self.summary and self.summary.get("status"):
            return str(self.summary["status"])
        if self.finished is not None:
            return self.finished.status
        return "unfinished"

    @property
    def finish_reason(self) -> str:
        if self.summary and self.summary.get("finish_reason"):
            return str(self.summary["finish_reason"])
        if self.finished is not None:
            return self.finished.reason
        return (
            "no summary.json and no run_finished record: the run is still going, "
            "or was killed (`smartscope recover` finishes its folder)"
        )

    def acquisition_frames(self) -> list[R.FrameRecord]:
        """The planned frames (autofocus sweep planes left out)."""
        return [f for f in self.frames if f.role == "acquisition"]


def load_run(run_dir: str | Path) -> RunData:
    """Read a run folder. Raises :class:`ReportError` for a folder without
    ``events.jsonl`` or whose log cannot be read; anything else that is
    missing or damaged is noted in ``RunData.notes``."""
    from smartscope.recover_log import read_events

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: no such run folder")
    events = run_dir / "events.jsonl"
    if not events.is_file():
        raise ReportError(
            f"{run_dir} is not a run folder (it has no events.jsonl); "
            "give the folder `smartscope run` wrote"
        )
    try:
        log = read_events(events)
    except OSError as e:
        raise ReportError(f"cannot read {events}: {e.strerror or e}") from e
    notes = []
    if log.dropped:
        notes.append(
            f"events.jsonl: {len(log.dropped)} line(s) that are not JSON were left out"
        )
    if log.not_understood:
        notes.append(
            f"events.jsonl: {len(log.not_understood)} record(s) of an unknown kind "
            "or shape were left out"
        )
    summary = _read_summary(run_dir / "summary.json", notes)
    started = finished = None
    frames: list[R.FrameRecord] = []
    analyses: dict[int, R.AnalysisRecord] = {}
    actions: list[R.ActionRecord] = []
    skipped: list[R.AnalysisSkippedRecord] = []
    errors: list[R.AnalysisErrorRecord] = []
    for rec in log.records:
        if isinstance(rec, R.FrameRecord):
            frames.append(rec)
        elif isinstance(rec, R.AnalysisRecord):
            analyses[rec.index] = rec
        elif isinstance(rec, R.ActionRecord):
            actions.append(rec)
        elif isinstance(rec, R.AnalysisSkippedRecord):
            skipped.append(rec)
        elif isinstance(rec, R.AnalysisErrorRecord):
            errors.append(rec)
        elif isinstance(rec, R.RunStartedRecord) and started is None:
            started = rec
        elif isinstance(rec, R.RunFinishedRecord):
            finished = rec
    truth = _read_truth(run_dir / "truth" / "cells.csv", notes)
    return RunData(
        run_dir=run_dir,
        summary=summary,
        started=started,
        finished=finished,
        frames=frames,
        analyses=analyses,
        actions=actions,
        skipped=skipped,
        analysis_errors=errors,
        truth=truth,
        notes=notes,
    )


def _read_summary(path: Path, notes: list[str]) -> dict[str, Any] | None:
    if not path.is_file():
        notes.append(
            "no summary.json: the run did not finish its folder "
            "(`smartscope recover` rebuilds it)"
        )
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        notes.append(f"summary.json cannot be read ({type(e).__name__})")
        return None
    if not isinstance(summary, dict):
        notes.append("summary.json is not a JSON object")
        return None
    return summary


def _read_truth(path: Path, notes: list[str]) -> TruthCells | None:
    """``truth/cells.csv`` as columns; None where there is none (real
    hardware, or ``save: {truth: false}``). A row cut short by a kill is
    left out."""
    if not path.is_file():
        return None
    cols: dict[str, list[Any]] = {
        k: [] for k in ("frame", "t_s", "cell_id", "x_um", "y_um", "state", "dose")
    }
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                try:
                    values = (
                        int(row["frame"]),
                        float(row["t_s"]),
                        int(row["cell_id"]),
                        float(row["x_um"]),
                        float(row["y_um"]),
                        str(row["state"]),
                        float(row["dose"]),
                    )
                except (KeyError, TypeError, ValueError):
                    continue
                for k, v in zip(cols, values, strict=True):
                    cols[k].append(v)
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        notes.append(f"truth/cells.csv cannot be read ({type(e).__name__})")
        return None
    return TruthCells(
        frame=np.asarray(cols["frame"], dtype=np.int64),
        t_s=np.asarray(cols["t_s"], dtype=np.float64),
        cell_id=np.asarray(cols["cell_id"], dtype=np.int64),
        x_um=np.asarray(cols["x_um"], dtype=np.float64),
        y_um=np.asarray(cols["y_um"], dtype=np.float64),
        state=np.asarray(cols["state"], dtype=str),
        dose_j_cm2=np.asarray(cols["dose"], dtype=np.float64),
    )


# ------------------------------------------------------------ derived numbers


def frame_dose_mj(frames: list[R.FrameRecord]) -> np.ndarray:
    """(N,) float64: the light dose of each frame, mJ: the increase of the
    ledger (``dose_mj``, cumulative) since the frame before."""
    cumulative = np.array([f.dose_mj for f in frames], dtype=np.float64)
    return np.diff(cumulative, prepend=0.0)


def dose_per_position_mj(frames: list[R.FrameRecord]) -> dict[str, float]:
    """Ledger dose by stage position name, mJ (autofocus planes included)."""
    out: dict[str, float] = {}
    for f, d in zip(frames, frame_dose_mj(frames), strict=True):
        out[f.position] = out.get(f.position, 0.0) + float(d)
    return out


def wall_to_sample_s(data: RunData, t_wall_s: np.ndarray) -> np.ndarray:
    """Sample-clock times of run wall times (s since the run started, as
    ``t_action``), interpolated between the frames (their ``t_frame`` and
    ``t_s``); held at the first/last frame outside them."""
    if not data.frames:
        return np.zeros_like(np.asarray(t_wall_s, dtype=np.float64))
    tf = np.array([f.t_frame for f in data.frames])
    ts = np.array([f.t_s for f in data.frames])
    order = np.argsort(tf, kind="stable")
    return np.interp(np.asarray(t_wall_s, dtype=np.float64), tf[order], ts[order])


def time_point_intervals_s(
    frames: list[R.FrameRecord],
) -> tuple[np.ndarray, np.ndarray]:
    """The time-lapse interval as it happened: ``(t_s, interval_s)``, (T-1,)
    each, the sample time at which each time point after the first began
    and the time since the previous one began. Empty without a time axis."""
    starts: dict[int, float] = {}
    for f in frames:
        t = f.event_index.get("t")
        if f.role == "acquisition" and t is not None and t not in starts:
            starts[t] = f.t_s
    if len(starts) < 2:
        return np.zeros(0), np.zeros(0)
    keys = sorted(starts)
    t_s = np.array([starts[k] for k in keys])
    return t_s[1:], np.diff(t_s)


def latencies_ms(data: RunData) -> dict[str, np.ndarray]:
    """The three latencies of the reactive loop, ms, each (N,) float64:
    ``frame → result`` (every analysis), ``result → action`` (every applied or
    clamped action whose frame was analysed: ``t_action - t_result``) and
    ``frame → action`` (the action records' ``latency_ms``)."""
    frame_result = np.array(
        [a.latency_ms for a in data.analyses.values() if a.error is None], dtype=float
    )
    result_action = []
    frame_action = []
    for a in data.actions:
        if a.status not in ("applied", "clamped"):
            continue
        if a.latency_ms is not None:
            frame_action.append(a.latency_ms)
        res = data.analyses.get(a.frame_index)
        if res is not None and a.frame_index >= 0:
            result_action.append((a.t_action - res.t_result) * 1000.0)
    return {
        "frame → result": frame_result,
        "result → action": np.array(result_action, dtype=float),
        "frame → action": np.array(frame_action, dtype=float),
    }


@dataclass(frozen=True)
class Followed:
    """The object a run followed with the stage (``center_on`` and the like)."""

    #: the measured track the stage moves aimed at most often
    track_id: int
    #: stage moves that aimed at it, of all moves that aimed at an object
    votes: int
    moves: int
    #: the simulator's cell it was (None without truth, or no match)
    cell_id: int | None = None


_TRACK_IN_REASON = re.compile(r"\btrack (\d+)\b")


def followed_cell(data: RunData) -> Followed | None:
    """Which tracked object the stage followed, if the run followed one.

    Measured from the records: each applied or clamped ``MoveStage`` that
    answered an analysed frame votes for the track its reason names
    (``"track 3 is 53.2 µm off centre"``), or else for the object of that
    frame nearest the move's target. The track with most votes is the
    followed one; where truth exists, the simulator cell nearest that track's
    centroids (most often, over the frames) is named too. None when no move
    aimed at an object.
    """
    votes: Counter[int] = Counter()
    for a in data.actions:
        if a.type != "MoveStage" or a.status not in ("applied", "clamped"):
            continue
        res = data.analyses.get(a.frame_index)
        if res is None or not res.objects:
            continue
        tracks = {int(o[1]) for o in res.objects}
        named = _TRACK_IN_REASON.search(a.reason or "")
        if named is not None and int(named.group(1)) in tracks:
            votes[int(named.group(1))] += 1
            continue
        target = _move_target(a)
        if target is None:
            continue
        objs = np.asarray(res.objects, dtype=float)
        d = np.hypot(objs[:, 2] - target[0], objs[:, 3] - target[1])
        votes[int(objs[int(np.argmin(d)), 1])] += 1
    if not votes:
        return None
    track, n = votes.most_common(1)[0]
    return Followed(
        track_id=track,
        votes=n,
        moves=sum(votes.values()),
        cell_id=_truth_cell_of_track(data, track),
    )


def _move_target(a: R.ActionRecord) -> tuple[float, float] | None:
    """Where a MoveStage record asked the stage to go, stage µm."""
    req = a.requested
    if not isinstance(req, dict):
        return None
    try:
        x, y = float(req["x_um"]), float(req["y_um"])
        if req.get("relative"):
            bx, by = a.before
            x, y = x + float(bx), y + float(by)
    except (KeyError, TypeError, ValueError):
        return None
    return x, y


def _truth_cell_of_track(data: RunData, track_id: int) -> int | None:
    """The truth cell nearest the measured track, by vote over its frames
    (within 10 µm)."""
    truth = data.truth
    if truth is None or not len(truth):
        return None
    order = np.argsort(truth.frame, kind="stable")
    frames, first, count = np.unique(
        truth.frame[order], return_index=True, return_counts=True
    )
    rows_of = {
        int(f): order[s : s + n]
        for f, s, n in zip(frames.tolist(), first.tolist(), count.tolist(), strict=True)
    }
    votes: Counter[int] = Counter()
    for index, res in data.analyses.items():
        rows = rows_of.get(index)
        if rows is None:
            continue
        for o in res.objects:
            if int(o[1]) != track_id:
                continue
            d = np.hypot(truth.x_um[rows] - o[2], truth.y_um[rows] - o[3])
            best = int(np.argmin(d))
            if d[best] <= 10.0:
                votes[int(truth.cell_id[rows[best]])] += 1
    return votes.most_common(1)[0][0] if votes else None


def truth_dose_per_cell_j_cm2(truth: TruthCells) -> dict[int, float]:
    """The fluence each simulated cell had received when it was last in the
    field of view, J/cm² (the simulator's own count, cumulative)."""
    out: dict[int, float] = {}
    for cid, dose in zip(
        truth.cell_id.tolist(), truth.dose_j_cm2.tolist(), strict=True
    ):
        out[cid] = max(out.get(cid, 0.0), dose)
    return out


def measured_dose_per_track_mj(data: RunData) -> dict[int, float]:
    """An estimate from the records: for each measured track, the ledger dose
    (mJ) of the frames in which it was detected: the light that fell on the
    whole field of view while the object was in it, not the light absorbed
    by the object, and not counting frames where it was in the field but
    not detected (or not analysed)."""
    per_frame = dict(
        zip(
            (f.index for f in data.frames),
            frame_dose_mj(data.frames).tolist(),
            strict=True,
        )
    )
    out: dict[int, float] = {}
    for index, res in data.analyses.items():
        d = per_frame.get(index)
        if d is None:
            continue
        for tid in {int(o[1]) for o in res.objects}:
            out[tid] = out.get(tid, 0.0) + d
    return out
