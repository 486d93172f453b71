"""The models' CPU threads, chosen from the frames' own times (ThreadTuner),
fed made-up times: no wall-clock timing is asserted."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from frames import frame_of
from smartscope.analysis.settings import AnalysisSettings
from smartscope.analysis.threads import ThreadTuner, thread_candidates


def _drive(tuner: ThreadTuner, cost: dict[int, float], frames: int) -> list[int]:
    used = []
    for _ in range(frames):
        n = tuner.threads()
        used.append(n)
        tuner.record(n, cost[n])
    return used


def test_candidates_are_powers_of_two_up_to_the_cores() -> None:
    assert thread_candidates(1) == (1,)
    assert thread_candidates(2) == (1, 2)
    assert thread_candidates(6) == (1, 2, 4, 6)
    assert thread_candidates(64) == (1, 2, 4, 8)


def test_each_count_is_tried_then_the_fastest_is_kept() -> None:
    t = ThreadTuner((1, 2), probe_every=50)
    used = _drive(t, {1: 90.0, 2: 60.0}, 40)
    assert used[:2] == [2, 1]  # the most threads first, then the other
    assert set(used[2:]) == {2}
    assert t.best == 2


def test_a_busy_machine_switches_to_one_thread_and_back_when_it_is_quiet() -> None:
    t = ThreadTuner((1, 2), probe_every=20)
    _drive(t, {1: 90.0, 2: 60.0}, 10)
    # two CPU-bound processes start: two threads collapse, one holds
    busy = {1: 450.0, 2: 2600.0}
    used = _drive(t, busy, 30)
    assert used[0] == 2  # the first slow frame ...
    assert used[1] == 1  # ... makes the next one a try of one thread
    assert used[2:].count(1) >= 25  # and one thread it stays, but for tries
    assert t.best == 1
    # quiet again: the next periodic try of two threads wins it back
    used = _drive(t, {1: 90.0, 2: 60.0}, 30)
    assert used[-5:] == [2] * 5
    assert t.best == 2


def test_tries_that_lose_come_ever_more_rarely() -> None:
    """Beside busy processes, every try of two threads is a slow frame that
    the frames behind it wait for: tries that lose back off."""
    busy = {1: 450.0, 2: 2600.0}
    t = ThreadTuner((1, 2), probe_every=50, max_probe_every=800)
    _drive(t, {1: 90.0, 2: 60.0}, 10)
    used = _drive(t, busy, 3000)
    # every 50 frames it would be 60 tries; backing off 50, 100, 200, 400,
    # 800, 800 ... it is a handful
    assert used.count(2) <= 8
    assert t.wait == 800
    assert used[-100:].count(1) >= 99
    # the machine gets quiet: one thread suddenly much faster than its
    # mean is a change of state, tried at once and won back
    used = _drive(t, {1: 90.0, 2: 60.0}, 5)
    assert used[-3:] == [2, 2, 2]
    assert t.wait == 50


def test_a_try_that_wins_resets_the_wait() -> None:
    t = ThreadTuner((1, 2), probe_every=10, max_probe_every=80)
    _drive(t, {1: 100.0, 2: 60.0}, 2)
    _drive(t, {1: 100.0, 2: 130.0}, 200)  # two threads slowly got worse
    assert t.best == 1
    assert t.wait == 80
    better = {1: 100.0, 2: 70.0}  # and better again
    for k in range(81):  # noqa: B007 (k read after the loop): the next try comes within the longest wait ...
        n = t.threads()
        t.record(n, better[n])
        if n == 2:
            break
    assert n == 2
    assert k <= 80
    assert t.best == 2
    assert t.wait == 10
    assert _drive(t, better, 9) == [2] * 9


def test_one_candidate_is_always_used() -> None:
    t = ThreadTuner((1,))
    assert set(_drive(t, {1: 50.0}, 5)) == {1}


def test_threads_setting_is_validated() -> None:
    assert AnalysisSettings().threads == "auto"
    assert AnalysisSettings(threads=1).threads == 1
    for bad in (0, -1, "many"):
        with pytest.raises(ValidationError):
            AnalysisSettings(threads=bad)


def test_the_analyser_reports_the_threads_its_models_used() -> None:
    import torch

    from smartscope.analysis.analyser import FrameAnalyser

    before = torch.get_num_threads()
    try:
        a = FrameAnalyser(
            AnalysisSettings(denoise="denoise-care", diameter_um=12, stages=1),
            device="cpu",
        )
        img = np.random.default_rng(0).poisson(200, (128, 128)).astype(np.uint16)
        seen = []
        for k in range(3):
            r = a.analyse(frame_of(img, k))
            assert r.error is None
            seen.append(r.extra["threads"])
        assert set(seen) <= set(thread_candidates())
        assert a.thread_tuner is not None
        fixed = FrameAnalyser(
            AnalysisSettings(denoise="denoise-care", threads=1), device="cpu"
        )
        fixed.load_models()
        assert fixed.threads == 1
        assert fixed.thread_tuner is None
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_warm_up_runs_each_thread_count_on_the_worker_before_the_first_frame() -> None:
    """``start(warm_up=...)`` runs the models at the camera's frame size at
    every thread count on the worker thread itself, seeds the tuner, touches
    no track, and returns only when done."""
    import threading

    import torch

    from smartscope.analysis.pipeline import AnalysisPipeline

    calls: list[tuple[str, int, tuple[int, int]]] = []

    class Watched(AnalysisPipeline):
        def _denoise(self, image, frame):  # type: ignore[no-untyped-def]
            calls.append(
                (threading.current_thread().name, torch.get_num_threads(), image.shape)
            )
            return super()._denoise(image, frame)

    before = torch.get_num_threads()
    pipe = Watched(
        AnalysisSettings(denoise="denoise-care", diameter_um=12, stages=1),
        device="cpu",
    )
    try:
        pipe.start(warm_up=((96, 128), 0.65))
        # done before start() returned: three calls per thread count
        tuner = pipe.thread_tuner
        assert tuner is not None
        assert len(calls) == 3 * len(tuner.candidates)
        assert {c[0] for c in calls} == {"smartscope-analysis"}
        assert {c[1] for c in calls} == set(tuner.candidates)
        assert {c[2] for c in calls} == {(96, 128)}
        assert set(tuner.mean_ms) == set(tuner.candidates)
        assert pipe.threads == tuner.threads()
        assert pipe._trackers == {}
    finally:
        pipe.stop(drain=False)
        torch.set_num_threads(before)


def test_a_failed_warm_up_is_logged_and_the_frames_are_analysed(caplog) -> None:  # type: ignore[no-untyped-def]
    from smartscope.analysis.pipeline import AnalysisPipeline

    class Broken(AnalysisPipeline):
        def warm_up(self, shape, *, pixel_size_um, stage="both"):  # type: ignore[no-untyped-def]
            raise RuntimeError("no memory for the warm-up")

    pipe = Broken(AnalysisSettings(diameter_um=12))
    done = []
    pipe.frame_analysed.connect(done.append)
    img = np.random.default_rng(0).poisson(200, (64, 64)).astype(np.uint16)
    with caplog.at_level("WARNING"):
        pipe.start(warm_up=((64, 64), 0.65))
    pipe.submit(frame_of(img))
    assert pipe.stop(drain=True)
    assert "no memory for the warm-up" in caplog.text
    assert len(done) == 1
    assert done[0].error is None
