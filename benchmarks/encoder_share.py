"""What a shared encoder for the denoiser and the segmenter could save: the
encoder's share (pixel unshuffle, the down blocks and pools) of each shipped
U-Net's arithmetic (torch's ``FlopCounterMode``) and time (float32, one
thread, medians of 15 alternated calls) on a 512² input.

    python benchmarks/encoder_share.py --json benchmarks/results/encoder-share-DATE.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from smartscope.bench import machine_info
from smartscope.nn import load_model


def _encoder(net: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The U-Net's encoder alone (as ``UNet.forward`` runs it)."""
    h = net.unshuffle(x)
    outs = []
    for i, block in enumerate(net.down):
        if i > 0:
            h = net.pool(h)
        h = block(h)
        outs.append(h)
    return outs


def _flops(fn, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        fn(x)
    return counter.get_total_flops()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--models",
        nargs="+",
        default=["denoise-care", "denoise-care-fast", "nuclei-seg"],
    )
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.size < 16:
        ap.error(
            f"--repeats must be at least 1 and --size at least 16, "
            f"got {args.repeats} and {args.size}"
        )
    torch.set_num_threads(1)
    rows = []
    with torch.inference_mode():
        for name in args.models:
            net = load_model(name, device="cpu", precision="float32").predictor.network
            x = torch.rand(1, 1, args.size, args.size).contiguous(
                memory_format=torch.channels_last
            )
            total, enc = _flops(net, x), _flops(lambda t, n=net: _encoder(n, t), x)
            t_net, t_enc = [], []
            for _ in range(3):
                net(x)
                _encoder(net, x)
            for _ in range(args.repeats):
                t = time.perf_counter()
                _encoder(net, x)
                t_enc.append(time.perf_counter() - t)
                t = time.perf_counter()
                net(x)
                t_net.append(time.perf_counter() - t)
            row = {
                "model": name,
                "gflop": round(total / 1e9, 3),
                "encoder_gflop": round(enc / 1e9, 3),
                "encoder_share_flop": round(enc / total, 3),
                "ms": round(statistics.median(t_net) * 1e3, 2),
                "encoder_ms": round(statistics.median(t_enc) * 1e3, 2),
            }
            row["encoder_share_time"] = round(row["encoder_ms"] / row["ms"], 3)
            rows.append(row)
            print(json.dumps(row))
    result = {
        "benchmark": "encoder_share",
        "size": args.size,
        "machine": machine_info(),
    }
    result["rows"] = rows
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
