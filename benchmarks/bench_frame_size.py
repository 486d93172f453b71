"""How the models' cost grows with the frame size: 512², 1024², 2048².

Run from the repository root::

    python benchmarks/bench_frame_size.py            # 5 interleaved repeats
    python benchmarks/bench_frame_size.py --repeats 9

Loads the shipped ``denoise-care`` and ``nuclei-seg`` on the CPU (2 torch
threads), simulates one DAPI frame at 10x per size (the demo camera's sensor
set to 512, 1024 and 2048 px), and times ``predict`` on each, sizes
interleaved repeat by repeat, with the frame-sized tiles of
``smartscope.nn.predictor.Predictor`` and, for comparison, with the layout it
replaced (tiles of ``tile_px`` each, starting every ``tile_px - overlap_px``,
the last one flush with the edge), and with the whole frame in one piece
(``tile_px`` raised above the frame). The segmenter rescales frames to its
training nucleus size first (12 µm nuclei at 10x: 1109 px for a 512 frame
is what made 1024-px tiles wasteful). Prints medians and the ratios to 512²,
and writes ``benchmarks/results/frame-size-<YYYY-MM-DD>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SIZES = (512, 1024, 2048)


def _legacy_layout(self, n: int, *, axis: int = 0) -> list[tuple[int, int, int, int]]:
    """The layout before frame-sized tiles, as (start, size, keep_from, keep_to)."""
    t, o = self.tile_px, self.overlap_px
    if n <= t:
        return [(0, n, 0, n)]
    starts = sorted({*range(0, n - t, t - o), n - t})
    out = []
    for s in starts:
        k0 = s if s == 0 else s + o // 2
        k1 = n if s + t >= n else s + t - o // 2
        out.append((s, t, k0, k1))
    # each keeps from its start + o/2 to the next one's start + o/2
    fixed = []
    for i, (s, size, k0, _k1) in enumerate(out):
        nxt = out[i + 1][2] if i + 1 < len(out) else n
        fixed.append((s, size, k0, nxt))
    return fixed


def _frames() -> dict[int, np.ndarray]:
    from smartscope.bench_scaling import demo_frame

    return {n: demo_frame(n) for n in SIZES}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    import torch

    from smartscope.nn.model import load_model
    from smartscope.nn.predictor import Predictor

    torch.set_num_threads(2)
    frames = _frames()
    models = {
        name: load_model(ROOT / "models" / name, device="cpu")
        for name in ("denoise-care", "nuclei-seg")
    }
    new_layout = Predictor._layout
    # (name, layout, tile_px); the models' own default tile_px is the first
    # (DEFAULT_TILE_PX and, since 2026-12-03, INT8_TILE_PX: 1024)
    layouts = (
        ("frame-sized", new_layout, 1024),
        ("legacy", _legacy_layout, 1024),
        ("whole frame", new_layout, 2 * max(SIZES)),
    )
    times: dict[str, list[float]] = {}
    for _, layout, tile in layouts:
        Predictor._layout = layout  # type: ignore[method-assign]
        for m in models.values():
            m.predictor.tile_px = tile
            m.predict(frames[512])  # warm up
    for _ in range(args.repeats):
        for layout_name, layout, tile in layouts:
            Predictor._layout = layout  # type: ignore[method-assign]
            for name, m in models.items():
                m.predictor.tile_px = tile
                for n in SIZES:
                    t0 = time.perf_counter()
                    m.predict(frames[n])
                    dt = time.perf_counter() - t0
                    times.setdefault(f"{layout_name} {name} {n}", []).append(dt)
    Predictor._layout = new_layout  # type: ignore[method-assign]
    med = {k: float(np.median(v)) for k, v in times.items()}
    rows = []
    for layout_name, _, _ in layouts:
        for name in models:
            base = med[f"{layout_name} {name} 512"]
            for n in SIZES:
                v = med[f"{layout_name} {name} {n}"]
                rows.append(
                    {
                        "layout": layout_name,
                        "model": name,
                        "precision": models[name].predictor.precision,
                        "size": n,
                        "median_ms": round(v * 1000, 1),
                        "ratio_to_512": round(v / base, 2),
                        "pixel_ratio": (n / 512) ** 2,
                    }
                )
                print(
                    f"{layout_name:12s} {name:13s} {n:5d}²  {v * 1000:8.1f} ms  "
                    f"x{v / base:5.2f} (pixels x{(n / 512) ** 2:.0f})"
                )
    out = ROOT / "benchmarks" / "results" / f"frame-size-{date.today()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "command": "python benchmarks/bench_frame_size.py "
                f"--repeats {args.repeats}",
                "machine": f"{platform.processor() or platform.machine()}, "
                f"{os.cpu_count()} CPUs, torch {torch.__version__}, 2 threads",
                "date": str(date.today()),
                "rows": rows,
            },
            indent=1,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
