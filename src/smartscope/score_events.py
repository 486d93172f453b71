"""Mitoses in the simulator's truth, and how well a run imaged them.

The truth (``truth/cells.csv``) lists the cells each frame shows. In the
simulator a cell enters mitosis at the end of its cycle (state
``mitosis`` for the preset's ``mitosis_min``, not walking) and is then
replaced by two daughters whose ``parent_id`` is its id. A mitosis is
therefore known by its mother's id: seen in state ``mitosis``, or named as a
parent.

A frame *shows* a cell when the cell's centre lies in the frame's field
(stage x/y ± half the image size). A mitosis *started in view* when one
position's consecutive time points saw its start: the mother in interphase at
one, then the mother in mitosis or a daughter at the next. Of those, a
mitosis is *captured* when at least one acquisition frame showed the mother
in mitosis. Time points, not frames, are counted: the channels or z planes of
one time point show the same moment.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import pairwise
from typing import Any

import numpy as np

from smartscope.score_inputs import ScoreInputs, TruthRows

__all__ = ["MIN_TIME_POINTS", "score_events"]

#: the "well imaged" mark: at least this many time points during mitosis
MIN_TIME_POINTS = 5


def _shown(
    inputs: ScoreInputs, truth: TruthRows
) -> tuple[
    dict[tuple[str, int], dict[int, set[str]]], dict[str, list[tuple[str, int]]]
]:
    """Per time point, the cells its acquisition frames show and their
    states; per position, its time points in the order taken."""
    shown: dict[tuple[str, int], dict[int, set[str]]] = {}
    order: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for frame in inputs.acquisition():
        tp = frame.time_point
        if tp not in shown:
            shown[tp] = defaultdict(set)
            order[tp[0]].append(tp)
        rows = inputs.rows_of.get(frame.record.index)
        if rows is None:
            continue
        rows = rows[frame.contains(truth.x_um[rows], truth.y_um[rows])]
        for cid, state in zip(
            truth.cell_id[rows].tolist(), truth.state[rows].tolist(), strict=True
        ):
            shown[tp][cid].add(state)
    return shown, order


def score_events(inputs: ScoreInputs) -> dict[str, Any]:
    """The ``events`` group of a score (see ``docs/score.md``)."""
    out: dict[str, Any] = {
        "mitoses_seen": None,
        "mitoses_started_in_view": None,
        "captured": None,
        "captured_fraction": None,
        "time_points_per_event": None,
        "fraction_with_5_time_points": None,
        "events": None,
    }
    truth = inputs.truth
    if truth is None:
        inputs.notes.append("events: no usable truth")
        return out
    shown, order = _shown(inputs, truth)
    children: dict[int, set[int]] = defaultdict(set)
    for cid, pid in zip(truth.cell_id.tolist(), truth.parent_id.tolist(), strict=True):
        if pid:
            children[pid].add(cid)
    mitotic_tps: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for tp, cells in shown.items():
        for cid, states in cells.items():
            if "mitosis" in states:
                mitotic_tps[cid].append(tp)
    started: set[int] = set()
    for tps in order.values():
        for before, after in pairwise(tps):
            now = shown[after]
            for cid, states in shown[before].items():
                if "interphase" not in states or cid in started:
                    continue
                if "mitosis" in now.get(cid, ()) or any(
                    d in now for d in children.get(cid, ())
                ):
                    started.add(cid)
    ever_shown = {cid for cells in shown.values() for cid in cells}
    counts = np.array([len(mitotic_tps.get(m, ())) for m in sorted(started)], int)
    captured = int((counts > 0).sum())
    out.update(
        mitoses_seen=len(mitotic_tps),
        mitoses_started_in_view=len(started),
        captured=captured,
        events=[
            {
                "cell_id": m,
                "time_points": len(mitotic_tps.get(m, ())),
                "divided_in_view": not children.get(m, set()).isdisjoint(ever_shown),
            }
            for m in sorted(started)
        ],
    )
    if not started:
        inputs.notes.append(
            "events: no mitosis started in view (no time point showed a cell in "
            "interphase that the next time point of its position showed in mitosis "
            "or divided)"
        )
        return out
    out.update(
        captured_fraction=captured / len(started),
        time_points_per_event={
            "min": int(counts.min()),
            "median": float(np.median(counts)),
            "max": int(counts.max()),
            "mean": float(counts.mean()),
        },
        fraction_with_5_time_points=float((counts >= MIN_TIME_POINTS).mean()),
    )
    return out
