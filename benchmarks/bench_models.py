"""Model benchmark: CPU time to denoise and segment one 512 x 512 frame.

Run from the repository root::

    python benchmarks/bench_models.py               # 30 interleaved repeats
    python benchmarks/bench_models.py --quick       # 5 repeats, indicative only
    python benchmarks/bench_models.py --update-docs # also rewrite "## Models" in docs/benchmarks.md

Loads the shipped models (``models/denoise-care``, ``models/denoise-care-fast``,
``models/denoise-n2v``, ``models/nuclei-seg``) on the CPU with 2 torch threads, warms them up, and
times ``model.predict(frame)`` on a simulated 512 x 512 uint16 frame (10x,
DAPI, 5 mW, 20 ms), the models interleaved repeat by repeat. For the
segmenter it also times the network alone (``model.maps``) so the watershed
post-processing shows separately. Writes
``benchmarks/results/models-<YYYY-MM-DD>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs" / "benchmarks.md"
MODELS = ("denoise-care", "denoise-care-fast", "denoise-n2v", "nuclei-seg")
F32 = "nuclei-seg (float32)"
CARE32 = "denoise-care (float32)"


def _frame() -> np.ndarray:
    from smartscope.hardware import load_core, release_core
    from smartscope.sim import get_simulator

    core = load_core(seed=1, time_mode="virtual")
    try:
        get_simulator(core)
        core.setConfig("Objective", "10x")
        core.setConfig("Channel", "DAPI")
        core.setProperty("Laser", "Power_mW", 5.0)
        core.setExposure(20.0)
        core.setXYPosition(100.0, -200.0)
        core.snapImage()
        return np.asarray(core.getImage(), np.uint16).copy()
    finally:
        release_core(core)


def run(repeats: int) -> dict:
    import torch

    from smartscope.bench import machine_info
    from smartscope.nn import load_model

    info = machine_info()

    torch.set_num_threads(2)
    frame = _frame()
    # precision "auto": the int8 copy (ONNX Runtime) where the card has one
    models = {n: load_model(n, device="cpu", warm_up=True) for n in MODELS}
    models[F32] = load_model("nuclei-seg", device="cpu", precision="float32")
    models[CARE32] = load_model("denoise-care", device="cpu", precision="float32")
    for m in models.values():  # warm up at the benchmark size too
        m.predict(frame)
    segs = ("nuclei-seg", F32)
    times: dict[str, list[float]] = {
        n: [] for n in [*models, *(f"{k} network only" for k in segs)]
    }
    for _ in range(repeats):
        for name, m in models.items():
            t = time.perf_counter()
            m.predict(frame)
            times[name].append(time.perf_counter() - t)
        for k in segs:
            t = time.perf_counter()
            models[k].maps(frame)
            times[f"{k} network only"].append(time.perf_counter() - t)
    ms = {k: 1000 * np.asarray(v) for k, v in times.items()}
    summary = {
        k: {
            "median_ms": round(float(np.median(v)), 1),
            "p25_ms": round(float(np.percentile(v, 25)), 1),
            "p75_ms": round(float(np.percentile(v, 75)), 1),
            "min_ms": round(float(v.min()), 1),
        }
        for k, v in ms.items()
    }
    for care, k in (
        ("denoise-care", "nuclei-seg"),
        ("denoise-care-fast", "nuclei-seg"),
        (CARE32, F32),
    ):
        pair = ms[care] + ms[k]
        summary[f"{care} + {k}"] = {
            "median_ms": round(float(np.median(pair)), 1),
            "p25_ms": round(float(np.percentile(pair, 25)), 1),
            "p75_ms": round(float(np.percentile(pair, 75)), 1),
            "min_ms": round(float(pair.min()), 1),
        }
    precisions = {n: m.predictor.precision for n, m in models.items()}
    params = {
        n: int(sum(p.numel() for p in m.predictor.network.parameters()))
        for n, m in models.items()
    }
    return {
        "frame": {"shape": list(frame.shape), "dtype": str(frame.dtype)},
        "repeats": repeats,
        "torch_threads": 2,
        "device": "cpu",
        "models": summary,
        "precision": precisions,
        "parameters_after_bn_fusion": params,
        "machine": {
            **{k: info[k] for k in ("cpu_model", "cpu_vector_isa")},
            "nproc": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "load_average_1min": round(os.getloadavg()[0], 2),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    }


def markdown(res: dict, results_file: str) -> str:
    m = res["models"]
    rows = [
        ("denoise-care (CARE), int8 + float32 (shipped)", "denoise-care"),
        ("denoise-care (CARE), float32", CARE32),
        (
            "denoise-care-fast (CARE, 8 base channels), int8 + float32",
            "denoise-care-fast",
        ),
        ("denoise-n2v (Noise2Void), int8 (shipped)", "denoise-n2v"),
        ("nuclei-seg (network + watershed), int8", "nuclei-seg"),
        ("nuclei-seg, network only, int8", "nuclei-seg network only"),
        ("nuclei-seg (network + watershed), float32", F32),
        ("nuclei-seg, network only, float32", f"{F32} network only"),
        (
            "**denoise + segment** (shipped, precision auto)",
            "denoise-care + nuclei-seg",
        ),
        (
            "denoise-care-fast + nuclei-seg (precision auto)",
            "denoise-care-fast + nuclei-seg",
        ),
        ("denoise + segment, all float32", f"{CARE32} + {F32}"),
    ]
    mach = res["machine"]
    lines = [
        "## Models",
        "",
        "Target: denoise + segment a 512 × 512 frame on the CPU (2 threads) in about "
        "100 ms together.",
        "",
        f"**Result:** denoise + segment takes {m['denoise-care + nuclei-seg']['median_ms']} ms "
        f"(median; fastest repeat {m['denoise-care + nuclei-seg']['min_ms']} ms).",
        "",
        "Command (from the repository root):",
        "",
        "```bash",
        "python benchmarks/bench_models.py --update-docs",
        "```",
        "",
        f"Results file: `{results_file}`.",
        "",
        'Setup: the shipped models loaded with `load_model(name, device="cpu", '
        'warm_up=True)` (precision "auto": each model\'s int8 ONNX copy in ONNX Runtime, '
        "all int8 for nuclei-seg and denoise-n2v, 10 of 18 convolutions for denoise-care, "
        "13 of 18 for denoise-care-fast; "
        'denoise-care and nuclei-seg once more with `precision="float32"`: torch, '
        "channels-last, batch norm folded into the convolutions), `torch.set_num_threads(2)`; "
        "one simulated 512 × 512 uint16 frame (10x, DAPI, 5 mW, 20 ms); "
        "`model.predict(frame)` timed with `time.perf_counter`, the models interleaved "
        f"repeat by repeat, {res['repeats']} repeats. Each U-Net is depth 3, 16 base "
        "channels (denoise-care-fast: 8), with a 2 × 2 pixel-unshuffle in front (see "
        "docs/models.md).",
        "",
        "| model | median ms | quartiles ms | fastest ms |",
        "|---|---:|---:|---:|",
    ]
    for label, key in rows:
        r = m[key]
        lines.append(
            f"| {label} | {r['median_ms']} | {r['p25_ms']}–{r['p75_ms']} | "
            f"{r['min_ms']} |"
        )
    lines += [
        "",
        f"Machine: {mach['nproc']} CPUs ({mach.get('cpu_model', '?')}; vector instructions "
        f"{', '.join(mach.get('cpu_vector_isa', [])) or '?'}) shared with other jobs "
        f"while measuring (1-minute "
        f"load average {mach['load_average_1min']} at the end), {mach['platform']}, Python "
        f"{mach['python']}, torch {mach['torch']}, {mach['date']}. On a shared machine the "
        "fastest repeat is the best estimate of the unloaded cost.",
        "",
    ]
    return "\n".join(lines)


def update_docs(section: str) -> None:
    """Replace the "## Models" section (up to the next "## " heading) of
    docs/benchmarks.md."""
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n\n"
    head, sep, rest = text.partition("\n## Models")
    if not sep and text.startswith("## Models"):
        head, rest = "", text[len("## Models") :]
    _, nxt, tail = rest.partition("\n## ")
    DOCS.write_text(
        head.rstrip("\n")
        + "\n\n"
        + section.rstrip("\n")
        + "\n"
        + (nxt + tail if nxt else "")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="5 repeats: figures indicative"
    )
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    parser.add_argument(
        "--update-docs",
        action="store_true",
        help='rewrite the "## Models" section of docs/benchmarks.md',
    )
    args = parser.parse_args(argv)
    res = run(5 if args.quick else args.repeats)
    out = args.out or RESULTS_DIR / f"models-{date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    try:
        shown = out.resolve().relative_to(ROOT)
    except ValueError:
        shown = out
    section = markdown(res, str(shown))
    print(section)
    if args.update_docs:
        update_docs(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
