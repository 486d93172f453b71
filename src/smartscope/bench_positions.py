"""Throughput and latency against the number of stage positions, for
``smartscope bench --positions``.

One run per number of positions, each through the real controller on the
simulator: the demo's analysis (``denoise-care``, then ``nuclei-seg``, measure,
track) and one ``center_on`` per position (each keeps its own nucleus in the
middle of its field), 512 × 512 frames at 20x on the migration scene, the
positions on a grid 400 µm apart, as many time points as it takes for at least
``frames`` frames in all, in virtual time (the analysis paces the simulated
clock, so nothing is skipped however slow the host). Only the raw frames are
written. Per run: frames acquired, analysed and skipped; the analysis'
sustained rate (frames analysed per second of wall time, the whole run);
frame→result and frame→action percentiles from the run's ``summary.json``;
the median time per analysis stage (from each ``FrameResult``); the process'
peak and current resident memory after the run.
"""

from __future__ import annotations

import math
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["POSITIONS", "measure_positions", "positions_protocol", "positions_table"]

POSITIONS = (1, 4, 16)
#: grid step between positions, µm (a 20x field is 166 µm across)
SPACING_UM = 400.0


def positions_protocol(n_positions: int, loops: int) -> dict[str, Any]:
    """The protocol (as a dict) of one run of :func:`measure_positions`."""
    side = math.ceil(math.sqrt(n_positions))
    half = (side - 1) * SPACING_UM / 2
    positions = [
        {
            "name": f"p{i}",
            "x": (i % side) * SPACING_UM - half,
            "y": (i // side) * SPACING_UM - half,
        }
        for i in range(n_positions)
    ]
    return {
        "version": 1,
        "name": f"bench-{n_positions}-positions",
        "seed": 6,
        "scene": "migration",
        "time_mode": "virtual",
        "objective": "20x",
        "laser_power_mw": 5,
        "sequence": {
            "channels": [{"config": "DAPI", "exposure": 40}],
            "stage_positions": positions,
            "time_plan": {"interval": 60, "loops": loops},
        },
        "analysis": {
            "denoise": "denoise-care",
            "segmenter": "model",
            "model": "nuclei-seg",
            "diameter_um": 12,
        },
        "reactions": [
            {
                "type": "center_on",
                "position": p["name"],
                "select": "nearest_center",
                "dead_band_fraction": 0.05,
                "max_step_um": 60,
            }
            for p in positions
        ],
        "limits": {
            "xy_box_um": [-1400, 1400, -1400, 1400],
            "max_xy_step_um": 100,
            "exposure_range_ms": [1, 500],
            "max_laser_mw": 20,
        },
        "save": {"labels": False, "denoised": False, "truth": False, "report": False},
        "stop": {"max_frames": n_positions * loops},
    }


def _rss_mb() -> tuple[float, float]:
    """(peak, current) resident memory of this process, MB (VmHWM and VmRSS
    of ``/proc/self/status``, one source so peak >= current; elsewhere
    ``getrusage``'s peak for both)."""
    fields: dict[str, float] = {}
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    fields[key] = float(value.split()[0]) / 1024.0  # kB
    except OSError:
        pass
    if len(fields) < 2:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        fields = {"VmHWM": peak, "VmRSS": peak}
    return round(fields["VmHWM"], 1), round(fields["VmRSS"], 1)


def measure_positions(
    *,
    positions: tuple[int, ...] = POSITIONS,
    frames: int = 500,
    device: str = "auto",
) -> dict[str, Any]:
    """One controller run per entry of ``positions`` (see the module's text).

    Returns
    -------
    dict
        ``settings`` and ``runs``: one entry per number of positions with
        ``frames``, ``frames_analysed``, ``frames_skipped_analysis``,
        ``wall_s``, ``analysed_per_s``, ``frame_to_result_ms`` and
        ``frame_to_action_ms`` (n, p50, p95, p99, max), ``reaction_ms`` (the
        reactions' decision time, the same percentiles), ``storage_ms`` and
        ``storage_waited_s`` (the summary's: storing the analysed frames),
        ``stages_ms``
        (medians), ``model_stages_ms`` (the models' steps, as in
        :mod:`smartscope.bench_scaling`), ``peak_rss_mb`` and ``rss_mb``.
    """
    from smartscope.controller import Controller
    from smartscope.hardware import load_core, release_core
    from smartscope.protocol import Protocol

    out: dict[str, Any] = {
        "settings": {
            "frames_at_least": frames,
            "frame_px": 512,
            "objective": "20x",
            "analysis": "denoise-care + nuclei-seg + measure + track",
            "reaction": "center_on, one per position",
            "time_mode": "virtual",
            "device": device,
        },
        "runs": {},
    }
    for n in positions:
        loops = max(1, math.ceil(frames / n))
        proto = Protocol.model_validate(positions_protocol(n, loops))
        stages: dict[str, list[float]] = {}
        model_stages: dict[str, list[float]] = {}
        done: list[float] = []

        def on_result(
            result: Any,
            stages: dict[str, list[float]] = stages,
            model_stages: dict[str, list[float]] = model_stages,
            done: list[float] = done,
        ) -> None:
            done.append(result.t_result)
            for name, ms in result.extra.get("stages_ms", {}).items():
                stages.setdefault(name, []).append(ms)
            for name, ms in result.extra.get("model_stages_ms", {}).items():
                model_stages.setdefault(name, []).append(ms)

        with tempfile.TemporaryDirectory(prefix="smartscope-bench-") as tmp:
            core = load_core(seed=proto.seed, scene=proto.scene, time_mode="virtual")
            try:
                controller = Controller(
                    core, proto, out_dir=Path(tmp) / "run", device=device
                )
                controller.frame_analysed.connect(on_result)
                t0 = time.perf_counter()
                summary = controller.run()
                wall = time.perf_counter() - t0
            finally:
                release_core(core)
        peak, now = _rss_mb()
        analysed = int(summary["frames_analysed"])
        span = max(done) - min(done) if len(done) > 1 else 0.0
        out["runs"][str(n)] = {
            "positions": n,
            "time_points": loops,
            "frames": int(summary["frames_acquired"]),
            "frames_analysed": analysed,
            "frames_skipped_analysis": int(summary["frames_skipped_analysis"]),
            "wall_s": round(wall, 2),
            # sustained: first to last result, start-up (models, warm-up) left out
            "analysed_per_s": round((len(done) - 1) / span, 2) if span > 0 else None,
            "frame_to_result_ms": summary["latency_frame_to_result_ms"],
            "frame_to_action_ms": summary["latency_frame_to_action_ms"],
            "reaction_ms": summary.get("reaction_ms"),
            "storage_ms": summary.get("storage_ms"),
            "storage_waited_s": summary.get("storage_waited_s"),
            "actions": summary.get("actions", {}),
            "stages_ms": {
                k: round(float(np.median(v)), 1) for k, v in sorted(stages.items())
            },
            "model_stages_ms": {
                k: round(float(np.median(v)), 1)
                for k, v in sorted(model_stages.items())
            },
            "peak_rss_mb": peak,
            "rss_mb": now,
        }
    return out


def positions_table(res: dict[str, Any]) -> Any:
    """A rich table of :func:`measure_positions`' result."""
    from rich.table import Table

    def q(d: dict[str, Any]) -> str:
        if not d.get("n"):
            return "-"
        return f"{d['p50']:.0f} / {d['p95']:.0f} / {d['p99']:.0f}"

    t = Table(
        title="Models in the loop against the number of positions (virtual time)",
        caption="latencies: p50 / p95 / p99 ms; stages: medians",
    )
    for col in (
        "positions",
        "frames (analysed/skipped)",
        "analysed/s",
        "frame→result",
        "frame→action",
        "denoise/segment/measure/track ms",
        "peak RSS",
    ):
        t.add_column(col, justify="right")
    for r in res["runs"].values():
        s = r["stages_ms"]
        t.add_row(
            str(r["positions"]),
            f"{r['frames']} ({r['frames_analysed']} / {r['frames_skipped_analysis']})",
            f"{r['analysed_per_s'] or 0:.1f}",
            q(r["frame_to_result_ms"]),
            q(r["frame_to_action_ms"]),
            "/".join(
                f"{s.get(k, 0):.0f}" for k in ("denoise", "segment", "measure", "track")
            ),
            f"{r['peak_rss_mb']:.0f} MB",
        )
    return t
