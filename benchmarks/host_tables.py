"""The host's work on a frame once its labels are in: area filter, measure,
track.

The area filter is timed twice: with the demo protocol's range, which keeps
every nucleus (the labels come back as they are), and with the median
area as the smallest kept (half are dropped, the rest renumbered).

On a GPU the models take a few milliseconds even at 2048²; what follows on
the host (``filter_by_area`` on the segmenter's labels, ``measure_objects``,
the tracker's update, all per frame and in order) then sets the floor of a
frame's latency. This times each on the labels ``nuclei-seg`` gives for the
benchmarks' frame at each size (:func:`smartscope.bench_scaling.demo_frame`,
what ``smartscope bench --scaling`` times), medians of ``--repeats``.

Usage::

    python benchmarks/host_tables.py --json benchmarks/results/host-tables-DATE.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from device_ops import DIAMETER_PX
from smartscope.analysis.measure import measure_objects
from smartscope.analysis.segment import filter_by_area
from smartscope.analysis.track import Tracker
from smartscope.bench import machine_info
from smartscope.bench_scaling import demo_frame, demo_frame_input
from smartscope.nn import load_model


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return round(float(np.median(times)), 3)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    model = load_model("nuclei-seg", device="cpu")
    rows = []
    for size in args.sizes:
        image = demo_frame(size)
        labels = model.predict(image, diameter_px=DIAMETER_PX)
        frame = demo_frame_input(image, 0)
        table = measure_objects(labels, image, frame)

        def track(table=table) -> None:
            tracker = Tracker()
            tracker.update(table.x_um, table.y_um, t_s=0.0)
            tracker.update(table.x_um + 0.5, table.y_um, t_s=1.0)

        half = float(np.median(table.area_um2))
        row = {
            "size": size,
            "objects": len(table),
            "foreground_px": int((labels > 0).sum()),
            # the protocol's range keeps every nucleus (nothing to renumber)
            "filter_by_area_ms": _median_ms(
                lambda labels=labels: filter_by_area(
                    labels, pixel_size_um=0.65, min_area_um2=20, max_area_um2=500
                ),
                args.repeats,
            ),
            # the median area as the smallest kept: half of them go
            "filter_by_area_half_dropped_ms": _median_ms(
                lambda labels=labels, half=half: filter_by_area(
                    labels, pixel_size_um=0.65, min_area_um2=half
                ),
                args.repeats,
            ),
            "measure_ms": _median_ms(
                lambda labels=labels, image=image, frame=frame: measure_objects(
                    labels, image, frame
                ),
                args.repeats,
            ),
            "track_two_frames_ms": _median_ms(track, args.repeats),
        }
        rows.append(row)
        print(row)
    result = {"benchmark": "host_tables", "machine": machine_info(), "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
