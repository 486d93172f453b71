"""Scoring a simulated run against its ground truth.

:func:`score_run` reads a run folder (``events.jsonl``, ``summary.json``,
``protocol.yaml``, ``truth/cells.csv`` and the label images in
``data.ome.zarr``) and returns the metrics a protocol developer compares
settings by, as one JSON-able dict with stable keys: ``events`` (mitoses
started in view and how many time points caught them), ``light`` (total, per
position, per cell, phototoxic deaths), ``focus`` (error against the
simulated focal plane, depth of field, autofocus share of the light),
``centring`` (the followed cell's distance from the field centre),
``segmentation`` (average precision of the stored labels) and ``targets``
(a scan-then-zoom run: rare targets in the scanned area found and centred at
high magnification). A metric the run
has not what it needs for is null, and ``notes`` says why. ``docs/score.md``
documents every key; ``smartscope score RUN_DIR`` prints them and writes
``RUN_DIR/score.json`` (:func:`write_score`).

Only runs on the simulator can be scored: a folder without
``truth/cells.csv`` raises :class:`ScoreError`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from smartscope.score_inputs import ScoreError, ScoreInputs, read_inputs

__all__ = [
    "SCORE_VERSION",
    "ScoreError",
    "score_rows",
    "score_run",
    "score_table",
    "write_score",
]

#: version of the score's keys; bumped on any incompatible change
SCORE_VERSION = 1


def score_run(run_dir: str | Path) -> dict[str, Any]:
    """Score the simulated run in ``run_dir`` against its ground truth.

    Returns a JSON-able dict (keys in ``docs/score.md``). A run that was
    killed is scored on what its folder holds. Raises :class:`ScoreError`
    for a folder that is not a run folder or has no ``truth/cells.csv``.
    """
    from smartscope.score_events import score_events
    from smartscope.score_focus import score_focus
    from smartscope.score_segmentation import score_segmentation
    from smartscope.score_targets import score_targets

    inputs = read_inputs(run_dir)
    data = inputs.data
    frames = data.frames
    return {
        "schema_version": SCORE_VERSION,
        "run_dir": str(inputs.run_dir),
        "protocol": data.protocol,
        "status": data.status,
        "frames": {
            "acquisition": sum(f.role == "acquisition" for f in frames),
            "autofocus": sum(f.role == "autofocus" for f in frames),
            "with_image": len(inputs.imaged),
            "with_truth": len(inputs.rows_of),
        },
        "events": score_events(inputs),
        "light": _score_light(inputs),
        "focus": score_focus(inputs),
        "centring": _score_centring(inputs),
        "segmentation": score_segmentation(inputs),
        "targets": score_targets(inputs),
        "notes": inputs.notes,
    }


def write_score(run_dir: str | Path, score: dict[str, Any]) -> Path:
    """Write ``score`` to ``RUN_DIR/score.json`` (whole or not at all)."""
    from smartscope.controller.recorder import write_atomic

    path = Path(run_dir) / "score.json"
    write_atomic(path, json.dumps(score, indent=2) + "\n")
    return path


# ------------------------------------------------------------------ light


def _stats(values: np.ndarray) -> dict[str, float]:
    return {
        "max": float(values.max()),
        "median": float(np.median(values)),
        "mean": float(values.mean()),
    }


def _score_light(inputs: ScoreInputs) -> dict[str, Any]:
    """The ``light`` group: the ledger's total, each frame's power × exposure
    by position, the truth's fluence per cell, and phototoxic deaths."""
    data, notes = inputs.data, inputs.notes
    out: dict[str, Any] = {
        "total_mj": None,
        "total_from": None,
        "frames_mj": None,
        "per_position_mj": None,
        "per_cell_j_cm2": None,
        "phototoxic_deaths": None,
        "cells_past_tox_onset": None,
    }
    if data.summary is not None and isinstance(
        data.summary.get("light_dose_mj"), (int, float)
    ):
        out.update(
            total_mj=float(data.summary["light_dose_mj"]), total_from="summary.json"
        )
    elif data.frames:
        out.update(
            total_mj=float(data.frames[-1].dose_mj),
            total_from="the last frame record's dose ledger (no summary.json)",
        )
    else:
        notes.append("light: no summary.json and no frame record: no total")
    per_position: dict[str, float] = defaultdict(float)
    for f in data.frames:
        per_position[f.position] += f.laser_mw * f.exposure_ms / 1000.0
    out.update(
        frames_mj=float(sum(per_position.values())),
        per_position_mj=dict(per_position),
    )
    truth = inputs.truth
    if truth is None or not len(truth):
        notes.append("light: no usable truth rows, no dose per cell")
        return out
    ids, inverse = np.unique(truth.cell_id, return_inverse=True)
    dose = np.zeros(ids.size)
    np.maximum.at(dose, inverse, truth.dose_j_cm2)
    out["per_cell_j_cm2"] = {"cells": int(ids.size), **_stats(dose)}
    out["phototoxic_deaths"] = int(np.unique(truth.cell_id[truth.state == "dead"]).size)
    if inputs.preset is not None:
        out["cells_past_tox_onset"] = int((dose >= inputs.preset.tox_onset_j_cm2).sum())
    return out


# ---------------------------------------------------------------- centring


def _score_centring(inputs: ScoreInputs) -> dict[str, Any]:
    """The ``centring`` group: for a run whose stage followed a cell, the
    true cell's distance from the field centre in each acquisition frame of
    the position(s) it was followed at."""
    from smartscope.report_data import followed_cell

    out: dict[str, Any] = {
        "track_id": None,
        "cell_id": None,
        "moves": None,
        "frames": None,
        "frames_cell_in_view": None,
        "distance_um": None,
        "quarter_half_field_um": None,
        "fraction_within_quarter_half_field": None,
        "distance_um_by_frame": None,
    }
    data, truth, notes = inputs.data, inputs.truth, inputs.notes
    followed = followed_cell(data)
    if followed is None:
        notes.append(
            "centring: no stage move aimed at an object: the run followed no cell"
        )
        return out
    out.update(track_id=followed.track_id, moves=followed.votes)
    if truth is None or followed.cell_id is None:
        notes.append(
            f"centring: followed track {followed.track_id} matches no true cell"
        )
        return out
    out["cell_id"] = followed.cell_id
    lineage = _lineage(truth.cell_id, truth.parent_id, followed.cell_id)
    index_position = {f.index: f.position for f in data.frames}
    positions = {
        index_position.get(a.frame_index)
        for a in data.actions
        if a.type == "MoveStage" and a.status in ("applied", "clamped")
    }
    by_frame: list[list[Any]] = []
    within: list[bool] = []
    quarter: list[float] = []
    for frame in inputs.acquisition():
        rec = frame.record
        if rec.position not in positions:
            continue
        q = 0.25 * min(frame.half_w_um, frame.half_h_um)
        quarter.append(q)
        rows = inputs.rows_of.get(rec.index, np.zeros(0, np.int64))
        rows = rows[np.isin(truth.cell_id[rows], lineage)]
        rows = rows[frame.contains(truth.x_um[rows], truth.y_um[rows])]
        if rows.size == 0:
            by_frame.append([rec.index, None])
            within.append(False)
            continue
        d = float(
            np.hypot(
                truth.x_um[rows] - frame.center_x_um,
                truth.y_um[rows] - frame.center_y_um,
            ).min()
        )
        by_frame.append([rec.index, round(d, 3)])
        within.append(d <= q)
    seen = np.array([d for _, d in by_frame if d is not None])
    out.update(
        frames=len(by_frame),
        frames_cell_in_view=int(seen.size),
        distance_um_by_frame=by_frame,
        quarter_half_field_um=float(np.median(quarter)) if quarter else None,
        fraction_within_quarter_half_field=float(np.mean(within)) if within else None,
    )
    if seen.size:
        out["distance_um"] = {
            "median": float(np.median(seen)),
            "p95": float(np.percentile(seen, 95)),
            "max": float(seen.max()),
        }
    else:
        notes.append(f"centring: cell {followed.cell_id} is in no frame's field")
    return out


def _lineage(cell_id: np.ndarray, parent_id: np.ndarray, root: int) -> np.ndarray:
    """``root`` and its descendants in the truth (a followed cell that
    divides is followed on in whichever daughter is nearer the centre)."""
    children: dict[int, set[int]] = defaultdict(set)
    for c, p in zip(cell_id.tolist(), parent_id.tolist(), strict=True):
        if p:
            children[p].add(c)
    found, todo = {root}, [root]
    while todo:
        for c in children.get(todo.pop(), ()):
            if c not in found:
                found.add(c)
                todo.append(c)
    return np.fromiter(found, np.int64)


# ------------------------------------------------------------------ table


def _num(v: Any, fmt: str = ".3g", unit: str = "") -> str:
    if v is None:
        return "n/a"
    return f"{v:{fmt}}{unit}"


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{100 * v:.0f}%"


def _spread(d: dict[str, Any] | None, keys: tuple[str, ...], unit: str) -> str:
    if not d:
        return "n/a"
    return " / ".join(f"{k} {_num(d.get(k))}" for k in keys) + unit


def score_rows(score: dict[str, Any]) -> list[tuple[str, list[tuple[str, str]]]]:
    """The score as (group, [(metric, value text)]) for printing."""
    ev, li, fo, ce, se = (
        score["events"],
        score["light"],
        score["focus"],
        score["centring"],
        score["segmentation"],
    )
    ta = score.get("targets") or {}
    per_pos = li["per_position_mj"] or {}
    dof = fo["depth_of_field_um"] or {}
    af_share = _pct(fo["autofocus_light_fraction"])
    return [
        (
            "events",
            [
                ("mitoses seen", _num(ev["mitoses_seen"], "d")),
                ("started in view", _num(ev["mitoses_started_in_view"], "d")),
                (
                    "captured",
                    f"{_num(ev['captured'], 'd')} ({_pct(ev['captured_fraction'])})",
                ),
                (
                    "time points per event",
                    _spread(ev["time_points_per_event"], ("min", "median", "max"), ""),
                ),
                ("≥ 5 time points", _pct(ev["fraction_with_5_time_points"])),
            ],
        ),
        (
            "light",
            [
                (
                    "total",
                    f"{_num(li['total_mj'], '.4g', ' mJ')} ({li['total_from'] or 'n/a'})",
                ),
                ("frames (power × exposure)", _num(li["frames_mj"], ".4g", " mJ")),
                (
                    "per position",
                    ", ".join(f"{k} {v:.4g} mJ" for k, v in per_pos.items()) or "n/a",
                ),
                (
                    "per cell",
                    _spread(li["per_cell_j_cm2"], ("max", "median", "mean"), " J/cm²"),
                ),
                ("phototoxic deaths", _num(li["phototoxic_deaths"], "d")),
                ("cells past toxicity onset", _num(li["cells_past_tox_onset"], "d")),
            ],
        ),
        (
            "focus",
            [
                ("frames scored", _num(fo["frames_scored"], "d")),
                (
                    "|error|",
                    _spread(fo["abs_error_um"], ("median", "p95", "max"), " µm"),
                ),
                (
                    "depth of field",
                    ", ".join(f"± {v:.3g} µm ({k})" for k, v in dof.items()) or "n/a",
                ),
                ("within depth of field", _pct(fo["fraction_in_depth_of_field"])),
                (
                    "autofocus",
                    f"{fo['autofocus_frames']} frames, {af_share} of the light",
                ),
            ],
        ),
        (
            "centring",
            [
                (
                    "followed",
                    "n/a"
                    if ce["track_id"] is None
                    else f"track {ce['track_id']} = cell {_num(ce['cell_id'], 'd')}",
                ),
                (
                    "cell in view",
                    f"{_num(ce['frames_cell_in_view'], 'd')} of "
                    f"{_num(ce['frames'], 'd')} frames",
                ),
                (
                    "distance from centre",
                    _spread(ce["distance_um"], ("median", "p95", "max"), " µm"),
                ),
                (
                    "within ¼ half field",
                    f"{_pct(ce['fraction_within_quarter_half_field'])} "
                    f"(≤ {_num(ce['quarter_half_field_um'], '.3g', ' µm')})",
                ),
            ],
        ),
        (
            "segmentation",
            [
                ("frames", _num(se["frames"], "d")),
                ("AP@0.5 / AP@0.75", f"{_num(se['ap_50'])} / {_num(se['ap_75'])}"),
                (
                    "objects",
                    f"true {_num(se['true_objects'], 'd')}, "
                    f"predicted {_num(se['predicted_objects'], 'd')}",
                ),
            ],
        ),
        (
            "targets",
            [
                (
                    "scan",
                    f"{_num(ta.get('scan_frames'), 'd')} frames at "
                    f"{ta.get('scan_objective') or 'n/a'}, "
                    f"{_num(ta.get('scanned_area_mm2'), '.3g', ' mm²')}",
                ),
                ("targets in scan", _num(ta.get("targets_in_scan"), "d")),
                (
                    "found",
                    f"{_num(ta.get('found'), 'd')} ({_pct(ta.get('found_fraction'))})",
                ),
                (
                    "zoom frames centred",
                    f"{_num(ta.get('zoom_frames_centred'), 'd')} of "
                    f"{_num(ta.get('zoom_frames'), 'd')} "
                    f"({_pct(ta.get('zoom_frames_centred_fraction'))}, "
                    f"≤ {_num(ta.get('quarter_half_field_um'), '.3g', ' µm')})",
                ),
            ],
        ),
    ]


def score_table(score: dict[str, Any]) -> Any:
    """The score as a rich table, grouped (what ``smartscope score`` prints)."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"{score['protocol']}: score ({score['status']})"))
    table.add_column("", style="bold")
    table.add_column("")
    table.add_column("")
    for group, rows in score_rows(score):
        for i, (label, value) in enumerate(rows):
            table.add_row(group if i == 0 else "", escape(label), escape(value))
        table.add_section()
    return table
