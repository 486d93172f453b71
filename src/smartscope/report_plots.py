"""The run report's figures, one function each, drawn with matplotlib (Agg).

Each function takes a :class:`~smartscope.report_data.RunData` and returns a
:class:`Panel`: a PNG and a caption that says what was measured and how, or,
where the run has no data for the figure, a short sentence instead. No
pyplot: every figure is a :class:`matplotlib.figure.Figure` of its own, so
nothing here touches global state or opens a window. Long runs are thinned
to a few thousand points per series.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from smartscope.report_data import (
    RunData,
    dose_per_position_mj,
    followed_cell,
    frame_dose_mj,
    latencies_ms,
    measured_dose_per_track_mj,
    time_point_intervals_s,
    truth_dose_per_cell_j_cm2,
    wall_to_sample_s,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "Panel",
    "analysis_time_panel",
    "contact_sheet_panel",
    "dose_panel",
    "latency_panel",
    "settings_panel",
    "skipped_panel",
    "stage_path_panel",
]

#: most points drawn per series; longer series are thinned evenly
MAX_POINTS = 3000
#: most fields of view outlined on the stage map
MAX_FIELDS = 300
#: most cells in a per-cell dose chart
MAX_CELLS = 25
#: frames on the contact sheet
SHEET_FRAMES = 4
#: about how wide each contact-sheet tile is, px
SHEET_TILE_PX = 256
_DPI = 100
_FOLLOWED = "#d62728"
_TRUE_FOLLOWED = "#ff7f0e"


@dataclass(frozen=True)
class Panel:
    """One figure of the report: ``png`` with its ``caption``, or no image
    and a ``caption`` that says why there is none."""

    png: bytes | None
    caption: str


def _no_data(sentence: str) -> Panel:
    return Panel(None, sentence)


def _figure(width_in: float, height_in: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), dpi=_DPI, layout="constrained")


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return buf.getvalue()


def _thin(n: int, most: int = MAX_POINTS) -> np.ndarray:
    """Indices of at most ``most`` of ``n`` items, evenly spread, first and
    last kept."""
    if n <= most:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, most).round().astype(int))


def _style(ax: Axes) -> None:
    ax.grid(True, alpha=0.3, linewidth=0.6)
    ax.tick_params(labelsize=8)


# ----------------------------------------------------------------- stage path


def stage_path_panel(data: RunData, fov_um: tuple[float, float] | None) -> Panel:
    """The stage path over the sample: fields of view, the measured tracks
    and, on the simulator, the true cell tracks; the followed object marked."""
    frames = data.acquisition_frames()
    if not frames:
        return _no_data("No frame was acquired: there is no stage path to draw.")
    from matplotlib.collections import LineCollection

    followed = followed_cell(data)
    fig = _figure(8.0, 6.4)
    ax = fig.add_subplot()
    _style(ax)
    handles = []
    truth = data.truth
    if truth is not None and len(truth):
        segs = _tracks(truth.cell_id, truth.frame, truth.x_um, truth.y_um)
        ax.add_collection(
            LineCollection(
                segs,
                colors="0.55",
                linewidths=0.8,
                alpha=0.7,
                zorder=1,
                label="true cell tracks (simulator, while in view)",
            )
        )
        handles.append(ax.collections[-1])
    obj = _measured_objects(data)
    if obj.size:
        segs = _tracks(obj[:, 1], obj[:, 0], obj[:, 2], obj[:, 3])
        ax.add_collection(
            LineCollection(
                segs,
                colors="#1f77b4",
                linewidths=0.7,
                alpha=0.45,
                zorder=2,
                label="measured tracks (analysis)",
            )
        )
        handles.append(ax.collections[-1])
    x = np.array([f.x_um for f in frames])
    y = np.array([f.y_um for f in frames])
    t_min = np.array([f.t_s for f in frames]) / 60.0
    if fov_um is not None:
        handles.append(_fields(ax, x, y, fov_um))
    if followed is not None:
        sel = obj[obj[:, 1] == followed.track_id]
        lines = LineCollection(
            _tracks(sel[:, 1], sel[:, 0], sel[:, 2], sel[:, 3]),
            colors=_FOLLOWED,
            linewidths=5.0,
            alpha=0.55,
            zorder=5,
            label=f"followed: track {followed.track_id} (measured)",
        )
        ax.add_collection(lines)
        handles.append(lines)
        if followed.cell_id is not None and truth is not None:
            rows = truth.cell_id == followed.cell_id
            lines = LineCollection(
                _tracks(
                    truth.cell_id[rows],
                    truth.frame[rows],
                    truth.x_um[rows],
                    truth.y_um[rows],
                ),
                colors=_TRUE_FOLLOWED,
                linewidths=1.6,
                linestyles="--",
                zorder=6,
                label=f"followed: cell {followed.cell_id} (truth)",
            )
            ax.add_collection(lines)
            handles.append(lines)
    names = np.array([f.position for f in frames])
    positions = list(dict.fromkeys(names.tolist()))
    for name in positions:  # one path per position: visits are not a route
        idx = np.flatnonzero(names == name)
        idx = idx[_thin(len(idx))]
        ax.plot(x[idx], y[idx], color="black", linewidth=0.6, zorder=7)
        if len(positions) == 1:
            _label(ax, "start", x[idx[0]], y[idx[0]], (4, 4))
            _label(ax, "end", x[idx[-1]], y[idx[-1]], (4, -10))
        elif len(positions) <= 12:
            _label(ax, name, x[idx[0]], y[idx[0]], (4, 4))
    keep = _thin(len(frames))
    points = ax.scatter(
        x[keep],
        y[keep],
        c=t_min[keep],
        cmap="viridis",
        s=9,
        zorder=8,
        edgecolors="none",
        label="stage position of each frame",
    )
    handles.append(points)
    fig.colorbar(points, ax=ax, label="sample time (min)", shrink=0.8)
    ax.set_aspect("equal", adjustable="datalim")
    ax.autoscale_view()
    ax.set_xlabel("stage x (µm)")
    ax.set_ylabel("stage y (µm)")
    ax.legend(handles=handles, fontsize=8, loc="best", framealpha=0.85)
    caption = (
        f"Where the stage was for each of the {len(frames)} frames "
        f"({len(positions)} position{'s' if len(positions) != 1 else ''}: "
        f"{', '.join(positions[:8])}{' …' if len(positions) > 8 else ''}), "
        "coloured by sample time"
        + (", over the fields of view it imaged (shaded)" if fov_um is not None else "")
        + ". Measured tracks are the analysis's object centroids joined by "
        "track id."
    )
    if truth is not None:
        caption += (
            " Grey: the simulator's true cell positions, recorded only while "
            "each cell was in a field of view."
        )
    else:
        caption += " No ground truth in this run folder (truth/cells.csv)."
    if followed is None:
        caption += " The stage did not follow an object (no MoveStage aimed at one)."
    else:
        caption += (
            f" Followed: track {followed.track_id}, the target of "
            f"{followed.votes} of {followed.moves} stage moves"
            + (
                f"; it was the simulator's cell {followed.cell_id}."
                if followed.cell_id is not None
                else "."
            )
        )
    return Panel(_png(fig), caption)


def _label(ax: Axes, text: str, x: float, y: float, offset: tuple[int, int]) -> None:
    ax.annotate(
        text, (x, y), fontsize=8, xytext=offset, textcoords="offset points", zorder=9
    )


def _tracks(
    ids: np.ndarray, frame: np.ndarray, x: np.ndarray, y: np.ndarray
) -> list[np.ndarray]:
    """(K, 2) polylines, one per stretch of an id seen without a long gap,
    points in ``frame`` order, thinned. A gap of more than 2.5 typical steps
    (the median frame step of all ids: one time point) is a break: an object
    seen again after it left the view is not joined to where it was."""
    idx = np.lexsort((frame, ids))
    ids, frame, x, y = ids[idx], frame[idx], x[idx], y[idx]
    same = np.diff(ids) == 0
    steps = np.diff(frame)[same]
    typical = float(np.median(steps)) if steps.size else 1.0
    cut = np.flatnonzero(~same | (np.diff(frame) > 2.5 * max(typical, 1.0))) + 1
    segs = []
    per_track = max(20, MAX_POINTS * 4 // max(1, len(cut) + 1))
    for part in np.split(np.arange(len(ids)), cut):
        if len(part) < 2:
            continue
        keep = part[_thin(len(part), per_track)]
        segs.append(np.column_stack((x[keep], y[keep])))
    return segs


def _measured_objects(data: RunData) -> np.ndarray:
    """(N, 4) float64: frame index, track id, x_um, y_um of every measured object."""
    rows = [
        (index, o[1], o[2], o[3])
        for index, res in data.analyses.items()
        for o in res.objects
    ]
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4)


def _fields(ax: Axes, x: np.ndarray, y: np.ndarray, fov_um: tuple[float, float]) -> Any:
    """Shade the field of view at each distinct stage position (µm)."""
    from matplotlib.collections import PolyCollection

    h, w = fov_um
    centres = np.unique(np.round(np.column_stack((x, y)), 1), axis=0)
    centres = centres[_thin(len(centres), MAX_FIELDS)]
    box = np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) / 2.0
    # faint fills: where fields overlap the shade adds up
    lines = PolyCollection(
        [box + c for c in centres],
        facecolors="#a0785a",
        edgecolors="none",
        alpha=min(0.25, max(0.03, 3.0 / len(centres))),
        zorder=0,
        label=f"fields of view ({w:.0f} × {h:.0f} µm)",
    )
    ax.add_collection(lines)
    return lines


# ------------------------------------------------------------- settings


def settings_panel(data: RunData) -> Panel:
    """Exposure, light-source power and time-lapse interval over sample time,
    with the actions that changed them."""
    frames = data.acquisition_frames()
    if not frames:
        return _no_data(
            "No frame was acquired: there is no exposure, power or interval to plot."
        )
    fig = _figure(8.0, 6.0)
    axes = fig.subplots(3, 1, sharex=True)
    t_min = np.array([f.t_s for f in frames]) / 60.0
    channels = sorted({f.channel for f in frames})
    for ch in channels:
        sel = np.array([f.channel == ch for f in frames])
        keep = _thin(int(sel.sum()))
        exp = np.array([f.exposure_ms for f in frames])[sel][keep]
        axes[0].step(t_min[sel][keep], exp, where="post", label=ch or "(no channel)")
    power = np.array([f.laser_mw for f in frames])
    keep = _thin(len(frames))
    axes[1].step(t_min[keep], power[keep], where="post", color="#9467bd")
    t_int, interval = time_point_intervals_s(frames)
    if interval.size:
        keep = _thin(len(interval))
        axes[2].step(t_int[keep] / 60.0, interval[keep], where="post", color="#8c564b")
    else:
        axes[2].text(
            0.5,
            0.5,
            "fewer than two time points: no interval",
            transform=axes[2].transAxes,
            ha="center",
            va="center",
            fontsize=9,
        )
    n_marked = 0
    for ax, kind, key in (
        (axes[0], "SetExposure", "exposure_ms"),
        (axes[1], "SetLaserPower", "power_mw"),
        (axes[2], "SetInterval", "interval_s"),
    ):
        n_marked += _action_marks(ax, data, kind, key)
    axes[0].set_ylabel("exposure (ms)", fontsize=9)
    axes[1].set_ylabel("power (mW)", fontsize=9)
    axes[2].set_ylabel("interval (s)", fontsize=9)
    axes[2].set_xlabel("sample time (min)")
    for ax in axes:
        _style(ax)
        # from zero: a jitter of milliseconds must not look like a swing
        ax.set_ylim(bottom=0, top=max(ax.get_ylim()[1], 1e-9) * 1.05)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best", framealpha=0.85)
    caption = (
        "Exposure (per channel) and light-source power as recorded with each "
        "frame (frame records); the interval is the sample time between the "
        "starts of consecutive time points."
    )
    if n_marked:
        caption += (
            " Markers: the actions that asked for a change (action records), at "
            "the sample time they were applied (interpolated between frames) and "
            "the value asked for; hollow red: refused, failed or not applied."
        )
    else:
        caption += " No action changed exposure, power or interval in this run."
    return Panel(_png(fig), caption)


def _action_marks(ax: Axes, data: RunData, kind: str, key: str) -> int:
    """Mark the ``kind`` actions on ``ax``: filled where applied or clamped,
    hollow red otherwise. Returns how many were marked."""
    acts, values = [], []
    for a in data.actions:
        req = a.requested
        if a.type != kind or not isinstance(req, dict):
            continue
        try:
            values.append(float(req[key]))
        except (KeyError, TypeError, ValueError):
            continue  # an ill-formed request: it is in the action's record
        acts.append(a)
    if not acts:
        return 0
    t = wall_to_sample_s(data, np.array([a.t_action for a in acts])) / 60.0
    asked = np.array(values)
    done = np.array([a.status in ("applied", "clamped") for a in acts])
    keep = _thin(len(acts))
    t, asked, done = t[keep], asked[keep], done[keep]
    if done.any():
        ax.scatter(
            t[done],
            asked[done],
            marker="v",
            s=22,
            color="#2ca02c",
            zorder=5,
            label=f"{kind} applied",
        )
    if (~done).any():
        ax.scatter(
            t[~done],
            asked[~done],
            marker="o",
            s=26,
            facecolors="none",
            edgecolors="#d62728",
            zorder=5,
            label=f"{kind} not applied",
        )
    return len(acts)


# ------------------------------------------------------------- latency


def latency_panel(data: RunData) -> Panel:
    """Histograms of frame → result, result → action and frame → action."""
    if not data.frames:
        return _no_data("No frame was acquired: there are no latencies to show.")
    lat = latencies_ms(data)
    series = {k: v for k, v in lat.items() if v.size}
    if not series:
        return _no_data(
            "No frame was analysed: there are no frame → result → action latencies."
        )
    fig = _figure(8.0, 3.6)
    ax = fig.add_subplot()
    _style(ax)
    top = max(float(np.percentile(v, 99.5)) for v in series.values()) * 1.1
    low = min(0.0, min(float(v.min()) for v in series.values()))
    bins = np.linspace(low, max(top, low + 1e-3), 50)
    colors = {
        "frame → result": "#1f77b4",
        "result → action": "#2ca02c",
        "frame → action": "#d62728",
    }
    clipped = 0
    for name, v in series.items():
        clipped += int((v > bins[-1]).sum())
        ax.hist(
            np.clip(v, bins[0], bins[-1]),
            bins=bins,
            histtype="step",
            linewidth=1.6,
            color=colors[name],
            label=f"{name}: n {v.size}, p50 {np.median(v):.1f}, "
            f"p95 {np.percentile(v, 95):.1f}, max {v.max():.1f} ms",
        )
    ax.set_xlabel("latency (ms, wall clock)")
    ax.set_ylabel("count")
    ax.legend(fontsize=8, loc="best", framealpha=0.85)
    caption = (
        "Wall-clock latencies of the reactive loop, from the records' "
        "timestamps (time.perf_counter): frame → result is the analysis "
        "(t_result − t_frame); result → action is from the analysis result to "
        "the action applied on the hardware (t_action − t_result; actions land "
        "between blocks of the plan); frame → action is the whole loop."
    )
    if clipped:
        caption += f" {clipped} value(s) beyond the last bin are counted in it."
    if "frame → action" not in series:
        caption += " No action was applied in this run."
    return Panel(_png(fig), caption)


# ------------------------------------------------------------- analysis time

#: the analysis stages in the order they run, with their colours
_STAGE_COLOURS = {
    "background": "#7f7f7f",
    "denoise": "#1f77b4",
    "segment": "#2ca02c",
    "measure": "#ff7f0e",
    "track": "#9467bd",
}


def analysis_time_panel(data: RunData) -> Panel:
    """Each analysed frame's time, stage by stage (its record's
    ``stages_ms``), stacked over the run, with the plan's pace."""
    from smartscope.io.summary import readable_ms

    if not data.acquisition_frames():
        return _no_data("No frame was acquired: no analysis time to show.")
    done = sorted(
        (i, a) for i, a in data.analyses.items() if a.error is None and a.stages_ms
    )
    if not done:
        if not any(a.error is None for a in data.analyses.values()):
            return _no_data("No frame was analysed: no analysis time to show.")
        return _no_data(
            "The analysis records say nothing of their stages' times (a run "
            "from before they were written)."
        )
    stages = [k for k in _STAGE_COLOURS if any(k in a.stages_ms for _, a in done)]
    all_ms = np.array(
        [[a.stages_ms.get(k, 0.0) for k in stages] for _, a in done], dtype=float
    )
    # rounded as summary.json rounds its p50 (io.summary.percentiles), so the
    # two print the same figure
    medians = [round(float(m), 3) for m in np.median(all_ms, axis=0)]
    keep = _thin(len(done))
    index = np.array([i for i, _ in done], dtype=float)[keep]
    ms = all_ms[keep]
    fig = _figure(8.0, 3.6)
    ax = fig.add_subplot()
    _style(ax)
    ax.stackplot(
        index,
        ms.T,
        labels=[
            f"{k} (median {m:.1f} ms)" for k, m in zip(stages, medians, strict=True)
        ],
        colors=[_STAGE_COLOURS[k] for k in stages],
        alpha=0.85,
        step="mid",
    )
    planned = None
    if data.summary is not None:
        planned = data.summary.get("planned_frame_ms")
    if planned is None and data.started is not None:
        planned = data.started.planned_frame_ms
    top = float(np.percentile(all_ms.sum(axis=1), 99.5)) * 1.15
    far = planned is not None and planned > 3.0 * top
    if planned is not None and not far:
        ax.axhline(
            planned,
            color="#d62728",
            linestyle="--",
            linewidth=1.2,
            label=f"the plan's pace: a frame every {readable_ms(planned)} ms",
        )
    ax.set_xlabel("frame")
    ax.set_ylabel("analysis time (ms)")
    ax.set_ylim(0, max(top, 1.2 * planned if planned and not far else 0.0, 1e-3))
    ax.legend(fontsize=8, loc="upper right", framealpha=0.85)
    caption = (
        "Where each analysed frame's time went, stage by stage (the analysis "
        "records' stages_ms, wall clock): background, denoise, segment (a "
        "model's rescaling, normalisation and post-processing included), "
        "measure, track. With two analysis stages (analysis.stages: 2) the "
        "denoiser of the next frame runs while the segmenter finishes this "
        "one, so the analysis keeps up while the slower stage, not the "
        "stack, is within the plan's pace. Medians: "
        + ", ".join(f"{k} {m:.1f} ms" for k, m in zip(stages, medians, strict=True))
        + "."
    )
    if far:
        caption += (
            f" The plan's pace, a frame every {readable_ms(planned)} ms, is far "
            "above the plot: the analysis had time to spare."
        )
    if keep.size < len(done):
        caption += f" {len(done)} frames, {keep.size} drawn (evenly thinned)."
    return Panel(_png(fig), caption)


# ------------------------------------------------------------- dose


def dose_panel(data: RunData) -> Panel:
    """The light dose: over time and per position (the ledger), per cell
    (the simulator's truth, and an estimate from the records)."""
    frames = data.frames
    if not frames:
        return _no_data("No frame was acquired: no light dose was counted.")
    per_frame = frame_dose_mj(frames)
    if not np.any(per_frame > 0):
        return _no_data(
            "The dose ledger counted no light (no light-source role, or no power)."
        )
    truth = data.truth
    followed = followed_cell(data)
    fig = _figure(9.0, 6.4)
    axes = fig.subplots(2, 2)
    # the ledger over time, per position
    t_min = np.array([f.t_s for f in frames]) / 60.0
    pos = np.array([f.position for f in frames])
    for name in sorted(set(pos.tolist())):
        sel = pos == name
        cum = np.cumsum(per_frame[sel])
        keep = _thin(len(cum))
        axes[0, 0].step(t_min[sel][keep], cum[keep], where="post", label=name)
    axes[0, 0].set_xlabel("sample time (min)", fontsize=9)
    axes[0, 0].set_ylabel("cumulative dose (mJ)", fontsize=9)
    axes[0, 0].set_title("ledger, per position", fontsize=9)
    if len(set(pos.tolist())) <= 10:
        axes[0, 0].legend(fontsize=7)
    by_pos = dose_per_position_mj(frames)
    names = sorted(by_pos, key=by_pos.__getitem__, reverse=True)[:MAX_CELLS]
    axes[0, 1].bar(range(len(names)), [by_pos[n] for n in names], color="#9467bd")
    axes[0, 1].set_xticks(range(len(names)), names, rotation=45, ha="right")
    axes[0, 1].set_ylabel("dose (mJ)", fontsize=9)
    axes[0, 1].set_title("ledger, total per position", fontsize=9)
    measured = measured_dose_per_track_mj(data)
    f_track = followed.track_id if followed is not None else None
    f_cell = followed.cell_id if followed is not None else None
    if truth is not None and len(truth):
        _dose_bars(
            axes[1, 0],
            truth_dose_per_cell_j_cm2(truth),
            highlight=f_cell,
            unit="J/cm²",
            title="per cell: simulator truth (fluence)",
            what="cell",
        )
    else:
        axes[1, 0].set_axis_off()
        axes[1, 0].text(
            0.5,
            0.5,
            "no ground truth\n(truth/cells.csv)",
            ha="center",
            va="center",
            transform=axes[1, 0].transAxes,
            fontsize=9,
        )
    if measured:
        _dose_bars(
            axes[1, 1],
            measured,
            highlight=f_track,
            unit="mJ",
            title="per track: ledger while detected (estimate)",
            what="track",
        )
    else:
        axes[1, 1].set_axis_off()
        axes[1, 1].text(
            0.5,
            0.5,
            "no object was tracked",
            ha="center",
            va="center",
            transform=axes[1, 1].transAxes,
            fontsize=9,
        )
    for ax in axes.flat:
        if ax.axison:
            _style(ax)
    caption = (
        "Top: the dose ledger (what was measured: the light-source power read "
        "with each frame × its exposure, mJ), over time and in total per "
        f"position; {float(per_frame.sum()):.2f} mJ in all. "
        "Bottom right: an estimate per measured track, the ledger dose of the "
        "frames in which the track was detected; that is light on the whole "
        "field of view while the object was in it, not light absorbed by the "
        "object, and frames where it was missed are not counted."
    )
    if truth is not None:
        caption += (
            " Bottom left: the simulator's own count per cell (fluence at the "
            "cell, J/cm², the last value recorded while the cell was in view); "
            "ground truth, available only on the simulator."
        )
    else:
        caption += " No per-cell truth: this run folder has no truth/cells.csv."
    caption += (
        f" At most {MAX_CELLS} bars per chart (the highest); the followed "
        "object, if any, in red."
    )
    return Panel(_png(fig), caption)


def _dose_bars(
    ax: Axes,
    dose: dict[int, float],
    *,
    highlight: int | None,
    unit: str,
    title: str,
    what: str,
) -> None:
    ids = sorted(dose, key=dose.__getitem__, reverse=True)[:MAX_CELLS]
    if highlight is not None and highlight in dose and highlight not in ids:
        ids[-1] = highlight
    colors = ["#d62728" if i == highlight else "#7f7f7f" for i in ids]
    ax.bar(range(len(ids)), [dose[i] for i in ids], color=colors)
    ax.set_xticks(range(len(ids)), [str(i) for i in ids], rotation=90, fontsize=7)
    ax.set_xlabel(what, fontsize=9)
    ax.set_ylabel(f"dose ({unit})", fontsize=9)
    ax.set_title(title, fontsize=9)


# ------------------------------------------------------------- skipped


def skipped_panel(data: RunData) -> Panel:
    """Frames dropped from analysis (queue full, too late, abandoned at stop)
    and analysis errors over the run's wall time."""
    frames = data.acquisition_frames()
    if not frames:
        return _no_data("No frame was acquired: none was skipped for analysis.")
    n_done = len(data.analyses)
    if not n_done and not data.skipped and not data.analysis_errors:
        return _no_data(
            "No frame was analysed or skipped: analysis was off in this run."
        )
    errors = sorted(
        {e.index for e in data.analysis_errors}
        | {i for i, a in data.analyses.items() if a.error is not None}
    )
    if not data.skipped and not errors:
        return _no_data(
            f"No frame was skipped for analysis: {n_done} of {len(frames)} "
            "acquired frames were analysed, without an error."
        )
    t_of = {f.index: f.t_frame for f in data.frames}
    fig = _figure(8.0, 3.4)
    ax = fig.add_subplot()
    _style(ax)
    named = ("queue full", "too late", "abandoned at stop")
    groups = {
        "skipped: queue full": [s.index for s in data.skipped if s.reason == named[0]],
        "skipped: too late": [s.index for s in data.skipped if s.reason == named[1]],
        "abandoned at stop": [s.index for s in data.skipped if s.reason == named[2]],
        # e.g. "analysis thread ended": the analysis ended before the frame
        "skipped: other": [s.index for s in data.skipped if s.reason not in named],
        "analysis error": errors,
        "analysed": [i for i, a in data.analyses.items() if a.error is None],
    }
    colors = ["#d62728", "#e377c2", "#ff7f0e", "#7f7f7f", "#8c564b", "#1f77b4"]
    for (name, idx), color in zip(groups.items(), colors, strict=True):
        t = np.sort(np.array([t_of[i] for i in idx if i in t_of], dtype=float))
        if not t.size:
            continue
        keep = _thin(t.size)
        ax.step(
            t[keep],
            np.arange(1, t.size + 1)[keep],
            where="post",
            color=color,
            label=f"{name} ({t.size})",
            linewidth=1.4,
        )
    ax.set_xlabel("wall time since the run started (s)")
    ax.set_ylabel("frames (cumulative)")
    ax.legend(fontsize=8, loc="best", framealpha=0.85)
    caption = (
        "Cumulative counts of frames by their fate in the analysis, at the "
        "time each frame was taken (analysis_skipped, analysis_error and "
        "analysis records). A frame skipped for analysis (the analysis queue "
        "was full, or it had waited longer than analysis.max_wait_ms while a "
        "newer frame waited) or abandoned at the stop is still on disk; "
        "reactions did not see it."
    )
    return Panel(_png(fig), caption)


# ------------------------------------------------------------- images


def contact_sheet_panel(data: RunData) -> Panel:
    """Raw and denoised images of a few frames, with the label outlines."""
    from smartscope.report_images import frame_images

    frames = data.acquisition_frames()
    if not frames:
        return _no_data("No frame was acquired: there are no images to show.")
    analysed = [f for f in frames if f.index in data.analyses]
    pool = analysed or frames
    chosen = [pool[i] for i in _thin(len(pool), SHEET_FRAMES)]
    raws, dens, labs, titles = [], [], [], []
    for f in chosen:
        try:
            raw, den, lab = frame_images(data.run_dir, f.index)
        except (OSError, IndexError, ValueError) as e:
            return _no_data(f"The images could not be read ({type(e).__name__}: {e}).")
        raws.append(raw)
        dens.append(den)
        labs.append(lab)
        titles.append(f"frame {f.index}, {f.t_s / 60:.1f} min, {f.position}")
    if len({r.shape for r in raws}) != 1:
        return _no_data("The chosen frames differ in size; no contact sheet.")
    has_labels = any(lab is not None for lab in labs)
    has_denoised = any(d is not None for d in dens)
    rows = [_sheet_row(raws, labs, [f"raw: {t}" for t in titles])]
    if has_denoised:
        zeros = np.zeros_like(raws[0], dtype=np.float32)
        rows.append(
            _sheet_row(
                [d if d is not None else zeros for d in dens],
                labs,
                [f"denoised: {t}" for t in titles],
            )
        )
    sheet = np.concatenate(rows, axis=0)
    from PIL import Image

    buf = io.BytesIO()
    # zlib's default level: 45 ms and 156 kB for the demo's sheet, against
    # 540 ms and 141 kB with optimize=True (its search of every setting)
    Image.fromarray(sheet).save(buf, format="PNG")
    caption = (
        f"{len(chosen)} frames spread over the run ("
        + ("analysed frames" if analysed else "none was analysed")
        + "): the raw camera image"
        + (" and, below, the denoiser's output" if has_denoised else "")
        + (
            ", with the outlines of the analysis's labels (what the reactions "
            "saw) in yellow"
            if has_labels
            else ""
        )
        + ". Contrast stretched per row (0.5–99.95th percentile of the row)."
    )
    if not has_denoised:
        caption += " This run has no denoised images (no denoiser, or not saved)."
    if not has_labels:
        caption += " No label images were saved (save: labels), so no outlines."
    return Panel(buf.getvalue(), caption)


def _sheet_row(
    images: list[np.ndarray], labels: list[np.ndarray | None], titles: list[str]
) -> np.ndarray:
    """One row of the contact sheet: (H, W, 3) uint8, tiles of about
    ``SHEET_TILE_PX``, each titled (cut to fit its tile)."""
    from smartscope.contact_sheet import contact_sheet

    stack = np.stack([np.asarray(i, dtype=np.float32) for i in images])[None]
    lab = np.stack(
        [
            np.asarray(lab, dtype=np.int32)
            if lab is not None
            else np.zeros(images[0].shape, np.int32)
            for lab in labels
        ]
    )[None]
    tile = images[0].shape[-1] // max(1, round(images[0].shape[-1] / SHEET_TILE_PX))
    fit = max(8, tile // 7)  # the sheet's font: about 7 px a character
    return contact_sheet(
        stack, lab, tile_px=SHEET_TILE_PX, col_titles=[t[:fit] for t in titles]
    )
