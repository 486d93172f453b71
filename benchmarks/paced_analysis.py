"""The analysis fed at a camera's pace: frames/s, frames skipped, frame→result.

Frames the simulator rendered beforehand are submitted to the analysis
pipeline a run uses at ``--rate`` frames/s (``smartscope.bench_paced``); one
line of JSON per run is printed and appended to ``--json``. The GPU targets
of issue 12 are measured this way (``benchmarks/gpu_check.sh``, part
``paced``)::

    python benchmarks/paced_analysis.py --size 2048 --rate 100 --frames 1000 --device cuda
    python benchmarks/paced_analysis.py --size 512 --rate 10 --frames 300 --device cpu \\
        --denoise denoise-care-fast --json /tmp/paced.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from smartscope.bench import machine_info
from smartscope.bench_paced import measure_paced


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--rate", type=float, default=20.0, help="frames/s")
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--denoise", default="denoise-care", help="a denoiser, or none")
    ap.add_argument("--distinct", type=int, default=8, help="frames rendered")
    ap.add_argument("--stages", default=None, help="analysis.stages: auto, 1 or 2")
    ap.add_argument("--batch-frames", default=None, help="analysis.batch_frames")
    ap.add_argument("--max-wait-ms", type=float, help="analysis.max_wait_ms")
    ap.add_argument("--queue-size", type=int, help="analysis.queue_size")
    ap.add_argument(
        "--cuda-graphs", choices=("on", "off"), help="analysis.cuda_graphs (default on)"
    )
    ap.add_argument(
        "--keep-images",
        choices=("all", "none", "labels", "denoised"),
        default="all",
        help="the images the results carry (none: on a GPU they stay there)",
    )
    ap.add_argument(
        "--store",
        action="store_true",
        help="write each frame to a run folder before handing it over, and "
        "store the results (rows, the images kept), as a run does",
    )
    ap.add_argument("--json", type=Path, help="append the result here (JSON lines)")
    args = ap.parse_args()
    settings: dict[str, object] = {}
    if args.stages is not None:
        settings["stages"] = args.stages if args.stages == "auto" else int(args.stages)
    if args.batch_frames is not None:
        b = args.batch_frames
        settings["batch_frames"] = b if b == "auto" else int(b)
    if args.max_wait_ms is not None:
        settings["max_wait_ms"] = args.max_wait_ms
    if args.queue_size is not None:
        settings["queue_size"] = args.queue_size
    if args.cuda_graphs is not None:
        settings["cuda_graphs"] = args.cuda_graphs == "on"
    r = measure_paced(
        size=args.size,
        rate_hz=args.rate,
        frames=args.frames,
        device=args.device,
        denoise=None if args.denoise == "none" else args.denoise,
        distinct=args.distinct,
        settings=settings,
        images_kept={
            "all": frozenset({"labels", "denoised"}),
            "none": frozenset(),
            "labels": frozenset({"labels"}),
            "denoised": frozenset({"denoised"}),
        }[args.keep_images],
        store=args.store,
    )
    r["machine"] = machine_info()
    line = json.dumps(r)
    print(line, flush=True)
    if args.json is not None:
        with args.json.open("a") as fh:
            fh.write(line + "\n")


if __name__ == "__main__":
    main()
