"""Parameter sweeps on Ray: many seeded simulated runs in parallel, scored and tabled.

``smartscope sweep PROTOCOL --grid GRID.yaml`` lands here. The grid is read
and every run's protocol validated first (:mod:`smartscope.sweep_grid`:
nothing is written before all are accepted); then each run is one Ray task
that runs its protocol with :func:`smartscope.run.run_protocol` (its own
simulator, in the task's worker process) and scores it with
:func:`smartscope.score.score_run`. The driver collects one
:class:`~smartscope.sweep_table.SweepRow` per run and writes the sweep
folder::

    SWEEP/
      protocol.yaml, grid.yaml      the inputs, as given
      protocols/<run>.yaml          each run's protocol (varied values and seed applied)
      runs/<run>/                   each run's folder (as `smartscope run` writes it, + score.json)
      sweep.csv, sweep.json         one row per run: parameters, seed, status, metrics
      sweep.png                     the outcome metric against the light dose

A run that fails is a row with its status and error; the sweep goes on.
Ray is local (``ray.init(num_cpus=...)``) unless an address is given; on a
cluster the sweep folder must be on a file system every node shares.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from smartscope.sweep_grid import (
    PlannedRun,
    SweepError,
    SweepPlan,
    combo_label,
    load_grid,
    plan_sweep,
)
from smartscope.sweep_table import (
    SweepRow,
    choose_outcome,
    scalar_metrics,
    write_plot,
    write_table,
)

__all__ = [
    "SweepError",
    "SweepResult",
    "SweepRow",
    "default_sweep_dir",
    "run_sweep",
]

#: Version of sweep.json's layout.
SWEEP_SCHEMA_VERSION = 1
#: Seconds the driver waits for runs in flight to finish their folders after
#: Ctrl-C (each stops after its current frame).
_CANCEL_WAIT_S = 60.0


@dataclass(frozen=True)
class SweepResult:
    """What a sweep wrote and how its runs went."""

    out_dir: Path
    rows: tuple[SweepRow, ...]
    """One per run, in the plan's order (combination, then seed)."""
    csv_path: Path
    json_path: Path
    plot_path: Path | None
    """``sweep.png`` (None: no run was scored, nothing to plot)."""
    outcome: str | None
    """The metric on the plot's y axis."""
    ray_start_s: float
    """Seconds to start (or connect to) Ray."""
    wall_time_s: float
    """Seconds from the first run submitted to the last one collected."""
    notes: tuple[str, ...] = field(default=())

    @property
    def n_ok(self) -> int:
        """Runs that went as their protocol asked and were scored."""
        return sum(r.ok for r in self.rows)


def default_sweep_dir(name: str) -> Path:
    """``./sweeps/<protocol name>-YYYYmmdd-HHMMSS``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("sweeps") / f"{name}-{stamp}"


def run_sweep(
    protocol: str | Path,
    grid: str | Path,
    *,
    out_dir: str | Path | None = None,
    address: str | None = None,
    max_parallel: int | None = None,
    outcome: str | None = None,
    on_progress: Callable[[int, int, SweepRow], None] | None = None,
    on_plan: Callable[[SweepPlan], None] | None = None,
) -> SweepResult:
    """Run every combination x seed of ``grid`` on ``protocol``; write the sweep folder.

    ``address``: a Ray cluster to connect to (``ray.init(address=...)``);
    None starts a local Ray with ``max_parallel`` CPUs (default: this
    machine's). If Ray is already initialised in this process it is used as
    it is (and left running). ``max_parallel``: most runs at once (default:
    one per CPU Ray has). ``outcome``: the metric ``sweep.png`` plots against
    the light dose (default: see :data:`~smartscope.sweep_table.DEFAULT_OUTCOMES`).
    ``on_progress(done, total, row)`` is called in this thread as each run
    ends; ``on_plan(plan)`` once every run is validated, before Ray starts.

    Raises :class:`SweepError` (or :class:`~smartscope.protocol.ProtocolError`)
    for refused input, before anything is written; and, once the table is
    written, for an ``outcome`` no run has.
    """
    if max_parallel is not None and max_parallel < 1:
        raise SweepError(f"--max-parallel must be at least 1, got {max_parallel}")
    plan = plan_sweep(protocol, load_grid(grid))
    _check_scoring()
    out = (
        Path(out_dir) if out_dir is not None else default_sweep_dir(plan.protocol_name)
    )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "a folder that is not empty" if out.is_dir() else "a file"
        raise SweepError(
            f"the sweep folder {out} is {what}; give a new folder with --out"
        )
    if on_plan is not None:
        on_plan(plan)
    ray = _import_ray()
    t0 = time.perf_counter()
    started = _start_ray(ray, address=address, max_parallel=max_parallel)
    ray_start_s = time.perf_counter() - t0
    try:
        if max_parallel is None:
            max_parallel = max(1, int(ray.cluster_resources().get("CPU", 1)))
        _write_inputs(out, plan)
        rows, wall_s, notes = _run_all(ray, plan, out, max_parallel, on_progress)
    finally:
        if started:
            ray.shutdown()
    header = {
        "schema_version": SWEEP_SCHEMA_VERSION,
        "protocol": str(plan.protocol_path.resolve()),
        "protocol_name": plan.protocol_name,
        "grid": str(plan.grid.path.resolve()),
        "seeds": sorted({r.seed for r in plan.runs}),
        "vary": {k: list(v) for k, v in plan.grid.vary},
        "runs_total": len(rows),
        "runs_ok": sum(r.ok for r in rows),
        "ray": {"address": address or "local", "max_parallel": max_parallel},
        "ray_start_s": round(ray_start_s, 3),
        "wall_time_s": round(wall_s, 3),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
    }
    try:
        chosen = choose_outcome(rows, outcome)
    except KeyError as e:
        header["outcome"] = None
        write_table(rows, out, header=header)
        raise SweepError(
            f"{e.args[0]} (sweep.csv and sweep.json in {out} are written; no plot)"
        ) from None
    header["outcome"] = chosen
    csv_path, json_path = write_table(rows, out, header=header)
    plot_path = None
    if chosen is not None:
        plot_path = write_plot(
            rows,
            out / "sweep.png",
            outcome=chosen,
            title=f"{plan.protocol_name}: {len(rows)} runs, "
            f"{len({r.combo for r in rows})} combinations",
        )
    return SweepResult(
        out_dir=out,
        rows=tuple(rows),
        csv_path=csv_path,
        json_path=json_path,
        plot_path=plot_path,
        outcome=chosen,
        ray_start_s=ray_start_s,
        wall_time_s=wall_s,
        notes=tuple(notes),
    )


# -------------------------------------------------------------------- Ray


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise SweepError(
            "smartscope sweep needs Ray: pip install 'smartscope[ray]'"
        ) from None
    return ray


def _check_scoring() -> None:
    try:
        from smartscope.score import score_run  # noqa: F401
    except ImportError as e:
        raise SweepError(
            f"cannot score runs: smartscope.score.score_run is not available ({e})"
        ) from None


def _start_ray(ray: Any, *, address: str | None, max_parallel: int | None) -> bool:
    """Start or connect to Ray unless this process already has; return
    whether this call did (and so must shut it down)."""
    import logging

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,  # runs report through their rows, not stderr
        "logging_level": logging.ERROR,
    }
    if address is None:
        kwargs["num_cpus"] = max_parallel or os.cpu_count() or 1
    else:
        _check_reachable(address)
        kwargs["address"] = address
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        detail = " ".join(str(e).split())[:300]
        raise SweepError(
            f"cannot start {where}: {type(e).__name__}: {detail}"
        ) from None
    return True


def _check_reachable(address: str) -> None:
    """Refuse a ``HOST:PORT`` (or ``ray://HOST:PORT``) nothing answers at:
    Ray itself keeps trying for minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" and other forms: Ray's own lookup
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=10):
            pass
    except OSError as e:
        raise SweepError(
            f"cannot reach the Ray cluster at {address}: {e.strerror or e} "
            "(is `ray start --head` running there, on that port?)"
        ) from None


def _write_inputs(out: Path, plan: SweepPlan) -> None:
    try:
        (out / "protocols").mkdir(parents=True, exist_ok=True)
        (out / "runs").mkdir(exist_ok=True)
        (out / "protocol.yaml").write_bytes(plan.protocol_path.read_bytes())
        (out / "grid.yaml").write_bytes(plan.grid.path.read_bytes())
        for run in plan.runs:
            (out / "protocols" / f"{run.run_id}.yaml").write_text(
                run.protocol_yaml, encoding="utf-8"
            )
    except OSError as e:
        raise SweepError(
            f"cannot write the sweep folder {out}: {e.strerror or e}"
        ) from None


def _row(run: PlannedRun) -> SweepRow:
    return SweepRow(
        run=run.run_id,
        combo=run.combo,
        label=combo_label(run.params),
        params=dict(run.params),
        seed=run.seed,
        run_dir=f"runs/{run.run_id}",
    )


def _run_all(
    ray: Any,
    plan: SweepPlan,
    out: Path,
    max_parallel: int,
    on_progress: Callable[[int, int, SweepRow], None] | None,
) -> tuple[list[SweepRow], float, list[str]]:
    """Submit the runs, at most ``max_parallel`` at once; collect their rows."""
    task = ray.remote(num_cpus=1, max_retries=0)(run_and_score)
    rows = [_row(run) for run in plan.runs]
    todo = list(range(len(plan.runs)))
    todo.reverse()
    in_flight: dict[Any, int] = {}
    done = 0
    notes: list[str] = []
    t0 = time.perf_counter()
    out_abs = out.resolve()

    def submit() -> None:
        while todo and len(in_flight) < max_parallel:
            i = todo.pop()
            run = plan.runs[i]
            ref = task.remote(
                run.protocol_yaml,
                str(out_abs / "protocols" / f"{run.run_id}.yaml"),
                str(out_abs / rows[i].run_dir),
            )
            in_flight[ref] = i

    def collect(ref: Any) -> None:
        nonlocal done
        i = in_flight.pop(ref)
        try:
            result = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            result = {"status": "cancelled", "error": "the sweep was interrupted"}
        except ray.exceptions.RayError as e:  # the worker died (memory, a crash)
            detail = " ".join(str(e).split())[:500]
            result = {"status": "failed", "error": f"{type(e).__name__}: {detail}"}
        _fill(rows[i], result)
        if (
            result.get("status") not in ("failed", "cancelled")
            and not (out_abs / rows[i].run_dir / "summary.json").is_file()
        ):
            notes.append(
                f"{rows[i].run}: its folder is not on this machine (ran on "
                f"{result.get('host')}): on a cluster, --out must be shared"
            )
        if result.get("score_json"):
            notes.append(f"{rows[i].run}: score.json {result['score_json']}")
        done += 1
        if on_progress is not None:
            on_progress(done, len(rows), rows[i])

    try:
        submit()
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                collect(ref)
            submit()
    except KeyboardInterrupt:
        for ref in in_flight:
            ray.cancel(ref)  # the run stops after its current frame
        deadline = time.perf_counter() + _CANCEL_WAIT_S
        while in_flight and time.perf_counter() < deadline:
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
            for ref in ready:
                collect(ref)
        for i in [*in_flight.values(), *todo]:
            rows[i].status, rows[i].error = "cancelled", "the sweep was interrupted"
        write_table(rows, out, header={"interrupted": True})
        raise
    return rows, time.perf_counter() - t0, notes


def _fill(row: SweepRow, result: dict[str, Any]) -> None:
    row.status = str(result.get("status") or "failed")
    row.error = result.get("error")
    row.exit_code = result.get("exit_code")
    row.frames = result.get("frames")
    row.light_dose_mj = result.get("light_dose_mj")
    row.wall_time_s = result.get("wall_time_s")
    row.metrics = dict(result.get("metrics") or {})
    row.metrics_na = list(result.get("metrics_na") or ())


# ------------------------------------------------------------- in a worker


def run_and_score(
    protocol_yaml: str, protocol_file: str, run_dir: str
) -> dict[str, Any]:
    """Run one protocol and score it; what a Ray task of a sweep does.

    Writes ``protocol_yaml`` to ``protocol_file`` when that file is not there
    (a cluster node without the sweep folder), runs it into ``run_dir`` with
    :func:`~smartscope.run.run_protocol` (no progress, no report) and scores
    the folder with :func:`~smartscope.score.score_run` (also written to
    ``run_dir/score.json``, as ``smartscope score`` does). Never raises for a
    run's own failure: returns ``status``, ``error``, ``exit_code``,
    ``frames``, ``light_dose_mj``, ``wall_time_s``, ``metrics``,
    ``metrics_na`` and ``host``.
    """
    from smartscope.run import run_protocol

    out: dict[str, Any] = {"host": socket.gethostname(), "metrics": {}}
    path = Path(protocol_file)
    try:
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(protocol_yaml, encoding="utf-8")
        _, summary = run_protocol(path, out_dir=run_dir, progress=False, report=False)
    except Exception as e:  # the run ended before its folder was finished
        out.update(status="failed", error=_why(e))
        return out
    dose = summary.get("light_dose_mj", summary.get("light_dose_mj_estimated"))
    out.update(
        status=summary.get("status"),
        exit_code=summary.get("exit_code"),
        frames=summary.get("frames_acquired"),
        light_dose_mj=dose,
        wall_time_s=summary.get("wall_time_s"),
        error=None,
    )
    if summary.get("exit_code") != 0:
        out["error"] = str(summary.get("finish_reason") or summary.get("status"))
    try:
        from smartscope.score import score_run, write_score

        score = score_run(run_dir)
        values, n_a = scalar_metrics(score)
        out.update(metrics=values, metrics_na=list(n_a))
    except Exception as e:  # a folder the scorer refuses is this row's problem
        why = f"scoring failed: {_why(e)}"
        out["error"] = f"{out['error']}; {why}" if out["error"] else why
        return out
    try:
        write_score(run_dir, score)
    except OSError as e:  # the metrics are in the row all the same
        out["score_json"] = f"not written: {_why(e)}"
    return out


def _why(e: BaseException) -> str:
    from smartscope.errors import SmartscopeError

    text = " ".join(str(e).split())[:1000]
    return text if isinstance(e, SmartscopeError) else f"{type(e).__name__}: {text}"
