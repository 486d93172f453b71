"""Per-position intervals, removed positions and an objective switch, run on
the simulator through the controller (actions from a scripted reaction)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from smartscope.actions import Action, RemovePosition, SetInterval, SetObjective
from smartscope.analysis.result import FrameResult
from smartscope.controller import Controller
from smartscope.hardware import load_core, release_core
from smartscope.protocol import Protocol
from smartscope.reactions.base import Reaction, RunView


def _frames(run: Path) -> list[dict[str, Any]]:
    recs = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    return [r for r in recs if r["kind"] == "frame"]


def _actions(run: Path) -> list[dict[str, Any]]:
    recs = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    return [r for r in recs if r["kind"] == "action"]


def _protocol(**over: Any) -> Protocol:
    data: dict[str, Any] = {
        "name": "plan-changes",
        "seed": 3,
        "time_mode": "virtual",
        "objective": "10x",
        "laser_power_mw": 2,
        "sequence": {
            "channels": [{"config": "DAPI", "exposure": 10}],
            "stage_positions": [
                {"name": "a", "x": -200, "y": 0},
                {"name": "b", "x": 0, "y": 0},
                {"name": "c", "x": 200, "y": 0},
            ],
            "time_plan": {"interval": 10, "loops": 10},
        },
        "analysis": {"segmenter": "classical", "diameter_um": 12},
        "limits": {"xy_box_um": [-500, 500, -500, 500]},
        "save": {"truth": False, "report": False},
    }
    data.update(over)
    return Protocol.model_validate(data)


class _Script(Reaction):
    """Returns the given actions once, at the first frame of ``at``."""

    name = "script"

    def __init__(self, at: str, actions: Sequence[Action]) -> None:
        super().__init__()
        self.at, self.todo = at, list(actions)

    def react(self, result: FrameResult, run: RunView) -> Sequence[Action]:
        if result.frame.position != self.at or not self.todo:
            return ()
        out, self.todo = self.todo, []
        return out


def _small_core() -> Any:
    """The demo microscope with a 256-px sensor (for speed)."""
    core = load_core()
    core.setProperty("Camera", "SensorWidth_px", 256)
    core.setProperty("Camera", "SensorHeight_px", 256)
    return core


def _run(tmp_path: Path, proto: Protocol, reaction: Reaction) -> dict[str, Any]:
    core = _small_core()
    try:
        return Controller(core, proto, out_dir=tmp_path, reactions=[reaction]).run()
    finally:
        release_core(core)


def test_a_position_of_its_own_interval_is_visited_at_that_interval_and_last(
    tmp_path: Path,
) -> None:
    summary = _run(
        tmp_path, _protocol(), _Script("a", [SetInterval(interval_s=30, position="b")])
    )
    frames = _frames(tmp_path)
    times = {p: [f["t_s"] for f in frames if f["position"] == p] for p in "abc"}
    assert len(times["a"]) == len(times["c"]) == 10  # every 10-s time point
    # b: the first time point (before the action took effect), then every 30 s
    gaps_b = np.diff(times["b"])
    assert len(times["b"]) == 4, times["b"]
    assert gaps_b[1:] == pytest.approx([30, 30], abs=1)
    # within a time point, b (the longest own interval) comes last
    for t in {f["event_index"].get("t") for f in frames if f["position"] == "b"} - {0}:
        order = [f["position"] for f in frames if f["event_index"].get("t") == t]
        assert order[-1] == "b", order
    assert summary["actions"]["SetInterval"] == {"applied": 1}


def test_removed_positions_are_no_longer_visited_and_the_run_ends_without_any(
    tmp_path: Path,
) -> None:
    script = _Script(
        "a",
        [
            RemovePosition(position="b"),
            RemovePosition(position="nowhere"),
        ],
    )
    summary = _run(tmp_path, _protocol(), script)
    frames = _frames(tmp_path)
    assert [f["position"] for f in frames].count("b") == 1  # before the removal
    assert [f["position"] for f in frames].count("a") == 10
    acts = _actions(tmp_path)
    refused = [a for a in acts if a["status"] == "refused"]
    assert len(refused) == 1
    assert "nowhere" in refused[0]["limit"]
    # removing every position ends the run, with the reason
    out2 = tmp_path / "all"
    script = _Script("c", [RemovePosition(position=p) for p in "abc"])
    summary = _run(out2, _protocol(), script)
    assert len(_frames(out2)) == 3
    assert "no position left" in summary["finish_reason"]
    assert [p.get("removed") for p in summary["positions"]] == [True] * 3


def test_objective_switch_keeps_positions_on_the_sample_with_the_offsets(
    tmp_path: Path,
) -> None:
    """With devices.objective_offsets for 40x, the stage goes to the position
    minus the offset and the focus plus it; the records keep sample
    coordinates, and the pixel size follows the objective."""
    proto = _protocol(
        devices={"objective_offsets": {"40x": {"x_um": 20, "y_um": -10, "z_um": 3}}},
        limits={"xy_box_um": [-500, 500, -500, 500], "objectives": ["10x", "40x"]},
    )
    script = _Script(
        "a",
        [
            SetObjective(objective="4x"),  # not in limits.objectives
            SetObjective(objective="100x"),  # not a preset
            SetObjective(objective="40x"),
        ],
    )
    core = _small_core()
    try:
        z0 = core.getZPosition()
        Controller(core, proto, out_dir=tmp_path, reactions=[script]).run()
        x_end, y_end = core.getXYPosition()
        z_end = core.getZPosition()
    finally:
        release_core(core)
    frames = _frames(tmp_path)
    assert frames[0]["objective"] == "10x"
    assert frames[0]["pixel_size_um"] == pytest.approx(0.65)
    late = [f for f in frames if f["event_index"]["t"] >= 1]
    assert {f["objective"] for f in late} == {"40x"}
    assert [f["pixel_size_um"] for f in late] == pytest.approx([6.5 / 40] * len(late))
    # records in sample coordinates: the positions as the protocol gives them
    last_c = [f for f in late if f["position"] == "c"][-1]
    assert (last_c["x_um"], last_c["y_um"]) == pytest.approx((200, 0), abs=0.01)
    assert last_c["z_um"] == pytest.approx(z0, abs=0.01)
    # the hardware: minus the offset in XY, plus in Z
    assert (x_end, y_end) == pytest.approx((200 - 20, 0 + 10), abs=0.01)
    assert z_end == pytest.approx(z0 + 3, abs=0.01)
    acts = {(a["type"], a["status"]) for a in _actions(tmp_path)}
    assert ("SetObjective", "applied") in acts
    reasons = [a["limit"] for a in _actions(tmp_path) if a["status"] == "refused"]
    assert any("limits.objectives" in r for r in reasons)
    assert any("not a preset" in r for r in reasons)


def test_objective_offsets_must_name_presets(tmp_path: Path) -> None:
    proto = _protocol(devices={"objective_offsets": {"63x": {"x_um": 1}}})
    core = _small_core()
    try:
        with pytest.raises(Exception, match=r"devices.objective_offsets.63x"):
            Controller(core, proto, out_dir=tmp_path).run()
    finally:
        release_core(core)
