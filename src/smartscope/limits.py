"""The safety envelope every action passes before it reaches the hardware.

``SafetyLimits`` is a frozen pydantic model (units in the field names).
``SafetyLimits.check(action, state)`` returns a :class:`Verdict`: the action as
it may be applied (``applied``), a clamped copy (``clamped``), or ``refused``,
always with the reason. The controller logs every verdict and applies only
what the verdict allows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from smartscope.actions import (
    Action,
    AddPosition,
    Autofocus,
    MoveFocus,
    MoveStage,
    RemovePosition,
    SetExposure,
    SetInterval,
    SetLaserPower,
    SetObjective,
    SetProperty,
    Stop,
)

__all__ = ["HardwareState", "SafetyLimits", "Verdict"]

Status = Literal["applied", "clamped", "refused"]


@dataclass(frozen=True)
class HardwareState:
    """What the limits need to know about the microscope now."""

    x_um: float
    y_um: float
    z_um: float
    exposure_ms: float
    laser_mw: float
    light_dose_mj: float
    n_positions: int
    interval_s: float


@dataclass(frozen=True)
class Verdict:
    status: Status
    action: Action | None
    reason: str = ""

    @property
    def allowed(self) -> bool:
        return self.status != "refused"


def _clamp(v: float, lo: float, hi: float) -> float:
    return min(max(v, lo), hi)


class SafetyLimits(BaseModel):
    """Where the microscope may go and how much light it may use.

    ``None`` means "no limit" for optional fields.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    xy_box_um: tuple[float, float, float, float] | None = Field(
        None, description="(x_min, x_max, y_min, y_max) the stage may visit, µm"
    )
    max_xy_step_um: float | None = Field(
        500.0, gt=0, description="largest XY move per action"
    )
    z_range_um: tuple[float, float] | None = Field(
        None, description="(z_min, z_max), µm"
    )
    max_z_step_um: float | None = Field(
        50.0, gt=0, description="largest Z move per action"
    )
    exposure_range_ms: tuple[float, float] = Field((0.1, 5000.0))
    max_laser_mw: float | None = Field(None, ge=0)
    light_dose_budget_mj: float | None = Field(
        None, gt=0, description="total illumination energy for the run (mW·s)"
    )
    interval_range_s: tuple[float, float] = Field((0.0, 86400.0))
    max_positions: int = Field(200, ge=1)
    max_autofocus_planes: int = Field(
        41, ge=3, le=1001, description="most Z planes one autofocus sweep may take"
    )
    allowed_properties: tuple[str, ...] = Field(
        (), description='"Device.Property" pairs a SetProperty action may change'
    )
    objectives: tuple[str, ...] | None = Field(
        None,
        description="objective presets a SetObjective action may switch to "
        "(None: any preset of the objective group)",
    )

    @field_validator("xy_box_um")
    @classmethod
    def _box(cls, v: tuple[float, float, float, float] | None) -> Any:
        if v is not None and not (v[0] < v[1] and v[2] < v[3]):
            raise ValueError(
                f"expected (x_min, x_max, y_min, y_max) with min < max, got {v}"
            )
        return v

    @field_validator("z_range_um")
    @classmethod
    def _zr(cls, v: tuple[float, float] | None) -> Any:
        if v is not None and not v[0] < v[1]:
            raise ValueError(f"expected (z_min, z_max) with min < max, got {v}")
        return v

    @field_validator("exposure_range_ms")
    @classmethod
    def _er(cls, v: tuple[float, float]) -> Any:
        if not 0 < v[0] <= v[1]:
            raise ValueError(f"expected (min, max) with 0 < min <= max, got {v}")
        return v

    @field_validator("interval_range_s")
    @classmethod
    def _ir(cls, v: tuple[float, float]) -> Any:
        if not 0 <= v[0] <= v[1]:
            raise ValueError(f"expected (min, max) with 0 <= min <= max, got {v}")
        return v

    # ------------------------------------------------------------ plans

    def check_point(
        self, x_um: float | None, y_um: float | None, z_um: float | None
    ) -> str | None:
        """Why a planned position is outside the envelope, or None."""
        for name, v in (("x", x_um), ("y", y_um), ("z", z_um)):
            if v is not None and not math.isfinite(v):
                return f"{name} {v} µm is not a finite number"
        if self.xy_box_um is not None and x_um is not None and y_um is not None:
            x0, x1, y0, y1 = self.xy_box_um
            if not (x0 <= x_um <= x1 and y0 <= y_um <= y1):
                return (
                    f"position ({x_um:g}, {y_um:g}) µm is outside xy_box_um "
                    f"{self.xy_box_um}"
                )
        if self.z_range_um is not None and z_um is not None:
            z0, z1 = self.z_range_um
            if not z0 <= z_um <= z1:
                return f"z {z_um:g} µm is outside z_range_um {self.z_range_um}"
        return None

    # ------------------------------------------------------------ actions

    def check(self, action: Action, state: HardwareState) -> Verdict:
        """Clamp or refuse ``action`` given the current ``state``."""
        handler = getattr(self, f"_check_{action.kind}", None)
        if handler is None:
            return Verdict("refused", None, f"unknown action type {action.kind!r}")
        return handler(action, state)

    def _over_budget(self, state: HardwareState) -> bool:
        return (
            self.light_dose_budget_mj is not None
            and state.light_dose_mj >= self.light_dose_budget_mj
        )

    def _check_MoveStage(self, a: MoveStage, s: HardwareState) -> Verdict:
        if not (math.isfinite(a.x_um) and math.isfinite(a.y_um)):
            return Verdict("refused", None, f"non-finite target ({a.x_um}, {a.y_um})")
        tx, ty = (s.x_um + a.x_um, s.y_um + a.y_um) if a.relative else (a.x_um, a.y_um)
        reasons = []
        dx, dy = tx - s.x_um, ty - s.y_um
        step = math.hypot(dx, dy)
        if self.max_xy_step_um is not None and step > self.max_xy_step_um:
            f = self.max_xy_step_um / step
            tx, ty = s.x_um + dx * f, s.y_um + dy * f
            reasons.append(
                f"step {step:.1f} µm > max_xy_step_um {self.max_xy_step_um:g}"
            )
        if self.xy_box_um is not None:
            x0, x1, y0, y1 = self.xy_box_um
            cx, cy = _clamp(tx, x0, x1), _clamp(ty, y0, y1)
            if (cx, cy) != (tx, ty):
                reasons.append(
                    f"target ({tx:.1f}, {ty:.1f}) outside xy_box_um {self.xy_box_um}"
                )
                tx, ty = cx, cy
        if not reasons:
            return Verdict("applied", a.with_values(x_um=tx, y_um=ty, relative=False))
        if math.hypot(tx - s.x_um, ty - s.y_um) < 1e-6:
            return Verdict(
                "refused", None, "; ".join(reasons) + "; no move left after clamping"
            )
        return Verdict(
            "clamped",
            a.with_values(x_um=tx, y_um=ty, relative=False),
            "; ".join(reasons),
        )

    def _check_MoveFocus(self, a: MoveFocus, s: HardwareState) -> Verdict:
        if not math.isfinite(a.z_um):
            return Verdict("refused", None, f"non-finite z {a.z_um}")
        tz = s.z_um + a.z_um if a.relative else a.z_um
        reasons = []
        if self.max_z_step_um is not None and abs(tz - s.z_um) > self.max_z_step_um:
            reasons.append(
                f"step {tz - s.z_um:.2f} µm exceeds max_z_step_um {self.max_z_step_um:g}"
            )
            tz = s.z_um + math.copysign(self.max_z_step_um, tz - s.z_um)
        if self.z_range_um is not None:
            cz = _clamp(tz, *self.z_range_um)
            if cz != tz:
                reasons.append(f"z {tz:.2f} outside z_range_um {self.z_range_um}")
                tz = cz
        if not reasons:
            return Verdict("applied", a.with_values(z_um=tz, relative=False))
        return Verdict(
            "clamped", a.with_values(z_um=tz, relative=False), "; ".join(reasons)
        )

    def _spent(self) -> Verdict:
        return Verdict(
            "refused",
            None,
            f"light-dose budget {self.light_dose_budget_mj:g} mJ is spent",
        )

    def _check_scalar(
        self,
        a: Action,
        s: HardwareState,
        *,
        field: str,
        unit: str,
        bounds: tuple[float, float],
        bounds_name: str,
        more_light: bool,
    ) -> Verdict:
        """Refuse a non-finite value or more light past the budget; clamp into
        ``bounds``."""
        value = getattr(a, field)
        if not math.isfinite(value):
            return Verdict("refused", None, f"non-finite {field} {value}")
        if more_light and self._over_budget(s):
            return self._spent()
        v = _clamp(value, *bounds)
        if v != value:
            return Verdict(
                "clamped",
                a.with_values(**{field: v}),
                f"{field} {value:g} {unit} outside {bounds_name} {bounds}",
            )
        return Verdict("applied", a)

    def _check_SetExposure(self, a: SetExposure, s: HardwareState) -> Verdict:
        return self._check_scalar(
            a,
            s,
            field="exposure_ms",
            unit="ms",
            bounds=self.exposure_range_ms,
            bounds_name="exposure_range_ms",
            more_light=a.exposure_ms > s.exposure_ms,
        )

    def _check_SetLaserPower(self, a: SetLaserPower, s: HardwareState) -> Verdict:
        if a.power_mw < 0:
            return Verdict("refused", None, f"negative laser power {a.power_mw} mW")
        top = self.max_laser_mw if self.max_laser_mw is not None else math.inf
        return self._check_scalar(
            a,
            s,
            field="power_mw",
            unit="mW",
            bounds=(0.0, top),
            bounds_name="(0, max_laser_mw)",
            more_light=a.power_mw > s.laser_mw,
        )

    def _check_SetInterval(self, a: SetInterval, s: HardwareState) -> Verdict:
        # a shorter interval means more frames, hence more light
        return self._check_scalar(
            a,
            s,
            field="interval_s",
            unit="s",
            bounds=self.interval_range_s,
            bounds_name="interval_range_s",
            more_light=a.interval_s < s.interval_s,
        )

    def _check_AddPosition(self, a: AddPosition, s: HardwareState) -> Verdict:
        if s.n_positions >= self.max_positions:
            return Verdict(
                "refused", None, f"max_positions {self.max_positions} reached"
            )
        if self._over_budget(s):
            return self._spent()
        why = self.check_point(a.x_um, a.y_um, a.z_um)
        if why:
            return Verdict("refused", None, why)
        return Verdict("applied", a)

    def _check_SetProperty(self, a: SetProperty, s: HardwareState) -> Verdict:
        key = f"{a.device}.{a.prop}"
        if key not in self.allowed_properties:
            return Verdict(
                "refused",
                None,
                f"property {key} is not in allowed_properties {list(self.allowed_properties)}",
            )
        return Verdict("applied", a)

    def check_exposure(self, exposure_ms: float) -> str | None:
        """Why a planned exposure is outside the envelope, or None."""
        lo, hi = self.exposure_range_ms
        if not (math.isfinite(exposure_ms) and lo <= exposure_ms <= hi):
            return f"exposure {exposure_ms:g} ms is outside exposure_range_ms {self.exposure_range_ms}"
        return None

    def check_power(self, power_mw: float) -> str | None:
        """Why a planned light-source power is outside the envelope, or None."""
        if not math.isfinite(power_mw) or power_mw < 0:
            return f"power {power_mw} mW is not a finite number >= 0"
        if self.max_laser_mw is not None and power_mw > self.max_laser_mw:
            return f"power {power_mw:g} mW exceeds max_laser_mw {self.max_laser_mw:g}"
        return None

    def _check_Autofocus(self, a: Autofocus, s: HardwareState) -> Verdict:
        """A sweep is light and Z travel: refused past the dose budget; its
        planes capped by ``max_autofocus_planes``, its span by
        ``max_z_step_um`` (each side) and kept inside ``z_range_um``."""
        if self._over_budget(s):
            return self._spent()
        reasons = []
        centre = s.z_um if a.center_um is None else a.center_um
        half = a.range_um / 2
        cap = self.max_z_step_um
        if cap is not None and abs(centre - s.z_um) + half > cap:
            # no plane further than max_z_step_um from the focus now
            reasons.append(
                f"sweep {centre - half:.1f}..{centre + half:.1f} µm goes further "
                f"than max_z_step_um {cap:g} from the focus {s.z_um:.1f}"
            )
            half = min(half, cap)
            off = max(-(cap - half), min(cap - half, centre - s.z_um))
            centre = s.z_um + off
        lo, hi = centre - half, centre + half
        if self.z_range_um is not None:
            z0, z1 = self.z_range_um
            if lo < z0 or hi > z1:
                reasons.append(
                    f"sweep {lo:.1f}..{hi:.1f} µm leaves z_range_um {self.z_range_um}"
                )
                lo, hi = max(lo, z0), min(hi, z1)
        step = a.step_um
        if hi - lo <= 1e-6:
            return Verdict(
                "refused",
                None,
                "; ".join([*reasons, "no sweep left inside the limits"]),
            )
        n_f = (hi - lo) / step + 1
        n = math.floor(n_f + 1e-9) if math.isfinite(n_f) and n_f < 1e9 else 10**9
        if n > self.max_autofocus_planes:
            step = (hi - lo) / (self.max_autofocus_planes - 1)
            reasons.append(
                f"{n} planes exceed max_autofocus_planes {self.max_autofocus_planes}"
            )
        if n < 3:
            step = (hi - lo) / 2
        out = a.with_values(range_um=hi - lo, step_um=step, center_um=(lo + hi) / 2)
        assert isinstance(out, Autofocus)
        if self.light_dose_budget_mj is not None:
            # at the most power the light may have when the sweep runs
            power = max(s.laser_mw, self.max_laser_mw or 0.0)
            need = out.n_planes * s.exposure_ms * power / 1000.0
            left = self.light_dose_budget_mj - s.light_dose_mj
            if need > left:
                return Verdict(
                    "refused",
                    None,
                    f"the sweep needs {need:.3g} mJ; {left:.3g} mJ of "
                    f"light_dose_budget_mj {self.light_dose_budget_mj:g} is left",
                )
        if reasons:
            return Verdict("clamped", out, "; ".join(reasons))
        return Verdict("applied", out)

    def _check_Stop(self, a: Stop, s: HardwareState) -> Verdict:
        return Verdict("applied", a)

    def _check_RemovePosition(self, a: RemovePosition, s: HardwareState) -> Verdict:
        return Verdict("applied", a)  # less light, no movement

    def _check_SetObjective(self, a: SetObjective, s: HardwareState) -> Verdict:
        if self.objectives is not None and a.objective not in self.objectives:
            return Verdict(
                "refused",
                None,
                f"objective {a.objective!r} is not in limits.objectives "
                f"{list(self.objectives)}",
            )
        return Verdict("applied", a)
