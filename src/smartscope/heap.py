"""Giving freed heap memory back to the operating system.

A run allocates and frees large buffers from several threads (frames, model
activations, the writer's chunks). glibc's allocator keeps what those threads
free in per-thread arenas, so the process' resident memory creeps up over a
long run and from one run to the next in the same process, though Python
holds none of it (docs/benchmarks.md, "Memory"). ``malloc_trim(0)`` hands
the free pages back. It is called by the analysis worker every
:data:`TRIM_EVERY_FRAMES` frames and when a run finishes; elsewhere than
glibc (macOS, Windows, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from collections.abc import Callable
from functools import cache

__all__ = ["TRIM_EVERY_FRAMES", "trim_heap"]

logger = logging.getLogger(__name__)

#: analysed frames between two trims in a run (a trim costs a few ms; the
#: growth it takes back is a few MB per thousand frames)
TRIM_EVERY_FRAMES = 250


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.malloc_trim  # glibc only (musl has none)
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


def trim_heap() -> bool:
    """Return the allocator's free memory to the system; whether it could
    (False where the C library has no ``malloc_trim``)."""
    fn = _malloc_trim()
    if fn is None:
        return False
    try:
        fn(0)
    except Exception:  # never let housekeeping break a run
        logger.debug("malloc_trim failed", exc_info=True)
        return False
    return True
