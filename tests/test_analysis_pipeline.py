"""AnalysisPipeline: the worker, its bounded queue, failures, and the model slot."""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
import types
from collections.abc import Iterator

import numpy as np
import pytest
from scipy import ndimage as ndi

from frames import snap_frame
from smartscope.analysis import (
    AnalysisPipeline,
    AnalysisSettings,
    FrameInput,
    FrameResult,
    ModelLoadError,
    segment_nuclei,
)
from smartscope.errors import SmartscopeError
from smartscope.hardware import open_core


@pytest.fixture(scope="module")
def frames() -> list[FrameInput]:
    """Three simulator frames at three stage positions."""
    out = []
    with open_core(seed=2) as core:
        for i, (x, y) in enumerate([(0.0, 0.0), (30.0, -20.0), (60.0, -40.0)]):
            core.setXYPosition(x, y)
            core.waitForSystem()
            out.append(snap_frame(core, i))
    return out


def series(frames: list[FrameInput], n: int) -> Iterator[FrameInput]:
    """``n`` frames with running indices, cycling through the snapped images."""
    for i in range(n):
        yield dataclasses.replace(
            frames[i % len(frames)], frame_index=i, t_frame=time.perf_counter()
        )


class Recorder:
    """Collects what a pipeline announces (append is thread-safe)."""

    def __init__(self, pipeline: AnalysisPipeline) -> None:
        self.results: list[FrameResult] = []
        self.skipped: list[int] = []
        self.why: list[tuple[int, str]] = []
        self.failed: list[tuple[int, str]] = []
        pipeline.frame_analysed.connect(self.results.append)
        pipeline.frame_skipped.connect(self.skipped.append)  # the index alone
        pipeline.frame_skipped.connect(lambda i, reason: self.why.append((i, reason)))
        pipeline.analysis_failed.connect(lambda i, msg: self.failed.append((i, msg)))


def test_analyse_gives_objects_with_tracks(frames) -> None:
    pipeline = AnalysisPipeline()
    first, second = (pipeline.analyse(f) for f in frames[:2])
    assert first.error is None
    assert second.error is None
    assert len(first.objects) > 10
    assert first.labels is not None
    assert first.labels.dtype == np.int32
    assert first.denoised is None  # no denoiser configured
    assert 100 < first.background < 200  # the camera offset region, ADU
    assert first.extra["analysis_ms"] > 0
    assert all(o.track_id > 0 for o in first.objects)
    # the stage moved 30 µm between the frames, the cells did not: most tracks go on
    kept = {o.track_id for o in first.objects} & {o.track_id for o in second.objects}
    assert len(kept) >= 0.5 * len(second.objects)
    for o in second.objects:
        before = first.track(o.track_id)
        if before is not None and abs(o.area_um2 / before.area_um2 - 1) < 0.2:
            # the same nucleus (not one the frame edge cuts differently)
            assert abs(o.x_um - before.x_um) < 2
            assert abs(o.y_um - before.y_um) < 2


def test_worker_analyses_every_frame_in_order(frames) -> None:
    results: list[FrameResult] = []
    with AnalysisPipeline(
        AnalysisSettings(queue_size=16), on_result=results.append
    ) as p:
        for frame in series(frames, 6):
            p.submit(frame)
    assert [r.frame_index for r in results] == list(range(6))
    assert (p.submitted, p.analysed, p.skipped, p.failed) == (6, 6, 0, 0)
    assert not p.is_running
    assert all(r.t_result >= r.frame.t_frame for r in results)


class SlowPipeline(AnalysisPipeline):
    """The real pipeline with a segmenter slower than the frame rate."""

    def _segment(self, image: np.ndarray, frame: FrameInput) -> np.ndarray:
        time.sleep(0.05)
        return super()._segment(image, frame)


def test_a_full_queue_drops_the_oldest_frames(frames) -> None:
    pipeline = SlowPipeline(AnalysisSettings(queue_size=4))
    seen = Recorder(pipeline)
    pipeline.start()
    for frame in series(frames, 50):
        pipeline.submit(frame)  # never waits for the analysis
        assert pipeline.pending <= 4
    analysed_while_submitting = pipeline.analysed
    assert pipeline.stop(drain=True, timeout_s=30)
    assert analysed_while_submitting < 10
    assert pipeline.submitted == 50
    assert pipeline.skipped > 0
    assert pipeline.analysed + pipeline.skipped == pipeline.submitted
    analysed = [r.frame_index for r in seen.results]
    assert analysed == sorted(analysed)
    assert seen.skipped == sorted(seen.skipped)  # dropped oldest first
    assert sorted(analysed + seen.skipped) == list(range(50))
    assert len(seen.skipped) == pipeline.skipped
    # the newest frames are the ones still analysed at the end
    assert analysed[-4:] == [46, 47, 48, 49]


def _late_run(
    frames,
    n: int,
    positions: tuple[str, ...] = ("p0",),
    *,
    max_wait_ms: float | None = 50.0,
    drop_late: bool = True,
) -> tuple[AnalysisPipeline, Recorder]:
    """``n`` frames (of ``positions`` in turn) taken 10 s ago, all waiting
    before the worker takes the first (it needs the pipeline's lock to take
    one), analysed to the end."""
    pipeline = AnalysisPipeline(AnalysisSettings(queue_size=8, max_wait_ms=max_wait_ms))
    pipeline.drop_late = drop_late
    seen = Recorder(pipeline)
    pipeline.start()
    taken = time.perf_counter() - 10.0
    with pipeline._cond:
        for frame in series(frames, n):
            where = positions[frame.frame_index % len(positions)]
            pipeline.submit(dataclasses.replace(frame, t_frame=taken, position=where))
    assert pipeline.stop(drain=True)
    return pipeline, seen


def test_frames_that_waited_too_long_go_and_the_newest_is_analysed(frames) -> None:
    """``max_wait_ms``: an analysis that fell behind works on the newest frame
    (its reactions act on what the sample looks like now) instead of working
    through a queue of stale ones; the newest is analysed however late."""
    pipeline, seen = _late_run(frames, 3)
    assert seen.why == [(0, "too late"), (1, "too late")]
    assert seen.skipped == [0, 1]  # a callback may take the index alone
    assert [r.frame_index for r in seen.results] == [2]
    assert seen.results[0].error is None
    assert (pipeline.submitted, pipeline.analysed, pipeline.skipped) == (3, 1, 2)


def test_the_newest_frame_of_each_position_is_analysed_however_late(frames) -> None:
    """Two time points of three positions, all late: the first time point's
    frames go, the second's are all analysed (a position whose frame comes
    first in every time point is not starved by the ones after it)."""
    _, seen = _late_run(frames, 6, ("a", "b", "c"))
    assert seen.why == [(0, "too late"), (1, "too late"), (2, "too late")]
    assert [(r.frame_index, r.frame.position) for r in seen.results] == [
        (3, "a"),
        (4, "b"),
        (5, "c"),
    ]


@pytest.mark.parametrize("max_wait_ms", [None, 50.0])
def test_late_frames_stay_without_max_wait_or_where_the_clock_waits(
    frames, max_wait_ms: float | None
) -> None:
    """No ``max_wait_ms``, or virtual time (``drop_late`` False: the analysis
    paces the clock there), and every waiting frame is analysed."""
    pipeline, seen = _late_run(
        frames, 3, max_wait_ms=max_wait_ms, drop_late=max_wait_ms is None
    )
    assert [r.frame_index for r in seen.results] == [0, 1, 2]
    assert pipeline.skipped == 0


def test_max_wait_must_be_a_positive_time() -> None:
    with pytest.raises(ValueError, match="max_wait_ms"):
        AnalysisSettings(max_wait_ms=0)


def test_stop_without_drain_skips_what_is_queued(frames) -> None:
    pipeline = SlowPipeline(AnalysisSettings(queue_size=8))
    seen = Recorder(pipeline)
    pipeline.start()
    for frame in series(frames, 8):
        pipeline.submit(frame)
    assert pipeline.stop(drain=False)
    assert pipeline.analysed + pipeline.skipped == 8
    assert pipeline.skipped >= 5
    assert sorted([r.frame_index for r in seen.results] + seen.skipped) == list(
        range(8)
    )
    pipeline.submit(next(series(frames, 1)))  # after stop: skipped, not lost
    assert (pipeline.submitted, pipeline.skipped) == (9, len(seen.skipped))


class FlakyPipeline(AnalysisPipeline):
    """The real pipeline whose segmentation raises on frame 2."""

    def _segment(self, image: np.ndarray, frame: FrameInput) -> np.ndarray:
        if frame.frame_index == 2:
            raise RuntimeError("segmenter exploded")
        return super()._segment(image, frame)


class BrokenDenoiser(AnalysisPipeline):
    """The real pipeline whose denoiser fails on frame 2."""

    def _denoise(self, image: np.ndarray, frame: FrameInput) -> np.ndarray | None:
        if frame.frame_index == 2:
            raise RuntimeError("denoiser exploded")
        return super()._denoise(image, frame)


@pytest.mark.parametrize(
    ("kind", "settings", "message"),
    [
        ("flaky", {}, "RuntimeError: segmenter exploded"),
        # two stages: an error in either is that frame's result
        (
            "flaky",
            {"denoise": "denoise-care", "stages": 2},
            "RuntimeError: segmenter exploded",
        ),
        (
            "broken_denoiser",
            {"denoise": "denoise-care", "stages": 2},
            "RuntimeError: denoiser exploded",
        ),
    ],
)
def test_an_analysis_error_yields_an_error_result_and_the_worker_goes_on(
    frames, kind, settings, message
) -> None:
    cls = {"flaky": FlakyPipeline, "broken_denoiser": BrokenDenoiser}[kind]
    pipeline = cls(AnalysisSettings(queue_size=16, **settings), device="cpu")
    seen = Recorder(pipeline)
    pipeline.start()
    for frame in series(frames, 5):
        pipeline.submit(frame)
    assert pipeline.stop(drain=True)
    assert [r.frame_index for r in seen.results] == [0, 1, 2, 3, 4]
    bad = seen.results[2]
    assert bad.error == message
    assert bad.objects == ()
    assert bad.labels is None
    assert seen.failed == [(2, message)]
    assert all(
        r.error is None and r.objects for i, r in enumerate(seen.results) if i != 2
    )
    assert (pipeline.analysed, pipeline.failed, pipeline.skipped) == (5, 1, 0)


def test_a_broken_subscriber_does_not_stop_the_pipeline(frames) -> None:
    def broken(*args: object) -> None:
        raise ValueError("subscriber bug")

    got: list[int] = []
    pipeline = AnalysisPipeline(AnalysisSettings(queue_size=16), on_result=broken)
    pipeline.frame_analysed.connect(lambda r: got.append(r.frame_index))
    pipeline.frame_analysed.connect(broken)
    pipeline.start()
    for frame in series(frames, 4):
        pipeline.submit(frame)
        assert pipeline.is_running
    assert pipeline.stop(drain=True)
    assert got == [0, 1, 2, 3]
    assert (pipeline.analysed, pipeline.failed) == (4, 0)


def test_disabled_analysis_does_nothing(frames) -> None:
    pipeline = AnalysisPipeline(AnalysisSettings(enabled=False))
    pipeline.start()
    pipeline.submit(frames[0])
    assert not pipeline.is_running
    assert (pipeline.submitted, pipeline.analysed, pipeline.skipped) == (0, 0, 0)
    assert pipeline.stop()


def test_a_missing_model_is_refused_at_start_naming_it(frames) -> None:
    settings = AnalysisSettings(segmenter="model", model="no-such-nuclei-model")
    pipeline = AnalysisPipeline(settings)
    with pytest.raises(ModelLoadError, match="no-such-nuclei-model") as info:
        pipeline.start()
    assert isinstance(info.value, SmartscopeError)
    assert info.value.role == "segmenter"
    assert not pipeline.is_running
    # used synchronously, the frame's result says the same
    result = pipeline.analyse(frames[0])
    assert result.error is not None
    assert "no-such-nuclei-model" in result.error


@pytest.fixture
def fake_nn(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Stand-in for ``smartscope.nn`` (written elsewhere): load_model() gives a
    Gaussian denoiser and a segmenter that wraps the classical one."""
    calls: dict = {"loaded": [], "diameter_px": []}

    class Denoiser:
        def predict(self, image, *, diameter_px=None):
            return ndi.gaussian_filter(image.astype(np.float32), 1.0)

    class Segmenter:
        def predict(self, image, *, diameter_px=None):
            calls["diameter_px"].append(diameter_px)
            calls["input_dtype"] = image.dtype
            return segment_nuclei(image, pixel_size_um=0.65).astype(np.uint16)

    def load_model(name, **kwargs):
        calls["loaded"].append(name)
        if name == "broken":
            raise OSError("file is not a model")
        return {"denoise-small": Denoiser, "nuclei-small": Segmenter}[name]()

    module = types.ModuleType("smartscope.nn")
    module.load_model = load_model  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "smartscope.nn", module)
    return calls


def test_model_slot_runs_denoiser_then_segmenter(frames, fake_nn) -> None:
    settings = AnalysisSettings(
        segmenter="model",
        model="nuclei-small",
        denoise="denoise-small",
        save_denoised=True,
    )
    pipeline = AnalysisPipeline(settings)
    result = pipeline.analyse(frames[0])
    result2 = pipeline.analyse(frames[1])
    assert result.error is None
    assert result2.error is None
    assert fake_nn["loaded"] == ["denoise-small", "nuclei-small"]  # once each
    assert fake_nn["diameter_px"][0] == pytest.approx(12.0 / 0.65)
    assert fake_nn["input_dtype"] == np.float32  # segmented the denoised image
    assert result.denoised is not None
    assert result.denoised.dtype == np.float32
    np.testing.assert_array_equal(
        result.denoised, ndi.gaussian_filter(frames[0].image.astype(np.float32), 1.0)
    )
    assert result.labels is not None
    assert result.labels.dtype == np.int32
    assert len(result.objects) > 10
    # intensities are measured on the raw frame, not on the denoised one
    o = result.objects[0]
    assert o.max_intensity == frames[0].image[result.labels == o.label].max()


def test_a_model_that_fails_to_load_is_named(fake_nn) -> None:
    pipeline = AnalysisPipeline(AnalysisSettings(denoise="broken"))
    with pytest.raises(ModelLoadError, match=r"denoiser model 'broken'.*not a model"):
        pipeline.load_models()


def test_model_min_area_needs_a_segmenter_that_takes_it(fake_nn) -> None:
    """``model_min_area_um2`` is refused before anything runs: with the
    classical segmenter (settings) and with a model whose predict has no
    ``min_size_px`` (at load, naming the model)."""
    with pytest.raises(ValueError, match=r"model_min_area_um2.*segmenter='model'"):
        AnalysisSettings(model_min_area_um2=5.0)
    pipeline = AnalysisPipeline(
        AnalysisSettings(segmenter="model", model="nuclei-small", model_min_area_um2=5)
    )
    with pytest.raises(ModelLoadError, match=r"model_min_area_um2.*'nuclei-small'"):
        pipeline.load_models()


def test_model_min_area_keeps_nuclei_under_the_model_fragment_limit() -> None:
    """A protocol that states nuclei 1.8x their real size (so they measure
    0.31 of its typical area, under nuclei-seg's fragment limit of about 0.41)
    loses them to the model's post-processing; ``model_min_area_um2`` keeps
    them. Scored against the simulator's truth."""
    pytest.importorskip("torch")
    from smartscope.metrics import average_precision
    from smartscope.nn.simdata import equivalent_diameter_px
    from smartscope.sim import get_simulator

    with open_core(seed=3) as core:
        core.setConfig("Objective", "20x")
        core.waitForSystem()
        frame = snap_frame(core)
        truth = get_simulator(core).truth().labels
    real_um = equivalent_diameter_px(truth) * frame.pixel_size_um
    found = {}
    for lowered in (None, 10.0):
        settings = AnalysisSettings(
            segmenter="model",
            model="nuclei-seg",
            diameter_um=1.8 * real_um,
            min_area_um2=5.0,
            model_min_area_um2=lowered,
        )
        result = AnalysisPipeline(settings).analyse(frame)
        assert result.error is None, result.error
        found[lowered] = average_precision(truth, result.labels)[0.5]
    # measured: 17 true nuclei, AP@0.5 0.53 (9 objects) -> 0.94 (18)
    assert found[None] < 0.75
    assert found[10.0] >= 0.85


def test_signals_are_declared_with_docs() -> None:
    for name in ("frame_analysed", "frame_skipped", "analysis_failed"):
        assert "Emits" in getattr(AnalysisPipeline, name).description
    assert threading.current_thread() is threading.main_thread()


# ------------------------------------------------------- two stages (stages: 2)


def test_two_stages_need_a_local_denoiser_and_one_thread_each() -> None:
    from pydantic import ValidationError

    assert AnalysisSettings().stages == "auto"
    with pytest.raises(ValidationError, match="set `denoise`"):
        AnalysisSettings(stages=2)
    with pytest.raises(ValidationError, match="threads=2"):
        AnalysisSettings(stages=2, denoise="denoise-care", threads=2)
    with pytest.raises(ValidationError, match="executor='ray'"):
        AnalysisSettings(stages=2, denoise="denoise-care", executor="ray")
    with pytest.raises(ValidationError):
        AnalysisSettings(stages=3, denoise="denoise-care")


def test_two_stages_give_the_results_of_one_in_order(frames) -> None:
    """The same frames through the one-thread worker and through the
    two-stage pipeline: the same objects, tracks and denoised images, in
    order, each stage on its own thread with one model thread."""
    import torch

    before = torch.get_num_threads()
    got: dict[int, list[FrameResult]] = {}
    threads: dict[int, set[str]] = {1: set(), 2: set()}
    try:
        for stages in (1, 2):

            class Watched(AnalysisPipeline):
                def _segment(self, image, frame, _s=stages):  # type: ignore[no-untyped-def]
                    threads[_s].add(threading.current_thread().name)
                    return super()._segment(image, frame)

            out: list[FrameResult] = []
            with Watched(
                AnalysisSettings(
                    denoise="denoise-care",
                    threads=1,
                    stages=stages,
                    queue_size=16,
                    diameter_um=12,
                ),
                device="cpu",
                on_result=out.append,
            ) as p:
                for frame in series(frames, 7):
                    p.submit(frame)
            assert (p.submitted, p.analysed, p.skipped, p.failed) == (7, 7, 0, 0)
            assert not p.is_running
            got[stages] = out
    finally:
        torch.set_num_threads(before)
    assert threads == {1: {"smartscope-analysis"}, 2: {"smartscope-analysis-2"}}
    one, two = got[1], got[2]
    assert [r.frame_index for r in two] == list(range(7))
    for a, b in zip(one, two, strict=True):
        assert a.error is None
        assert b.error is None
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_allclose(a.denoised, b.denoised, rtol=1e-5, atol=1e-3)
        assert [o.track_id for o in a.objects] == [o.track_id for o in b.objects]
        assert b.extra["threads"] == 1
        assert set(b.extra["stages_ms"]) == set(a.extra["stages_ms"])


def test_stopping_two_stages_without_draining_skips_what_waits(frames) -> None:
    class Slow(AnalysisPipeline):
        def _segment(self, image, frame):  # type: ignore[no-untyped-def]
            gate.wait(30)
            return super()._segment(image, frame)

    gate = threading.Event()
    p = Slow(
        AnalysisSettings(denoise="denoise-care", stages=2, queue_size=16),
        device="cpu",
    )
    seen = Recorder(p)
    p.start()
    for frame in series(frames, 8):
        p.submit(frame)
    deadline = time.monotonic() + 30
    # the stages hold two frames: the second stage one (waiting at the gate),
    # the first stage the next, denoised, until the second takes it
    while p.pending > 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert p.pending == 6
    threading.Timer(0.2, gate.set).start()
    assert p.stop(drain=False)
    # every frame is accounted for once: analysed (those the stages held) or skipped
    assert p.analysed + p.skipped == p.submitted == 8
    assert sorted([r.frame_index for r in seen.results] + seen.skipped) == list(
        range(8)
    )
    assert 1 <= p.analysed <= 3
    assert not p.is_running


def test_auto_stages_are_two_where_they_were_measured_faster(monkeypatch) -> None:
    from smartscope.analysis import analyser

    care = {"denoise": "denoise-care"}
    for cores, settings, on_cpu, want in [
        (2, care, True, 2),
        (3, care, True, 2),
        (8, care, True, 1),  # several threads for one stage instead
        (1, care, True, 1),
        (2, {}, True, 1),  # nothing to run beside the segmenter
        (2, care, False, 1),  # models on a GPU
        (2, {**care, "threads": 2}, True, 1),
        (2, {**care, "stages": 1}, True, 1),
        (8, {**care, "stages": 2}, True, 2),  # asked for by name
    ]:
        monkeypatch.setattr(analyser.os, "cpu_count", lambda c=cores: c)
        s = AnalysisSettings(**settings)
        got = analyser._stages(s, s.denoise is not None, on_cpu)
        assert got == want, (cores, settings, on_cpu)


def test_each_stage_warms_its_own_model_on_its_own_thread() -> None:
    import torch

    calls: list[tuple[str, str]] = []

    class Watched(AnalysisPipeline):
        def _denoise(self, image, frame):  # type: ignore[no-untyped-def]
            calls.append(("denoise", threading.current_thread().name))
            return super()._denoise(image, frame)

        def _segment(self, image, frame):  # type: ignore[no-untyped-def]
            calls.append(("segment", threading.current_thread().name))
            return super()._segment(image, frame)

    before = torch.get_num_threads()
    p = Watched(AnalysisSettings(denoise="denoise-care", stages=2), device="cpu")
    try:
        p.start(warm_up=((64, 96), 0.65))
        assert set(calls) == {
            ("denoise", "smartscope-analysis"),
            ("segment", "smartscope-analysis-2"),
        }
        assert len(calls) == 6  # three calls each, before start() returned
        assert p.threads == 1
    finally:
        p.stop(drain=False)
        torch.set_num_threads(before)
