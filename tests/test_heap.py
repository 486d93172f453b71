"""Handing freed heap memory back (``smartscope.heap``)."""

from __future__ import annotations

import platform
import sys

import numpy as np
import pytest

from smartscope.heap import trim_heap


def _rss_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


def test_trim_heap_is_harmless_everywhere() -> None:
    assert isinstance(trim_heap(), bool)
    assert isinstance(trim_heap(), bool)  # twice: nothing cached goes stale


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="glibc's malloc_trim (Linux)"
)
def test_trim_heap_gives_freed_small_blocks_back() -> None:
    """Many small arrays freed in the middle of the heap stay resident until
    the allocator is asked to give them back (what a long run's frames,
    activations and chunks leave behind)."""
    if not trim_heap():
        pytest.skip("this C library has no malloc_trim")
    # 200 MB in 64 kB blocks (below glibc's mmap threshold: they live in the heap)
    blocks = [np.ones(8192) for _ in range(3200)]
    keep = blocks[-1]  # pins the top of the heap, so free() cannot shrink it
    del blocks
    before = _rss_kb()
    assert trim_heap()
    after = _rss_kb()
    assert before - after > 100_000, (before, after)  # > 100 MB back
    assert keep.sum() == 8192


_FAULTS_SCRIPT = """
import resource
import numpy as np
from smartscope.heap import keep_freed_memory

def faults_per_array():
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        a = np.ones(10_000_000, np.float32)  # 40 MB, every page touched
        del a
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 5

before = faults_per_array()
kept = keep_freed_memory()
faults_per_array()  # the heap grows to hold one
print(kept, before, faults_per_array())
"""


_GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def test_keep_freed_memory_says_whether_it_could() -> None:
    """Set on glibc (the C library the settings are for), nothing elsewhere."""
    from smartscope.heap import keep_freed_memory

    assert keep_freed_memory() is _GLIBC


@pytest.mark.skipif(not _GLIBC, reason="glibc's mallopt (Linux)")
def test_kept_memory_is_not_faulted_in_again() -> None:
    """A frame-sized array allocated and freed over and over: glibc maps and
    unmaps its pages each time (a page fault per 4 kB page); with the heap
    kept, the second and later ones reuse the same memory. In a fresh
    process (the setting is the process'), numpy's huge pages off so pages
    are 4 kB."""
    import os
    import subprocess

    env = {**os.environ, "NUMPY_MADVISE_HUGEPAGE": "0"}
    out = subprocess.run(
        [sys.executable, "-c", _FAULTS_SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    ).stdout.split()
    kept, before, after = out[0] == "True", float(out[1]), float(out[2])
    assert kept
    assert before > 5000  # 40 MB in 4-kB pages: ~9,800 faults each time
    assert after < before / 20, (before, after)
