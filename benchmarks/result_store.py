"""What storing an analysed frame costs the analysis thread: written there
(as before 2026-12-04) against handed to the recorder's writer thread.

Run from the repository root (on a quiet machine)::

    python benchmarks/result_store.py --json OUT.json     # 512² and 2048²

For each size, one simulated frame of the benchmarks (``bench_scaling``'s
demo frame) is analysed once with the demo's models (``denoise-care``,
``nuclei-seg``: 2048² about 500 nuclei); its result is then stored
``--frames`` times through a real :class:`~smartscope.controller.recorder.Recorder`
(``measurements.csv`` rows, the labels plane, and with ``--denoised`` the
denoised plane, into a temporary run folder; each frame's raw plane is
written first, untimed, as the runner thread does), two ways taking turns
frame by frame:

- ``on_thread``: the store written by the calling thread (what the
  analysis thread did before: ``Recorder._store``);
- ``handed_over``: ``Recorder.on_result``, which queues it for the writer
  thread; frames handed over at ``--pace`` of the store's own time, so that
  the queue has room (the hand-over's cost, not the disk's).

Prints and writes the medians and p95 of both, ms, and the writer thread's
own time per frame.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _result(size: int) -> Any:
    from smartscope.analysis.analyser import FrameAnalyser
    from smartscope.analysis.settings import AnalysisSettings
    from smartscope.bench_scaling import PIXEL_SIZE_UM, demo_frame, demo_frame_input

    img = demo_frame(size)
    analyser = FrameAnalyser(
        AnalysisSettings(denoise="denoise-care", segmenter="model", model="nuclei-seg"),
        device="cpu",
    )
    analyser.load_models()
    analyser.images_kept = frozenset({"labels", "denoised"})
    analyser.warm_up(img.shape, pixel_size_um=PIXEL_SIZE_UM)
    r = analyser.analyse(demo_frame_input(img, 0))
    if r.error is not None:
        raise RuntimeError(r.error)
    return r


def measure(size: int, frames: int, denoised: bool, pace: float) -> dict[str, Any]:
    from smartscope.controller.recorder import Recorder, _Stored

    result = _result(size)
    times: dict[str, list[float]] = {"on_thread": [], "handed_over": []}
    with tempfile.TemporaryDirectory() as tmp:
        rec = Recorder(
            Path(tmp) / "run",
            protocol_yaml="name: bench\n",
            save_labels=True,
            save_denoised=denoised,
            interval_s=1.0,
            z_step_um=1.0,
        )
        store_s: list[float] = []
        try:
            for k in range(frames * 2 + 4):
                where = rec.images.store_frame(
                    result.frame.image,
                    position="p0",
                    index={"t": k},
                    channel="DAPI",
                    pixel_um=result.frame.pixel_size_um,
                )
                frame = dataclasses.replace(
                    result.frame, frame_index=k, image_at=where.as_dict()
                )
                r = dataclasses.replace(result, frame=frame)
                how = "on_thread" if k % 2 == 0 else "handed_over"
                t0 = time.perf_counter()
                if how == "on_thread":
                    rec._store(_Stored.of(r))  # the old path
                else:
                    rec.on_result(r)
                dt = time.perf_counter() - t0
                if how == "on_thread":
                    store_s.append(dt)
                if k >= 4:
                    times[how].append(dt * 1000.0)
                # at a camera's pace: the writer has its frame written before
                # the next is handed over
                time.sleep(pace * float(np.median(store_s)))
            t0 = time.perf_counter()
            rec.drain_results()
            drain_ms = (time.perf_counter() - t0) * 1000.0
        finally:
            rec.close()  # the files closed (a summary is not what this measures)
    return {
        "objects": len(result.objects),
        "frames_each": frames,
        "denoised_stored": denoised,
        "ms": {
            k: {
                "median": round(float(np.median(v)), 3),
                "p95": round(float(np.percentile(v, 95)), 3),
            }
            for k, v in times.items()
        },
        "last_drain_ms": round(drain_ms, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 2048])
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--denoised", action="store_true")
    ap.add_argument("--pace", type=float, default=2.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from smartscope.bench import machine_info

    out: dict[str, Any] = {
        "machine": {k: v for k, v in machine_info().items() if k != "date"},
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "sizes": {},
    }
    for size in args.sizes:
        m = measure(size, args.frames, args.denoised, args.pace)
        out["sizes"][str(size)] = m
        print(
            f"{size}² ({m['objects']} objects): on the analysis thread "
            f"{m['ms']['on_thread']['median']:.3f} ms (p95 "
            f"{m['ms']['on_thread']['p95']:.3f}), handed over "
            f"{m['ms']['handed_over']['median']:.3f} ms (p95 "
            f"{m['ms']['handed_over']['p95']:.3f})"
        )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
