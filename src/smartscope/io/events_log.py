"""``events.jsonl``: one JSON object per line for every frame, analysis result
and action (``smartscope.controller.records`` makes them). Each line goes to
the file in one ``write`` call as it is made, so a killed run keeps its log
(at most its last line cut short, which ``smartscope recover`` drops)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from smartscope.io.disk import DISK_FULL_ERRNOS

__all__ = ["EventLog"]


class EventLog:
    """Thread-safe append-only JSON-lines writer.

    ``on_disk_full(error)`` is called when a line cannot be written for want
    of space; when it returns True (space was freed) the rest of the line is
    written again once.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        on_disk_full: Callable[[OSError], bool] | None = None,
    ) -> None:
        self.path = Path(path)
        self._fd: int | None = os.open(
            self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
        )
        self._lock = threading.Lock()
        self.on_disk_full = on_disk_full
        self.lines = 0

    def write_line(self, line: str) -> None:
        """Append one already-serialised JSON object as a line."""
        data = memoryview((line + "\n").encode("utf-8"))
        with self._lock:
            if self._fd is None:
                return
            retried = False
            while data:
                try:
                    n = os.write(self._fd, data)
                except OSError as e:
                    if (
                        e.errno in DISK_FULL_ERRNOS
                        and not retried
                        and self.on_disk_full is not None
                        and self.on_disk_full(e)
                    ):
                        retried = True
                        continue
                    if e.filename is None:
                        e.filename = str(self.path)
                    raise
                data = data[n:]
            self.lines += 1

    @property
    def closed(self) -> bool:
        return self._fd is None

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                fd, self._fd = self._fd, None
                os.close(fd)
