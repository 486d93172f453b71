"""The realtime targets of issue 12 as one measurement, for
``smartscope bench --realtime``.

Each target is a realtime run of the demo protocol (``protocols/demo.yaml``:
the migration scene at 20x, denoise-care, nuclei-seg, measure, track) through
the real controller on the simulator, 512 × 512 frames, 10-ms exposures,
``frames`` frames at the target's rate, only the raw frames written, with the
demo's ``center_on`` made to act on every frame (dead band 0: the stage
follows the nucleus, so frame→action rests on hundreds of actions rather than
the demo's handful) and the adaptive exposure left out (the exposure, hence
the rate, stays the one asked for). ``busy`` pure-Python loops in other
processes compete for the cores, as the rest of a microscope PC's software
does. The analysis settings are the protocol's defaults (threads, precision
and stages ``auto``); ``denoise`` swaps in another denoiser (a shipped name
or a model folder), e.g. ``denoise-care-fast``, CARE at a third of the
cost, for a CPU that cannot keep up with ``denoise-care``.

Targets (the rate held, frames skipped for analysis, frame→action p99):

- ``quiet_20``: 20 frames/s, nothing else running: 0 skipped, p99 ≤ 150 ms;
- ``busy_10``: 10 frames/s beside two busy processes: 0 skipped, p99 ≤ 250 ms.

A target is met only if the acquisition held its rate: frames taken at
:data:`RATE_HELD` of the asked rate or more (from the frames' own times in
the run's records). A run that fell behind its time plan (pymmcore-plus then
takes each late frame at once) gives its analysis more time per frame than
the target allows, so its "0 skipped" would not be the target's.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "RATE_HELD",
    "TARGETS",
    "busy_processes",
    "check_denoiser",
    "frame_rate",
    "measure_realtime",
    "realtime_protocol",
    "realtime_table",
]

#: name, interval (s), competing busy processes, frame→action p99 bound (ms)
TARGETS: tuple[tuple[str, float, int, float], ...] = (
    ("quiet_20", 0.05, 0, 150.0),
    ("busy_10", 0.1, 2, 250.0),
)

#: the least fraction of the asked frame rate a run must reach to count
RATE_HELD = 0.99


def frame_rate(events_jsonl: Path) -> float | None:
    """Acquisition frames per second of a run, first frame to last (sample
    clock), from its ``events.jsonl``; None for fewer than two frames."""
    import json

    t = []
    with events_jsonl.open() as fh:
        for line in fh:
            rec = json.loads(line)
            if rec.get("kind") == "frame" and rec.get("role") == "acquisition":
                t.append(float(rec["t_s"]))
    if len(t) < 2 or t[-1] <= t[0]:
        return None
    return round((len(t) - 1) / (t[-1] - t[0]), 3)


def realtime_protocol(
    interval_s: float,
    frames: int,
    *,
    every_frame: bool = True,
    denoise: str | None = None,
) -> dict[str, Any]:
    """The protocol (as a dict) of one target's run (see the module's text);
    ``every_frame=False`` keeps the demo's dead band (the stage moves a
    handful of times a run); ``denoise`` replaces the demo's denoiser."""
    import yaml

    from smartscope._data import data_dir

    d = yaml.safe_load((data_dir("protocols") / "demo.yaml").read_text())
    d["time_mode"] = "realtime"
    d["sequence"]["time_plan"] = {"interval": interval_s, "loops": frames}
    d["sequence"]["channels"][0]["exposure"] = 10
    center = next(r for r in d["reactions"] if r["type"] == "center_on")
    d["reactions"] = [{**center, "dead_band_fraction": 0.0} if every_frame else center]
    d["stop"] = {}
    if denoise is not None:
        d["analysis"]["denoise"] = denoise
    d["save"] = {"labels": False, "denoised": False, "truth": False, "report": False}
    return d  # type: ignore[no-any-return]


def _busy(stop: Any) -> None:
    """A CPU-bound loop (another process's work) until ``stop`` is set."""
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


@contextlib.contextmanager
def busy_processes(n: int) -> Iterator[None]:
    """``n`` CPU-bound processes for the duration of the block (spawned: no
    fork of a process with model threads)."""
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    procs = [ctx.Process(target=_busy, args=(stop,), daemon=True) for _ in range(n)]
    for p in procs:
        p.start()
    try:
        yield
    finally:
        stop.set()
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.terminate()


def check_denoiser(name: str) -> None:
    """Raise :class:`~smartscope.nn.errors.ModelError` unless ``name`` (a
    shipped name or a model folder) is a well-formed denoiser (its card and
    weights, as a protocol's ``analysis.denoise`` is checked; no torch)."""
    from smartscope.nn.errors import ModelError
    from smartscope.nn.locate import check_model_files

    found = check_model_files(name)
    if found.kind != "denoise":
        raise ModelError(
            f"{name!r} is a {found.kind} model (its card says kind: {found.kind}); "
            "the realtime runs need a denoiser (kind: denoise)"
        )


def measure_realtime(
    *,
    frames: int = 600,
    targets: tuple[tuple[str, float, int, float], ...] = TARGETS,
    denoise: str | None = None,
) -> dict[str, Any]:
    """One realtime controller run per target (see the module's text).

    Returns
    -------
    dict
        ``settings`` (with ``denoise`` and ``model``, the runs' denoiser and
        segmenter) and
        ``runs``: per target ``interval_s``, ``busy``,
        ``frames``, ``fps`` (:func:`frame_rate`), ``frame_late_ms`` (the
        summary's: how late the frames began for the time plan),
        ``rate_held``, ``frames_analysed``, ``frames_skipped_analysis``,
        ``frame_to_result_ms`` and ``frame_to_action_ms`` (n, p50, p95, p99,
        max; from the run's ``summary.json``), ``reaction_ms``,
        ``storage_ms`` and ``storage_waited_s`` (the summary's: storing the
        analysed frames, on the results thread),
        ``analysis_stages_ms`` (per stage, the same percentiles) and
        ``analysis_warm_up_ms`` (the summary's), ``wall_s``, ``p99_bound_ms``
        and ``met`` (the rate held, 0 skipped and frame→action p99 within
        the bound).
    """
    from smartscope.controller import Controller
    from smartscope.hardware import load_core, release_core
    from smartscope.protocol import Protocol

    first = Protocol.model_validate(realtime_protocol(0.1, frames, denoise=denoise))
    out: dict[str, Any] = {
        "settings": {
            "protocol": "protocols/demo.yaml in realtime, center_on every frame",
            "denoise": first.analysis.denoise,
            "model": first.analysis.model,
            "frame_px": 512,
            "exposure_ms": 10,
            "frames": frames,
        },
        "runs": {},
    }
    for name, interval, busy, bound in targets:
        proto = Protocol.model_validate(
            realtime_protocol(interval, frames, denoise=denoise)
        )
        with (
            busy_processes(busy),
            tempfile.TemporaryDirectory(prefix="smartscope-bench-") as tmp,
        ):
            core = load_core(seed=proto.seed, scene=proto.scene, time_mode="realtime")
            try:
                s = Controller(core, proto, out_dir=Path(tmp) / "run").run()
            finally:
                release_core(core)
            fps = frame_rate(Path(tmp) / "run" / "events.jsonl")
        f2a = s["latency_frame_to_action_ms"]
        skipped = int(s["frames_skipped_analysis"])
        held = fps is not None and fps >= RATE_HELD / interval
        out["runs"][name] = {
            "interval_s": interval,
            "busy": busy,
            "frames": int(s["frames_acquired"]),
            "fps": fps,
            "rate_held": held,
            "frame_late_ms": s.get("frame_late_ms"),
            "frames_analysed": int(s["frames_analysed"]),
            "frames_skipped_analysis": skipped,
            "frame_to_result_ms": s["latency_frame_to_result_ms"],
            "frame_to_action_ms": f2a,
            "reaction_ms": s.get("reaction_ms"),
            "storage_ms": s.get("storage_ms"),
            "storage_waited_s": s.get("storage_waited_s"),
            "analysis_stages_ms": s.get("analysis_stages_ms"),
            "analysis_warm_up_ms": s.get("analysis_warm_up_ms"),
            "wall_s": s["wall_time_s"],
            "p99_bound_ms": bound,
            "met": bool(held and skipped == 0 and f2a.get("n") and f2a["p99"] <= bound),
        }
    return out


def realtime_table(res: dict[str, Any]) -> Any:
    """A rich table of :func:`measure_realtime`'s result."""
    from rich.table import Table

    from smartscope.run import analysis_time

    def q(d: dict[str, Any]) -> str:
        if not d.get("n"):
            return "-"
        return f"{d['p50']:.0f} / {d['p95']:.0f} / {d['p99']:.0f} ms (n {d['n']})"

    models = " + ".join(
        str(res["settings"][k]) for k in ("denoise", "model") if res["settings"].get(k)
    )
    t = Table(
        title=f"Realtime targets (demo protocol, {models}, center_on every frame)"
    )
    for col in (
        "target",
        "frames/s taken",
        "analysed / skipped",
        "analysis a frame (medians)",
        "frame→result p50/p95/p99",
        "frame→action p50/p95/p99",
        "met",
    ):
        t.add_column(col)
    for name, r in res["runs"].items():
        t.add_row(
            f"{name}: {1 / r['interval_s']:.0f}/s, {r['busy']} busy "
            f"(p99 ≤ {r['p99_bound_ms']:.0f} ms)",
            "-" if r["fps"] is None else f"{r['fps']:.2f}",
            f"{r['frames_analysed']} / {r['frames_skipped_analysis']} of {r['frames']}",
            analysis_time(
                {"analysis_stages_ms": r.get("analysis_stages_ms")},
                only=("denoise", "segment"),
                digits=0,
            ),
            q(r["frame_to_result_ms"]),
            q(r["frame_to_action_ms"]),
            "yes" if r["met"] else "no",
        )
    return t
