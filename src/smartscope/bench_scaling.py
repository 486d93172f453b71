"""How the models-in-the-loop analysis scales with the frame size.

``smartscope bench --scaling``: for each frame size, one simulated DAPI frame
(10x, the demo camera's sensor set to that size) is analysed again and again
by :class:`~smartscope.analysis.analyser.FrameAnalyser` with the demo's
models (``denoise-care``, then ``nuclei-seg``, measure, track), on the device
the analysis would use. Reported per size: frames/s sustained, the time per
frame (median, p95), where it goes (``stages_ms``: background, denoise,
segment with its rescaling and post-processing, measure, track; medians;
``model_stages_ms``: inside the models, transfer (device path only),
normalise, denoise_network, segment_network, postprocess),
the ratio to 512², the threads the analysis chose, and the peak resident
memory of the process. Each size's models are warmed up as a run's are
(seeding the thread tuner), and the sizes then take turns frame by frame, so
that the ratios hold on a machine whose speed drifts. Virtual time, no
acquisition: this is the analysis alone; ``controller`` in the same JSON
measures it inside a run.
"""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["SIZES", "demo_core", "demo_frame", "demo_frame_input", "measure_scaling"]

SIZES = (256, 512, 1024, 2048)
#: the demo camera's 6.5 µm pixels through the 10x objective
PIXEL_SIZE_UM = 6.5 / 10


@contextlib.contextmanager
def demo_core(size: int = 512) -> Iterator[Any]:
    """The demo microscope (seed 1, virtual time) set up for the frames the
    analysis benchmarks time: a ``size`` x ``size`` sensor, 10x, 5 mW, 20 ms;
    released afterwards."""
    from smartscope.hardware import load_core, release_core

    core = load_core(seed=1, time_mode="virtual")
    try:
        core.setProperty("Camera", "SensorWidth_px", size)
        core.setProperty("Camera", "SensorHeight_px", size)
        core.setConfig("Objective", "10x")
        core.setProperty("Laser", "Power_mW", 5)
        core.setExposure(20)
        yield core
    finally:
        release_core(core)


def demo_frame(size: int = 512) -> np.ndarray:
    """One ``size`` x ``size`` frame of the default scene (10x, 5 mW, 20 ms),
    the frame the analysis benchmarks time."""
    with demo_core(size) as core:
        core.snapImage()
        return core.getImage()


def demo_frame_input(image: np.ndarray, k: int, *, t_s: float | None = None) -> Any:
    """``image`` (a :func:`demo_frame`) as frame ``k`` of position ``a``, taken
    now, ``t_s`` into the run (default: one frame a second): what the
    analysis benchmarks feed the analysis (a
    :class:`~smartscope.analysis.result.FrameInput`)."""
    from smartscope.analysis.result import FrameInput

    return FrameInput(
        image=image,
        frame_index=k,
        position="a",
        stage_x_um=0.0,
        stage_y_um=0.0,
        z_um=0.0,
        pixel_size_um=PIXEL_SIZE_UM,
        exposure_ms=20,
        t_frame=time.perf_counter(),
        t_s=float(k) if t_s is None else t_s,
    )


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 / (1024.0 if sys.platform == "darwin" else 1.0)


def _timed_frame(run: dict[str, Any], size: int, k: int) -> None:
    """Analyse frame ``k`` of one size's run and keep its times."""
    analyser = run["analyser"]
    t0 = time.perf_counter()
    r = analyser.analyse(demo_frame_input(run["image"], k))
    if r.error is not None:
        raise RuntimeError(f"analysis of a {size}² frame failed: {r.error}")
    run["times"].append((time.perf_counter() - t0) * 1000.0)
    run.setdefault("threads", []).append(r.extra.get("threads"))
    for name, ms in r.extra.get("stages_ms", {}).items():
        run["stages"].setdefault(name, []).append(ms)
    for name, ms in r.extra.get("model_stages_ms", {}).items():
        run["model_stages"].setdefault(name, []).append(ms)


def measure_scaling(
    *, frames: int = 20, sizes: tuple[int, ...] = SIZES, device: str = "auto"
) -> dict[str, Any]:
    """Analyse ``frames`` frames (after 3 warm-up frames) at each size, the
    sizes taking turns frame by frame.

    Returns
    -------
    dict
        ``settings`` and ``sizes``: one entry per size with ``frames``,
        ``frames_per_s``, ``ms`` (median, p95), ``stages_ms`` (medians),
        ``ratio_to_512`` (median time), ``threads`` (counts used),
        ``peak_rss_mb`` (the process's peak once that size was set up, the
        sizes set up smallest first) and, on CUDA, ``peak_gpu_mb`` (torch's
        peak allocation while that size was set up, its CUDA graphs
        recorded) and ``cuda_graphs`` (per model: replayed, the shapes
        recorded, why they were turned off). ``settings.device`` is
        the device the models ran on.
    """
    from smartscope.analysis.analyser import FrameAnalyser
    from smartscope.analysis.settings import AnalysisSettings
    from smartscope.nn.predictor import resolve_device

    settings = AnalysisSettings(
        denoise="denoise-care", segmenter="model", model="nuclei-seg", diameter_um=12
    )
    on = resolve_device(device)
    if on.type == "cuda":
        import torch
    out: dict[str, Any] = {
        "settings": {
            "denoise": settings.denoise,
            "model": settings.model,
            "device": str(on),
            "frames": frames,
            "objective": "10x",
        },
        "sizes": {},
    }
    runs: dict[int, dict[str, Any]] = {}
    for size in sizes:  # set up one size after another, smallest first
        img = demo_frame(size)
        analyser = FrameAnalyser(settings, device=str(on))
        analyser.load_models()
        if on.type == "cuda":
            torch.cuda.reset_peak_memory_stats(on)
        # as a run starts: the models warmed up at the frame size, at each
        # thread count, which seeds the thread tuner (without it the tuner's
        # first tries are cold calls, and it kept 1 thread at 2048² where 2
        # were 1.45x faster)
        analyser.warm_up(img.shape, pixel_size_um=PIXEL_SIZE_UM)
        run = {
            "image": img,
            "analyser": analyser,
            "times": [],
            "stages": {},
            "model_stages": {},
        }
        runs[size] = run
        for k in range(3):
            _timed_frame(run, size, k)
        run["times"].clear()
        run["stages"].clear()
        run["model_stages"].clear()
        run["threads"] = []
        run["peak_rss_mb"] = round(_peak_rss_mb(), 1)
        if on.type == "cuda":
            run["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(on) / 2**20, 1)
    # then frame by frame in turn across the sizes, so a change of the
    # machine's speed during the measurement (on a shared machine, up to 2x
    # within minutes) falls on every size alike and the ratios hold
    for k in range(3, frames + 3):
        for size in sizes:
            _timed_frame(runs[size], size, k)
    for size in sizes:
        run = runs[size]
        times, threads = run["times"], run["threads"]
        entry = {
            "frames": len(times),
            "frames_per_s": round(1000.0 * len(times) / sum(times), 2),
            "ms": {
                "median": round(float(np.median(times)), 1),
                "p95": round(float(np.percentile(times, 95)), 1),
            },
            "stages_ms": {
                k: round(float(np.median(v)), 1) for k, v in run["stages"].items()
            },
            "model_stages_ms": {
                k: round(float(np.median(v)), 1) for k, v in run["model_stages"].items()
            },
            "threads": {
                str(n): threads.count(n) for n in sorted(set(threads), key=str)
            },
            "peak_rss_mb": run["peak_rss_mb"],
        }
        if "peak_gpu_mb" in run:
            entry["peak_gpu_mb"] = run["peak_gpu_mb"]
            # which networks replayed CUDA graphs, at which shapes
            entry["cuda_graphs"] = run["analyser"].cuda_graphs_state()
        out["sizes"][str(size)] = entry
    base = out["sizes"].get("512")
    for entry in out["sizes"].values():
        entry["ratio_to_512"] = (
            round(entry["ms"]["median"] / base["ms"]["median"], 2) if base else None
        )
    return out


def scaling_table(scaling: dict[str, Any]) -> Any:
    """A rich table of :func:`measure_scaling`'s result."""
    from rich.table import Table

    stages = ("background", "denoise", "segment", "measure", "track")
    t = Table(
        title="Analysis with models by frame size (denoise-care + nuclei-seg), ms"
    )
    for col in (
        "size",
        "frames/s",
        "median",
        "p95",
        "× 512²",
        *stages,
        "threads",
        "RSS MB",
    ):
        t.add_column(col, justify="right")
    gpu = any("peak_gpu_mb" in e for e in scaling["sizes"].values())
    if gpu:
        t.add_column("GPU MB", justify="right")
    for size, e in scaling["sizes"].items():
        t.add_row(
            f"{size}²",
            f"{e['frames_per_s']:g}",
            f"{e['ms']['median']:g}",
            f"{e['ms']['p95']:g}",
            "" if e["ratio_to_512"] is None else f"{e['ratio_to_512']:g}",
            *(f"{e['stages_ms'].get(k, 0):g}" for k in stages),
            ", ".join(f"{k}:{v}" for k, v in e["threads"].items()),
            f"{e['peak_rss_mb']:g}",
            *([f"{e.get('peak_gpu_mb', 0):g}"] if gpu else []),
        )
    return t
