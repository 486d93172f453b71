"""Where a frame's analysis time goes on the device: ``torch.profiler`` over
frames analysed as a run analyses them, per frame size.

    python benchmarks/gpu_profile.py --device cuda --sizes 512 2048 --out DIR

For each size, the demo's analysis (``denoise-care``, ``nuclei-seg``,
measure, track; :class:`~smartscope.analysis.analyser.FrameAnalyser`, warmed
up as a run warms it) analyses ``--frames`` frames without the profiler
(wall ms per frame) and then the same number under it. Written to ``DIR``:
``profile-DEVICE.json`` (per size: wall ms per frame with and without the
profiler; the device's kernel time per frame and its share of the wall
time, which says whether the frame is bound by the host, launching and
waiting, or by the card; per frame the kernels launched, CUDA graphs
replayed, copies and host waits; the top operators by device and by host
time), ``profile-DEVICE.txt`` (torch's tables) and
``trace-SIZE-DEVICE.json.gz`` (the timeline, for chrome://tracing or
Perfetto). On the CPU the same runs without device figures (the script's
rehearsal).
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from smartscope.bench import machine_info
from smartscope.bench_scaling import PIXEL_SIZE_UM, demo_frame, demo_frame_input

#: the CUDA runtime's calls counted per frame (the host's side of the card)
RUNTIME_CALLS = {
    "launches": ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"),
    "graph_launches": ("cudaGraphLaunch",),
    "copies": ("cudaMemcpyAsync", "cudaMemcpy"),
    "waits": (
        "cudaStreamSynchronize",
        "cudaDeviceSynchronize",
        "cudaEventSynchronize",
    ),
}


def _device_us(e: Any) -> float:
    """An averaged event's own device time, µs (torch 2.4+ names it
    ``self_device_time_total``; older ``self_cuda_time_total``)."""
    for name in ("self_device_time_total", "self_cuda_time_total"):
        v = getattr(e, name, None)
        if v is not None:
            return float(v)
    return 0.0


def _on_device(e: Any) -> bool:
    """Whether an averaged event is a kernel or copy on the card (not a
    host operator that launched it)."""
    return str(getattr(e, "device_type", "")).endswith("CUDA")


def summarise(prof: Any, frames: int) -> dict[str, Any]:
    """Per-frame figures from a profile of ``frames`` frames."""
    ka = prof.key_averages()
    device = [e for e in ka if _on_device(e)]
    host = [e for e in ka if not _on_device(e)]
    out: dict[str, Any] = {
        "device_ms_per_frame": round(sum(map(_device_us, device)) / 1e3 / frames, 3),
    }
    for what, names in RUNTIME_CALLS.items():
        n = sum(e.count for e in host if e.key in names)
        out[f"{what}_per_frame"] = round(n / frames, 1)
    out["top_device"] = [
        {"op": e.key[:120], "ms_per_frame": round(_device_us(e) / 1e3 / frames, 3)}
        for e in sorted(device, key=_device_us, reverse=True)[:10]
    ]
    ops = [e for e in host if not e.key.startswith(("cuda", "cu", "frame"))]
    out["top_host"] = [
        {
            "op": e.key[:120],
            "calls_per_frame": round(e.count / frames, 1),
            "self_ms_per_frame": round(e.self_cpu_time_total / 1e3 / frames, 3),
        }
        for e in sorted(ops, key=lambda e: e.self_cpu_time_total, reverse=True)[:10]
    ]
    return out


def profile_size(
    size: int, *, device: str, frames: int, denoise: str, work: Path
) -> tuple[dict[str, Any], str]:
    """The figures and torch's tables for one frame size."""
    from smartscope.analysis import AnalysisSettings
    from smartscope.analysis.analyser import FrameAnalyser

    image = demo_frame(size)
    analyser = FrameAnalyser(
        AnalysisSettings(
            denoise=denoise, segmenter="model", model="nuclei-seg", diameter_um=12
        ),
        device=device,
    )
    analyser.warm_up(image.shape, pixel_size_um=PIXEL_SIZE_UM)
    cuda = torch.device(device).type == "cuda"

    def one(k: int) -> None:
        result = analyser.analyse(demo_frame_input(image, k, t_s=k * 0.01))
        if result.error is not None:
            raise RuntimeError(f"frame {k} at {size}²: {result.error}")

    wall = []
    for k in range(frames):
        t = time.perf_counter()
        one(k)
        wall.append((time.perf_counter() - t) * 1e3)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    t = time.perf_counter()
    with profile(activities=activities) as prof:
        for k in range(frames):
            with record_function("frame"):
                one(frames + k)
        if cuda:
            torch.cuda.synchronize()
    profiled_ms = (time.perf_counter() - t) * 1e3 / frames
    trace = work / f"trace-{size}-{torch.device(device).type}.json"
    prof.export_chrome_trace(str(trace))
    with trace.open("rb") as src, gzip.open(f"{trace}.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    trace.unlink()
    figures = {
        "size_px": size,
        "frames": frames,
        "wall_ms_per_frame": round(statistics.median(wall), 3),
        "profiled_ms_per_frame": round(profiled_ms, 3),
        **summarise(prof, frames),
        "cuda_graphs": analyser.cuda_graphs_state(),
    }
    if cuda:
        figures["device_busy"] = round(
            figures["device_ms_per_frame"] / figures["profiled_ms_per_frame"], 3
        )
    sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    try:
        table = prof.key_averages().table(sort_by=sort, row_limit=30)
    except (AttributeError, KeyError):  # another torch's name for the column
        table = prof.key_averages().table(
            sort_by="self_device_time_total", row_limit=30
        )
    return figures, f"== {size}² ({frames} frames)\n{table}\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 2048])
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--denoise", default="denoise-care")
    ap.add_argument(
        "--out", type=Path, help="folder for the files (default: a temporary one)"
    )
    args = ap.parse_args(argv)
    if args.frames < 1:
        ap.error(f"--frames must be at least 1, got {args.frames}")
    out = args.out or Path(tempfile.mkdtemp(prefix="gpu-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    kind = torch.device(args.device).type
    rows, tables = [], []
    for size in args.sizes:
        figures, table = profile_size(
            size, device=args.device, frames=args.frames, denoise=args.denoise, work=out
        )
        rows.append(figures)
        tables.append(table)
        print(json.dumps({k: v for k, v in figures.items() if not k.startswith("top")}))
    result = {
        "benchmark": "gpu_profile",
        "device": args.device,
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if kind == "cuda" else None,
        "denoise": args.denoise,
        "machine": machine_info(),
        "sizes": rows,
    }
    (out / f"profile-{kind}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"profile-{kind}.txt").write_text("".join(tables))
    return result


if __name__ == "__main__":
    main()
