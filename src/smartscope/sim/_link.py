"""How a simulated device finds the simulator shared by its core's devices."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from smartscope.sim.simulator import Role, Simulator


class SimLinked:
    """Mixin for the simulator's pymmcore-plus Python devices.

    Every device of one core sees the same ``events.propertyChanged`` through
    its core proxy (a psygnal signal of the core's group, or a Qt bound signal
    of the core's signaler); the simulator registry is keyed on it.
    """

    _ROLE: ClassVar[Role]
    _sim: Simulator | None = None
    core: Any

    @property
    def sim(self) -> Simulator:
        """The simulator this device belongs to."""
        if self._sim is None:
            from smartscope.sim.simulator import _simulator_for_signaler

            self._sim = _simulator_for_signaler(self.core.events.propertyChanged)
        return self._sim

    def _emit(self, signal: str, *args: Any) -> None:
        """Tell the core's listeners (GUIs: pymmcore-widgets, napari) what
        changed, as a C++ device adapter's callbacks do; never fails the call."""
        with contextlib.suppress(Exception):
            getattr(self.core.events, signal).emit(*args)

    def initialize(self) -> None:
        self.sim._register(self._ROLE, self)

    def shutdown(self) -> None:
        if self._sim is not None:
            self._sim._unregister(self)
        self._sim = None


def check_choice(name: str, value: Any, choices: tuple, cast: type = int) -> Any:
    """Convert ``value`` (often a string from a config file) and check it."""
    try:
        v = cast(float(value)) if cast is int else cast(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name}: expected one of {list(choices)}, got {value!r}"
        ) from None
    if v not in choices:
        raise ValueError(f"{name}: expected one of {list(choices)}, got {value!r}")
    return v
