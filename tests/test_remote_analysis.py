"""``analysis: {executor: ray}``: the analysis in a Ray actor (a local Ray
cluster here; on an instrument, a GPU machine). The same results as the
local executor, the same queue and skipping, the same refusal of a bad model
before anything moves, and a dead actor costs analysis, never frames."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the [ray] extra is not installed")

from smartscope.analysis import AnalysisPipeline  # noqa: E402
from smartscope.analysis.models import ModelLoadError  # noqa: E402
from smartscope.analysis.result import FrameInput  # noqa: E402
from smartscope.analysis.settings import AnalysisSettings  # noqa: E402
from smartscope.controller import Controller  # noqa: E402
from smartscope.hardware import load_core, release_core  # noqa: E402
from smartscope.io.read_images import frames_on_disk  # noqa: E402
from smartscope.protocol import Protocol  # noqa: E402
from smartscope.sim import get_simulator  # noqa: E402

N = 12


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Any:
    """One local Ray for the module (the executor joins a running Ray)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _protocol(executor: str, **analysis: Any) -> Protocol:
    return Protocol.model_validate(
        {
            "name": f"remote-{executor}",
            "seed": 2,
            "time_mode": "virtual",
            "objective": "20x",
            "laser_power_mw": 5,
            "sequence": {
                "channels": [{"config": "DAPI", "exposure": 30}],
                "stage_positions": [{"name": "a", "x": 0, "y": 0}],
                "time_plan": {"interval": 30, "loops": N},
            },
            "analysis": {
                "segmenter": "classical",
                "executor": executor,
                "save_labels": True,
                **analysis,
            },
        }
    )


def _run(proto: Protocol, out: Path, on_frame: Any = None) -> tuple[dict, Controller]:
    core = load_core()
    try:
        ctl = Controller(core, proto, out_dir=out)
        if on_frame is not None:
            ctl.frame_acquired.connect(lambda f: on_frame(ctl, f))
        return ctl.run(), ctl
    finally:
        release_core(core)


def _analysis(out: Path) -> list[dict[str, Any]]:
    return [
        r
        for r in map(json.loads, (out / "events.jsonl").read_text().splitlines())
        if r["kind"] == "analysis"
    ]


def test_ray_gives_the_local_results(tmp_path: Path) -> None:
    local, _ = _run(_protocol("local"), tmp_path / "local")
    remote, ctl = _run(_protocol("ray"), tmp_path / "ray")
    assert remote["status"] == local["status"] == "completed"
    assert remote["frames_analysed"] == local["frames_analysed"] == N
    a, b = _analysis(tmp_path / "local"), _analysis(tmp_path / "ray")
    # the same objects, positions, areas and track ids, frame by frame
    assert [r["objects"] for r in a] == [r["objects"] for r in b]
    assert all(r["n_objects"] > 0 for r in b)
    # latency accounted the same way (frame -> result on this machine's clock)
    assert remote["latency_frame_to_result_ms"]["n"] == N
    assert all(r["latency_ms"] > 0 for r in b)
    # the work was done in another process (the actor), not here
    where = ctl._pipeline.remote.where
    assert where["pid"] != os.getpid()
    assert where["device"] == "cpu"


def test_the_queue_skips_as_the_local_executor_does() -> None:
    """Hold the actor's first frame, submit more than the queue holds: the
    oldest waiting ones are skipped, as with the local executor."""
    settings = AnalysisSettings(executor="ray", queue_size=2)
    pipe = AnalysisPipeline(settings)
    gate, started = threading.Event(), threading.Event()
    analyse = pipe.remote.analyse

    def held(frame: FrameInput, *args: Any) -> Any:
        if frame.frame_index == 0:
            started.set()
            gate.wait(60)
        return analyse(frame, *args)

    pipe.remote.analyse = held  # type: ignore[method-assign]
    rng = np.random.default_rng(0)
    skipped: list[int] = []
    pipe.frame_skipped.connect(skipped.append)
    pipe.start()
    try:
        frames = [
            FrameInput(
                image=rng.integers(100, 200, (64, 64), dtype=np.uint16),
                frame_index=i,
                position="a",
                stage_x_um=0.0,
                stage_y_um=0.0,
                z_um=0.0,
                pixel_size_um=0.325,
                exposure_ms=10.0,
                t_frame=0.0,
                t_s=float(i),
            )
            for i in range(8)
        ]
        pipe.submit(frames[0])
        assert started.wait(60)
        for f in frames[1:]:
            pipe.submit(f)
        gate.set()
    finally:
        assert pipe.stop(drain=True, timeout_s=120)
    assert pipe.submitted == 8
    assert pipe.analysed == 3  # frame 0, then the 2 the queue held
    assert sorted(skipped) == [1, 2, 3, 4, 5]
    assert pipe.analysed + pipe.skipped == pipe.submitted
    assert pipe.remote._actor is None  # stopped with the pipeline


def test_the_actor_sends_back_only_the_images_kept() -> None:
    """``images_kept`` reaches the actor: a label image no result keeps is
    not sent back through Ray's object store; the objects always are."""
    from frames import snap_frame

    core = load_core()
    try:
        frame = snap_frame(core)
    finally:
        release_core(core)
    pipe = AnalysisPipeline(AnalysisSettings(executor="ray"))
    try:
        pipe.load_models()
        for kept in (frozenset(), frozenset({"labels"}), frozenset()):
            pipe.images_kept = kept
            result = pipe.analyse(frame)
            assert result.error is None
            assert (result.labels is None) is ("labels" not in kept)
            assert len(result.objects) > 5
    finally:
        pipe.remote.close()


def test_a_bad_model_is_refused_before_anything_moves(tmp_path: Path) -> None:
    core = load_core()
    try:
        sim = get_simulator(core)
        xy = core.getXYPosition()
        proto = _protocol("ray", segmenter="model", model="no-such-model")
        with pytest.raises(ModelLoadError, match="no-such-model"):
            Controller(core, proto, out_dir=tmp_path / "r").run()
        assert core.getXYPosition() == xy
        assert sim.light_dose_mj == 0
        assert not (tmp_path / "r").exists()
    finally:
        release_core(core)


def test_a_dead_actor_costs_analysis_never_frames(tmp_path: Path) -> None:
    def kill_at_4(ctl: Controller, frame: Any) -> None:
        if frame.frame_index == 4:
            ray.kill(ctl._pipeline.remote._actor)

    summary, _ = _run(_protocol("ray"), tmp_path / "run", on_frame=kill_at_4)
    assert summary["frames_acquired"] == N == frames_on_disk(tmp_path / "run")
    failed = [r for r in _analysis(tmp_path / "run") if r["error"]]
    assert failed
    assert all("remote analysis" in r["error"] for r in failed)
    assert summary["frames_failed_analysis"] == len(failed)
    assert summary["status"] == "error"  # said, not hidden
    assert f"analysis failed on {len(failed)} frames" in summary["finish_reason"]
