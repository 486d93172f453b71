"""The analysis fed at a camera's pace (``smartscope.bench_paced``): the
GPU targets' measurement, run here on the CPU through the same code."""

from __future__ import annotations

import pytest

from smartscope.bench_paced import measure_paced, render_frames


def test_frames_fed_at_a_pace_are_all_accounted_for_and_their_nuclei_found() -> None:
    r = measure_paced(
        size=256,
        rate_hz=4,
        frames=6,
        device="cpu",
        denoise="denoise-care-fast",
        distinct=3,
    )
    assert r["device"] == "cpu"
    assert r["submitted"] == 6
    assert r["analysed"] + r["skipped"] == 6  # none lost without a count
    assert r["analysed"] >= 1
    assert r["failed"] == 0
    lat = r["frame_to_result_ms"]
    assert lat["n"] == r["analysed"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert set(r["stages_ms"]) >= {"denoise", "segment", "measure", "track"}
    assert r["tick_late_ms"]["max"] >= 0
    # the models find the nuclei the simulator drew (at 256² a few touch the
    # border and fall under the size limit there)
    truth = r["truth_nuclei_per_frame"]
    assert truth >= 5
    assert abs(r["objects_per_frame"] - truth) <= 0.25 * truth


def test_the_frames_move_and_the_truth_counts_them() -> None:
    frames, nuclei = render_frames(256, 2)
    assert [f.shape for f in frames] == [(256, 256), (256, 256)]
    assert (frames[0] != frames[1]).any()  # the sample moved (and new noise)
    assert all(n > 0 for n in nuclei)


@pytest.mark.parametrize(("rate", "frames"), [(0, 5), (10, 0)])
def test_a_pace_that_cannot_be_kept_is_refused(rate: float, frames: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        measure_paced(rate_hz=rate, frames=frames, device="cpu")
