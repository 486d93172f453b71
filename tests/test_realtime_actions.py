"""Realtime: a decision acts as soon as its frame's result is in, while the
runner waits for the analysis before the next time point; virtual time keeps
one wait until the analysis has caught up (its outcome must not depend on when
each result arrives).

Driven step by step on a controller's own acquisition, gate and executor (the
real simulator behind them); events decide every step, nothing is asserted
about time."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from smartscope.actions import MoveStage
from smartscope.controller import Controller
from smartscope.hardware import load_core, release_core
from smartscope.protocol import Protocol

WAIT_S = 60.0  # a bound on each wait, not a timing assertion


ONE = [{"name": "p0", "x": 0, "y": 0}]


def _protocol(
    time_mode: str,
    positions: list[dict] = ONE,
    *,
    interval_s: float = 1,
    loops: int = 3,
    **more: Any,
) -> Protocol:
    return Protocol.model_validate(
        {
            "name": "act-while-waiting",
            "seed": 2,
            "time_mode": time_mode,
            "objective": "20x",
            "sequence": {
                "channels": [{"config": "DAPI", "exposure": 10}],
                "stage_positions": positions,
                "time_plan": {"interval": interval_s, "loops": loops},
            },
            "analysis": {"segmenter": "classical", "diameter_um": 12},
            "limits": {"xy_box_um": [-500, 500, -500, 500]},
            "save": {"truth": False, "report": False},
            **more,
        }
    )


@pytest.fixture
def controller(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Controller]:
    mode, positions = (
        request.param if isinstance(request.param, tuple) else (request.param, ONE)
    )
    core = load_core(time_mode=mode, seed=2)
    try:
        ctl = Controller(
            core, _protocol(mode, positions), out_dir=tmp_path / "run", device="cpu"
        )
        # as a run sets them
        ctl.acquisition.analysis_wait = mode
        ctl.executor.move_ahead = mode == "realtime"
        yield ctl
    finally:
        release_core(core)


def _wait_in_thread(
    ctl: Controller, outcomes: list[Any]
) -> tuple[threading.Thread, threading.Event, threading.Event]:
    """The runner's wait before a time point (the next frame due in a minute,
    in realtime), on its own thread. Events: an action was applied (its
    outcome appended to ``outcomes``); the runner has begun to wait on the
    analysis (whatever it applies before that, it has applied by then)."""
    applied, waiting = threading.Event(), threading.Event()
    acq, gate = ctl.acquisition, ctl.gate
    report = acq._report

    def noted(out: Any, t_frame: float | None) -> None:
        report(out, t_frame)
        outcomes.append(out)
        applied.set()

    def entering(wait: Any) -> Any:
        def entered(*args: Any) -> Any:
            waiting.set()
            return wait(*args)

        return entered

    acq._report = noted
    gate.wait_caught_up = entering(gate.wait_caught_up)  # type: ignore[method-assign]
    gate.wait_settled_after = entering(gate.wait_settled_after)  # type: ignore[method-assign]
    due = acq._sample_time() + WAIT_S
    thread = threading.Thread(target=acq._before_timepoint, args=(1, due), daemon=True)
    thread.start()
    return thread, applied, waiting


def _one_decided_one_pending(
    ctl: Controller,
) -> tuple[threading.Thread, threading.Event, threading.Event, list[Any]]:
    """Two frames handed to the analysis; the first one's result is in and
    its reaction decided a stage move; the second is still being analysed.
    Then the runner's wait (:func:`_wait_in_thread`) begins."""
    ctl.gate.submitted()
    ctl.gate.submitted()
    ctl.acquisition.put(MoveStage(x_um=120.0, y_um=-80.0), "p0", None)
    ctl.gate.settled()
    outcomes: list[Any] = []
    return (*_wait_in_thread(ctl, outcomes), outcomes)


@pytest.mark.parametrize("controller", ["realtime"], indirect=True)
def test_realtime_acts_on_a_result_before_the_analysis_has_caught_up(
    controller: Controller,
) -> None:
    ctl, gate = controller, controller.gate
    thread, applied, _, outcomes = _one_decided_one_pending(ctl)
    assert applied.wait(WAIT_S), "the decision waited for the other frame"
    assert gate.lag == 1  # the second frame is still being analysed
    assert thread.is_alive()  # ... and the runner still waits for it
    assert [(o.status, o.after) for o in outcomes] == [("applied", [120.0, -80.0])]
    # a decision on the second frame acts as soon as it is in as well
    applied.clear()
    ctl.acquisition.put(MoveStage(x_um=130.0, y_um=-80.0), "p0", None)
    gate.settled()
    assert applied.wait(WAIT_S)
    thread.join(WAIT_S)
    assert not thread.is_alive()  # caught up: the wait is over
    assert [o.after for o in outcomes] == [[120.0, -80.0], [130.0, -80.0]]


@pytest.mark.parametrize("controller", ["virtual"], indirect=True)
def test_virtual_time_applies_decisions_only_once_the_analysis_has_caught_up(
    controller: Controller,
) -> None:
    ctl, gate = controller, controller.gate
    thread, applied, waiting, outcomes = _one_decided_one_pending(ctl)
    assert waiting.wait(WAIT_S)
    assert not applied.is_set()  # the other frame's analysis is not in
    assert outcomes == []
    gate.settled()
    thread.join(WAIT_S)
    assert not thread.is_alive()
    assert [(o.status, o.after) for o in outcomes] == [("applied", [120.0, -80.0])]


def _stage_xy(ctl: Controller) -> tuple[float, float]:
    x, y = ctl.core.getXYPosition()
    return round(x, 6), round(y, 6)


@pytest.mark.parametrize("controller", ["realtime"], indirect=True)
def test_realtime_moves_the_only_position_when_the_decision_is_applied(
    controller: Controller,
) -> None:
    """The stage travels and settles while the runner waits for the next
    frame, not in that frame's setup: it is on its way once the move is
    applied, to where the next frame's event puts it."""
    ctl = controller
    assert _stage_xy(ctl) == (0.0, 0.0)
    thread, applied, _, outcomes = _one_decided_one_pending(ctl)
    assert applied.wait(WAIT_S)
    assert [o.status for o in outcomes] == ["applied"]
    assert _stage_xy(ctl) == (120.0, -80.0)
    assert ctl.plan.next_xy(0) == (120.0, -80.0)
    ctl.gate.settled()
    thread.join(WAIT_S)
    # the next frame's event goes where the stage already is
    block = next(ctl.plan.blocks(lambda t, due: None))
    ev = block.events()[0]
    assert (ev.x_pos, ev.y_pos) == (120.0, -80.0)


@pytest.mark.parametrize(
    "controller",
    [
        "virtual",  # a seeded run keeps its timeline: the frame's setup moves
        (
            "realtime",
            [{"name": "p0", "x": 0, "y": 0}, {"name": "p1", "x": 300, "y": 0}],
        ),  # another position may come first: moving now could be wasted
    ],
    indirect=True,
)
def test_the_stage_waits_for_the_frame_when_the_next_one_is_not_sure(
    controller: Controller,
) -> None:
    ctl = controller
    thread, _, _, outcomes = _one_decided_one_pending(ctl)
    ctl.gate.settled()
    thread.join(WAIT_S)
    assert [(o.status, o.after) for o in outcomes] == [("applied", [120.0, -80.0])]
    assert ctl.plan.coords(0)[:2] == (120.0, -80.0)  # the plan moved ...
    assert _stage_xy(ctl) == (0.0, 0.0)  # ... the stage did not
    if ctl.plan.n_active > 1:
        assert ctl.plan.next_xy(0) is None


def test_a_realtime_frame_setup_never_commands_the_stage_while_it_moves(
    tmp_path: Any,
) -> None:
    """A whole realtime run in which the stage follows a nucleus on every
    frame: the moves start as soon as they are applied, and the next frame's
    setup waits for a move still under way before it commands the stage
    (some stage controllers refuse a command while they move)."""
    proto = _protocol(
        "realtime",
        interval_s=0.1,
        loops=12,
        seed=6,
        scene="migration",
        reactions=[
            {
                "type": "center_on",
                "select": "nearest_center",
                "dead_band_fraction": 0.0,
                "max_step_um": 60,
            }
        ],
        limits={"xy_box_um": [-1400, 1400, -1400, 1400]},
    )
    core = load_core(time_mode="realtime", seed=6, scene="migration")
    xy = core._pydevices[core.getXYStageDevice()]
    commands: list[tuple[bool, float]] = []  # (busy when commanded, distance)
    move = xy.set_position_um

    def commanded(x: float, y: float) -> None:
        import inspect

        ox, oy = xy.get_position_um()
        # the frame's setup (not a move applied ahead of it, which may
        # re-target a moving stage)
        setup = "setup_single_event" in {f.function for f in inspect.stack()}
        commands.append((setup and xy.busy(), max(abs(x - ox), abs(y - oy))))
        move(x, y)

    xy.set_position_um = commanded
    try:
        ctl = Controller(core, proto, out_dir=tmp_path / "run", device="cpu")
        summary = ctl.run()
    finally:
        release_core(core)
    moved = summary["actions"]["MoveStage"].get("applied", 0)
    assert summary["frames_acquired"] == 12
    assert moved >= 3  # the stage followed the nucleus
    assert any(d > 0 for _, d in commands)
    assert not [c for c in commands if c[0]], commands
