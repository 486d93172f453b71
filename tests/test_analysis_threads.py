"""The models' CPU threads, chosen from the frames' own times (ThreadTuner),
fed made-up times: no wall-clock timing is asserted."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

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
    from smartscope.analysis.result import FrameInput

    before = torch.get_num_threads()
    try:
        a = FrameAnalyser(
            AnalysisSettings(denoise="denoise-care", diameter_um=12), device="cpu"
        )
        img = np.random.default_rng(0).poisson(200, (128, 128)).astype(np.uint16)
        seen = []
        for k in range(3):
            f = FrameInput(
                image=img,
                frame_index=k,
                position="a",
                stage_x_um=0,
                stage_y_um=0,
                z_um=0,
                pixel_size_um=0.65,
                exposure_ms=20,
                t_frame=0.0,
                t_s=float(k),
            )
            r = a.analyse(f)
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
