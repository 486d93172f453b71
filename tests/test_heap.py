"""Handing freed heap memory back (``smartscope.heap``)."""

from __future__ import annotations

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
