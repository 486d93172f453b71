"""Fault campaign: seeded runs with every fault the simulator can inject, a
disk that fills mid-run, reactions that raise and reactions that ask for
anything, judged from the run folder and the simulator's own state.

Every case runs the real controller on the simulator in virtual time (two
positions at different Z so both stages move, DAPI, classical segmentation
with labels saved) and injects its fault at a seeded frame. Whatever happened,
the run folder must tell the truth:

- ``summary.json`` exists and its status is the one the files call for
  (``stopped`` by ``on_error`` with exit status 3 when a device error ended
  the run, ``error`` naming the path when the disk filled, ``completed``
  otherwise);
- the summary, ``events.jsonl`` and the raw zarr agree frame for frame, and
  every frame on disk is readable and not blank;
- the device errors in the summary are the ones in the log; the dose ledger
  equals the simulator's own dose meter; the stage ended inside the limits;
- a run that skipped frames accounts for every planned frame.

Twelve cases run by default; ``-m slow`` runs 120.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaozarrs
import zarr

from smartscope.actions import (
    Action,
    MoveFocus,
    MoveStage,
    SetExposure,
    SetLaserPower,
    Stop,
)
from smartscope.analysis.result import FrameResult
from smartscope.controller import Controller
from smartscope.errors import SmartscopeError
from smartscope.hardware import load_core, release_core
from smartscope.io.read_images import frames_on_disk, list_images, read_frames
from smartscope.protocol import Protocol
from smartscope.reactions.base import Reaction, RunView
from smartscope.sim import get_simulator

XY_BOX = (-500.0, 500.0, -500.0, 500.0)
LOOPS = 8
POSITIONS = 2
PLANNED = LOOPS * POSITIONS

FAULTS = (
    "camera_timeout",
    "stage_error_xy",
    "stage_error_z",
    "hot_pixels",
    "focus_jump",
    "reaction_raises",
    "random_actions",
    "disk_full",
)


@dataclass(frozen=True)
class Case:
    fault: str
    at_frame: int
    count: int
    then: str
    retries: int
    seed: int

    def __str__(self) -> str:
        return (
            f"{self.fault}@{self.at_frame}x{self.count}-{self.then}-r{self.retries}"
            f"-s{self.seed}"
        )


def _cases(n: int, seed: int) -> list[Case]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        out.append(
            Case(
                fault=FAULTS[i % len(FAULTS)]
                if i < len(FAULTS)
                else rng.choice(FAULTS),
                at_frame=rng.randint(1, PLANNED - 3),
                count=rng.randint(1, 3),
                then=rng.choice(["skip", "stop"]),
                retries=rng.randint(0, 2),
                seed=rng.randint(0, 10_000),
            )
        )
    return out


# ------------------------------------------------------------------ the disk


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path | None]:
    """A 24 MB tmpfs (root only; None elsewhere: the disk cases skip)."""
    where = tmp_path_factory.mktemp("small-disk")
    ok = (
        shutil.which("mount") is not None
        and os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(where)],
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )
    yield where if ok else None
    if ok:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def _fill(folder: Path, leave_bytes: int) -> None:
    """Another process fills the disk: leave ``leave_bytes`` free."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with (folder.parent / f"filler-{folder.name}").open("wb") as f:
        f.write(b"\1" * max(0, free - leave_bytes))


# ------------------------------------------------------------------ reactions


class _Raises(Reaction):
    name = "raises"

    def __init__(self, from_frame: int) -> None:
        super().__init__()
        self.from_frame = from_frame

    def react(self, result: FrameResult, run: RunView) -> Sequence[Action]:
        if result.frame.frame_index >= self.from_frame:
            raise RuntimeError("a bug in a reaction")
        return ()


class _Random(Reaction):
    """Seeded wild actions: far moves, NaN, huge exposures and powers, Stop."""

    name = "random"

    def __init__(self, seed: int, from_frame: int) -> None:
        super().__init__()
        self.rng = random.Random(seed)
        self.from_frame = from_frame

    def _value(self) -> float:
        return self.rng.choice(
            [
                0.0,
                -1.0,
                1e9,
                -1e9,
                float("nan"),
                float("inf"),
                self.rng.uniform(-900, 900),
            ]
        )

    def react(self, result: FrameResult, run: RunView) -> Sequence[Any]:
        if result.frame.frame_index < self.from_frame:
            return ()
        out: list[Any] = []
        for _ in range(self.rng.randint(1, 4)):
            kind = self.rng.choice(
                ["move", "focus", "exposure", "power", "junk", "stop"]
            )
            try:
                if kind == "move":
                    out.append(MoveStage(x_um=self._value(), y_um=self._value()))
                elif kind == "focus":
                    out.append(MoveFocus(z_um=self._value()))
                elif kind == "exposure":
                    out.append(SetExposure(exposure_ms=self._value()))
                elif kind == "power":
                    out.append(SetLaserPower(power_mw=self._value()))
                elif kind == "stop" and self.rng.random() < 0.1:
                    out.append(Stop(reason="random stop"))
                else:
                    out.append({"not": "an action"})
            except Exception:  # an action that refuses its own values
                out.append(kind)
        return out


# ------------------------------------------------------------------ one case


def _protocol(case: Case) -> Protocol:
    return Protocol.model_validate(
        {
            "name": "faults",
            "sequence": {
                "channels": [{"config": "DAPI", "exposure": 20}],
                "stage_positions": [
                    {"name": "a", "x": 0, "y": 0, "z": 0},
                    {"name": "b", "x": 150, "y": -100, "z": 3},
                ],
                "time_plan": {"interval": 10, "loops": LOOPS},
            },
            "analysis": {"segmenter": "classical", "diameter_um": 12},
            "limits": {
                "xy_box_um": list(XY_BOX),
                "z_range_um": [-40, 40],
                "max_laser_mw": 10,
                "exposure_range_ms": [2, 200],
            },
            "save": {"labels": True},
            "on_error": {
                "camera": {"retries": case.retries, "then": case.then},
                "stage": {"retries": case.retries, "then": case.then},
                "reaction": {
                    "max_consecutive": 2,
                    "then": case.then.replace("skip", "disable"),
                },
            },
        }
    )


def _run_case(case: Case, out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run one case; return the summary (from disk) and the simulator's state."""
    core = load_core(time_mode="virtual", seed=case.seed % 7 + 1)
    core.setProperty("Camera", "SensorWidth_px", 256)
    core.setProperty("Camera", "SensorHeight_px", 256)
    sim = get_simulator(core)
    reactions: list[Reaction] = []
    if case.fault == "reaction_raises":
        reactions.append(_Raises(case.at_frame))
    elif case.fault == "random_actions":
        reactions.append(_Random(case.seed, case.at_frame))
    try:
        ctl = Controller(core, _protocol(case), out_dir=out, reactions=reactions)
        frames = {"n": 0}

        def _inject(_: Any) -> None:
            frames["n"] += 1
            if frames["n"] != case.at_frame:
                return
            if case.fault == "camera_timeout":
                sim.inject("camera_timeout", count=case.count, timeout_s=0.5)
            elif case.fault == "stage_error_xy":
                sim.inject("stage_error", count=case.count, device="XY")
            elif case.fault == "stage_error_z":
                sim.inject("stage_error", count=case.count, device="Z")
            elif case.fault == "hot_pixels":
                sim.inject("hot_pixels", n=40, seed=case.seed)
            elif case.fault == "focus_jump":
                sim.inject("focus_jump", dz_um=8.0)
            elif case.fault == "disk_full":
                _fill(out, leave_bytes=200_000)

        core.mda.events.frameReady.connect(_inject)
        # a run that raises (the acquisition failed) must still leave its
        # summary: the checks below read it from disk either way
        with contextlib.suppress(Exception):
            ctl.run()
        state = {
            "dose_mj": sim.light_dose_mj,
            "xy": core.getXYPosition(),
            "z": core.getZPosition(),
        }
    finally:
        release_core(core)
    return json.loads((out / "summary.json").read_text()), state


def _check(
    case: Case, out: Path, summary: dict[str, Any], state: dict[str, Any]
) -> None:
    records = [
        json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()
    ]
    assert records[0]["kind"] == "run_started"
    assert records[-1]["kind"] == "run_finished"
    frames = [r for r in records if r["kind"] == "frame"]
    assert [r["index"] for r in frames] == list(range(len(frames)))
    # counts agree: summary, log, zarr; every frame readable and not blank
    raw = read_frames(out)
    assert summary["frames_acquired"] == len(frames) == len(raw)
    assert frames_on_disk(out) == len(frames)
    for i in range(len(raw)):
        assert raw[i].max() > 0, f"frame {i} reads blank"
    if len(raw):
        yaozarrs.validate_zarr_store(str(out / "data.ome.zarr"))
    for image in list_images(out):
        if image.has_labels:
            labels = zarr.open_array(
                str(out / "data.ome.zarr" / image.series / "labels/nuclei/0"), mode="r"
            )
            assert labels.shape == image.shape
    assert not list(out.rglob("*.partial"))
    assert not (out / ".space-reserve").exists()
    # device errors as logged; the ledger is the simulator's dose
    dev = [r for r in records if r["kind"] == "device_error"]
    assert summary["device_errors"] == len(dev)
    assert summary["light_dose_mj"] == pytest.approx(
        state["dose_mj"], rel=1e-6, abs=1e-9
    )
    x, y = state["xy"]
    assert XY_BOX[0] <= x <= XY_BOX[1]
    assert XY_BOX[2] <= y <= XY_BOX[3]
    assert -40 <= state["z"] <= 40
    # the status the files call for
    stopped_by_device = any(r["outcome"] == "run stopped" for r in dev)
    status = summary["status"]
    if case.fault == "disk_full" and status == "error":
        assert summary["finish_reason"].startswith("disk full"), summary[
            "finish_reason"
        ]
        assert str(out) in summary["finish_reason"]
        assert summary["exit_code"] == 1
    elif stopped_by_device:
        assert status == "stopped"
        assert summary["stopped_by"] == "on_error"
        assert summary["exit_code"] == 3
    elif case.fault == "reaction_raises":
        if case.then == "stop":
            assert status == "stopped"
            assert summary["stopped_by"] == "on_error"
            assert summary["exit_code"] == 3
        else:
            assert status == "error"
            assert summary["reactions_disabled"] == ["raises"]
            assert summary["exit_code"] == 1
    elif status == "stopped":  # the random reaction may ask to stop
        assert case.fault == "random_actions"
        assert summary["stopped_by"] == "reaction"
        assert summary["exit_code"] == 0
    else:
        assert status == "completed", summary["finish_reason"]
        assert summary["exit_code"] == 0
        skipped = sum(r["outcome"] == "frame skipped" for r in dev)
        assert len(frames) + skipped == PLANNED


def _one(case: Case, tmp_path: Path, small_disk: Path | None) -> None:
    if case.fault == "disk_full":
        if small_disk is None:
            pytest.skip("a size-capped folder needs a tmpfs mount (root)")
        for p in small_disk.iterdir():  # the disk empty again for this case
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        out = small_disk / f"run-{case.seed}"
    else:
        out = tmp_path / "run"
    summary, state = _run_case(case, out)
    _check(case, out, summary, state)


@pytest.mark.parametrize("case", _cases(12, seed=2026), ids=str)
def test_fault_campaign(case: Case, tmp_path: Path, small_disk: Path | None) -> None:
    _one(case, tmp_path, small_disk)


@pytest.mark.slow
@pytest.mark.parametrize("case", _cases(120, seed=7), ids=str)
def test_fault_campaign_long(
    case: Case, tmp_path: Path, small_disk: Path | None
) -> None:
    _one(case, tmp_path, small_disk)


def test_a_start_refused_after_the_objective_switch_puts_it_back(
    small_disk: Path | None,
) -> None:
    """A grid is sized at the protocol's objective, so the disk check runs after
    the switch; when it refuses, the objective and light are as they were."""
    if small_disk is None:
        pytest.skip("a size-capped folder needs a tmpfs mount (root)")
    for p in small_disk.iterdir():
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    proto = Protocol.model_validate(
        {
            "name": "grid",
            "objective": "40x",
            "laser_power_mw": 7,
            "sequence": {
                "channels": [{"config": "DAPI", "exposure": 20}],
                "grid_plan": {"top": 800, "left": -800, "bottom": -800, "right": 800},
            },
            "analysis": {"enabled": False},
        }
    )
    core = load_core(time_mode="virtual")
    sim = get_simulator(core)
    before = (core.getCurrentConfig("Objective"), core.getProperty("Laser", "Power_mW"))
    out = small_disk / "run"
    try:
        with pytest.raises(SmartscopeError, match="not enough disk space"):
            Controller(core, proto, out_dir=out).run()
        after = (
            core.getCurrentConfig("Objective"),
            core.getProperty("Laser", "Power_mW"),
        )
        assert after == before
        assert sim.light_dose_mj == 0
    finally:
        release_core(core)
    assert not out.exists()
