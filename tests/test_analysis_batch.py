"""Frames analysed as a batch (``analysis.batch_frames``): the models run
once for several frames (on a GPU: one copy, one network call), while every
frame gets the result it gets alone, in order, with its own tracks."""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest
from pydantic import ValidationError

from frames import snap_frame
from smartscope.analysis import (
    AnalysisPipeline,
    AnalysisSettings,
    FrameInput,
    FrameResult,
)
from smartscope.analysis.analyser import FrameAnalyser
from smartscope.hardware import open_core

MODELS = {"denoise": "denoise-care", "segmenter": "model", "model": "nuclei-seg"}


@pytest.fixture(scope="module")
def frames() -> list[FrameInput]:
    """Four positions of the simulated sample, two time points each."""
    out = []
    with open_core(seed=5) as core:
        for t in range(2):
            for i, (x, y) in enumerate([(0, 0), (400, 0), (0, 400), (400, 400)]):
                core.setXYPosition(float(x), float(y))
                core.waitForSystem()
                f = snap_frame(core, 4 * t + i)
                out.append(dataclasses.replace(f, position=f"p{i}", t_s=float(t)))
    return out


def _same(a: FrameResult, b: FrameResult) -> None:
    assert a.error is None
    assert b.error is None
    assert a.frame.frame_index == b.frame.frame_index
    assert len(a.objects) == len(b.objects) > 5
    assert [o.track_id for o in a.objects] == [o.track_id for o in b.objects]
    np.testing.assert_allclose(
        [o.x_um for o in a.objects], [o.x_um for o in b.objects], atol=1e-6
    )
    np.testing.assert_array_equal(a.labels, b.labels)


@pytest.mark.parametrize("on_device", [False, True])
def test_a_batch_gives_every_frame_its_own_result(frames, on_device) -> None:
    """Four positions at a time through ``analyse_batch``, against the same
    frames one by one: the same labels, objects and track ids (the device
    path on the CPU batches the networks; the host path goes frame by
    frame inside the models)."""
    settings = AnalysisSettings(**MODELS, precision="float32")
    alone, together = FrameAnalyser(settings), FrameAnalyser(settings)
    for a in (alone, together):
        a.load_models()
        a._denoiser.keep_on_device = a._segmenter.keep_on_device = on_device
    uploads = []
    for a in (alone, together):  # what the segmenter copies to its device
        real = a._segmenter.predictor.to_device
        a._segmenter.predictor.to_device = lambda image, real=real: (
            uploads.append(image.shape) or real(image)
        )
    one_by_one = [alone.analyse(f) for f in frames]
    batched = together.analyse_batch(frames[:4]) + together.analyse_batch(frames[4:])
    # on the device path the denoised frames stay there for the segmenter;
    # the host path hands the network each normalised image
    assert (uploads == []) == on_device
    for a, b in zip(one_by_one, batched, strict=True):
        _same(a, b)
        assert b.extra["batch"] == 4
        assert "batch" not in a.extra
        assert b.denoised is not None
        np.testing.assert_allclose(a.denoised, b.denoised, rtol=1e-4, atol=0.5)


class _FailingAnalyser(FrameAnalyser):
    """The real analyser whose batched models raise (as on a card out of
    memory), and whose segmenter fails on frame 2 alone."""

    def _denoise_batch(self, images):
        raise RuntimeError("batch too large")

    def _segment_batch(self, images, frame):
        raise RuntimeError("batch too large")

    def _segment(self, image, frame):
        if frame.frame_index == 2:
            raise RuntimeError("segmenter exploded")
        return super()._segment(image, frame)


def test_a_failed_batch_is_redone_frame_by_frame(frames) -> None:
    """When a batch call raises, each frame is analysed again on its own:
    only the frame that fails alone fails, and its neighbours get the
    results they get without batches."""
    settings = AnalysisSettings(**MODELS, precision="float32")
    results = _FailingAnalyser(settings).analyse_batch(frames[:4])
    assert [r.frame.frame_index for r in results] == [0, 1, 2, 3]
    assert results[2].error == "RuntimeError: segmenter exploded"
    assert results[2].labels is None
    reference = FrameAnalyser(settings)
    for i in (0, 1, 3):
        _same(reference.analyse(frames[i]), results[i])


def test_the_thread_tuner_hears_once_per_batch(frames) -> None:
    """A batch is one measurement of the models' time (per frame), not one
    per frame: else the tuner's tries were overwritten within a batch."""
    analyser = FrameAnalyser(
        AnalysisSettings(**MODELS, batch_frames=4, stages=1), device="cpu"
    )
    analyser.load_models()
    tuner = analyser.thread_tuner
    assert tuner is not None
    heard: list[tuple[int, float]] = []
    record = tuner.record
    tuner.record = lambda n, ms: heard.append((n, ms)) or record(n, ms)
    analyser.analyse_batch(frames[:4])
    analyser.analyse_batch(frames[4:])
    assert len(heard) == 2
    assert all(ms > 0 for _, ms in heard)


def test_frames_of_other_shapes_go_one_by_one(frames) -> None:
    """A frame that is not (Y, X), or of another size, is not batched with
    the rest: it fails alone, or is analysed alone."""
    analyser = FrameAnalyser(AnalysisSettings(**MODELS, precision="float32"))
    bad = dataclasses.replace(frames[1], image=frames[1].image[None])
    results = analyser.analyse_batch([frames[0], bad, frames[2]])
    assert [r.frame.frame_index for r in results] == [0, 1, 2]
    assert "(Y, X)" in results[1].error
    assert results[0].error is None
    assert results[2].error is None
    small = dataclasses.replace(frames[3], image=frames[3].image[:256, :256])
    mixed = analyser.analyse_batch([frames[4], small])
    assert all(r.error is None for r in mixed)
    assert all("batch" not in r.extra for r in mixed)


class _HeldPipeline(AnalysisPipeline):
    """The real pipeline, its first frame held until ``release`` is set,
    so the frames behind it queue up."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.entered = threading.Event()
        self.release = threading.Event()

    def analyse(self, frame: FrameInput) -> FrameResult:
        if frame.frame_index == 0:
            self.entered.set()
            self.release.wait(30)
        return super().analyse(frame)


def test_the_worker_takes_the_waiting_frames_as_one_batch(frames) -> None:
    """``batch_frames: 4``: while frame 0 is analysed, frames 1-7 queue;
    they are then taken four and three at a time, and the results come in
    order, counted once each, with the tracks a one-by-one run gives."""
    settings = AnalysisSettings(**MODELS, batch_frames=4, queue_size=16)
    pipeline = _HeldPipeline(settings, device="cpu")
    results: list[FrameResult] = []
    pipeline.frame_analysed.connect(results.append)
    pipeline.start()
    assert pipeline.batch_frames == 4
    for f in frames:
        pipeline.submit(dataclasses.replace(f, t_frame=time.perf_counter()))
        if f.frame_index == 0:
            assert pipeline.entered.wait(30)  # the worker holds frame 0
    pipeline.release.set()
    assert pipeline.stop(drain=True)
    assert [r.frame.frame_index for r in results] == list(range(8))
    assert (pipeline.analysed, pipeline.skipped, pipeline.failed) == (8, 0, 0)
    assert [r.extra.get("batch", 1) for r in results] == [1, 4, 4, 4, 4, 3, 3, 3]
    reference = FrameAnalyser(settings, device="cpu")
    for a, b in zip((reference.analyse(f) for f in frames), results, strict=True):
        _same(a, b)


def test_batch_frames_auto_is_one_on_the_cpu() -> None:
    analyser = FrameAnalyser(AnalysisSettings(**MODELS), device="cpu")
    analyser.load_models()
    assert analyser.batch_frames == 1
    classical = FrameAnalyser(AnalysisSettings(batch_frames=3), device="cpu")
    classical.load_models()
    assert classical.batch_frames == 3


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"batch_frames": 0}, "batch_frames"),
        ({"batch_frames": 4, "stages": 2}, "stages=2"),
        ({"batch_frames": 4, "executor": "ray"}, "executor='ray'"),
        (
            {"batch_frames": 4, "denoise": {"model": "denoise-n2v", "adapt": True}},
            "denoise.adapt",
        ),
    ],
)
def test_batch_settings_are_checked(extra, words) -> None:
    with pytest.raises(ValidationError, match=words):
        AnalysisSettings(**{**MODELS, **extra})
    AnalysisSettings(**MODELS, batch_frames=1, stages=2)  # one at a time: fine


def test_results_say_where_the_models_time_went(frames) -> None:
    """``model_stages_ms``: the models' steps (transfer only on the device
    path), each a part of the denoise and segment stages, also as a
    batch's share."""
    analyser = FrameAnalyser(AnalysisSettings(**MODELS, precision="float32"))
    r = analyser.analyse(frames[0])
    steps, stages = r.extra["model_stages_ms"], r.extra["stages_ms"]
    assert set(steps) == {
        "normalise",
        "denoise_network",
        "segment_network",
        "postprocess",
    }
    assert all(v > 0 for v in steps.values())
    assert steps["denoise_network"] <= stages["denoise"]
    assert steps["segment_network"] <= stages["segment"]
    assert sum(steps.values()) <= stages["denoise"] + stages["segment"] + 1e-6
    analyser._denoiser.keep_on_device = analyser._segmenter.keep_on_device = True
    batch = analyser.analyse_batch(frames[:4])
    steps = batch[0].extra["model_stages_ms"]
    assert steps["transfer"] > 0
    assert (
        sum(steps.values())
        <= (
            batch[0].extra["stages_ms"]["denoise"]
            + batch[0].extra["stages_ms"]["segment"]
        )
        + 1e-6
    )
    classical = FrameAnalyser(AnalysisSettings()).analyse(frames[0])
    assert "model_stages_ms" not in classical.extra


def test_analysers_sharing_a_thread_each_use_their_own_thread_count(frames) -> None:
    """torch's thread count belongs to the calling thread: two analysers
    taking turns on one thread (as the scaling benchmark's sizes do) each
    run their frames with the count they were set to."""
    import torch

    one, two = (
        FrameAnalyser(AnalysisSettings(**MODELS, threads=n, stages=1), device="cpu")
        for n in (1, 2)
    )
    seen = []
    for analyser in (one, two, one, two):
        result = analyser.analyse(frames[0])
        assert result.error is None
        seen.append((result.extra["threads"], torch.get_num_threads()))
    assert seen == [(1, 1), (2, 2), (1, 1), (2, 2)]


@pytest.mark.parametrize(
    ("batch_frames", "gpu", "want"),
    [(1, True, []), (3, True, [2, 2, 3, 3]), (3, False, [])],
)
def test_the_warm_up_takes_each_batch_size_twice_on_a_gpu(batch_frames, gpu, want):
    """On a GPU a network's second call at a new input shape records the
    shape's CUDA graph, so the warm-up before the first frame takes each
    batch size the analysis may form, 2 to ``batch_frames``, twice through
    both models (here the device path on the CPU, the analysis told its
    models are on a GPU); on the CPU, where nothing is recorded, it does
    not. The graphs' buffers are sized for the largest batch."""
    settings = AnalysisSettings(
        **MODELS, precision="float32", batch_frames=batch_frames
    )
    analyser = FrameAnalyser(settings, device="cpu")
    analyser.load_models()
    analyser._models_on_cuda = lambda: gpu  # type: ignore[method-assign]
    sizes: dict[str, list[int]] = {"denoise": [], "segment": []}
    for role, model in (
        ("denoise", analyser._denoiser),
        ("segment", analyser._segmenter),
    ):
        assert model.predictor.graph_batch_frames == batch_frames
        model.keep_on_device = True
        # the segmenter's labels stay on its device for the measurements
        method = "predict_batch" if role == "denoise" else "predict_batch_t"
        real = getattr(model, method)

        def spy(images, *args, _real=real, _role=role, **kw):
            if len(images) > 1:  # (single frames take it too on the device path)
                sizes[_role].append(len(images))
            return _real(images, *args, **kw)

        setattr(model, method, spy)
    analyser.warm_up((128, 128), pixel_size_um=0.65)
    assert sizes == {"denoise": want, "segment": want}


def test_cuda_graphs_setting_reaches_the_networks() -> None:
    """``cuda_graphs`` (default on) is handed to each model's predictor,
    where it means this project's U-Nets (an adapting denoiser's weights
    change every version: none); on the CPU no graph is ever recorded."""
    on = FrameAnalyser(AnalysisSettings(**MODELS), device="cpu")
    off = FrameAnalyser(AnalysisSettings(**MODELS, cuda_graphs=False), device="cpu")
    for analyser, want in ((on, True), (off, False)):
        analyser.load_models()
        for model in (analyser._denoiser, analyser._segmenter):
            p = model.predictor
            assert p.own_network
            # int8 in ONNX Runtime on the CPU: not a torch network
            assert not p.wants_cuda_graphs
            assert p.cuda_graphs is (None if want else False)
            assert not p.uses_cuda_graphs  # the CPU
    on._denoiser.predictor.run(np.zeros((64, 64), np.float32))
    assert on._denoiser.predictor.recorded_shapes == []
    adapting = FrameAnalyser(
        AnalysisSettings(
            segmenter="model",
            model="nuclei-seg",
            denoise={"model": "denoise-n2v", "adapt": True},
            precision="float32",
        ),
        device="cpu",
    )
    adapting.load_models()
    assert adapting._denoiser.predictor.cuda_graphs is False
    assert adapting._segmenter.predictor.cuda_graphs is None
    assert adapting._segmenter.predictor.wants_cuda_graphs  # float32: torch
    with pytest.raises(ValidationError, match="cuda_graphs"):
        AnalysisSettings(**MODELS, cuda_graphs="sometimes")
