"""Light: the dose grows only while light reaches the sample, as power × time,
and only the cells in the illuminated field receive it.

``sim.light_dose_mj`` is the energy delivered (mJ = mW · s); a cell's ``dose``
is the fluence it received (J/cm²) = power / illuminated area × time.
"""

from __future__ import annotations

import numpy as np
import pytest


def _manual_shutter(core) -> None:
    core.setAutoShutter(False)
    core.setShutterOpen(False)


def test_closed_shutter_snaps_add_no_dose(core, sim, snap):
    _manual_shutter(core)
    core.setProperty("Laser", "Power_mW", 100)
    dose0 = sim.light_dose_mj
    for _ in range(3):
        img = snap()
    sim.advance(10)
    assert sim.light_dose_mj == dose0
    assert not sim.truth().illuminated
    # and the image is dark: offset only
    offset = float(core.getProperty("Camera", "Offset_ADU"))
    assert img.mean() == pytest.approx(offset, rel=0.01)


def test_open_shutter_dose_is_power_times_time(core, sim):
    _manual_shutter(core)
    core.setProperty("Laser", "Power_mW", 10)
    core.setShutterOpen(True)
    d0 = sim.light_dose_mj
    sim.advance(2.0)
    d1 = sim.light_dose_mj
    assert d1 - d0 == pytest.approx(10 * 2.0, rel=1e-9)
    core.setProperty("Laser", "Power_mW", 20)  # double power: double rate
    sim.advance(2.0)
    d2 = sim.light_dose_mj
    assert d2 - d1 == pytest.approx(2 * (d1 - d0), rel=1e-9)
    core.setShutterOpen(False)
    sim.advance(5.0)
    assert sim.light_dose_mj == pytest.approx(d2, rel=1e-12)


def test_zero_power_gives_no_dose(core, sim):
    _manual_shutter(core)
    core.setProperty("Laser", "Power_mW", 0)
    core.setShutterOpen(True)
    d0 = sim.light_dose_mj
    sim.advance(3.0)
    assert sim.light_dose_mj == d0


def test_autoshutter_dose_only_during_exposure(core, sim, snap):
    assert core.getAutoShutter()
    core.setProperty("Laser", "Power_mW", 20)
    core.setExposure(100)
    d0 = sim.light_dose_mj
    snap()
    assert sim.truth().illuminated
    assert not core.getShutterOpen()
    assert sim.light_dose_mj - d0 == pytest.approx(20 * 0.1, rel=1e-6)
    d1 = sim.light_dose_mj
    sim.advance(10.0)  # idle between frames: shutter closed
    assert sim.light_dose_mj == d1
    for _ in range(4):
        snap()
    assert sim.light_dose_mj - d1 == pytest.approx(4 * 20 * 0.1, rel=1e-6)


@pytest.mark.parametrize(("power_mw", "exposure_ms"), [(5, 50), (10, 50), (10, 100)])
def test_dose_per_frame_scales_with_power_and_exposure(
    core, sim, snap, power_mw, exposure_ms
):
    core.setProperty("Laser", "Power_mW", power_mw)
    core.setExposure(exposure_ms)
    d0 = sim.light_dose_mj
    snap()
    assert sim.light_dose_mj - d0 == pytest.approx(
        power_mw * exposure_ms / 1000, rel=1e-6
    )


def test_signal_scales_with_power_and_exposure(core, sim, snap):
    """Photons (expected ADU above offset) scale with power × exposure."""
    offset = float(core.getProperty("Camera", "Offset_ADU"))
    core.setExposure(10)
    core.setProperty("Laser", "Power_mW", 10)
    snap()
    base = sim.truth().expected_adu.astype(np.float64) - offset
    core.setProperty("Laser", "Power_mW", 20)
    snap()
    double_power = sim.truth().expected_adu.astype(np.float64) - offset
    core.setProperty("Laser", "Power_mW", 10)
    core.setExposure(20)
    snap()
    double_exposure = sim.truth().expected_adu.astype(np.float64) - offset
    assert double_power.sum() / base.sum() == pytest.approx(2.0, rel=0.01)
    assert double_exposure.sum() / base.sum() == pytest.approx(2.0, rel=0.01)


def _field_box(core, sim) -> tuple[float, float, float, float]:
    """Illuminated box (x0, x1, y0, y1) in stage µm: the full sensor's field."""
    x, y = core.getXYPosition()
    px = sim.truth().pixel_size_um / int(core.getProperty("Camera", "Binning"))
    w = int(core.getProperty("Camera", "SensorWidth_px")) * px
    h = int(core.getProperty("Camera", "SensorHeight_px")) * px
    return x - w / 2, x + w / 2, y - h / 2, y + h / 2


def test_cell_dose_only_in_illuminated_field(core, sim, snap):
    core.setXYPosition(-400, 300)
    core.setProperty("Laser", "Power_mW", 50)
    core.setExposure(200)
    snap()
    x0, x1, y0, y1 = _field_box(core, sim)
    area_cm2 = (x1 - x0) * (y1 - y0) * 1e-8
    fluence = 50e-3 * 0.2 / area_cm2  # J/cm²
    margin = 3.0  # µm: cells move a little during the exposure
    inside = outside = 0
    for c in sim.cells():
        if x0 + margin < c.x_um < x1 - margin and y0 + margin < c.y_um < y1 - margin:
            assert c.dose == pytest.approx(fluence, rel=1e-6), c
            inside += 1
        elif not (
            x0 - margin < c.x_um < x1 + margin and y0 - margin < c.y_um < y1 + margin
        ):
            assert c.dose == 0.0, c
            outside += 1
    assert inside >= 10
    assert outside > 1000
    # the image's own cells carry the dose they had when the exposure started
    assert all(c.dose == 0.0 for c in sim.truth().cells)


def test_cell_dose_follows_the_stage(core, sim):
    """Two fields lit one after the other: each cell gets only its own field's light."""
    _manual_shutter(core)
    core.setProperty("Laser", "Power_mW", 10)
    core.setConfig("Objective", "20x")
    core.setXYPosition(0, 0)
    core.setShutterOpen(True)
    sim.advance(1.0)
    core.setShutterOpen(False)
    core.setXYPosition(500, 0)
    core.setShutterOpen(True)
    sim.advance(3.0)
    core.setShutterOpen(False)
    field_um = 512 * 0.325
    fluence = 10e-3 / (field_um**2 * 1e-8)  # J/cm² per second
    half = field_um / 2 - 3.0
    n_a = n_b = 0
    for c in sim.cells():
        if abs(c.x_um) < half and abs(c.y_um) < half:
            assert c.dose == pytest.approx(fluence * 1.0, rel=1e-6)
            n_a += 1
        elif abs(c.x_um - 500) < half and abs(c.y_um) < half:
            assert c.dose == pytest.approx(fluence * 3.0, rel=1e-6)
            n_b += 1
        elif abs(c.y_um) > half + 6 or (
            half + 6 < abs(c.x_um) and abs(c.x_um - 500) > half + 6
        ):
            assert c.dose == 0.0
    assert n_a >= 3
    assert n_b >= 3
    assert sim.light_dose_mj == pytest.approx(10 * 4.0, rel=1e-9)


def test_irradiance_depends_on_objective(core, sim):
    core.setProperty("Laser", "Power_mW", 10)
    core.setConfig("Objective", "10x")
    e10 = sim.irradiance_w_cm2
    core.setConfig("Objective", "40x")
    assert sim.irradiance_w_cm2 == pytest.approx(16 * e10)


def test_cells_report_dose_up_to_now_in_realtime(core, sim):
    """With the light on, sim.cells() includes the light delivered until the call."""
    import time

    _manual_shutter(core)
    sim.time_mode = "realtime"
    core.setProperty("Laser", "Power_mW", 10)
    core.setShutterOpen(True)
    time.sleep(0.3)
    cells = sim.cells()
    core.setShutterOpen(False)
    total_mj = sim.light_dose_mj
    lit = [c.dose for c in cells if c.dose > 0]
    assert lit, "no cell has received light"
    x0, x1, y0, y1 = (-166.4, 166.4, -166.4, 166.4)  # 512 px x 0.65 µm at 10x
    fluence_now = max(lit)
    full = total_mj * 1e-3 / ((x1 - x0) * (y1 - y0) * 1e-8)
    assert 0.5 * full <= fluence_now <= full


def test_light_during_a_virtual_wait_reaches_the_cells_before_the_next_frame(core, sim):
    import useq

    core.setAutoShutter(False)
    core.setShutterOpen(True)  # the light stays on between frames
    power = float(core.getProperty("Laser", "Power_mW"))
    doses: list[float] = []
    core.mda.events.frameReady.connect(
        lambda *_: doses.append(max(c.dose for c in sim.truth().cells))
    )
    core.mda.run(useq.MDASequence(time_plan={"interval": 60, "loops": 2}))
    core.setShutterOpen(False)
    assert sim.light_dose_mj >= power * 60
    # the second frame's nuclei already carry the minute of light of the wait
    assert doses[1] >= doses[0] + 0.9 * sim.irradiance_w_cm2 * 60
