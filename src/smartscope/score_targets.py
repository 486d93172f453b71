"""The ``targets`` group of a score: a scan-then-zoom run against the truth.

A scan-then-zoom protocol tiles an area at low magnification, finds the
scene's rare target cells (``ScenePreset.target_fraction``) and images each
hit at a higher magnification. Its frames split by magnification: the scan
frames are the acquisition frames at the run's lowest magnification, the zoom
frames those at any higher one (the frame record's ``objective``, else the
simulator objective that gives the image's pixel size).

- the targets in the scan: truth cells with ``target`` whose centre lies in
  the field of a scan frame at that frame's time (the scanned area is the
  union of those fields);
- found: such a target (or a daughter it divided into) that lies within a
  quarter of the half field (the smaller of half width and half height) of
  the centre of at least one zoom frame, at that frame's time;
- a zoom frame is centred when any target lies that close to its centre.

Frame centres are the true image centres: the stage position plus the
objective's true offset (``smartscope.sim.turrets.OBJECTIVES``), so a run
that does not correct for the offsets between objectives scores as it images.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from smartscope.score_inputs import ImagedFrame, ScoreInputs

__all__ = ["score_targets", "union_area_um2"]


def _magnification(frame: ImagedFrame) -> float:
    """The frame's magnification: its objective's, else from the pixel size
    (the simulator's 6.5 µm camera pixels, unbinned)."""
    from smartscope.sim.camera import SimCamera

    if frame.objective is not None:
        return float(frame.objective.magnification)
    return SimCamera.pixel_pitch_um / frame.pixel_um


def union_area_um2(boxes: list[tuple[float, float, float, float]]) -> float:
    """Area (µm²) of the union of axis-aligned boxes ``(x0, x1, y0, y1)``
    (coordinate compression: exact, O(n³) for n boxes, fine for a few hundred
    tiles)."""
    if not boxes:
        return 0.0
    b = np.asarray(boxes, np.float64)
    xs = np.unique(b[:, :2])
    ys = np.unique(b[:, 2:])
    cx = 0.5 * (xs[:-1] + xs[1:])
    cy = 0.5 * (ys[:-1] + ys[1:])
    covered = np.zeros((cy.size, cx.size), bool)
    for x0, x1, y0, y1 in b:
        covered |= ((cy >= y0) & (cy <= y1))[:, None] & ((cx >= x0) & (cx <= x1))[
            None, :
        ]
    area = np.diff(ys)[:, None] * np.diff(xs)[None, :]
    return float(area[covered].sum())


def _box(frame: ImagedFrame) -> tuple[float, float, float, float]:
    return (
        frame.center_x_um - frame.half_w_um,
        frame.center_x_um + frame.half_w_um,
        frame.center_y_um - frame.half_h_um,
        frame.center_y_um + frame.half_h_um,
    )


def score_targets(inputs: ScoreInputs) -> dict[str, Any]:
    """The ``targets`` group of a score (see ``docs/score.md``)."""
    out: dict[str, Any] = {
        "scan_frames": None,
        "scan_objective": None,
        "scan_pixel_um": None,
        "scanned_area_mm2": None,
        "targets_in_scan": None,
        "found": None,
        "found_fraction": None,
        "missed_cell_ids": None,
        "zoom_frames": None,
        "zoom_objectives": None,
        "zoom_frames_centred": None,
        "zoom_frames_centred_fraction": None,
        "quarter_half_field_um": None,
        "distance_um_by_zoom_frame": None,
    }
    notes, truth = inputs.notes, inputs.truth
    frames = inputs.acquisition()
    if not frames:
        notes.append("targets: no acquisition frame with an image")
        return out
    mags = np.array([_magnification(f) for f in frames])
    low = float(mags.min())
    is_scan = np.isclose(mags, low, rtol=1e-6)
    scan = [f for f, s in zip(frames, is_scan, strict=True) if s]
    zoom = [f for f, s in zip(frames, is_scan, strict=True) if not s]
    out.update(
        scan_frames=len(scan),
        scan_objective=scan[0].objective.label if scan[0].objective else None,
        scan_pixel_um=scan[0].pixel_um,
        scanned_area_mm2=union_area_um2([_box(f) for f in scan]) * 1e-6,
        zoom_frames=len(zoom),
        zoom_objectives=sorted(
            {f.objective.label if f.objective else "?" for f in zoom}
        ),
    )
    if truth is None:
        notes.append("targets: no usable truth (see the notes above)")
        return out
    if not truth.target.any():
        notes.append(
            "targets: the truth marks no target cell (a scene without "
            "target_fraction, or a cells.csv without its target column)"
        )
    # the targets in the scanned area, each at the time of the frame that saw it
    in_scan: set[int] = set()
    for f in scan:
        rows = inputs.rows_of.get(f.record.index, np.zeros(0, np.int64))
        rows = rows[truth.target[rows]]
        rows = rows[f.contains(truth.x_um[rows], truth.y_um[rows])]
        in_scan.update(truth.cell_id[rows].tolist())
    out["targets_in_scan"] = len(in_scan)
    # a daughter counts for the target it came from (markers are inherited)
    parent = dict(zip(truth.cell_id.tolist(), truth.parent_id.tolist(), strict=True))

    def root(cell: int) -> int:
        seen: set[int] = set()
        while cell not in in_scan and parent.get(cell, 0) and cell not in seen:
            seen.add(cell)
            cell = parent[cell]
        return cell

    found: set[int] = set()
    by_frame: list[list[Any]] = []
    quarter: list[float] = []
    centred = 0
    for f in zoom:
        q = 0.25 * min(f.half_w_um, f.half_h_um)
        quarter.append(q)
        rows = inputs.rows_of.get(f.record.index, np.zeros(0, np.int64))
        rows = rows[truth.target[rows]]
        if rows.size == 0:
            by_frame.append([f.record.index, None])
            continue
        d = np.hypot(truth.x_um[rows] - f.center_x_um, truth.y_um[rows] - f.center_y_um)
        by_frame.append([f.record.index, round(float(d.min()), 3)])
        close = truth.cell_id[rows][d <= q].tolist()
        centred += bool(close)
        found.update(r for r in map(root, close) if r in in_scan)
    out.update(
        found=len(found),
        missed_cell_ids=sorted(in_scan - found),
        distance_um_by_zoom_frame=by_frame,
    )
    if in_scan:
        out["found_fraction"] = len(found) / len(in_scan)
    else:
        notes.append("targets: no target cell in the scanned area: no found fraction")
    if zoom:
        out.update(
            zoom_frames_centred=centred,
            zoom_frames_centred_fraction=centred / len(zoom),
            quarter_half_field_um=float(np.median(quarter)),
        )
    else:
        notes.append(
            "targets: every acquisition frame is at one magnification: no zoom "
            "frame, nothing found"
        )
        out.update(found=None, found_fraction=None, missed_cell_ids=None)
    return out
