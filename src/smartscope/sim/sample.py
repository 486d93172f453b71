"""The sample holder: a device whose properties choose the simulated sample.

``Seed`` and ``Scene`` (a preset name from ``simulators/scenes/`` or a YAML
path) start a new sample when set; ``TimeMode`` switches between realtime and
virtual time. Setting them from a config file makes a run reproducible.
"""

from __future__ import annotations

from pymmcore_plus.experimental.unicore import GenericDevice, pymm_property

from smartscope.sim._link import SimLinked

__all__ = ["SimSample"]


class SimSample(SimLinked, GenericDevice):
    """Simulated live-cell dish on the stage."""

    _ROLE = "sample"

    @pymm_property(limits=(0, 2**31 - 1), name="Seed", property_type=int)
    def seed_prop(self) -> int:
        return self.sim.seed

    @seed_prop.setter
    def seed_prop(self, value: int) -> None:
        self.sim.reset(seed=int(float(value)))

    @pymm_property(name="Scene", property_type=str)
    def scene_prop(self) -> str:
        return self.sim._preset_name

    @scene_prop.setter
    def scene_prop(self, value: str) -> None:
        self.sim.reset(preset=str(value))

    @pymm_property(
        allowed_values=("realtime", "virtual"), name="TimeMode", property_type=str
    )
    def time_mode_prop(self) -> str:
        return self.sim.time_mode

    @time_mode_prop.setter
    def time_mode_prop(self, value: str) -> None:
        self.sim.time_mode = value  # type: ignore[assignment]
