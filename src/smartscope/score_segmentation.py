"""Segmentation: the run's stored label images against the truth.

The run folder keeps the truth as rows (``cells.csv``: centre and equivalent
radius of each nucleus a frame shows), not as masks, and a nucleus's shape
(its axes and angle) is not among them. The truth masks are therefore discs of
the equivalent radius (same area as the simulated ellipse), drawn with the
simulator's own rasteriser (:func:`smartscope.sim.optics.render_nuclei`) on
the frame's pixel grid; where discs overlap, the nearer centre wins, as in the
simulator. Matching and average precision come from :mod:`smartscope.metrics`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from smartscope.score_inputs import ImagedFrame, ScoreInputs, TruthRows

__all__ = ["MAX_FRAMES", "score_segmentation", "truth_disc_labels"]

#: at most this many analysed frames are scored, evenly spaced
MAX_FRAMES = 20
TRUTH_MASKS = (
    "discs of the truth's equivalent radius, drawn by the simulator's rasteriser"
)


def truth_disc_labels(
    frame: ImagedFrame, truth: TruthRows, rows: np.ndarray
) -> np.ndarray:
    """``(Y, X) int32`` truth labels of one frame: each cell of ``rows`` as a
    disc of its equivalent radius at its stage position (value = cell id)."""
    from smartscope.sim.optics import View, render_nuclei

    h, w = frame.shape_yx
    # the true image centre: stage + the objective's true offset
    view = View(
        frame.center_x_um, frame.center_y_um, frame.pixel_um, w, h, (0, 0, w, h)
    )
    n = rows.size
    r = truth.radius_um[rows]
    zeros = np.zeros(n)
    _, labels, _ = render_nuclei(
        view,
        x_um=truth.x_um[rows],
        y_um=truth.y_um[rows],
        a_um=r,
        b_um=r,
        theta=zeros,
        brightness=np.ones(n),
        ids=truth.cell_id[rows],
        phase1=zeros,
        phase2=zeros,
        texture=0.0,
    )
    return labels


def score_segmentation(inputs: ScoreInputs) -> dict[str, Any]:
    """The ``segmentation`` group of a score (see ``docs/score.md``)."""
    from smartscope.io.read_images import read_derived
    from smartscope.metrics import average_precision

    out: dict[str, Any] = {
        "frames": 0,
        "frame_indices": [],
        "ap_50": None,
        "ap_75": None,
        "true_objects": None,
        "predicted_objects": None,
        "truth_masks": TRUTH_MASKS,
    }
    truth = inputs.truth
    if truth is None:
        inputs.notes.append("segmentation: no usable truth")
        return out
    analysed = [
        f
        for f in inputs.acquisition()
        if (a := inputs.data.analyses.get(f.record.index)) is not None
        and a.error is None
    ]
    if not analysed:
        inputs.notes.append("segmentation: no analysed frame")
        return out
    n = min(MAX_FRAMES, len(analysed))
    pick = np.unique(np.linspace(0, len(analysed) - 1, n).round().astype(int))
    true_l, pred_l, used = [], [], []
    for k in pick.tolist():
        frame = analysed[k]
        pred = read_derived(inputs.run_dir, frame.record.index, "labels")
        if pred is None:
            inputs.notes.append(
                "segmentation: the run stored no label images (save: {labels: true})"
            )
            return out
        if pred.shape != frame.shape_yx:
            continue
        rows = inputs.rows_of.get(frame.record.index, np.zeros(0, np.int64))
        true_l.append(truth_disc_labels(frame, truth, rows))
        pred_l.append(np.asarray(pred))
        used.append(frame.record.index)
    if not used:
        inputs.notes.append("segmentation: no label image has its frame's shape")
        return out
    ap = average_precision(true_l, pred_l, thresholds=(0.5, 0.75))
    out.update(
        frames=len(used),
        frame_indices=used,
        ap_50=ap[0.5],
        ap_75=ap[0.75],
        true_objects=int(sum(np.unique(t[t > 0]).size for t in true_l)),
        predicted_objects=int(sum(np.unique(p[p > 0]).size for p in pred_l)),
    )
    return out
