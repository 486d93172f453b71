"""The controller holds the limits, runs useq plans as written and records
every frame's fate: one test per defect found by trying it as a user would
(through the public API, on the simulator, checked against its own state)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from smartscope._data import data_dir
from smartscope.actions import (
    Action,
    Autofocus,
    MoveFocus,
    MoveStage,
    SetExposure,
    SetLaserPower,
    SetProperty,
)
from smartscope.analysis.result import FrameResult
from smartscope.controller import Controller
from smartscope.hardware import load_core, release_core
from smartscope.io.read_images import frames_on_disk, read_frames
from smartscope.protocol import Protocol, ProtocolError
from smartscope.reactions.base import Reaction, RunView
from smartscope.sim import get_simulator


def _events(run: Path, kind: str | None = None) -> list[dict[str, Any]]:
    out = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    return [e for e in out if kind is None or e["kind"] == kind]


def _proto(**over: Any) -> Protocol:
    data: dict[str, Any] = {
        "name": "safety",
        "objective": "20x",
        "laser_power_mw": 5,
        "sequence": {
            "channels": [{"config": "DAPI", "exposure": 20}],
            "stage_positions": [{"name": "a", "x": 0, "y": 0}],
            "time_plan": {"interval": 30, "loops": 6},
        },
        "limits": {
            "xy_box_um": [-300, 300, -300, 300],
            "z_range_um": [-100, 100],
            "max_laser_mw": 8,
        },
        "save": {"truth": False},
    }
    data.update(over)
    return Protocol.model_validate(data)


def _run(proto: Protocol, out: Path, reactions: Sequence[Reaction] = (), **kw: Any):
    core = load_core(**kw)
    try:
        sim = get_simulator(core)
        ctl = Controller(core, proto, out_dir=out, reactions=reactions)
        seen: list[dict[str, float]] = []
        ctl.frame_acquired.connect(
            lambda f: seen.append(
                {
                    "power": float(core.getProperty("Laser", "Power_mW")),
                    "exposure": core.getExposure(),
                    "z": core.getZPosition(),
                }
            )
        )
        summary = ctl.run()
        return summary, sim.light_dose_mj, seen
    finally:
        release_core(core)


class _Fixed(Reaction):
    """Returns the same actions for every frame (or those of ``fn(result)``)."""

    name = "fixed"

    def __init__(self, *actions: Any, fn: Any = None) -> None:
        super().__init__()
        self.actions, self.fn = actions, fn

    def react(self, result: FrameResult, run: RunView) -> Sequence[Action]:
        return self.fn(result, run) if self.fn else self.actions


# 1 ------------------------------------------------------------------


def test_set_property_on_the_laser_power_passes_the_power_limit(run_dir: Path) -> None:
    proto = _proto(limits={"max_laser_mw": 8, "allowed_properties": ["Laser.Power_mW"]})
    react = _Fixed(SetProperty(device="Laser", prop="Power_mW", value=90))
    summary, sim_dose, seen = _run(proto, run_dir, [react])
    assert max(s["power"] for s in seen) <= 8
    acts = _events(run_dir, "action")
    assert acts[0]["status"] == "clamped"
    assert "max_laser_mw" in acts[0]["limit"]
    # the ledger counts what the sample received
    assert summary["light_dose_mj"] == pytest.approx(sim_dose, rel=1e-9)
    assert summary["light_dose_mj_simulator"] == pytest.approx(sim_dose, rel=1e-6)


@pytest.mark.parametrize(
    ("device", "prop", "value", "why"),
    [
        ("Shutter", "State", 1, "shutter"),
        ("Objective", "Label", "40x", "objective"),
        ("Core", "AutoShutter", 0, "core"),
        ("XY", "TravelRange_um", 1e9, "stage"),
        ("Laser", "MaxPower_mW", 1000, "allowed_properties"),
        ("Sample", "Seed", 5, "allowed_properties"),
    ],
)
def test_set_property_that_would_get_around_the_limits_is_refused(
    run_dir: Path, device: str, prop: str, value: Any, why: str
) -> None:
    proto = _proto(sequence={"time_plan": {"interval": 30, "loops": 3}})
    react = _Fixed(SetProperty(device=device, prop=prop, value=value))
    summary, _, _ = _run(proto, run_dir, [react])
    acts = [a for a in _events(run_dir, "action") if a["status"] != "not_applied"]
    assert acts
    assert all(a["status"] == "refused" for a in acts)
    assert why in acts[0]["limit"].lower()
    assert summary["status"] == "completed"


# 2 ------------------------------------------------------------------


def test_autofocus_is_refused_when_the_dose_budget_is_spent(run_dir: Path) -> None:
    proto = _proto(
        limits={
            "light_dose_budget_mj": 0.15,
            "max_laser_mw": 8,
            "z_range_um": [-50, 50],
        },
        stop={"when_dose_budget_spent": False},
    )
    summary, _, _ = _run(proto, run_dir, [_Fixed(Autofocus(range_um=10, step_um=1))])
    af = [a for a in _events(run_dir, "action") if a["type"] == "Autofocus"]
    assert af
    assert all(a["status"] in ("refused", "not_applied") for a in af)
    assert "budget" in af[0]["limit"]
    assert summary["frames_autofocus"] == 0


def test_autofocus_with_a_zero_step_or_negative_range_cannot_be_made() -> None:
    with pytest.raises(ValueError, match="step_um"):
        Autofocus(step_um=0)
    with pytest.raises(ValueError, match="range_um"):
        Autofocus(range_um=-10)


def test_a_huge_autofocus_sweep_is_capped_by_the_limits(run_dir: Path) -> None:
    proto = _proto(
        sequence={"time_plan": {"interval": 30, "loops": 2}},
        limits={
            "z_range_um": [-50, 50],
            "max_autofocus_planes": 11,
            "max_z_step_um": 20,
        },
    )
    _, _, seen = _run(proto, run_dir, [_Fixed(Autofocus(range_um=4e6, step_um=1e-6))])
    (sweep,) = _events(run_dir, "autofocus")  # one after frame 0 lands before frame 1
    assert len(sweep["z_um"]) == 11
    assert min(sweep["z_um"]) >= -20
    assert max(sweep["z_um"]) <= 20
    assert all(-50 <= s["z"] <= 50 for s in seen)


# 3 ------------------------------------------------------------------


def test_multi_phase_time_plan_keeps_its_intervals(run_dir: Path) -> None:
    seq = {
        "channels": [{"config": "DAPI", "exposure": 10}],
        "time_plan": {
            "phases": [{"interval": 60, "loops": 2}, {"interval": 300, "loops": 2}]
        },
    }
    proto = _proto(sequence=seq, analysis={"enabled": False})
    _run(proto, run_dir)
    t = [f["t_s"] for f in _events(run_dir, "frame")]
    want = [e.min_start_time for e in proto.sequence]  # useq chains the phases
    assert want == [0, 60, 360]
    assert np.diff(t) == pytest.approx(np.diff(want), abs=0.5)


def test_acquire_every_skips_the_channel(run_dir: Path) -> None:
    seq = {
        "channels": [
            {"config": "DAPI", "exposure": 10},
            {"config": "GFP", "exposure": 10, "acquire_every": 2},
        ],
        "time_plan": {"interval": 10, "loops": 4},
    }
    summary, _, _ = _run(_proto(sequence=seq, analysis={"enabled": False}), run_dir)
    chans = [(f["event_index"]["t"], f["channel"]) for f in _events(run_dir, "frame")]
    assert chans == [
        (0, "DAPI"),
        (0, "GFP"),
        (1, "DAPI"),
        (2, "DAPI"),
        (2, "GFP"),
        (3, "DAPI"),
    ]
    assert summary["frames_acquired"] == 6


def test_axis_order_and_z_plan_are_followed(run_dir: Path) -> None:
    seq = {
        "axis_order": "ptcz",
        "channels": [{"config": "DAPI", "exposure": 10}],
        "stage_positions": [
            {"name": "a", "x": 0, "y": 0, "z": 0},
            {"name": "b", "x": 100, "y": 0, "z": 10},
        ],
        "z_plan": {"range": 4, "step": 2},
        "time_plan": {"interval": 5, "loops": 2},
    }
    proto = _proto(sequence=seq, analysis={"enabled": False})
    _run(proto, run_dir)
    frames = _events(run_dir, "frame")
    got = [(f["event_index"]["p"], f["event_index"]["t"], f["z_um"]) for f in frames]
    want = [(e.index["p"], e.index["t"], e.z_pos) for e in proto.sequence]
    assert got == [(p, t, pytest.approx(z)) for p, t, z in want]


def test_hardware_autofocus_plan_is_refused_naming_the_field(tmp_path: Path) -> None:
    proto = _proto(
        sequence={
            "time_plan": {"interval": 5, "loops": 2},
            "autofocus_plan": {"axes": ["t"]},
        }
    )
    core = load_core()
    try:
        with pytest.raises(ProtocolError, match="autofocus_plan"):
            Controller(core, proto, out_dir=tmp_path / "r")
    finally:
        release_core(core)
    assert not (tmp_path / "r").exists()


# 4 ------------------------------------------------------------------


def test_reactions_see_the_state_of_the_frame_they_react_to(run_dir: Path) -> None:
    seen: list[tuple[str, float, float]] = []

    def note(result: FrameResult, run: RunView) -> Sequence[Action]:
        seen.append(
            (result.frame.channel, result.frame.exposure_ms, run.state.exposure_ms)
        )
        return ()

    seq = {
        "channels": [
            {"config": "DAPI", "exposure": 10},
            {"config": "GFP", "exposure": 40},
        ],
        "time_plan": {"interval": 5, "loops": 8},
    }
    _run(_proto(sequence=seq), run_dir, [_Fixed(fn=note)])
    assert len(seen) == 16
    assert all(frame_exp == state_exp for _, frame_exp, state_exp in seen)
    assert {c: e for c, e, _ in seen} == {"DAPI": 10, "GFP": 40}


# 5 ------------------------------------------------------------------


def test_a_run_that_cannot_start_leaves_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no-such-preset"):
        _proto(scene="no-such-preset")
    out = tmp_path / "r"
    proto = _proto(devices={"light_source": "Cobolt"})
    core = load_core()
    try:
        with pytest.raises(ProtocolError, match=r"devices\.light_source"):
            Controller(core, proto, out_dir=out)
    finally:
        release_core(core)
    assert not out.exists()
    # the same --out works for the next, valid run
    summary, _, _ = _run(_proto(analysis={"enabled": False}), out)
    assert summary["status"] == "completed"


def test_a_grid_over_a_huge_area_is_refused_without_walking_it(tmp_path: Path) -> None:
    edges = {"top": 1e7, "left": -1e7, "bottom": -1e7, "right": 1e7}
    proto = _proto(
        sequence={"grid_plan": edges, "time_plan": {"interval": 1, "loops": 2}},
        limits={"xy_box_um": None},
        stop={"max_frames": 3},
    )
    core = load_core()
    sim = get_simulator(core)
    xy = core.getXYPosition()
    try:
        with pytest.raises(ProtocolError, match=r"grid_plan: the grid holds \d+ tiles"):
            Controller(core, proto, out_dir=tmp_path / "r").run()
        assert core.getXYPosition() == xy  # nothing moved
        assert sim.light_dose_mj == 0
    finally:
        release_core(core)
    assert not (tmp_path / "r").exists()


def test_a_grid_that_fits_at_the_protocols_objective_is_not_judged_at_the_current_one(
    tmp_path: Path,
) -> None:
    # 40 mm square: ~14,600 tiles at the 10x the core starts with, ~2,400 at 4x
    edges = {"top": 20000, "left": -20000, "bottom": -20000, "right": 20000}
    proto = _proto(
        objective="4x",
        sequence={"grid_plan": edges, "time_plan": {"interval": 1, "loops": 1}},
        limits={"xy_box_um": None},
        stop={"max_frames": 2},
        analysis={"enabled": False},
    )
    summary, _, _ = _run(proto, tmp_path / "r")
    assert summary["status"] == "stopped"
    assert summary["stopped_by"] == "protocol"
    assert summary["frames_acquired"] == 2


# 6 ------------------------------------------------------------------


class _Slow(Reaction):
    name = "slow"

    def react(self, result: FrameResult, run: RunView) -> Sequence[Action]:
        time.sleep(0.2)
        return ()


@pytest.mark.parametrize("interrupt", [False, True])
def test_run_returns_after_analysis_ended_and_every_frame_has_a_fate(
    run_dir: Path, interrupt: bool
) -> None:
    # one time point, one position, a 12-plane stack: inside a block nothing
    # waits for the analysis (virtual time waits between blocks), so the slow
    # reaction leaves frames queued when the run is interrupted
    proto = _proto(
        sequence={
            "channels": [{"config": "DAPI", "exposure": 20}],
            "stage_positions": [{"name": "a", "x": 0, "y": 0}],
            "z_plan": {"range": 11, "step": 1},
        },
        analysis={"queue_size": 20},
    )
    core = load_core()
    try:
        ctl = Controller(core, proto, out_dir=run_dir, reactions=[_Slow()])
        if interrupt:
            ctl.frame_acquired.connect(
                lambda f: (
                    ctl.stop("test", interrupted=True) if f.frame_index == 5 else None
                )
            )
        summary = ctl.run()
    finally:
        release_core(core)
    assert not [t for t in threading.enumerate() if t.name == "smartscope-analysis"]
    n = summary["frames_acquired"]
    fates = (
        summary["frames_analysed"]
        + summary["frames_skipped_analysis"]
        + summary["frames_abandoned_analysis"]
    )
    assert fates == n
    logged = {
        e["index"]
        for e in _events(run_dir)
        if e["kind"] in ("analysis", "analysis_skipped")
    }
    assert logged == set(range(n))
    if interrupt:
        assert summary["status"] == "interrupted"
        assert summary["frames_abandoned_analysis"] > 0


# 7 ------------------------------------------------------------------


def test_device_roles_come_from_the_protocol(tmp_path: Path, run_dir: Path) -> None:
    cfg = (data_dir("simulators") / "demo.cfg").read_text()
    renamed = tmp_path / "renamed.cfg"
    renamed.write_text(cfg.replace("Laser,", "Cobolt,").replace(",Laser", ",Cobolt"))
    proto = _proto(devices={"light_source": "Cobolt"})
    react = _Fixed(SetLaserPower(power_mw=50))
    core = load_core(renamed)
    try:
        sim = get_simulator(core)
        powers: list[float] = []
        ctl = Controller(core, proto, out_dir=run_dir, reactions=[react])
        ctl.frame_acquired.connect(
            lambda f: powers.append(float(core.getProperty("Cobolt", "Power_mW")))
        )
        summary = ctl.run()
        dose = sim.light_dose_mj
    finally:
        release_core(core)
    assert powers[0] == 5
    assert max(powers) == 8  # clamped to max_laser_mw
    assert summary["light_dose_mj"] == pytest.approx(dose, rel=1e-9)
    assert summary["light_dose_mj"] > 0


# 8 ------------------------------------------------------------------


def _junk(result: FrameResult, run: RunView) -> Sequence[Any]:
    bad = MoveStage(x_um=0, y_um=0)
    object.__setattr__(bad, "x_um", "abc")
    nan = SetExposure(exposure_ms=10)
    object.__setattr__(nan, "exposure_ms", float("nan"))
    return [bad, nan, "not an action", None, 42]


def test_malformed_actions_are_refused_and_the_run_goes_on(run_dir: Path) -> None:
    summary, _, _ = _run(_proto(), run_dir, [_Fixed(fn=_junk)])
    assert summary["frames_acquired"] == 6
    acts = [a for a in _events(run_dir, "action") if a["status"] != "not_applied"]
    assert len(acts) == 5 * 5  # 5 values for each of the 5 frames before the last
    assert all(a["status"] == "refused" for a in acts)
    assert any("x_um must be a number" in a["limit"] for a in acts)
    assert any("not an Action" in a["limit"] for a in acts)
    assert (run_dir / "summary.json").exists()


def test_a_reaction_that_raises_is_switched_off_or_stops_the_run(run_dir: Path) -> None:
    def boom(result: FrameResult, run: RunView) -> Sequence[Action]:
        raise RuntimeError("bug")

    proto = _proto(on_error={"reaction": {"max_consecutive": 2, "then": "stop"}})
    summary, _, _ = _run(proto, run_dir, [_Fixed(fn=boom)])
    # stopped as on_error asked, which is not a success: exit status 3
    assert summary["status"] == "stopped"
    assert summary["stopped_by"] == "on_error"
    assert summary["exit_code"] == 3
    assert "failed 2 times in a row" in summary["finish_reason"]
    assert summary["frames_acquired"] < 6


# 9 ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"sequence": {"stage_positions": [{"x": float("nan"), "y": 0}]}}, "finite"),
        ({"sequence": {"stage_positions": [{"x": float("inf"), "y": 0}]}}, "finite"),
        ({"sequence": {"stage_positions": [{"x": 1e6, "y": 0}]}}, "xy_box_um"),
        (
            {"sequence": {"z_plan": {"top": 500, "bottom": -500, "step": 100}}},
            "z_range_um",
        ),
    ],
)
def test_the_plan_outside_the_limits_is_refused_at_load(over: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _proto(**over)


@pytest.mark.parametrize(
    ("over", "field"),
    [
        # a relative stack around the focus: only the hardware knows where that is
        ({"sequence": {"z_plan": {"range": 600, "step": 100}}}, "z_range_um"),
        # no exposure given: the camera's 50 ms applies, outside the range
        (
            {
                "sequence": {"channels": ["DAPI"]},
                "limits": {"exposure_range_ms": [1, 20]},
            },
            "exposure_range_ms",
        ),
        # no power given: the laser's 10 mW applies, above max_laser_mw
        ({"laser_power_mw": None}, "max_laser_mw"),
    ],
)
def test_defaults_and_stacks_outside_the_limits_are_refused_before_anything_moves(
    tmp_path: Path, over: dict, field: str
) -> None:
    proto = _proto(**over)
    core = load_core()
    try:
        sim = get_simulator(core)
        x0, z0 = core.getXYPosition(), core.getZPosition()
        with pytest.raises(ProtocolError, match=field):
            Controller(core, proto, out_dir=tmp_path / "r")
        assert (core.getXYPosition(), core.getZPosition()) == (x0, z0)
        assert sim.light_dose_mj == 0
    finally:
        release_core(core)
    assert not (tmp_path / "r").exists()


# 10 / 11 ------------------------------------------------------------


def test_z_stacks_at_positions_without_z_do_not_creep(run_dir: Path) -> None:
    seq = {
        "channels": [{"config": "DAPI", "exposure": 10}],
        "stage_positions": [
            {"name": "a", "x": 0, "y": 0},
            {"name": "b", "x": 100, "y": 0},
        ],
        "z_plan": {"range": 4, "step": 2},
        "time_plan": {"interval": 10, "loops": 4},
    }
    _run(_proto(sequence=seq, analysis={"enabled": False}), run_dir)
    frames = _events(run_dir, "frame")
    stacks: dict[tuple[int, int], list[float]] = {}
    for f in frames:
        stacks.setdefault((f["event_index"]["t"], f["event_index"]["p"]), []).append(
            f["z_um"]
        )
    assert set(map(tuple, stacks.values())) == {(-2.0, 0.0, 2.0)}


def test_actions_never_land_inside_a_z_stack(run_dir: Path) -> None:
    def grow(result: FrameResult, run: RunView) -> Sequence[Action]:
        return [SetExposure(exposure_ms=result.frame.exposure_ms + 1)]

    seq = {
        "channels": [{"config": "DAPI", "exposure": 10}],
        "z_plan": {"range": 4, "step": 2},
        "time_plan": {"interval": 10, "loops": 4},
    }
    summary, _, _ = _run(_proto(sequence=seq), run_dir, [_Fixed(fn=grow)])
    by_t: dict[int, set[float]] = {}
    for f in _events(run_dir, "frame"):
        by_t.setdefault(f["event_index"]["t"], set()).add(f["exposure_ms"])
    assert all(len(v) == 1 for v in by_t.values())
    assert len(set().union(*by_t.values())) > 1  # it did change, between stacks
    assert summary["frames_acquired"] == 12


def test_progress_total_counts_every_axis() -> None:
    from smartscope.run import expected_frames

    seq = {
        "channels": ["DAPI", "GFP"],
        "z_plan": {"range": 4, "step": 2},
        "time_plan": {"interval": 10, "loops": 10},
    }
    core = load_core()
    try:
        ctl = Controller(core, _proto(sequence=seq), out_dir="unused")
        assert expected_frames(ctl) == 60
    finally:
        release_core(core)


def test_zarr_frame_count_equals_the_summary(run_dir: Path) -> None:
    summary, _, _ = _run(_proto(analysis={"enabled": False}), run_dir)
    assert frames_on_disk(run_dir) == summary["frames_acquired"] == 6
    assert read_frames(run_dir).shape[0] == 6


# review findings ----------------------------------------------------


def test_an_action_subclass_cannot_pass_as_another_action(run_dir: Path) -> None:
    from dataclasses import dataclass
    from typing import ClassVar

    @dataclass(frozen=True, kw_only=True)
    class Sneaky(SetLaserPower):
        kind: ClassVar[str] = "Stop"

    summary, _, seen = _run(_proto(), run_dir, [_Fixed(Sneaky(power_mw=90))])
    assert max(s["power"] for s in seen) <= 8
    acts = [a for a in _events(run_dir, "action") if a["status"] != "not_applied"]
    assert all(a["status"] == "refused" for a in acts)
    assert "subclasses are not applied" in acts[0]["limit"]
    assert summary["status"] == "completed"


def test_moving_a_position_may_not_take_its_stack_out_of_the_limits(
    run_dir: Path,
) -> None:
    seq = {
        "channels": [{"config": "DAPI", "exposure": 10}],
        "stage_positions": [{"name": "a", "x": 0, "y": 0, "z": 0}],
        "z_plan": {"range": 10, "step": 5},
        "time_plan": {"interval": 5, "loops": 3},
    }
    proto = _proto(sequence=seq, limits={"z_range_um": [-10, 10], "max_laser_mw": 8})
    _, _, seen = _run(proto, run_dir, [_Fixed(MoveFocus(z_um=10))])
    assert all(-10 <= s["z"] <= 10 for s in seen)
    acts = [a for a in _events(run_dir, "action") if a["status"] == "refused"]
    assert acts
    assert "z-stack would be out" in acts[0]["limit"]


def test_an_autofocus_sweep_stays_within_max_z_step_of_the_focus(
    run_dir: Path,
) -> None:
    proto = _proto(
        sequence={"time_plan": {"interval": 5, "loops": 2}},
        limits={"max_z_step_um": 10, "max_laser_mw": 8},
    )
    _, _, seen = _run(
        proto, run_dir, [_Fixed(Autofocus(range_um=4, step_um=2, center_um=800))]
    )
    assert all(abs(s["z"]) <= 10 for s in seen)


def test_a_channel_preset_that_sets_the_power_is_held_to_the_limits(
    tmp_path: Path,
) -> None:
    core = load_core()
    try:
        core.defineConfig("Channel", "Hot", "Laser", "Power_mW", "50")
        proto = _proto(sequence={"channels": [{"config": "Hot", "exposure": 10}]})
        with pytest.raises(ProtocolError, match="max_laser_mw"):
            Controller(core, proto, out_dir=tmp_path / "r")
    finally:
        release_core(core)


def test_sweeps_granted_together_stay_within_the_dose_budget(run_dir: Path) -> None:
    def many(result: FrameResult, run: RunView) -> Sequence[Action]:
        if result.frame.frame_index:
            return ()
        return [Autofocus(range_um=4, step_um=2) for _ in range(10)] + [
            SetLaserPower(power_mw=8)
        ]

    proto = _proto(
        sequence={
            "channels": [{"config": "DAPI", "exposure": 10}],
            "time_plan": {"interval": 5, "loops": 2},
        },
        limits={"light_dose_budget_mj": 1.0, "max_laser_mw": 8},
        stop={"when_dose_budget_spent": False},
    )
    summary, sim_dose, _ = _run(proto, run_dir, [_Fixed(fn=many)])
    assert sim_dose <= 1.0
    assert summary["light_dose_mj"] == pytest.approx(sim_dose, rel=1e-9)
    af = [a for a in _events(run_dir, "action") if a["type"] == "Autofocus"]
    assert {a["status"] for a in af} == {"applied", "refused"}


class _Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def _hostile(result: FrameResult, run: RunView) -> Sequence[Any]:
    huge = SetProperty(device="Camera", prop="Gain_e_per_ADU", value=1)
    object.__setattr__(huge, "value", 10**400)
    move = MoveStage(x_um=0, y_um=0)
    object.__setattr__(move, "x_um", 10**400)
    return [huge, move, _Unprintable()]


def test_values_that_break_conversions_are_refused_and_the_run_goes_on(
    run_dir: Path,
) -> None:
    summary, _, _ = _run(_proto(), run_dir, [_Fixed(fn=_hostile)])
    assert summary["frames_acquired"] == 6
    acts = [a for a in _events(run_dir, "action") if a["status"] != "not_applied"]
    assert len(acts) == 15
    assert all(a["status"] == "refused" for a in acts)


def test_a_reaction_raising_system_exit_is_logged_and_every_frame_settles(
    run_dir: Path,
) -> None:
    def leave(result: FrameResult, run: RunView) -> Sequence[Action]:
        raise SystemExit(3)

    summary, _, _ = _run(_proto(), run_dir, [_Fixed(fn=leave)])
    assert summary["frames_analysed"] == summary["frames_acquired"] == 6
    assert summary["reaction_errors"] == 6
    assert summary["status"] == "error"


def test_exposures_of_a_positions_own_channels_are_kept(run_dir: Path) -> None:
    seq = {
        "channels": [{"config": "DAPI", "exposure": 10}],
        "stage_positions": [
            {"name": "a", "x": 0, "y": 0},
            {
                "name": "b",
                "x": 50,
                "y": 0,
                "sequence": {"channels": [{"config": "GFP", "exposure": 30}]},
            },
        ],
    }
    proto = _proto(sequence=seq, analysis={"enabled": False})
    _run(proto, run_dir)
    got = [
        (f["position"], f["channel"], f["exposure_ms"])
        for f in _events(run_dir, "frame")
    ]
    want = [(e.pos_name, e.channel.config, e.exposure) for e in proto.sequence]
    assert got == want


def test_added_positions_are_visited_from_the_next_time_point(run_dir: Path) -> None:
    from smartscope.actions import AddPosition

    def add(result: FrameResult, run: RunView) -> Sequence[Action]:
        if result.frame.frame_index == 0:
            return [AddPosition(x_um=100, y_um=0, name="new")]
        return ()

    seq = {
        "channels": [{"config": "DAPI", "exposure": 10}],
        "grid_plan": {"rows": 1, "columns": 2},
        "time_plan": {"interval": 5, "loops": 3},
    }
    proto = _proto(sequence=seq, limits={"xy_box_um": [-400, 400, -400, 400]})
    _run(proto, run_dir, [_Fixed(fn=add)])
    frames = _events(run_dir, "frame")
    first_new = next(f for f in frames if f["position"] == "new")
    assert first_new["event_index"]["t"] == 1
    # the grid of the plan without positions stays where it was
    tiles = {
        (f["event_index"]["t"], round(f["x_um"], 1))
        for f in frames
        if f["position"] != "new"
    }
    xs = {x for _, x in tiles}
    assert len(xs) == 2
    assert {t for t, _ in tiles} == {0, 1, 2}


def test_an_unwritable_run_folder_is_refused_before_anything_moves(
    tmp_path: Path,
) -> None:
    from smartscope.controller import RunError

    afile = tmp_path / "afile"
    afile.write_text("")
    core = load_core()
    try:
        ctl = Controller(core, _proto(), out_dir=afile / "run")
        with pytest.raises(RunError, match="cannot write the run folder"):
            ctl.run()
        assert core.getCurrentConfig("Objective") == "10x"
        assert float(core.getProperty("Laser", "Power_mW")) == 10
    finally:
        release_core(core)


def test_the_printed_summary_has_rows_for_every_kind_of_error(run_dir: Path) -> None:
    from rich.console import Console

    from smartscope.run import summary_table

    def boom(result: FrameResult, run: RunView) -> Sequence[Action]:
        raise RuntimeError("bug")

    summary, _, _ = _run(_proto(), run_dir, [_Fixed(fn=boom)])
    console = Console(record=True, width=120)
    console.print(summary_table(summary))
    text = console.export_text()
    assert "reaction errors" in text
    assert "analysis errors" in text
    assert "device errors" in text
    assert "safety: error" in text  # the title names the status


def test_the_controller_leaves_the_simulator_as_it_was_loaded(run_dir: Path) -> None:
    core = load_core(seed=5, scene="dividing")
    try:
        sim = get_simulator(core)
        sim.advance(100.0)
        clock = sim.clock_s
        proto = _proto(seed=2, scene="migration", time_mode="realtime")
        Controller(core, proto, out_dir=run_dir, reactions=()).run()
        assert sim.seed == 5
        assert sim.time_mode == "virtual"
        assert sim.clock_s >= clock  # not reset to 0
    finally:
        release_core(core)
    started = _events(run_dir, "run_started")[0]
    assert started["simulator"] == {"seed": 5, "scene": "dividing"}
