"""Simulated illumination: a shutter and a multi-line laser with a power setting.

The sample receives light only while the shutter is open (or, with the core's
auto-shutter on, during each exposure, as a real core would open it). Every
change passes through the simulator first, so the light dose is accounted
exactly: power (mW) × open time (s) = mJ.
"""

from __future__ import annotations

from pymmcore_plus.experimental.unicore import (
    GenericDevice,
    ShutterDevice,
    pymm_property,
)

from smartscope.sim._link import SimLinked, check_choice

__all__ = ["LASER_LINES_NM", "SimLaser", "SimShutter"]

LASER_LINES_NM = (405, 488, 561)


class SimShutter(SimLinked, ShutterDevice):
    """Fast shutter in front of the laser."""

    _ROLE = "shutter"

    def __init__(self) -> None:
        super().__init__()
        self.is_open = False

    def get_open(self) -> bool:
        return self.is_open

    def set_open(self, open: bool) -> None:
        sim = self.sim
        with sim._lock:
            sim._sync()
            self.is_open = bool(open)


class SimLaser(SimLinked, GenericDevice):
    """Laser combiner: one active line (Wavelength_nm) at Power_mW (0..MaxPower_mW)."""

    _ROLE = "laser"
    max_power_mw: float = 100.0

    def __init__(self) -> None:
        super().__init__()
        self.power_mw = 10.0
        self.wavelength_nm = 405

    @pymm_property(limits=(0.0, 100.0), name="Power_mW", property_type=float)
    def power_prop(self) -> float:
        return self.power_mw

    @power_prop.setter
    def power_prop(self, value: float) -> None:
        value = float(value)
        if not 0.0 <= value <= self.max_power_mw:
            raise ValueError(
                f"Power_mW: expected 0 to {self.max_power_mw} mW, got {value}"
            )
        sim = self.sim
        with sim._lock:
            sim._sync()
            self.power_mw = value

    @pymm_property(is_read_only=True, name="MaxPower_mW", property_type=float)
    def max_power_prop(self) -> float:
        return self.max_power_mw

    # a string property with the lines as allowed values, like a C++ adapter's
    # (whose values are all strings): GUIs compare the property cache with the
    # Channel presets' text ("488"), and an int would never match
    @pymm_property(
        allowed_values=[str(n) for n in LASER_LINES_NM],
        name="Wavelength_nm",
        property_type=str,
    )
    def wavelength_prop(self) -> str:
        return str(self.wavelength_nm)

    @wavelength_prop.setter
    def wavelength_prop(self, value: str) -> None:
        sim = self.sim
        with sim._lock:
            sim._sync()
            self.wavelength_nm = check_choice("Wavelength_nm", value, LASER_LINES_NM)
