"""The live-cell scene: truth that matches the image, motion, division,
bleaching and phototoxicity, scene presets, and the truth recorder.

Everything goes through the public API: ``sim.cells()``, ``sim.truth()``,
``sim.advance()``, ``sim.reset(preset=...)``, ``sim.write_truth()`` and
``sim.record_truth()``.
"""

from __future__ import annotations

import csv
from collections import OrderedDict

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import regionprops

from contracts import CELLS_CSV_COLUMNS
from smartscope.errors import ConfigError, SimulatorError
from smartscope.sim import Scene, ScenePreset, load_scene_preset
from smartscope.sim import scene as scene_module
from smartscope.sim.turrets import objective_spec

# a culture that divides every hour, so divisions show within simulated hours
FAST_CYCLE = ScenePreset(cycle_h_mean=1.0, cycle_h_sd=0.1, mitosis_min=20.0)


def _manual_shutter(core) -> None:
    core.setAutoShutter(False)
    core.setShutterOpen(False)


def _by_id(cells) -> dict[int, object]:
    return {c.id: c for c in cells}


def _isolated_regions(truth, *, min_px: int = 20):
    """Regions of cells that are whole in the image: not cut by the border or by
    a neighbour (label area close to π r²)."""
    h, w = truth.labels.shape
    px = truth.pixel_size_um
    out = []
    for rp in regionprops(truth.labels, intensity_image=truth.expected_adu):
        r0, c0, r1, c1 = rp.bbox
        if r0 == 0 or c0 == 0 or r1 == h or c1 == w or rp.area < min_px:
            continue
        cell = truth.cell(rp.label)
        if abs(rp.area - np.pi * (cell.radius_um / px) ** 2) > 0.15 * rp.area:
            continue
        out.append((rp, cell))
    return out


# ------------------------------------------------------------ truth vs image


def test_labels_match_nuclei_in_image(core, sim, snap):
    core.setPosition(sim.focus_z_um())
    snap()
    truth = sim.truth()
    offset = float(core.getProperty("Camera", "Offset_ADU"))
    signal = truth.expected_adu - offset
    fg, bg = truth.labels > 0, truth.labels == 0
    assert fg.any()
    assert np.median(signal[fg]) > 5 * np.median(signal[bg])
    # every cell of truth.cells has labelled pixels, and only those cells do
    assert {c.id for c in truth.cells} == set(np.unique(truth.labels)) - {0}


@pytest.mark.parametrize(
    ("objective", "xy"),
    [("10x", (0.0, 0.0)), ("20x", (-700.0, 450.0)), ("40x", (310.0, -220.0))],
)
def test_label_centroids_match_cell_positions(core, sim, objective, xy):
    core.setConfig("Objective", objective)
    core.setProperty("Camera", "SensorWidth_px", 1024)
    core.setProperty("Camera", "SensorHeight_px", 1024)
    core.setXYPosition(*xy)
    core.snapImage()
    truth = sim.truth()
    h, w = truth.labels.shape
    px = core.getPixelSizeUm()
    sx, sy = core.getXYPosition()
    # the image centre shows stage + the objective's offset (40x: off axis)
    spec = objective_spec(objective)
    sx, sy = sx + spec.offset_x_um, sy + spec.offset_y_um
    errors = []
    for rp, cell in _isolated_regions(truth):
        row, col = rp.centroid
        # pixel centre (row, col) -> stage µm (see smartscope.sim.optics.View)
        x_um = sx + (col + 0.5 - w / 2) * px
        y_um = sy + (row + 0.5 - h / 2) * px
        errors.append(np.hypot(x_um - cell.x_um, y_um - cell.y_um))
    assert len(errors) >= 3
    assert max(errors) < 1.0


def test_truth_metadata(core, sim, snap):
    core.setXYPosition(100, -50)
    core.setPosition(sim.focus_z_um() + 2)
    core.setConfig("Channel", "GFP")
    core.setExposure(30)
    core.setProperty("Laser", "Power_mW", 12)
    t0 = sim.clock_s
    snap()
    t = sim.truth()
    assert (t.stage_x_um, t.stage_y_um) == pytest.approx((100, -50))
    assert t.defocus_um == pytest.approx(2, abs=0.01)
    assert t.channel == "GFP"
    assert t.exposure_ms == pytest.approx(30)
    assert t.laser_mw == pytest.approx(12)
    assert t.t_s == pytest.approx(t0)
    assert t.pixel_size_um == pytest.approx(core.getPixelSizeUm())


def test_truth_before_any_image_is_refused(sim):
    with pytest.raises(SimulatorError, match="snap"):
        sim.truth()


def test_channels_differ(core, sim, snap):
    """Each channel images the same nuclei with its own brightness."""
    offset = float(core.getProperty("Camera", "Offset_ADU"))
    sums = {}
    for ch in ("DAPI", "GFP", "mCherry"):
        core.setConfig("Channel", ch)
        snap()
        assert sim.truth().channel == ch
        sums[ch] = float((sim.truth().expected_adu - offset).sum())
    assert sums["DAPI"] > sums["GFP"] > sums["mCherry"] > 0


# ------------------------------------------------------------------- motion


def test_cells_move_over_hours(sim):
    hours = 3.0
    before = _by_id(sim.cells())
    sim.advance(hours * 3600)
    after = _by_id(sim.cells())
    common = sorted(before.keys() & after.keys())
    assert len(common) > 0.7 * len(before)
    dx = np.array([after[i].x_um - before[i].x_um for i in common])
    dy = np.array([after[i].y_um - before[i].y_um for i in common])
    minutes = hours * 60
    p = sim.preset
    # the dish drifts ...
    assert dx.mean() == pytest.approx(p.drift_x_um_per_min * minutes, abs=3.0)
    assert dy.mean() == pytest.approx(p.drift_y_um_per_min * minutes, abs=3.0)
    # ... and each cell wanders on its own (persistent random walk)
    wander = np.hypot(dx - dx.mean(), dy - dy.mean())
    assert 10 < np.median(wander) < 100
    assert np.corrcoef(dx, dy)[0, 1] == pytest.approx(0, abs=0.1)


def _state(scene) -> dict[str, np.ndarray]:
    return {k: getattr(scene, k).copy() for k in scene_module._ARRAYS}


def test_a_remembered_starting_dish_is_the_one_built_afresh(monkeypatch):
    """The relaxed start of a (preset, seed) is built once per process; a scene
    from the memory starts, and goes on, exactly as one built from nothing,
    and what a scene does to its nuclei never reaches the memory."""
    preset = ScenePreset()  # the default dish: 2,700 nuclei, 17 rounds to settle
    first = Scene(preset, seed=11)
    start = _state(first)
    first.advance_to(2 * 3600.0)  # moves its nuclei in place
    remembered = Scene(preset, seed=11)
    monkeypatch.setattr(scene_module, "_RELAXED", OrderedDict())
    fresh = Scene(preset, seed=11)
    for scene in (remembered, fresh):
        assert _state(scene).keys() == start.keys()
        for k, v in _state(scene).items():
            np.testing.assert_array_equal(v, start[k], err_msg=k)
    for scene in (remembered, fresh):
        scene.advance_to(2 * 3600.0)
    for k, v in _state(fresh).items():
        np.testing.assert_array_equal(_state(remembered)[k], v, err_msg=k)
        np.testing.assert_array_equal(_state(first)[k], v, err_msg=k)
    assert remembered.divisions == fresh.divisions == first.divisions
    assert len(first.divisions) > 0  # the history was not trivial
    # another seed is another dish
    assert not np.array_equal(Scene(preset, seed=12).x, start["x"])


def test_sample_barely_moves_over_short_times(core, sim, snap):
    """Frames a few milliseconds apart, right after loading, see a still sample:
    no nucleus moves further than its own speed and the dish drift allow."""
    core.setExposure(5)
    before = _by_id(sim.cells())
    t0 = sim.clock_s
    for _ in range(24):
        snap()
    after = _by_id(sim.cells())
    minutes = (sim.clock_s - t0) / 60
    p = sim.preset
    # 6 sigma of the random-walk speed, plus the drift, plus rounding
    v_max = 6 * p.speed_um_per_min + np.hypot(
        p.drift_x_um_per_min, p.drift_y_um_per_min
    )
    moved = [
        np.hypot(after[i].x_um - c.x_um, after[i].y_um - c.y_um)
        for i, c in before.items()
        if i in after
    ]
    assert len(moved) == len(before)
    assert max(moved) < v_max * minutes + 0.01


def test_image_follows_moving_cells(core, sim, snap):
    """A nucleus seen now is seen again later where the truth says it went."""
    core.setConfig("Objective", "20x")
    snap()
    first = sim.truth()
    sim.advance(1800)
    snap()
    later = sim.truth()
    whole_first = {cell.id: rp for rp, cell in _isolated_regions(first)}
    whole_later = {cell.id: rp for rp, cell in _isolated_regions(later)}
    common = whole_first.keys() & whole_later.keys()
    assert len(common) >= 3
    for cid in common:
        a, b = first.cell(cid), later.cell(cid)
        (ya, xa), (yb, xb) = whole_first[cid].centroid, whole_later[cid].centroid
        px = first.pixel_size_um
        assert (xb - xa) * px == pytest.approx(b.x_um - a.x_um, abs=1.0)
        assert (yb - ya) * px == pytest.approx(b.y_um - a.y_um, abs=1.0)
    assert max(abs(later.cell(i).x_um - first.cell(i).x_um) for i in common) > 2


# ----------------------------------------------------------------- division


def test_division_mitosis_then_two_daughters(sim):
    sim.reset(preset=FAST_CYCLE)
    step = 300.0  # well under the 20-minute mitosis
    prev = _by_id(sim.cells())
    divisions = 0
    for _ in range(24):  # two simulated hours
        sim.advance(step)
        now = _by_id(sim.cells())
        gone = prev.keys() - now.keys()
        born = [c for c in now.values() if c.id not in prev]
        for pid in gone:
            parent = prev[pid]
            assert parent.state == "mitosis", "only a mitotic cell ends by dividing"
            kids = [c for c in born if c.parent_id == pid]
            assert len(kids) == 2
            for kid in kids:
                assert kid.state == "interphase"
                assert np.hypot(kid.x_um - parent.x_um, kid.y_um - parent.y_um) < (
                    2 * parent.radius_um + 5
                )
            divisions += 1
        assert len(born) == 2 * len(gone)
        assert all(c.parent_id in gone for c in born)
        prev = now
    assert divisions > 100


def test_mitotic_nuclei_are_rounder_and_brighter(core, sim, snap):
    sim.reset(preset=FAST_CYCLE)
    sim.advance(1800)
    core.setProperty("Camera", "SensorWidth_px", 1024)
    core.setProperty("Camera", "SensorHeight_px", 1024)
    core.setPosition(sim.focus_z_um())
    core.setExposure(10)
    snap()
    truth = sim.truth()
    offset = float(core.getProperty("Camera", "Offset_ADU"))
    ecc: dict[str, list[float]] = {"interphase": [], "mitosis": []}
    bright: dict[str, list[float]] = {"interphase": [], "mitosis": []}
    for rp, cell in _isolated_regions(truth):
        ecc[cell.state].append(rp.eccentricity)
        bright[cell.state].append(rp.intensity_mean - offset)
    assert len(ecc["mitosis"]) >= 5
    assert len(ecc["interphase"]) >= 20
    assert np.median(ecc["mitosis"]) < 0.3
    assert np.median(ecc["mitosis"]) < np.median(ecc["interphase"]) - 0.1
    assert np.median(bright["mitosis"]) > 1.5 * np.median(bright["interphase"])


# ---------------------------------------------------------- light damage


def _cell_signal(truth, offset: float) -> dict[int, float]:
    """Per-cell summed signal above the local background, ADU."""
    signal = truth.expected_adu.astype(np.float64) - offset
    bg = float(np.median(signal[truth.labels == 0]))
    ids = np.array([c.id for c in truth.cells])
    sums = ndimage.sum_labels(signal - bg, truth.labels, ids)
    return dict(zip(ids.tolist(), sums.tolist(), strict=True))


def test_bleaching_follows_dose(core, sim, snap):
    core.setConfig("Objective", "20x")
    core.setPosition(sim.focus_z_um())
    core.setExposure(5)
    core.setProperty("Laser", "Power_mW", 20)
    offset = float(core.getProperty("Camera", "Offset_ADU"))
    snap()
    first = sim.truth()
    s0 = _cell_signal(first, offset)
    # light the field for 2 s between the two frames
    core.setAutoShutter(False)
    core.setShutterOpen(True)
    sim.advance(2.0)
    core.setShutterOpen(False)
    core.setAutoShutter(True)
    snap()
    second = sim.truth()
    s1 = _cell_signal(second, offset)
    rate = sim.preset.bleach_per_j_cm2 * sim.preset.channels["DAPI"].bleach_scale
    checked = 0
    whole_first = {cell.id for _, cell in _isolated_regions(first)}
    for _, cell in _isolated_regions(second):
        if cell.id not in whole_first:
            continue
        before = first.cell(cell.id)
        gained = cell.dose - before.dose
        assert gained > 50  # J/cm²
        assert s1[cell.id] / s0[cell.id] == pytest.approx(
            np.exp(-rate * gained), rel=0.05
        )
        checked += 1
    assert checked >= 3


def _suffer(core, sim, *, seconds: float) -> set[int]:
    """Light the 4x field at full power for ``seconds``; ids of cells well inside."""
    _manual_shutter(core)
    core.setConfig("Objective", "4x")
    core.setProperty("Laser", "Power_mW", 100)
    core.setShutterOpen(True)
    sim.advance(seconds)
    core.setShutterOpen(False)
    half = 512 * core.getPixelSizeUm() / 2 - 10
    return {c.id for c in sim.cells() if abs(c.x_um) < half and abs(c.y_um) < half}


def test_lethal_dose_kills_cells_in_field_only(core, sim):
    lit = _suffer(core, sim, seconds=100)  # ~1450 J/cm² at 4x, 100 mW
    sim.advance(60)
    cells = _by_id(sim.cells())
    assert len(lit) > 100
    assert all(cells[i].state == "dead" for i in lit)
    assert all(cells[i].dose >= sim.preset.tox_death_j_cm2 for i in lit)
    others = [c for c in cells.values() if c.dose == 0]
    assert others
    assert not any(c.state == "dead" for c in others)
    # the dead neither move on their own nor divide
    before = {i: cells[i] for i in lit}
    sim.advance(3 * 3600)
    after = _by_id(sim.cells())
    drift_x = sim.preset.drift_x_um_per_min * 180
    drift_y = sim.preset.drift_y_um_per_min * 180
    own_motion = []
    for i, c in before.items():
        assert i in after, "a dead cell divided or vanished"
        assert after[i].state == "dead"
        own_motion.append(
            np.hypot(after[i].x_um - c.x_um - drift_x, after[i].y_um - c.y_um - drift_y)
        )
    # they go with the dish; only a neighbour bumping into one may shift it
    assert np.median(own_motion) < 0.01
    assert max(own_motion) < 2 * max(c.radius_um for c in before.values())


def test_phototoxic_dose_slows_cells(core, sim):
    lit = _suffer(core, sim, seconds=45)  # ~650 J/cm²: past onset, below death
    before = _by_id(sim.cells())
    onset, death = sim.preset.tox_onset_j_cm2, sim.preset.tox_death_j_cm2
    assert all(onset < before[i].dose < death for i in lit)
    hours = 4.0
    sim.advance(hours * 3600)
    after = _by_id(sim.cells())
    assert not any(after[i].state == "dead" for i in lit if i in after)
    drift = (
        np.array([sim.preset.drift_x_um_per_min, sim.preset.drift_y_um_per_min])
        * hours
        * 60
    )

    def wander(ids):
        d = [
            np.hypot(
                after[i].x_um - before[i].x_um - drift[0],
                after[i].y_um - before[i].y_um - drift[1],
            )
            for i in ids
            if i in after and after[i].state != "mitosis"
        ]
        return np.median(d)

    healthy = [i for i, c in before.items() if c.dose == 0]
    assert len(lit) > 100
    assert wander(lit) < 0.7 * wander(healthy)
    # and they divide less: fewer of them are gone (replaced by daughters)
    divided_lit = np.mean([i not in after for i in lit])
    divided_healthy = np.mean([i not in after for i in healthy])
    assert divided_lit < 0.75 * divided_healthy


# ------------------------------------------------------------------ presets


def test_custom_preset(core, sim, snap):
    preset = ScenePreset(
        extent_um=1000.0, density_per_mm2=50.0, radius_um_mean=8.0, radius_um_sd=0.0
    )
    sim.reset(preset=preset)
    assert sim.preset == preset
    cells = sim.cells()
    assert len(cells) == 50
    assert all(abs(c.x_um) <= 500 and abs(c.y_um) <= 500 for c in cells)
    assert sim.clock_s == 0


def test_preset_from_sample_property_and_yaml(core, sim, tmp_path):
    path = tmp_path / "sparse.yaml"
    path.write_text("extent_um: 500\ndensity_per_mm2: 40\n")
    assert load_scene_preset(path).density_per_mm2 == 40
    core.setProperty("Sample", "Scene", str(path))
    assert len(sim.cells()) == 10
    core.setProperty("Sample", "Scene", "default")
    assert sim.preset == ScenePreset()


def test_bad_preset_yaml_names_file_and_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("density_per_mm2: -3\nwobble: 1\n")
    with pytest.raises(ConfigError) as info:
        load_scene_preset(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "density_per_mm2" in msg
    assert "wobble" in msg


def test_unknown_preset_name(sim):
    with pytest.raises(SimulatorError, match="no_such_preset"):
        sim.reset(preset="no_such_preset")


# ----------------------------------------------------------- truth recorder


def _read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == CELLS_CSV_COLUMNS
        return list(reader)


def test_write_truth(core, sim, snap, run_dir):
    truths = []
    for i in range(3):
        core.setXYPosition(40.0 * i, 0)
        snap()
        truths.append(sim.truth())
    path = sim.write_truth(run_dir / "cells.csv")
    rows = _read_csv(path)
    assert len(rows) == sum(len(t.cells) for t in truths)
    for t in truths:
        mine = [r for r in rows if int(r["frame"]) == t.frame_index]
        assert len(mine) == len(t.cells)
        for r in mine:
            c = t.cell(int(r["cell_id"]))
            assert float(r["t_s"]) == pytest.approx(t.t_s, abs=1e-3)
            assert int(r["parent_id"]) == c.parent_id
            assert float(r["x_um"]) == pytest.approx(c.x_um, abs=1e-3)
            assert float(r["y_um"]) == pytest.approx(c.y_um, abs=1e-3)
            assert float(r["radius_um"]) == pytest.approx(c.radius_um, abs=1e-3)
            assert r["state"] == c.state
            assert float(r["dose"]) == pytest.approx(c.dose, abs=1e-4)


def test_record_truth_streams_per_frame(core, sim, snap, run_dir):
    path = run_dir / "stream.csv"
    rec = sim.record_truth(path)
    try:
        n_rows = 0
        for _ in range(3):
            snap()
            n_rows += len(sim.truth().cells)
            rows = _read_csv(path)  # readable while recording: flushed per frame
            assert len(rows) == n_rows
            assert int(rows[-1]["frame"]) == sim.truth().frame_index
        assert rec.frames == 3
    finally:
        rec.close()
    snap()  # after closing: nothing more is written
    assert len(_read_csv(path)) == n_rows


def test_write_truth_covers_divisions(sim, core, snap, run_dir):
    """Daughters appear in cells.csv with their parent's id."""
    sim.reset(preset=FAST_CYCLE)
    core.setProperty("Camera", "SensorWidth_px", 1024)
    core.setProperty("Camera", "SensorHeight_px", 1024)
    for _ in range(8):
        snap()
        sim.advance(900)
    rows = _read_csv(sim.write_truth(run_dir / "cells.csv"))
    ids = {int(r["cell_id"]) for r in rows}
    children = [r for r in rows if int(r["parent_id"]) > 0]
    assert children
    assert {r["state"] for r in rows} >= {"interphase", "mitosis"}
    assert any(int(r["parent_id"]) in ids for r in children)
