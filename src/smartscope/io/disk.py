"""Disk space: a run checks it before anything moves, keeps a little in
reserve for its last words, and names the path when the disk fills.

A run that fills its disk must still write ``summary.json`` and close
``events.jsonl``: :class:`SpaceReserve` holds 2 MB in a file of the run
folder. Half is given back the moment a write fails for want of space (for
the log's last lines), the rest when the run finishes (for the summary).
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
from pathlib import Path

__all__ = [
    "DISK_FULL_ERRNOS",
    "SpaceReserve",
    "disk_full_error",
    "disk_full_message",
    "free_bytes",
]

#: "no space left", "file too large" (a size limit), "quota exceeded"
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})

#: bytes kept in reserve for the summary, the log's last lines and metadata
RESERVE_BYTES = 2 * 1024 * 1024


def disk_full_error(exc: BaseException | None) -> OSError | None:
    """The OSError in ``exc``'s cause/context chain that says the disk (or a
    file-size limit) is full, or None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def disk_full_message(error: OSError, path: Path, what: str) -> str:
    """One line: what could not be written, to which path, and why."""
    where = error.filename or path
    return (
        f"disk full: writing {what} to {where} failed "
        f"({error.strerror or os.strerror(error.errno or 0)}; "
        f"{_free(Path(where))} free there)"
    )


def _free(path: Path) -> str:
    try:
        n = free_bytes(path)
    except OSError:
        return "unknown"
    return f"{n / 1e6:.1f} MB"


def free_bytes(path: Path) -> int:
    """Free bytes on the file system holding ``path`` (or its nearest existing
    parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


class SpaceReserve:
    """A file of ``size`` bytes in ``folder``, given back by :meth:`release`
    (thread-safe, idempotent)."""

    NAME = ".space-reserve"

    def __init__(self, folder: Path, size: int = RESERVE_BYTES) -> None:
        self.path = Path(folder) / self.NAME
        self._lock = threading.Lock()
        self.held = False
        self._halved = False
        chunk = b"\0" * (1 << 20)
        try:
            with self.path.open("wb") as f:
                left = size
                while left > 0:  # real blocks, not a sparse file
                    left -= f.write(chunk[: min(left, len(chunk))])
                f.flush()
                os.fsync(f.fileno())
            self.held = True
        except OSError:
            self.path.unlink(missing_ok=True)
            raise

    def release_half(self) -> bool:
        """Give back half of the space (once), keeping the rest for the very
        last writes; whether anything was given back."""
        with self._lock:
            if not self.held or self._halved:
                return False
            self._halved = True
            try:
                size = self.path.stat().st_size
                os.truncate(self.path, size // 2)
            except OSError:
                return False
            return True

    def release(self) -> bool:
        """Give the space back; whether there was any to give."""
        with self._lock:
            if not self.held:
                return False
            self.held = False
            self.path.unlink(missing_ok=True)
            return True
