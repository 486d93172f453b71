"""The table and the plot of a sweep: one row per run, ``sweep.csv``,
``sweep.json`` and ``sweep.png``.

:mod:`smartscope.sweep` fills a :class:`SweepRow` per run (what the run's
``summary.json`` and its score say); this module writes them out. The score
(:func:`smartscope.score.score_run`, a nested dict) becomes flat metrics with
dotted keys (``events.captured_fraction``), numbers, booleans and nulls only.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_OUTCOMES",
    "SweepRow",
    "choose_outcome",
    "outcome_values",
    "scalar_metrics",
    "write_plot",
    "write_table",
]

#: Outcome metrics ``sweep.png`` plots by default, the first one any run has a
#: value for: mitoses caught, then how well a followed cell stayed centred,
#: then segmentation quality, then focus.
DEFAULT_OUTCOMES = (
    "events.captured_fraction",
    "centring.fraction_within_quarter_half_field",
    "segmentation.ap_50",
    "focus.fraction_in_depth_of_field",
)
# score keys that are bookkeeping, not metrics
_NOT_METRICS = frozenset({"schema_version"})
# the row's own columns; a metric of the same name is written as score.NAME
_FIXED = (
    "run",
    "combo",
    "seed",
    "status",
    "error",
    "run_dir",
    "frames",
    "light_dose_mj",
    "wall_time_s",
)


@dataclass
class SweepRow:
    """One run of a sweep, as the table shows it."""

    run: str
    """Run id (``c0-seed1``), also the run folder's name."""
    combo: int
    """Index of the parameter combination."""
    label: str
    """The combination as ``key=value, key=value``."""
    params: dict[str, Any]
    """Dotted protocol key -> value of this run."""
    seed: int
    run_dir: str
    """The run folder, relative to the sweep folder."""
    status: str = "not_run"
    """The run's summary status (completed, stopped, error, interrupted ...),
    ``failed`` when the run raised before finishing its folder, ``cancelled``
    when the sweep was stopped before it ran."""
    error: str | None = None
    """Why the run or its scoring failed (None: neither did)."""
    exit_code: int | None = None
    """The run's exit status as ``smartscope run`` would end (None: no summary)."""
    frames: int | None = None
    """Frames acquired (summary.json ``frames_acquired``)."""
    light_dose_mj: float | None = None
    """Light dose, mJ (summary.json ``light_dose_mj``)."""
    wall_time_s: float | None = None
    """The run's own wall time, s (summary.json; machine-dependent)."""
    metrics: dict[str, float | int | bool] = field(default_factory=dict)
    """Every scalar metric of the run's score with a value, dotted keys
    (empty: not scored)."""
    metrics_na: list[str] = field(default_factory=list)
    """The score's metrics that are null (n/a) for this run, dotted keys."""

    @property
    def ok(self) -> bool:
        """The run went as its protocol asked (exit status 0) and was scored."""
        return self.error is None and self.exit_code == 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def scalar_metrics(
    score: Mapping[str, Any],
) -> tuple[dict[str, float | int | bool], tuple[str, ...]]:
    """Flatten a score (nested dicts) into ``({dotted key: number}, n/a keys)``.

    Numbers and booleans are the metrics. Nulls (a metric the run had not
    what it needed for) are listed apart, as keys. Text (``protocol``,
    ``status``) and lists (per-frame series, ``notes``) are not scalar
    metrics and are left out.
    """
    values: dict[str, float | int | bool] = {}
    n_a: list[str] = []
    stack: list[tuple[str, Any]] = [
        (str(k), v) for k, v in score.items() if k not in _NOT_METRICS
    ]
    stack.reverse()
    while stack:
        key, value = stack.pop()
        if isinstance(value, Mapping):
            stack.extend(reversed([(f"{key}.{k}", v) for k, v in value.items()]))
        elif value is None:
            n_a.append(key)
        elif isinstance(value, bool):
            values[key] = value
        elif isinstance(value, int | float):
            values[key] = value if isinstance(value, int) else float(value)
        elif hasattr(value, "item") and getattr(value, "ndim", None) == 0:
            values[key] = value.item()  # a numpy scalar
    return values, tuple(n_a)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def outcome_values(rows: Sequence[SweepRow], key: str) -> list[float | None]:
    """``key`` (a metric, ``frames``, ``light_dose_mj`` or ``wall_time_s``)
    for each row, None where the row has no number for it."""
    out: list[float | None] = []
    for r in rows:
        v = r.metrics.get(key) if key in r.metrics else getattr(r, key, None)
        if key in ("run", "combo", "seed") or not _is_number(v):
            v = None
        out.append(float(v) if v is not None else None)
    return out


def choose_outcome(rows: Sequence[SweepRow], wanted: str | None) -> str | None:
    """The metric to plot: ``wanted`` (checked) or the first of
    :data:`DEFAULT_OUTCOMES` any row has a number for. None when no row was
    scored. Raises KeyError (with the keys there are) for an unknown key."""
    numeric = {k for r in rows for k, v in r.metrics.items() if _is_number(v)} | {
        "frames",
        "light_dose_mj",
        "wall_time_s",
    }
    if wanted is not None:
        known = numeric | {k for r in rows for k in (*r.metrics, *r.metrics_na)}
        if wanted not in known:
            raise KeyError(
                f"--outcome {wanted!r} is not a metric of these runs; the ones "
                "with numbers: " + ", ".join(sorted(numeric))
            )
        return wanted
    for key in DEFAULT_OUTCOMES:
        if key in numeric:
            return key
    metric_keys = sorted(k for k in numeric if any(k in r.metrics for r in rows))
    return metric_keys[0] if metric_keys else None


# ------------------------------------------------------------------ files


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return value


def write_table(
    rows: Sequence[SweepRow],
    out_dir: Path,
    *,
    header: dict[str, Any],
) -> tuple[Path, Path]:
    """Write ``sweep.csv`` (flat: one column per parameter and per metric) and
    ``sweep.json`` (``header`` and the rows, parameters and metrics nested)
    into ``out_dir``; return both paths."""
    from smartscope.controller.recorder import write_atomic

    param_keys = list(dict.fromkeys(k for r in rows for k in r.params))
    metric_keys = list(
        dict.fromkeys(k for r in rows for k in (*r.metrics, *r.metrics_na))
    )
    taken = set(_FIXED) | set(param_keys) | {"label", "exit_code"}
    metric_cols = {k: (f"score.{k}" if k in taken else k) for k in metric_keys}
    columns = [
        "run",
        "combo",
        "label",
        "seed",
        *param_keys,
        "status",
        "exit_code",
        "error",
        "run_dir",
        "frames",
        "light_dose_mj",
        "wall_time_s",
        *metric_cols.values(),
    ]
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        flat: dict[str, Any] = {
            "run": r.run,
            "combo": r.combo,
            "label": r.label,
            "seed": r.seed,
            "status": r.status,
            "exit_code": r.exit_code,
            "error": r.error,
            "run_dir": r.run_dir,
            "frames": r.frames,
            "light_dose_mj": r.light_dose_mj,
            "wall_time_s": r.wall_time_s,
        }
        flat.update({k: r.params.get(k) for k in param_keys})
        flat.update({metric_cols[k]: r.metrics.get(k) for k in metric_keys})
        writer.writerow({k: _cell(v) for k, v in flat.items()})
    csv_path = out_dir / "sweep.csv"
    write_atomic(csv_path, buf.getvalue())
    json_path = out_dir / "sweep.json"
    doc = {**header, "runs": [r.to_dict() for r in rows]}
    write_atomic(json_path, json.dumps(doc, indent=2, default=str) + "\n")
    return csv_path, json_path


def write_plot(
    rows: Sequence[SweepRow],
    path: Path,
    *,
    outcome: str,
    title: str,
) -> Path:
    """``outcome`` against the light dose, one colour per combination: each
    run a dot, each combination's mean a cross with ±1 SD bars. Written with
    matplotlib's Agg backend (no display needed)."""
    import numpy as np
    from matplotlib.figure import Figure

    ys = outcome_values(rows, outcome)
    doses = outcome_values(rows, "light_dose_mj")
    fig = Figure(figsize=(7.5, 5.0), layout="constrained")
    ax = fig.add_subplot()
    combos = list(dict.fromkeys(r.combo for r in rows))
    plotted = 0
    for colour, combo in zip(_colours(len(combos)), combos, strict=True):
        mine = [i for i, r in enumerate(rows) if r.combo == combo]
        pts = np.array(
            [
                (doses[i], ys[i])
                for i in mine
                if doses[i] is not None and ys[i] is not None
            ],
            dtype=float,
        ).reshape(-1, 2)
        label = rows[mine[0]].label
        legend = label if len(pts) == len(mine) else f"{label} ({len(pts)}/{len(mine)})"
        if not len(pts):
            ax.plot([], [], "o", color=colour, label=f"{legend}: no value")
            continue
        plotted += len(pts)
        ax.plot(pts[:, 0], pts[:, 1], "o", color=colour, alpha=0.55, label=legend)
        if len(pts) > 1:
            mean, sd = pts.mean(axis=0), pts.std(axis=0, ddof=1)
            ax.errorbar(
                mean[0],
                mean[1],
                xerr=sd[0],
                yerr=sd[1],
                fmt="x",
                color=colour,
                ms=10,
                capsize=3,
            )
    ax.set_xlabel("light dose (mJ)")
    ax.set_ylabel(outcome)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    if plotted == 0:
        ax.text(
            0.5,
            0.5,
            f"no run has a value for {outcome}",
            transform=ax.transAxes,
            ha="center",
            va="center",
        )
    ax.legend(fontsize=7, loc="best", title="combination (runs plotted)")
    fig.savefig(path, dpi=120)
    return path


def _colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["viridis"](i / max(n - 1, 1)) for i in range(n)]
