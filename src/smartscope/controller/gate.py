"""The state the run's threads share, and the waits on it: pause, stop, and
how far the analysis lags behind the acquisition.

One condition variable guards it all, so every wait is a ``wait_for`` on a
predicate (no polling loops) and every change wakes the waiters.
"""

from __future__ import annotations

import threading

__all__ = ["RunGate"]


class RunGate:
    """Pause, stop request and analysis lag, safe from any thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._paused = False
        self._submitted = 0
        self._settled = 0
        #: why and how the run is ending ("" while it goes on)
        self.stop_reason = ""
        #: "stopped", "interrupted" or "error" once a stop was asked for
        self.stop_status = ""
        #: protocol | reaction | on_error | user: who asked a "stopped" run to stop
        self.stopped_by: str | None = None
        #: the signal that interrupted the run, when one did
        self.signal: str | None = None
        self.interrupted = False

    @property
    def stopping(self) -> bool:
        return bool(self.stop_reason)

    @property
    def lag(self) -> int:
        """Frames handed to the analysis and not yet analysed or skipped."""
        return max(0, self._submitted - self._settled)

    def request_stop(
        self,
        reason: str,
        status: str,
        *,
        by: str | None = None,
        signal: str | None = None,
    ) -> None:
        """Ask the run to end; the first reason stays, an interrupt always counts."""
        with self._cond:
            if status == "interrupted":
                self.interrupted = True
                self.signal = self.signal or signal
            if not self.stop_reason:
                self.stop_reason, self.stop_status = reason, status
                self.stopped_by = by
            self._cond.notify_all()

    def pause(self) -> None:
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def hold(self) -> bool:
        """Wait while paused; True when the run is stopping."""
        with self._cond:
            self._cond.wait_for(lambda: not self._paused or self.stopping)
        return self.stopping

    def submitted(self) -> None:
        """A frame went to the analysis."""
        with self._cond:
            self._submitted += 1

    def settled(self) -> None:
        """A frame's analysis ended (analysed or skipped)."""
        with self._cond:
            self._settled += 1
            self._cond.notify_all()

    def wait_settled_after(self, seen: int, timeout_s: float) -> tuple[bool, int]:
        """Wait until more than ``seen`` frames have settled, or the analysis
        has caught up, or the run stops, at most ``timeout_s``. Returns
        (caught up or stopping, frames settled now)."""
        with self._cond:
            self._cond.wait_for(
                lambda: (
                    self._settled > seen
                    or self._settled >= self._submitted
                    or self.stopping
                ),
                timeout_s,
            )
            done = self._settled >= self._submitted or self.stopping
            return done, self._settled

    def wait_lag_below(self, n: int, timeout_s: float) -> bool:
        """Wait until fewer than ``n`` frames are handed to the analysis and not
        yet settled (or the run stops), at most ``timeout_s``; True when so."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._submitted - self._settled < n or self.stopping,
                timeout_s,
            )

    def wait_caught_up(self, timeout_s: float) -> bool:
        """Wait until the analysis has caught up (or the run stops), at most
        ``timeout_s``; True when caught up."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._settled >= self._submitted or self.stopping, timeout_s
            )
