"""Simulated stages: XY moves shift the image as documented, Z defocus blurs it,
travel limits refuse moves, and moves take sample time.

Convention (``smartscope.sim.optics.View``): image column increases with
sample x and row with sample y, so moving the stage by +dx µm shifts the image
content by -dx / pixel_um columns (and +dy µm by -dy / pixel_um rows).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.registration import phase_cross_correlation


def _expected(core, sim) -> np.ndarray:
    """Snap and return the noise-free image minus the offset, (Y, X) float64."""
    core.snapImage()
    offset = float(core.getProperty("Camera", "Offset_ADU"))
    return sim.truth().expected_adu.astype(np.float64) - offset


def _content_shift(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """(rows, cols) by which the image content moved from ``before`` to ``after``."""
    shift, _, _ = phase_cross_correlation(before, after, upsample_factor=20)
    # phase_cross_correlation returns the shift that registers ``after`` onto
    # ``before``: the opposite of how far the content moved
    return -np.asarray(shift)


def test_content_shift_helper_sign():
    rng = np.random.default_rng(0)
    a = ndimage.gaussian_filter(rng.random((128, 128)), 2)
    moved = np.roll(a, (3, -5), axis=(0, 1))  # content 3 rows down, 5 columns left
    np.testing.assert_allclose(_content_shift(a, moved), (3, -5), atol=0.1)


@pytest.mark.parametrize("objective", ["10x", "20x"])
@pytest.mark.parametrize(("dx_um", "dy_um"), [(20.0, 0.0), (0.0, 15.0), (-12.0, 9.0)])
def test_xy_move_shifts_image(core, sim, objective, dx_um, dy_um):
    core.setConfig("Objective", objective)
    core.setExposure(5)
    x0, y0 = 150.0, -80.0
    core.setXYPosition(x0, y0)
    core.setPosition(sim.focus_z_um())
    before = _expected(core, sim)
    core.setXYPosition(x0 + dx_um, y0 + dy_um)
    assert core.getXYPosition() == pytest.approx((x0 + dx_um, y0 + dy_um))
    after = _expected(core, sim)
    assert sim.truth().stage_x_um == pytest.approx(x0 + dx_um)
    assert sim.truth().stage_y_um == pytest.approx(y0 + dy_um)
    px = core.getPixelSizeUm()
    rows, cols = _content_shift(before, after)
    assert cols == pytest.approx(-dx_um / px, abs=1.0)
    assert rows == pytest.approx(-dy_um / px, abs=1.0)


def test_xy_move_shifts_noisy_images(core, sim, snap):
    """The same holds for the camera images themselves, not only the truth."""
    core.setProperty("Laser", "Power_mW", 50)
    core.setXYPosition(0, 0)
    core.setPosition(sim.focus_z_um())
    before = snap().astype(np.float64)
    dx = 26.0  # 40 pixels at 10x
    core.setXYPosition(dx, 0)
    after = snap().astype(np.float64)
    rows, cols = _content_shift(before, after)
    assert cols == pytest.approx(-dx / core.getPixelSizeUm(), abs=1.0)
    assert rows == pytest.approx(0.0, abs=1.0)


def _sharpness(img: np.ndarray) -> float:
    """Mean squared gradient."""
    gy, gx = np.gradient(img)
    return float(np.mean(gx**2 + gy**2))


@pytest.mark.parametrize("objective", ["10x", "20x", "40x"])
@pytest.mark.parametrize("dz_um", [10.0, -10.0])
def test_defocus_blurs(core, sim, objective, dz_um):
    core.setConfig("Objective", objective)
    core.setExposure(5)
    focus = sim.focus_z_um()
    core.setPosition(focus)
    in_focus = _expected(core, sim)
    assert abs(sim.truth().defocus_um) < 0.05
    core.setPosition(focus + dz_um)
    out_of_focus = _expected(core, sim)
    assert sim.truth().defocus_um == pytest.approx(dz_um, abs=0.05)
    assert _sharpness(out_of_focus) <= 0.5 * _sharpness(in_focus)


def test_defocus_spreads_light_without_losing_it(core, sim):
    """At 10x (blur of a few pixels in a 512-pixel field) the total signal stays."""
    core.setExposure(5)
    focus = sim.focus_z_um()
    core.setPosition(focus)
    in_focus = _expected(core, sim)
    core.setPosition(focus + 10)
    out_of_focus = _expected(core, sim)
    assert out_of_focus.sum() == pytest.approx(in_focus.sum(), rel=0.02)
    assert out_of_focus.max() < in_focus.max()


def test_sharpness_peaks_at_focal_plane(core, sim):
    core.setConfig("Objective", "20x")
    core.setExposure(5)
    focus = sim.focus_z_um()
    scores = {}
    for dz in (-4.0, -2.0, 0.0, 2.0, 4.0):
        core.setPosition(focus + dz)
        scores[dz] = _sharpness(_expected(core, sim))
    assert max(scores, key=scores.get) == 0.0
    assert scores[-4.0] < scores[-2.0] < scores[0.0]
    assert scores[4.0] < scores[2.0] < scores[0.0]


def test_focal_plane_tilts_with_position(sim, core):
    here = sim.focus_z_um()
    preset = sim.preset
    far = sim.focus_z_um(1000.0, 0.0)
    assert far - sim.focus_z_um(0.0, 0.0) == pytest.approx(preset.tilt_x_um_per_mm)
    assert isinstance(here, float)


def test_focal_plane_drifts_in_time(sim):
    z0 = sim.focus_z_um(0.0, 0.0)
    sim.advance(600)
    assert sim.focus_z_um(0.0, 0.0) - z0 == pytest.approx(
        sim.preset.focus_drift_um_per_min * 10
    )


# ------------------------------------------------------------------ travel


@pytest.mark.parametrize(
    ("x", "y"), [(5001.0, 0.0), (0.0, -5001.0), (float("nan"), 0.0)]
)
def test_xy_travel_limits(core, x, y):
    core.setXYPosition(100, 200)
    with pytest.raises(ValueError, match="travel range"):
        core.setXYPosition(x, y)
    assert core.getXYPosition() == pytest.approx((100, 200))


def test_xy_travel_edges_reachable(core):
    core.setXYPosition(5000, -5000)
    assert core.getXYPosition() == pytest.approx((5000, -5000))


@pytest.mark.parametrize("z", [1000.5, -1001.0])
def test_z_travel_limits(core, z):
    core.setPosition(12.5)
    with pytest.raises(ValueError, match="travel range"):
        core.setPosition(z)
    assert core.getPosition() == pytest.approx(12.5)


def test_moves_take_sample_time(core, sim):
    speed = float(core.getProperty("XY", "Speed_um_per_s"))
    t0 = sim.clock_s
    core.setXYPosition(2000, 0)
    dt = sim.clock_s - t0
    assert dt == pytest.approx(2000 / speed, rel=0.05, abs=0.05)
    assert dt >= 2000 / speed
    t0 = sim.clock_s
    core.setPosition(100)  # 500 µm/s
    assert sim.clock_s - t0 == pytest.approx(0.2, abs=0.05)


def test_focus_in_stage_coordinates_with_origins(core, sim, snap):
    """sim.focus_z_um() is a position to give the core, also after setOrigin."""
    core.setXYPosition(1000, -400)
    core.setPosition(100)
    physical_focus = sim.focus_z_um() + 100 - core.getPosition()
    core.setOrigin("Z")  # Z now reads 0 where it was 100
    core.setOriginXY()  # XY now reads (0, 0) at (1000, -400)
    assert core.getPosition() == pytest.approx(0)
    assert sim.focus_z_um() == pytest.approx(physical_focus - 100, abs=1e-3)
    # stage (0, 0) is here now, so the focus there is the focus here
    assert sim.focus_z_um(0.0, 0.0) == pytest.approx(sim.focus_z_um(), abs=1e-3)
    core.setPosition(sim.focus_z_um())
    snap()
    t = sim.truth()
    assert abs(t.defocus_um) < 0.05
    assert t.z_um == pytest.approx(core.getPosition())
    assert t.focus_z_um == pytest.approx(sim.focus_z_um(), abs=1e-3)
    assert (t.stage_x_um, t.stage_y_um) == pytest.approx((0, 0))


def test_waiting_for_moving_stages_happens_on_the_calling_thread(core, sim):
    """waitForSystem / waitForDevice return once the stages are idle, asking
    them from the caller's thread (no thread pool per wait, as pymmcore-plus
    starts for every MDA event)."""
    import threading

    sim.time_mode = "realtime"
    xy, z = core.getXYStageDevice(), core.getFocusDevice()
    askers: set[int] = set()
    for label in (xy, z):
        dev = core._pydevices[label]
        busy = dev.busy

        def asked(busy=busy) -> bool:
            askers.add(threading.get_ident())
            return busy()

        dev.busy = asked
    core.setXYPosition(250, 0)  # 50 ms at 5 mm/s, then 20 ms to settle
    core.setPosition(5)  # 10 ms at 500 µm/s, then 10 ms
    core.waitForSystem()
    assert not core.deviceBusy(xy)
    assert not core.deviceBusy(z)
    core.setXYPosition(0, 0)
    core.waitForDevice(xy)
    assert not core.deviceBusy(xy)
    assert askers == {threading.get_ident()}


def test_waiting_for_a_stage_that_stays_busy_times_out_naming_it(core, sim):
    sim.time_mode = "realtime"
    xy = core.getXYStageDevice()
    core.setProperty(xy, "Speed_um_per_s", 10)
    core.setXYPosition(4000, 0)  # 400 s at 10 µm/s
    core.setTimeoutMs(20)
    try:
        with pytest.raises(TimeoutError, match=f"{xy!r}"):
            core.waitForDevice(xy)
        with pytest.raises(TimeoutError, match=f"{xy!r}"):
            core.waitForSystem()
    finally:
        core.stop(xy)
        core.setTimeoutMs(5000)
    assert not core.deviceBusy(xy)


@pytest.mark.parametrize("says", [float("nan"), float("inf"), -1.0, "raises"])
def test_a_device_that_cannot_say_when_it_is_idle_is_asked_again(core, sim, says):
    """A wrong answer from ``seconds_until_idle`` neither breaks the wait nor
    sleeps past the end of the move."""
    sim.time_mode = "realtime"
    xy = core.getXYStageDevice()
    dev = core._pydevices[xy]

    def wrong() -> float:
        if says == "raises":
            raise RuntimeError("no idea")
        return says

    dev.seconds_until_idle = wrong
    core.setXYPosition(100, 0)  # 20 ms at 5 mm/s, then 20 ms to settle
    core.waitForDevice(xy)
    assert not core.deviceBusy(xy)
