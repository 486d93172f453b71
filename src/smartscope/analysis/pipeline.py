"""The real-time analysis pipeline: a worker thread behind a bounded queue.

The controller hands every acquired frame to :meth:`AnalysisPipeline.submit`,
which never blocks: when the queue is full the oldest waiting frame is dropped
from analysis (never from disk; the writer has it) and counted. The worker
takes frames in order and runs normalise → denoise → segment → measure →
track, then announces a :class:`~smartscope.analysis.result.FrameResult`.
Nothing that happens while analysing one frame, nor a broken subscriber,
stops the worker.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Literal

from psygnal import Signal

from smartscope.analysis.analyser import FrameAnalyser, _batch_key, _Front
from smartscope.analysis.remote import RemoteAnalyser
from smartscope.analysis.result import FrameInput, FrameResult
from smartscope.analysis.settings import AnalysisSettings
from smartscope.heap import TRIM_EVERY_FRAMES, trim_heap

__all__ = ["AnalysisPipeline"]

logger = logging.getLogger(__name__)

#: how long :meth:`AnalysisPipeline.start` waits for the models' warm-up, s
_WARM_UP_TIMEOUT_S = 120.0


def _one_model_thread() -> None:
    """One intra-op thread for the models called from this thread (each
    stage of ``stages: 2`` has its own core)."""
    import torch

    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


class AnalysisPipeline(FrameAnalyser):
    """Analyses frames on a worker thread and announces the results.

    Parameters
    ----------
    settings : AnalysisSettings, optional
        Defaults to ``AnalysisSettings()`` (classical segmenter, no denoiser).
    on_result : callable, optional
        Called with each :class:`FrameResult` on the worker thread, before
        :attr:`frame_analysed` is emitted and independently of its subscribers
        (an exception in it is logged, and analysis goes on).

    Usage::

        pipeline = AnalysisPipeline(settings, on_result=react)
        pipeline.start()          # loads models; raises ModelLoadError
        pipeline.submit(frame)    # from the acquisition thread, never blocks
        pipeline.stop(drain=True)

    Counters: after :meth:`stop`, ``analysed + skipped == submitted``
    (``failed`` counts the analysed frames whose result carries an error).
    All signals are emitted on the worker thread, except for frames skipped
    while the pipeline is not running.
    """

    frame_analysed = Signal(
        FrameResult,
        description="Emits ``(result: FrameResult)`` after a frame is analysed, "
        "also when its analysis failed (then ``result.error`` is set).",
    )
    """Emits ``(result: FrameResult)`` after a frame is analysed, also when its
    analysis failed (then ``result.error`` is set)."""

    frame_skipped = Signal(
        int,
        str,
        description="Emits ``(frame_index: int, reason: str)`` for a frame "
        "dropped from analysis: 'queue full', 'too late' (waited longer than "
        "max_wait_ms), 'not drained' or 'not running'.",
    )
    """Emits ``(frame_index: int, reason: str)`` for a frame dropped from
    analysis: ``"queue full"`` (the oldest waiting frame goes), ``"too late"``
    (it waited longer than ``settings.max_wait_ms`` and a newer frame of its
    position and channel waits),
    ``"not drained"`` (the pipeline stopped without draining) or ``"not
    running"``. The worker emits it when it has finished the frame it was
    analysing. A callback may take the index alone."""

    analysis_failed = Signal(
        int,
        str,
        description="Emits ``(frame_index: int, message: str)`` when analysing a "
        "frame raised; the frame's result carries the same message.",
    )
    """Emits ``(frame_index: int, message: str)`` when analysing a frame raised;
    the frame's result (``frame_analysed``) carries the same message."""

    def __init__(
        self,
        settings: AnalysisSettings | None = None,
        *,
        on_result: Callable[[FrameResult], object] | None = None,
        device: str = "auto",
    ) -> None:
        super().__init__(settings, device=device)
        #: the analysis runs in a Ray actor (``executor: ray``), else here
        self.remote: RemoteAnalyser | None = (
            RemoteAnalyser(self._settings, device=device)
            if self._settings.executor == "ray"
            else None
        )
        self._on_result = on_result
        self._queue: deque[FrameInput] = deque()
        self._cond = threading.Condition()
        self._skip_notices: deque[tuple[int, str]] = deque()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._submitted = 0
        self._analysed = 0
        self._skipped = 0
        self._failed = 0
        #: what the adaptation's pacing "auto" means for this run (True in the
        #: simulator's virtual time); set before :meth:`start`
        self.adapt_paced = False
        #: ``settings.max_wait_ms`` applies (False in virtual time, where the
        #: analysis paces the clock); set before :meth:`start`
        self.drop_late = True

    # ------------------------------------------------------------ properties

    @property
    def is_running(self) -> bool:
        """Whether the worker thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def submitted(self) -> int:
        """Frames handed to :meth:`submit` (while analysis is enabled)."""
        return self._submitted

    @property
    def analysed(self) -> int:
        """Frames that got a :class:`FrameResult`, failed ones included."""
        return self._analysed

    @property
    def skipped(self) -> int:
        """Frames dropped from analysis (queue full, too late, not running, or
        not drained)."""
        return self._skipped

    @property
    def failed(self) -> int:
        """Analysed frames whose analysis raised (their result has ``error`` set)."""
        return self._failed

    @property
    def pending(self) -> int:
        """Frames waiting in the queue."""
        return len(self._queue)

    # ------------------------------------------------- local or in a Ray actor

    def load_models(self) -> None:
        if self.remote is not None:
            self.remote.load_models()
        else:
            super().load_models()

    def analyse(self, frame: FrameInput) -> FrameResult:
        if self.remote is not None:
            return self.remote.analyse(frame, self.images_kept)
        return super().analyse(frame)

    def reset_tracks(self) -> None:
        if self.remote is not None:
            self.remote.reset_tracks()
        else:
            super().reset_tracks()

    # ------------------------------------------------------------- lifecycle

    def start(self, *, warm_up: tuple[tuple[int, int], float] | None = None) -> None:
        """Load the models and start the worker thread (no-op when analysis is
        disabled or the worker already runs).

        ``warm_up``: ``((height, width), pixel_size_um)`` of the frames to
        come; the worker first runs the models on such a frame at each thread
        count (:meth:`FrameAnalyser.warm_up`) and this returns when it has.
        It runs on the worker thread because that thread's first calls pay
        for its own memory (the allocator's arena for the thread: the first
        two frames' denoising took 3x the rest when warmed on another
        thread). A failed warm-up is logged; the frames report their own
        errors.

        Raises
        ------
        ModelLoadError
            If a configured model cannot be loaded; no thread is started.
        """
        if not self._settings.enabled:
            return
        self.load_models()
        with self._cond:
            self._stopping = False  # also revives a worker still finishing a stop
        if self.is_running:
            return
        self.start_adaptation(paced=self.adapt_paced)
        warmed = threading.Event()
        self._thread = threading.Thread(
            target=self._run,
            args=(None if self.remote is not None else warm_up, warmed),
            name="smartscope-analysis",
            daemon=True,
        )
        self._thread.start()
        # two stages on a GPU warm up one after the other
        turns = 2 if self.stages == 2 and self._models_on_cuda() else 1
        warmed.wait(_WARM_UP_TIMEOUT_S * turns)

    def submit(self, frame: FrameInput) -> None:
        """Queue a frame for analysis; returns at once.

        When the queue already holds ``settings.queue_size`` frames, the oldest
        of them is dropped from analysis (:attr:`frame_skipped`). A frame
        submitted while the pipeline is not running is skipped. Does nothing
        when analysis is disabled.
        """
        if not self._settings.enabled:
            return
        with self._cond:
            self._submitted += 1
            if self._thread is None or self._stopping:
                self._skipped += 1
                dropped: int | None = frame.frame_index
            else:
                if len(self._queue) >= self._settings.queue_size:
                    oldest = self._queue.popleft().frame_index
                    self._skip_notices.append((oldest, "queue full"))
                    self._skipped += 1
                self._queue.append(frame)
                self._cond.notify()
                return
        self._emit_skipped(dropped, "not running")

    def stop(self, drain: bool = True, timeout_s: float = 30.0) -> bool:
        """Stop the worker.

        Parameters
        ----------
        drain : bool
            Analyse the frames still queued first; otherwise they are skipped.
        timeout_s : float
            How long to wait for the worker, s.

        Returns
        -------
        bool
            True when the worker has ended (False: still busy after ``timeout_s``;
            it ends after its current frame).
        """
        thread = self._thread
        with self._cond:
            self._stopping = True
            if not drain:
                while self._queue:
                    index = self._queue.popleft().frame_index
                    self._skip_notices.append((index, "not drained"))
                    self._skipped += 1
            self._cond.notify_all()
        if thread is None:
            if self.remote is not None:
                self.remote.close()
            return True
        thread.join(timeout_s)
        if thread.is_alive():
            logger.warning(
                "analysis worker still busy %.1f s after stop(); it ends after "
                "its current frame",
                timeout_s,
            )
            return False
        self._thread = None
        self.stop_adaptation()
        if self.remote is not None:
            self.remote.close()
        return True

    def __enter__(self) -> AnalysisPipeline:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(drain=True)

    # ---------------------------------------------------------------- worker

    def _run(
        self,
        warm_up: tuple[tuple[int, int], float] | None,
        warmed: threading.Event,
    ) -> None:
        back: threading.Thread | None = None
        handoff: queue.Queue[_Front | None] | None = None
        back_warmed = threading.Event()
        if self.stages == 2 and self.remote is None:
            _one_model_thread()
            # one frame in hand between the stages: the first stage waits
            # rather than running ahead of the second
            handoff = queue.Queue(maxsize=1)
            back = threading.Thread(
                target=self._run_back,
                args=(handoff, warm_up, back_warmed),
                name="smartscope-analysis-2",
                daemon=True,
            )
            back.start()
        try:
            if back is not None and self._models_on_cuda():
                # on a GPU the stages warm up in turn: a stage recording its
                # network's CUDA graph must not meet the other's device-wide
                # work (a kernel compiled on first use may sync the device)
                back_warmed.wait(_WARM_UP_TIMEOUT_S)
            self._warm_up_here(warm_up, "both" if back is None else "front")
        finally:
            if back is not None:
                back_warmed.wait(_WARM_UP_TIMEOUT_S)
            warmed.set()
        try:
            self._take_frames(handoff)
        finally:
            if back is not None and handoff is not None:
                handoff.put(None)
                back.join()

    def _warm_up_here(
        self,
        warm_up: tuple[tuple[int, int], float] | None,
        stage: Literal["both", "front", "back"],
    ) -> None:
        """Warm the models up on this thread (each stage's thread warms its
        own memory); a failure is logged."""
        if warm_up is None:
            return
        try:
            self.warm_up(warm_up[0], pixel_size_um=warm_up[1], stage=stage)
        except Exception as e:
            logger.warning("warming the models up failed: %s: %s", type(e).__name__, e)

    def _take_frames(self, handoff: queue.Queue[_Front | None] | None) -> None:
        queue_, cond, notices = self._queue, self._cond, self._skip_notices
        max_wait = self._settings.max_wait_ms
        late_s = max_wait / 1000.0 if max_wait is not None else None
        while True:
            if handoff is not None:
                # the next frame is taken once the second stage has taken the
                # last: it is then the newest waiting, and a frame is never
                # denoised only to wait while two are ahead of it (the same
                # throughput, one frame less in flight)
                handoff.join()
            with cond:
                while not queue_ and not self._stopping and not notices:
                    cond.wait()
                if late_s is not None and self.drop_late and len(queue_) > 1:
                    self._drop_late(late_s)
                frame = queue_.popleft() if queue_ else None
                batch = [frame] if frame is not None else []
                if frame is not None and self.batch_frames > 1 and handoff is None:
                    # frames already waiting, of the same size, go along; none
                    # is waited for (a lone frame is analysed at once)
                    key = _batch_key(frame)
                    while (
                        queue_
                        and len(batch) < self.batch_frames
                        and _batch_key(queue_[0]) == key
                    ):
                        batch.append(queue_.popleft())
                to_notify = list(notices) if notices else ()
                notices.clear()
                done = frame is None and self._stopping
            for index, reason in to_notify:
                self._emit_skipped(index, reason)
            if frame is not None:
                if handoff is not None:
                    handoff.put(self._front(frame))
                elif len(batch) > 1 and self.remote is None:
                    for result in self.analyse_batch(batch):
                        self._process(result)
                else:
                    for f in batch:
                        self._process(self.analyse(f))
            elif done:
                return

    def _drop_late(self, late_s: float) -> None:
        """Fallen behind: the waiting frames that waited longer than
        ``late_s`` go, except the newest of each position and channel (a late
        result beats none, and a position or channel whose frame comes first
        in every time point is not starved by those after it). Under the
        pipeline's lock."""
        now = time.perf_counter()
        newest: dict[tuple[str, str], int] = {}
        for frame in self._queue:
            newest[(frame.position, frame.channel)] = frame.frame_index
        kept: list[FrameInput] = []
        for frame in self._queue:
            if (
                now - frame.t_frame > late_s
                and newest[(frame.position, frame.channel)] != frame.frame_index
            ):
                self._skip_notices.append((frame.frame_index, "too late"))
                self._skipped += 1
            else:
                kept.append(frame)
        if len(kept) != len(self._queue):
            self._queue.clear()
            self._queue.extend(kept)

    def _run_back(
        self,
        handoff: queue.Queue[_Front | None],
        warm_up: tuple[tuple[int, int], float] | None,
        warmed: threading.Event,
    ) -> None:
        """The second stage's thread (``stages: 2``)."""
        _one_model_thread()
        try:
            self._warm_up_here(warm_up, "back")
        finally:
            warmed.set()
        while (front := handoff.get()) is not None:
            handoff.task_done()  # the first stage may take the next frame
            self._process(self._back(front))

    def _process(self, result: FrameResult) -> None:
        frame = result.frame
        with self._cond:
            self._analysed += 1
            trim = self._analysed % TRIM_EVERY_FRAMES == 0
            if result.error is not None:
                self._failed += 1
        if result.error is not None:
            try:
                self.analysis_failed.emit(frame.frame_index, result.error)
            except Exception:
                logger.exception("a subscriber of analysis_failed raised")
        if self._on_result is not None:
            try:
                self._on_result(result)
            except Exception:
                logger.exception("on_result raised for frame %d", frame.frame_index)
        try:
            self.frame_analysed.emit(result)
        except Exception:
            logger.exception("a subscriber of frame_analysed raised")
        if trim:  # between frames: hand freed memory back (a few ms)
            trim_heap()

    def _emit_skipped(self, frame_index: int | None, reason: str) -> None:
        if frame_index is None:
            return
        try:
            self.frame_skipped.emit(frame_index, reason)
        except Exception:
            logger.exception("a subscriber of frame_skipped raised")
