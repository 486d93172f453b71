"""Run a protocol file end to end: what ``smartscope run`` does.

Loads and validates the protocol and the configuration (nothing moves before
both are accepted), runs the :class:`~smartscope.controller.Controller` with a
live progress display, and releases the core cleanly afterwards.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal

__all__ = ["default_run_dir", "run_protocol"]


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
) -> tuple[Path, dict[str, Any]]:
    """Run a protocol; return the run folder and the summary.

    ``config`` overrides the protocol's ``config`` (None and no protocol config:
    the simulator); ``time_mode`` overrides the protocol's time mode.
    """
    from smartscope.controller import Controller
    from smartscope.hardware import load_core, release_core
    from smartscope.protocol import load_protocol

    protocol_path = Path(protocol_path)
    proto = load_protocol(protocol_path)
    if time_mode is not None:
        proto = proto.model_copy(update={"time_mode": time_mode})
    cfg = config if config is not None else proto.config
    if cfg is not None and not Path(cfg).is_absolute() and config is None:
        cfg = protocol_path.parent / cfg
    out = Path(out_dir) if out_dir is not None else default_run_dir(proto.name)
    core = load_core(cfg, time_mode=proto.time_mode, seed=proto.seed)
    try:
        ctl = Controller(core, proto, out_dir=out, device=device)
        summary = _run_with_progress(ctl, proto) if progress else ctl.run()
    finally:
        release_core(core)
    return out, summary


def _run_with_progress(ctl: Any, proto: Any) -> dict[str, Any]:

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    tp = proto.sequence.time_plan
    n_t = tp.num_timepoints() if tp is not None else 1
    per_t = max(1, len(proto.sequence.stage_positions) or 1) * max(
        1, len(proto.sequence.channels) or 1
    )
    total = proto.stop.max_frames or (n_t * per_t if n_t != float("inf") else None)
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
                actions=sum(ctl.stats.actions.values()),
            )

        summary = ctl.run(on_tick=_update)
        _update()
    return summary
