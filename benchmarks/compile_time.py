"""How long ``torch.compile`` takes to compile a shipped network, per input
shape: what compiling the networks would add to every run's warm-up (each
frame size and batch size compiles anew with static shapes).

    python benchmarks/compile_time.py --json benchmarks/results/compile-time-DATE.json

Times, for each model: its first eager call (set-up), then each shape's
first compiled call (the compile) and second (the compiled code), on the
CPU in float32 (the torch network a GPU would compile; the CPU's own path
is ONNX Runtime's int8 copy).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from smartscope.bench import machine_info
from smartscope.nn import load_model


def _timed(fn, x: torch.Tensor) -> float:
    t = time.perf_counter()
    fn(x)
    return round(time.perf_counter() - t, 3)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["denoise-care", "nuclei-seg"])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if min(args.batches) < 1 or args.size < 16:
        ap.error(
            f"--batches must be at least 1 and --size at least 16, "
            f"got {args.batches} and {args.size}"
        )
    torch.set_num_threads(2)
    rows = []
    for name in args.models:
        net = load_model(name, device="cpu", precision="float32").predictor.network
        compiled = torch.compile(net, dynamic=False)
        row = {"model": name, "shapes": []}
        with torch.inference_mode():
            for b in args.batches:
                x = torch.rand(b, 1, args.size, args.size).contiguous(
                    memory_format=torch.channels_last
                )
                row["shapes"].append(
                    {
                        "shape": list(x.shape),
                        "eager_first_s": _timed(net, x),
                        "eager_s": _timed(net, x),
                        "compile_s": _timed(compiled, x),
                        "compiled_s": _timed(compiled, x),
                    }
                )
        rows.append(row)
        print(json.dumps(row))
    result = {
        "benchmark": "compile_time",
        "torch": torch.__version__,
        "machine": machine_info(),
        "rows": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
