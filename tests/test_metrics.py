"""Metrics on small hand-built cases whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from smartscope.metrics import (
    average_precision,
    iou_matrix,
    match_instances,
    psnr,
    ssim,
)


def _squares() -> np.ndarray:
    lab = np.zeros((20, 20), np.int32)
    lab[2:6, 2:6] = 1  # 16 px
    lab[10:14, 10:14] = 2  # 16 px
    return lab


def test_psnr_known_value():
    truth = np.zeros((10, 10))
    truth[0, 0] = 1.0  # data range 1
    noisy = truth + 0.1  # MSE 0.01 -> 20 dB
    assert psnr(truth, noisy) == pytest.approx(20.0)
    assert psnr(truth, noisy, data_range=10.0) == pytest.approx(40.0)


def test_ssim_identity_and_degradation():
    rng = np.random.default_rng(0)
    truth = rng.random((32, 32))
    assert ssim(truth, truth) == pytest.approx(1.0)
    assert ssim(truth, truth + rng.normal(0, 0.3, truth.shape)) < 0.8


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(np.zeros((4, 4)), np.zeros((4, 5)))


def test_iou_matrix_values():
    t = _squares()
    p = np.zeros_like(t)
    p[2:6, 4:8] = 7  # overlaps object 1 by 8 px: IoU 8 / 24
    iou, tid, pid = iou_matrix(t, p)
    assert tid.tolist() == [1, 2]
    assert pid.tolist() == [7]
    assert iou[0, 0] == pytest.approx(8 / 24)
    assert iou[1, 0] == 0


def test_perfect_match_ignores_label_values():
    t = _squares()
    p = np.where(t == 1, 5, np.where(t == 2, 9, 0))
    m = match_instances(t, p, iou_threshold=0.5)
    assert (m.tp, m.fp, m.fn) == (2, 0, 0)
    assert m.average_precision == 1.0
    assert sorted(map(tuple, m.pairs.tolist())) == [(1, 5), (2, 9)]


def test_partial_overlap_counts_by_threshold():
    t = _squares()
    p = np.zeros_like(t)
    p[2:6, 3:7] = 1  # IoU with object 1: 12 / 20 = 0.6
    p[15:18, 15:18] = 2  # a false positive
    m50 = match_instances(t, p, iou_threshold=0.5)
    assert (m50.tp, m50.fp, m50.fn) == (1, 1, 1)
    assert m50.mean_matched_iou == pytest.approx(0.6)
    assert m50.average_precision == pytest.approx(1 / 3)
    m75 = match_instances(t, p, iou_threshold=0.75)
    assert (m75.tp, m75.fp, m75.fn) == (0, 2, 2)
    ap = average_precision(t, p, thresholds=(0.5, 0.75))
    assert ap == {0.5: pytest.approx(1 / 3), 0.75: 0.0}


def test_merged_prediction_matches_only_one():
    t = np.zeros((10, 20), np.int32)
    t[2:8, 2:8] = 1
    t[2:8, 8:14] = 2
    p = (t > 0).astype(np.int32)  # two touching nuclei predicted as one
    m = match_instances(t, p, iou_threshold=0.5)
    assert (m.tp, m.fp, m.fn) == (1, 0, 1)
    # at IoU 0.3 either could match, but one-to-one matching still allows one
    assert match_instances(t, p, iou_threshold=0.3).tp == 1


def test_assignment_is_optimal_not_greedy():
    # pred A overlaps true 1 best, but giving A to true 2 lets B match true 1
    t = np.zeros((1, 10), np.int32)
    t[0, 0:4] = 1
    t[0, 4:8] = 2
    p = np.zeros_like(t)
    p[0, 1:6] = 1  # IoU with t1: 3/6, with t2: 2/7
    p[0, 0:1] = 2  # IoU with t1: 1/4
    m = match_instances(t, p, iou_threshold=0.2)
    assert m.tp == 2


def test_empty_images_and_pooling():
    z = np.zeros((8, 8), np.int32)
    assert match_instances(z, z).average_precision == 1.0
    t = _squares()
    ap = average_precision([t, t], [t, np.zeros_like(t)], thresholds=[0.5])
    assert ap[0.5] == pytest.approx(2 / 4)
    with pytest.raises(ValueError, match="iou_threshold"):
        match_instances(t, t, iou_threshold=0)
