"""``events.jsonl``: one JSON object per line for every frame, analysis result
and action. Each line is flushed as written, so a killed run keeps its log."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["EventLog"]


def _default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, tuple)):
        return list(o)
    return repr(o)


class EventLog:
    """Thread-safe append-only JSON-lines writer."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fh = self.path.open("a", encoding="utf-8")
        self._lock = threading.Lock()
        self.lines = 0

    def write(self, kind: str, **fields: Any) -> None:
        """Append ``{"kind": kind, **fields}`` as one line."""
        line = json.dumps({"kind": kind, **fields}, default=_default)
        with self._lock:
            if self._fh.closed:
                return
            self._fh.write(line + "\n")
            self._fh.flush()
            self.lines += 1

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
