"""Simulated objective turret and filter wheel (state devices).

The objective sets magnification (hence pixel size and field of view) and NA
(hence resolution and light collection); each objective is also a little off
the reference's optical axis and focal plane (``ObjectiveSpec``), as on a real
nosepiece. The core's pixel-size configurations cannot key on a Python device,
so the objective tells the simulator, which sets the pixel size of the core it
is attached to.
"""

from __future__ import annotations

from typing import NamedTuple

from pymmcore_plus.experimental.unicore import StateDevice

from smartscope.sim._link import SimLinked

__all__ = [
    "FILTERS",
    "OBJECTIVES",
    "ObjectiveSpec",
    "SimFilter",
    "SimObjective",
    "objective_spec",
]


class ObjectiveSpec(NamedTuple):
    """One objective of the simulated nosepiece, with its true misalignment.

    The offsets are relative to the 10x reference objective (which defines the
    scene's coordinates) and are what a real nosepiece has and a calibration
    measures: ``offset_x_um``/``offset_y_um`` say where this objective's
    optical axis lands, so the sample point at the image centre is the stage
    position plus the offset (a cell at truth position ``(x, y)`` is centred
    with this objective at stage ``(x - offset_x_um, y - offset_y_um)``);
    ``parfocal_z_um`` is the Z stage position in focus with this objective
    minus the one in focus with the reference (the scene's focal plane).
    """

    label: str
    magnification: float
    na: float
    immersion_n: float = 1.0
    offset_x_um: float = 0.0
    offset_y_um: float = 0.0
    parfocal_z_um: float = 0.0


#: The nosepiece, in turret order. 10x (the reference) and 20x are aligned;
#: 4x and 40x are off by a few micrometres, as real objectives are.
OBJECTIVES: tuple[ObjectiveSpec, ...] = (
    ObjectiveSpec(
        "4x", 4.0, 0.13, offset_x_um=-4.0, offset_y_um=3.0, parfocal_z_um=-2.5
    ),
    ObjectiveSpec("10x", 10.0, 0.30),
    ObjectiveSpec("20x", 20.0, 0.75),
    ObjectiveSpec(
        "40x", 40.0, 0.95, offset_x_um=14.0, offset_y_um=-9.0, parfocal_z_um=3.5
    ),
)


def objective_spec(label: str) -> ObjectiveSpec:
    """The simulated objective called ``label`` (``KeyError`` naming the
    known labels if there is none)."""
    for o in OBJECTIVES:
        if o.label == label:
            return o
    raise KeyError(
        f"no simulated objective {label!r}; known: {[o.label for o in OBJECTIVES]}"
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

    @property
    def offset_um(self) -> tuple[float, float]:
        """(x, y) of the sample point at the image centre minus the stage
        position, µm (see :class:`ObjectiveSpec`)."""
        spec = self.spec
        return spec.offset_x_um, spec.offset_y_um

    @property
    def parfocal_z_um(self) -> float:
        return self.spec.parfocal_z_um


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
