"""How late the frames began for their time plan: every acquisition frame's
record says it (``late_ms``), the summary sums it up (``frame_late_ms``) and
``smartscope run`` prints it. A realtime run whose frames take longer than
its interval falls behind the plan (pymmcore-plus then takes each frame as
soon as it can); a run in virtual time is never late.

The realtime figures are bounded from below only (a snap of a 40-ms exposure
lasts at least 40 ms, whatever the host's speed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console

from smartscope.controller import Controller
from smartscope.hardware import load_core, release_core
from smartscope.protocol import Protocol
from smartscope.run import summary_table


def _run(tmp_path: Path, mode: str, interval_s: float, exposure_ms: float, n: int):
    return _run_sequence(
        tmp_path,
        mode,
        {
            "channels": [{"config": "DAPI", "exposure": exposure_ms}],
            "stage_positions": [{"name": "p0", "x": 0, "y": 0}],
            "time_plan": {"interval": interval_s, "loops": n},
        },
    )


def _run_sequence(tmp_path: Path, mode: str, sequence: dict[str, Any]):
    proto = Protocol.model_validate(
        {
            "name": "time-plan-kept",
            "seed": 3,
            "time_mode": mode,
            "objective": "20x",
            "sequence": sequence,
            "save": {"truth": False, "report": False},
        }
    )
    core = load_core(time_mode=mode, seed=3)
    try:
        summary = Controller(core, proto, out_dir=tmp_path / "run").run()
    finally:
        release_core(core)
    frames = [
        r
        for r in map(json.loads, (tmp_path / "run" / "events.jsonl").open())
        if r["kind"] == "frame"
    ]
    return summary, frames


def _printed(summary: dict[str, Any]) -> str:
    console = Console(record=True, width=200)
    console.print(summary_table(summary))
    return console.export_text()


def test_virtual_time_frames_begin_on_their_planned_time(tmp_path: Path) -> None:
    summary, frames = _run(tmp_path, "virtual", 2.0, 10, 5)
    assert [f["late_ms"] for f in frames] == [0.0] * 5
    late = summary["frame_late_ms"]
    assert late["n"] == 5
    assert late["max"] == 0.0
    assert "frames late for the time plan" in _printed(summary)


def test_a_realtime_run_slower_than_its_plan_says_how_far_behind_it_fell(
    tmp_path: Path,
) -> None:
    # 40-ms exposures every 10 ms: frame k begins at least k x 30 ms late
    summary, frames = _run(tmp_path, "realtime", 0.01, 40, 6)
    late = [f["late_ms"] for f in frames]
    assert len(late) == 6
    for k, ms in enumerate(late):
        assert ms >= 30.0 * k - 1.0, (k, late)
    assert summary["frame_late_ms"]["n"] == 6
    assert summary["frame_late_ms"]["max"] >= 149.0
    assert "after the planned start" in _printed(summary)


def test_without_a_time_plan_no_frame_is_late(tmp_path: Path) -> None:
    summary, frames = _run_sequence(
        tmp_path,
        "virtual",
        {
            "channels": [{"config": "DAPI", "exposure": 10}],
            "stage_positions": [
                {"name": "a", "x": 0, "y": 0},
                {"name": "b", "x": 100, "y": 0},
            ],
        },
    )
    assert summary["frames_acquired"] == 2
    assert [f["late_ms"] for f in frames] == [None, None]
    assert summary["frame_late_ms"] is None
