"""The analysis pipeline's throughput at 2048²: one stage against two.

``AnalysisPipeline`` with denoise-care + nuclei-seg + measure + track on the
CPU (or ``--device cuda``), warmed up as a run is, ``stages`` 1 (threads ``auto``) and 2, in turn,
``--repeats`` times: ``--frames`` copies of one simulated 2048² 10x frame
are queued at once (queue large enough to skip none), and the time per frame
is taken from the results' times from the third result on (steady state).

Usage::

    python benchmarks/stages_2048.py --json benchmarks/results/stages-2048-DATE.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from smartscope.analysis import AnalysisPipeline, AnalysisSettings
from smartscope.bench import machine_info
from smartscope.bench_scaling import PIXEL_SIZE_UM, demo_frame, demo_frame_input


def run(image: Any, stages: int, frames: int, device: str = "cpu") -> dict[str, Any]:
    settings = AnalysisSettings(
        denoise="denoise-care",
        segmenter="model",
        model="nuclei-seg",
        diameter_um=12,
        stages=stages,
        queue_size=max(64, frames),
    )
    pipeline = AnalysisPipeline(settings, device=device)
    done: list[tuple[float, Any, str | None]] = []
    pipeline.frame_analysed.connect(
        lambda r: done.append((r.t_result, r.extra.get("threads"), r.error))
    )
    pipeline.start(warm_up=(image.shape, PIXEL_SIZE_UM))
    for k in range(frames):
        pipeline.submit(demo_frame_input(image, k))
    pipeline.stop(drain=True, timeout_s=600)
    errors = [e for _, _, e in done if e is not None]
    if errors or len(done) != frames:
        raise RuntimeError(f"{len(done)} of {frames} analysed; errors: {errors[:3]}")
    t = sorted(t for t, _, _ in done)
    return {
        "stages": pipeline.stages,
        "ms_per_frame": round((t[-1] - t[2]) / (len(t) - 3) * 1000.0, 1),
        "threads": sorted({str(n) for _, n, _ in done}),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    image = demo_frame(args.size)
    out: dict[str, Any] = {
        "machine": machine_info(),
        "size": args.size,
        "device": args.device,
        "runs": {},
    }
    for rep in range(args.repeats):
        for stages in (1, 2):
            r = run(image, stages, args.frames, args.device)
            out["runs"].setdefault(str(stages), []).append(r)
            print(rep, r, flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
