"""Rare target cells and the objectives' misalignment, in the simulator.

What a scan-then-zoom protocol stands on: targets that are rare, inherited
and bright only in their channel, without changing any existing scene for a
seed; and objectives whose optical axes and focal planes are a few
micrometres apart, consistently in the image, the truth and the focus.
Measured from simulated images and the truth, never from the scene's insides
where a user could look instead.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
from pydantic import ValidationError
from skimage.measure import regionprops

from smartscope.errors import ConfigError
from smartscope.hardware import load_core, release_core
from smartscope.sim import ScenePreset, get_simulator, load_scene_preset
from smartscope.sim.scene import Scene
from smartscope.sim.simulator import resolve_scene_preset
from smartscope.sim.turrets import OBJECTIVES, objective_spec

#: a small, fast-dividing dish: divisions within hours
FAST = {"extent_um": 600.0, "cycle_h_mean": 2.0, "cycle_h_sd": 0.5, "mitosis_min": 10}


def _history(scene: Scene, hours: float) -> list[dict[str, np.ndarray]]:
    out = []
    for _ in range(int(hours * 4)):
        scene.advance_to(scene.t_s + 900.0)
        out.append(
            {
                k: getattr(scene, k).copy()
                for k in ("id", "parent", "x", "y", "state", "dose")
            }
        )
    return out


# ------------------------------------------------------------------ targets


@pytest.mark.parametrize("seed", [0, 11])
def test_target_fields_leave_the_scene_unchanged(seed: int) -> None:
    """Every scene that existed before targets is the same for a seed, bit for
    bit (positions, motion, divisions), with or without targets."""
    plain = Scene(ScenePreset(**FAST), seed)
    marked = Scene(
        ScenePreset(**FAST, target_fraction=0.3, target_brightness=3.0), seed
    )
    a, b = _history(plain, 5), _history(marked, 5)
    assert plain.divisions  # the comparison covers divisions
    for step_a, step_b in zip(a, b, strict=True):
        for key, value in step_a.items():
            np.testing.assert_array_equal(value, step_b[key], err_msg=key)
    assert plain.divisions == marked.divisions
    assert not plain.target.any()
    assert marked.target.any()
    # brightness only changes for targets in the target channel
    for dye in ("DAPI", "GFP"):
        np.testing.assert_array_equal(plain.brightness(dye), marked.brightness(dye))
    same = ~marked.target
    np.testing.assert_array_equal(
        plain.brightness("mCherry")[same], marked.brightness("mCherry")[same]
    )


def test_rare_targets_preset_is_a_stable_small_share() -> None:
    preset = resolve_scene_preset("rare_targets")
    assert preset.target_fraction == pytest.approx(0.025)
    shares, in_scan = [], []
    for seed in range(4):
        scene = Scene(preset, seed)
        shares.append(scene.target.mean())
        box = (np.abs(scene.x) < 750) & (np.abs(scene.y) < 750)  # 1.5 x 1.5 mm
        in_scan.append(int((scene.target & box).sum()))
    assert all(0.015 < s < 0.035 for s in shares), shares
    assert all(8 <= n <= 35 for n in in_scan), in_scan


def test_daughters_inherit_the_marker() -> None:
    scene = Scene(ScenePreset(**FAST, target_fraction=0.3), 5)
    marker: dict[int, bool] = {}
    for _ in range(16):  # 4 h in 15-min steps, shorter than any cycle
        marker.update(zip(scene.id.tolist(), scene.target.tolist(), strict=True))
        scene.advance_to(scene.t_s + 900.0)
    marker.update(zip(scene.id.tolist(), scene.target.tolist(), strict=True))
    assert len(scene.divisions) > 20
    for _, parent, d1, d2 in scene.divisions:
        assert marker[d1] == marker[d2] == marker[parent]
    assert sum(marker[p] for _, p, _, _ in scene.divisions) > 3


def test_target_preset_validation(tmp_path) -> None:
    with pytest.raises(ValidationError, match="target_channel 'Cy5'"):
        ScenePreset(target_fraction=0.1, target_channel="Cy5")
    with pytest.raises(ValidationError):
        ScenePreset(target_fraction=1.5)
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\ntarget_fraction: 0.1\ntarget_channel: Cy5\n")
    with pytest.raises(ConfigError, match="target_channel"):
        load_scene_preset(path)
    # a preset with its own dyes and no targets needs no mCherry
    only_dapi = {"DAPI": ScenePreset().channels["DAPI"]}
    assert ScenePreset(channels=only_dapi).target_fraction == 0


@pytest.fixture
def rare():
    core = load_core(seed=3, scene="rare_targets")
    try:
        core.setExposure(20)
        yield core, get_simulator(core)
    finally:
        release_core(core)


def _mean_in(image: np.ndarray, labels: np.ndarray, ids: list[int]) -> float:
    return float(np.mean([image[labels == i].mean() for i in ids]))


def test_targets_bright_in_mcherry_only(rare, run_dir) -> None:
    """In the images, targets stand out in mCherry and look like any other
    nucleus in DAPI; the truth and cells.csv mark them."""
    core, sim = rare
    target = next(c for c in sim.cells() if c.target and abs(c.x_um) < 1000)
    core.setXYPosition(target.x_um, target.y_um)
    offset = float(core.getProperty("Camera", "Offset_ADU"))
    ratio = {}
    for channel in ("mCherry", "DAPI"):
        core.setConfig("Channel", channel)
        core.snapImage()
        image = core.getImage().astype(np.float64) - offset
        truth = sim.truth()
        targets = [c.id for c in truth.cells if c.target]
        others = [c.id for c in truth.cells if not c.target]
        assert target.id in targets
        assert len(others) > 10
        ratio[channel] = _mean_in(image, truth.labels, targets) / _mean_in(
            image, truth.labels, others
        )
    assert ratio["mCherry"] > 5
    assert 0.5 < ratio["DAPI"] < 2
    with sim.write_truth(run_dir / "cells.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    marked = {int(r["cell_id"]) for r in rows if r["target"] == "1"}
    assert target.id in marked
    assert marked == {c.id for c in sim.truth().cells if c.target}


# --------------------------------------------------------------- objectives


def test_reference_objectives_are_aligned() -> None:
    """10x and 20x (what the existing protocols use) have no offset; 4x and
    40x are off by a few micrometres, readable for scoring."""
    for label in ("10x", "20x"):
        o = objective_spec(label)
        assert (o.offset_x_um, o.offset_y_um, o.parfocal_z_um) == (0, 0, 0)
    for label in ("4x", "40x"):
        o = objective_spec(label)
        assert 1 <= np.hypot(o.offset_x_um, o.offset_y_um) <= 30
        assert 1 <= abs(o.parfocal_z_um) <= 10
    assert [o.label for o in OBJECTIVES] == ["4x", "10x", "20x", "40x"]
    with pytest.raises(KeyError, match="100x"):
        objective_spec("100x")


def _centroid_um(truth, cell_id: int) -> tuple[float, float]:
    """Where a cell's labelled pixels sit relative to the image centre, µm
    (x right, y down: columns follow sample x, rows sample y)."""
    (rp,) = regionprops((truth.labels == cell_id).astype(np.int32))
    h, w = truth.labels.shape
    row, col = rp.centroid
    px = truth.pixel_size_um
    return (col + 0.5 - w / 2) * px, (row + 0.5 - h / 2) * px


def _isolated_cell_near_origin(sim) -> object:
    cells = [c for c in sim.cells() if abs(c.x_um) < 400 and abs(c.y_um) < 400]
    pts = np.array([(c.x_um, c.y_um) for c in cells])
    for c in cells:
        d = np.hypot(pts[:, 0] - c.x_um, pts[:, 1] - c.y_um)
        if np.sort(d)[1] > 25 and c.state == "interphase":
            return c
    raise AssertionError("no isolated cell")


def test_objective_offset_moves_the_image_and_a_corrected_move_centres(
    core, sim
) -> None:
    """Switching to 40x moves the image content by the objective's offset;
    a stage move that subtracts the offset centres the cell again."""
    o40 = objective_spec("40x")
    cell = _isolated_cell_near_origin(sim)
    core.setXYPosition(cell.x_um, cell.y_um)
    core.snapImage()
    dx10, dy10 = _centroid_um(sim.truth(), cell.id)
    assert np.hypot(dx10, dy10) < 0.5  # 10x: the stage position centres it
    core.setConfig("Objective", "40x")
    core.snapImage()
    truth = sim.truth()
    dx, dy = _centroid_um(truth, cell.id)
    assert dx == pytest.approx(-o40.offset_x_um, abs=0.5)
    assert dy == pytest.approx(-o40.offset_y_um, abs=0.5)
    assert (truth.center_x_um, truth.center_y_um) == pytest.approx(
        (cell.x_um + o40.offset_x_um, cell.y_um + o40.offset_y_um)
    )
    assert truth.objective == "40x"
    # the corrected move: stage = cell - offset
    core.setXYPosition(cell.x_um - o40.offset_x_um, cell.y_um - o40.offset_y_um)
    core.snapImage()
    truth = sim.truth()
    h, w = truth.labels.shape
    assert truth.labels[h // 2, w // 2] == cell.id
    assert np.hypot(*_centroid_um(truth, cell.id)) < 0.5


def _sharpness(sim, core) -> float:
    core.snapImage()
    img = sim.truth().expected_adu.astype(np.float64)
    gy, gx = np.gradient(img)
    return float(np.mean(gx**2 + gy**2))


def _sharpest_z(core, sim, zs: np.ndarray) -> float:
    scores = []
    for z in zs:
        core.setPosition(float(z))
        scores.append(_sharpness(sim, core))
    return float(zs[int(np.argmax(scores))])


def test_parfocal_offset_moves_the_focus(core, sim) -> None:
    """The sharpest Z at 40x lies parfocal_z_um from the one at 10x, and the
    truth's focal plane and ``sim.focus_z_um()`` say the same."""
    core.setExposure(5)
    core.setProperty("Camera", "SensorWidth_px", 256)
    core.setProperty("Camera", "SensorHeight_px", 256)
    zs = np.arange(-6.0, 8.01, 0.5)
    cell = _isolated_cell_near_origin(sim)  # the same nucleus in both fields
    o40 = objective_spec("40x")
    core.setXYPosition(cell.x_um, cell.y_um)
    z10 = _sharpest_z(core, sim, zs)
    core.setConfig("Objective", "40x")
    core.setXYPosition(cell.x_um - o40.offset_x_um, cell.y_um - o40.offset_y_um)
    z40 = _sharpest_z(core, sim, zs)
    assert z40 - z10 == pytest.approx(o40.parfocal_z_um, abs=0.5)
    core.setPosition(sim.focus_z_um())
    core.snapImage()
    assert sim.truth().defocus_um == pytest.approx(0.0, abs=0.01)
    assert sim.focus_z_um() == pytest.approx(z40, abs=0.5)
    core.setConfig("Objective", "4x")
    core.setPosition(0.0)
    core.snapImage()
    truth = sim.truth()
    assert truth.focus_z_um - sim.scene.focus_z_um(
        truth.center_x_um, truth.center_y_um, truth.t_s
    ) == pytest.approx(objective_spec("4x").parfocal_z_um, abs=1e-6)
