"""Performance figures of the simulated microscope, for ``smartscope bench``.

The machines we run on are shared and noisy, so every figure that matters is a
ratio of two timings taken in the same process, interleaved pair by pair: the
cost of snapping a frame from the simulator against the cost of the one numpy
call no simulator of a photon-counting camera can avoid, a Poisson draw of the
same size. Absolute times are reported too, with the machine they came from.

Measured on the demo microscope (``load_core()``: 10x objective, DAPI, 50 ms
exposure) in virtual time, so a snap costs its computation only, not its
exposure. Imported only when the ``bench`` command runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

from smartscope.bench_sim import (
    CONST_LAM_E,
    SEED,
    SNAP_RATIO_TARGET,
    time_defocus,
    time_mda,
    time_snap_vs_poisson,
)

__all__ = ["SNAP_RATIO_TARGET", "machine_info", "run"]


# (warm-up snaps, snap repeats at 512, snap repeats at 2048, MDA timepoints, MDA runs)
_FULL = (3, 31, 11, 100, 3)
_QUICK = (1, 5, 1, 10, 1)
#: Defocus values (µm) of the optional defocus timing.
_DEFOCUS_UM = (0.0, 5.0, 20.0)


#: layout of the JSON written with --json (1: adds "scaling")
SCHEMA_VERSION = 1


#: CPU flags (Linux /proc/cpuinfo names) that set how fast the networks run
_VECTOR_ISA = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_bf16",
    "amx_int8",
)


def machine_info() -> dict[str, Any]:
    """Where and when the figures were measured: platform, CPUs, versions, date."""
    import os
    import platform
    from datetime import datetime
    from importlib.metadata import PackageNotFoundError, version

    def _version(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    cpu_model = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        fields: dict[str, str] = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())  # the first CPU's
        cpu_model = fields.get("model name", cpu_model)
        flags = set(fields.get("flags", "").split())
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 0
    return {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        # the vector instructions the networks' kernels can use: this
        # project's 2-core dev VM ran denoise-care's network in 21 ms a 512²
        # frame on an AVX-512 host and in 51 ms on an AVX2-only one
        "cpu_vector_isa": [f for f in _VECTOR_ISA if f in flags],
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "scipy": _version("scipy"),
        "pymmcore-plus": _version("pymmcore-plus"),
        "useq-schema": _version("useq-schema"),
        "smartscope": _version("smartscope"),
    }


def _source_state() -> dict[str, Any] | None:
    """Commit of the source checkout and whether the simulator's files differ
    from it; ``None`` for an installed wheel or without git."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "-C",
                str(root),
                "status",
                "--porcelain",
                "--",
                "src/smartscope/sim",
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "sim_modified": bool(dirty)}


def _measure(
    *,
    warmup: int,
    repeats_512: int,
    repeats_2048: int,
    timepoints: int,
    runs: int,
    defocus: bool,
    console: Console,
) -> dict[str, Any]:
    """All simulator figures, on one demo core loaded in virtual time."""
    from smartscope.hardware import load_core, release_core
    from smartscope.sim import get_simulator

    core = load_core(time_mode="virtual", seed=SEED)
    try:
        cam = core.getCameraDevice()
        out: dict[str, Any] = {
            "settings": {
                "config": "simulators/demo.cfg",
                "seed": SEED,
                "objective": core.getProperty("Objective", "Label"),
                "channel": core.getCurrentConfig("Channel"),
                "exposure_ms": core.getExposure(),
                "laser_mw": float(core.getProperty("Laser", "Power_mW")),
                "time_mode": get_simulator(core).time_mode,
            }
        }
        with console.status("timing 512×512 snaps against Poisson draws…"):
            out["snap_512"] = time_snap_vs_poisson(
                core, repeats=repeats_512, warmup=warmup
            )
        width = core.getProperty(cam, "SensorWidth_px")
        height = core.getProperty(cam, "SensorHeight_px")
        core.setProperty(cam, "SensorWidth_px", 2048)
        core.setProperty(cam, "SensorHeight_px", 2048)
        with console.status("timing 2048×2048 snaps against Poisson draws…"):
            out["snap_2048"] = time_snap_vs_poisson(
                core, repeats=repeats_2048, warmup=warmup
            )
        out["snap_2048"]["shape_ok"] = out["snap_2048"]["frame_shape"] == [2048, 2048]
        core.setProperty(cam, "SensorWidth_px", width)
        core.setProperty(cam, "SensorHeight_px", height)
        with console.status(f"running a {timepoints}-timepoint MDA in virtual time…"):
            out["mda_virtual"] = time_mda(core, timepoints=timepoints, runs=runs)
        if defocus:
            with console.status("timing defocused 512×512 snaps at 40x…"):
                out["defocus_512"] = time_defocus(
                    core, objective="40x", defocus_um=_DEFOCUS_UM, repeats=2
                )
        return out
    finally:
        release_core(core)


def _fmt_ratio(d: dict[str, Any], key: str) -> str:
    return f"{d[key]:.2f}× ({d[key + '_p25']:.2f}–{d[key + '_p75']:.2f})"


def _print_table(results: dict[str, Any], console: Console) -> None:
    from rich.table import Table

    sim = results["simulator"]
    s512, s2048, mda = sim["snap_512"], sim["snap_2048"], sim["mda_virtual"]
    st = sim["settings"]
    ok = "[green]yes[/]" if s512["meets_target"] else "[red]NO[/]"
    table = Table(
        title=(
            f"Simulator ({st['objective']}, {st['channel']}, {st['exposure_ms']:g} ms, "
            f"{st['time_mode']} time)"
        ),
        caption="medians; ratios are medians of interleaved pairs (p25–p75)",
    )
    table.add_column("measure")
    table.add_column("512×512", justify="right")
    table.add_column("2048×2048", justify="right")
    table.add_row("repeats", str(s512["repeats"]), str(s2048["repeats"]))
    table.add_row(
        "snapImage + getImage",
        f"{s512['snap_ms']:.1f} ms",
        f"{s2048['snap_ms']:.1f} ms",
    )
    table.add_row(
        "Poisson draw, frame's mean",
        f"{s512['poisson_frame_ms']:.1f} ms",
        f"{s2048['poisson_frame_ms']:.1f} ms",
    )
    table.add_row(
        f"Poisson draw, mean {CONST_LAM_E:g} e-",
        f"{s512['poisson_const_ms']:.1f} ms",
        f"{s2048['poisson_const_ms']:.1f} ms",
    )
    table.add_row(
        "snap / Poisson (frame)", _fmt_ratio(s512, "ratio"), _fmt_ratio(s2048, "ratio")
    )
    table.add_row(
        "snap / Poisson (constant)",
        _fmt_ratio(s512, "ratio_const"),
        _fmt_ratio(s2048, "ratio_const"),
    )
    table.add_row(f"512 ratio ≤ {SNAP_RATIO_TARGET:g}×", ok, "")
    table.add_row(
        "frame shape",
        "×".join(map(str, s512["frame_shape"])),
        "×".join(map(str, s2048["frame_shape"])),
    )
    console.print(table)

    mt = Table(title=f"Virtual-time MDA ({mda['timepoints']} timepoints, 60 s apart)")
    mt.add_column("measure")
    mt.add_column("value", justify="right")
    mt.add_row("frames", str(mda["frames"]))
    mt.add_row("wall time", f"{mda['wall_s']:.2f} s (median of {mda['runs']})")
    mt.add_row("wall time per frame", f"{mda['wall_ms_per_frame']:.1f} ms")
    mt.add_row("simulated time", f"{mda['sim_s']:.1f} s")
    mt.add_row("simulated / wall", f"{mda['speedup']:.0f}×")
    console.print(mt)

    if "defocus_512" in sim:
        df = sim["defocus_512"]
        dt = Table(
            title=(
                f"Defocused snaps ({'×'.join(map(str, df['frame_shape']))}, "
                f"{df['objective']}, median of {df['repeats']})"
            )
        )
        for col in (
            "defocus",
            "blur sigma",
            "snap",
            f"Poisson {CONST_LAM_E:g} e-",
            "ratio",
        ):
            dt.add_column(col, justify="right")
        for r in df["rows"]:
            dt.add_row(
                f"{r['defocus_um'] if abs(r['defocus_um']) >= 0.05 else 0.0:.1f} µm",
                f"{r['blur_sigma_px']:.1f} px",
                f"{r['snap_ms']:.0f} ms",
                f"{r['poisson_const_ms']:.1f} ms",
                f"{r['ratio_const']:.1f}×",
            )
        console.print(dt)

    m = results["machine"]
    console.print(
        f"[dim]{m['cpu_model']}, {m['cpus_usable']} CPUs usable, Python {m['python']}, "
        f"numpy {m['numpy']}, pymmcore-plus {m['pymmcore-plus']}, {m['date']}[/]"
    )


def _measure_controller(
    *, quick: bool, long: bool, console: Console, device: str = "auto"
) -> dict[str, Any]:
    """Controller overhead, analysis throughput, demo latencies (and memory)."""
    from smartscope import overhead

    out: dict[str, Any] = {}
    with console.status("controller overhead (analysis off) vs plain MDA ..."):
        out["overhead"] = overhead.measure_controller_overhead(
            n_frames=40 if quick else 100,
            repeats=1 if quick else 16,
            max_repeats=1 if quick else 64,
        )
    with console.status("analysis throughput (classical) ..."):
        out["analysis_classical"] = overhead.measure_analysis_throughput(
            n_frames=8 if quick else 30
        )
    from smartscope._data import data_dir

    models = data_dir("models")
    if (models / "nuclei-seg").is_dir():
        with console.status("analysis throughput (models) ..."):
            try:
                out["analysis_models"] = overhead.measure_analysis_throughput(
                    n_frames=8 if quick else 30,
                    segmenter="model",
                    model="nuclei-seg",
                    denoise="denoise-care"
                    if (models / "denoise-care").is_dir()
                    else None,
                    device=device,
                )
            except Exception as e:  # a broken model must not hide the rest
                out["analysis_models"] = {"error": f"{type(e).__name__}: {e}"}
    if not quick:
        with console.status("demo protocol latencies ..."):
            out["demo_latency"] = overhead.measure_demo_latency()
    if long:
        with console.status("memory over 10,000 frames (minutes) ..."):
            out["memory"] = overhead.measure_memory(n_frames=10_000)
    return out


def _print_controller(ctl: dict[str, Any], console: Console) -> None:
    from rich.table import Table

    t = Table(title="Controller")
    t.add_column("measure")
    t.add_column("value", justify="right")
    o = ctl["overhead"]
    ms = o["ms_per_frame"]
    t.add_row("plain MDA, no storage", f"{ms['plain']:.1f} ms/frame")
    t.add_row(
        "plain MDA, the controller's writer", f"{ms['plain_same_writer']:.1f} ms/frame"
    )
    t.add_row("plain MDA, ome-writers OME-Zarr", f"{ms['plain_zarr']:.1f} ms/frame")
    t.add_row("controller, analysis off", f"{ms['controller']:.1f} ms/frame")
    for ref, label in (
        ("plain_same_writer", "same writer"),
        ("plain_zarr", "ome-writers"),
        ("plain", "no storage"),
    ):
        r = o["ratios"][f"wall_controller_to_{ref}"]
        lo, hi = r["ci95"]
        t.add_row(
            f"controller / plain ({label})",
            f"{r['median']:.3f} (95%: {lo:.3f}-{hi:.3f})",
        )
    t.add_row(
        f"resolves ±{o['resolve']:.0%} ({o['repeats']} repeats)",
        "yes" if o["resolved"] else "no",
    )
    for key, label in (
        ("analysis_classical", "classical"),
        ("analysis_models", "models"),
    ):
        a = ctl.get(key)
        if a is None:
            continue
        if "error" in a:
            t.add_row(f"analysis ({label})", a["error"])
            continue
        t.add_row(
            f"analysis 512² ({label}, {a['device']})",
            f"{a['ms_per_frame_median']:.1f} ms, {a['frames_per_s']:.1f} frames/s",
        )
    if "demo_latency" in ctl:
        d = ctl["demo_latency"]
        for key, label in (
            ("latency_frame_to_result_ms", "demo frame → result"),
            ("latency_frame_to_action_ms", "demo frame → action"),
        ):
            q = d[key]
            if q.get("n"):
                t.add_row(
                    label,
                    f"p50 {q['p50']:.1f} / p95 {q['p95']:.1f} / p99 {q['p99']:.1f} ms",
                )
    if "memory" in ctl:
        m = ctl["memory"]
        t.add_row(
            f"memory over {m['n_frames']} frames",
            f"{m['rss_mb'][0][1]:.0f} → {m['rss_mb'][-1][1]:.0f} MB "
            f"({m['rss_growth_mb_per_1000_frames_after_warmup']:+.2f} MB/1000 frames)",
        )
    console.print(t)


def run(
    json_path: Path | str | None = None,
    quick: bool = False,
    *,
    defocus: bool = False,
    simulator: bool = True,
    controller: bool = True,
    long: bool = False,
    scaling: bool = False,
    positions: bool = False,
    realtime: bool = False,
    device: str = "auto",
    realtime_denoise: str | None = None,
) -> dict[str, Any]:
    """Measure the simulator, print a table, and optionally write the figures as JSON.

    Parameters
    ----------
    json_path : Path | str | None
        Where to write the results (parent folders are created).
    quick : bool
        Few repeats and a 10-timepoint MDA: seconds instead of about a minute,
        for smoke tests; the figures are then only indicative.
    defocus : bool
        Also time 512 × 512 snaps at 40x, 0, 5 and 20 µm out of focus (slow:
        tens of seconds while wide blurs are computed by direct convolution).
    simulator, controller : bool
        The sections that measure the simulator and the controller (its
        overhead, the analysis' throughput, the demo's latencies); leaving
        them out keeps only the sections asked for (``benchmarks/gpu_check.sh``
        does, to spend a GPU's time on the models).
    device : "auto", "cpu" or "cuda"
        Where the models run in the analysis measurements (model analysis
        throughput, ``scaling``, ``positions``); "auto": CUDA when there is
        one. The realtime runs (``realtime``) use the demo's own setting.
    realtime_denoise : str | None
        The realtime runs' denoiser instead of the demo's (a shipped name or
        a model folder).

    Returns
    -------
    dict
        ``machine`` (see :func:`machine_info`), ``source`` (git commit and
        whether ``src/smartscope/sim`` differs from it), ``quick``, and ``simulator``
        with ``settings``, ``snap_512``, ``snap_2048`` (times in ms, ratios
        snap / Poisson), ``mda_virtual`` (wall and simulated seconds) and, with
        ``defocus``, ``defocus_512``; ``controller`` with ``overhead`` (controller
        with analysis off against a plain MDA of the same sequence),
        ``analysis_classical`` / ``analysis_models`` (ms and frames/s at
        512 × 512), ``demo_latency`` and, with ``long``, ``memory`` over 10,000
        frames; with ``scaling``, ``scaling`` (the models-in-the-loop analysis
        at 256² to 2048², :mod:`smartscope.bench_scaling`); with ``positions``,
        ``positions`` (the models in the loop with 1, 4 and 16 stage positions,
        :mod:`smartscope.bench_positions`); with ``realtime``, ``realtime``
        (issue 12's realtime targets, :mod:`smartscope.bench_realtime`).
        ``schema_version``
        says how the JSON is laid out.
    """
    from rich.console import Console

    if controller or scaling or positions:
        # a device that cannot be used is refused before minutes of measuring
        from smartscope.nn.predictor import resolve_device

        resolve_device(device)
    if realtime_denoise is not None:
        from smartscope.bench_realtime import check_denoiser

        if not realtime:
            raise ValueError("a realtime denoiser needs the realtime runs (--realtime)")
        # a denoiser that cannot be loaded is refused before minutes of measuring
        check_denoiser(realtime_denoise)
    console = Console()
    warmup, rep_512, rep_2048, timepoints, runs = _QUICK if quick else _FULL
    results: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "machine": machine_info(),
        "source": _source_state(),
        "quick": quick,
    }
    if simulator:
        results["simulator"] = _measure(
            warmup=warmup,
            repeats_512=rep_512,
            repeats_2048=rep_2048,
            timepoints=timepoints,
            runs=runs,
            defocus=defocus,
            console=console,
        )
        _print_table(results, console)
    if controller:
        results["controller"] = _measure_controller(
            quick=quick, long=long, console=console, device=device
        )
        _print_controller(results["controller"], console)
    if scaling:
        from smartscope.bench_scaling import measure_scaling, scaling_table

        results["scaling"] = measure_scaling(frames=5 if quick else 20, device=device)
        console.print(scaling_table(results["scaling"]))
    if positions:
        from smartscope.bench_positions import measure_positions, positions_table

        with console.status("models in the loop at 1, 4 and 16 positions ..."):
            results["positions"] = measure_positions(
                frames=24 if quick else 500, device=device
            )
        console.print(positions_table(results["positions"]))
    if realtime:
        from smartscope.bench_realtime import measure_realtime, realtime_table

        with console.status("realtime runs at 20/s and at 10/s beside 2 busy ..."):
            results["realtime"] = measure_realtime(
                frames=20 if quick else 600, denoise=realtime_denoise
            )
        console.print(realtime_table(results["realtime"]))
    if json_path is not None:
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        console.print(f"results written to {path}")
    return results
