"""Rebuild a killed run's folder: what ``smartscope recover RUN_DIR`` does.

A run ended by SIGKILL or a power cut never finishes its folder: there is no
``summary.json``, the last line of ``events.jsonl`` may be cut mid-way, an
image may have room for a plane never written (it grows before it writes),
half-written ``*.partial`` files may lie around, an image may have been
half-created, and the label and denoised images stop at the last frame
analysed (:mod:`smartscope.io.image_repair`).

:func:`recover_run` repairs each of these and writes the summary the run would
have written, from the same records counted the same way
(:class:`~smartscope.controller.recorder.Counts`), with ``status: "killed"``
and ``recovery`` saying what was found and done. Nothing acquired is dropped:
a frame whose chunk is on disk counts even if its log line was lost. It is
safe to run twice, and safe to kill: ``summary.json`` is written last, and a
folder that has one is left alone.

The repairs, one step each, are in :mod:`smartscope.recover_steps`; reading
and mending ``events.jsonl`` in :mod:`smartscope.recover_log`; the images in
:mod:`smartscope.io.image_repair`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from smartscope import recover_steps as S
from smartscope.controller import records as R
from smartscope.controller.recorder import write_atomic
from smartscope.errors import SmartscopeError
from smartscope.recover_log import EventsRead, read_events, record_classes

__all__ = ["RecoveryError", "RecoveryResult", "record_classes", "recover_run"]


class RecoveryError(SmartscopeError):
    """A folder :func:`recover_run` cannot recover (not a run folder, unreadable,
    not writable); the message names the path."""


@dataclass(frozen=True)
class RecoveryResult:
    """What :func:`recover_run` found and did."""

    run_dir: Path
    #: False when the folder already had its ``summary.json`` (nothing done)
    recovered: bool
    #: ``summary.json``'s content (as found, or as rebuilt)
    summary: dict[str, Any]
    #: what was found and done, one sentence each
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "recovered": self.recovered,
            "notes": list(self.notes),
            "summary": self.summary,
        }


def recover_run(run_dir: str | Path) -> RecoveryResult:
    """Finish the folder of a run that was killed: repair the raw and derived
    images, the log and the CSV files, and write ``summary.json`` with
    ``status: "killed"``. A folder that already has a summary is left alone.

    Raises :class:`RecoveryError` for a folder that is not a run folder or
    cannot be read or written.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RecoveryError(f"{run_dir}: no such run folder")
    events = run_dir / "events.jsonl"
    if not events.is_file():
        raise RecoveryError(f"{run_dir} is not a run folder (it has no events.jsonl)")
    summary_path = run_dir / "summary.json"
    unreadable = None
    if summary_path.exists():
        try:
            found = json.loads(summary_path.read_text(encoding="utf-8"))
            if not isinstance(found, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:
            # cut short (written in place by an older smartscope): rebuilt
            unreadable = type(e).__name__
        else:
            status = found.get("status", "?")
            return RecoveryResult(
                run_dir,
                recovered=False,
                summary=found,
                notes=[f"summary.json already exists (status {status}): nothing to do"],
            )
    try:
        return _recover(run_dir, events, summary_path, unreadable)
    except OSError as e:
        raise RecoveryError(
            f"cannot repair {run_dir}: {e.strerror or e}"
            + (f" ({e.filename})" if e.filename else "")
        ) from e


def _recover(
    run_dir: Path,
    events: Path,
    summary_path: Path,
    unreadable: str | None,
) -> RecoveryResult:
    """The repairs in order (:mod:`smartscope.recover_steps`), then the log's
    ``run_finished`` and, last, ``summary.json``."""
    log, started = _read_log(run_dir, events)
    notes: list[str] = []
    parts: dict[str, Any] = {}
    parts |= S.release_reserve(run_dir, notes)
    parts |= S.remove_temporaries(run_dir, notes)
    parts |= S.set_aside_summary(summary_path, unreadable, notes)
    tally = S.tally_records(log)
    parts |= S.report_log(log, tally, notes)
    zarr_root = run_dir / "data.ome.zarr"
    parts |= S.fit_images(zarr_root, notes)
    parts |= S.reconcile_frames(tally, parts["frames_on_disk"], notes)
    parts |= S.trim_csv_files(run_dir, notes)
    parts["recovered_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")

    reason = S.finish_reason(tally.finished)
    summary = S.build_summary(started, tally, reason, S.recovery_dict(parts))
    # the log ends with run_finished; summary.json is written last
    S.finish_log(events, log, started, tally, reason, notes)
    write_atomic(summary_path, json.dumps(summary, indent=2))
    notes.append(
        f"summary.json written: status killed, {tally.counts.frames} frames acquired"
    )
    return RecoveryResult(run_dir, recovered=True, summary=summary, notes=notes)


def _read_log(run_dir: Path, events: Path) -> tuple[EventsRead, R.RunStartedRecord]:
    """``events.jsonl`` as read, and its run_started record; a log that does
    not begin with one, or was written by a newer smartscope, is refused."""
    try:
        log = read_events(events)
    except OSError as e:
        raise RecoveryError(f"cannot read {events}: {e.strerror or e}") from e
    started = log.records[0] if log.begins_with_start else None
    if not isinstance(started, R.RunStartedRecord):
        raise RecoveryError(
            f"{run_dir} is not a run folder "
            "(events.jsonl does not begin with a run_started record)"
        )
    if started.schema_version < 3:
        raise RecoveryError(
            f"{run_dir} was written by an older smartscope (schema version "
            f"{started.schema_version}, raw frames in one flat array); this "
            "smartscope recovers runs of schema version 3 and later"
        )
    if started.schema_version > R.SCHEMA_VERSION:
        raise RecoveryError(
            f"{run_dir} was written with schema version {started.schema_version}; "
            f"this smartscope reads up to {R.SCHEMA_VERSION}: upgrade smartscope"
        )
    return log, started
