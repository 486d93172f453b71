"""The sample clock: how much time the sample has lived, in seconds.

``realtime``: the clock follows the wall clock and waiting really sleeps.
``virtual``: the clock only moves when something advances it (an exposure, a
stage move, a time-plan wait), so an hour-long protocol runs in seconds.
"""

from __future__ import annotations

import threading
import time
from typing import Literal

__all__ = ["SimClock", "TimeMode"]

TimeMode = Literal["realtime", "virtual"]
TIME_MODES: tuple[str, str] = ("realtime", "virtual")


class SimClock:
    """A switchable clock. Thread-safe."""

    def __init__(self, mode: TimeMode = "virtual") -> None:
        if mode not in TIME_MODES:
            raise ValueError(f"time mode must be one of {TIME_MODES}, got {mode!r}")
        self._lock = threading.Lock()
        self._mode: TimeMode = mode
        self._t = 0.0
        self._wall0 = time.perf_counter()

    @property
    def mode(self) -> TimeMode:
        return self._mode

    def set_mode(self, mode: TimeMode) -> None:
        """Switch mode without a jump in sample time."""
        if mode not in TIME_MODES:
            raise ValueError(f"time mode must be one of {TIME_MODES}, got {mode!r}")
        with self._lock:
            self._t = self._now_unlocked()
            self._wall0 = time.perf_counter()
            self._mode = mode

    def _now_unlocked(self) -> float:
        if self._mode == "virtual":
            return self._t
        return self._t + (time.perf_counter() - self._wall0)

    def now(self) -> float:
        """Sample time in seconds."""
        with self._lock:
            return self._now_unlocked()

    def advance(self, dt_s: float) -> None:
        """Let ``dt_s`` seconds pass: instantly in virtual mode, by sleeping in realtime."""
        if dt_s <= 0:
            return
        if self._mode == "virtual":
            with self._lock:
                self._t += dt_s
        else:
            time.sleep(dt_s)

    def reset(self) -> None:
        """Back to t = 0."""
        with self._lock:
            self._t = 0.0
            self._wall0 = time.perf_counter()
