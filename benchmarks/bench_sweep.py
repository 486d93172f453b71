"""What ``smartscope sweep`` gains over running the same runs one after another.

Run from the repository root (needs the [ray] extra)::

    python benchmarks/bench_sweep.py                # 4- and 16-run sweeps, 2 repeats
    python benchmarks/bench_sweep.py --repeats 3 --frames 20

The protocol is the one tests/test_sweep.py sweeps: one position, 20x, DAPI
30 ms, classical segmentation, labels saved, virtual time, ``--frames`` time
points 30 s apart. The grids are the tests' too: 4 runs (seeds 1, 2 x
``laser_power_mw`` 2, 5) and 16 runs (x ``sequence.time_plan.interval`` 30,
60 x ``description`` first, second). For each grid, alternately:

- **sequential**: every planned run, one after another in this process,
  doing what a sweep's Ray task does (:func:`smartscope.sweep.run_and_score`:
  run, score, write score.json), no Ray;
- **sweep**: :func:`smartscope.sweep.run_sweep` on a local Ray with one CPU
  per core (started and shut down by the sweep: its start is timed apart).

Writes ``benchmarks/results/sweep-<date>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

GRIDS = {
    4: "seeds: [1, 2]\nvary:\n  laser_power_mw: [2, 5]\n",
    16: (
        "seeds: [1, 2]\nvary:\n  laser_power_mw: [2, 5]\n"
        "  sequence.time_plan.interval: [30, 60]\n  description: [first, second]\n"
    ),
}


def _sequential(protocol: Path, grid: Path, work: Path) -> dict[str, Any]:
    from smartscope.sweep import run_and_score
    from smartscope.sweep_grid import load_grid, plan_sweep

    plan = plan_sweep(protocol, load_grid(grid))
    t0 = time.perf_counter()
    ok = 0
    for run in plan.runs:
        result = run_and_score(
            run.protocol_yaml,
            str(work / "protocols" / f"{run.run_id}.yaml"),
            str(work / "runs" / run.run_id),
        )
        ok += result["error"] is None
    return {"runs_s": time.perf_counter() - t0, "runs_ok": ok}


def _sweep(protocol: Path, grid: Path, work: Path) -> dict[str, Any]:
    from smartscope.sweep import run_sweep

    t0 = time.perf_counter()
    result = run_sweep(protocol, grid, out_dir=work / "sweep")
    return {
        "runs_s": result.wall_time_s,
        "ray_start_s": result.ray_start_s,
        "total_s": time.perf_counter() - t0,
        "runs_ok": result.n_ok,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from test_sweep import PROTOCOL

    data = json.loads(json.dumps(PROTOCOL))
    data["sequence"]["time_plan"]["loops"] = args.frames
    results: dict[str, Any] = {
        "date": date.today().isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "frames_per_run": args.frames,
        "grids": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        protocol = root / "protocol.yaml"
        protocol.write_text(yaml.safe_dump(data, sort_keys=False))
        for n, text in GRIDS.items():
            grid = root / f"grid{n}.yaml"
            grid.write_text(text)
            trials: dict[str, list[dict[str, Any]]] = {"sequential": [], "sweep": []}
            for rep in range(args.repeats):
                order = (
                    ("sequential", "sweep") if rep % 2 == 0 else ("sweep", "sequential")
                )
                for how in order:
                    work = root / f"{n}-{how}-{rep}"
                    work.mkdir()
                    load = os.getloadavg()[0]
                    fn = _sequential if how == "sequential" else _sweep
                    trial = {**fn(protocol, grid, work), "load_before": load}
                    trials[how].append(trial)
                    print(f"{n} runs, {how}, repeat {rep}: {trial}", flush=True)
            results["grids"][str(n)] = trials
    out = args.out or (
        Path(__file__).parent / "results" / f"sweep-{results['date']}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
