"""Scores against ground truth: image restoration and instance segmentation.

Pure functions on numpy arrays (no torch), used by the model cards, the
training quality-control reports, the benchmarks and the tests.

- :func:`psnr`, :func:`ssim`: restoration quality of an image against the
  noise-free truth (scikit-image implementations, with the data range taken
  from the truth unless given).
- :func:`match_instances`, :func:`average_precision`: instance segmentation
  scored the way the Data Science Bowl 2018 and StarDist do it: predicted and
  true objects are paired one-to-one to maximise total IoU
  (``scipy.optimize.linear_sum_assignment``); a pair counts as a true positive
  when its IoU reaches the threshold, and ``AP = TP / (TP + FP + FN)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "MatchResult",
    "average_precision",
    "iou_matrix",
    "match_instances",
    "psnr",
    "ssim",
]


def _data_range(truth: np.ndarray, data_range: float | None) -> float:
    if data_range is not None:
        return float(data_range)
    rng = float(np.max(truth) - np.min(truth))
    return rng if rng > 0 else 1.0


def _check_same_shape(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{what}: shapes differ, {a.shape} vs {b.shape}")


def psnr(
    truth: np.ndarray, image: np.ndarray, *, data_range: float | None = None
) -> float:
    """Peak signal-to-noise ratio of ``image`` against ``truth``, dB.

    Parameters
    ----------
    truth, image : (Y, X) arrays of any real dtype, same shape
    data_range : float, optional
        Peak-to-peak range of the signal; default ``truth.max() - truth.min()``.
    """
    from skimage.metrics import peak_signal_noise_ratio

    truth = np.asarray(truth, np.float64)
    image = np.asarray(image, np.float64)
    _check_same_shape(truth, image, "psnr")
    return float(
        peak_signal_noise_ratio(truth, image, data_range=_data_range(truth, data_range))
    )


def ssim(
    truth: np.ndarray, image: np.ndarray, *, data_range: float | None = None
) -> float:
    """Structural similarity of ``image`` against ``truth`` (scikit-image, 7x7 window).

    Parameters
    ----------
    truth, image : (Y, X) arrays, same shape
    data_range : float, optional
        Default ``truth.max() - truth.min()``.
    """
    from skimage.metrics import structural_similarity

    truth = np.asarray(truth, np.float64)
    image = np.asarray(image, np.float64)
    _check_same_shape(truth, image, "ssim")
    return float(
        structural_similarity(truth, image, data_range=_data_range(truth, data_range))
    )


def iou_matrix(
    true_labels: np.ndarray, pred_labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intersection over union of every true object with every predicted one.

    Parameters
    ----------
    true_labels, pred_labels : (Y, X) integer label images, 0 = background

    Returns
    -------
    iou : (N_true, N_pred) float64
    true_ids : (N_true,) int64, the label value of each row
    pred_ids : (N_pred,) int64, the label value of each column
    """
    t = np.asarray(true_labels)
    p = np.asarray(pred_labels)
    _check_same_shape(t, p, "iou_matrix")
    true_ids, t_inv = np.unique(t.ravel(), return_inverse=True)
    pred_ids, p_inv = np.unique(p.ravel(), return_inverse=True)
    # contingency table of (true index, pred index) pixel counts
    n_t, n_p = true_ids.size, pred_ids.size
    counts = np.bincount(t_inv * n_p + p_inv, minlength=n_t * n_p).reshape(n_t, n_p)
    area_t = counts.sum(axis=1, keepdims=True)
    area_p = counts.sum(axis=0, keepdims=True)
    union = area_t + area_p - counts
    iou = counts / np.maximum(union, 1)
    # drop background rows/columns
    keep_t = true_ids != 0
    keep_p = pred_ids != 0
    return (
        iou[np.ix_(keep_t, keep_p)],
        true_ids[keep_t].astype(np.int64),
        pred_ids[keep_p].astype(np.int64),
    )


@dataclass(frozen=True)
class MatchResult:
    """One-to-one matching of predicted to true objects at one IoU threshold.

    ``pairs`` is a (TP, 2) int64 array of (true label, predicted label);
    ``mean_matched_iou`` averages the IoU over the true positives (0 if none).
    """

    iou_threshold: float
    tp: int
    fp: int
    fn: int
    mean_matched_iou: float
    pairs: np.ndarray

    @property
    def n_true(self) -> int:
        return self.tp + self.fn

    @property
    def n_pred(self) -> int:
        return self.tp + self.fp

    @property
    def precision(self) -> float:
        return self.tp / self.n_pred if self.n_pred else 1.0

    @property
    def recall(self) -> float:
        return self.tp / self.n_true if self.n_true else 1.0

    @property
    def f1(self) -> float:
        d = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / d if d else 1.0

    @property
    def average_precision(self) -> float:
        """``TP / (TP + FP + FN)``; 1.0 when both images are empty."""
        d = self.tp + self.fp + self.fn
        return self.tp / d if d else 1.0


def _match_from_iou(
    iou: np.ndarray, true_ids: np.ndarray, pred_ids: np.ndarray, threshold: float
) -> MatchResult:
    from scipy.optimize import linear_sum_assignment

    n_t, n_p = iou.shape
    if n_t == 0 or n_p == 0:
        return MatchResult(threshold, 0, n_p, n_t, 0.0, np.zeros((0, 2), np.int64))
    # maximise the summed IoU over pairs that clear the threshold
    score = np.where(iou >= threshold, iou, 0.0)
    rows, cols = linear_sum_assignment(score, maximize=True)
    ok = score[rows, cols] > 0
    rows, cols = rows[ok], cols[ok]
    tp = int(rows.size)
    mean_iou = float(iou[rows, cols].mean()) if tp else 0.0
    pairs = np.stack([true_ids[rows], pred_ids[cols]], axis=1).astype(np.int64)
    return MatchResult(threshold, tp, n_p - tp, n_t - tp, mean_iou, pairs)


def match_instances(
    true_labels: np.ndarray, pred_labels: np.ndarray, *, iou_threshold: float = 0.5
) -> MatchResult:
    """Pair predicted with true objects one-to-one at ``iou_threshold``.

    Parameters
    ----------
    true_labels, pred_labels : (Y, X) integer label images, 0 = background
    iou_threshold : float in (0, 1]
    """
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    iou, true_ids, pred_ids = iou_matrix(true_labels, pred_labels)
    return _match_from_iou(iou, true_ids, pred_ids, float(iou_threshold))


def average_precision(
    true_labels: np.ndarray | Sequence[np.ndarray],
    pred_labels: np.ndarray | Sequence[np.ndarray],
    *,
    thresholds: Sequence[float] = (0.5, 0.75),
) -> dict[float, float]:
    """Average precision ``TP / (TP + FP + FN)`` at each IoU threshold.

    Parameters
    ----------
    true_labels, pred_labels : (Y, X) integer label images, or equal-length
        sequences of them; with sequences the counts are pooled over images
        before the ratio is taken.
    thresholds : IoU thresholds in (0, 1]

    Returns
    -------
    dict mapping each threshold to its AP in [0, 1].
    """
    if isinstance(true_labels, np.ndarray) and true_labels.ndim == 2:
        true_list, pred_list = [true_labels], [np.asarray(pred_labels)]
    else:
        true_list, pred_list = list(true_labels), list(pred_labels)
    if len(true_list) != len(pred_list):
        raise ValueError(
            f"average_precision: {len(true_list)} true vs {len(pred_list)} predicted images"
        )
    totals = {float(t): [0, 0, 0] for t in thresholds}
    for t_lab, p_lab in zip(true_list, pred_list, strict=False):
        iou, tid, pid = iou_matrix(t_lab, p_lab)
        for thr in totals:
            m = _match_from_iou(iou, tid, pid, thr)
            totals[thr][0] += m.tp
            totals[thr][1] += m.fp
            totals[thr][2] += m.fn
    out: dict[float, float] = {}
    for thr, (tp, fp, fn) in totals.items():
        d = tp + fp + fn
        out[thr] = tp / d if d else 1.0
    return out
