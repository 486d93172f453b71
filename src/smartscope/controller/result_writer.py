"""Stores analysed frames on a thread of their own.

A frame's result goes to disk as rows of ``measurements.csv`` and as planes
of its label and denoised images in ``data.ome.zarr``. Written on the
analysis thread, that took the time of the frame's reactions and of the
next frame's analysis: on the 2-core dev VM 1.8 ms a 512² frame, 13.8 ms a
2048² frame with 518 objects (its int32 labels), 53 ms with its float32
denoised plane (``benchmarks/result_store.py``, docs/benchmarks.md): more
than a GPU's whole per-frame budget at 100 frames/s. :class:`ResultWriter` takes them off it: the analysis thread
hands each result over (the reactions then decide at once) and one thread
writes them in the order they came. The queue is bounded; when it is full,
the analysis thread waits for room (the analysis then falls behind and
skips frames as it would if it were slower itself, and says so), so nothing
analysed is dropped and memory stays bounded. :meth:`ResultWriter.close`
writes what is queued before it returns.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from array import array
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["MAX_QUEUED", "ResultWriter"]

logger = logging.getLogger("smartscope.controller")

T = TypeVar("T")

#: results queued at most (a 2048² frame's labels and denoised image are
#: 32 MB; 8 of them bound the queue at 256 MB)
MAX_QUEUED = 8

_CLOSE = object()


class ResultWriter(Generic[T]):
    """Calls ``write`` with each item :meth:`put` hands over, on a thread of
    its own (started at the first item), in order.

    An exception from ``write`` is logged and the next item written (as an
    exception from an analysis result's callback is). After :meth:`close`,
    :meth:`put` writes on the caller's thread.
    """

    def __init__(
        self,
        write: Callable[[T], None],
        *,
        max_queued: int = MAX_QUEUED,
        name: str = "smartscope-results",
    ) -> None:
        if max_queued < 1:
            raise ValueError(f"max_queued must be at least 1, got {max_queued}")
        self._write = write
        self._name = name
        self._queue: queue.Queue[object] = queue.Queue(max_queued)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        #: items written; each one's write, ms (8 bytes an item); seconds
        #: callers of :meth:`put` waited for room in all
        self.written = 0
        self.write_ms = array("d")
        self.waited_s = 0.0

    @property
    def pending(self) -> int:
        """Items handed over and not yet taken up by the thread."""
        return self._queue.qsize()

    def put(self, item: T) -> None:
        """Hand ``item`` over; waits while the queue is full."""
        with self._lock:  # held while waiting: close() queues behind this item
            if not self._closed:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name=self._name, daemon=True
                    )
                    self._thread.start()
                try:
                    self._queue.put_nowait(item)
                except queue.Full:
                    t0 = time.perf_counter()
                    self._queue.put(item)
                    self.waited_s += time.perf_counter() - t0
                return
        self._write_one(item)

    def close(self, timeout_s: float | None = None) -> bool:
        """Write what is queued and end the thread; whether it has ended
        (False: ``timeout_s`` passed first; call again to go on waiting)."""
        with self._lock:
            thread = self._thread
            if not self._closed:
                self._closed = True
                if thread is not None:
                    self._queue.put(_CLOSE)  # behind every item queued
        if thread is None:
            return True
        thread.join(timeout_s)
        return not thread.is_alive()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _CLOSE:
                return
            try:
                self._write_one(item)  # type: ignore[arg-type]
            except BaseException:  # the thread never ends with items behind it
                logger.exception("storing an analysis result failed")

    def _write_one(self, item: T) -> None:
        t0 = time.perf_counter()
        try:
            self._write(item)
        except Exception:
            logger.exception("storing an analysis result failed")
        self.write_ms.append((time.perf_counter() - t0) * 1000.0)
        self.written += 1
