"""Reactions are pure policies: FrameResult in, actions out."""

from __future__ import annotations

import numpy as np
import pytest

from smartscope.actions import MoveStage, SetExposure, SetLaserPower
from smartscope.analysis.result import FrameInput, FrameResult, ObjectMeasurement
from smartscope.limits import HardwareState
from smartscope.reactions import AdaptiveExposure, CenterOn, RunView, create_reaction


def _frame(
    i: int,
    *,
    x: float = 0.0,
    y: float = 0.0,
    t: float = 0.0,
    exposure: float = 50.0,
    laser: float = 10.0,
) -> FrameInput:
    return FrameInput(
        image=np.zeros((4, 4), np.uint16),
        frame_index=i,
        position="p0",
        stage_x_um=x,
        stage_y_um=y,
        z_um=0.0,
        pixel_size_um=0.5,
        exposure_ms=exposure,
        t_frame=0.0,
        t_s=t,
        channel="DAPI",
        laser_mw=laser,
    )


def _obj(track: int, x: float, y: float, mean: float = 1000.0) -> ObjectMeasurement:
    return ObjectMeasurement(
        label=track,
        track_id=track,
        x_um=x,
        y_um=y,
        row=0,
        col=0,
        area_um2=100.0,
        mean_intensity=mean,
    )


def _view(
    exposure: float = 50.0, laser: float = 10.0, interval: float = 60.0
) -> RunView:
    st = HardwareState(
        x_um=0,
        y_um=0,
        z_um=0,
        exposure_ms=exposure,
        laser_mw=laser,
        light_dose_mj=0,
        n_positions=1,
        interval_s=interval,
    )
    return RunView(
        state=st,
        positions={"p0": (0, 0, None)},
        fov_um=(200, 200),
        frames_acquired=1,
        t_s=0,
    )


def test_center_on_follows_the_track_nearest_the_centre() -> None:
    r = CenterOn(dead_band_fraction=0.05, max_step_um=100, lead=0)
    res = FrameResult(
        _frame(0), (_obj(1, 30, 0), _obj(2, 90, 50)), None, None, 100.0, 0.0
    )
    (a,) = r.react(res, _view())
    assert isinstance(a, MoveStage)
    assert (a.x_um, a.y_um) == pytest.approx((30, 0))
    assert r.target_track == 1
    # next frame: the stage is on the cell, which moved; track 2 is nearer the centre
    res2 = FrameResult(
        _frame(1, x=30, t=60), (_obj(1, 45, 5), _obj(2, 35, 0)), None, None, 100.0, 0.0
    )
    (b,) = r.react(res2, _view())
    assert (b.x_um, b.y_um) == pytest.approx((45, 5))


def test_center_on_dead_band_and_max_step() -> None:
    r = CenterOn(dead_band_fraction=0.1, max_step_um=20, lead=0)
    near = FrameResult(_frame(0), (_obj(1, 5, 0),), None, None, 100.0, 0.0)
    assert r.react(near, _view()) == ()  # 5 µm < 10% of the 100 µm half field
    far = FrameResult(_frame(1, t=60), (_obj(1, 80, 0),), None, None, 100.0, 0.0)
    (a,) = r.react(far, _view())
    assert a.x_um == pytest.approx(20)


def test_center_on_leads_a_moving_cell() -> None:
    r = CenterOn(dead_band_fraction=0.0, lead=1.0)
    r.react(FrameResult(_frame(0), (_obj(1, 0, 0),), None, None, 0, 0), _view())
    (a,) = r.react(
        FrameResult(_frame(1, t=60), (_obj(1, 10, 0),), None, None, 0, 0),
        _view(interval=60),
    )
    assert a.x_um > 10  # aims where the cell will be


def test_adaptive_exposure_raises_exposure_first_then_power() -> None:
    r = AdaptiveExposure(
        target_adu=1000,
        tolerance=0.1,
        max_exposure_ms=100,
        min_power_mw=10,
        max_power_mw=40,
    )
    dim = FrameResult(
        _frame(0, exposure=50), (_obj(1, 0, 0, mean=600),), None, None, 100.0, 0
    )
    (a,) = r.react(dim, _view())  # signal 500 -> needs 2x light: exposure 100 ms
    assert isinstance(a, SetExposure)
    assert a.exposure_ms == pytest.approx(100)
    darker = FrameResult(
        _frame(1, exposure=100), (_obj(1, 0, 0, mean=350),), None, None, 100.0, 0
    )
    acts = r.react(darker, _view(exposure=100))  # 250 -> 4x: exposure capped, power 40
    kinds = {type(x): x for x in acts}
    assert SetLaserPower in kinds
    assert kinds[SetLaserPower].power_mw == pytest.approx(40)


def test_adaptive_exposure_lowers_power_before_exposure() -> None:
    r = AdaptiveExposure(target_adu=1000, max_exposure_ms=100, min_power_mw=10)
    bright = FrameResult(
        _frame(0, exposure=100, laser=40),
        (_obj(1, 0, 0, mean=2100),),
        None,
        None,
        100.0,
        0,
    )
    acts = r.react(bright, _view(exposure=100, laser=40))  # 2000 -> half the light
    power = [a for a in acts if isinstance(a, SetLaserPower)]
    assert power
    assert power[0].power_mw == pytest.approx(20)
    assert not [a for a in acts if isinstance(a, SetExposure)]


def test_adaptive_exposure_dead_band() -> None:
    r = AdaptiveExposure(target_adu=1000, tolerance=0.1)
    ok = FrameResult(_frame(0), (_obj(1, 0, 0, mean=1150),), None, None, 100.0, 0)
    assert not r.react(ok, _view())


def test_create_reaction_validates_params() -> None:
    assert create_reaction("center_on", {"max_step_um": 10}).params.max_step_um == 10
    with pytest.raises(KeyError, match="available"):
        create_reaction("nope")
    with pytest.raises(ValueError, match="min_exposure_ms"):
        create_reaction(
            "adaptive_exposure", {"min_exposure_ms": 50, "max_exposure_ms": 5}
        )
