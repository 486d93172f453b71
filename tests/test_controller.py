"""The controller on the real simulator, the real writer and real files.

Everything is checked from the run folder and against the simulator's truth
(truth/cells.csv), never against the controller's own estimates.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from smartscope._data import data_dir
from smartscope.actions import (
    Action,
    AddPosition,
    Autofocus,
    MoveStage,
    SetInterval,
    SetLaserPower,
)
from smartscope.analysis.result import FrameResult
from smartscope.controller import Controller
from smartscope.errors import SmartscopeError
from smartscope.hardware import load_core, release_core
from smartscope.io.read_images import list_images, read_frames
from smartscope.protocol import Protocol, ProtocolError, load_protocol
from smartscope.reactions.base import Reaction, RunView
from smartscope.sim import get_simulator


def _events(run: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()
    ]


def _small_protocol(**overrides: Any) -> Protocol:
    data: dict[str, Any] = {
        "name": "small",
        "seed": 2,
        "time_mode": "virtual",
        "objective": "20x",
        "laser_power_mw": 5,
        "sequence": {
            "channels": [{"config": "DAPI", "exposure": 30}],
            "stage_positions": [{"name": "a", "x": 0, "y": 0}],
            "time_plan": {"interval": 30, "loops": 8},
        },
        "limits": {
            "xy_box_um": [-300, 300, -300, 300],
            "max_xy_step_um": 50,
            "max_laser_mw": 8,
        },
    }
    data.update(overrides)
    return Protocol.model_validate(data)


# ------------------------------------------------------------------ limits


class _Reckless(Reaction):
    """Asks for a move far outside the box and more power than allowed."""

    name = "reckless"

    def react(self, result: FrameResult, run: RunView) -> Sequence[Action]:
        f = result.frame
        return (
            MoveStage(
                x_um=f.stage_x_um + 2000,
                y_um=f.stage_y_um,
                source=self.name,
                frame_index=f.frame_index,
                t_frame=f.t_frame,
            ),
            SetLaserPower(
                power_mw=90,
                source=self.name,
                frame_index=f.frame_index,
                t_frame=f.t_frame,
            ),
        )


def test_actions_beyond_limits_never_reach_the_hardware(run_dir: Path) -> None:
    core = load_core()
    try:
        seen: list[tuple[float, float, float]] = []
        ctl = Controller(
            core, _small_protocol(), out_dir=run_dir, reactions=[_Reckless()]
        )
        ctl.frame_acquired.connect(
            lambda f: seen.append(
                (*core.getXYPosition(), float(core.getProperty("Laser", "Power_mW")))
            )
        )
        summary = ctl.run()
    finally:
        release_core(core)
    assert summary["frames_acquired"] == 8
    arr = np.array(seen)
    assert np.all(np.abs(arr[:, 0]) <= 300)
    assert np.all(arr[:, 2] <= 8)
    acts = [
        e
        for e in _events(run_dir)
        if e["kind"] == "action" and e["source"] == "reckless"
    ]
    applied = [a for a in acts if a["status"] != "not_applied"]  # after the last frame
    moves = [a for a in applied if a["type"] == "MoveStage"]
    power = [a for a in applied if a["type"] == "SetLaserPower"]
    assert len(moves) >= 6
    assert all(a["status"] in ("clamped", "refused") for a in moves)
    assert all(a["limit"] for a in moves)
    assert power
    assert all(a["status"] == "clamped" for a in power)
    assert all(a["after"] == 8 for a in power)


# ------------------------------------------------------------------ failures


class _Broken(Reaction):
    name = "broken"

    def react(self, result: FrameResult, run: RunView) -> Sequence[Action]:
        raise ZeroDivisionError("bad reaction")


def test_reaction_and_analysis_exceptions_are_logged_and_acquisition_goes_on(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from smartscope.analysis import AnalysisPipeline

    real = AnalysisPipeline._segment

    def flaky(self: Any, image: np.ndarray, frame: Any) -> np.ndarray:
        if frame.frame_index == 3:
            raise RuntimeError("segmentation blew up")
        return real(self, image, frame)

    monkeypatch.setattr(AnalysisPipeline, "_segment", flaky)
    core = load_core()
    try:
        ctl = Controller(
            core, _small_protocol(), out_dir=run_dir, reactions=[_Broken()]
        )
        summary = ctl.run()
    finally:
        release_core(core)
    assert summary["frames_acquired"] == 8
    events = _events(run_dir)
    errors = [e for e in events if e["kind"] == "reaction_error"]
    assert errors
    assert all("bad reaction" in e["error"] for e in errors)
    assert [e for e in events if e["kind"] == "analysis_error" and e["index"] == 3]
    assert summary["frames_failed_analysis"] == 1
    assert summary["reaction_errors"] == len(errors) == 7  # every analysed frame
    # a run whose reactions failed does not report itself as completed
    assert summary["status"] == "error"
    assert "reactions raised 7 times" in summary["finish_reason"]
    assert read_frames(run_dir).shape[0] == 8


@pytest.mark.parametrize(
    ("retries", "then", "frames"), [(2, "skip", 8), (0, "skip", 7)]
)
def test_camera_fault_is_retried_or_skipped(
    run_dir: Path, retries: int, then: str, frames: int
) -> None:
    core = load_core()
    try:
        proto = _small_protocol(on_error={"camera": {"retries": retries, "then": then}})
        ctl = Controller(core, proto, out_dir=run_dir)
        sim = get_simulator(core)
        ctl.frame_acquired.connect(
            lambda f: (
                sim.inject("camera_timeout", count=1) if f.frame_index == 2 else None
            )
        )
        summary = ctl.run()
    finally:
        release_core(core)
    errors = [e for e in _events(run_dir) if e["kind"] == "device_error"]
    assert errors
    assert errors[0]["device"] == "camera"
    assert "timed out" in errors[0]["error"]
    assert summary["frames_acquired"] == frames
    assert read_frames(run_dir).shape[0] == frames


def test_stage_fault_stops_the_run_when_the_protocol_says_so(run_dir: Path) -> None:
    core = load_core()
    try:
        proto = _small_protocol(
            on_error={"stage": {"retries": 0, "then": "stop"}},
            sequence={
                "channels": [{"config": "DAPI", "exposure": 30}],
                "stage_positions": [
                    {"name": "a", "x": 0, "y": 0},
                    {"name": "b", "x": 200, "y": 0},
                ],
                "time_plan": {"interval": 30, "loops": 5},
            },
        )
        ctl = Controller(core, proto, out_dir=run_dir)
        sim = get_simulator(core)
        ctl.frame_acquired.connect(
            lambda f: (
                sim.inject("stage_error", device="XY", count=1)
                if f.frame_index == 3
                else None
            )
        )
        summary = ctl.run()
    finally:
        release_core(core)
    assert "stage error" in summary["finish_reason"]
    assert summary["frames_acquired"] == 4
    raw = read_frames(run_dir)
    assert raw.shape[0] == 4
    assert raw[3].max() > 0


def test_bad_protocol_is_refused_before_hardware_moves(tmp_path: Path) -> None:
    core = load_core()
    try:
        sim = get_simulator(core)
        x0 = core.getXYPosition()
        bad = _small_protocol(
            sequence={
                "channels": [{"config": "Cy7"}],
                "stage_positions": [{"x": 100, "y": 100}],
            },
        )
        with pytest.raises(ProtocolError, match="Cy7"):
            Controller(core, bad, out_dir=tmp_path / "r")
        assert core.getXYPosition() == x0
        assert sim.light_dose_mj == 0
        assert not (tmp_path / "r").exists()
    finally:
        release_core(core)


def test_unknown_reaction_in_a_file_names_file_line_field(tmp_path: Path) -> None:
    text = (data_dir("protocols") / "demo.yaml").read_text()
    p = tmp_path / "bad.yaml"
    p.write_text(text.replace("type: adaptive_exposure", "type: adaptive_exposur"))
    with pytest.raises(ProtocolError) as exc:
        load_protocol(p)
    msg = str(exc.value)
    assert str(p) in msg
    assert "line " in msg
    assert "reactions.1" in msg


def test_corrupt_model_is_refused_before_hardware_moves(tmp_path: Path) -> None:
    bad = tmp_path / "broken-model"
    bad.mkdir()
    (bad / "rdf.yaml").write_text("this: is not a model card\n")
    core = load_core()
    try:
        sim = get_simulator(core)
        proto = _small_protocol(analysis={"segmenter": "model", "model": str(bad)})
        ctl = Controller(core, proto, out_dir=tmp_path / "r")
        with pytest.raises(SmartscopeError) as exc:
            ctl.run()
        assert "broken-model" in str(exc.value)
        assert core.getProperty("Objective", "Label") == "10x"  # not switched to 20x
        assert sim.light_dose_mj == 0
        assert not (tmp_path / "r").exists()
    finally:
        release_core(core)


def test_pause_holds_acquisition_and_resume_continues(run_dir: Path) -> None:
    import threading
    import time

    core = load_core()
    try:
        ctl = Controller(core, _small_protocol(), out_dir=run_dir)
        sim = get_simulator(core)
        state: dict[str, float] = {}

        def on_frame(f: Any) -> None:
            if f.frame_index == 2:
                ctl.pause()
                state["clock_at_pause"] = sim.clock_s
                threading.Timer(0.5, resume).start()

        def resume() -> None:
            state["clock_before_resume"] = sim.clock_s
            state["frames_while_paused"] = ctl.frames_acquired
            ctl.resume()

        ctl.frame_acquired.connect(on_frame)
        t = time.perf_counter()
        summary = ctl.run()
        wall = time.perf_counter() - t
    finally:
        release_core(core)
    assert summary["frames_acquired"] == 8
    assert state["frames_while_paused"] == 3  # nothing was acquired while paused
    # in virtual time the sample does not age while the run is held
    assert state["clock_before_resume"] == pytest.approx(
        state["clock_at_pause"], abs=1.0
    )
    assert wall >= 0.5


class _RefocusOnce(Reaction):
    """Asks for a software autofocus once, on frame 4."""

    name = "refocus_once"

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


def test_autofocus_action_recovers_from_a_focus_jump(run_dir: Path) -> None:
    core = load_core()
    try:
        sim = get_simulator(core)
        defocus: list[float] = []
        proto = _small_protocol(
            objective="10x",
            limits={"z_range_um": [-100, 100], "max_z_step_um": 50},
            sequence={
                "channels": [{"config": "DAPI", "exposure": 30}],
                "time_plan": {"interval": 30, "loops": 10},
            },
        )
        ctl = Controller(core, proto, out_dir=run_dir, reactions=[_RefocusOnce()])

        def on_frame(f: Any) -> None:
            if f.event_index:  # a planned frame (sweep planes have no index)
                defocus.append(sim.truth().defocus_um)
            if f.frame_index == 1:
                sim.inject("focus_jump", dz_um=8.0)

        ctl.frame_acquired.connect(on_frame)
        ctl.run()
    finally:
        release_core(core)
    assert abs(defocus[0]) < 1.0
    assert all(abs(d) > 6 for d in defocus[2:5])  # out of focus after the jump
    assert all(abs(d) < 1.5 for d in defocus[6:])  # refocused by the action
    af = [
        e
        for e in _events(run_dir)
        if e["kind"] == "action" and e["type"] == "Autofocus"
    ]
    assert af
    assert af[0]["status"] == "applied"
    # the sweep went through the MDA: its planes are frames on disk, in the
    # log, and in the dose ledger, which equals the simulator's own dose
    events = _events(run_dir)
    planes = [e for e in events if e["kind"] == "frame" and e["role"] == "autofocus"]
    assert len(planes) == 16  # 30 µm in 2 µm steps
    (sweep,) = [e for e in events if e["kind"] == "autofocus"]
    assert sweep["frames"] == [p["index"] for p in planes]
    assert sweep["best_z_um"] == pytest.approx(8.0, abs=1.0)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["frames_autofocus"] == 16
    assert summary["frames_acquired"] == 10 + 16
    assert read_frames(run_dir).shape[0] == 26
    # the sweep is the position's autofocus image: t the sweep, z its planes
    af = [i for i in list_images(run_dir) if i.kind == "autofocus"]
    assert [i.shape[:3] for i in af] == [(1, 1, 16)]
    assert read_frames(run_dir, role="autofocus").shape[0] == 16
    assert summary["light_dose_mj"] == pytest.approx(sim.light_dose_mj, rel=1e-9)


class _Replan(Reaction):
    """On frame 2: add a position and halve the interval."""

    name = "replan"

    def react(self, result: FrameResult, run: RunView) -> Sequence[Action]:
        f = result.frame
        if f.frame_index != 2:
            return ()
        common = {
            "source": self.name,
            "frame_index": f.frame_index,
            "t_frame": f.t_frame,
        }
        return (
            AddPosition(x_um=150, y_um=-100, name="extra", **common),
            SetInterval(interval_s=15, **common),
        )


def test_actions_change_the_plan_while_it_runs(run_dir: Path) -> None:
    core = load_core()
    try:
        ctl = Controller(
            core, _small_protocol(), out_dir=run_dir, reactions=[_Replan()]
        )
        summary = ctl.run()
    finally:
        release_core(core)
    frames = [e for e in _events(run_dir) if e["kind"] == "frame"]
    names = [f["position"] for f in frames]
    assert "extra" in names
    first_extra = names.index("extra")
    assert first_extra >= 4  # from the next time point on
    extra = [f for f in frames if f["position"] == "extra"]
    assert extra[0]["x_um"] == pytest.approx(150)
    assert extra[0]["y_um"] == pytest.approx(-100)
    a_times = [f["t_s"] for f in frames if f["position"] == "a"]
    gaps = np.diff(a_times)
    assert gaps[0] == pytest.approx(30, abs=1)  # the protocol's interval
    assert gaps[-1] == pytest.approx(15, abs=1)  # after SetInterval
    assert summary["actions"]["AddPosition"] == {"applied": 1}
    assert summary["actions"]["SetInterval"] == {"applied": 1}


def test_realtime_run_follows_the_plan(run_dir: Path) -> None:
    """Realtime: the frames come in the plan's order at the plan's due times
    (runner's own clock), and every frame is analysed; no wall-clock assertion
    (timing is measured in benchmarks)."""
    core = load_core(time_mode="realtime")
    try:
        proto = _small_protocol(
            time_mode="realtime",
            sequence={
                "channels": [{"config": "DAPI", "exposure": 10}],
                "time_plan": {"interval": 0.3, "loops": 5},
            },
            reactions=[{"type": "center_on"}],
        )
        summary = Controller(core, proto, out_dir=run_dir).run()
    finally:
        release_core(core)
    frames = [e for e in _events(run_dir) if e["kind"] == "frame"]
    assert summary["frames_acquired"] == 5
    assert summary["time_mode"] == "realtime"
    assert [f["event_index"]["t"] for f in frames] == [0, 1, 2, 3, 4]
    # the runner never starts a time point before it is due
    assert all(f["t_s"] >= 0.3 * f["event_index"]["t"] for f in frames)
    assert summary["frames_analysed"] == 5


class _Counts(Reaction):
    """Reads the objects only, and says so; notes what each result carried."""

    name = "counts"
    reads_images = frozenset()

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[bool, int]] = []

    def react(self, result: FrameResult, run: RunView) -> Sequence[Action]:
        self.seen.append((result.labels is not None, len(result.objects)))
        return ()


class _Unspoken(Reaction):
    """A reaction that does not say which images it reads."""

    name = "unspoken"

    def react(self, result: FrameResult, run: RunView) -> Sequence[Action]:
        return ()


def test_a_run_keeps_in_its_results_the_images_it_saves_or_reads(
    run_dir: Path,
) -> None:
    """The analysis results of a run carry the label images only where the
    run saves them, a reaction reads them (``Reaction.reads_images``; both
    for one that does not say) or something listens to ``frame_analysed``
    (on a GPU the others are never copied back); the objects are there
    either way, and saved labels are written."""
    from smartscope.controller.lifecycle import _images_kept
    from smartscope.io.read_images import read_derived

    core = load_core()
    try:
        counts = _Counts()
        ctl = Controller(core, _small_protocol(), out_dir=run_dir, reactions=[counts])
        assert _images_kept(ctl) == frozenset()
        summary = ctl.run()
        assert summary["frames_analysed"] == 8
        assert ctl._pipeline.images_kept == frozenset()
        assert [has for has, _ in counts.seen] == [False] * 8
        assert sum(n for _, n in counts.seen) > 8
        saved = _small_protocol(save={"labels": True}, name="saved")
        counts = _Counts()
        ctl = Controller(
            core, saved, out_dir=run_dir.parent / "saved", reactions=[counts]
        )
        assert _images_kept(ctl) == {"labels"}
        assert ctl.run()["frames_analysed"] == 8
        assert [has for has, _ in counts.seen] == [True] * 8
        stored = read_derived(run_dir.parent / "saved", 7, "labels")
        assert stored is not None
        assert stored.max() > 0
        mitosis = _small_protocol(
            reactions=[{"type": "event_rate", "fast_interval_s": 10}]
        )
        ctl = Controller(core, mitosis, out_dir=run_dir.parent / "m")
        assert _images_kept(ctl) == {"labels"}
        ctl = Controller(
            core,
            _small_protocol(),
            out_dir=run_dir.parent / "u",
            reactions=[_Unspoken()],
        )
        assert _images_kept(ctl) == {"labels", "denoised"}
        ctl = Controller(core, _small_protocol(), out_dir=run_dir.parent / "l")
        assert _images_kept(ctl) == frozenset()
        ctl.frame_analysed.connect(lambda result: None)
        assert _images_kept(ctl) == {"labels", "denoised"}
        # a reaction that says it wrongly is refused before anything moves
        for bad in ("labels", frozenset({"masks"}), 3):
            wrong = _Unspoken()
            wrong.reads_images = bad  # type: ignore[assignment]
            out = run_dir.parent / f"bad-{type(bad).__name__}"
            ctl = Controller(core, _small_protocol(), out_dir=out, reactions=[wrong])
            xy = core.getXYPosition()
            with pytest.raises(
                SmartscopeError,
                match=r"reaction 'unspoken': "
                r"reads_images must be a set of \['denoised', "
                r"'labels'\] \(empty if it reads neither\), got",
            ):
                ctl.run()
            assert core.getXYPosition() == xy
            assert not out.exists()
    finally:
        release_core(core)


def test_a_frame_s_time_is_when_it_was_in_hand_before_it_was_written(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """frame→result and frame→action start when the frame is in hand, so
    that they count the frame's own write (7-14 ms a 2048² frame): each
    frame's ``t_frame`` comes before the real writer took it, and the
    ``frame`` records say the same times."""
    from smartscope.controller.recorder import Recorder

    entered: list[float] = []
    store = Recorder.store_frame

    def timed(self: Recorder, image: Any, event: Any, meta: dict) -> Any:
        entered.append(time.perf_counter())
        return store(self, image, event, meta)

    monkeypatch.setattr(Recorder, "store_frame", timed)
    core = load_core()
    try:
        ctl = Controller(core, _small_protocol(), out_dir=run_dir)
        frames: list[float] = []
        ctl.frame_acquired.connect(lambda f: frames.append(f.t_frame))
        ctl.run()
    finally:
        release_core(core)
    assert len(frames) == len(entered) == 8
    assert all(t < w for t, w in zip(frames, entered, strict=True))
    records = [e for e in _events(run_dir) if e["kind"] == "frame"]
    t0 = frames[0] - records[0]["t_frame"]
    assert [r["t_frame"] for r in records] == pytest.approx(
        [t - t0 for t in frames], abs=2e-6
    )
