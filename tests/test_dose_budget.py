"""dose_budget on the simulator: per-cell, per-position and run budgets,
judged against the simulator's own per-cell fluence (truth/cells.csv)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from smartscope.controller import Controller
from smartscope.hardware import load_core, release_core
from smartscope.protocol import Protocol
from smartscope.reactions import DoseBudget

# 20x, a 256-px sensor (for speed): an 83.2 µm field; 5 mW x 30 ms = 0.15 mJ
# a frame = 2.17 J/cm²
SENSOR_PX = 256
FRAME_J_CM2 = 5e-3 * 0.030 / (SENSOR_PX * 0.325) ** 2 / 1e-8


def _protocol(budget: dict[str, Any], loops: int = 12) -> Protocol:
    return Protocol.model_validate(
        {
            "name": "dose-budget",
            "seed": 4,
            "time_mode": "virtual",
            "objective": "20x",
            "laser_power_mw": 5,
            "sequence": {
                "channels": [{"config": "DAPI", "exposure": 30}],
                "stage_positions": [
                    {"name": "a", "x": -300, "y": 0},
                    {"name": "b", "x": 300, "y": 0},
                ],
                "time_plan": {"interval": 60, "loops": loops},
            },
            "analysis": {"segmenter": "classical", "diameter_um": 12},
            "reactions": [{"type": "dose_budget", **budget}],
            "limits": {"xy_box_um": [-600, 600, -600, 600]},
            "save": {"truth": True, "report": False},
        }
    )


def _run(out: Path, proto: Protocol) -> dict[str, Any]:
    core = load_core(seed=proto.seed, time_mode="virtual")
    core.setProperty("Camera", "SensorWidth_px", SENSOR_PX)
    core.setProperty("Camera", "SensorHeight_px", SENSOR_PX)
    try:
        return Controller(core, proto, out_dir=out).run()
    finally:
        release_core(core)


def _frames(out: Path) -> list[dict[str, Any]]:
    recs = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    return [r for r in recs if r["kind"] == "frame"]


def _truth_dose(out: Path, frames: set[int]) -> float:
    """The most fluence any cell in those frames had received (truth), J/cm²."""
    with (out / "truth" / "cells.csv").open() as fh:
        return max(
            float(r["dose"]) for r in csv.DictReader(fh) if int(r["frame"]) in frames
        )


def test_a_cell_budget_stops_imaging_its_position_within_one_frame(
    tmp_path: Path,
) -> None:
    budget = 4 * FRAME_J_CM2 + 0.01  # spent at the 5th frame
    summary = _run(tmp_path, _protocol({"per_cell_j_cm2": budget, "then": "remove"}))
    frames = _frames(tmp_path)
    a = [f["index"] for f in frames if f["position"] == "a"]
    b = [f["index"] for f in frames if f["position"] == "b"]
    assert len(a) == len(b) == 5  # both positions hold cells from the start
    assert summary["actions"]["RemovePosition"] == {"applied": 2}
    assert "no position left" in summary["finish_reason"]
    # the simulator's own count (at the start of each frame, so the last
    # frame's light comes on top): no cell got more than the budget + one
    # frame, and the budget was used
    worst = _truth_dose(tmp_path, set(a) | set(b)) + FRAME_J_CM2
    assert budget <= worst <= budget + FRAME_J_CM2 * 1.01


def test_a_position_budget_slows_that_position_only(tmp_path: Path) -> None:
    per_frame_mj = 5 * 0.030
    budget = 3 * per_frame_mj + 1e-6  # spent at a's 4th frame
    proto = _protocol(
        {"per_position_mj": budget, "then": "slow", "slow_interval_s": 240}, loops=13
    )
    _run(tmp_path, proto)
    frames = _frames(tmp_path)
    t_a = np.array([f["t_s"] for f in frames if f["position"] == "a"])
    gaps = np.diff(t_a)
    assert gaps[:3] == pytest.approx([60, 60, 60], abs=1)
    assert gaps[4:] == pytest.approx([240] * len(gaps[4:]), abs=1)
    assert len(gaps[4:]) >= 1


def test_the_run_budget_ends_the_run(tmp_path: Path) -> None:
    summary = _run(tmp_path, _protocol({"total_mj": 1.0, "then": "stop"}))
    assert summary["status"] == "stopped"
    assert "total_mj" in summary["finish_reason"]
    # 0.15 mJ a frame: the 7th frame crosses 1 mJ, the action follows it
    assert 7 <= summary["frames_acquired"] <= 8


def test_a_budget_must_be_named() -> None:
    with pytest.raises(ValueError, match="at least one budget"):
        DoseBudget()
