"""Sample time: virtual mode runs hour-long time-lapses in seconds, realtime
mode really waits, pause and cancel work, and the same seed gives the same
images."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import useq

from smartscope.hardware import load_core, release_core
from smartscope.sim import get_simulator


def _count_frames(core) -> list[float]:
    """Record the sample clock at every frameReady."""
    sim = get_simulator(core)
    stamps: list[float] = []
    core.mda.events.frameReady.connect(lambda img, ev, meta: stamps.append(sim.clock_s))
    return stamps


def _wait_for(predicate, timeout_s: float = 10.0) -> bool:
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return False


# ------------------------------------------------------------------ virtual


def test_virtual_time_lapse_runs_fast(core, sim):
    assert sim.time_mode == "virtual"
    stamps = _count_frames(core)
    t0_sim = sim.clock_s
    t0 = time.perf_counter()
    core.mda.run(useq.MDASequence(time_plan={"interval": 60, "loops": 100}))
    wall = time.perf_counter() - t0
    assert len(stamps) == 100
    assert wall < 30
    assert sim.clock_s - t0_sim >= 99 * 60
    # frames are one interval apart on the sample clock
    np.testing.assert_allclose(np.diff(stamps), 60.0, atol=0.2)


def test_clock_advances_with_exposure(core, sim, snap):
    core.setExposure(250)
    t0 = sim.clock_s
    snap()
    assert sim.clock_s - t0 == pytest.approx(0.25, abs=1e-6)
    assert sim.truth().t_s == pytest.approx(t0, abs=1e-6)
    sim.advance(3600)
    assert sim.clock_s - t0 == pytest.approx(3600.25, abs=1e-6)


def test_virtual_pause_holds_the_clock(core, sim):
    stamps = _count_frames(core)
    seq = useq.MDASequence(time_plan={"interval": 60, "loops": 6})

    def pause_after_two(img, event, meta):
        if event.index.get("t") == 1:
            core.mda.set_paused(True)

    core.mda.events.frameReady.connect(pause_after_two)
    thread = core.run_mda(seq)
    try:
        assert _wait_for(core.mda.is_paused), "the run did not pause"
        held = sim.clock_s
        time.sleep(0.3)
        assert core.mda.is_paused()
        assert len(stamps) == 2
        assert sim.clock_s == held  # a pause holds in real time, not sample time
        core.mda.set_paused(False)
        thread.join(timeout=20)
        assert not thread.is_alive()
    finally:
        core.mda.cancel()
        thread.join(timeout=5)
    assert len(stamps) == 6
    np.testing.assert_allclose(np.diff(stamps), 60.0, atol=0.2)


def test_virtual_toggle_pause(core, sim):
    """The deprecated toggle_pause() still pauses and resumes a virtual run."""
    stamps = _count_frames(core)

    def pause_once(img, event, meta):
        if event.index.get("t") == 0:
            with pytest.deprecated_call():
                core.mda.toggle_pause()

    core.mda.events.frameReady.connect(pause_once)
    thread = core.run_mda(useq.MDASequence(time_plan={"interval": 30, "loops": 3}))
    try:
        assert _wait_for(core.mda.is_paused)
        assert len(stamps) == 1
        with pytest.deprecated_call():
            core.mda.toggle_pause()
        thread.join(timeout=20)
    finally:
        core.mda.cancel()
        thread.join(timeout=5)
    assert len(stamps) == 3


def test_virtual_cancel_from_frame_ready(core, sim):
    stamps = _count_frames(core)
    canceled: list[bool] = []
    core.mda.events.sequenceCanceled.connect(lambda seq: canceled.append(True))

    def cancel_at_three(img, event, meta):
        if event.index.get("t") == 2:
            core.mda.cancel()

    core.mda.events.frameReady.connect(cancel_at_three)
    t0 = sim.clock_s
    core.mda.run(useq.MDASequence(time_plan={"interval": 60, "loops": 100}))
    assert len(stamps) == 3
    assert canceled == [True]
    assert sim.clock_s - t0 < 3 * 60


def test_virtual_cancel_from_another_thread_while_paused(core, sim):
    stamps = _count_frames(core)
    core.mda.events.frameReady.connect(
        lambda img, ev, meta: (
            core.mda.set_paused(True) if ev.index.get("t") == 0 else None
        )
    )
    thread = core.run_mda(useq.MDASequence(time_plan={"interval": 60, "loops": 50}))
    assert _wait_for(core.mda.is_paused)
    canceller = threading.Thread(target=core.mda.cancel)
    canceller.start()
    canceller.join(timeout=5)
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert not core.mda.is_running()
    assert len(stamps) == 1
    assert sim.clock_s < 60


# ----------------------------------------------------------------- realtime


def test_realtime_mode_really_waits(core, sim):
    sim.time_mode = "realtime"
    core.setExposure(10)
    stamps = _count_frames(core)
    t0_sim = sim.clock_s
    t0 = time.perf_counter()
    core.mda.run(useq.MDASequence(time_plan={"interval": 0.2, "loops": 3}))
    wall = time.perf_counter() - t0
    assert len(stamps) == 3
    assert wall >= 0.4
    assert sim.clock_s - t0_sim >= 0.4
    # back to virtual: no more waiting
    sim.time_mode = "virtual"
    t0 = time.perf_counter()
    core.mda.run(useq.MDASequence(time_plan={"interval": 20, "loops": 3}))
    assert time.perf_counter() - t0 < 5


def test_realtime_snap_lasts_its_exposure_with_the_render_inside_it(core, sim, snap):
    """The sensor collects light from the frame's start for the exposure;
    computing the image is part of that time, not added to it (a bound from
    below only: a busy host may make the snap longer)."""
    sim.time_mode = "realtime"
    core.setExposure(60)
    for _ in range(3):
        t0 = sim.clock_s
        snap()
        assert sim.truth().t_s >= t0
        assert sim.clock_s - sim.truth().t_s >= 0.060


def test_realtime_clock_follows_wall_clock(core, sim):
    sim.time_mode = "realtime"
    t0_sim, t0 = sim.clock_s, time.perf_counter()
    time.sleep(0.2)
    assert sim.clock_s - t0_sim == pytest.approx(time.perf_counter() - t0, abs=0.05)


def test_time_mode_property_on_sample_device(core, sim):
    core.setProperty("Sample", "TimeMode", "realtime")
    assert sim.time_mode == "realtime"
    core.setProperty("Sample", "TimeMode", "virtual")
    assert sim.time_mode == "virtual"
    with pytest.raises(ValueError, match="time mode"):
        sim.time_mode = "warp"  # type: ignore[assignment]


# --------------------------------------------------------------------- seeds


def _snaps(seed: int, n: int = 3) -> tuple[list[np.ndarray], list[np.ndarray]]:
    core = load_core(seed=seed)
    try:
        sim = get_simulator(core)
        images, truths = [], []
        for i in range(n):
            core.setXYPosition(30.0 * i, -20.0 * i)
            core.snapImage()
            images.append(np.asarray(core.getImage()).copy())
            truths.append(sim.truth().expected_adu.copy())
        return images, truths
    finally:
        release_core(core)


def test_same_seed_same_images():
    a_img, a_truth = _snaps(7)
    b_img, b_truth = _snaps(7)
    for a, b in zip(a_img, b_img, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(a_truth, b_truth, strict=True):
        np.testing.assert_array_equal(a, b)


def test_different_seed_different_images():
    a_img, a_truth = _snaps(7, n=1)
    b_img, b_truth = _snaps(8, n=1)
    assert not np.array_equal(a_img[0], b_img[0])
    assert not np.array_equal(a_truth[0], b_truth[0])


def test_same_seed_same_history():
    """Same seed, same sample history: cells after simulated hours agree."""
    cells = []
    for _ in range(2):
        core = load_core(seed=7)
        try:
            sim = get_simulator(core)
            sim.advance(4 * 3600)
            cells.append(sim.cells())
        finally:
            release_core(core)
    assert cells[0] == cells[1]


def test_reset_seed_restarts_sample(core, sim, snap):
    sim.reset(seed=11)
    first = snap().copy()
    sim.advance(100)
    snap()
    sim.reset(seed=11)
    assert sim.clock_s == 0
    assert sim.light_dose_mj == 0
    np.testing.assert_array_equal(snap(), first)


@pytest.mark.slow
def test_day_long_time_lapse(core, sim, run_dir):
    """A day of imaging in virtual time: the scene lives, divides, and every
    frame's truth is streamed to cells.csv."""
    import csv

    core.setProperty("Camera", "SensorWidth_px", 1024)
    core.setProperty("Camera", "SensorHeight_px", 1024)
    core.setConfig("Objective", "4x")
    frames = _count_frames(core)
    rec = sim.record_truth(run_dir / "cells.csv")
    try:
        core.mda.run(useq.MDASequence(time_plan={"interval": 600, "loops": 145}))
    finally:
        rec.close()
    assert len(frames) == 145
    assert sim.clock_s >= 24 * 3600
    with open(run_dir / "cells.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {int(r["frame"]) for r in rows} == set(range(145))
    parents = {int(r["parent_id"]) for r in rows} - {0}
    seen = {int(r["cell_id"]) for r in rows}
    assert len(parents & seen) > 50  # divisions seen in the field, with the parent
    assert "mitosis" in {r["state"] for r in rows}
    assert sim.light_dose_mj == pytest.approx(145 * 10 * 0.05, rel=1e-6)
