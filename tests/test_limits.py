"""Safety limits: every action is applied, clamped or refused, with a reason."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from smartscope.actions import (
    AddPosition,
    MoveFocus,
    MoveStage,
    SetExposure,
    SetInterval,
    SetLaserPower,
    SetProperty,
)
from smartscope.limits import HardwareState, SafetyLimits

STATE = HardwareState(
    x_um=0,
    y_um=0,
    z_um=0,
    exposure_ms=50,
    laser_mw=10,
    light_dose_mj=0,
    n_positions=1,
    interval_s=60,
)
LIM = SafetyLimits(
    xy_box_um=(-100, 100, -100, 100),
    max_xy_step_um=50,
    z_range_um=(-10, 10),
    max_z_step_um=5,
    exposure_range_ms=(1, 200),
    max_laser_mw=20,
    light_dose_budget_mj=100,
    max_positions=2,
)


def test_move_within_limits_is_applied() -> None:
    v = LIM.check(MoveStage(x_um=10, y_um=-20), STATE)
    assert v.status == "applied"
    assert (v.action.x_um, v.action.y_um) == (10, -20)


def test_large_step_is_clamped_along_its_direction() -> None:
    v = LIM.check(MoveStage(x_um=300, y_um=400), STATE)  # 500 µm away, 3-4-5
    assert v.status == "clamped"
    assert v.action.x_um == pytest.approx(30)
    assert v.action.y_um == pytest.approx(40)
    assert "max_xy_step_um" in v.reason


def test_target_outside_box_is_clamped_into_it() -> None:
    s = HardwareState(**{**STATE.__dict__, "x_um": 90.0})
    v = LIM.check(MoveStage(x_um=20, y_um=0, relative=True), s)
    assert v.status == "clamped"
    assert v.action.x_um == pytest.approx(100)
    assert "xy_box_um" in v.reason


def test_move_with_nothing_left_after_clamping_is_refused() -> None:
    s = HardwareState(**{**STATE.__dict__, "x_um": 100.0})
    v = LIM.check(MoveStage(x_um=150, y_um=0), s)
    assert v.status == "refused"
    assert v.action is None


def test_nonfinite_values_cannot_be_made_and_are_refused_if_forced() -> None:
    with pytest.raises(ValueError, match="x_um must be finite"):
        MoveStage(x_um=float("nan"), y_um=0)
    with pytest.raises(ValueError, match="exposure_ms must be finite"):
        SetExposure(exposure_ms=float("inf"))
    with pytest.raises(ValueError, match="interval_s must be >= 0"):
        SetInterval(interval_s=-3)
    forced = MoveStage(x_um=0, y_um=0)
    object.__setattr__(forced, "x_um", float("nan"))
    assert LIM.check(forced, STATE).status == "refused"
    forced = SetExposure(exposure_ms=1)
    object.__setattr__(forced, "exposure_ms", float("inf"))
    assert LIM.check(forced, STATE).status == "refused"


def test_focus_exposure_power_interval_clamps() -> None:
    assert LIM.check(MoveFocus(z_um=8), STATE).action.z_um == pytest.approx(5)
    assert LIM.check(SetExposure(exposure_ms=1000), STATE).action.exposure_ms == 200
    v = LIM.check(SetLaserPower(power_mw=80), STATE)
    assert (v.status, v.action.power_mw) == ("clamped", 20)
    assert LIM.check(SetInterval(interval_s=0), STATE).action.interval_s == 0


def test_dose_budget_refuses_more_light_but_allows_less() -> None:
    spent = HardwareState(**{**STATE.__dict__, "light_dose_mj": 100.0})
    assert LIM.check(SetExposure(exposure_ms=100), spent).status == "refused"
    assert LIM.check(SetLaserPower(power_mw=15), spent).status == "refused"
    assert LIM.check(SetExposure(exposure_ms=10), spent).status == "applied"
    assert LIM.check(AddPosition(x_um=0, y_um=0), spent).status == "refused"


def test_positions_and_properties() -> None:
    assert LIM.check(AddPosition(x_um=500, y_um=0), STATE).status == "refused"
    full = HardwareState(**{**STATE.__dict__, "n_positions": 2})
    assert "max_positions" in LIM.check(AddPosition(x_um=0, y_um=0), full).reason
    v = LIM.check(SetProperty(device="Camera", prop="Gain_e_per_ADU", value=2), STATE)
    assert v.status == "refused"
    assert "allowed_properties" in v.reason


@pytest.mark.parametrize(
    "bad",
    [
        {"xy_box_um": (10, -10, 0, 5)},
        {"z_range_um": (5, -5)},
        {"exposure_range_ms": (10, 1)},
        {"max_laser_mw": -1},
        {"unknown_field": 3},
    ],
)
def test_contradictory_limits_are_refused(bad: dict) -> None:
    with pytest.raises(ValidationError):
        SafetyLimits(**bad)
