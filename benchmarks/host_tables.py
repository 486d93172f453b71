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

With a segmenter on a GPU the area filter and the measurements run on the
card instead (:mod:`smartscope.analysis.measure_device`): ``--device`` also
times that path on the labels and raw frame already there, synchronised,
with the copies of the labels and the objects' sums back
(``device_filter_measure_ms``), and the table the host then makes of the
sums (``table_from_sums_ms``), and counts its kernels and syncs. On the
CPU it times the same torch code, which says nothing of a GPU's speed.

Usage::

    python benchmarks/host_tables.py --json benchmarks/results/host-tables-DATE.json
    python benchmarks/host_tables.py --device cuda --json ...
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from device_ops import DIAMETER_PX
from smartscope.analysis.measure import measure_objects, object_table
from smartscope.analysis.measure_device import filter_and_measure_t
from smartscope.analysis.segment import area_limits_px, filter_by_area
from smartscope.analysis.track import Tracker
from smartscope.bench import machine_info
from smartscope.bench_scaling import demo_frame, demo_frame_input
from smartscope.nn import load_model
from smartscope.nn.op_count import OpCounter


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return round(float(np.median(times)), 3)


def _on_device(labels, image, frame, device: str, repeats: int) -> dict:
    """The device path's filter (the protocol's range, as above) and
    measurements of one frame whose labels and raw pixels are on
    ``device``, with the copies back; its kernels and syncs."""
    dev = torch.device(device)
    lab_t = torch.from_numpy(labels[None]).to(dev)
    img_t = torch.from_numpy(image[None].astype(np.int32)).to(dev)
    min_px, max_px = area_limits_px(0.65, 20, 500)

    def filter_measure():
        out, stats = filter_and_measure_t(lab_t, img_t, min_px=min_px, max_px=max_px)
        out.cpu()  # the labels come back (the sums did inside)
        return stats[0]

    stats = filter_measure()
    counter = OpCounter()
    with counter:
        filter_measure()
    return {
        "device": str(dev),
        "device_filter_measure_ms": _median_ms(filter_measure, repeats),
        "table_from_sums_ms": _median_ms(lambda: object_table(stats, frame), repeats),
        "device_kernels": sum(counter.kernels.values()),
        "device_syncs": dict(counter.syncs),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument(
        "--device", help="also time the filter and measurements on this device"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
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
        if args.device:
            row.update(_on_device(labels, image, frame, args.device, args.repeats))
        rows.append(row)
        print(row)
    result = {"benchmark": "host_tables", "machine": machine_info(), "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
