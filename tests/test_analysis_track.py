"""Tracking: synthetic cases for the rules, a simulated time-lapse for the whole."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from frames import snap_frame
from smartscope.analysis import (
    AnalysisPipeline,
    AnalysisSettings,
    Tracker,
    TrackIdCounter,
)
from smartscope.hardware import open_core
from smartscope.sim import ScenePreset, get_simulator


def test_gap_closing_keeps_the_id_for_max_gap_frames() -> None:
    tracker = Tracker(max_step_um=5.0, max_gap_frames=2)
    here, nowhere = ([10.0], [20.0]), ([], [])
    (first,) = tracker.update(*here)
    tracker.update(*nowhere)
    tracker.update(*nowhere)
    assert tracker.update(*here).tolist() == [first]  # missed 2 frames: same track
    for _ in range(3):
        tracker.update(*nowhere)
    assert tracker.n_tracks == 0
    (second,) = tracker.update(*here)  # missed 3 frames: a new track
    assert second != first


def test_a_link_longer_than_max_step_starts_a_new_track() -> None:
    tracker = Tracker(max_step_um=5.0, predict_velocity=False)
    a, b = tracker.update([0.0, 100.0], [0.0, 0.0])
    ids = tracker.update([4.0, 106.0], [0.0, 0.0])  # 4 µm ok, 6 µm too far
    assert ids[0] == a
    assert ids[1] not in (a, b)


def test_assignment_is_global_not_greedy() -> None:
    tracker = Tracker(max_step_um=4.0, predict_velocity=False)
    a, b = tracker.update([0.0, 5.0], [0.0, 0.0])
    # greedy nearest-neighbour links b to the object at 3 µm (2 µm away) and
    # leaves a nothing within reach; the assignment links both
    ids = tracker.update([3.0, 8.5], [0.0, 0.0])
    assert ids.tolist() == [a, b]


def test_links_are_the_optimal_assignment_in_a_crowd() -> None:
    """Same number of links and same total distance as one dense assignment
    over all tracks and objects (the tracker solves it group by group)."""
    rng = np.random.default_rng(7)
    x0, y0 = rng.uniform(0, 300, 400), rng.uniform(0, 300, 400)
    x1, y1 = x0 + rng.normal(0, 4, 400), y0 + rng.normal(0, 4, 400)
    keep = rng.random(400) < 0.9  # some cells leave, others arrive
    x1 = np.concatenate([x1[keep], rng.uniform(0, 300, 30)])
    y1 = np.concatenate([y1[keep], rng.uniform(0, 300, 30)])
    tracker = Tracker(max_step_um=10.0, predict_velocity=False)
    first = tracker.update(x0, y0)
    ids = tracker.update(x1, y1)
    linked = np.flatnonzero(np.isin(ids, first))
    track_index = ids[linked] - first[0]
    got = np.hypot(x0[track_index] - x1[linked], y0[track_index] - y1[linked])

    dist = np.hypot(x0[:, None] - x1[None, :], y0[:, None] - y1[None, :])
    allowed = dist <= 10.0
    r, c = linear_sum_assignment(np.where(allowed, dist, 1e9))
    want = dist[r, c][allowed[r, c]]
    assert got.size == want.size
    assert got.max() <= 10.0
    assert got.sum() == pytest.approx(want.sum(), rel=1e-9)


@pytest.mark.parametrize("seed", range(6))
def test_small_groups_solved_together_are_optimal(seed) -> None:
    """Fields where most crowded groups are of two tracks and two objects
    or fewer (solved all at once, not one assignment each): as many links
    and the same total length as one dense assignment over everything."""
    from smartscope.analysis.track import _link

    rng = np.random.default_rng(seed)
    n, m = rng.integers(20, 150, size=2)
    span = rng.uniform(60, 400)
    px, py = rng.uniform(0, span, n), rng.uniform(0, span, n)
    x, y = rng.uniform(0, span, m), rng.uniform(0, span, m)
    step = rng.uniform(5, 25)
    rows, cols = _link(px, py, x, y, step)
    assert len(set(rows.tolist())) == rows.size  # each track and object once
    assert len(set(cols.tolist())) == cols.size
    got = np.hypot(px[rows] - x[cols], py[rows] - y[cols])
    dist = np.hypot(px[:, None] - x[None, :], py[:, None] - y[None, :])
    allowed = dist <= step
    r, c = linear_sum_assignment(np.where(allowed, dist, 1e9))
    want = dist[r, c][allowed[r, c]]
    assert got.size == want.size
    assert got.max(initial=0.0) <= step
    assert got.sum() == pytest.approx(want.sum(), rel=1e-9)


def test_velocity_prediction_bridges_skipped_frames() -> None:
    # an object moving at 2 µm/s, then a frame 3 s after the last one
    times, xs = [0.0, 1.0, 2.0, 5.0], [0.0, 2.0, 4.0, 10.0]
    for predict, same in ((True, True), (False, False)):
        tracker = Tracker(max_step_um=3.0, predict_velocity=predict)
        ids = [
            int(tracker.update([x], [0.0], t_s=t)[0])
            for t, x in zip(times, xs, strict=True)
        ]
        assert ids[:3] == [ids[0]] * 3
        assert (ids[3] == ids[0]) is same


def test_track_ids_are_positive_and_unique_across_positions() -> None:
    counter = TrackIdCounter()
    p0, p1 = Tracker(ids=counter), Tracker(ids=counter)
    ids0 = p0.update([0.0, 50.0], [0.0, 0.0])
    ids1 = p1.update([0.0, 50.0], [0.0, 0.0])  # same coordinates, other position
    both = np.concatenate([ids0, ids1])
    assert (both > 0).all()
    assert np.unique(both).size == 4
    assert p0.update([1.0, 51.0], [0.0, 0.0]).tolist() == ids0.tolist()


@pytest.fixture(scope="module")
def core() -> Iterator:
    with open_core(seed=3) as core:
        yield core


def truth_id_per_object(labels: np.ndarray, truth_labels: np.ndarray) -> dict[int, int]:
    """label -> truth cell id, for objects overlapping one cell with IoU >= 0.5."""
    n_p, n_t = int(labels.max()) + 1, int(truth_labels.max()) + 1
    cont = np.bincount(
        labels.astype(np.int64).ravel() * n_t + truth_labels.ravel(),
        minlength=n_p * n_t,
    ).reshape(n_p, n_t)
    union = cont.sum(1)[:, None] + cont.sum(0)[None, :] - cont
    iou = cont / np.maximum(union, 1)
    out = {}
    for label in range(1, n_p):
        t = int(np.argmax(iou[label, 1:])) + 1
        if iou[label, t] >= 0.5:
            out[label] = t
    return out


def track_time_lapse(
    core, settings: AnalysisSettings, n_frames: int = 10
) -> tuple[int, int]:
    """A dense, motile sample imaged every 2 min while the stage moves between
    frames. Returns (correct links, links) scored against the truth cells."""
    sim = get_simulator(core)
    core.setXYPosition(0.0, 0.0)  # before the reset: a move takes sample time
    core.waitForSystem()
    # ~1200 nuclei/mm² (about 30 µm apart) moving ~4 µm/min: ~8 µm per frame
    sim.reset(
        seed=3,
        preset=ScenePreset(
            density_per_mm2=1200, speed_um_per_min=4.0, persistence_min=30.0
        ),
    )
    pipeline = AnalysisPipeline(settings)
    track_of_cell: list[dict[int, int]] = []  # per frame: truth id -> track id
    for i in range(n_frames):
        if i:
            sim.advance(120.0)
            x, y = core.getXYPosition()
            core.setXYPosition(x + 10.0, y - 6.0)
            core.waitForSystem()
        frame = snap_frame(core, i)
        truth = sim.truth()
        result = pipeline.analyse(frame)
        assert result.error is None
        assert result.labels is not None
        cell_of_label = truth_id_per_object(result.labels, truth.labels)
        track_of_cell.append(
            {
                cell_of_label[o.label]: o.track_id
                for o in result.objects
                if o.label in cell_of_label
            }
        )
    links = correct = 0
    for before, after in itertools.pairwise(track_of_cell):
        for cell, track in after.items():
            if cell in before:
                links += 1
                correct += before[cell] == track
    return correct, links


def test_tracks_follow_truth_cells_while_the_stage_moves(core) -> None:
    correct, links = track_time_lapse(core, AnalysisSettings())
    assert links >= 1000
    assert correct / links >= 0.9
    # predicting from the last velocity is what makes the difference here
    correct_static, links_static = track_time_lapse(
        core, AnalysisSettings(track_predict_velocity=False)
    )
    assert links_static == links
    assert correct > correct_static
