"""Simulated XY and Z stages: travel limits, finite speed, moves take sample time.

In virtual time a move advances the sample clock by its duration; in realtime
the stage reports busy until the move is done (``core.waitForDevice`` waits).
A move outside the travel range is refused with an error and does not happen.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from pymmcore_plus.core._constants import FocusDirection
from pymmcore_plus.experimental.unicore import StageDevice, XYStageDevice, pymm_property

from smartscope.sim._link import SimLinked

if TYPE_CHECKING:
    from smartscope.sim.simulator import Simulator

__all__ = ["SimXYStage", "SimZStage"]


def _take_time(
    sim: Simulator, dist_um: float, speed_um_per_s: float, settle_s: float
) -> float:
    """Let a move of ``dist_um`` take its time; return when it is done (sample
    clock). In virtual time the clock advances now; in realtime the stage
    reports busy until then."""
    duration = dist_um / speed_um_per_s + (settle_s if dist_um > 0 else 0.0)
    if sim.clock.mode == "virtual":
        sim.advance(duration)
        return 0.0
    return sim.clock.now() + duration


class SimXYStage(SimLinked, XYStageDevice):
    """Motorised XY stage, ±5 mm travel, 5 mm/s."""

    _ROLE = "xy"
    travel_um: tuple[float, float, float, float] = (-5000.0, 5000.0, -5000.0, 5000.0)
    settle_s: float = 0.02

    def __init__(self) -> None:
        super().__init__()
        self._x = 0.0
        self._y = 0.0
        self._ox = 0.0
        self._oy = 0.0
        self.speed_um_per_s = 5000.0
        self._busy_until = 0.0

    @pymm_property(limits=(10.0, 50000.0), name="Speed_um_per_s", property_type=float)
    def speed_prop(self) -> float:
        return self.speed_um_per_s

    @speed_prop.setter
    def speed_prop(self, value: float) -> None:
        self.speed_um_per_s = float(value)

    @pymm_property(is_read_only=True, name="TravelRange_um", property_type=str)
    def travel_prop(self) -> str:
        x0, x1, y0, y1 = self.travel_um
        return f"x {x0:g}..{x1:g}, y {y0:g}..{y1:g}"

    @property
    def origin_um(self) -> tuple[float, float]:
        """Physical position that reads as (0, 0)."""
        return (self._ox, self._oy)

    def physical_position_um(self) -> tuple[float, float]:
        return (self._x, self._y)

    def get_position_um(self) -> tuple[float, float]:
        return (self._x - self._ox, self._y - self._oy)

    def set_position_um(self, x: float, y: float) -> None:
        px, py = float(x) + self._ox, float(y) + self._oy
        x0, x1, y0, y1 = self.travel_um
        if not (x0 <= px <= x1 and y0 <= py <= y1) or not (
            math.isfinite(px) and math.isfinite(py)
        ):
            raise ValueError(
                f"{self.get_label() or 'XY'}: target ({x:.1f}, {y:.1f}) µm is outside "
                f"the travel range x {x0:g}..{x1:g}, y {y0:g}..{y1:g} µm "
                "(physical coordinates); the stage did not move"
            )
        sim = self.sim
        sim._check_stage_fault("XY")
        with sim._lock:
            sim._sync()
            dist = max(abs(px - self._x), abs(py - self._y))
            self._x, self._y = px, py
        self._busy_until = _take_time(sim, dist, self.speed_um_per_s, self.settle_s)
        self._emit("XYStagePositionChanged", self.get_label(), *self.get_position_um())

    def busy(self) -> bool:
        return self.sim.clock.now() < self._busy_until

    def seconds_until_idle(self) -> float:
        """Sample seconds until the move is done (0 when idle)."""
        return max(0.0, self._busy_until - self.sim.clock.now())

    def set_origin_x(self) -> None:
        self._ox = self._x

    def set_origin_y(self) -> None:
        self._oy = self._y

    def set_adapter_origin_um(self, x: float = 0.0, y: float = 0.0) -> None:
        self._ox, self._oy = self._x - float(x), self._y - float(y)

    def home(self) -> None:
        self.set_position_um(-self._ox, -self._oy)

    def stop(self) -> None:
        self._busy_until = 0.0


class SimZStage(SimLinked, StageDevice):
    """Motorised focus drive, ±1 mm travel, 500 µm/s. Larger Z is toward the sample."""

    _ROLE = "z"
    travel_um: tuple[float, float] = (-1000.0, 1000.0)
    speed_um_per_s: float = 500.0
    settle_s: float = 0.01

    def __init__(self) -> None:
        super().__init__()
        self._z = 0.0
        self._oz = 0.0
        self._busy_until = 0.0

    @property
    def position_um(self) -> float:
        """Physical Z position (the focal plane is given in these units)."""
        return self._z

    def get_position_um(self) -> float:
        return self._z - self._oz

    def set_position_um(self, val: float) -> None:
        pz = float(val) + self._oz
        z0, z1 = self.travel_um
        if not (math.isfinite(pz) and z0 <= pz <= z1):
            raise ValueError(
                f"{self.get_label() or 'Z'}: target {val:.2f} µm is outside the "
                f"travel range {z0:g}..{z1:g} µm; the stage did not move"
            )
        sim = self.sim
        sim._check_stage_fault("Z")
        dist = abs(pz - self._z)
        self._z = pz
        self._busy_until = _take_time(sim, dist, self.speed_um_per_s, self.settle_s)
        self._emit("stagePositionChanged", self.get_label(), self.get_position_um())

    def busy(self) -> bool:
        return self.sim.clock.now() < self._busy_until

    def seconds_until_idle(self) -> float:
        """Sample seconds until the move is done (0 when idle)."""
        return max(0.0, self._busy_until - self.sim.clock.now())

    def get_focus_direction(self) -> FocusDirection:
        return FocusDirection.TowardSample

    def set_origin(self) -> None:
        self._oz = self._z

    def set_adapter_origin_um(self, newZUm: float) -> None:
        self._oz = self._z - float(newZUm)

    def home(self) -> None:
        self.set_position_um(-self._oz)

    def stop(self) -> None:
        self._busy_until = 0.0
