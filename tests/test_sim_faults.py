"""Faults on demand: camera timeouts, stage errors, hot pixels, focus jumps."""

from __future__ import annotations

import numpy as np
import pytest
import useq

from smartscope.errors import SimulatedDeviceError, SimulatorError
from smartscope.sim import FAULTS


def test_fault_names():
    assert set(FAULTS) == {"camera_timeout", "stage_error", "hot_pixels", "focus_jump"}


def test_camera_timeout_fails_next_snap_only(core, sim, snap):
    snap()
    frame = sim.truth().frame_index
    sim.inject("camera_timeout", timeout_s=2.0)
    t0 = sim.clock_s
    with pytest.raises(SimulatedDeviceError, match="timed out") as info:
        core.snapImage()
    assert isinstance(info.value, RuntimeError)
    assert sim.clock_s - t0 == pytest.approx(2.0)  # the wait took sample time
    assert sim.truth().frame_index == frame  # no new image
    img = snap()
    assert img.shape == (core.getImageHeight(), core.getImageWidth())
    assert sim.truth().frame_index == frame + 1


def test_camera_timeout_count(core, sim, snap):
    sim.inject("camera_timeout", count=2)
    for _ in range(2):
        with pytest.raises(RuntimeError):
            core.snapImage()
    snap()


def test_camera_timeout_during_mda_skips_one_frame(core, sim):
    frames: list[int] = []
    core.mda.events.frameReady.connect(
        lambda img, ev, meta: frames.append(ev.index["t"])
    )
    sim.inject("camera_timeout")
    core.mda.run(useq.MDASequence(time_plan={"interval": 1, "loops": 4}))
    assert frames == [1, 2, 3]
    assert not core.mda.is_running()


@pytest.mark.parametrize("device", ["XY", "Z"])
def test_stage_error_fails_next_move_only(core, sim, device):
    core.setXYPosition(10, 20)
    core.setPosition(5)
    sim.inject("stage_error", device=device)
    t0 = sim.clock_s
    move = (
        (lambda: core.setXYPosition(300, -300))
        if device == "XY"
        else (lambda: core.setPosition(50))
    )
    with pytest.raises(SimulatedDeviceError, match="did not move") as info:
        move()
    assert isinstance(info.value, RuntimeError)
    assert core.getXYPosition() == pytest.approx((10, 20))
    assert core.getPosition() == pytest.approx(5)
    assert sim.clock_s == t0
    # the fault is on that stage only, and only once
    core.setPosition(50)
    core.setXYPosition(300, -300)
    assert core.getXYPosition() == pytest.approx((300, -300))
    assert core.getPosition() == pytest.approx(50)


def test_stage_error_on_xy_leaves_z_alone(core, sim):
    sim.inject("stage_error", device="XY")
    core.setPosition(7)
    assert core.getPosition() == pytest.approx(7)
    with pytest.raises(SimulatedDeviceError):
        core.setXYPosition(1, 1)


def test_stage_error_unknown_device(sim):
    with pytest.raises(SimulatorError, match="XY"):
        sim.inject("stage_error", device="Objective")


@pytest.mark.parametrize("bit_depth", [16, 12])
def test_hot_pixels_saturate_but_truth_stays_clean(core, sim, snap, bit_depth):
    core.setProperty("Camera", "BitDepth", bit_depth)
    sim.inject("hot_pixels", n=10)
    img = snap()
    hot = np.asarray(sim.truth().meta["hot_pixels"])
    assert hot.shape == (10, 2)
    rows, cols = hot[:, 0], hot[:, 1]
    saturated = 2**bit_depth - 1
    assert np.all(img[rows, cols] == saturated)
    expected = sim.truth().expected_adu
    assert np.all(expected[rows, cols] < 0.5 * saturated)
    # only those pixels are stuck
    mask = np.zeros(img.shape, bool)
    mask[rows, cols] = True
    assert not np.any(img[~mask] == saturated)
    # they stay from frame to frame
    img2 = snap()
    assert np.array_equal(np.asarray(sim.truth().meta["hot_pixels"]), hot)
    assert np.all(img2[rows, cols] == saturated)


def test_hot_pixels_follow_roi_and_clear(core, sim, snap):
    sim.inject("hot_pixels", n=200, value_adu=5000)
    full = np.asarray(snap())
    hot = np.asarray(sim.truth().meta["hot_pixels"])
    core.setROI(100, 50, 200, 300)
    roi = snap()
    hot_roi = np.asarray(sim.truth().meta["hot_pixels"])
    inside = (
        (hot[:, 0] >= 50) & (hot[:, 0] < 350) & (hot[:, 1] >= 100) & (hot[:, 1] < 300)
    )
    assert len(hot_roi) == inside.sum() > 0
    np.testing.assert_array_equal(np.sort(hot_roi[:, 0]), np.sort(hot[inside, 0] - 50))
    assert np.all(roi[hot_roi[:, 0], hot_roi[:, 1]] == 5000)
    assert np.all(full[hot[:, 0], hot[:, 1]] == 5000)
    sim.clear_faults()
    core.clearROI()
    snap()
    assert "hot_pixels" not in sim.truth().meta


def test_focus_jump(core, sim, snap):
    focus = sim.focus_z_um()
    core.setPosition(focus)
    snap()
    assert abs(sim.truth().defocus_um) < 0.05
    sim.inject("focus_jump", dz_um=5)
    assert sim.focus_z_um() - focus == pytest.approx(5.0, abs=0.01)
    snap()
    assert sim.truth().focus_z_um - focus == pytest.approx(5.0, abs=0.01)
    assert sim.truth().defocus_um == pytest.approx(-5.0, abs=0.05)
    # refocusing on the new plane gives a sharp image again
    core.setPosition(sim.focus_z_um())
    snap()
    assert abs(sim.truth().defocus_um) < 0.05


def test_unknown_fault_is_refused(sim):
    with pytest.raises(SimulatorError, match="unknown fault 'meteor_strike'"):
        sim.inject("meteor_strike")


def test_refused_fault_has_no_effect(core, sim, snap):
    """A misspelt parameter refuses the whole fault: nothing half-applied."""
    focus = sim.focus_z_um()
    with pytest.raises(SimulatorError, match="cuont"):
        sim.inject("camera_timeout", cuont=2)
    with pytest.raises(SimulatorError, match="dz"):
        sim.inject("focus_jump", dz=2)
    with pytest.raises(SimulatorError, match="Objective"):
        sim.inject("stage_error", device="Objective")
    snap()
    core.setXYPosition(5, 5)
    assert sim.focus_z_um() == pytest.approx(focus, abs=0.01)


def test_reset_clears_faults(core, sim, snap):
    sim.inject("camera_timeout")
    sim.inject("focus_jump", dz_um=3)
    sim.reset()
    snap()
    assert sim.focus_z_um() == pytest.approx(sim.preset.focus_z0_um, abs=0.01)
