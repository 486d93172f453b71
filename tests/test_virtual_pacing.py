"""Virtual time: the analysis paces the sample clock.

No frame is dropped from analysis for want of room, at any number of
positions, and a seeded run's outcome does not depend on how fast the host
analyses: the same frames, settings and actions, whether the analysis is
quick or slowed down (here by a reaction that sleeps; nothing is asserted
about time)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from smartscope.actions import Action
from smartscope.analysis.result import FrameResult
from smartscope.controller import Controller
from smartscope.hardware import load_core, release_core
from smartscope.protocol import Protocol
from smartscope.reactions.base import Reaction, RunView


def _protocol(n_positions: int, loops: int) -> Protocol:
    positions = [
        {"name": f"p{i}", "x": -600 + 80 * i, "y": 40 * (i % 3)}
        for i in range(n_positions)
    ]
    return Protocol.model_validate(
        {
            "name": "pacing",
            "seed": 5,
            "time_mode": "virtual",
            "objective": "20x",
            "laser_power_mw": 2,
            "sequence": {
                "channels": [{"config": "DAPI", "exposure": 20}],
                "stage_positions": positions,
                "time_plan": {"interval": 30, "loops": loops},
            },
            "analysis": {"segmenter": "classical", "diameter_um": 12, "queue_size": 2},
            # run-wide changes in the middle of a time point: the adaptive
            # exposure acts on every frame, and its effect lands in the next
            # block
            "reactions": [
                {"type": "adaptive_exposure", "target_adu": 300, "tolerance": 0.02},
            ],
            "limits": {"xy_box_um": [-800, 800, -800, 800]},
            "save": {"truth": False, "report": False},
        }
    )


class _Slow(Reaction):
    """Makes the analysis slow: a host ten times busier."""

    name = "slow"

    def react(self, result: FrameResult, run: RunView) -> Sequence[Action]:
        time.sleep(0.03)
        return ()


def _run(out: Path, proto: Protocol, extra: list[Reaction]) -> dict[str, Any]:
    core = load_core(seed=proto.seed, time_mode="virtual")
    core.setProperty("Camera", "SensorWidth_px", 256)  # for speed
    core.setProperty("Camera", "SensorHeight_px", 256)
    try:
        summary = Controller(core, proto, out_dir=out, reactions=extra).run()
    finally:
        release_core(core)
    recs = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    frames = [
        (
            r["position"],
            r["event_index"].get("t"),
            r["exposure_ms"],
            r["laser_mw"],
            r["t_s"],
        )
        for r in recs
        if r["kind"] == "frame"
    ]
    actions = [
        (r["type"], r["status"], r["frame_index"], json.dumps(r["after"]))
        for r in recs
        if r["kind"] == "action"
    ]
    return {"summary": summary, "frames": frames, "actions": actions}


def test_no_frame_is_skipped_with_many_positions_and_a_small_queue(
    tmp_path: Path,
) -> None:
    # the analysis slower than the acquisition: without pacing, frames pile up
    res = _run(tmp_path, _protocol(16, 2), [_Slow()])
    s = res["summary"]
    assert s["frames_acquired"] == 32
    assert s["frames_skipped_analysis"] == 0
    assert s["frames_analysed"] == 32


def test_the_outcome_does_not_depend_on_the_speed_of_the_analysis(
    tmp_path: Path,
) -> None:
    quick = _run(tmp_path / "quick", _protocol(6, 3), [])
    slow = _run(tmp_path / "slow", _protocol(6, 3), [_Slow()])
    assert quick["actions"]  # the reaction did act
    assert slow["frames"] == quick["frames"]
    assert slow["actions"] == quick["actions"]
