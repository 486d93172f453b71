"""Simulator benchmark: snap cost against a numpy Poisson draw, 2048 frames, and
virtual-time MDA throughput.

Run from the repository root::

    python benchmarks/bench_snap.py            # full run, about a minute
    python benchmarks/bench_snap.py --quick    # a few seconds, indicative only
    python benchmarks/bench_snap.py --defocus  # also defocused 40x snaps (slow)

Prints a table and writes ``benchmarks/results/snap-<YYYY-MM-DD>.json``. The
measurement itself lives in :mod:`smartscope.bench` (also behind
``smartscope bench``); this script only chooses where the results go.
"""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path

from smartscope.bench import run

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="few repeats: seconds, figures indicative"
    )
    parser.add_argument(
        "--defocus",
        action="store_true",
        help="also time 512x512 snaps at 40x, 0/5/20 um out of focus (slow)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"JSON file to write (default: {RESULTS_DIR}/snap-<date>.json)",
    )
    args = parser.parse_args(argv)
    out = args.out or RESULTS_DIR / f"snap-{date.today().isoformat()}.json"
    results = run(json_path=out, quick=args.quick, defocus=args.defocus)
    return 0 if results["simulator"]["snap_512"]["meets_target"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
