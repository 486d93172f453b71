"""Rebuild a killed run's folder: what ``smartscope recover RUN_DIR`` does.

A run ended by SIGKILL or a power cut never finishes its folder: there is no
``summary.json``, the last line of ``events.jsonl`` may be cut mid-way, the raw
zarr array may be one frame longer than the chunks written (the sink grows it
before it writes), half-written ``*.partial`` chunk files may lie around, and
the label and denoised images stop at the last frame analysed.

:func:`recover_run` repairs each of these and writes the summary the run would
have written, from the same records counted the same way
(:class:`~smartscope.controller.recorder.Counts`), with ``status: "killed"``
and ``recovery`` saying what was found and done. Nothing acquired is dropped:
a frame whose chunk is on disk counts even if its log line was lost. It is
safe to run twice, and safe to kill: ``summary.json`` is written last, and a
folder that has one is left alone.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from smartscope.controller import records as R
from smartscope.controller.executor import LEDGER_COUNTS
from smartscope.controller.recorder import Counts, write_atomic
from smartscope.errors import SmartscopeError
from smartscope.io.disk import SpaceReserve
from smartscope.io.raw_frames import fit_raw_frames

__all__ = ["RecoveryError", "RecoveryResult", "record_classes", "recover_run"]

#: how much of a dropped line ``recovery`` keeps
_KEEP_CHARS = 120
#: how every record's line begins (pydantic writes ``kind`` first)
_RECORD_START = b'{"kind":'


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


def record_classes() -> dict[str, type[R.Record]]:
    """``kind`` → the record's pydantic class, for every record in ``records.py``."""
    out: dict[str, type[R.Record]] = {}
    todo = list(R.Record.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        kind = cls.model_fields["kind"].default
        if isinstance(kind, str):
            out[kind] = cls
    return out


# ------------------------------------------------------------------ the log


@dataclass
class _Log:
    """``events.jsonl`` as read: the lines kept (raw bytes, without their
    newline), the records understood, and the lines dropped or not understood."""

    lines_read: int = 0
    kept: list[bytes] = field(default_factory=list)
    records: list[R.Record] = field(default_factory=list)
    #: lines that are not a JSON object (removed from the file)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    #: JSON objects of an unknown kind or that do not validate (kept, not counted)
    not_understood: list[dict[str, Any]] = field(default_factory=list)
    #: the file's last byte was not a newline
    ended_mid_line: bool = False
    #: lines whose whole record after a cut one was kept
    salvaged: list[int] = field(default_factory=list)
    #: the first line is a valid run_started record
    begins_with_start: bool = False


def _read_log(path: Path) -> _Log:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise RecoveryError(f"cannot read {path}: {e.strerror or e}") from e
    classes = record_classes()
    log = _Log(ended_mid_line=bool(data) and not data.endswith(b"\n"))
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the file ended with a newline
    log.lines_read = len(lines)
    offset = 0
    for number, raw in enumerate(lines, start=1):
        start, offset = offset, offset + len(raw) + 1
        last_cut = number == len(lines) and log.ended_mid_line
        try:
            obj = json.loads(raw.decode("utf-8"))
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError too
            why = "cut mid-way (the last line)" if last_cut else f"not JSON: {e}"
            if not raw.strip():
                why = "empty line"
            cut, obj = _salvage(raw)
            if obj is not None:
                why = "a cut record followed by a whole one (kept)"
            log.dropped.append(
                {
                    "line": number,
                    "reason": why,
                    "offset": start,
                    "bytes": len(raw) - len(cut),
                    "text": raw[: min(_KEEP_CHARS, len(raw) - len(cut))].decode(
                        "utf-8", "replace"
                    ),
                }
            )
            if obj is None:
                continue
            log.salvaged.append(number)
            raw = cut
        log.kept.append(raw)
        cls = classes.get(str(obj.get("kind")))
        if cls is None:
            log.not_understood.append(
                {"line": number, "kind": obj.get("kind"), "error": "unknown kind"}
            )
            continue
        try:
            log.records.append(cls.model_validate(obj))
            if number == 1:
                log.begins_with_start = isinstance(log.records[0], R.RunStartedRecord)
        except ValidationError as e:
            log.not_understood.append(
                {
                    "line": number,
                    "kind": obj.get("kind"),
                    "error": " ".join(str(e).split())[:200],
                }
            )
    return log


def _salvage(raw: bytes) -> tuple[bytes, dict[str, Any] | None]:
    """A whole record written after a cut one on the same line (a write that
    failed half-way, then the next line): its bytes and object, or None."""
    at = raw.rfind(_RECORD_START)
    if at <= 0:
        return b"", None
    try:
        obj = json.loads(raw[at:].decode("utf-8"))
    except ValueError:
        return b"", None
    return (raw[at:], obj) if isinstance(obj, dict) else (b"", None)


def _write_log(path: Path, log: _Log, finished: R.RunFinishedRecord | None) -> None:
    """Make ``events.jsonl`` one JSON object per line again, ending with
    ``finished`` (when given): a cut last line is cut off and ``finished``
    appended; a bad line before the last makes the file be rewritten
    (atomically) without it."""
    tail = b"" if finished is None else finished.model_dump_json().encode() + b"\n"
    last = log.lines_read
    if [d["line"] for d in log.dropped] in ([], [last]) and not log.salvaged:
        with path.open("r+b") as fh:
            if log.dropped:  # the last line: cut it off
                fh.truncate(log.dropped[0]["offset"])
            elif log.ended_mid_line:  # a complete last line without its newline
                tail = b"\n" + tail
            fh.seek(0, os.SEEK_END)
            fh.write(tail)
            fh.flush()
            os.fsync(fh.fileno())
        return
    body = b"".join(line + b"\n" for line in log.kept) + tail
    write_atomic(path, body.decode("utf-8"))


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


# ------------------------------------------------------------------ images


def _shape(array: Path) -> list[int]:
    return [int(n) for n in json.loads((array / "zarr.json").read_text())["shape"]]


def _is_array(path: Path) -> bool:
    try:
        node = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    return node.get("node_type") == "array"


def _derived_arrays(zarr_root: Path) -> list[Path]:
    """The label and denoised arrays (``labels/<name>/0``, ``<group>/0``)."""
    out: list[Path] = []
    if not zarr_root.is_dir():
        return out
    groups = [p for p in sorted(zarr_root.iterdir()) if p.is_dir() and not _is_array(p)]
    labels = zarr_root / "labels"
    if labels.is_dir():
        groups.remove(labels)
        groups += [p for p in sorted(labels.iterdir()) if p.is_dir()]
    for group in groups:
        out += [a for a in sorted(group.iterdir()) if a.is_dir() and _is_array(a)]
    return out


def _fit_derived(array: Path, n_frames: int) -> dict[str, Any]:
    """Remove half-written chunks and pad (or cut) ``array`` to ``n_frames``."""
    import zarr

    partial = [p for p in array.rglob("*.partial") if p.is_file()]
    for p in partial:
        p.unlink(missing_ok=True)
    before = _shape(array)
    after = before
    if before[0] != n_frames:
        arr = zarr.open_array(str(array), mode="r+")
        arr.resize((n_frames, *arr.shape[1:]))
        after = [n_frames, *before[1:]]
    return {
        "shape_before": before,
        "shape_after": after,
        "partial_files_removed": len(partial),
    }


# ------------------------------------------------------------------ recover


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
    notes: list[str] = []
    log = _read_log(events)
    started = log.records[0] if log.begins_with_start else None
    if not isinstance(started, R.RunStartedRecord):
        raise RecoveryError(
            f"{run_dir} is not a run folder "
            "(events.jsonl does not begin with a run_started record)"
        )
    if started.schema_version > R.SCHEMA_VERSION:
        raise RecoveryError(
            f"{run_dir} was written with schema version {started.schema_version}; "
            f"this smartscope reads up to {R.SCHEMA_VERSION}: upgrade smartscope"
        )

    # -- the run's reserve of disk space was kept for its last words: these
    reserve = run_dir / SpaceReserve.NAME
    reserve_released = reserve.is_file()
    reserve.unlink(missing_ok=True)
    if reserve_released:
        notes.append(f"{SpaceReserve.NAME}: the run's reserved disk space released")
    leftovers = []
    for tmp in (
        summary_path.with_name("summary.json.tmp"),
        events.with_name("events.jsonl.tmp"),
    ):
        if tmp.is_file():
            tmp.unlink()
            leftovers.append(tmp.name)
            notes.append(f"{tmp.name}: a half-written temporary file removed")
    broken_summary = None
    if unreadable is not None:
        broken_summary = summary_path.with_name("summary.json.unreadable")
        os.replace(summary_path, broken_summary)
        notes.append(
            f"summary.json could not be read ({unreadable}); kept as "
            f"{broken_summary.name} and rebuilt"
        )

    # -- what the records say, counted as the live recorder counts them
    counts = Counts()
    frames: list[R.FrameRecord] = []
    finished: R.RunFinishedRecord | None = None
    wall_s = 0.0
    for rec in log.records:
        counts.add(rec)
        if isinstance(rec, R.FrameRecord):
            frames.append(rec)
        elif isinstance(rec, R.RunFinishedRecord):
            finished = rec
        for name in ("t_frame", "t_result", "t_action"):
            t = getattr(rec, name, None)
            if isinstance(t, (int, float)):
                wall_s = max(wall_s, float(t))
    n_logged = counts.frames
    notes.append(
        f"events.jsonl: {log.lines_read} lines read, {len(log.records)} records, "
        f"{n_logged} frames logged"
    )
    for d in log.dropped:
        notes.append(f"events.jsonl line {d['line']} dropped: {d['reason']}")
    for d in log.not_understood:
        notes.append(
            f"events.jsonl line {d['line']} ({d['kind']}) kept but not counted: "
            f"{d['error']}"
        )

    # -- the raw frames: cut back to the chunks written
    zarr_root = run_dir / "data.ome.zarr"
    raw_reports = fit_raw_frames(zarr_root)
    raw: list[dict[str, Any]] = []
    for r in raw_reports:
        rest = _shape(r.path)[1:]
        raw.append(
            {
                "path": r.path.relative_to(zarr_root).as_posix(),
                "frames_on_disk": r.frames_on_disk,
                "shape_before": [r.shape_before, *rest],
                "shape_after": [r.shape_after, *rest],
                "partial_files_removed": r.partial_files_removed,
            }
        )
        what = f"raw array {raw[-1]['path']}: {r.frames_on_disk} frames on disk"
        if r.shape_before != r.shape_after:
            what += (
                f"; cut from {r.shape_before} to {r.shape_after} frames (frames "
                "allocated but never written)"
            )
        if r.partial_files_removed:
            what += f"; {r.partial_files_removed} half-written .partial file(s) removed"
        notes.append(what)
    n_disk = sum(r.shape_after for r in raw_reports)

    # -- frames on disk and frames logged must agree; the disk wins
    unlogged = max(0, n_disk - n_logged)
    missing = max(0, n_logged - n_disk)
    if unlogged:
        counts.frames = n_disk
        notes.append(
            f"{unlogged} frame(s) on disk without a frame record (killed between "
            "the write and the log line): kept and counted; the light dose does "
            "not include them"
        )
    if missing:
        counts.frames = n_disk
        counts.autofocus_frames = min(counts.autofocus_frames, n_disk)
        notes.append(
            f"{missing} logged frame(s) are not on disk (their chunks were lost); "
            "the summary counts the frames on disk"
        )

    # -- label and denoised images: the raw frame count
    derived: list[dict[str, Any]] = []
    for array in _derived_arrays(zarr_root):
        d = {
            "path": array.relative_to(zarr_root).as_posix(),
            **_fit_derived(array, n_disk),
        }
        derived.append(d)
        b, a = d["shape_before"][0], d["shape_after"][0]
        if b != a or d["partial_files_removed"]:
            verb = "padded" if a > b else "cut" if a < b else "kept"
            notes.append(
                f"{d['path']}: {verb} from {b} to {a} frames"
                + (
                    f"; {d['partial_files_removed']} .partial file(s) removed"
                    if d["partial_files_removed"]
                    else ""
                )
            )

    # -- the CSV files: a half-written last row is cut
    trimmed: dict[str, int] = {}
    for rel in ("measurements.csv", "truth/cells.csv"):
        n = _trim_to_last_line(run_dir / rel)
        if n:
            trimmed[rel] = n
            notes.append(f"{rel}: half-written last row cut ({n} bytes)")

    # -- the summary, as the live recorder would have written it
    last = frames[-1] if frames else None
    if finished is not None and finished.status != "killed":
        reason = (
            f"the run had finished ({finished.status}: {finished.reason}) but the "
            "process ended before summary.json was written; summary rebuilt by "
            "smartscope recover"
        )
    else:
        reason = (
            "the process ended without finishing (killed or power lost); "
            "summary rebuilt by smartscope recover from events.jsonl and the "
            "raw frames on disk"
        )
    positions = _positions(started, frames)
    recovery: dict[str, Any] = {
        "recovered_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "lines_read": log.lines_read,
        "lines_dropped": log.dropped,
        "lines_not_understood": log.not_understood,
        "frames_logged": n_logged,
        "frames_on_disk": n_disk,
        "frames_unlogged": unlogged,
        "frames_logged_not_on_disk": missing,
        "raw_arrays": raw,
        "derived_arrays": derived,
        "files_trimmed": trimmed,
        "run_finished_in_log": finished is not None,
        "lines_salvaged": log.salvaged,
        "space_reserve_released": reserve_released,
        "temporary_files_removed": leftovers,
    }
    if broken_summary is not None:
        recovery["unreadable_summary"] = broken_summary.name
    summary = counts.summary(
        protocol=started.protocol,
        status="killed",
        finish_reason=reason,
        interrupted=False,
        exit_code=R.exit_code("killed", None, None),
        light_dose_mj=round(last.dose_mj, 6) if last is not None else 0.0,
        light_dose_counts=LEDGER_COUNTS,
        light_dose_mj_simulator=None,
        wall_time_s=round(wall_s, 3),
        sample_time_s=round(last.t_s, 3) if last is not None else 0.0,
        positions=positions,
        time_mode=started.time_mode,
        sample_clock_s=None,
        recovery=recovery,
    )

    # -- the log ends with run_finished; summary.json is written last
    end = None
    if finished is None:
        end = R.RunFinishedRecord(
            status="killed",
            reason=reason,
            frames=counts.frames,
            t_wall=round(started.t_wall + wall_s, 6),
        )
    _write_log(events, log, end)
    if end is not None:
        notes.append("run_finished (status killed) appended to events.jsonl")
    elif log.dropped or log.ended_mid_line:
        notes.append("events.jsonl repaired (it already ended with run_finished)")
    write_atomic(summary_path, json.dumps(summary, indent=2))
    notes.append(
        f"summary.json written: status killed, {counts.frames} frames acquired"
    )
    return RecoveryResult(run_dir, recovered=True, summary=summary, notes=notes)


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
