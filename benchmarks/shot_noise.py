"""The simulated camera's shot noise: a snap with the shipped draw (a table for
the uniform background, numpy where there is light; ``smartscope.sim.shot_noise``)
against the same snap with numpy's Poisson draw over every pixel, frame by
frame in turn, for three scene presets: the demo's sparse migration dish, the
default dish and the crowded textured one.

Run from the repository root::

    python benchmarks/shot_noise.py [--frames 20] [--out FILE]

Prints one line per preset and writes ``benchmarks/results/shot-noise-<date>.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import date
from pathlib import Path

import numpy as np

from smartscope.bench import machine_info
from smartscope.hardware import load_core, release_core
from smartscope.sim import get_simulator

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PRESETS = ("migration", "default", "textured")


def numpy_draw(
    rng: np.random.Generator,
    expected_e: np.ndarray,
    background_e: float,
    full_well_e: float,
) -> np.ndarray:
    """The draw before the table: numpy's Poisson at every pixel."""
    return rng.poisson(expected_e).astype(np.float32)


def measure(preset: str, frames: int) -> dict[str, object]:
    core = load_core(scene=preset, time_mode="virtual", seed=1)
    try:
        sim = get_simulator(core)
        shipped = sim._shot_noise.draw
        for _ in range(3):
            core.snapImage()
        times: dict[str, list[float]] = {"table": [], "numpy": []}
        lit = []
        for i in range(frames):
            order = ("table", "numpy") if i % 2 else ("numpy", "table")
            for name in order:
                sim._shot_noise.draw = shipped if name == "table" else numpy_draw
                t = time.perf_counter()
                core.snapImage()
                core.getImage()
                times[name].append(time.perf_counter() - t)
            e = sim.truth().expected_adu
            lit.append(float((e > e.min() + 1e-3).mean()))
        sim._shot_noise.draw = shipped
        table, pixel = np.median(times["table"]), np.median(times["numpy"])
        return {
            "preset": preset,
            "objective": core.getProperty("Objective", "Label"),
            "frame_shape": [core.getImageHeight(), core.getImageWidth()],
            "frames": frames,
            "lit_fraction": float(np.median(lit)),
            "snap_ms_table": 1e3 * table,
            "snap_ms_numpy": 1e3 * pixel,
            "speedup": pixel / table,
        }
    finally:
        release_core(core)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = []
    for preset in PRESETS:
        row = measure(preset, args.frames)
        rows.append(row)
        print(
            f"{preset:10s} {row['objective']:>4s} lit {row['lit_fraction']:.3f}: "
            f"snap {row['snap_ms_numpy']:.1f} ms (numpy) -> "
            f"{row['snap_ms_table']:.1f} ms (table), {row['speedup']:.2f}x"
        )
    out = args.out or RESULTS_DIR / f"shot-noise-{date.today().isoformat()}.json"
    out.write_text(json.dumps({"machine": machine_info(), "rows": rows}, indent=1))
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
