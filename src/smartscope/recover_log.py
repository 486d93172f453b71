"""Reading ``events.jsonl`` back, whole or damaged, and making it whole again.

:class:`~smartscope.io.events_log.EventLog` writes the log one line at a time,
so a killed run can leave its last line cut mid-way, or (a write that failed
half-way, then the next line) a cut record followed by a whole one on the same
line. :func:`read_events` rebuilds every line it can with its record model
(``smartscope.controller.records``) and says which lines it dropped or did not
understand; :func:`repair_events` makes the file one JSON object per line
again, ending with a ``run_finished`` record. ``smartscope recover`` uses both.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from smartscope.controller import records as R
from smartscope.controller.recorder import write_atomic

__all__ = ["EventsRead", "read_events", "record_classes", "repair_events"]

#: how much of a dropped line ``EventsRead.dropped`` keeps
_KEEP_CHARS = 120
#: how every record's line begins (pydantic writes ``kind`` first)
_RECORD_START = b'{"kind":'


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


@dataclass
class EventsRead:
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


def read_events(path: Path) -> EventsRead:
    """Read ``path`` (an ``events.jsonl``) line by line, keeping every record
    that can be read and noting every line that cannot. Raises ``OSError``
    when the file cannot be read."""
    data = path.read_bytes()
    classes = record_classes()
    log = EventsRead(ended_mid_line=bool(data) and not data.endswith(b"\n"))
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the file ended with a newline
    log.lines_read = len(lines)
    offset = 0
    for number, raw in enumerate(lines, start=1):
        start, offset = offset, offset + len(raw) + 1
        last_cut = number == len(lines) and log.ended_mid_line
        parsed = _parse_line(log, number, raw, start, last_cut=last_cut)
        if parsed is None:
            continue
        kept, obj = parsed
        log.kept.append(kept)
        _add_record(log, classes, number, obj)
    return log


def _parse_line(
    log: EventsRead, number: int, raw: bytes, offset: int, *, last_cut: bool
) -> tuple[bytes, dict[str, Any]] | None:
    """The bytes of line ``number`` (at byte ``offset``) to keep and its JSON
    object; a line that is not one is noted in ``log.dropped``, and the whole
    record after a cut one (if any) returned instead, or None."""
    try:
        obj = json.loads(raw.decode("utf-8"))
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError too
        why = "cut mid-way (the last line)" if last_cut else f"not JSON: {e}"
        if not raw.strip():
            why = "empty line"
        cut, salvaged = _salvage(raw)
        if salvaged is not None:
            why = "a cut record followed by a whole one (kept)"
        log.dropped.append(
            {
                "line": number,
                "reason": why,
                "offset": offset,
                "bytes": len(raw) - len(cut),
                "text": raw[: min(_KEEP_CHARS, len(raw) - len(cut))].decode(
                    "utf-8", "replace"
                ),
            }
        )
        if salvaged is None:
            return None
        log.salvaged.append(number)
        return cut, salvaged
    return raw, obj


def _add_record(
    log: EventsRead,
    classes: dict[str, type[R.Record]],
    number: int,
    obj: dict[str, Any],
) -> None:
    """Rebuild line ``number``'s record with its model, or note why not."""
    cls = classes.get(str(obj.get("kind")))
    if cls is None:
        log.not_understood.append(
            {"line": number, "kind": obj.get("kind"), "error": "unknown kind"}
        )
        return
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


def repair_events(
    path: Path, log: EventsRead, finished: R.RunFinishedRecord | None
) -> None:
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
