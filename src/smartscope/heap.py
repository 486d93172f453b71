"""The C heap: keeping freed memory for the next frame, and giving it back.

Each analysed frame allocates and frees arrays of the frame's size (maps,
labels, the rescaled image; at 2048² each 16-40 MB). glibc hands requests
above its mmap threshold (128 kB, moving up to at most 32 MB) fresh pages
from the system and returns them on free, and trims the heap's free top, so
every frame touched its memory anew: 30,000-60,000 page faults per 2048²
frame (up to 240 MB of pages zeroed and mapped), 4,300-5,500 per 512²
frame. :func:`keep_freed_memory` raises the thresholds so freed memory is
reused (500-1,300 and 67 faults): denoise-care + nuclei-seg + measure +
track ran 2048² frames in 800-889 against 889-1040 ms (16.0-16.6x the 512²
cost against 17.8-19.1x) on this project's 2-core machine
(docs/benchmarks.md, "Frame size"). The analysis sets it when it loads its
models (``analysis.heap``).

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

__all__ = ["TRIM_EVERY_FRAMES", "keep_freed_memory", "trim_heap"]

logger = logging.getLogger(__name__)

#: analysed frames between two trims in a run (a trim costs a few ms; the
#: growth it takes back is a few MB per thousand frames)
TRIM_EVERY_FRAMES = 250

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
#: requests up to this come from the heap (a 2048² frame's two segmentation
#: maps at the training diameter are 39 MB, above glibc's 32-MB ceiling for
#: its moving threshold); where the C library refuses it, its 32-MB ceiling
KEEP_MMAP_THRESHOLD = 1 << 30
#: free memory at the top of the heap kept instead of returned
KEEP_TRIM_THRESHOLD = 1 << 30
#: extra memory each growth of the heap takes, for the next requests
KEEP_TOP_PAD = 64 << 20


@cache
def _glibc() -> ctypes.CDLL | None:
    """The C library where it is glibc (``malloc_trim`` and ``mallopt`` as
    documented; musl has no ``malloc_trim`` and a ``mallopt`` that does
    nothing), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _ = libc.gnu_get_libc_version
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def _malloc_trim() -> Callable[[int], int] | None:
    libc = _glibc()
    return None if libc is None else libc.malloc_trim


@cache
def keep_freed_memory() -> bool:
    """Have the C allocator keep the memory a frame frees for the next frame
    (glibc: heap requests up to :data:`KEEP_MMAP_THRESHOLD`, no trimming of
    the heap's top below :data:`KEEP_TRIM_THRESHOLD`, growth in steps of
    :data:`KEEP_TOP_PAD`); whether it was set (False elsewhere than glibc,
    where nothing changes). For the whole process and once: resident memory
    then stays at what the analysis used at its peak, until :func:`trim_heap`
    (every :data:`TRIM_EVERY_FRAMES` frames of a run and at its end) gives
    the free part back.
    """
    libc = _glibc()
    if libc is None:
        return False
    try:
        ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, KEEP_MMAP_THRESHOLD)) or bool(
            libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
        )
        ok = bool(libc.mallopt(_M_TRIM_THRESHOLD, KEEP_TRIM_THRESHOLD)) and ok
        ok = bool(libc.mallopt(_M_TOP_PAD, KEEP_TOP_PAD)) and ok
    except Exception:  # never let housekeeping break a run
        logger.debug("mallopt failed", exc_info=True)
        return False
    if not ok:
        logger.debug("the C library refused a heap setting")
    return ok


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
