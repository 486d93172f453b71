"""The analysis fed at a camera's pace (``smartscope.bench_paced``): the
GPU targets' measurement, run here on the CPU through the same code."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from smartscope.bench_paced import measure_paced, render_frames

#: a small run on the CPU: 256² frames, 4 a second, the fast denoiser
SMALL = {"size": 256, "rate_hz": 4, "device": "cpu", "denoise": "denoise-care-fast"}


def test_frames_fed_at_a_pace_are_all_accounted_for_and_their_nuclei_found() -> None:
    r = measure_paced(frames=6, distinct=3, **SMALL)
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


def test_with_store_every_frame_and_result_is_written_as_in_a_run(tmp_path) -> None:
    """``store``: each frame written before it is handed over (its time taken
    before the write), each result's rows and images by the results thread;
    all of it on disk, where a run would put it."""
    import csv

    from smartscope.io.read_images import frames_on_disk, list_images

    out = tmp_path / "run"
    r = measure_paced(frames=5, distinct=2, store=True, store_dir=out, **SMALL)
    assert r["settings"]["store"] is True
    assert r["settings"]["images_kept"] == ["denoised", "labels"]
    assert sorted(i.kind for i in list_images(out)) == ["denoised", "raw"]
    assert r["raw_write_ms"]["n"] == 5
    assert r["storage_ms"]["n"] == r["analysed"] >= 1
    assert r["storage_waited_s"] >= 0
    assert frames_on_disk(out) == 5
    with (out / "measurements.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {int(row["frame"]) for row in rows} <= set(range(5))
    assert len(rows) >= r["analysed"]  # every analysed frame finds nuclei here
    root = zarr.open_group(str(out / "data.ome.zarr"), mode="r")
    labels = root["0/labels/nuclei/0"]
    assert labels.shape[0] == 5
    assert int(np.asarray(labels[r["analysed"] - 1]).max()) > 0
