"""The run report: one self-contained ``report.html`` per run folder.

``smartscope report RUN_DIR`` (and ``smartscope run`` at the end of a run)
writes ``RUN_DIR/report.html``: the run's status and finish reason, then one
section per figure (:mod:`smartscope.report_plots`, drawn from the records
:mod:`smartscope.report_data` reads) and ``summary.json`` as a table. Every
image is embedded as a base64 PNG; the page loads nothing from anywhere, so
it can be mailed, archived or opened offline. A figure the run has no data
for (no actions, no denoiser, no truth, no frames) is replaced by a sentence
that says so, and a figure that fails to draw says that instead of taking the
report down with it.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from smartscope.report_data import ReportError, RunData, load_run
from smartscope.report_plots import (
    Panel,
    analysis_time_panel,
    contact_sheet_panel,
    dose_panel,
    latency_panel,
    settings_panel,
    skipped_panel,
    stage_path_panel,
)

__all__ = ["REPORT_NAME", "SECTIONS", "ReportError", "build_report", "write_report"]

logger = logging.getLogger("smartscope.report")

#: the report's file name in the run folder
REPORT_NAME = "report.html"


@dataclass(frozen=True)
class _Section:
    id: str
    title: str
    draw: Callable[[RunData], Panel]


def _stage_path(data: RunData) -> Panel:
    from smartscope.report_images import field_of_view_um

    return stage_path_panel(data, field_of_view_um(data.run_dir))


#: the figure sections, in page order: (HTML id, title, figure)
SECTIONS: tuple[_Section, ...] = (
    _Section("stage-path", "Stage path and tracks", _stage_path),
    _Section("settings", "Exposure, power and interval", settings_panel),
    _Section("latency", "Frame → result → action latency", latency_panel),
    _Section("analysis-time", "Where the analysis time went", analysis_time_panel),
    _Section("dose", "Light dose", dose_panel),
    _Section("skipped", "Frames skipped for analysis", skipped_panel),
    _Section("contact-sheet", "Raw and denoised frames", contact_sheet_panel),
)

_STATUS_COLOURS = {
    "completed": "#2e7d32",
    "stopped": "#1565c0",
    "interrupted": "#ef6c00",
    "killed": "#c62828",
    "error": "#c62828",
}

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;
max-width:1000px;padding:16px 24px;color:#222;line-height:1.4}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.2em;margin:1.4em 0 .4em;
border-bottom:1px solid #ddd;padding-bottom:.2em}
.status{display:inline-block;color:#fff;border-radius:4px;padding:2px 10px;
font-weight:600}.reason{font-size:1.05em;margin:.4em 0}
.meta,.note,figcaption{color:#555;font-size:.9em}
.nodata{background:#f5f5f5;border-left:4px solid #bbb;padding:8px 12px}
.failed{border-left-color:#c62828}
figure{margin:0}img{max-width:100%;height:auto;display:block}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;
padding:3px 8px;text-align:left;vertical-align:top}th{background:#f5f5f5}
nav a{margin-right:1em}
"""


def build_report(run_dir: str | Path) -> str:
    """The report of ``run_dir`` as one HTML page (a string). Raises
    :class:`ReportError` for a folder that is not a run folder."""
    t0 = time.perf_counter()
    data = load_run(run_dir)
    body = [_header(data)]
    body.append(
        "<nav>"
        + "".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in SECTIONS)
        + '<a href="#summary">Summary</a></nav>'
    )
    for section in SECTIONS:
        body.append(_figure_section(section, data))
    body.append(_summary_section(data))
    body.append(
        f'<p class="meta">Made by smartscope in {time.perf_counter() - t0:.1f} s, '
        f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')}, "
        f"from {html.escape(str(Path(run_dir).resolve()))}.</p>"
    )
    title = html.escape(f"{data.protocol}: {data.status}")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of ``run_dir`` to ``out`` (default
    ``RUN_DIR/report.html``), whole or not at all; returns its path. Raises
    :class:`ReportError` for a folder that is not a run folder or a report
    that cannot be written."""
    from smartscope.controller.recorder import write_atomic

    page = build_report(run_dir)
    path = Path(out) if out is not None else Path(run_dir) / REPORT_NAME
    try:
        write_atomic(path, page)
    except OSError as e:
        raise ReportError(f"cannot write {path}: {e.strerror or e}") from e
    return path


# ------------------------------------------------------------------ parts


def _header(data: RunData) -> str:
    colour = _STATUS_COLOURS.get(data.status, "#555")
    parts = [
        f"<h1>{html.escape(data.protocol)}</h1>",
        f'<p><span class="status" style="background:{colour}">'
        f"{html.escape(data.status)}</span></p>",
        f'<p class="reason">Finished: {html.escape(data.finish_reason)}</p>',
    ]
    facts = []
    s = data.summary or {}
    n_frames = s.get("frames_acquired", len(data.frames))
    facts.append(f"{n_frames} frames")
    wall, sample = _number(s.get("wall_time_s")), _number(s.get("sample_time_s"))
    if wall is not None:
        facts.append(f"{wall:.1f} s wall time")
    if sample is not None:
        facts.append(f"{sample / 60:.1f} min sample time")
    if data.started is not None:
        facts.append(f"{data.started.time_mode} time")
        when = datetime.fromtimestamp(data.started.t_wall, tz=timezone.utc)
        facts.append(f"started {when.strftime('%Y-%m-%d %H:%M:%S UTC')}")
        if data.started.simulator:
            sim = data.started.simulator
            facts.append(
                f"simulator (seed {sim.get('seed')}, scene {sim.get('scene')})"
            )
    parts.append(f'<p class="meta">{html.escape(", ".join(facts))}</p>')
    recovery = s.get("recovery")
    if data.status == "killed" or recovery:
        parts.append(
            '<p class="note">This run was killed before it could finish; '
            "`smartscope recover` rebuilt its summary from the log and the frames "
            "on disk. What the log lost at the kill is not in this report.</p>"
        )
    for note in data.notes:
        parts.append(f'<p class="note">{html.escape(note)}</p>')
    return "\n".join(parts)


def _figure_section(section: _Section, data: RunData) -> str:
    head = f'<section id="{section.id}"><h2>{html.escape(section.title)}</h2>'
    try:
        panel = section.draw(data)
    except Exception as e:  # one broken figure must not cost the whole report
        logger.exception("report figure %s failed", section.id)
        return (
            f'{head}<p class="nodata failed">This figure could not be drawn '
            f"({html.escape(type(e).__name__)}: {html.escape(str(e)[:300])}).</p>"
            "</section>"
        )
    if panel.png is None:
        return f'{head}<p class="nodata">{html.escape(panel.caption)}</p></section>'
    b64 = base64.b64encode(panel.png).decode("ascii")
    return (
        f'{head}<figure><img alt="{html.escape(section.title)}" '
        f'src="data:image/png;base64,{b64}">'
        f"<figcaption>{html.escape(panel.caption)}</figcaption></figure></section>"
    )


def _summary_section(data: RunData) -> str:
    head = '<section id="summary"><h2>Summary</h2>'
    if data.summary is None:
        return (
            f'{head}<p class="nodata">This run folder has no readable summary.json '
            "(`smartscope recover RUN_DIR` rebuilds it for a killed run).</p>"
            "</section>"
        )
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_cell(v))}</td></tr>"
        for k, v in data.summary.items()
    )
    return (
        f'{head}<p class="meta">summary.json, field by field '
        "(docs/controller.md says what each one means).</p>"
        f"<table>{rows}</table></section>"
    )


def _number(value: Any) -> float | None:
    """``value`` as a float, or None where it is not a number."""
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _cell(value: Any) -> str:
    """One summary value as short text."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        if not value:
            return "–"
        return "; ".join(f"{k}: {_cell(v)}" for k, v in value.items())
    if isinstance(value, list):
        if not value:
            return "–"
        if all(isinstance(v, dict) for v in value):
            return " | ".join(_cell(v) for v in value)
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, str):
        return value
    return json.dumps(value)
