"""``analysis.max_wait_ms`` in a run: an analysis that falls behind the camera
skips to the newest frame, in realtime; virtual time ignores it (the analysis
paces the clock there)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from smartscope.analysis import AnalysisPipeline
from smartscope.controller import Controller
from smartscope.hardware import load_core, release_core
from smartscope.protocol import Protocol

FRAMES = 8


def _protocol(time_mode: str) -> Protocol:
    """A z-stack of FRAMES planes: one block, whose frames the acquisition
    hands over without waiting for their analysis, in virtual time too."""
    return Protocol.model_validate(
        {
            "name": "max-wait",
            "time_mode": time_mode,
            "sequence": {
                "channels": [{"config": "DAPI", "exposure": 10}],
                "z_plan": {"range": FRAMES - 1, "step": 1},
            },
            "analysis": {"segmenter": "classical", "queue_size": 64, "max_wait_ms": 1},
            "save": {"truth": False},
        }
    )


def _run(proto: Protocol, out: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    core = load_core(time_mode=proto.time_mode, seed=3)
    try:
        summary = Controller(core, proto, out_dir=out).run()
    finally:
        release_core(core)
    records = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    return summary, records


@pytest.fixture
def behind(monkeypatch: pytest.MonkeyPatch) -> None:
    """The segmentation of each frame lasts until two newer frames of the
    stack have been handed over (or the last one was): the analysis is
    behind the camera."""
    segment = AnalysisPipeline._segment

    def slow(self: AnalysisPipeline, image: Any, frame: Any) -> Any:
        until = min(frame.frame_index + 3, FRAMES)
        t0 = time.monotonic()
        while self.submitted < until and time.monotonic() - t0 < 60:
            time.sleep(0.002)
        return segment(self, image, frame)

    monkeypatch.setattr(AnalysisPipeline, "_segment", slow)


@pytest.mark.usefixtures("behind")
def test_realtime_an_analysis_behind_skips_to_the_newest_frame(tmp_path: Path) -> None:
    """When a frame's analysis ends, the older of the two frames waiting has
    waited too long (the camera's exposures take real time, well over the
    1-ms limit) and is skipped; the newer is analysed."""
    summary, records = _run(_protocol("realtime"), tmp_path / "run")
    skipped = [r for r in records if r["kind"] == "analysis_skipped"]
    analysed = [r["index"] for r in records if r["kind"] == "analysis"]
    assert summary["frames_acquired"] == FRAMES
    assert {r["reason"] for r in skipped} == {"too late"}
    assert len(skipped) == summary["frames_skipped_analysis"] >= 2
    assert sorted(analysed + [r["index"] for r in skipped]) == list(range(FRAMES))
    assert analysed[-1] == FRAMES - 1  # the newest frame is always analysed


@pytest.mark.usefixtures("behind")
def test_virtual_time_ignores_max_wait(tmp_path: Path) -> None:
    """The same analysis behind the camera, in virtual time: frames wait for
    it (up to queue_size) while the clock is paced, and none of them is
    late there."""
    summary, records = _run(_protocol("virtual"), tmp_path / "run")
    assert summary["frames_acquired"] == FRAMES
    assert summary["frames_analysed"] == FRAMES
    assert summary["frames_skipped_analysis"] == 0
    assert not [r for r in records if r["kind"] == "analysis_skipped"]
