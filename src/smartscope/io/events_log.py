"""``events.jsonl``: one JSON object per line for every frame, analysis result
and action (``smartscope.controller.records`` makes them). Each line is
flushed as written, so a killed run keeps its log."""

from __future__ import annotations

import threading
from pathlib import Path

__all__ = ["EventLog"]


class EventLog:
    """Thread-safe append-only JSON-lines writer."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fh = self.path.open("a", encoding="utf-8")
        self._lock = threading.Lock()
        self.lines = 0

    def write_line(self, line: str) -> None:
        """Append one already-serialised JSON object as a line."""
        with self._lock:
            if self._fh.closed:
                return
            self._fh.write(line + "\n")
            self._fh.flush()
            self.lines += 1

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.close()
