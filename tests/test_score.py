"""``smartscope score``: a simulated run scored against its ground truth.

Real runs on the simulator; every expected number is computed here from the
run's files by hand (frame records, truth/cells.csv) or taken from the live
simulator while the run went on (``sim.truth()``), never from the scorer.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from smartscope import cli
from smartscope.actions import Action, Autofocus
from smartscope.analysis.result import FrameResult
from smartscope.controller import Controller
from smartscope.hardware import load_core, release_core
from smartscope.metrics import match_instances
from smartscope.protocol import Protocol
from smartscope.reactions.base import Reaction, RunView
from smartscope.recover import recover_run
from smartscope.score import ScoreError, score_rows, score_run
from smartscope.score_inputs import read_inputs
from smartscope.score_segmentation import truth_disc_labels
from smartscope.sim import get_simulator

runner = CliRunner()

#: 10x on the demo camera: 512 px of 0.65 µm
HALF_FIELD_10X_UM = 512 * 0.65 / 2


def _protocol(**overrides: Any) -> Protocol:
    data: dict[str, Any] = {
        "name": "score",
        "seed": 3,
        "scene": "dividing",
        "time_mode": "virtual",
        "objective": "10x",
        "laser_power_mw": 5,
        "sequence": {
            "channels": [{"config": "DAPI", "exposure": 30}],
            "stage_positions": [{"name": "a", "x": 0, "y": 0}],
            "time_plan": {"interval": 120, "loops": 60},
        },
        "analysis": {"enabled": False},
        "save": {"report": False},
    }
    data.update(overrides)
    return Protocol.model_validate(data)


def _run(
    out: Path,
    proto: Protocol,
    *,
    reactions: Sequence[Reaction] = (),
    on_frame: Any = None,
) -> Path:
    core = load_core(seed=proto.seed, scene=proto.scene)
    try:
        ctl = Controller(core, proto, out_dir=out, reactions=reactions)
        if on_frame is not None:
            sim = get_simulator(core)
            ctl.frame_acquired.connect(lambda f: on_frame(f, sim))
        ctl.run()
    finally:
        release_core(core)
    return out


def _events(run: Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in (run / "events.jsonl").read_text().splitlines()]


def _frames(run: Path) -> list[dict[str, Any]]:
    return [e for e in _events(run) if e["kind"] == "frame"]


def _truth(run: Path) -> list[dict[str, str]]:
    with (run / "truth" / "cells.csv").open() as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Dividing cells every 2 min for 2 h, classical segmentation, labels
    saved; the live simulator's defocus and labels kept per frame."""
    live: dict[str, Any] = {"defocus": {}, "labels": {}}

    def on_frame(f: Any, sim: Any) -> None:
        truth = sim.truth()
        live["defocus"][f.frame_index] = truth.defocus_um
        if f.frame_index in (5, 40):
            live["labels"][f.frame_index] = truth.labels.copy()

    out = tmp_path_factory.mktemp("score") / "fast"
    proto = _protocol(
        analysis={"segmenter": "classical", "diameter_um": 12},
        save={"labels": True, "report": False},
    )
    _run(out, proto, on_frame=on_frame)
    return {"run": out, "score": score_run(out), **live}


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same sample and seed, every hour for 2 h (longer than a mitosis)."""
    out = tmp_path_factory.mktemp("score") / "slow"
    seq = {
        "channels": [{"config": "DAPI", "exposure": 30}],
        "stage_positions": [{"name": "a", "x": 0, "y": 0}],
        "time_plan": {"interval": 3600, "loops": 3},
    }
    return _run(out, _protocol(sequence=seq))


@pytest.fixture(scope="module")
def follow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Follow a migrating nucleus at 20x (the demo's reaction), 30 frames."""
    out = tmp_path_factory.mktemp("score") / "follow"
    proto = _protocol(
        seed=6,
        scene="migration",
        objective="20x",
        sequence={
            "channels": [{"config": "DAPI", "exposure": 40}],
            "stage_positions": [{"name": "cell", "x": 0, "y": 0}],
            "time_plan": {"interval": 60, "loops": 30},
        },
        analysis={"segmenter": "classical", "diameter_um": 12},
        reactions=[
            {
                "type": "center_on",
                "select": "nearest_center",
                "dead_band_fraction": 0.05,
                "max_step_um": 60,
            }
        ],
        limits={"xy_box_um": [-1400, 1400, -1400, 1400], "max_xy_step_um": 100},
        save={"labels": True, "report": False},
    )
    return _run(out, proto)


class _RefocusOnFrame4(Reaction):
    name = "refocus"

    def react(self, result: FrameResult, run: RunView) -> Sequence[Action]:
        f = result.frame
        if f.frame_index != 4:
            return ()
        return (
            Autofocus(
                range_um=30,
                step_um=2,
                source=self.name,
                frame_index=f.frame_index,
                t_frame=f.t_frame,
            ),
        )


@pytest.fixture(scope="module")
def harsh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Cells that die of little light (a scene preset file), strong light,
    a focus jump after frame 1 and an autofocus sweep on frame 4."""
    base = tmp_path_factory.mktemp("score")
    preset = base / "fragile.yaml"
    preset.write_text(
        "version: 1\ndensity_per_mm2: 500\ntox_onset_j_cm2: 10\ntox_death_j_cm2: 40\n"
    )

    def on_frame(f: Any, sim: Any) -> None:
        if f.frame_index == 1:
            sim.inject("focus_jump", dz_um=8.0)

    proto = _protocol(
        scene=str(preset),
        laser_power_mw=20,
        sequence={
            "channels": [{"config": "DAPI", "exposure": 500}],
            "stage_positions": [{"name": "a", "x": 0, "y": 0}],
            "time_plan": {"interval": 30, "loops": 12},
        },
        analysis={"segmenter": "classical"},
        limits={"z_range_um": [-100, 100], "max_z_step_um": 50, "max_laser_mw": 20},
    )
    return _run(
        base / "harsh", proto, reactions=[_RefocusOnFrame4()], on_frame=on_frame
    )


# ------------------------------------------------------------------ events


def test_mitoses_are_counted_from_the_truth_in_the_field(
    fast: dict[str, Any],
) -> None:
    run, score = fast["run"], fast["score"]
    frames = {f["index"]: f for f in _frames(run)}
    mitotic: dict[int, set[int]] = defaultdict(set)  # cell -> frames in view
    for r in _truth(run):
        f = frames[int(r["frame"])]
        inside = (
            abs(float(r["x_um"]) - f["x_um"]) <= HALF_FIELD_10X_UM
            and abs(float(r["y_um"]) - f["y_um"]) <= HALF_FIELD_10X_UM
        )
        if r["state"] == "mitosis" and inside:
            mitotic[int(r["cell_id"])].add(f["index"])
    ev = score["events"]
    assert ev["mitoses_seen"] == len(mitotic) > 5
    assert 0 < ev["mitoses_started_in_view"] <= ev["mitoses_seen"]
    # one channel: one frame per time point
    for e in ev["events"]:
        assert e["time_points"] == len(mitotic.get(e["cell_id"], ()))
    counts = np.array([e["time_points"] for e in ev["events"]])
    assert ev["captured"] == int((counts > 0).sum())
    assert ev["time_points_per_event"]["median"] == float(np.median(counts))
    assert ev["fraction_with_5_time_points"] == pytest.approx(np.mean(counts >= 5))
    # 40 min of mitosis imaged every 2 min: a mitosis that started in view
    # and ended before the run did is seen about 20 times
    assert ev["time_points_per_event"]["max"] == 20


def test_a_mitosis_just_outside_the_field_is_not_counted_and_one_inside_is(
    slow: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(slow, run)
    before = score_run(run)["events"]
    frames = _frames(run)
    t0, t1 = frames[0], frames[1]
    with (run / "truth" / "cells.csv").open("a", newline="") as fh:
        w = csv.writer(fh)
        for cell, dx in (
            (900001, HALF_FIELD_10X_UM + 2),
            (900002, HALF_FIELD_10X_UM - 2),
        ):
            for f, state in ((t0, "interphase"), (t1, "mitosis")):
                w.writerow(
                    [f["index"], 0, cell, 0, f["x_um"] + dx, f["y_um"], 6, state, 0]
                )
    after = score_run(run)["events"]
    ids = {e["cell_id"] for e in after["events"]}
    assert 900001 not in ids
    assert 900002 in ids
    assert after["mitoses_seen"] == before["mitoses_seen"] + 1
    assert after["mitoses_started_in_view"] == before["mitoses_started_in_view"] + 1
    assert after["captured"] == before["captured"] + 1
    (added,) = [e for e in after["events"] if e["cell_id"] == 900002]
    assert added["time_points"] == 1


def test_imaging_faster_catches_each_mitosis_more_often_and_costs_more_light(
    fast: dict[str, Any], slow: Path
) -> None:
    f, s = fast["score"], score_run(slow)
    fe, se = f["events"], s["events"]
    assert se["mitoses_started_in_view"] > 0
    assert fe["time_points_per_event"]["median"] > se["time_points_per_event"]["median"]
    assert fe["captured_fraction"] >= se["captured_fraction"]
    assert se["fraction_with_5_time_points"] == 0.0  # 3 time points in all
    assert f["light"]["total_mj"] > s["light"]["total_mj"]


# ------------------------------------------------------------------ light


def test_light_per_position_and_per_cell_from_the_records(follow: Path) -> None:
    score = score_run(follow)
    frames = _frames(follow)
    by_pos: dict[str, float] = defaultdict(float)
    for f in frames:
        by_pos[f["position"]] += f["laser_mw"] * f["exposure_ms"] / 1000
    light = score["light"]
    assert light["per_position_mj"] == pytest.approx(dict(by_pos))
    summary = json.loads((follow / "summary.json").read_text())
    assert light["total_mj"] == summary["light_dose_mj"] == frames[-1]["dose_mj"]
    assert light["total_from"] == "summary.json"
    per_cell: dict[str, float] = defaultdict(float)
    for r in _truth(follow):
        per_cell[r["cell_id"]] = max(per_cell[r["cell_id"]], float(r["dose"]))
    doses = np.array(list(per_cell.values()))
    assert light["per_cell_j_cm2"]["cells"] == len(per_cell)
    assert light["per_cell_j_cm2"]["max"] == pytest.approx(doses.max())
    assert light["per_cell_j_cm2"]["median"] == pytest.approx(np.median(doses))
    assert light["phototoxic_deaths"] == 0


def test_phototoxic_deaths_and_the_autofocus_share_of_light(harsh: Path) -> None:
    score = score_run(harsh)
    rows = _truth(harsh)
    dead = {r["cell_id"] for r in rows if r["state"] == "dead"}
    assert dead
    assert all(float(r["dose"]) >= 40 for r in rows if r["state"] == "dead")
    assert score["light"]["phototoxic_deaths"] == len(dead)
    dose: dict[str, float] = defaultdict(float)
    for r in rows:
        dose[r["cell_id"]] = max(dose[r["cell_id"]], float(r["dose"]))
    assert score["light"]["cells_past_tox_onset"] == sum(d >= 10 for d in dose.values())
    frames = _frames(harsh)
    light = [f["laser_mw"] * f["exposure_ms"] / 1000 for f in frames]
    af = [x for x, f in zip(light, frames, strict=True) if f["role"] == "autofocus"]
    focus = score["focus"]
    assert focus["autofocus_frames"] == len(af) == 16
    assert focus["autofocus_light_fraction"] == pytest.approx(sum(af) / sum(light))


# ------------------------------------------------------------------ focus


def test_focus_error_equals_the_simulators_own_defocus(fast: dict[str, Any]) -> None:
    focus = fast["score"]["focus"]
    live = fast["defocus"]
    assert focus["frames_scored"] == len(live) == 60
    got = dict((int(i), e) for i, e in focus["error_um_by_frame"])
    for index, defocus in live.items():
        assert got[index] == pytest.approx(defocus, abs=1e-3)
    errors = np.abs(list(live.values()))
    assert focus["abs_error_um"]["median"] == pytest.approx(np.median(errors), abs=1e-3)
    # 10x/0.30 at 460 nm: the defocus blur equals the in-focus PSF at
    # dz = 2 * 0.21 * 0.46 / 0.30 / tan(asin(0.30)) µm
    dof = 2 * 0.21 * 0.46 / 0.30 / np.tan(np.arcsin(0.30))
    assert focus["depth_of_field_um"]["DAPI"] == pytest.approx(dof, rel=1e-3)
    assert focus["fraction_in_depth_of_field"] == pytest.approx(np.mean(errors <= dof))


def test_a_focus_jump_the_folder_cannot_know_withholds_focus_errors(
    harsh: Path,
) -> None:
    score = score_run(harsh)
    assert score["focus"]["abs_error_um"] is None
    assert score["focus"]["error_um_by_frame"] is None
    assert any("autofocus sweep" in n and "focus jump" in n for n in score["notes"])


# ------------------------------------------------------------------ centring


def test_centring_measures_the_followed_cell_against_the_stage(follow: Path) -> None:
    score = score_run(follow)
    ce = score["centring"]
    rows = _truth(follow)
    frames = _frames(follow)
    # center_on picks the nucleus nearest the centre of the first frame
    first = [r for r in rows if r["frame"] == "0"]
    x0, y0 = frames[0]["x_um"], frames[0]["y_um"]
    nearest = min(
        first, key=lambda r: np.hypot(float(r["x_um"]) - x0, float(r["y_um"]) - y0)
    )
    assert ce["cell_id"] == int(nearest["cell_id"])
    where = {
        int(r["frame"]): (float(r["x_um"]), float(r["y_um"]))
        for r in rows
        if r["cell_id"] == nearest["cell_id"]
    }
    dist = np.array(
        [
            np.hypot(where[f["index"]][0] - f["x_um"], where[f["index"]][1] - f["y_um"])
            for f in frames
        ]
    )
    assert ce["frames"] == ce["frames_cell_in_view"] == len(frames) == 30
    assert ce["distance_um"]["median"] == pytest.approx(np.median(dist), abs=1e-3)
    quarter = 0.25 * 512 * 0.325 / 2
    assert ce["quarter_half_field_um"] == pytest.approx(quarter)
    assert ce["fraction_within_quarter_half_field"] == pytest.approx(
        np.mean(dist <= quarter)
    )
    # the stage kept it near the centre
    assert ce["distance_um"]["median"] < quarter


def test_a_run_that_follows_nothing_has_no_centring(slow: Path) -> None:
    score = score_run(slow)
    assert score["centring"]["cell_id"] is None
    assert score["centring"]["distance_um"] is None
    assert any(n.startswith("centring: no stage move") for n in score["notes"])


# ------------------------------------------------------------------ segmentation


def test_truth_masks_from_the_rows_match_the_simulators_own_labels(
    fast: dict[str, Any],
) -> None:
    inputs = read_inputs(fast["run"])
    for index, live in fast["labels"].items():
        frame = inputs.imaged[index]
        discs = truth_disc_labels(frame, inputs.truth, inputs.rows_of[index])
        m = match_instances(live, discs, iou_threshold=0.5)
        # same cells, same ids; discs of equal area against slightly
        # elongated ellipses
        assert m.fn == m.fp == 0
        assert np.all(m.pairs[:, 0] == m.pairs[:, 1])
        assert m.mean_matched_iou > 0.85


def test_segmentation_ap_of_the_stored_labels_drops_when_they_are_shifted(
    follow: Path, tmp_path: Path
) -> None:
    seg = score_run(follow)["segmentation"]
    assert seg["frames"] == 20
    assert 0 < seg["ap_75"] <= seg["ap_50"] <= 1
    shifted = tmp_path / "run"
    shutil.copytree(follow, shifted)
    labels = zarr.open_array(
        str(shifted / "data.ome.zarr" / "0" / "labels" / "nuclei" / "0"), mode="r+"
    )
    labels[:] = np.roll(labels[:], 12, axis=-1)  # 12 px = 3.9 µm at 20x
    worse = score_run(shifted)["segmentation"]
    assert worse["frame_indices"] == seg["frame_indices"]
    assert worse["ap_50"] < seg["ap_50"]


def test_a_run_without_label_images_has_no_segmentation_score(slow: Path) -> None:
    seg = score_run(slow)["segmentation"]
    assert seg["ap_50"] is None
    assert seg["frames"] == 0


# ------------------------------------------------------------------ killed runs


def test_a_killed_run_is_scored_on_what_it_logged_then_after_recover(
    follow: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(follow, run)
    (run / "summary.json").unlink()
    lines = (run / "events.jsonl").read_bytes().split(b"\n")[:-1]
    frame_lines = [i for i, ln in enumerate(lines) if b'"kind":"frame"' in ln]
    cut = frame_lines[20]  # frames 0..19 logged, then a line cut mid-way
    (run / "events.jsonl").write_bytes(
        b"".join(ln + b"\n" for ln in lines[:cut]) + lines[cut][:40]
    )
    logged = [json.loads(ln) for ln in lines[:cut] if b'"kind":"frame"' in ln]
    score = score_run(run)
    assert score["frames"]["acquisition"] == 20
    assert score["light"]["total_mj"] == logged[-1]["dose_mj"]
    assert "last frame record" in score["light"]["total_from"]
    assert score["centring"]["frames"] == 20
    assert any("frames the log does not record" in n for n in score["notes"])

    recover_run(run)
    again = score_run(run)
    assert again["light"]["total_from"] == "summary.json"
    assert again["light"]["total_mj"] == logged[-1]["dose_mj"]
    assert again["frames"]["acquisition"] == 20


# ------------------------------------------------------------------ targets

#: 2 x 2 tiles at 4x (512 px of 1.625 µm): 1.66 mm square
HALF_FIELD_4X_UM = 512 * 6.5 / 4 / 2
SCAN_TILES = [
    (-HALF_FIELD_4X_UM, -HALF_FIELD_4X_UM),
    (HALF_FIELD_4X_UM, -HALF_FIELD_4X_UM),
    (-HALF_FIELD_4X_UM, HALF_FIELD_4X_UM),
    (HALF_FIELD_4X_UM, HALF_FIELD_4X_UM),
]


@pytest.fixture(scope="module")
def scan_zoom(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A scan-then-zoom run built by hand: 2 x 2 tiles at 4x in mCherry over
    the rare_targets scene, then 40x at every target the scan holds, each
    with the 40x objective's offset corrected but the last, which is imaged
    at the uncorrected stage position (about 17 µm off, more than a quarter
    of the 40x half field). The objective is switched between the scan and
    the zoom behind the controller's back; the live truth of every frame is
    kept."""
    from smartscope.sim.turrets import objective_spec

    seed, scene = 4, "rare_targets"
    o4, o40 = objective_spec("4x"), objective_spec("40x")
    core = load_core(seed=seed, scene=scene)
    try:
        cells = [c for c in get_simulator(core).cells() if c.target]
    finally:
        release_core(core)
    # at t = 0 (cells move well under a micrometre during the run)
    targets = [
        c
        for c in cells
        if any(
            abs(c.x_um - x - o4.offset_x_um) <= HALF_FIELD_4X_UM
            and abs(c.y_um - y - o4.offset_y_um) <= HALF_FIELD_4X_UM
            for x, y in SCAN_TILES
        )
    ]
    positions = [
        {"name": f"scan{i}", "x": x, "y": y} for i, (x, y) in enumerate(SCAN_TILES)
    ]
    positions += [
        {
            "name": f"zoom{i}",
            "x": c.x_um - o40.offset_x_um,
            "y": c.y_um - o40.offset_y_um,
        }
        for i, c in enumerate(targets[:-1])
    ]
    positions.append(
        {"name": "uncorrected", "x": targets[-1].x_um, "y": targets[-1].y_um}
    )
    live: dict[int, Any] = {}

    def on_frame(f: Any, sim: Any) -> None:
        live[f.frame_index] = sim.truth()
        if f.position == f"scan{len(SCAN_TILES) - 1}":
            sim.core.setConfig("Objective", "40x")

    proto = _protocol(
        seed=seed,
        scene=scene,
        objective="4x",
        sequence={
            "channels": [{"config": "mCherry", "exposure": 20}],
            "stage_positions": positions,
        },
    )
    out = tmp_path_factory.mktemp("score") / "scan_zoom"
    _run(out, proto, on_frame=on_frame)
    return {"run": out, "score": score_run(out), "live": live, "targets": targets}


def test_targets_found_and_centred_at_high_magnification(
    scan_zoom: dict[str, Any],
) -> None:
    ta, live = scan_zoom["score"]["targets"], scan_zoom["live"]
    scan = [t for t in live.values() if t.objective == "4x"]
    zoom = [t for t in live.values() if t.objective == "40x"]
    assert len(scan) == 4
    assert len(zoom) == len(scan_zoom["targets"])
    # the targets whose centre was in a scan field, from the live truth
    in_scan = set()
    for t in scan:
        h, w = t.labels.shape
        hw, hh = w * t.pixel_size_um / 2, h * t.pixel_size_um / 2
        in_scan |= {
            c.id
            for c in t.cells
            if c.target
            and abs(c.x_um - t.center_x_um) <= hw
            and abs(c.y_um - t.center_y_um) <= hh
        }
    assert in_scan == {c.id for c in scan_zoom["targets"]}
    assert ta["scan_frames"] == 4
    assert ta["scan_objective"] == "4x"
    assert ta["scanned_area_mm2"] == pytest.approx((4 * HALF_FIELD_4X_UM) ** 2 * 1e-6)
    assert ta["targets_in_scan"] == len(in_scan) >= 10
    # every corrected zoom frame centres its target; the uncorrected one not
    quarter = 0.25 * 512 * 6.5 / 40 / 2
    assert ta["quarter_half_field_um"] == pytest.approx(quarter)
    centred = []
    for t in zoom:
        d = [
            np.hypot(c.x_um - t.center_x_um, c.y_um - t.center_y_um)
            for c in t.cells
            if c.target
        ]
        centred.append(bool(d) and min(d) <= quarter)
    assert centred == [True] * (len(zoom) - 1) + [False]
    assert ta["zoom_frames"] == len(zoom)
    assert ta["zoom_frames_centred"] == len(zoom) - 1
    assert ta["zoom_frames_centred_fraction"] == pytest.approx(1 - 1 / len(zoom))
    assert ta["found"] == len(in_scan) - 1
    assert ta["found_fraction"] == pytest.approx(1 - 1 / len(in_scan))
    assert ta["missed_cell_ids"] == [scan_zoom["targets"][-1].id]
    # the uncorrected frame missed by the 40x objective's offset
    d_last = ta["distance_um_by_zoom_frame"][-1][1]
    assert d_last == pytest.approx(np.hypot(14.0, 9.0), abs=1.0)
    rows = dict(score_rows(scan_zoom["score"]))["targets"]
    assert ("targets in scan", str(len(in_scan))) in rows


def test_frame_centres_take_the_true_offsets_and_undo_the_calibrated_ones() -> None:
    """A record's x/y are sample coordinates by the protocol's calibration
    (stage + calibrated offset); the true image centre is stage + the
    objective's true offset, whatever the calibration said."""
    from smartscope.controller.records import FrameRecord
    from smartscope.score_inputs import ImagedFrame
    from smartscope.sim.turrets import objective_spec

    o40 = objective_spec("40x")
    stage = (100.0, -50.0)

    def frame(cal: tuple[float, float, float]) -> ImagedFrame:
        rec = FrameRecord(
            index=0,
            position="p",
            event_index={},
            channel="DAPI",
            x_um=stage[0] + cal[0],
            y_um=stage[1] + cal[1],
            z_um=0.0,
            exposure_ms=10,
            laser_mw=1,
            dose_mj=0,
            t_s=0,
            t_frame=0,
        )
        return ImagedFrame(
            record=rec,
            shape_yx=(512, 512),
            pixel_um=6.5 / 40,
            objective=o40,
            calibrated_offset_um=cal,
        )

    for cal in ((0.0, 0.0, 0.0), (o40.offset_x_um, o40.offset_y_um, 3.5), (5, 5, 0)):
        f = frame(cal)
        assert (f.stage_x_um, f.stage_y_um) == pytest.approx(stage)
        assert (f.center_x_um, f.center_y_um) == pytest.approx(
            (stage[0] + o40.offset_x_um, stage[1] + o40.offset_y_um)
        )


def test_a_run_without_targets_or_zoom_has_null_target_metrics(
    slow: Path, tmp_path: Path
) -> None:
    ta = score_run(slow)["targets"]
    assert ta["scan_frames"] == 3
    assert ta["targets_in_scan"] == 0
    assert ta["zoom_frames"] == 0
    assert ta["found_fraction"] is None
    assert ta["zoom_frames_centred_fraction"] is None
    # a cells.csv from before the target column is read, with no target
    run = tmp_path / "old"
    shutil.copytree(slow, run)
    path = run / "truth" / "cells.csv"
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, [k for k in rows[0] if k != "target"])
        writer.writeheader()
        for r in rows:
            writer.writerow({k: v for k, v in r.items() if k != "target"})
    truth = read_inputs(run).truth
    assert truth is not None
    assert len(truth) == len(rows)
    assert not truth.target.any()
    score = score_run(run)
    assert any("marks no target cell" in n for n in score["notes"])


# ------------------------------------------------------------------ command line


def test_score_command_prints_a_table_and_json_and_writes_score_json(
    slow: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(slow, run)
    table = runner.invoke(cli.app, ["score", str(run)])
    assert table.exit_code == 0, table.output
    for group in ("events", "light", "focus", "centring", "segmentation", "targets"):
        assert group in table.output
    assert "no stage move aimed at an object" in table.output
    written = json.loads((run / "score.json").read_text())
    as_json = runner.invoke(cli.app, ["score", str(run), "--json"])
    assert as_json.exit_code == 0
    printed = json.loads(as_json.output)
    assert printed == written
    assert printed["light"]["total_mj"] == pytest.approx(
        sum(f["laser_mw"] * f["exposure_ms"] / 1000 for f in _frames(run))
    )


def test_score_refuses_a_folder_without_truth_in_one_line(
    slow: Path, tmp_path: Path
) -> None:
    run = tmp_path / "real-microscope-run"
    shutil.copytree(slow, run)
    shutil.rmtree(run / "truth")
    with pytest.raises(ScoreError, match=r"truth/cells\.csv"):
        score_run(run)
    result = runner.invoke(cli.app, ["score", str(run)])
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "real-microscope-run" in message
    assert "no truth/cells.csv" in message
    assert not (run / "score.json").exists()
    nothing = runner.invoke(cli.app, ["score", str(tmp_path / "nowhere")])
    assert nothing.exit_code == 2
    assert "no such run folder" in nothing.output
