"""The steps of ``smartscope recover``: the repairs a killed run's folder needs,
and the summary the run would have written (:func:`smartscope.recover.recover_run`
runs them in order).

Each repair appends what it found and did to ``notes`` (one sentence each) and
returns its part of the summary's ``recovery`` dict; :func:`recovery_dict` puts
the parts together in the order ``summary.json`` has always had them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smartscope.controller import records as R
from smartscope.controller.executor import LEDGER_COUNTS
from smartscope.controller.recorder import Counts
from smartscope.io.disk import SpaceReserve
from smartscope.io.image_repair import repair_images
from smartscope.recover_log import EventsRead, repair_events

__all__ = [
    "RECOVERY_KEYS",
    "Tally",
    "build_summary",
    "finish_log",
    "finish_reason",
    "fit_images",
    "reconcile_frames",
    "recovery_dict",
    "release_reserve",
    "remove_temporaries",
    "report_log",
    "set_aside_summary",
    "tally_records",
    "trim_csv_files",
]

#: the keys of ``recovery`` in ``summary.json``, in order
RECOVERY_KEYS = (
    "recovered_at",
    "lines_read",
    "lines_dropped",
    "lines_not_understood",
    "frames_logged",
    "frames_on_disk",
    "frames_unlogged",
    "frames_logged_not_on_disk",
    "raw_arrays",
    "derived_arrays",
    "images_mended",
    "files_trimmed",
    "run_finished_in_log",
    "lines_salvaged",
    "space_reserve_released",
    "temporary_files_removed",
    "unreadable_summary",
)
#: text files whose half-written last row a kill can leave
_CSV_FILES = ("measurements.csv", "truth/cells.csv")


def recovery_dict(parts: dict[str, Any]) -> dict[str, Any]:
    """The steps' parts as ``recovery``: :data:`RECOVERY_KEYS` first, in order."""
    return {**{k: parts[k] for k in RECOVERY_KEYS if k in parts}, **parts}


# ------------------------------------------------------- what the process left


def release_reserve(run_dir: Path, notes: list[str]) -> dict[str, Any]:
    """Delete the run's reserve of disk space (kept for its last words: these)."""
    reserve = run_dir / SpaceReserve.NAME
    released = reserve.is_file()
    reserve.unlink(missing_ok=True)
    if released:
        notes.append(f"{SpaceReserve.NAME}: the run's reserved disk space released")
    return {"space_reserve_released": released}


def remove_temporaries(run_dir: Path, notes: list[str]) -> dict[str, Any]:
    """Delete the half-written temporary files of an atomic write."""
    removed = []
    for tmp in (run_dir / "summary.json.tmp", run_dir / "events.jsonl.tmp"):
        if tmp.is_file():
            tmp.unlink()
            removed.append(tmp.name)
            notes.append(f"{tmp.name}: a half-written temporary file removed")
    return {"temporary_files_removed": removed}


def set_aside_summary(
    summary_path: Path, unreadable: str | None, notes: list[str]
) -> dict[str, Any]:
    """Keep a ``summary.json`` that could not be read (``unreadable``: why) as
    ``summary.json.unreadable``, so that it is rebuilt."""
    if unreadable is None:
        return {}
    broken = summary_path.with_name("summary.json.unreadable")
    os.replace(summary_path, broken)
    notes.append(
        f"summary.json could not be read ({unreadable}); kept as "
        f"{broken.name} and rebuilt"
    )
    return {"unreadable_summary": broken.name}


def trim_csv_files(run_dir: Path, notes: list[str]) -> dict[str, Any]:
    """Cut a half-written last row off the CSV files."""
    trimmed: dict[str, int] = {}
    for rel in _CSV_FILES:
        n = _trim_to_last_line(run_dir / rel)
        if n:
            trimmed[rel] = n
            notes.append(f"{rel}: half-written last row cut ({n} bytes)")
    return {"files_trimmed": trimmed}


def _trim_to_last_line(path: Path) -> int:
    """Cut a half-written last row off a text file; the bytes cut."""
    if not path.is_file():
        return 0
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return 0
    keep = data.rfind(b"\n") + 1
    with path.open("r+b") as fh:
        fh.truncate(keep)
    return len(data) - keep


# ------------------------------------------------------------------ the log


@dataclass
class Tally:
    """What the records say, counted as the live recorder counts them."""

    counts: Counts = field(default_factory=Counts)
    frames: list[R.FrameRecord] = field(default_factory=list)
    finished: R.RunFinishedRecord | None = None
    #: the latest time stamp of any record, s since the run started
    wall_s: float = 0.0
    #: frames with a frame record (``counts.frames`` before the disk decides)
    frames_logged: int = 0


def tally_records(log: EventsRead) -> Tally:
    """Count ``log``'s records as the live recorder does."""
    tally = Tally()
    for rec in log.records:
        tally.counts.add(rec)
        if isinstance(rec, R.FrameRecord):
            tally.frames.append(rec)
        elif isinstance(rec, R.RunFinishedRecord):
            tally.finished = rec
        for name in ("t_frame", "t_result", "t_action"):
            t = getattr(rec, name, None)
            if isinstance(t, (int, float)):
                tally.wall_s = max(tally.wall_s, float(t))
    tally.frames_logged = tally.counts.frames
    return tally


def report_log(log: EventsRead, tally: Tally, notes: list[str]) -> dict[str, Any]:
    """What reading ``events.jsonl`` found: lines read, dropped, not understood."""
    notes.append(
        f"events.jsonl: {log.lines_read} lines read, {len(log.records)} records, "
        f"{tally.frames_logged} frames logged"
    )
    for d in log.dropped:
        notes.append(f"events.jsonl line {d['line']} dropped: {d['reason']}")
    for d in log.not_understood:
        notes.append(
            f"events.jsonl line {d['line']} ({d['kind']}) kept but not counted: "
            f"{d['error']}"
        )
    return {
        "lines_read": log.lines_read,
        "lines_dropped": log.dropped,
        "lines_not_understood": log.not_understood,
        "frames_logged": tally.frames_logged,
        "run_finished_in_log": tally.finished is not None,
        "lines_salvaged": log.salvaged,
    }


def finish_log(
    events: Path,
    log: EventsRead,
    started: R.RunStartedRecord,
    tally: Tally,
    reason: str,
    notes: list[str],
) -> None:
    """Make ``events.jsonl`` whole and end it with ``run_finished`` (status
    killed, for ``reason``) unless it already has one."""
    end = None
    if tally.finished is None:
        end = R.RunFinishedRecord(
            status="killed",
            reason=reason,
            frames=tally.counts.frames,
            t_wall=round(started.t_wall + tally.wall_s, 6),
        )
    repair_events(events, log, end)
    if end is not None:
        notes.append("run_finished (status killed) appended to events.jsonl")
    elif log.dropped or log.ended_mid_line:
        notes.append("events.jsonl repaired (it already ended with run_finished)")


# ------------------------------------------------------------------ images


def fit_images(zarr_root: Path, notes: list[str]) -> dict[str, Any]:
    """Repair the images (:func:`~smartscope.io.image_repair.repair_images`);
    ``frames_on_disk`` is the frame count from here on."""
    r = repair_images(zarr_root)
    for a in r.raw:
        what = f"image {a.path} ({a.kind}): {a.frames_on_disk} frames on disk"
        if a.shape_before != a.shape_after:
            what += (
                f"; t, c, z cut from {a.shape_before[:3]} to {a.shape_after[:3]} "
                "(room made for planes never written)"
            )
        if a.partial_files_removed:
            what += f"; {a.partial_files_removed} half-written .partial file(s) removed"
        notes.append(what)
    for a in r.derived:
        if a.shape_before != a.shape_after or a.partial_files_removed:
            what = (
                f"{a.path} ({a.kind}): t, c, z fitted to its raw image "
                f"({a.shape_before[:3]} -> {a.shape_after[:3]})"
            )
            if a.partial_files_removed:
                what += f"; {a.partial_files_removed} .partial file(s) removed"
            notes.append(what)
    notes += r.notes
    return {
        "raw_arrays": [a.as_dict() for a in r.raw],
        "derived_arrays": [a.as_dict() for a in r.derived],
        "images_mended": r.notes,
        "frames_on_disk": r.frames_on_disk,
    }


def reconcile_frames(tally: Tally, n_disk: int, notes: list[str]) -> dict[str, Any]:
    """Frames on disk and frames logged must agree; the disk wins (``tally``'s
    counts are set to the ``n_disk`` frames on disk)."""
    n_logged = tally.frames_logged
    unlogged = max(0, n_disk - n_logged)
    missing = max(0, n_logged - n_disk)
    if unlogged:
        tally.counts.frames = n_disk
        notes.append(
            f"{unlogged} frame(s) on disk without a frame record (killed between "
            "the write and the log line): kept and counted; the light dose does "
            "not include them"
        )
    if missing:
        tally.counts.frames = n_disk
        tally.counts.autofocus_frames = min(tally.counts.autofocus_frames, n_disk)
        notes.append(
            f"{missing} logged frame(s) are not on disk (their chunks were lost); "
            "the summary counts the frames on disk"
        )
    return {"frames_unlogged": unlogged, "frames_logged_not_on_disk": missing}


# ------------------------------------------------------------------ summary


def finish_reason(finished: R.RunFinishedRecord | None) -> str:
    """``finish_reason`` of the rebuilt summary (``finished``: the log's
    ``run_finished`` record, if it has one)."""
    if finished is not None and finished.status != "killed":
        return (
            f"the run had finished ({finished.status}: {finished.reason}) but the "
            "process ended before summary.json was written; summary rebuilt by "
            "smartscope recover"
        )
    return (
        "the process ended without finishing (killed or power lost); "
        "summary rebuilt by smartscope recover from events.jsonl and the "
        "raw frames on disk"
    )


def build_summary(
    started: R.RunStartedRecord,
    tally: Tally,
    reason: str,
    recovery: dict[str, Any],
) -> dict[str, Any]:
    """``summary.json`` as the live recorder would have written it, with
    ``status: "killed"``."""
    last = tally.frames[-1] if tally.frames else None
    return tally.counts.summary(
        protocol=started.protocol,
        status="killed",
        finish_reason=reason,
        interrupted=False,
        exit_code=R.exit_code("killed", None, None),
        light_dose_mj=round(last.dose_mj, 6) if last is not None else 0.0,
        light_dose_counts=LEDGER_COUNTS,
        light_dose_mj_simulator=None,
        wall_time_s=round(tally.wall_s, 3),
        sample_time_s=round(last.t_s, 3) if last is not None else 0.0,
        positions=_positions(started, tally.frames),
        time_mode=started.time_mode,
        sample_clock_s=None,
        planned_frame_ms=started.planned_frame_ms,
        analysis_warm_up_ms=started.analysis_warm_up_ms,
        recovery=recovery,
    )


def _positions(
    started: R.RunStartedRecord, frames: list[R.FrameRecord]
) -> list[dict[str, Any]]:
    """Every position (those at the start, then any added), where it was last
    imaged (null for one never imaged)."""
    where: dict[str, dict[str, Any]] = {
        name: {"name": name, "x_um": None, "y_um": None, "z_um": None}
        for name in started.positions
    }
    for f in frames:
        where[f.position] = {
            "name": f.position,
            "x_um": f.x_um,
            "y_um": f.y_um,
            "z_um": f.z_um,
        }
    return list(where.values())
