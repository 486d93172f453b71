"""Virtual time for pymmcore-plus's MDA runner: the one place we hook it.

pymmcore-plus has no setting for a simulated clock. Its runner
(``pymmcore_plus.mda.MDARunner``, checked against 0.18.1) measures
``min_start_time`` on an event timer (``_reset_event_timer`` /
``event_seconds_elapsed``) and sleeps in ``_wait_until_event``. In virtual mode
we replace those three methods *on the runner instance* so that the event timer
reads the sample clock and a wait advances the sample clock instead of
sleeping. Pause and cancel still work: a pause holds the run in real time (the
sample clock stands still) and a cancel ends the wait at once.
``seconds_elapsed`` and the sequence start time stay on the wall clock, so the
engine's per-frame wall-clock metadata keeps its meaning.
"""

from __future__ import annotations

import time
import types
from typing import TYPE_CHECKING

from pymmcore_plus.mda import MDARunner

if TYPE_CHECKING:
    from collections.abc import Callable

    from useq import MDAEvent

    from smartscope.sim.clock import SimClock

__all__ = ["install", "is_installed", "uninstall"]

_HOOKED = ("_reset_event_timer", "event_seconds_elapsed", "_wait_until_event")
_CLOCK_ATTR = "_smartscope_clock"
_VT0_ATTR = "_smartscope_vt0"
_ADVANCE_ATTR = "_smartscope_advance"

# fail loudly at import if pymmcore-plus changed the methods we hook
for _name in _HOOKED:
    if not callable(getattr(MDARunner, _name, None)):  # pragma: no cover
        raise ImportError(
            f"pymmcore_plus.mda.MDARunner.{_name} is missing: smartscope's virtual "
            "time hook supports pymmcore-plus 0.18; pin pymmcore-plus>=0.18.1,<0.19"
        )


def _reset_event_timer(self: MDARunner) -> None:
    MDARunner._reset_event_timer(self)  # keeps the wall-clock _t0 for the engine
    setattr(self, _VT0_ATTR, getattr(self, _CLOCK_ATTR).now())


def _event_seconds_elapsed(self: MDARunner) -> float:
    return float(getattr(self, _CLOCK_ATTR).now() - getattr(self, _VT0_ATTR, 0.0))


def _wait_until_event(self: MDARunner, event: MDAEvent) -> bool:
    from pymmcore_plus.mda._runner import RunState

    clock: SimClock = getattr(self, _CLOCK_ATTR)
    if self._state == RunState.FINISHING:
        return True
    while self._state == RunState.PAUSED:
        time.sleep(self._pause_interval)
    if self._state == RunState.FINISHING:
        return True
    if event.min_start_time:
        remaining = event.min_start_time - self.event_seconds_elapsed()
        if remaining > 0:
            self._signals.awaitingEvent.emit(event, remaining)
            while self._state == RunState.PAUSED:
                time.sleep(self._pause_interval)
            if self._state == RunState.FINISHING:
                return True
            # the simulator's advance also accounts light delivered meanwhile
            advance = getattr(self, _ADVANCE_ATTR, None) or clock.advance
            advance(remaining)
    return self._state == RunState.FINISHING


def install(
    runner: MDARunner,
    clock: SimClock,
    *,
    advance: Callable[[float], None] | None = None,
) -> None:
    """Make ``runner`` wait on ``clock`` (virtual time). ``advance(dt_s)``, if
    given, is called to let time pass (default: ``clock.advance``)."""
    setattr(runner, _CLOCK_ATTR, clock)
    setattr(runner, _ADVANCE_ATTR, advance)
    setattr(runner, _VT0_ATTR, clock.now())
    runner._reset_event_timer = types.MethodType(_reset_event_timer, runner)  # type: ignore[method-assign]
    runner.event_seconds_elapsed = types.MethodType(_event_seconds_elapsed, runner)  # type: ignore[method-assign]
    runner._wait_until_event = types.MethodType(_wait_until_event, runner)  # type: ignore[method-assign]


def uninstall(runner: MDARunner) -> None:
    """Back to pymmcore-plus's own wall-clock waits."""
    for name in (*_HOOKED, _CLOCK_ATTR, _VT0_ATTR, _ADVANCE_ATTR):
        runner.__dict__.pop(name, None)


def is_installed(runner: MDARunner) -> bool:
    """Whether ``runner`` currently waits on a simulator clock."""
    return _CLOCK_ATTR in runner.__dict__
