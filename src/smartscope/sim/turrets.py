"""Simulated objective turret and filter wheel (state devices).

The objective sets magnification (hence pixel size and field of view) and NA
(hence resolution and light collection). The core's pixel-size configurations
cannot key on a Python device, so the objective tells the simulator, which sets
the pixel size of the core it is attached to.
"""

from __future__ import annotations

from typing import NamedTuple

from pymmcore_plus.experimental.unicore import StateDevice

from smartscope.sim._link import SimLinked

__all__ = ["FILTERS", "OBJECTIVES", "ObjectiveSpec", "SimFilter", "SimObjective"]


class ObjectiveSpec(NamedTuple):
    label: str
    magnification: float
    na: float
    immersion_n: float = 1.0


OBJECTIVES: tuple[ObjectiveSpec, ...] = (
    ObjectiveSpec("4x", 4.0, 0.13),
    ObjectiveSpec("10x", 10.0, 0.30),
    ObjectiveSpec("20x", 20.0, 0.75),
    ObjectiveSpec("40x", 40.0, 0.95),
)
FILTERS: tuple[str, ...] = ("DAPI", "GFP", "mCherry")


class SimObjective(SimLinked, StateDevice):
    """Four-position nosepiece: 4x/0.13, 10x/0.30, 20x/0.75, 40x/0.95 (air)."""

    _ROLE = "objective"

    def __init__(self) -> None:
        self._state = 1
        super().__init__({i: o.label for i, o in enumerate(OBJECTIVES)})

    def get_state(self) -> int:
        return self._state

    def set_state(self, position: int) -> None:
        position = int(position)
        if not 0 <= position < len(OBJECTIVES):
            raise ValueError(
                f"Objective: no position {position}; positions are 0..{len(OBJECTIVES) - 1} "
                f"({', '.join(o.label for o in OBJECTIVES)})"
            )
        sim = self.sim
        with sim._lock:
            sim._sync()  # dose so far was at the old field size
            self._state = position
        sim._update_core_pixel_size()

    def initialize(self) -> None:
        super().initialize()
        self.sim._update_core_pixel_size()

    @property
    def spec(self) -> ObjectiveSpec:
        return OBJECTIVES[self._state]

    @property
    def magnification(self) -> float:
        return self.spec.magnification

    @property
    def na(self) -> float:
        return self.spec.na

    @property
    def immersion_n(self) -> float:
        return self.spec.immersion_n


class SimFilter(SimLinked, StateDevice):
    """Emission filter wheel; each position matches one dye of the scene."""

    _ROLE = "filter"

    def __init__(self) -> None:
        self._state = 0
        super().__init__(dict(enumerate(FILTERS)))

    def get_state(self) -> int:
        return self._state

    def set_state(self, position: int) -> None:
        position = int(position)
        if not 0 <= position < len(FILTERS):
            raise ValueError(
                f"Filter: no position {position}; positions are 0..{len(FILTERS) - 1} "
                f"({', '.join(FILTERS)})"
            )
        self._state = position

    @property
    def dye(self) -> str:
        return FILTERS[self._state]
