"""Analysing one frame: normalise → denoise → segment → measure → track.

:class:`FrameAnalyser` holds the models and the per-position trackers and
analyses a frame on the calling thread; :class:`~.pipeline.AnalysisPipeline`
runs it on a worker thread behind a bounded queue.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from smartscope.analysis.measure import ObjectStats, measure_objects, object_table
from smartscope.analysis.models import (
    AnalysisModel,
    ModelLoadError,
    accepts_min_size,
    load_analysis_model,
    predict_denoised,
    predict_denoised_batch,
    predict_labels,
    predict_labels_batch,
)
from smartscope.analysis.normalize import estimate_background
from smartscope.analysis.result import (
    ALL_IMAGES,
    FrameInput,
    FrameResult,
    ObjectMeasurement,
)
from smartscope.analysis.segment import area_limits_px, filter_by_area, segment_nuclei
from smartscope.analysis.settings import AnalysisSettings
from smartscope.analysis.threads import ThreadTuner, thread_candidates
from smartscope.analysis.track import Tracker, TrackIdCounter
from smartscope.heap import keep_freed_memory

if TYPE_CHECKING:
    from smartscope.nn.adapt import DenoiserAdapter

__all__ = ["FrameAnalyser"]

logger = logging.getLogger("smartscope.analysis.pipeline")


@dataclass
class _Front:
    """A frame after the first stage (background, denoising): what the
    second stage needs, and the times so far."""

    frame: FrameInput
    t0: float
    background: float = math.nan
    #: a host array, or a Tensor left on the segmenter's device
    #: (``images_kept`` without ``denoised``)
    denoised: Any = None
    t_bg: float = 0.0
    t_dn: float = 0.0
    #: when the second stage took it (later than ``t_dn`` when pipelined)
    t_seg0: float = 0.0
    #: the adaptation: the weights' version that denoised it, and a new
    #: version's stats when it came with this frame
    version: int | None = None
    update: Any = None
    error: str | None = None
    #: frames analysed together with it (``batch_frames``), itself included
    batch: int = 1
    #: where the denoiser's time went (its ``timings_ms``)
    denoise_ms: dict[str, float] | None = None


@dataclass
class _Segmented:
    """A frame's labels (None: left on the device, not kept), and where the
    device path made them: its objects' sums, measured there with the area
    filter."""

    labels: np.ndarray | None
    #: whether ``stats`` holds the measurements (made on the device)
    measured: bool = False
    stats: ObjectStats | None = None
    #: the frame's share of the device's filter, measurements and copies back
    measure_ms: float = 0.0


class _FrontError(Exception):
    """The first stage's error, raised again in the second."""


class FrameAnalyser:
    """The analysis of single frames, with the models and the tracks it keeps.

    Parameters
    ----------
    settings : AnalysisSettings, optional
        Defaults to ``AnalysisSettings()`` (classical segmenter, no denoiser).
    device : "auto" | "cpu" | "cuda"
        Where the models run.
    """

    def __init__(
        self, settings: AnalysisSettings | None = None, *, device: str = "auto"
    ) -> None:
        self._settings = settings if settings is not None else AnalysisSettings()
        self._device = device
        self._models_loaded = False
        self._denoiser: AnalysisModel | None = None
        self._segmenter: AnalysisModel | None = None
        self._track_ids = TrackIdCounter()
        self._trackers: dict[str, Tracker] = {}
        #: chooses the models' CPU threads (None: a fixed count, or no model
        #: on the CPU); the count in effect
        self.thread_tuner: ThreadTuner | None = None
        self._threads: int | None = None
        #: 1, or 2 for a two-stage pipeline (``settings.stages`` resolved
        #: when the models load)
        self.stages = 1
        #: most frames analysed as one batch (``settings.batch_frames``
        #: resolved when the models load)
        self.batch_frames = 1
        #: fine-tunes the denoiser during the run (``denoise_adapt``), from
        #: :meth:`start_adaptation` to :meth:`stop_adaptation`
        self.adapter: DenoiserAdapter | None = None
        #: what denoising and segmentation took on a frame of the run's size
        #: in :meth:`warm_up`, ms (``denoise`` where there is a denoiser,
        #: ``segment``; the fastest of the calls after each thread count's
        #: first); empty before a warm-up
        self.warm_up_ms: dict[str, float] = {}
        #: the images each result carries (``FrameResult.labels``,
        #: ``.denoised``): by default both. One left out is None in the
        #: results; where the models run on a GPU it then stays there (not
        #: copied back: 16 MB a 2048² frame each). The controller keeps
        #: what the run saves, what its reactions read
        #: (``Reaction.reads_images``), and both while anything listens to
        #: its ``frame_analysed``.
        self.images_kept: frozenset[str] = ALL_IMAGES

    @property
    def settings(self) -> AnalysisSettings:
        return self._settings

    def load_models(self) -> None:
        """Load the configured denoiser and segmentation model, once.

        Called by :meth:`start`; call it earlier to refuse a bad model before
        any hardware moves.

        Raises
        ------
        ModelLoadError
            Naming the model that could not be loaded.
        """
        if self._models_loaded:
            return
        s = self._settings
        denoiser = (
            load_analysis_model(
                s.denoise, role="denoiser", device=self._device, precision=s.precision
            )
            if s.denoise
            else None
        )
        segmenter = None
        if s.segmenter == "model" and s.model is not None:
            segmenter = load_analysis_model(
                s.model, role="segmenter", device=self._device, precision=s.precision
            )
        if denoiser is not None and s.denoise_adapt is not None:
            _check_adaptable(denoiser, s.denoise or "?")
        if (
            segmenter is not None
            and s.model_min_area_um2 is not None
            and not accepts_min_size(segmenter)
        ):
            raise ModelLoadError(
                f"model_min_area_um2: the segmenter {s.model!r} "
                f"({type(segmenter).__name__}) has no min_size_px option "
                "to lower its fragment limit; leave model_min_area_um2 unset",
                model=s.model or "?",
                role="segmenter",
            )
        self._denoiser, self._segmenter = denoiser, segmenter
        if s.heap == "keep" and (denoiser or segmenter) is not None:
            keep_freed_memory()
        on_cpu = (denoiser or segmenter) is not None and _on_cpu(self._device)
        self.stages = _stages(s, denoiser is not None, on_cpu)
        models = [m for m in (denoiser, segmenter) if m is not None]
        self.batch_frames = _batch_frames(
            s,
            bool(models)
            and all(callable(getattr(m, "predict_batch", None)) for m in models),
            on_cpu,
            self.stages,
        )
        for m in models:
            predictor = getattr(m, "predictor", None)
            if predictor is not None:
                # None: the predictor's default (this project's U-Nets). A
                # denoiser that adapts gets a new network every version,
                # each of whose shapes would be recorded again mid-run
                adapting = m is denoiser and s.denoise_adapt is not None
                on = s.cuda_graphs and not adapting
                predictor.cuda_graphs = None if on else False
                # the graphs' buffers fit the largest batch
                predictor.graph_batch_frames = self.batch_frames
        if on_cpu:
            if self.stages == 2:  # one model thread per stage
                self._set_threads(1)
            elif s.threads == "auto":
                self.thread_tuner = ThreadTuner(thread_candidates())
            else:
                self._set_threads(s.threads)
        self._models_loaded = True

    def warm_up(
        self,
        shape: tuple[int, int],
        *,
        pixel_size_um: float,
        stage: Literal["both", "front", "back"] = "both",
    ) -> None:
        """Run the models on a frame of ``shape`` (the camera's) at each thread
        count the analysis may use, before the run's first frame, and start
        the thread tuner from what they cost.

        The first call of a network at a new input size or thread count pays
        for its set-up (an ONNX Runtime session per thread count, kernels and
        buffers for the size: 100-250 ms here), which otherwise lands on the
        run's first frames. Each count runs three times, interleaved; the
        faster of its last two calls goes to the tuner as its first
        measurement, so the first frame already uses the count that suits the
        machine as it is (beside busy processes, two threads can cost 3x one;
        the frame is noise, so the times are rough, and the tuner goes on
        measuring the real frames). Touches no track and no adaptation; does
        nothing without models. ``stage``: only the denoiser (``front``) or
        only the segmenter (``back``), for the two threads of ``stages: 2``,
        each of which warms its own.
        """
        self.load_models()
        if self._denoiser is None and self._segmenter is None:
            return
        image = warm_up_frame(shape, self._settings.diameter_um / pixel_size_um)
        frame = FrameInput(
            image=image,
            frame_index=-1,
            position="",
            stage_x_um=0.0,
            stage_y_um=0.0,
            z_um=0.0,
            pixel_size_um=pixel_size_um,
            exposure_ms=0.0,
            t_frame=0.0,
            t_s=0.0,
        )
        tuner = self.thread_tuner
        counts = tuner.candidates if tuner is not None else (self._threads,)
        times: dict[int | None, list[float]] = {n: [] for n in counts}
        models: dict[str, list[float]] = {}
        for rep in range(3):  # interleaved, so a passing load hits every count
            for n in counts:
                if n is not None:
                    self._set_threads(n)
                t = time.perf_counter()
                denoised = self._denoise(image, frame) if stage != "back" else None
                t_dn = time.perf_counter()
                if stage != "front":
                    self._segment(image if denoised is None else denoised, frame)
                t_seg = time.perf_counter()
                if rep:  # the first call of each count is its set-up
                    times[n].append((t_seg - t) * 1000.0)
                    if denoised is not None:
                        models.setdefault("denoise", []).append((t_dn - t) * 1e3)
                    if stage != "front":
                        models.setdefault("segment", []).append((t_seg - t_dn) * 1e3)
        # each thread of ``stages: 2`` writes its own key
        self.warm_up_ms.update({k: min(v) for k, v in models.items()})
        if stage == "both" and self._models_on_cuda():
            self._warm_up_batches(image, frame)
        if tuner is not None:
            for n in counts:
                if n is not None:
                    tuner.record(n, min(times[n]))
            self._set_threads(tuner.threads())

    def _warm_up_batches(self, image: np.ndarray, frame: FrameInput) -> None:
        """Each batch size the analysis may take (2 to ``batch_frames``)
        through the models twice, on a GPU: the second call at a new input
        shape records its CUDA graph (three network calls and a device-wide
        sync), and a batch first met in the run would stall the frames
        behind it, which is when batches form. (On the CPU, where batches
        are 1 unless asked for and nothing is recorded, the warm-up does
        not pay for it: 70 extra frames for batches of 8.) Not timed;
        failures are left to the run's own batches (which fall back to one
        frame at a time)."""
        for n in range(2, self.batch_frames + 1):
            images = [image] * n
            try:
                for _ in range(2):
                    denoised = self._denoise_batch(images)
                    segment = images if denoised is None else denoised
                    self._segment_batch(segment, [frame] * n)
            except Exception as e:
                logger.debug("warm-up of a batch of %d frames failed: %s", n, e)
                return

    def _models_on_cuda(self) -> bool:
        """Whether a loaded model runs on a GPU."""
        for model in (self._denoiser, self._segmenter):
            device = getattr(getattr(model, "predictor", None), "device", None)
            if device is not None and device.type == "cuda":
                return True
        return False

    def cuda_graphs_state(self) -> dict[str, dict[str, Any]]:
        """Per model (``denoise``, ``segment``): whether its network replays
        CUDA graphs (``used``), the input shapes recorded so far and why
        graphs were turned off (``failed``, None if they were not). Empty
        without models."""
        out: dict[str, dict[str, Any]] = {}
        for role, model in (("denoise", self._denoiser), ("segment", self._segmenter)):
            p = getattr(model, "predictor", None)
            if p is None:
                continue
            out[role] = {
                "used": p.uses_cuda_graphs,
                "shapes": [list(s) for s in p.recorded_shapes],
                "failed": p.graphs_failed,
            }
        return out

    def warm_up_cost(self) -> dict[str, float] | None:
        """What the analysis needs a frame, as measured by :meth:`warm_up`, ms:
        ``denoise`` (with a denoiser), ``segment``, and ``per_frame``, the
        shortest interval between frames the analysis can keep up with: the
        sum of the two on one thread, the slower of them with ``stages: 2``
        (each on its own thread; the camera, the writer and the rest of the
        machine share the same cores, so this is a best case). None before
        a warm-up, or when it failed."""
        ms = dict(self.warm_up_ms)
        if "segment" not in ms:
            return None
        parts = [v for k, v in ms.items() if k in ("denoise", "segment")]
        per_frame = max(parts) if self.stages == 2 else sum(parts)
        return {k: round(v, 2) for k, v in ms.items()} | {
            "per_frame": round(per_frame, 2)
        }

    def _set_threads(self, n: int) -> None:
        """Give the models ``n`` intra-op threads on the calling thread.
        Compared with torch's own count, not with the last one set here: it
        is the thread's, and another analyser on the same thread (or the
        tuner's warm-up) may have changed it."""
        import torch

        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        self._threads = n

    def _threads_for_frame(self) -> None:
        """The models' threads for the next frame: the tuner's choice, or
        the fixed count."""
        tuner = self.thread_tuner
        n = tuner.threads() if tuner is not None else self._threads
        if n is not None:
            self._set_threads(n)

    @property
    def threads(self) -> int | None:
        """The models' CPU threads in effect (None: not set by the analysis)."""
        return self._threads

    def reset_tracks(self) -> None:
        """End every track of every position (new objects get new ids)."""
        self._trackers.clear()

    def start_adaptation(self, *, paced: bool) -> None:
        """Start fine-tuning the denoiser on the frames analysed from now on
        (when the settings ask for it; see :mod:`smartscope.nn.adapt`).
        ``paced``: the pacing ``auto`` means (the simulator's virtual time)."""
        s = self._settings.denoise_adapt
        if s is None or self.adapter is not None:
            return
        self.load_models()
        from smartscope.nn.adapt import DenoiserAdapter

        self.adapter = DenoiserAdapter(self._denoiser, s, paced=paced)  # type: ignore[arg-type]

    def stop_adaptation(self) -> None:
        """End the training process; the adapted weights stay in use and in
        :attr:`adapter` (to save)."""
        if self.adapter is not None:
            self.adapter.close()

    # -------------------------------------------------------------- analysis

    def analyse(self, frame: FrameInput) -> FrameResult:
        """Analyse one frame now, on the calling thread.

        normalise (background) → denoise (if configured) → segment → measure
        (on the raw frame) → track (per position). Emits nothing and counts
        nothing; the worker does that. Not to be called concurrently with a
        running worker (trackers are not thread-safe).

        Returns
        -------
        FrameResult
            With ``error`` set, and no objects, if any step raised.
        """
        return self._back(self._front(frame))

    def analyse_batch(self, frames: list[FrameInput]) -> list[FrameResult]:
        """Analyse frames together, on the calling thread: each frame's
        background, then the denoiser and the segmenter each once for the
        batch (one copy to the device, one network call, where the models
        take batches: ``predict_batch``), then measurement and tracking frame
        by frame, in order. The results are what :meth:`analyse` gives each
        frame; their ``stages_ms`` are the frame's share of the batch's
        model time, and ``extra["batch"]`` says how many frames shared it.
        Frames of several sizes or pixel sizes are analysed one by one.
        """
        if len(frames) < 2 or len({_batch_key(f) for f in frames}) > 1:
            return [self.analyse(f) for f in frames]
        fronts = self._front_batch(frames)
        good = [f for f in fronts if f.error is None]
        t_seg0 = time.perf_counter()
        by_front: dict[int, _Segmented | Exception] = {}
        if good:
            images = [f.frame.image if f.denoised is None else f.denoised for f in good]
            try:
                batch = self._segment_batch(images, [f.frame for f in good])
                by_front = dict(zip(map(id, good), batch, strict=True))
            except Exception:
                # a batch that failed (a bad frame, the card's memory): each
                # frame again on its own, so only a bad one fails
                for f, image in zip(good, images, strict=True):
                    try:
                        by_front[id(f)] = self._segment(image, f.frame)
                    except Exception as e:
                        by_front[id(f)] = e
        t_seg = time.perf_counter()
        segment_ms = _timings(self._segmenter)
        tuner = self.thread_tuner
        if tuner is not None and self._threads is not None and good:
            # one record per batch: the models' time per frame
            f0 = good[0]
            models_s = f0.t_dn - f0.t_bg + t_seg - t_seg0
            tuner.record(self._threads, models_s * 1000.0 / len(good))
        results = []
        for f in fronts:
            f.t_seg0 = t_seg0
            got = by_front.get(id(f))
            if f.error is not None:
                results.append(self._error_result(f, _FrontError(f.error)))
            elif isinstance(got, Exception) or got is None:
                results.append(self._error_result(f, got or RuntimeError("no labels")))
            else:
                results.append(self._finish(f, got, t_seg, segment_ms, tuned=True))
        return results

    def _front_batch(self, frames: list[FrameInput]) -> list[_Front]:
        """:meth:`_front` of frames of one size, the denoiser once for all.
        Never raises: errors travel in the fronts."""
        t0 = time.perf_counter()
        fronts = [_Front(frame=f, t0=t0, batch=len(frames)) for f in frames]
        try:
            self.load_models()
            for f in fronts:
                try:
                    image = f.frame.image
                    if image.ndim != 2:
                        raise ValueError(
                            f"expected a (Y, X) frame, got shape {image.shape}"
                        )
                    f.background, _ = estimate_background(image)
                except Exception as e:
                    f.error = f"{type(e).__name__}: {e}"
            good = [f for f in fronts if f.error is None]
            for f in good:  # the batch's model time is shared by these
                f.batch = len(good)
            self._threads_for_frame()
            adapter = self.adapter
            update = adapter.before_frame() if adapter is not None else None
            version = adapter.version if adapter is not None else None
            t_bg = time.perf_counter()
            denoised: list[np.ndarray | None] | None
            try:
                denoised = self._denoise_batch([f.frame.image for f in good])
            except Exception:
                # each frame again on its own, so only a bad one fails
                denoised = []
                for f in good:
                    try:
                        denoised.append(self._denoise(f.frame.image, f.frame))
                    except Exception as e:
                        f.error = f"{type(e).__name__}: {e}"
                        denoised.append(None)
            t_dn = time.perf_counter()
            denoise_ms = _timings(self._denoiser)
            for i, f in enumerate(good):
                f.version = version
                f.update = update if i == 0 else None
                f.t_bg, f.t_dn = t_bg, t_dn
                f.denoise_ms = denoise_ms
                f.denoised = None if denoised is None else denoised[i]
                if adapter is not None and f.error is None:
                    adapter.add_frame(f.frame.image)
        except Exception as e:
            for f in fronts:
                if f.error is None:
                    f.error = f"{type(e).__name__}: {e}"
        return fronts

    def _front(self, frame: FrameInput) -> _Front:
        """The first stage: background and denoising (and the adaptation's
        bookkeeping). Never raises: an error travels in the result."""
        f = _Front(frame=frame, t0=time.perf_counter())
        try:
            self.load_models()
            image = frame.image
            if image.ndim != 2:
                raise ValueError(f"expected a (Y, X) frame, got shape {image.shape}")
            f.background, _ = estimate_background(image)
            self._threads_for_frame()
            adapter = self.adapter
            f.update = adapter.before_frame() if adapter is not None else None
            f.version = adapter.version if adapter is not None else None
            f.t_bg = time.perf_counter()
            f.denoised = self._denoise(image, frame)
            f.t_dn = time.perf_counter()
            f.denoise_ms = _timings(self._denoiser)
            if adapter is not None:
                adapter.add_frame(image)
        except Exception as e:
            f.error = f"{type(e).__name__}: {e}"
        return f

    def _back(self, f: _Front) -> FrameResult:
        """The second stage: segment, measure, track, and the result."""
        f.t_seg0 = time.perf_counter()
        try:
            if f.error is not None:
                raise _FrontError(f.error)
            denoised = f.denoised
            segmented = self._segment(
                f.frame.image if denoised is None else denoised, f.frame
            )
        except Exception as e:
            return self._error_result(f, e)
        t_seg = time.perf_counter()
        return self._finish(f, segmented, t_seg, _timings(self._segmenter))

    def _finish(
        self,
        f: _Front,
        segmented: _Segmented,
        t_seg: float,
        segment_ms: dict[str, float] | None = None,
        *,
        tuned: bool = False,
    ) -> FrameResult:
        """Measure and track a segmented frame, and its result (``tuned``:
        the thread tuner has had the models' time already)."""
        frame = f.frame
        image = frame.image
        denoised = f.denoised
        labels = segmented.labels
        share = 1.0 / f.batch  # of a batch's model time
        try:
            tuner = self.thread_tuner
            if tuner is not None and self._threads is not None and not tuned:
                # the models' time: denoise + segment (one stage after the other)
                models_s = f.t_dn - f.t_bg + t_seg - f.t_seg0
                tuner.record(self._threads, models_s * share * 1000)
            t_meas0 = time.perf_counter()
            if segmented.measured:  # the sums made on the device
                table = object_table(segmented.stats, frame)
            else:
                table = measure_objects(labels, image, frame)
            t_meas = time.perf_counter()
            tracker = self._trackers.get(frame.position)
            if tracker is None:
                tracker = self._new_tracker()
                self._trackers[frame.position] = tracker
            track_ids = tracker.update(table.x_um, table.y_um, t_s=frame.t_s)
            objects = tuple(
                map(
                    ObjectMeasurement,
                    table.label.tolist(),
                    track_ids.tolist(),
                    table.x_um.tolist(),
                    table.y_um.tolist(),
                    table.row.tolist(),
                    table.col.tolist(),
                    table.area_um2.tolist(),
                    table.mean_intensity.tolist(),
                    table.max_intensity.tolist(),
                    table.eccentricity.tolist(),
                )
            )
        except Exception as e:
            return self._error_result(f, e)
        t1 = time.perf_counter()
        adapted: dict[str, object] = {}
        if f.version is not None:
            # the weights that denoised this frame; a new version with its stats
            adapted["denoiser_version"] = f.version
            if f.update is not None:
                adapted["denoiser_update"] = f.update.as_dict()
        kept = self.images_kept
        return FrameResult(
            frame=frame,
            objects=objects,
            labels=labels if "labels" in kept else None,
            # (a Tensor: left on the device, not kept)
            denoised=denoised
            if "denoised" in kept and isinstance(denoised, np.ndarray)
            else None,
            background=f.background,
            t_result=t1,
            extra={
                **adapted,
                "analysis_ms": (t1 - f.t0) * 1000.0,
                "threads": self._threads,
                # where the time went, ms: the segment stage includes the
                # model's rescaling, normalisation and post-processing
                "stages_ms": {
                    "background": (f.t_bg - f.t0) * share * 1000.0,
                    "denoise": (f.t_dn - f.t_bg) * share * 1000.0,
                    "segment": (t_seg - f.t_seg0) * share * 1000.0
                    - segmented.measure_ms,
                    "measure": (t_meas - t_meas0) * 1000.0 + segmented.measure_ms,
                    "track": (t1 - t_meas) * 1000.0,
                },
                **({"batch": f.batch} if f.batch > 1 else {}),
                **_model_stages(f.denoise_ms, segment_ms, share),
            },
        )

    def _error_result(self, f: _Front, e: Exception) -> FrameResult:
        """The result of a frame whose analysis raised ``e``."""
        message = str(e) if isinstance(e, _FrontError) else f"{type(e).__name__}: {e}"
        logger.warning(
            "analysis of frame %d failed: %s",
            f.frame.frame_index,
            message,
            exc_info=logger.isEnabledFor(logging.DEBUG),
        )
        return FrameResult(
            frame=f.frame,
            objects=(),
            labels=None,
            denoised=None,
            background=f.background,
            t_result=time.perf_counter(),
            error=message,
        )

    def _new_tracker(self) -> Tracker:
        s = self._settings
        return Tracker(
            max_step_um=s.track_max_step_um,
            max_gap_frames=s.track_max_gap_frames,
            predict_velocity=s.track_predict_velocity,
            ids=self._track_ids,
        )

    def _denoise(self, image: np.ndarray, frame: FrameInput) -> Any:
        """(Y, X) float32 denoised image in raw units, or None without a
        denoiser; a Tensor left on the device where the result does not
        keep it and the segmenter takes it there (:meth:`_denoised_there`)."""
        if self._denoiser is None:
            return None
        self._keep_raw_frames()
        there = self._denoised_there([image])
        if there is not None:
            return there[0]
        return predict_denoised(
            self._denoiser, image, name=self._settings.denoise or "?"
        )

    def _denoise_batch(self, images: list[np.ndarray]) -> list[Any] | None:
        """:meth:`_denoise` of frames of one size, in one call where the
        denoiser takes batches."""
        if self._denoiser is None or not images:
            return None
        self._keep_raw_frames()
        there = self._denoised_there(images)
        if there is not None:
            return there
        return predict_denoised_batch(
            self._denoiser, images, name=self._settings.denoise or "?"
        )

    def _denoised_there(self, images: list[np.ndarray]) -> list[Any] | None:
        """The denoised frames left on the device, one (Y, X) Tensor each,
        where no result keeps them (``images_kept``) and the segmenter
        takes them there; else None (the host arrays are made)."""
        den = self._denoiser
        predict_t = getattr(den, "predict_batch_t", None)
        if (
            "denoised" in self.images_kept
            or not callable(predict_t)
            or not self._measures_on_device()
        ):
            return None
        out = predict_t(images)
        if out is None:
            return None
        if tuple(out.shape) != (len(images), *images[0].shape[:2]):
            raise ValueError(
                f"denoiser model {self._settings.denoise!r} returned shape "
                f"{tuple(out.shape)} for {len(images)} images of shape "
                f"{images[0].shape}"
            )
        return list(out)

    def _measures_on_device(self) -> bool:
        """Whether the segmenter makes its labels on a device (its device
        path: on CUDA by default), where the area filter and the
        measurements then run too."""
        seg = self._segmenter
        return (
            seg is not None
            and callable(getattr(seg, "predict_batch_t", None))
            and bool(getattr(seg, "on_device", False))
        )

    def _keep_raw_frames(self) -> None:
        """Tell the model that copies the raw frames to the device to leave
        them there for the measurements (:meth:`_segment_on_device`) when
        those run there: the denoiser, or the segmenter without one.
        Asked again each frame: ``keep_on_device`` may change between."""
        on = self._measures_on_device()
        first = self._denoiser if self._denoiser is not None else self._segmenter
        if first is not None and hasattr(first, "keep_inputs"):
            first.keep_inputs = on

    def _segment_on_device(
        self, images: list[np.ndarray], frames: list[FrameInput]
    ) -> list[_Segmented] | None:
        """Labels, area filter and measurements of images of one size and
        pixel size on the segmenter's device, the labels and the objects'
        sums copied back once (:mod:`smartscope.analysis.measure_device`);
        None where the segmenter does not make its labels on a device.
        The raw frames are the twins the first model left there, or
        copied over."""
        if not self._measures_on_device():
            return None
        import torch

        from smartscope.analysis.measure_device import filter_and_measure_t
        from smartscope.nn import twins

        seg = self._segmenter
        options = self._segmenter_options(frames[0])
        name = options.pop("name")
        if self._denoiser is None:
            self._keep_raw_frames()
        given: list[Any] | torch.Tensor = images
        if all(isinstance(im, torch.Tensor) for im in images):
            # the denoiser's frames, left on the device
            given = images[0][None] if len(images) == 1 else torch.stack(images)
        elif any(isinstance(im, torch.Tensor) for im in images):
            given = [_on_host(im) for im in images]  # (no path mixes them)
        labels_t = seg.predict_batch_t(given, **options)  # type: ignore[union-attr]
        if labels_t is None:
            return None
        if tuple(labels_t.shape[1:]) != tuple(images[0].shape[:2]):
            raise ValueError(
                f"segmenter model {name!r} returned shape "
                f"{tuple(labels_t.shape[1:])} for an image of shape {images[0].shape}"
            )
        t0 = time.perf_counter()
        predictor = seg.predictor  # type: ignore[union-attr]
        raw = [twins.take(f.image, labels_t.device) for f in frames]
        missing = [i for i, t in enumerate(raw) if t is None]
        if missing:
            sent = predictor.to_device(np.stack([frames[i].image for i in missing]))
            for i, t in zip(missing, sent, strict=True):
                raw[i] = t
        s = self._settings
        min_px, max_px = area_limits_px(
            frames[0].pixel_size_um, s.min_area_um2, s.max_area_um2
        )
        with torch.inference_mode():
            raw_t = raw[0][None] if len(raw) == 1 else torch.stack(raw)  # type: ignore[arg-type]
            keep = "labels" in self.images_kept
            out_t, stats = filter_and_measure_t(
                labels_t, raw_t, min_px=min_px, max_px=max_px, relabel=keep
            )
            labels: list[np.ndarray | None] = (
                list(predictor.to_host(out_t))
                if out_t is not None
                else [None] * len(frames)
            )
        ms = (time.perf_counter() - t0) * 1000.0 / len(frames)
        return [
            _Segmented(lab, measured=True, stats=st, measure_ms=ms)
            for lab, st in zip(labels, stats, strict=True)
        ]

    def _segment_batch(
        self, images: list[np.ndarray], frames: list[FrameInput]
    ) -> list[_Segmented]:
        """:meth:`_segment` of images of one size and pixel size (those of
        ``frames``, one each), in one call where the segmenter takes
        batches."""
        measured = self._segment_on_device(images, frames)
        if measured is not None:
            return measured
        images = [_on_host(im) for im in images]
        frame = frames[0]
        if self._segmenter is None:
            return [self._segment(im, f) for im, f in zip(images, frames, strict=True)]
        batch = predict_labels_batch(
            self._segmenter, images, **self._segmenter_options(frame)
        )
        return [_Segmented(self._within_area(labels, frame)) for labels in batch]

    def _segmenter_options(self, frame: FrameInput) -> dict[str, Any]:
        """What the segmentation model is told about ``frame``'s nuclei."""
        s = self._settings
        a = s.model_min_area_um2
        return {
            "diameter_px": s.diameter_um / frame.pixel_size_um,
            "name": s.model or "?",
            "min_size_px": None if a is None else a / frame.pixel_size_um**2,
        }

    def _within_area(self, labels: np.ndarray, frame: FrameInput) -> np.ndarray:
        """A model's labels without the objects outside the area range."""
        s = self._settings
        return filter_by_area(
            labels,
            pixel_size_um=frame.pixel_size_um,
            min_area_um2=s.min_area_um2,
            max_area_um2=s.max_area_um2,
        )

    def _segment(self, image: Any, frame: FrameInput) -> _Segmented:
        """(Y, X) int32 instance labels of ``image`` (raw or denoised), and
        the measurements where they were made on the device."""
        s = self._settings
        if self._segmenter is not None:
            measured = self._segment_on_device([image], [frame])
            if measured is not None:
                return measured[0]
        image = _on_host(image)
        if self._segmenter is not None:
            labels = predict_labels(
                self._segmenter, image, **self._segmenter_options(frame)
            )
            return _Segmented(self._within_area(labels, frame))
        return _Segmented(
            segment_nuclei(
                image,
                pixel_size_um=frame.pixel_size_um,
                diameter_um=s.diameter_um,
                threshold=s.threshold,
                min_area_um2=s.min_area_um2,
                max_area_um2=s.max_area_um2,
            )
        )


def _on_host(image: Any) -> np.ndarray:
    """A frame as a host array: a Tensor a model left on its device is
    copied back (the device path turned off between the two models)."""
    if isinstance(image, np.ndarray):
        return image
    if callable(getattr(image, "detach", None)):
        return image.detach().cpu().numpy()
    return np.asarray(image)


def _check_adaptable(model: AnalysisModel, name: str) -> None:
    """Refuse a denoiser that ``denoise_adapt`` cannot fine-tune, at load time
    (before anything moves)."""
    from smartscope.nn.adapt import why_not_adaptable

    problem = why_not_adaptable(model)
    if problem is not None:
        raise ModelLoadError(
            f"denoise.adapt: {name!r}: {problem}", model=name, role="denoiser"
        )


#: the machines where two stages were measured faster than one with the
#: thread tuner (docs/benchmarks.md: 2 cores); with more cores one stage's
#: models get several threads, and two stages are not measured there yet
_TWO_STAGE_CORES = (2, 3)


def warm_up_frame(shape: tuple[int, int], diameter_px: float) -> np.ndarray:
    """A uint16 frame for the models' warm-up: round nuclei of
    ``diameter_px`` on a jittered grid 2.5 diameters apart (about an eighth
    of the field) over a background, with noise of the shot noise's
    variance. The segmenter then finds and separates objects as on a real
    frame (on a frame of noise alone its post-processing has nothing to do,
    and the warm-up said 20-45% less than the run's frames took:
    docs/benchmarks.md). Always the same frame for the same arguments; one
    nucleus is drawn once and added at each place (4 ms for 512², 61 ms for
    2048² on this project's 2-core VM)."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    h, w = shape
    d = float(min(max(diameter_px, 2.0), max(min(h, w) / 2.0, 2.0)))
    sigma = max(d / 10.0, 0.5)
    half = int(np.ceil(d / 2.0 + 3.0 * sigma))
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    nucleus = ndimage.gaussian_filter(
        np.where(np.hypot(yy, xx) < d / 2.0, 400.0, 0.0), sigma
    ).astype(np.float32)
    canvas = np.full((h + 2 * half, w + 2 * half), 100.0, np.float32)
    step = 2.5 * d
    gy, gx = np.mgrid[step / 2 : h : step, step / 2 : w : step]
    cy = np.clip(np.rint(gy + rng.uniform(-d / 3, d / 3, gy.shape)), 0, h - 1)
    cx = np.clip(np.rint(gx + rng.uniform(-d / 3, d / 3, gx.shape)), 0, w - 1)
    size = 2 * half + 1
    for r, c in zip(cy.astype(int).ravel(), cx.astype(int).ravel(), strict=True):
        canvas[r : r + size, c : c + size] += nucleus
    mean = canvas[half : half + h, half : half + w]
    noisy = rng.standard_normal(shape, dtype=np.float32)
    noisy *= np.sqrt(mean)
    noisy += mean + np.float32(0.5)  # rounds on the conversion
    return np.clip(noisy, 0, 65535).astype(np.uint16)


def _timings(model: AnalysisModel | None) -> dict[str, float] | None:
    """A copy of where ``model``'s last call spent its time (smartscope's
    models keep ``timings_ms``; others say nothing)."""
    t = getattr(model, "timings_ms", None)
    return dict(t) if isinstance(t, dict) and t else None


def _model_stages(
    denoise_ms: dict[str, float] | None,
    segment_ms: dict[str, float] | None,
    share: float,
) -> dict[str, dict[str, float]]:
    """``{"model_stages_ms": ...}``: the models' time by step, ms (this
    frame's share of a batch): transfer, normalise and postprocess of both
    models together, each network on its own."""
    d, s = denoise_ms or {}, segment_ms or {}
    if not d and not s:
        return {}
    out: dict[str, float] = {}
    for key in ("transfer", "normalise", "postprocess"):
        if key in d or key in s:
            out[key] = (d.get(key, 0.0) + s.get(key, 0.0)) * share
    if "network" in d:
        out["denoise_network"] = d["network"] * share
    if "network" in s:
        out["segment_network"] = s["network"] * share
    return {"model_stages_ms": out}


#: frames of one batch with ``batch_frames: auto`` where the models run on a GPU
AUTO_BATCH_FRAMES = 8


def _batch_key(frame: FrameInput) -> tuple[tuple[int, ...], float]:
    """Frames with the same key can be analysed as one batch."""
    return tuple(frame.image.shape), float(frame.pixel_size_um)


def _batch_frames(
    s: AnalysisSettings, batchable: bool, on_cpu: bool, stages: int
) -> int:
    """``settings.batch_frames`` resolved for this machine and these models
    (``batchable``: there are models and each takes batches)."""
    if s.batch_frames != "auto":
        return int(s.batch_frames)
    gpu = (
        batchable
        and not on_cpu
        and s.executor == "local"
        and stages == 1
        and s.denoise_adapt is None  # a new version would wait for a batch's end
    )
    return AUTO_BATCH_FRAMES if gpu else 1


def _stages(s: AnalysisSettings, denoiser: bool, on_cpu: bool) -> int:
    """``settings.stages`` resolved for this machine and these models."""
    if s.stages != "auto":
        return int(s.stages)
    two = (
        denoiser
        and on_cpu
        and s.executor == "local"
        and s.threads in ("auto", 1)
        and s.batch_frames in ("auto", 1)  # batches asked for: one stage
        and (os.cpu_count() or 1) in _TWO_STAGE_CORES
    )
    return 2 if two else 1


def _on_cpu(device: str) -> bool:
    """Whether models loaded for ``device`` run on the CPU."""
    from smartscope.nn.predictor import resolve_device

    return resolve_device(device).type == "cpu"
