"""Whether the analysis keeps up with the plan, said before and after a run.

Before the first frame, in realtime (and on real hardware), the run compares
what the models took at their warm-up with the plan's shortest mean time
between frames and warns when they cannot keep that pace; every analysis
record says where its frame's time went (``stages_ms``), the summary sums it
up (``analysis_stages_ms``, with ``planned_frame_ms`` and
``analysis_warm_up_ms``), and ``smartscope run`` says why frames were
skipped. The realtime plans here are far from any machine's speed (a frame
every 0.2 ms, or every second), so no test depends on how fast this one is.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from smartscope.controller import Controller
from smartscope.hardware import load_core, release_core
from smartscope.protocol import Protocol
from smartscope.run import STAGES, analysis_behind, analysis_time, summary_table

WARNING = "the analysis may not keep up with this plan"


def _run(
    tmp_path: Path,
    mode: str,
    sequence: dict[str, Any],
    analysis: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    proto = Protocol.model_validate(
        {
            "name": "pace",
            "seed": 4,
            "time_mode": mode,
            "objective": "20x",
            "sequence": sequence,
            "analysis": analysis or {"segmenter": "classical"},
            "save": {"truth": False, "report": False},
        }
    )
    core = load_core(time_mode=mode, seed=4)
    try:  # on the CPU: a GPU's speed is not what these runs are about
        summary = Controller(core, proto, out_dir=tmp_path / "run", device="cpu").run()
    finally:
        release_core(core)
    events = [json.loads(x) for x in (tmp_path / "run" / "events.jsonl").open()]
    return summary, events


def _sequence(
    interval_s: float, loops: int, exposure_ms: float = 10.0, **more: Any
) -> dict[str, Any]:
    return {
        "channels": [{"config": "DAPI", "exposure": exposure_ms}],
        "stage_positions": [{"name": "p0", "x": 0, "y": 0}],
        "time_plan": {"interval": interval_s, "loops": loops},
        **more,
    }


MODEL = {"segmenter": "model", "model": "nuclei-seg"}


def _run_warned(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    mode: str,
    sequence: dict[str, Any],
) -> tuple[dict[str, Any], list[dict[str, Any]], list[logging.LogRecord]]:
    """:func:`_run` with the segmentation model, and the "may not keep up"
    warnings it logged."""
    with caplog.at_level(logging.WARNING, logger="smartscope.controller"):
        summary, events = _run(tmp_path, mode, sequence, MODEL)
    return summary, events, [r for r in caplog.records if WARNING in r.getMessage()]


def test_the_planned_pace_counts_every_frame_of_a_time_point(tmp_path: Path) -> None:
    # two positions x two channels every 2 s: a frame every 500 ms
    seq = {
        "channels": [
            {"config": "DAPI", "exposure": 10},
            {"config": "GFP", "exposure": 20},
        ],
        "stage_positions": [{"name": "a", "x": 0, "y": 0}, {"name": "b", "x": 50}],
        "time_plan": {"interval": 2.0, "loops": 2},
    }
    summary, events = _run(tmp_path, "virtual", seq)
    assert summary["planned_frame_ms"] == 500.0
    assert events[0]["kind"] == "run_started"
    assert events[0]["planned_frame_ms"] == 500.0
    # classical segmentation: no models, nothing warmed up
    assert summary["analysis_warm_up_ms"] is None
    assert events[0]["analysis_warm_up_ms"] is None


def test_as_fast_as_possible_is_paced_by_the_exposures(tmp_path: Path) -> None:
    summary, _ = _run(tmp_path, "virtual", _sequence(0.0, 3, exposure_ms=40.0))
    assert summary["planned_frame_ms"] == 40.0


def test_no_time_plan_has_no_pace(tmp_path: Path) -> None:
    seq = _sequence(1.0, 2)
    del seq["time_plan"]
    summary, _ = _run(tmp_path, "virtual", seq)
    assert summary["planned_frame_ms"] is None


def test_every_analysed_frame_says_where_its_time_went(tmp_path: Path) -> None:
    summary, events = _run(tmp_path, "virtual", _sequence(1.0, 4))
    analysis = [e for e in events if e["kind"] == "analysis"]
    assert len(analysis) == 4
    for rec in analysis:
        assert set(rec["stages_ms"]) == set(STAGES)
        assert all(v >= 0 for v in rec["stages_ms"].values())
        # the stages are within the frame's latency (from frame to result)
        assert sum(rec["stages_ms"].values()) <= rec["latency_ms"] + 1e-6
    stages = summary["analysis_stages_ms"]
    assert {k: v["n"] for k, v in stages.items()} == dict.fromkeys(STAGES, 4)
    for k in STAGES:
        got = sorted(r["stages_ms"][k] for r in analysis)
        assert stages[k]["max"] == pytest.approx(got[-1], abs=1e-3)
    assert analysis_time(summary).endswith(")")
    assert "analysis a frame" in _printed(summary)


def test_realtime_warns_before_the_first_frame_when_the_models_cannot_keep_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a frame every 0.2 ms: no segmentation network on a CPU keeps that pace
    summary, events, warned = _run_warned(
        tmp_path, caplog, "realtime", _sequence(0.0002, 5, exposure_ms=0.1)
    )
    assert len(warned) == 1
    message = warned[0].getMessage()
    assert "the plan takes a frame every 0.2 ms" in message
    assert "(segment " in message
    assert "one after the other" in message
    cost = events[0]["analysis_warm_up_ms"]
    # one model on one thread: its time is the frame's
    assert set(cost) == {"segment", "per_frame"}
    assert cost["segment"] > 0.2
    assert cost["per_frame"] == cost["segment"]
    assert summary["analysis_warm_up_ms"] == cost
    assert summary["planned_frame_ms"] == pytest.approx(0.2)
    # the warning comes before the run's time zero (its first record, and
    # every frame after it), on the same clock (time.time)
    assert events[0]["kind"] == "run_started"
    assert warned[0].created <= events[0]["t_wall"]


def test_realtime_does_not_warn_when_the_plan_leaves_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    summary, _, warned = _run_warned(tmp_path, caplog, "realtime", _sequence(1.0, 2))
    assert not warned
    assert summary["analysis_warm_up_ms"]["per_frame"] < 1000.0
    assert summary["frames_skipped_analysis"] == 0
    assert analysis_behind(summary) is None


def test_virtual_time_waits_for_the_analysis_and_never_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    summary, _, warned = _run_warned(
        tmp_path, caplog, "virtual", _sequence(0.0002, 3, exposure_ms=0.1)
    )
    assert not warned
    assert summary["analysis_warm_up_ms"]["per_frame"] > summary["planned_frame_ms"]
    assert summary["frames_skipped_analysis"] == 0


def test_skipped_frames_are_explained_with_the_analysis_time_and_the_pace() -> None:
    stage = {"n": 7, "p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
    summary = {
        "frames_acquired": 10,
        "frames_skipped_analysis": 3,
        "planned_frame_ms": 50.0,
        "analysis_stages_ms": {
            "background": {**stage, "p50": 2.0},
            "denoise": {**stage, "p50": 30.0},
            "segment": {**stage, "p50": 40.0},
            "measure": {**stage, "p50": 0.5},
            "track": {**stage, "p50": 0.01},
        },
    }
    text = analysis_behind(summary)
    assert text is not None
    assert "3 of 10 frames were not analysed" in text
    assert "every frame is on disk" in text
    assert "took 72.5 ms a frame in all (medians:" in text  # the medians' sum
    assert "denoise 30.0" in text
    assert "segment 40.0" in text
    assert "track" not in text.split(", and the plan")[0].split("(medians:")[1]
    assert "every 50 ms" in text
    assert analysis_behind({**summary, "frames_skipped_analysis": 0}) is None
    # autofocus planes are not analysed, so not counted
    with_af = analysis_behind({**summary, "frames_acquired": 14, "frames_autofocus": 4})
    assert with_af is not None
    assert "3 of 10 frames were not analysed" in with_af
    # the disk held the analysis back: said, with what a frame took to store
    assert "stored" not in text
    stored = {"n": 7, "p50": 53.1, "p95": 56.0, "p99": 57.0, "max": 60.0}
    held = analysis_behind({**summary, "storage_ms": stored, "storage_waited_s": 2.04})
    assert held is not None
    assert "waited 2.0 s in all for the analysed frames to be stored" in held
    assert "(53 ms a frame): the disk held it back" in held
    assert "save.denoised" in held
    printed = _printed({**summary, "storage_ms": stored, "storage_waited_s": 2.04})
    assert "storing a frame" in printed
    assert "p50 53.1 / p99 57.0 ms; the analysis waited 2.0 s for it" in printed
    # a wait too short to matter is not news
    brief = {**summary, "storage_ms": stored, "storage_waited_s": 0.01}
    assert "stored" not in (analysis_behind(brief) or "")


def _printed(summary: dict[str, Any]) -> str:
    console = Console(record=True, width=200)
    console.print(summary_table(summary))
    return console.export_text()


@pytest.mark.parametrize(
    ("shape", "diameter_px"), [((512, 512), 37.0), ((256, 384), 12.0)]
)
def test_the_warm_up_frame_has_nuclei_of_the_runs_size(
    shape: tuple[int, int], diameter_px: float
) -> None:
    """The models are timed at the warm-up on round nuclei of the diameter
    the analysis expects, on a grid 2.5 diameters apart, which the
    classical segmenter finds one by one at about that size."""
    import numpy as np

    from smartscope.analysis.analyser import warm_up_frame
    from smartscope.analysis.segment import segment_nuclei

    image = warm_up_frame(shape, diameter_px)
    assert image.shape == shape
    assert image.dtype == np.uint16
    np.testing.assert_array_equal(image, warm_up_frame(shape, diameter_px))
    labels = segment_nuclei(image, pixel_size_um=1.0, diameter_um=diameter_px)
    step = 2.5 * diameter_px
    grid = len(np.arange(step / 2, shape[0], step)) * len(
        np.arange(step / 2, shape[1], step)
    )
    found = int(labels.max())
    assert grid * 0.8 <= found <= grid
    areas = np.bincount(labels.ravel())[1:]
    assert np.median(areas) == pytest.approx(np.pi * diameter_px**2 / 4, rel=0.3)
