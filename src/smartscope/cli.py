"""The ``smartscope`` command line (typer, with rich output).

Every command imports what it needs when it runs: ``import smartscope.cli``
and ``smartscope --help`` load neither torch, zarr nor pymmcore-plus.
Errors smartscope raises on purpose (:class:`~smartscope.errors.SmartscopeError`)
end a command with one red line on stderr and exit status 2; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from smartscope.errors import SmartscopeError

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["LAZY_SUBCOMMANDS", "add_lazy_subcommand", "app", "main"]

#: Exit status of a refused input or a failed run (a SmartscopeError).
EXIT_ERROR = 2
#: Exit status of an unexpected error (a bug in smartscope).
EXIT_BUG = 1
#: ``--debug``: tracebacks are shown
_DEBUG = False

app = typer.Typer(
    name="smartscope",
    help="Reactive microscopy on Micro-Manager: acquire, analyse every frame, react.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
)

# Sub-commands whose code lives in heavy modules (torch, the controller): they
# are registered from this table as thin commands that import their module
# only when invoked, so that `smartscope --help` stays fast. A row is
# (command name, module, attribute holding a typer.Typer or click command, help);
# a row whose module is not installed is skipped. Add `run` here once the
# controller's command line exists.
LAZY_SUBCOMMANDS: tuple[tuple[str, str, str, str], ...] = (
    (
        "train",
        "smartscope.nn.cli",
        "train_app",
        "Train, evaluate and export the denoising and segmentation models.",
    ),
)


# ------------------------------------------------------------------ helpers

#: ``smartscope run`` warns when the frames' p99 lateness for the time plan
#: is above this, ms
LATE_WARN_MS = 100.0


def _print_summary(out_dir: Path, summary: dict[str, Any]) -> None:
    from smartscope.run import analysis_behind, summary_table

    console = _console()
    console.print(summary_table(summary))
    late = summary.get("frame_late_ms") or {}
    if late.get("n") and late["p99"] is not None and late["p99"] > LATE_WARN_MS:
        console.print(
            f"[yellow]the acquisition fell behind its time plan: frames began up "
            f"to {late['max'] / 1000:.2f} s after their planned time (p99 "
            f"{late['p99']:.0f} ms); a late frame is taken as soon as possible, "
            "so the interval was longer than planned (a shorter exposure, fewer "
            "positions or a longer interval keep it)[/]"
        )
    behind = analysis_behind(summary)
    if behind is not None:
        console.print(f"[yellow]{_escape(behind)}[/]")
    console.print(f"run folder [bold]{_escape(str(out_dir.resolve()))}[/]")
    if (out_dir / "report.html").is_file():
        report_path = (out_dir / "report.html").resolve()
        console.print(f"report     [bold]{_escape(str(report_path))}[/]")


def _check_device(device: str, *, available: bool = False) -> None:
    """Exit 2 unless ``device`` is auto, cpu or cuda (and, with
    ``available``, one this machine has), saying what to use."""
    if device not in ("auto", "cpu", "cuda"):
        _fail(f"--device must be auto, cpu or cuda, got {device!r}")
    if available:
        from smartscope.nn.predictor import resolve_device

        try:
            resolve_device(device)
        except ValueError as e:
            _fail(f"--device: {e}; use --device cpu (or auto)")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _console(*, stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _print_error(message: str) -> None:
    """Print ``message`` as one red line on stderr."""
    from rich.markup import escape

    from smartscope.errors import printable

    one_line = " ".join(printable(message).split())
    _console(stderr=True).print(f"[bold red]error:[/] [red]{escape(one_line)}[/]")


def _fail(message: str, *, code: int = EXIT_ERROR) -> NoReturn:
    """Print ``message`` as one red line on stderr and exit with ``code``."""
    _print_error(message)
    raise typer.Exit(code)


@contextlib.contextmanager
def _reported_errors() -> Iterator[None]:
    """Turn a SmartscopeError into one red line and exit status 2."""
    try:
        yield
    except SmartscopeError as e:
        if _DEBUG:
            raise
        _fail(str(e), code=getattr(e, "exit_code", EXIT_ERROR))
    except KeyboardInterrupt as e:  # a stop signal in a command without a run
        from smartscope.interrupts import exit_status, signal_name

        name = signal_name(e)
        _fail(f"interrupted ({name})", code=exit_status(name))


def _human_size(n_bytes: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n_bytes < 1000 or unit == "GB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000
    raise AssertionError("unreachable")


def _size_on_disk(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _version_callback(value: bool) -> None:
    if value:
        from smartscope import __version__

        typer.echo(f"smartscope {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version_callback,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            envvar="SMARTSCOPE_DEBUG",
            help="Show Python tracebacks (for reporting a bug).",
        ),
    ] = False,
) -> None:
    """Reactive microscopy on Micro-Manager: acquire, analyse every frame, react."""
    global _DEBUG
    _DEBUG = debug


# ----------------------------------------------------------------- commands


#: ``--out`` of the commands that create a run folder
RunDirOption = Annotated[
    Path | None,
    typer.Option(
        "--out",
        "-o",
        show_default=False,
        help="Run folder to create. \\[default: ./runs/NAME-YYYYmmdd-HHMMSS]",
    ),
]


@app.command()
def run(
    protocol: Annotated[Path, typer.Argument(help="Protocol YAML file.")],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            show_default=False,
            help="Micro-Manager .cfg. \\[default: the protocol's, else the simulator]",
        ),
    ] = None,
    out: RunDirOption = None,
    device: Annotated[
        str, typer.Option("--device", help="Where models run: auto, cpu or cuda.")
    ] = "auto",
    time: Annotated[
        str | None,
        typer.Option(
            "--time",
            show_default=False,
            help="Simulator time: virtual or realtime. \\[default: the protocol's]",
        ),
    ] = None,
    no_report: Annotated[
        bool,
        typer.Option(
            "--no-report",
            help="Do not write report.html at the end (as `save: {report: false}`).",
        ),
    ] = False,
    view: Annotated[
        bool,
        typer.Option(
            "--view",
            help="Watch the run in napari as it goes (a separate window that "
            "reads the run folder; closing it does not stop the run).",
        ),
    ] = False,
) -> None:
    """Run a protocol: acquire, analyse every frame, react, record everything.

    Exit status: 0 completed, or stopped by the protocol's own stop condition
    or a reaction's Stop; 3 stopped by the on_error policy; 1 the run ended in
    an error (its folder and summary are written); 2 refused input (nothing
    moved); 130 / 143 / 129 interrupted by SIGINT / SIGTERM / SIGHUP (after the current frame,
    the folder finished). After SIGKILL, `smartscope recover RUN_DIR`.
    """
    _check_device(device)
    if time not in (None, "virtual", "realtime"):
        _fail(f"--time must be virtual or realtime, got {time!r}")
    from smartscope.run import run_protocol

    _run_and_report(
        lambda: run_protocol(
            protocol,
            config=config,
            out_dir=out,
            device=device,  # type: ignore[arg-type]
            time_mode=time,  # type: ignore[arg-type]
            report=False if no_report else None,
            on_start=_start_view if view else None,
        )
    )


def _start_view(out: Path) -> None:
    """Open ``smartscope view OUT --follow`` in a process of its own."""
    import subprocess

    subprocess.Popen(
        [sys.executable, "-m", "smartscope", "view", str(out), "--follow"],
        start_new_session=True,  # Ctrl-C in this terminal stops the run only
    )


def _run_and_report(
    start: Callable[[], tuple[Path, dict[str, Any]]],
    *,
    then: Callable[[Path, dict[str, Any]], None] | None = None,
) -> NoReturn:
    """Run, print the summary (and whatever ``then`` prints) and exit with the
    run's exit status (0 only for a run that completed or stopped as its
    protocol asked). SIGINT, SIGTERM and SIGHUP stop the run after the current
    frame; a second one is ignored until the summary is written and printed."""
    from smartscope.interrupts import settle, shielded, stop_signals

    with stop_signals():
        with _reported_errors():
            out_dir, summary = start()
        with shielded():
            _print_summary(out_dir, summary)
            if then is not None:
                then(out_dir, summary)
            settle()
    raise typer.Exit(int(summary.get("exit_code", 0)))


@app.command()
def check(
    protocol: Annotated[Path, typer.Argument(help="Protocol YAML file.")],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            show_default=False,
            help="Micro-Manager .cfg. \\[default: the protocol's, else the simulator]",
        ),
    ] = None,
    out: RunDirOption = None,
    time_analysis: Annotated[
        bool,
        typer.Option(
            "--time-analysis",
            help="Also load the protocol's models and time them on a frame of "
            "the camera's size (seconds): whether the analysis keeps up with "
            "the plan on this machine.",
        ),
    ] = False,
    device: Annotated[
        str,
        typer.Option(
            "--device", help="Where models run for --time-analysis: auto, cpu or cuda."
        ),
    ] = "auto",
) -> None:
    """Check a protocol against a configuration and move nothing.

    Everything `smartscope run` checks before the first device moves: the
    protocol, the configuration, the protocol against the hardware (roles,
    presets, each device's own ranges, every planned position and exposure
    within the limits) and the disk space; then prints the plan. Exit 0 when
    the run could start, 2 (one line) when it would be refused.
    """
    from smartscope.check import check_protocol

    _check_device(device, available=time_analysis)
    with _reported_errors():
        report = check_protocol(
            protocol,
            config=config,
            out_dir=out,
            time_analysis=time_analysis,
            device=device,
        )
    from rich.table import Table

    table = Table(title=f"{_escape(report.protocol)}: ready to run")
    table.add_column("", style="bold")
    table.add_column("")
    for label, value in report.rows():
        table.add_row(label, _escape(value))
    console = _console()
    console.print(table)
    for note in report.notes:
        console.print(f"[yellow]note:[/] {_escape(note)}")
    console.print("nothing was moved")


@app.command()
def demo(
    out: RunDirOption = None,
) -> None:
    """The reactive demo: follow a migrating nucleus with adaptive exposure.

    Runs protocols/demo.yaml on the simulated microscope in virtual time, with
    the shipped denoiser and segmentation model in the loop (under a minute on
    a CPU), then prints what the models found and gained, the decisions
    taken, and the run folder.
    """
    from smartscope._data import data_dir
    from smartscope.run import run_protocol

    _run_and_report(
        lambda: run_protocol(data_dir("protocols") / "demo.yaml", out_dir=out),
        then=_print_model_report,
    )


def _print_model_report(out_dir: Path, summary: dict[str, Any]) -> None:
    """What the demo's models and reactions did, measured from its folder."""
    from smartscope.demo import model_report

    if not summary.get("frames_analysed"):
        return
    try:
        lines = model_report(out_dir).lines()
    except Exception as e:  # the run's own exit status stands
        _print_error(
            f"what the models did could not be measured: {type(e).__name__}: {e}"
        )
        return
    console = _console()
    console.print("[bold]what the models did[/]")
    for label, text in lines:
        console.print(f"  {label:<14} {_escape(text)}")


@app.command("sim-demo")
def sim_demo(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            show_default=False,
            help="Run folder to write. \\[default: ./runs/demo-YYYYmmdd-HHMMSS]",
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Sample seed: same seed, same cells and noise.")
    ] = 1,
    time_points: Annotated[
        int,
        typer.Option(
            "--time-points", "--frames", min=1, help="Time points per position."
        ),
    ] = 6,
    interval_s: Annotated[
        float,
        typer.Option(
            "--interval-s",
            min=0.0,
            help="Time-lapse interval, seconds of (virtual) sample time.",
        ),
    ] = 300.0,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            show_default=False,
            help="Micro-Manager .cfg with the simulator's devices. "
            "\\[default: simulators/demo.cfg]",
        ),
    ] = None,
) -> None:
    """Image the simulated sample: OME-Zarr, a contact sheet and the truth.

    A short time-lapse on the simulator in virtual time (seconds of wall time):
    3 stage positions, DAPI + GFP, a plain pymmcore-plus MDA. Writes the
    frames as OME-Zarr, a PNG contact sheet (DAPI) with the ground-truth
    nucleus outlines, and the simulator's truth as CSV.
    """
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from smartscope.demo import run_demo

    err = _console(stderr=True)
    with (
        _reported_errors(),
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=err,
            transient=True,
            disable=not err.is_terminal,
        ) as progress,
    ):
        task = progress.add_task("acquiring", total=None)

        def on_frame(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        result = run_demo(
            out,
            seed=seed,
            time_points=time_points,
            interval_s=interval_s,
            config=config,
            progress=on_frame,
        )

    out_dir = result.out_dir.resolve()
    console = _console()
    console.print(
        f"[bold green]smartscope demo[/]: {result.n_frames} frames "
        f"({result.n_positions} positions × {result.n_time_points} time points × "
        f"{result.n_channels} channels) in {result.wall_s:.1f} s, "
        f"{result.sim_time_s / 60:.1f} min of sample time, "
        f"{result.n_cells_seen} nuclei seen"
    )
    console.print(f"  run folder     [bold]{escape(str(out_dir))}[/]")
    zarr_size = _human_size(_size_on_disk(result.zarr_path))
    rows = (
        (
            "images",
            result.zarr_path,
            f"OME-Zarr, {result.pixel_size_um:g} µm/px, {zarr_size}",
        ),
        ("contact sheet", result.contact_sheet_path, "DAPI, ground-truth outlines"),
        ("truth", result.cells_csv_path, "every nucleus in every frame"),
        (
            "frame index",
            result.frames_csv_path,
            "position, time point, channel per frame",
        ),
    )
    for label, path, note in rows:
        console.print(
            f"  {label:<14} {escape(str(path.resolve()))}  [dim]({escape(note)})[/]"
        )


@app.command()
def recover(
    run_dir: Annotated[
        Path, typer.Argument(help="Run folder of a run that was killed.")
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print what was done as JSON.")
    ] = False,
) -> None:
    """Finish a killed run's folder: repair the log and the images, write summary.json.

    After SIGKILL or a power cut: cuts a half-written last line off
    events.jsonl, cuts the raw frames back to those written, pads the label
    and denoised images to them, and writes summary.json (status killed) from
    the log and the frames on disk. A run folder with a summary.json is left
    alone.
    """
    from smartscope.recover import recover_run

    with _reported_errors():
        result = recover_run(run_dir)
    if as_json:
        import json

        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    console = _console()
    for note in result.notes:
        console.print(f"[bold]recover:[/] {_escape(note)}")
    _print_summary(run_dir, result.summary)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="Run folder.")],
) -> None:
    """Write RUN_DIR/report.html: plots of what a run did, in one offline page.

    The stage path over the sample with the tracks (and, on the simulator,
    the true cells), exposure, power and interval over time, the frame →
    result → action latencies, the light dose per position and per cell, the
    frames skipped for analysis, raw and denoised frames with their label
    outlines, and summary.json. Every image is embedded; the page loads
    nothing from anywhere. `smartscope run` writes it at the end of each run.
    """
    from smartscope.report import write_report

    with _reported_errors():
        path = write_report(run_dir)
    _console().print(f"report [bold]{_escape(str(path.resolve()))}[/]")


@app.command()
def sweep(
    protocol: Annotated[Path, typer.Argument(help="Protocol YAML file.")],
    grid: Annotated[
        Path,
        typer.Option(
            "--grid",
            show_default=False,
            help="GRID.yaml: seeds: [..] and vary: {dotted.field: [values]}.",
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            show_default=False,
            help="Sweep folder to create. \\[default: ./sweeps/NAME-YYYYmmdd-HHMMSS]",
        ),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            show_default=False,
            help="Ray cluster to run on (ray.init address). \\[default: a local Ray]",
        ),
    ] = None,
    max_parallel: Annotated[
        int | None,
        typer.Option(
            "--max-parallel",
            min=1,
            show_default=False,
            help="Most runs at once. \\[default: one per CPU]",
        ),
    ] = None,
    outcome: Annotated[
        str | None,
        typer.Option(
            "--outcome",
            show_default=False,
            help="Score metric sweep.png plots against the light dose, e.g. "
            "segmentation.ap_50. \\[default: events.captured_fraction, else "
            "the first of docs/sweep.md's list a run has]",
        ),
    ] = None,
) -> None:
    """Run every combination x seed of a grid on Ray, score each run, table them.

    Every run's protocol is validated before anything runs; each run is
    scored with `smartscope score`. Writes the sweep folder: runs/, one
    protocol per run, sweep.csv and sweep.json (one row per run: parameters,
    seed, status, frames, light dose, every scalar metric) and sweep.png.
    Exit status: 0 every run went as its protocol asked and was scored; 1
    some did not (their rows say why); 2 refused input (nothing ran).
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from smartscope.sweep import run_sweep

    err = _console(stderr=True)
    with (
        _reported_errors(),
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=err,
            disable=not err.is_terminal,
        ) as progress,
    ):
        task = progress.add_task("validating", total=None)
        result = run_sweep(
            protocol,
            grid,
            out_dir=out,
            address=address,
            max_parallel=max_parallel,
            outcome=outcome,
            on_plan=lambda plan: progress.update(
                task, description="starting Ray", total=len(plan.runs)
            ),
            on_progress=lambda done, total, row: progress.update(
                task, description="runs", completed=done, total=total
            ),
        )
    console = _console()
    failed = [r for r in result.rows if not r.ok]
    console.print(
        f"[bold]sweep[/]: {result.n_ok}/{len(result.rows)} runs ok in "
        f"{result.wall_time_s:.1f} s (+ {result.ray_start_s:.1f} s to start Ray)"
    )
    for r in failed:
        console.print(
            f"[red]{_escape(r.run)}[/] {_escape(r.status)}: {_escape(r.error or '')}"
        )
    for note in result.notes:
        console.print(f"[yellow]note:[/] {_escape(note)}")
    console.print(f"table  [bold]{_escape(str(result.csv_path.resolve()))}[/]")
    if result.plot_path is not None:
        console.print(
            f"plot   [bold]{_escape(str(result.plot_path.resolve()))}[/] "
            f"({_escape(result.outcome or '')} vs light dose)"
        )
    if failed:
        raise typer.Exit(1)  # the sweep ran; some runs did not


@app.command()
def view(
    run_dir: Annotated[Path, typer.Argument(help="Run folder.")],
    follow: Annotated[
        bool,
        typer.Option("--follow", help="Keep up with a run that is still writing."),
    ] = False,
) -> None:
    """Look at a run in napari: every position, channel, z and time point, the
    label images, the tracks with their ids and the controller's actions.

    Needs the [view] extra (napari, napari-ome-zarr). With --follow the view
    polls the folder once a second; `smartscope run --view` opens it so.
    """
    from smartscope.view import RunViewer, open_viewer

    with _reported_errors():
        if not follow:
            RunViewer(run_dir, None)  # refuse a folder that is not a run first
        open_viewer(run_dir, follow=follow)


@app.command()
def score(
    run_dir: Annotated[Path, typer.Argument(help="Run folder of a simulated run.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the score as JSON.")
    ] = False,
) -> None:
    """Score a simulated run against its ground truth; write RUN_DIR/score.json.

    Mitoses started in view and how many time points caught them, the light
    (total, per position, per cell, phototoxic deaths), the focus error and
    the autofocus share of the light, how well a followed cell stayed
    centred, and the average precision of the stored labels. A metric the
    run has not what it needs for is n/a, with the reason below the table.
    A folder without truth/cells.csv (a real microscope's run) exits 2.
    """
    from smartscope.score import score_run, score_table, write_score

    with _reported_errors():
        result = score_run(run_dir)
    try:
        written: Path | None = write_score(run_dir, result)
    except OSError as e:
        written = None
        _console(stderr=True).print(
            f"[yellow]note:[/] score.json not written: {_escape(str(e))}"
        )
    if as_json:
        import json

        typer.echo(json.dumps(result, indent=2))
        return
    console = _console()
    console.print(score_table(result))
    for note in result["notes"]:
        console.print(f"[yellow]note:[/] {_escape(note)}")
    if written is not None:
        console.print(f"score [bold]{_escape(str(written.resolve()))}[/]")


@app.command()
def bench(
    json_path: Annotated[
        Path | None,
        typer.Option(
            "--json",
            dir_okay=False,
            show_default=False,
            help="Also write the figures to this JSON file.",
        ),
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="Fewer, shorter runs.")
    ] = False,
    long: Annotated[
        bool,
        typer.Option(
            "--long", help="Also measure memory over 10,000 frames (minutes)."
        ),
    ] = False,
    scaling: Annotated[
        bool,
        typer.Option(
            "--scaling",
            help="Also time the analysis with the models at 256² to 2048² frames, "
            "stage by stage (minutes on a CPU).",
        ),
    ] = False,
    positions: Annotated[
        bool,
        typer.Option(
            "--positions",
            help="Also run the models in the loop with 1, 4 and 16 stage "
            "positions, 500 frames each (minutes on a CPU).",
        ),
    ] = False,
    everything: Annotated[
        bool,
        typer.Option(
            "--all",
            help="The whole reference measurement in one run: --long, "
            "--scaling, --positions and --realtime together (tens of minutes "
            "on a CPU); with --json, one file of every figure.",
        ),
    ] = False,
    realtime: Annotated[
        bool,
        typer.Option(
            "--realtime",
            help="Also run the demo in realtime at 20 frames/s, and at 10 "
            "frames/s beside two busy processes, 600 frames each, and say "
            "whether the targets hold (about 2 minutes).",
        ),
    ] = False,
    device: Annotated[
        str,
        typer.Option(
            "--device",
            help="Where the models run in the analysis measurements: auto "
            "(CUDA when there is one), cpu or cuda.",
        ),
    ] = "auto",
    denoise: Annotated[
        str | None,
        typer.Option(
            "--denoise",
            help="The realtime runs' denoiser instead of the demo's "
            "(denoise-care): a shipped name such as denoise-care-fast, or a "
            "model folder.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Measure speed (simulator, acquisition, analysis) and print a table."""
    if everything:
        if quick:
            _fail("--all is the whole measurement; leave out --quick")
        long = scaling = positions = realtime = True
    try:
        bench_module = importlib.import_module("smartscope.bench")
    except ModuleNotFoundError as e:
        if e.name != "smartscope.bench":
            raise
        _fail(
            "the benchmarks (smartscope.bench) are not part of this installation; "
            "reinstall smartscope",
            code=1,
        )
    try:
        from smartscope.nn.predictor import resolve_device

        resolve_device(device)
    except ValueError as e:
        _fail(f"--device: {e}")
    if denoise is not None:
        if not realtime:
            _fail("--denoise sets the realtime runs' denoiser: add --realtime")
        from smartscope.bench_realtime import check_denoiser
        from smartscope.nn.errors import ModelError

        try:
            check_denoiser(denoise)
        except ModelError as e:
            _fail(f"--denoise: {e}")
    with _reported_errors():
        bench_module.run(
            json_path=json_path,
            quick=quick,
            long=long,
            scaling=scaling,
            positions=positions,
            realtime=realtime,
            device=device,
            realtime_denoise=denoise,
        )  # prints tables


def _module_installed(module: str) -> bool:
    """Whether smartscope sub-module ``module`` exists, without importing it (or
    its parent package, which may import torch)."""
    import smartscope

    parts = module.split(".")[1:]
    for root in smartscope.__path__:
        base = Path(root).joinpath(*parts)
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            return True
    return False


def add_lazy_subcommand(
    app: typer.Typer, name: str, module: str, attribute: str, help_text: str
) -> None:
    """Add command ``name`` to ``app``; it imports ``module`` only when run and
    hands its arguments (``--help`` included) to ``module.attribute``, a
    ``typer.Typer`` or click command."""

    @app.command(
        name=name,
        help=help_text,
        add_help_option=False,  # `smartscope NAME --help` goes to the real command
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    def _forward(ctx: typer.Context) -> None:
        with _reported_errors():
            target: Any = getattr(importlib.import_module(module), attribute, None)
            if target is None:
                _fail(
                    f"{module} has no {attribute!r}; cannot run `smartscope {name}`",
                    code=1,
                )
            command = (
                typer.main.get_command(target)
                if isinstance(target, typer.Typer)
                else target
            )
            try:
                command.main(
                    args=list(ctx.args),
                    prog_name=f"smartscope {name}",
                    standalone_mode=True,
                )
            except SystemExit as e:  # typer made a stop signal an exit 130
                interrupt = _swallowed_interrupt(e)
                if interrupt is None:
                    raise
                raise interrupt from None  # "interrupted (SIGTERM)", exit 143


for _row in LAZY_SUBCOMMANDS:
    if _module_installed(_row[1]):
        add_lazy_subcommand(app, *_row)


def _swallowed_interrupt(exit_: SystemExit) -> KeyboardInterrupt | None:
    """The stop signal behind ``exit_`` when typer (or click) made it of a
    KeyboardInterrupt that landed outside a command's own handlers (while the
    command's modules were still being imported): typer exits 130 without a
    word whatever the signal, click prints "Aborted!" and exits 1. Both raise
    their exit ``from`` the interrupt; a command that handled the signal
    itself raises its exit without a cause."""
    seen: BaseException | None = exit_.__context__
    for _ in range(8):  # typer's Exit, a nested command's, ...
        if seen is None:
            return None
        if isinstance(seen.__cause__, KeyboardInterrupt):
            return seen.__cause__
        seen = seen.__context__
    return None


def main() -> None:
    """Entry point of the ``smartscope`` console script."""
    import signal

    from smartscope.interrupts import exit_status, stop_signals

    # what the guard leaves in place once the command is over and has said
    # so: a signal while Python shuts down must not turn the exit into a kill
    # (SIGHUP is left as it is: ignored under nohup, which must stay so)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    try:
        with stop_signals():  # stop signals are interrupts from here on
            try:
                app(prog_name="smartscope")
            except SystemExit as e:
                interrupt = _swallowed_interrupt(e)
                if interrupt is None:
                    raise
                raise interrupt from None
    except SmartscopeError as e:  # raised outside a command's own handler
        if _DEBUG:
            raise
        _print_error(str(e))
        sys.exit(getattr(e, "exit_code", EXIT_ERROR))
    except KeyboardInterrupt as e:  # before a command took charge of signals
        from smartscope.interrupts import signal_name

        name = signal_name(e)
        _print_error(f"interrupted ({name}) during start-up: nothing was done")
        sys.exit(exit_status(name))
    except Exception as e:  # a bug: one line, the traceback with --debug
        from smartscope.interrupts import interrupt_behind, signal_name

        interrupt = interrupt_behind(e)  # a stop signal a library made an error
        if interrupt is not None and not _DEBUG:
            name = signal_name(interrupt)
            _print_error(f"interrupted ({name})")
            sys.exit(exit_status(name))
        if _DEBUG:
            raise
        _print_error(
            f"internal error: {type(e).__name__}: {e} (a bug in smartscope; "
            "run again with --debug for the traceback and report it)"
        )
        sys.exit(EXIT_BUG)
    finally:  # the command is over: a late SIGHUP must not turn the exit into a kill
        hangup = getattr(signal, "SIGHUP", None)
        if hangup is not None:
            signal.signal(hangup, signal.SIG_IGN)


if __name__ == "__main__":
    main()
