"""Controller overhead: time per frame of the controller (analysis off) against
a plain pymmcore-plus MDA of the same sequence on the same core.

Both sides acquire the same frames (a time-lapse at two positions in two
channels) on the simulator in virtual time (so waits cost no wall time), the plain MDA once without storage and once writing the same
OME-Zarr the controller writes; runs are interleaved and repeated, and the
medians compared as ratios, because the machine is shared and noisy.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["measure_controller_overhead", "measure_memory"]


def _rss_mb() -> float:
    """Resident set size of this process, MB (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
    except OSError:
        return 0.0
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def measure_memory(
    *, n_frames: int = 10_000, sensor_px: int = 256, models: bool = False
) -> dict[str, Any]:
    """Run ``n_frames`` through the controller with analysis and a reaction on
    (virtual time, a small sensor to keep it quick) and sample the process
    memory every 5% of the run. ``models``: the demo's models in the loop
    (denoise-care, nuclei-seg; denoised images saved) instead of the classical
    segmenter."""
    from smartscope.controller import Controller
    from smartscope.hardware import load_core, release_core
    from smartscope.protocol import Protocol

    proto = Protocol.model_validate(
        {
            "name": "memory",
            "scene": "migration",
            "seed": 3,
            "objective": "20x",
            "sequence": {
                "channels": [{"config": "DAPI", "exposure": 20}],
                "stage_positions": [{"name": "cell", "x": 0, "y": 0}],
                "time_plan": {"interval": 30, "loops": n_frames},
            },
            "reactions": [{"type": "center_on"}],
            "limits": {"xy_box_um": [-1400, 1400, -1400, 1400]},
            "save": {"labels": True, "denoised": models},
            **(
                {
                    "analysis": {
                        "denoise": "denoise-care",
                        "segmenter": "model",
                        "model": "nuclei-seg",
                        "diameter_um": 12,
                    }
                }
                if models
                else {}
            ),
        }
    )
    core = load_core(time_mode="virtual")
    core.setProperty("Camera", "SensorWidth_px", sensor_px)
    core.setProperty("Camera", "SensorHeight_px", sensor_px)
    samples: list[tuple[int, float]] = []
    step = max(1, n_frames // 20)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ctl = Controller(core, proto, out_dir=Path(tmp) / "run")
            ctl.frame_acquired.connect(
                lambda f: (
                    samples.append((f.frame_index, _rss_mb()))
                    if f.frame_index % step == 0
                    else None
                )
            )
            t = time.perf_counter()
            summary = ctl.run()
            wall = time.perf_counter() - t
    finally:
        release_core(core)
    # growth after warm-up (the first 10% loads code and fills caches)
    warm = [s for s in samples if s[0] >= n_frames // 10]
    growth = (
        (warm[-1][1] - warm[0][1]) / max(1, warm[-1][0] - warm[0][0]) * 1000
        if len(warm) > 1
        else 0.0
    )
    return {
        "n_frames": summary["frames_acquired"],
        "sensor_px": sensor_px,
        "wall_s": round(wall, 1),
        "rss_mb": [(i, round(m, 1)) for i, m in samples],
        "rss_growth_mb_per_1000_frames_after_warmup": round(growth, 3),
        "frames_analysed": summary["frames_analysed"],
    }


def measure_controller_overhead(
    *, n_frames: int = 200, repeats: int = 5, exposure_ms: float = 10.0
) -> dict[str, Any]:
    """Return per-frame times (ms) and ratios; see the module docstring."""
    import useq
    from ome_writers import AcquisitionSettings

    from smartscope.controller import Controller
    from smartscope.hardware import load_core, release_core
    from smartscope.protocol import Protocol
    from smartscope.sim import get_simulator

    # two positions x two channels: consecutive events differ in stage and
    # channel, so pymmcore-plus cannot merge them into one hardware sequence
    # and both sides snap frame by frame, as in a real time-lapse
    n_t = max(1, n_frames // 4)
    n_frames = n_t * 4
    seq_dict = {
        "channels": [
            {"config": "DAPI", "exposure": exposure_ms},
            {"config": "GFP", "exposure": exposure_ms},
        ],
        "stage_positions": [
            {"x": 0, "y": 0, "name": "a"},
            {"x": 300, "y": 0, "name": "b"},
        ],
        "axis_order": "tpc",
        "time_plan": {"interval": 5, "loops": n_t},
    }
    seq = useq.MDASequence(**seq_dict)
    proto = Protocol.model_validate(
        {
            "name": "overhead",
            "sequence": seq_dict,
            "analysis": {"enabled": False},
            "save": {"truth": False},
        }
    )
    core = load_core(time_mode="virtual")
    times: dict[str, list[float]] = {"plain": [], "plain_zarr": [], "controller": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            core.mda.run(seq)  # warm up
            sim = get_simulator(core)
            sim.keep_history = False  # as in the controller's runs

            def plain(r: int) -> None:
                core.mda.run(seq)

            def plain_zarr(r: int) -> None:
                # the same writer the controller uses (ome-writers, zarr-python)
                core.mda.run(
                    seq,
                    output=AcquisitionSettings(
                        root_path=str(Path(tmp) / f"plain{r}.ome.zarr"),
                        format="zarr-python",
                    ),
                )

            def controller(r: int) -> None:
                ctl = Controller(core, proto, out_dir=Path(tmp) / f"ctl{r}")
                summary = ctl.run()
                if summary["frames_acquired"] != n_frames:
                    raise RuntimeError(
                        f"controller acquired {summary['frames_acquired']} of {n_frames}"
                    )

            runs = [
                ("plain", plain),
                ("plain_zarr", plain_zarr),
                ("controller", controller),
            ]
            for r in range(repeats):
                # rotate the order so that no side always runs first or last,
                # and start each run from the same sample
                for name, fn in runs[r % 3 :] + runs[: r % 3]:
                    sim.reset(seed=1)
                    core.setXYPosition(0.0, 0.0)
                    t = time.perf_counter()
                    fn(r)
                    times[name].append((time.perf_counter() - t) / n_frames * 1000)
    finally:
        release_core(core)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "n_frames": n_frames,
        "repeats": repeats,
        "exposure_ms": exposure_ms,
        "ms_per_frame": {k: round(v, 3) for k, v in med.items()},
        "all_ms_per_frame": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "ratio_controller_to_plain_zarr": round(
            med["controller"] / med["plain_zarr"], 4
        ),
        "ratio_controller_to_plain": round(med["controller"] / med["plain"], 4),
    }


def measure_analysis_throughput(
    *,
    n_frames: int = 30,
    segmenter: str = "classical",
    model: str | None = None,
    denoise: str | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Frames per second of the analysis pipeline (normalise, denoise,
    segment, measure, track) on 512 x 512 simulator frames, one thread."""
    import numpy as np

    from smartscope.analysis import AnalysisPipeline, AnalysisSettings
    from smartscope.analysis.result import FrameInput
    from smartscope.hardware import load_core, release_core

    core = load_core(time_mode="virtual")
    frames = []
    try:
        for i in range(n_frames):
            core.setXYPosition(-600.0 + 40.0 * i, 100.0)
            core.snapImage()
            x, y = core.getXYPosition()
            frames.append(
                FrameInput(
                    image=np.asarray(core.getImage()),
                    frame_index=i,
                    position="p0",
                    stage_x_um=x,
                    stage_y_um=y,
                    z_um=0.0,
                    pixel_size_um=core.getPixelSizeUm(),
                    exposure_ms=50.0,
                    t_frame=0.0,
                    t_s=float(i),
                )
            )
    finally:
        release_core(core)
    settings = AnalysisSettings(segmenter=segmenter, model=model, denoise=denoise)  # type: ignore[arg-type]
    pipe = AnalysisPipeline(settings, device=device)
    pipe.load_models()
    for f in frames[:3]:
        pipe.analyse(f)  # warm-up
    times = []
    n_objects = 0
    for f in frames:
        t = time.perf_counter()
        res = pipe.analyse(f)
        times.append((time.perf_counter() - t) * 1000)
        n_objects += len(res.objects)
    med = statistics.median(times)
    return {
        "segmenter": segmenter if segmenter == "classical" else model,
        "denoise": denoise,
        "device": device,
        "n_frames": n_frames,
        "frame_px": list(frames[0].image.shape),
        "ms_per_frame_median": round(med, 2),
        "ms_per_frame_p95": round(float(np.percentile(times, 95)), 2),
        "frames_per_s": round(1000.0 / med, 1),
        "objects_per_frame": round(n_objects / n_frames, 1),
    }


def measure_demo_latency() -> dict[str, Any]:
    """Run the shipped demo protocol (virtual time) and return its summary's
    frame→result and frame→action latencies."""
    from smartscope._data import data_dir
    from smartscope.run import run_protocol

    with tempfile.TemporaryDirectory() as tmp:
        _, summary = run_protocol(
            data_dir("protocols") / "demo.yaml",
            out_dir=Path(tmp) / "run",
            progress=False,
        )
    return {
        "frames": summary["frames_acquired"],
        "frames_analysed": summary["frames_analysed"],
        "frames_skipped_analysis": summary["frames_skipped_analysis"],
        "latency_frame_to_result_ms": summary["latency_frame_to_result_ms"],
        "latency_frame_to_action_ms": summary["latency_frame_to_action_ms"],
        "wall_time_s": summary["wall_time_s"],
        "sample_time_s": summary["sample_time_s"],
    }
