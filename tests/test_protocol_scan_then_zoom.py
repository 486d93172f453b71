"""protocols/scan_then_zoom.yaml: a 4x tile scan for rare red-marked cells,
then each target at 40x, scored by :func:`smartscope.score.score_run` against
the simulator's truth (targets in the scanned area found; zoom frames that
hold a target within a quarter of the half field from the centre).

The default tests run the protocol with one zoom time point on a seed that
is not the protocol's own; the full protocol on three more seeds is behind
``-m slow``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from smartscope.analysis.result import FrameInput, FrameResult, ObjectMeasurement
from smartscope.controller import Controller
from smartscope.hardware import load_core, release_core
from smartscope.limits import HardwareState
from smartscope.protocol import Protocol, load_protocol
from smartscope.reactions import RunView, ScanThenZoom
from smartscope.score import score_run
from smartscope.sim.turrets import objective_spec

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ROOT / "protocols" / "scan_then_zoom.yaml"

#: the bar of issue 10
FOUND_FRACTION = 0.9
CENTRED_FRACTION = 0.9


def _protocol(seed: int, **edit: Any) -> Protocol:
    data = yaml.safe_load(PROTOCOL.read_text())
    data["seed"] = seed
    data["save"] = {"truth": True, "report": False}
    for k, v in edit.items():
        data[k] = v
    return Protocol.model_validate(data)


def _run(out: Path, proto: Protocol) -> dict[str, Any]:
    core = load_core(seed=proto.seed, scene=proto.scene, time_mode=proto.time_mode)
    try:
        summary = Controller(core, proto, out_dir=out).run()
    finally:
        release_core(core)
    return {"summary": summary, "score": score_run(out)}


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("scan_then_zoom")
    data = yaml.safe_load(PROTOCOL.read_text())
    data["sequence"]["time_plan"]["loops"] = 2  # the scan, one zoom time point
    res = _run(out, _protocol(11, sequence=data["sequence"]))
    res["out"] = out
    return res


def test_the_protocol_offsets_are_the_simulators_calibration() -> None:
    proto = load_protocol(PROTOCOL)
    for label in ("4x", "40x"):
        spec = objective_spec(label)
        assert proto.devices.offset_um(label) == (
            spec.offset_x_um,
            spec.offset_y_um,
            spec.parfocal_z_um,
        )


def test_targets_in_the_scan_are_found_and_centred_at_40x(
    short_run: dict[str, Any],
) -> None:
    t = short_run["score"]["targets"]
    assert t["scan_objective"] == "4x"
    assert t["zoom_objectives"] == ["40x"]
    assert t["targets_in_scan"] >= 8  # the scene makes the outcome measurable
    assert t["found_fraction"] >= FOUND_FRACTION
    assert t["zoom_frames_centred_fraction"] >= CENTRED_FRACTION
    # in focus at 40x too: the parfocal offset (3.5 µm) is corrected
    assert short_run["score"]["focus"]["abs_error_um"]["p95"] < 1.0
    s = short_run["summary"]
    assert s["frames_skipped_analysis"] == 0  # every scan tile was looked at
    assert s["actions"]["SetObjective"] == {"applied": 1}
    assert s["actions"]["RemovePosition"] == {"applied": 1}


def test_the_scan_is_not_repeated_and_the_targets_are_imaged_at_40x(
    short_run: dict[str, Any],
) -> None:
    recs = [
        json.loads(x)
        for x in (short_run["out"] / "events.jsonl").read_text().splitlines()
    ]
    frames = [r for r in recs if r["kind"] == "frame"]
    scan = [f for f in frames if f["position"] == "scan"]
    assert {f["event_index"]["t"] for f in scan} == {0}
    assert {f["objective"] for f in scan} == {"4x"}
    assert len(scan) == 2 * 2 * 2  # 2 x 2 tiles, 2 channels
    zoom = [f for f in frames if f["position"] != "scan"]
    assert zoom
    assert {f["objective"] for f in zoom} == {"40x"}
    assert {f["pixel_size_um"] for f in zoom} == {6.5 / 40}
    added = [r for r in recs if r["kind"] == "action" and r["type"] == "AddPosition"]
    n = short_run["score"]["targets"]["targets_in_scan"]
    assert len(added) >= FOUND_FRACTION * n
    # every added position was imaged, in both channels
    names = {a["after"]["name"] for a in added}
    assert names == {f["position"] for f in zoom}
    assert len(zoom) == 2 * len(names)


def test_without_the_offsets_the_first_zoom_misses_the_centre(tmp_path: Path) -> None:
    """The same scan with no objective offsets and no re-centring: the 40x
    frames land the targets about 17 µm off centre (the simulated 40x's
    misalignment), beyond a quarter of its half field: the offsets are what
    centre them."""
    data = yaml.safe_load(PROTOCOL.read_text())
    data["sequence"]["time_plan"]["loops"] = 2
    data["reactions"][0]["recenter"] = False
    res = _run(
        tmp_path,
        _protocol(
            11, sequence=data["sequence"], devices={}, reactions=data["reactions"]
        ),
    )
    t = res["score"]["targets"]
    assert t["zoom_frames_centred_fraction"] < 0.5


def _frame(k: int, position: str, last: bool) -> FrameInput:
    import numpy as np

    return FrameInput(
        image=np.zeros((8, 8), np.uint16),
        frame_index=k,
        position=position,
        stage_x_um=0,
        stage_y_um=0,
        z_um=1.5,
        pixel_size_um=1.625,
        exposure_ms=50,
        t_frame=0,
        t_s=0,
        channel="mCherry",
        event_index={"t": 0, "p": 0, "g": k},
        last_in_block=last,
    )


def _result(f: FrameInput, objs: list[tuple[float, float, float, float]]) -> Any:
    return FrameResult(
        f,
        tuple(
            ObjectMeasurement(
                label=i + 1,
                track_id=i + 1,
                x_um=x,
                y_um=y,
                row=0,
                col=0,
                area_um2=a,
                mean_intensity=m,
            )
            for i, (x, y, a, m) in enumerate(objs)
        ),
        None,
        None,
        100.0,
        0.0,
    )


def test_hits_are_merged_across_tiles_ranked_and_capped() -> None:
    r = ScanThenZoom(objective="40x", min_signal_adu=50, max_targets=2)
    state = HardwareState(0, 0, 0, 50, 5, 0, 1, 300)
    view = RunView(state, {}, (832.0, 832.0), 1, 0.0)
    # tile 0: a bright hit, a dim one (below the threshold), a speck
    assert (
        r.react(
            _result(
                _frame(0, "scan", False),
                [(10, 10, 100, 400), (50, 50, 100, 120), (90, 90, 5, 900)],
            ),
            view,
        )
        == ()
    )
    # tile 1 (overlapping): the bright hit again, 3 µm away, and two others
    out = r.react(
        _result(
            _frame(1, "scan", True),
            [(13, 10, 100, 380), (200, 0, 100, 700), (-200, 0, 100, 250)],
        ),
        view,
    )
    kinds = [a.kind for a in out]
    assert kinds == ["RemovePosition", "SetObjective", "AddPosition", "AddPosition"]
    assert out[1].objective == "40x"
    added = [(a.x_um, a.y_um, a.z_um, a.name) for a in out[2:]]
    # brightest first; the duplicate merged; capped at 2
    assert added == [(200, 0, 1.5, "target1"), (10, 10, 1.5, "target2")]
    assert len(r.hits) == 4


def test_a_scan_without_hits_stops_the_run() -> None:
    r = ScanThenZoom(objective="40x", min_signal_adu=1000)
    state = HardwareState(0, 0, 0, 50, 5, 0, 1, 300)
    view = RunView(state, {}, (832.0, 832.0), 1, 0.0)
    out = r.react(_result(_frame(0, "scan", True), [(0, 0, 100, 400)]), view)
    assert [a.kind for a in out] == ["RemovePosition", "Stop"]
    assert "no target" in out[1].reason


@pytest.mark.slow
@pytest.mark.parametrize("seed", [21, 22, 23])
def test_the_full_protocol_meets_the_bar(tmp_path: Path, seed: int) -> None:
    t = _run(tmp_path, _protocol(seed))["score"]["targets"]
    assert t["targets_in_scan"] >= 8
    assert t["found_fraction"] >= FOUND_FRACTION
    assert t["zoom_frames_centred_fraction"] >= CENTRED_FRACTION
