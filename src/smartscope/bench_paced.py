"""The analysis fed at a camera's pace: frames/s sustained, frames skipped,
frame→result latency.

The GPU targets of issue 12 (2048² at 100 frames/s with none skipped, p99
under 20 ms; 512² p99 under 5 ms) are about the analysis keeping up with a
camera; the simulator cannot render 2048² frames at 100/s on the host's
CPU, so here the camera is a clock: ``frames`` frames, cycled from
``distinct`` frames the simulator rendered beforehand (the demo scene at
10x, the sample moving between them), are submitted to the
:class:`~smartscope.analysis.pipeline.AnalysisPipeline` a run uses (its
default bounded queue, its warm-up, its device) at ``rate_hz``, each stamped
as it is submitted, as the acquisition thread stamps a frame it receives.
Reported: frames submitted, analysed and skipped (the queue was full, or
with ``max_wait_ms`` in ``settings`` they had waited too long), the
rate the frames were submitted at and the rate the results came at,
frame→result (the frame handed over → its labels, measurements and tracks
ready: what a reaction decides on, which takes about 0.1 ms more, measured
by ``smartscope bench --positions``) n, p50, p95, p99 and max, the analysis
stages' and the models' steps' medians, and how late the clock's ticks were
(the submitting thread's own lateness, which would otherwise pass for the
analysis').
"""

from __future__ import annotations

import dataclasses
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["measure_paced", "render_frames"]


def render_frames(
    size: int, distinct: int, *, step_s: float = 60.0
) -> tuple[list[np.ndarray], list[int]]:
    """``distinct`` frames of ``size``² of the demo scene (10x, 5 mW, 20 ms,
    DAPI), ``step_s`` of sample time apart (the nuclei move between them), and
    how many nuclei each shows (the simulator's truth)."""
    from smartscope.bench_scaling import demo_core
    from smartscope.sim import get_simulator

    with demo_core(size) as core:
        sim = get_simulator(core)
        frames, nuclei = [], []
        for _ in range(distinct):
            core.snapImage()
            frames.append(core.getImage().copy())
            nuclei.append(int(np.count_nonzero(np.unique(sim.truth().labels))))
            sim.clock.advance(step_s)
        return frames, nuclei


def measure_paced(
    *,
    size: int = 512,
    rate_hz: float = 20.0,
    frames: int = 600,
    device: str = "auto",
    denoise: str | None = "denoise-care",
    distinct: int = 8,
    settings: dict[str, Any] | None = None,
    images_kept: frozenset[str] | None = None,
    store: bool = False,
    store_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Feed ``frames`` frames of ``size``² to the analysis at ``rate_hz`` and
    measure whether it keeps up (see the module's text).

    ``denoise``: the denoiser (None: none); the segmenter is ``nuclei-seg``.
    ``settings``: further :class:`AnalysisSettings` fields (``stages``,
    ``batch_frames``, ``queue_size`` ...). ``images_kept``: the images the
    results carry (``FrameAnalyser.images_kept``; None: both, labels and
    denoised, as in a run that saves them; empty: as in a run that saves
    neither and whose reactions read neither, where on a GPU they stay
    there). ``store``: as in a run, each frame is written to a run folder
    (a real :class:`~smartscope.controller.recorder.Recorder` in a
    temporary folder) by the clock's thread before it is handed over (its
    time taken before the write, so frame→result counts it), and each
    result handed to the recorder's results thread, which stores its rows
    and the images it carries; ``store_dir``: the run folder to create and
    keep (default: a temporary one, removed after).

    Returns
    -------
    dict
        ``settings``; ``submitted``, ``analysed``, ``skipped``, ``failed``
        (``analysed + skipped == submitted``); ``submitted_per_s`` and
        ``analysed_per_s`` (from the first result to the last);
        ``frame_to_result_ms`` (n, p50, p95, p99, max); ``stages_ms`` and
        ``model_stages_ms`` (medians); ``objects_per_frame`` (median) and
        ``truth_nuclei_per_frame`` (the simulator's count, median);
        ``tick_late_ms`` (the clock's lateness: p99, max); ``device``;
        ``cuda_graphs`` (per model: replayed from CUDA graphs, the shapes
        recorded, why they were turned off). With ``store``: ``store``,
        ``raw_write_ms`` (the clock thread's write of each frame) and
        ``storage_ms`` (the results thread's time a frame; n, p50, p95,
        p99, max) and ``storage_waited_s`` (the analysis' wait for room in
        its queue); the images stored are those kept (``images_kept``).
    """
    from smartscope.analysis import AnalysisPipeline, AnalysisSettings
    from smartscope.bench_scaling import PIXEL_SIZE_UM, demo_frame_input
    from smartscope.io.summary import percentiles
    from smartscope.nn.predictor import resolve_device

    if not rate_hz > 0:
        raise ValueError(f"rate_hz must be > 0, got {rate_hz}")
    if frames < 1 or distinct < 1:
        raise ValueError(f"frames and distinct must be >= 1, got {frames}, {distinct}")
    on = str(resolve_device(device))
    images, nuclei = render_frames(size, distinct)
    analysis = AnalysisSettings(
        denoise=denoise,
        segmenter="model",
        model="nuclei-seg",
        diameter_um=12,
        **(settings or {}),
    )
    pipeline = AnalysisPipeline(analysis, device=on)
    if images_kept is not None:
        pipeline.images_kept = frozenset(images_kept)
    results: list[Any] = []
    pipeline.frame_analysed.connect(lambda r: results.append(r))
    folder = None
    rec = None
    if store:
        from smartscope.controller.recorder import Recorder

        if store_dir is None:
            folder = tempfile.TemporaryDirectory(prefix="smartscope-paced-")
            store_dir = Path(folder.name) / "run"
        rec = Recorder(
            Path(store_dir),
            protocol_yaml="name: paced\n",
            save_labels="labels" in pipeline.images_kept,
            save_denoised="denoised" in pipeline.images_kept,
            interval_s=1.0 / rate_hz,
            z_step_um=1.0,
        )
        pipeline.frame_analysed.connect(rec.on_result)  # as the controller does
    pipeline.start(warm_up=(images[0].shape, PIXEL_SIZE_UM))
    late: list[float] = []
    raw_ms: list[float] = []
    period = 1.0 / rate_hz

    failed: list[BaseException] = []

    def feed() -> None:
        try:
            _feed()
        except BaseException as e:  # raised again on the caller's thread
            failed.append(e)

    def _feed() -> None:
        t0 = time.perf_counter() + period
        for k in range(frames):
            due = t0 + k * period
            while (wait := due - time.perf_counter()) > 0:
                time.sleep(wait)
            frame = demo_frame_input(images[k % distinct], k, t_s=k * period)
            late.append((frame.t_frame - due) * 1000.0)  # stamped as in hand
            if rec is not None:  # written before it is handed over, as in a run
                where = rec.images.store_frame(
                    frame.image,
                    position=frame.position,
                    index={"t": k},
                    channel=frame.channel,
                    pixel_um=frame.pixel_size_um,
                )
                raw_ms.append((time.perf_counter() - frame.t_frame) * 1000.0)
                frame = dataclasses.replace(frame, image_at=where.as_dict())
            pipeline.submit(frame)

    clock = threading.Thread(target=feed, name="paced-camera")
    t_start = time.perf_counter()
    try:
        clock.start()
        clock.join()
        t_fed = time.perf_counter()
        if failed:  # e.g. a full disk under store: no figures from half a run
            raise RuntimeError(
                f"feeding the frames failed after {len(late)} of {frames}: "
                f"{type(failed[0]).__name__}: {failed[0]}"
                + (f" (writing to {store_dir})" if store else "")
                + "; no figures from part of a run"
            ) from failed[0]
    finally:  # the worker drains what waits; its counts are final after it
        stopped = pipeline.stop(drain=True, timeout_s=600)
        if rec is not None:
            rec.close()
        if folder is not None:
            folder.cleanup()
    if not stopped:
        raise RuntimeError(
            f"the analysis was still busy 600 s after the last of {frames} "
            "frames: no figures"
        )
    ok = [r for r in results if r.error is None]
    stages: dict[str, list[float]] = {}
    model_stages: dict[str, list[float]] = {}
    for r in ok:
        for name, ms in r.extra.get("stages_ms", {}).items():
            stages.setdefault(name, []).append(ms)
        for name, ms in r.extra.get("model_stages_ms", {}).items():
            model_stages.setdefault(name, []).append(ms)
    t_results = sorted(r.t_result for r in results)
    span = t_results[-1] - t_results[0] if len(t_results) > 1 else 0.0
    stored: dict[str, Any] = {}
    if rec is not None:
        written = rec.results
        stored = {
            "raw_write_ms": percentiles(raw_ms),
            "storage_ms": percentiles(written.write_ms),
            "storage_waited_s": round(written.waited_s, 3),
        }
    return {
        "settings": {
            "size_px": size,
            "rate_hz": rate_hz,
            "frames": frames,
            "distinct_frames": distinct,
            "denoise": denoise,
            "model": "nuclei-seg",
            "queue_size": analysis.queue_size,
            "stages": pipeline.stages,  # as resolved ("auto" decided)
            "batch_frames": analysis.batch_frames,
            "images_kept": sorted(pipeline.images_kept),
            "store": store,
            "requested": dict(settings or {}),
        },
        **stored,
        "device": on,
        "submitted": pipeline.submitted,
        "analysed": pipeline.analysed,
        "skipped": pipeline.skipped,
        "failed": pipeline.failed,
        "submitted_per_s": round(frames / (t_fed - t_start), 2),
        "analysed_per_s": round((len(t_results) - 1) / span, 2) if span > 0 else None,
        "frame_to_result_ms": percentiles([r.latency_ms for r in results]),
        "stages_ms": {k: round(float(np.median(v)), 2) for k, v in stages.items()},
        "model_stages_ms": {
            k: round(float(np.median(v)), 2) for k, v in model_stages.items()
        },
        "objects_per_frame": (
            float(np.median([len(r.objects) for r in ok])) if ok else None
        ),
        "truth_nuclei_per_frame": float(np.median(nuclei)),
        "cuda_graphs": pipeline.cuda_graphs_state(),
        "tick_late_ms": {
            "p99": round(float(np.percentile(late, 99)), 2),
            "max": round(float(max(late)), 2),
        },
    }
