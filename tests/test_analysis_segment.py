"""Classical segmentation and measurement, scored against the simulator's truth."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from frames import assert_regionprops
from frames import snap_frame as snap
from smartscope.analysis import (
    estimate_background,
    filter_by_area,
    measure_objects,
    normalize_percentile,
    segment_nuclei,
)
from smartscope.hardware import open_core
from smartscope.sim import get_simulator

MIN_AREA_UM2 = 20.0  # the AnalysisSettings default


@pytest.fixture(scope="module")
def core() -> Iterator:
    with open_core(seed=1) as core:
        yield core


def iou_matrix(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, ...]:
    """IoU of every (predicted, true) label pair, and the pixel counts."""
    n_p, n_t = int(pred.max()) + 1, int(true.max()) + 1
    pairs = pred.astype(np.int64).ravel() * n_t + true.ravel()
    cont = np.bincount(pairs, minlength=n_p * n_t).reshape(n_p, n_t)
    area_p, area_t = cont.sum(1)[1:], cont.sum(0)[1:]
    inter = cont[1:, 1:]
    union = area_p[:, None] + area_t[None, :] - inter
    return inter / np.maximum(union, 1), area_p, area_t


def scored_frames(core, objective: str, positions) -> Iterator[tuple]:
    core.setConfig("Objective", objective)
    core.waitForSystem()
    try:
        for x, y in positions:
            core.setXYPosition(x, y)
            core.waitForSystem()
            frame = snap(core)
            yield frame, get_simulator(core).truth()
    finally:
        core.setConfig("Objective", "10x")
        core.setXYPosition(0.0, 0.0)
        core.waitForSystem()


def test_segmentation_matches_truth_at_10x(core) -> None:
    recall, precision, area_ratio = [], [], []
    for frame, truth in scored_frames(core, "10x", [(0, 0), (400, -300), (-600, 500)]):
        labels = segment_nuclei(
            frame.image, pixel_size_um=frame.pixel_size_um, min_area_um2=MIN_AREA_UM2
        )
        assert labels.dtype == np.int32
        assert labels.shape == frame.image.shape
        assert set(np.unique(labels)) == set(range(int(labels.max()) + 1))  # 0..N
        iou, area_p, area_t = iou_matrix(labels, truth.labels)
        # truth nuclei cut by the frame edge to a sliver cannot be found
        scorable = area_t * frame.pixel_size_um**2 >= MIN_AREA_UM2
        hit = iou >= 0.5
        recall += hit.any(0)[scorable].tolist()
        precision += hit.any(1).tolist()
        p, t = np.nonzero(hit)
        area_ratio += (area_p[p] / area_t[t]).tolist()
    assert len(recall) > 80
    assert np.mean(recall) >= 0.9
    assert np.mean(precision) >= 0.95
    area_ratio = np.array(area_ratio)
    assert abs(np.median(area_ratio) - 1) < 0.05
    assert np.mean(np.abs(area_ratio - 1) <= 0.15) >= 0.9


@pytest.mark.parametrize("objective", ["4x", "20x"])
def test_segmentation_scales_with_the_objective(core, objective: str) -> None:
    # the same settings (diameter in µm) work at 2.5x fewer and 2x more pixels/µm
    for frame, truth in scored_frames(core, objective, [(200, 100)]):
        labels = segment_nuclei(frame.image, pixel_size_um=frame.pixel_size_um)
        iou, _, area_t = iou_matrix(labels, truth.labels)
        scorable = area_t * frame.pixel_size_um**2 >= MIN_AREA_UM2
        assert scorable.sum() >= 1
        assert (iou >= 0.5).any(0)[scorable].mean() >= 0.85
        assert (iou >= 0.5).any(1).mean() >= 0.9


def test_centroids_and_areas_in_stage_units(core) -> None:
    """Centroids in stage µm land on the truth cells (also after a stage move)."""
    errors_um, area_ratio = [], []
    for frame, truth in scored_frames(core, "10x", [(150, -80), (-1200, 900)]):
        labels = segment_nuclei(frame.image, pixel_size_um=frame.pixel_size_um)
        table = measure_objects(labels, frame.image, frame)
        iou, _, area_t = iou_matrix(labels, truth.labels)
        h, w = truth.labels.shape
        cells = {c.id: c for c in truth.cells}
        for i, label in enumerate(table.label):
            t = int(np.argmax(iou[label - 1]))
            if iou[label - 1, t] < 0.5:
                continue
            rows, cols = np.nonzero(truth.labels == t + 1)
            if (
                rows.min() == 0
                or cols.min() == 0
                or rows.max() == h - 1
                or cols.max() == w - 1
            ):
                continue  # cut by the frame edge: its centroid is not the cell's
            cell = cells[t + 1]
            errors_um.append(
                np.hypot(table.x_um[i] - cell.x_um, table.y_um[i] - cell.y_um)
            )
            area_ratio.append(table.area_um2[i] / (area_t[t] * frame.pixel_size_um**2))
    errors_um = np.array(errors_um)
    assert errors_um.size >= 40
    assert np.median(errors_um) < 0.2
    assert np.mean(errors_um <= 1.0) >= 0.95
    assert np.mean(np.abs(np.array(area_ratio) - 1) <= 0.15) >= 0.9


def test_measurements_equal_regionprops(core) -> None:
    frame = snap(core)
    labels = segment_nuclei(frame.image, pixel_size_um=frame.pixel_size_um)
    table = measure_objects(labels, frame.image, frame)
    assert_regionprops(table, labels, frame.image, frame.pixel_size_um)
    x, y = frame.pixel_to_stage(float(table.row[0]), float(table.col[0]))
    assert (table.x_um[0], table.y_um[0]) == pytest.approx((x, y))


def test_dark_frame_has_no_objects(core) -> None:
    core.setProperty("Laser", "Power_mW", 0.0)
    try:
        frame = snap(core)
    finally:
        core.setProperty("Laser", "Power_mW", 10.0)
    labels = segment_nuclei(frame.image, pixel_size_um=frame.pixel_size_um)
    assert labels.max() == 0
    assert len(measure_objects(labels, frame.image, frame)) == 0


def test_background_estimate_matches_truth(core) -> None:
    frame = snap(core)
    truth = get_simulator(core).truth()
    background, noise = estimate_background(frame.image)
    expected = float(np.median(truth.expected_adu[truth.labels == 0]))
    assert background == pytest.approx(expected, rel=0.05)
    assert 0 < noise < 0.5 * (np.percentile(frame.image, 99) - background)


@pytest.mark.parametrize("seed", range(4))
def test_a_cameras_background_from_a_histogram_is_the_samples(core, seed) -> None:
    """8- and 16-bit frames take the background from one histogram of the
    sample (clippings as counts): exactly what the float sample's partial
    sorts give, on flat, noisy and crowded frames and a simulator frame."""
    rng = np.random.default_rng(seed)
    frames = [snap(core).image] if seed == 0 else []
    for k in range(40):
        h, w = rng.integers(8, 700, size=2)
        img = rng.poisson(rng.uniform(0, 3000), (h, w)).astype(np.int64)
        if k % 3 == 0:  # bright objects over up to 40% of the field
            img[rng.random((h, w)) < rng.uniform(0, 0.4)] += rng.integers(0, 20000)
        img = np.clip(img, 0, 65535).astype(np.uint16)
        if k % 7 == 0:
            img = (img // 256).astype(np.uint8)
        if k % 11 == 0:
            img[:] = rng.integers(0, 255)
        frames.append(img)
    for img in frames:
        assert img.dtype in (np.uint8, np.uint16)
        assert estimate_background(img) == estimate_background(img.astype(np.float32))


def test_normalize_percentile_and_area_filter() -> None:
    image = np.arange(10_000, dtype=np.uint16).reshape(100, 100)
    out = normalize_percentile(image, 1, 99, clip=True)
    assert out.dtype == np.float32
    assert out.min() == 0.0
    assert out.max() == 1.0
    assert abs(float(np.median(out)) - 0.5) < 0.01
    labels = np.zeros((20, 20), np.int32)
    labels[0:2, 0:2] = 7  # 4 px
    labels[5:15, 5:15] = 3  # 100 px
    kept = filter_by_area(labels, pixel_size_um=0.5, min_area_um2=2.0)  # 8 px minimum
    assert kept.dtype == np.int32
    assert kept.max() == 1
    assert (kept == 1).sum() == 100


@pytest.mark.parametrize("seed", range(4))
def test_filter_by_area_is_the_whole_frame_definition(seed):
    """Counting and renumbering only the foreground pixels gives what a
    bincount and a table lookup over the whole frame give: any numbering,
    gaps, dtypes, objects dropped or none; and labels already 1..N and all
    kept come back as they are."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((64, 80), np.int64)
    for lab in rng.choice(np.arange(1, 200), size=30, replace=False):
        r, c = rng.integers(0, 60), rng.integers(0, 76)
        h, w = rng.integers(1, 9, size=2)
        labels[r : r + h, c : c + w] = lab
    dtype = (np.int32, np.uint16, np.int64, np.uint8)[seed]
    labels = labels.astype(dtype)
    for lo, hi in ((0.0, np.inf), (3.0, np.inf), (2.0, 10.0), (1e6, np.inf)):
        got = filter_by_area(
            labels, pixel_size_um=0.5, min_area_um2=lo, max_area_um2=hi
        )
        sizes = np.bincount(labels.ravel().astype(np.int64))
        px = sizes * 0.25
        keep = (px >= max(0.25, lo)) & (px <= hi)
        keep[0] = False
        lut = np.zeros(sizes.size, np.int32)
        lut[keep] = np.arange(1, keep.sum() + 1)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, lut[labels])
    sequential = filter_by_area(labels, pixel_size_um=0.5)
    assert filter_by_area(sequential, pixel_size_um=0.5) is sequential
