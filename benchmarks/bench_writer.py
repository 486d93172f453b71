"""The run writer's cost per frame: room made ahead along t, or one time point
at a time.

Run from the repository root (on a quiet machine)::

    python benchmarks/bench_writer.py              # 300 frames, 5 rounds

Writes a one-channel 512 x 512 uint16 time-lapse through
``smartscope.io.images.RunImages.store_frame`` (the controller's own
OME-NGFF writer, Blosc LZ4 + bit-shuffle) into a temporary folder, once with
the time axis grown ahead of the frames (the writer's default,
``T_SLACK_MIN``/``T_SLACK_MAX``) and once grown by one time point per frame
(both set to 0), the two interleaved round by round. Prints the median time
per frame of each round.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    import smartscope.io.images as images

    plane = np.random.default_rng(0).integers(0, 4000, (512, 512), dtype=np.uint16)
    default = (images.T_SLACK_MIN, images.T_SLACK_MAX)
    res: dict[str, list[float]] = {}
    # one folder, emptied between runs: fresh folders each time made the
    # first runs several times slower here (the file system, not the writer)
    tmp = Path(tempfile.mkdtemp(prefix="smartscope-bench-writer-"))
    try:
        for _ in range(args.rounds):
            for mode, slack in (("one time point a frame", (0, 0)), ("ahead", default)):
                images.T_SLACK_MIN, images.T_SLACK_MAX = slack
                shutil.rmtree(tmp / "data.ome.zarr", ignore_errors=True)
                writer = images.RunImages(
                    tmp / "data.ome.zarr",
                    run={"benchmark": "writer"},
                    interval_s=1.0,
                    z_step_um=1.0,
                    save_labels=False,
                    save_denoised=False,
                )
                times = []
                for t in range(args.frames):
                    t0 = time.perf_counter()
                    writer.store_frame(
                        plane,
                        position="a",
                        index={"t": t},
                        channel="DAPI",
                        pixel_um=0.5,
                    )
                    times.append(time.perf_counter() - t0)
                writer.finish()
                res.setdefault(mode, []).append(1e3 * float(np.median(times)))
    finally:
        images.T_SLACK_MIN, images.T_SLACK_MAX = default
        shutil.rmtree(tmp, ignore_errors=True)
    for mode, ms in res.items():
        rounds = ", ".join(f"{x:.2f}" for x in ms)
        print(f"{mode}: {np.median(ms):.2f} ms per frame (rounds: {rounds})")


if __name__ == "__main__":
    main()
