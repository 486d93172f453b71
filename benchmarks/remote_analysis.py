"""What moving the analysis into a Ray actor costs: frame → result latency of
the same run with ``analysis.executor`` local and ray.

Run from the repository root (needs the [ray] extra)::

    python benchmarks/remote_analysis.py                 # 60 frames per run, 3 repeats
    python benchmarks/remote_analysis.py --frames 150 --repeats 5

The run is the demo protocol (one position, 20x, classical segmentation,
``center_on`` and ``adaptive_exposure``) in virtual time, shortened to
``--frames``; with ``--denoise`` the shipped CARE denoiser runs too. Both
executors run on this machine (the Ray actor is a local process): the
difference is the price of the hop (serialising the frame and the result,
Ray's scheduling), not of a network. Runs alternate local, ray, local, ...
so that load on a shared machine hits both. Writes
``benchmarks/results/remote-analysis-<date>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np


def _latencies(run: Path) -> list[float]:
    return [
        r["latency_ms"]
        for r in map(json.loads, (run / "events.jsonl").read_text().splitlines())
        if r["kind"] == "analysis" and not r["error"]
    ]


def _run(frames: int, executor: str, denoise: bool, out: Path) -> list[float]:
    import yaml

    from smartscope._data import data_dir
    from smartscope.controller import Controller
    from smartscope.hardware import load_core, release_core
    from smartscope.protocol import load_protocol

    data = yaml.safe_load((data_dir("protocols") / "demo.yaml").read_text())
    data["sequence"]["time_plan"]["loops"] = frames
    # the demo ships with the models in the loop; this benchmark's run is
    # classical segmentation, with the CARE denoiser only when asked
    data["analysis"].update(segmenter="classical", model=None, executor=executor)
    data["analysis"]["denoise"] = "denoise-care" if denoise else None
    data["save"]["denoised"] = False
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    proto = load_protocol(path)
    core = load_core(time_mode=proto.time_mode, seed=proto.seed, scene=proto.scene)
    try:
        Controller(core, proto, out_dir=out).run()
    finally:
        release_core(core)
    return _latencies(out)


def _stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {
        "n": int(a.size),
        "p50": round(float(np.percentile(a, 50)), 2),
        "p95": round(float(np.percentile(a, 95)), 2),
        "p99": round(float(np.percentile(a, 99)), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--denoise", action="store_true")
    args = ap.parse_args()

    import ray

    ray.init(include_dashboard=False, log_to_driver=False)
    lat: dict[str, list[float]] = {"local": [], "ray": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for ex in ("local", "ray"):
                out = Path(tmp) / f"{ex}-{i}"
                lat[ex] += _run(args.frames, ex, args.denoise, out)
    ray.shutdown()
    result: dict[str, Any] = {
        "command": "python benchmarks/remote_analysis.py "
        f"--frames {args.frames} --repeats {args.repeats}"
        + (" --denoise" if args.denoise else ""),
        "date": date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, {platform.system()}",
        "local_ms": _stats(lat["local"]),
        "ray_ms": _stats(lat["ray"]),
    }
    result["added_ms"] = {
        k: round(result["ray_ms"][k] - result["local_ms"][k], 2)
        for k in ("p50", "p95", "p99")
    }
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    path = results / f"remote-analysis-{result['date']}.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"written {path}")


if __name__ == "__main__":
    main()
