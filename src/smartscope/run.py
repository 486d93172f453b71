"""Run a protocol file end to end: what ``smartscope run`` does.

Loads and validates the protocol and the configuration (nothing moves before
both are accepted), runs the :class:`~smartscope.controller.Controller` with a
live progress display, and releases the core cleanly afterwards.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from smartscope.errors import SmartscopeError
from smartscope.io.summary import readable_ms

__all__ = [
    "StartInterrupted",
    "default_run_dir",
    "expected_frames",
    "run_protocol",
    "summary_table",
]


class StartInterrupted(SmartscopeError):
    """A stop signal arrived before the run folder existed: nothing was
    acquired and nothing is left behind."""

    def __init__(self, signal: str) -> None:
        from smartscope.interrupts import exit_status

        self.signal = signal
        self.exit_code = exit_status(signal)
        super().__init__(
            f"interrupted ({signal}) during start-up: nothing was acquired and "
            "no run folder was written"
        )


def default_run_dir(name: str) -> Path:
    """``./runs/<protocol name>-YYYYmmdd-HHMMSS``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{name}-{stamp}"


def run_protocol(
    protocol_path: str | Path,
    *,
    config: str | Path | None = None,
    out_dir: str | Path | None = None,
    device: Literal["auto", "cpu", "cuda"] = "auto",
    time_mode: Literal["virtual", "realtime"] | None = None,
    progress: bool = True,
    report: bool | None = None,
    on_start: Callable[[Path], None] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Run a protocol; return the run folder and the summary.

    ``config`` overrides the protocol's ``config`` (None and no protocol config:
    the simulator); ``time_mode`` overrides the protocol's time mode.
    ``report``: write ``report.html`` once the run folder is finished (None:
    as the protocol's ``save.report`` says); a report that cannot be written
    is one line on stderr and changes nothing else. ``on_start`` is called
    with the run folder once the protocol is validated, before the run starts
    (``smartscope run --view`` opens the view there).
    """
    try:
        return _run_protocol(
            protocol_path,
            config,
            out_dir,
            device,
            time_mode,
            progress,
            report,
            on_start,
        )
    except KeyboardInterrupt as e:  # before the run folder existed
        from smartscope.interrupts import signal_name

        raise StartInterrupted(signal_name(e)) from None


def _run_protocol(
    protocol_path: str | Path,
    config: str | Path | None,
    out_dir: str | Path | None,
    device: Literal["auto", "cpu", "cuda"],
    time_mode: Literal["virtual", "realtime"] | None,
    progress: bool,
    report: bool | None,
    on_start: Callable[[Path], None] | None,
) -> tuple[Path, dict[str, Any]]:
    from smartscope.controller import Controller
    from smartscope.hardware import load_core, release_core
    from smartscope.interrupts import shielded
    from smartscope.protocol import load_protocol

    protocol_path = Path(protocol_path)
    proto = load_protocol(protocol_path)
    if time_mode is not None:
        proto = proto.model_copy(update={"time_mode": time_mode})
    cfg = config if config is not None else proto.config
    if cfg is not None and not Path(cfg).is_absolute() and config is None:
        cfg = protocol_path.parent / cfg
    out = Path(out_dir) if out_dir is not None else default_run_dir(proto.name)
    # the protocol's simulator settings (seed, scene, time mode) are applied
    # when the core is loaded; the controller never resets the simulator
    core = load_core(cfg, time_mode=proto.time_mode, seed=proto.seed, scene=proto.scene)
    ctl = None
    try:
        ctl = Controller(core, proto, out_dir=out, device=device)
        if on_start is not None:
            on_start(out)
        summary = _run_with_progress(ctl, proto) if progress else ctl.run()
    except KeyboardInterrupt:
        if ctl is None or ctl.summary is None:
            raise  # before the run folder existed
        summary = ctl.summary  # a signal just after the run finished its folder
    finally:
        with shielded():
            release_core(core)
        wanted = proto.save.report if report is None else report
        if wanted and ctl is not None and ctl.summary is not None:  # folder done
            _write_report(out)
    return out, summary


def _write_report(out: Path) -> None:
    """Write ``out/report.html``. Whatever goes wrong (a stop signal
    included: it skips the report) is one line on stderr: the run, its folder
    and its exit status stay as they are."""
    try:
        from smartscope.report import write_report

        write_report(out)
    except (Exception, KeyboardInterrupt) as e:
        why = "interrupted" if isinstance(e, KeyboardInterrupt) else type(e).__name__
        detail = " ".join(str(e).split())[:200]
        sys.stderr.write(
            f"smartscope: report.html not written ({why}: {detail}); the run is "
            f"unaffected; `smartscope report {out}` tries again\n"
        )


def expected_frames(ctl: Any) -> int | None:
    """Frames the run will take as planned (every axis; None: open-ended),
    capped by the protocol's ``max_frames``."""
    n_t = ctl.plan.n_timepoints()
    total = None if n_t == float("inf") else int(n_t) * ctl.plan.events_per_timepoint()
    cap = ctl.protocol.stop.max_frames
    if cap is not None:
        total = cap if total is None else min(total, cap)
    return total


def _run_with_progress(ctl: Any, proto: Any) -> dict[str, Any]:

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    total = expected_frames(ctl)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} frames"),
        TextColumn("lag {task.fields[lag]}"),
        TextColumn("actions {task.fields[actions]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(proto.name, total=total, lag=0, actions=0)

        def _update() -> None:
            bar.update(
                task,
                completed=ctl.frames_acquired,
                lag=ctl.analysis_lag,
                actions=sum(ctl.stats.actions.values()) if ctl.stats else 0,
            )

        summary = ctl.run(on_tick=_update)
        _update()
    return summary


#: the analysis stages in the order they run (``analysis_stages_ms``)
STAGES = ("background", "denoise", "segment", "measure", "track")


def analysis_time(
    summary: dict[str, Any],
    *,
    per: str = "",
    only: tuple[str, ...] = STAGES,
    digits: int = 1,
) -> str:
    """The analysis' time a frame from ``analysis_stages_ms``: the sum of
    every stage's median, ``per``, then the medians of the stages in
    ``only`` that round above 0 ("-" without analysed frames)."""
    stages = summary.get("analysis_stages_ms") or {}
    medians = {
        k: stages[k]["p50"]
        for k in STAGES
        if stages.get(k, {}).get("n") and stages[k]["p50"] is not None
    }
    if not medians:
        return "-"
    parts = ", ".join(
        f"{k} {v:.{digits}f}"
        for k, v in medians.items()
        if k in only and round(v, digits) > 0
    )
    return f"{sum(medians.values()):.{digits}f} ms{per} (medians: {parts})"


#: the analysis' wait for the results thread (s in all) from which a run's
#: printout says the disk held it back (shorter ones are noise)
STORAGE_WAIT_NOTED_S = 0.05


def analysis_behind(summary: dict[str, Any]) -> str | None:
    """Why frames were skipped from analysis, in one sentence (None when
    none was): what the analysis took a frame against the plan's pace."""
    skipped = int(summary.get("frames_skipped_analysis") or 0)
    if not skipped:
        return None
    took = analysis_time(summary, per=" a frame in all")
    planned = summary.get("planned_frame_ms")
    pace = (
        f", and the plan took a frame every {readable_ms(planned)} ms"
        if planned
        else ""
    )
    # autofocus planes are not analysed: of the frames that were to be
    acquired = int(summary.get("frames_acquired") or 0) - int(
        summary.get("frames_autofocus") or 0
    )
    waited = float(summary.get("storage_waited_s") or 0.0)
    stored = summary.get("storage_ms") or {}
    disk = (
        f"; it also waited {waited:.1f} s in all for the analysed frames to be "
        f"stored ({readable_ms(stored['p50'])} ms a frame): the disk held it "
        "back, and saving fewer images (save.denoised, save.labels) or a "
        "faster disk keep up"
        if waited >= STORAGE_WAIT_NOTED_S and stored.get("p50") is not None
        else ""
    )
    return (
        f"the analysis did not keep up: {skipped} of "
        f"{acquired} frames were not analysed (the queue was full, or they "
        "had waited longer than analysis.max_wait_ms; every frame is on "
        f"disk); its stages took {took}{pace}{disk}. A "
        "longer interval, fewer positions or channels, a faster model or a "
        "GPU keep up; analysis.queue_size absorbs longer bursts, and "
        "analysis.max_wait_ms keeps the reactions on the newest frames"
    )


def storage_time(summary: dict[str, Any]) -> str:
    """What storing an analysed frame took (its rows, label and denoised
    planes, on the results thread), and how long the analysis waited for
    it; "-" when nothing was stored."""
    d = summary.get("storage_ms") or {}
    if not d.get("n"):
        return "-"
    text = f"p50 {d['p50']:.1f} / p99 {d['p99']:.1f} ms"
    waited = float(summary.get("storage_waited_s") or 0.0)
    if waited >= STORAGE_WAIT_NOTED_S:
        text += f"; the analysis waited {waited:.1f} s for it"
    return text


def summary_table(summary: dict[str, Any]) -> Any:
    """The summary as a rich table (what ``smartscope run`` prints)."""
    from rich.table import Table

    table = Table(title=f"{summary.get('protocol', '')}: {summary.get('status', '')}")
    table.add_column("", style="bold")
    table.add_column("")
    lat_r = summary.get("latency_frame_to_result_ms", {})
    lat_a = summary.get("latency_frame_to_action_ms", {})

    def _lat(d: dict) -> str:
        if not d or d.get("n", 0) == 0:
            return "-"
        return f"p50 {d['p50']:.1f} / p95 {d['p95']:.1f} / p99 {d['p99']:.1f} ms"

    def _late(d: dict | None) -> str:
        if not d or d.get("n", 0) == 0:
            return "-"  # no time plan
        return (
            f"p50 {d['p50']:.1f} / p99 {d['p99']:.1f} / max {d['max']:.1f} ms"
            " after the planned start"
        )

    actions = ", ".join(
        f"{k} " + "/".join(f"{n} {st}" for st, n in v.items())
        for k, v in summary.get("actions", {}).items()
    )
    rows = [
        ("finished", str(summary.get("finish_reason", ""))),
        ("frames acquired", str(summary.get("frames_acquired"))),
        ("frames analysed", str(summary.get("frames_analysed"))),
        ("skipped for analysis", str(summary.get("frames_skipped_analysis"))),
        ("abandoned at stop", str(summary.get("frames_abandoned_analysis", 0))),
        ("analysis errors", str(summary.get("frames_failed_analysis", 0))),
        ("reaction errors", str(summary.get("reaction_errors", 0))),
        ("device errors", str(summary.get("device_errors", 0))),
        ("analysis a frame", analysis_time(summary)),
        ("storing a frame", storage_time(summary)),
        ("frame → result", _lat(lat_r)),
        ("frame → action", _lat(lat_a)),
        ("frames late for the time plan", _late(summary.get("frame_late_ms"))),
        ("actions", actions or "none"),
        (
            "light dose",
            f"{summary.get('light_dose_mj', summary.get('light_dose_mj_estimated', 0)):.1f} mJ",
        ),
        ("wall time", f"{summary.get('wall_time_s', 0):.1f} s"),
        ("sample time", f"{summary.get('sample_time_s', 0):.0f} s"),
    ]
    for k, v in rows:
        table.add_row(k, v)
    return table
