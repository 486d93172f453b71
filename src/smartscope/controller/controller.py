"""The Controller: wires plan, engine, executor, analysis, reactions and recorder.

Data flow::

    Plan (useq events + overlays) ──► runner (pymmcore-plus) ──► ControllerEngine ──► core
          ▲                                 │ each frame stored, then handled (runner thread)
          │ Executor (limits) ◄── actions   ▼
          │                          frame ─► ledger, FrameRecord ─► Recorder
    Reactions ◄── FrameResult ◄── AnalysisPipeline (worker thread)

Threads: the runner thread acquires and, between blocks (a position of a time
point), applies the actions queued by reactions; the analysis thread analyses
and runs the reactions, each on an immutable snapshot (:class:`RunView`) of
the run as it was when its frame was taken; the caller's thread starts,
stops and finishes. ``run()`` returns only when both other threads have
ended and every frame's fate (analysed, skipped, abandoned) is in the log.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import useq
from psygnal import Signal

from smartscope.actions import Action
from smartscope.analysis.result import FrameInput, FrameResult
from smartscope.controller import records as R
from smartscope.controller.acquisition import VIRTUAL_WAIT_S, Acquisition
from smartscope.controller.autofocus import frame_role
from smartscope.controller.checks import check_hardware, check_plan
from smartscope.controller.engine import (
    IMAGE_META_KEY,
    LASER_META_KEY,
    LATE_META_KEY,
    RECEIVED_META_KEY,
    DeviceFailure,
)
from smartscope.controller.executor import Executor, Outcome
from smartscope.controller.frames import frame_input
from smartscope.controller.gate import RunGate
from smartscope.controller.plan import Plan
from smartscope.controller.reacting import ReactionRunner, snapshot
from smartscope.controller.recorder import Recorder
from smartscope.errors import SmartscopeError
from smartscope.protocol import Protocol
from smartscope.reactions.base import Reaction, RunView

if TYPE_CHECKING:
    from pymmcore_plus import CMMCorePlus

__all__ = ["Controller", "RunError"]

logger = logging.getLogger("smartscope.controller")


class RunError(SmartscopeError):
    """The run could not start, or its acquisition failed (frames so far are kept)."""


class Controller:
    """Runs a protocol on a core: acquisition, real-time analysis, reactions.

    Parameters
    ----------
    core : CMMCorePlus
        A ready core (``smartscope.hardware.load_core``).
    protocol : Protocol
        The validated protocol; it is checked against this core here, before
        anything moves (``ProtocolError`` naming the field).
    out_dir : Path
        Run folder to create (must not exist, or be empty).
    reactions : sequence of Reaction, optional
        Extra Python reactions, in addition to the protocol's.
    device : "auto" | "cpu" | "cuda"
        Where the models run.
    """

    frame_acquired = Signal(FrameInput)
    """Emits ``(frame: FrameInput)`` for every frame, autofocus planes included,
    once it is on disk. Runner thread."""
    frame_analysed = Signal(FrameResult)
    """Emits ``(result: FrameResult)`` after a frame is analysed and reacted to.
    Analysis thread. Connected before the run starts, its results carry the
    label and denoised images; otherwise only those the run saves or its
    reactions read (``FrameAnalyser.images_kept``), the others None."""
    action_taken = Signal(object, str)
    """Emits ``(action: Action, status: str)`` for an applied or clamped action
    (the action as applied). Runner thread."""
    action_refused = Signal(object, str)
    """Emits ``(action, reason: str)`` for an action refused or failed (runner
    thread), or still queued when the run ended (caller's thread)."""
    record = Signal(object)
    """Emits ``(record: records.Record)`` for every line of events.jsonl, on the
    thread that made it."""
    run_finished = Signal(dict)
    """Emits ``(summary: dict)`` when the run folder is complete. Caller's thread."""

    def __init__(
        self,
        core: CMMCorePlus,
        protocol: Protocol,
        *,
        out_dir: str | Path,
        reactions: Sequence[Reaction] = (),
        device: str = "auto",
    ) -> None:
        self.core = core
        self.protocol = protocol
        self.out_dir = Path(out_dir)
        self.device = device
        check_hardware(core, protocol)
        self.plan = self._new_plan()
        if not _grid_waits_for_objective(core, protocol):
            check_plan(self.plan, protocol)  # else checked once the objective is in
        self.executor = Executor(core, self.plan, protocol.limits, protocol.devices)
        self.reactions = ReactionRunner(
            [*protocol.build_reactions(), *reactions], protocol.on_error.reaction
        )
        self.gate = RunGate()
        self._frames = 0
        self._views: dict[int, RunView] = {}
        #: ms the reactions took to decide on each analysed frame (summary
        #: ``reaction_ms``)
        self.reaction_ms: list[float] = []
        #: the plan's shortest mean time between frames, ms, and what the
        #: analysis needed a frame at its warm-up (set as the run starts;
        #: ``run_started`` and the summary have both)
        self.planned_frame_ms: float | None = None
        self.analysis_warm_up_ms: dict[str, float] | None = None
        self.acquisition = Acquisition(
            plan=self.plan,
            executor=self.executor,
            gate=self.gate,
            protocol=protocol,
            report=self._report,
            log=self._log,
            frames=lambda: self._frames,
            sample_time=self._sample_time,
        )
        self._pipeline: Any = None
        self._recorder: Recorder | None = None
        self._sim: Any = None
        self._t0 = 0.0
        self._fov_um = (0.0, 0.0)
        self.summary: dict[str, Any] | None = None

    def _replace_plan(self) -> None:
        """Lay the plan out again (a new objective: a new field of view)."""
        self.plan = self.executor.plan = self.acquisition.plan = self._new_plan()

    def _new_plan(self) -> Plan:
        core = self.core
        px = core.getPixelSizeUm() or 1.0
        self._fov_um = (core.getImageWidth() * px, core.getImageHeight() * px)
        return Plan(
            self.protocol.sequence,
            focus_um=core.getZPosition() if core.getFocusDevice() else None,
            fov_um=self._fov_um,
            default_exposure_ms=core.getExposure(),
        )

    # ------------------------------------------------------------ control

    def stop(
        self,
        reason: str = "stopped by user",
        *,
        interrupted: bool = False,
        signal: str | None = None,
    ) -> None:
        """End the run after the current frame (any thread); ``interrupted``
        (by ``signal``, when a signal asked) makes it an interrupted run."""
        if interrupted:
            self.gate.request_stop(reason, "interrupted", signal=signal)
        else:
            self.gate.request_stop(reason, "stopped", by="user")
        with contextlib.suppress(Exception):
            self.core.mda.cancel()

    def pause(self) -> None:
        """Hold acquisition before the next event (any thread)."""
        self.gate.pause()

    def resume(self) -> None:
        self.gate.resume()

    def submit(self, action: Action) -> None:
        """Queue an action from outside (a GUI, a script); it passes the limits
        like any reaction's, at the next block boundary."""
        self.acquisition.put(action, None, time.perf_counter())

    @property
    def frames_acquired(self) -> int:
        return self._frames

    @property
    def analysis_lag(self) -> int:
        """Frames acquired for analysis but not yet analysed or skipped."""
        return self.gate.lag

    @property
    def stats(self) -> Any:
        """What the run folder's records counted so far (:class:`recorder.Counts`)."""
        return self._recorder.counts if self._recorder is not None else None

    # ------------------------------------------------------------ run

    def run(self, *, on_tick: Callable[[], None] | None = None) -> dict[str, Any]:
        """Run to the end (or until stopped); return the summary.

        The acquisition runs on its own thread; this thread waits, so Ctrl-C
        (KeyboardInterrupt) stops the run cleanly. ``on_tick()`` is called on
        this thread about every 50 ms (a progress display); an exception in it
        is logged and never stops the run.
        """
        from smartscope.controller import lifecycle

        return lifecycle.run(self, on_tick)

    # ------------------------------------------------------------ records

    def _emit(self, signal: Any, *args: Any) -> None:
        """Emit a public signal; a broken subscriber is logged, never raised."""
        try:
            signal.emit(*args)
        except Exception as e:
            logger.exception("a subscriber of %s raised", signal.name)
            if self._recorder is not None:
                self._recorder.on_record(
                    R.SubscriberErrorRecord(
                        signal=signal.name, error=f"{type(e).__name__}: {e}"
                    )
                )

    def _log(self, rec: R.Record) -> None:
        if self._recorder is not None:
            self._recorder.on_record(rec)
        if len(self.record):
            self._emit(self.record, rec)

    def _since(self, t: float) -> float:
        return round(t - self._t0, 6)

    def _sample_time(self) -> float:
        try:
            return float(self.core.mda.event_seconds_elapsed())
        except Exception:
            return time.perf_counter() - self._t0

    # ------------------------------------------------------------ runner thread

    def _report(self, out: Outcome, t_frame: float | None) -> None:
        """Log what became of an action and announce it (runner thread)."""
        t = time.perf_counter()
        a = out.action
        ok = out.status in ("applied", "clamped")
        latency = (t - t_frame) * 1000.0 if ok and t_frame is not None else None
        try:
            rec = R.action_record(out, t_action=self._since(t), latency_ms=latency)
        except Exception as e:  # whatever a reaction returned, it is logged
            rec = R.ActionRecord(
                type=type(a).__name__,
                requested=object.__repr__(a),
                status=out.status,
                limit=f"{out.reason} (not describable: {type(e).__name__})",
                t_action=self._since(t),
            )
        self._log(rec)
        if ok:
            self._emit(self.action_taken, out.applied, out.status)
        else:
            self._emit(self.action_refused, a, out.reason)

    def _on_frame(self, img: np.ndarray, event: useq.MDAEvent, meta: dict) -> None:
        """A frame is on disk: count its light, log it, hand it on (runner thread)."""
        # when it was in hand, before it was written (the engine's stamp)
        t_frame = meta.get(RECEIVED_META_KEY) or time.perf_counter()
        index = self._frames
        self._frames += 1
        power = meta.get(LASER_META_KEY)  # counted by the engine at the snap
        if power is None:
            exposure = float(meta.get("exposure_ms", event.exposure or 0.0))
            power = self.executor.record_frame(exposure)
        frame = frame_input(
            img,
            event,
            meta,
            index=index,
            t_frame=t_frame,
            t_s=self._sample_time(),
            laser_mw=power,
            image_at=meta.get(IMAGE_META_KEY),
            objective=self.plan.objective,
            offset_um=self.plan.offset_um,
        )
        role = frame_role(event)
        self.acquisition.last_position = frame.position
        self._log(
            R.frame_record(
                frame,
                role=role["role"] if role else "acquisition",
                dose_mj=self.executor.dose_mj,
                t0=self._t0,
                late_ms=meta.get(LATE_META_KEY),
            )
        )
        if role is not None:
            if (
                self.acquisition.active_sweep is not None
                and role.get("sweep") == self.acquisition.active_sweep.id
            ):
                self.acquisition.active_sweep.add(role["plane"], img, index)
        elif self._pipeline is not None:
            h, w = img.shape[:2]
            px = frame.pixel_size_um
            self._views[index] = snapshot(
                frame, self.plan.view(), self.executor.dose_mj, (w * px, h * px)
            )
            if self.acquisition.analysis_wait == "virtual":
                # virtual time: no frame is dropped from analysis for want of
                # room; the sample clock waits instead
                self.gate.wait_lag_below(
                    self.protocol.analysis.queue_size, VIRTUAL_WAIT_S
                )
            self.gate.submitted()
            self._pipeline.submit(frame)
        self._emit(self.frame_acquired, frame)

    def _on_device_error(self, f: DeviceFailure) -> None:
        self._log(
            R.DeviceErrorRecord(
                device=f.device,
                event_index=dict(f.event.index),
                position=f.event.pos_name,
                attempt=f.attempt,
                error=f"{type(f.error).__name__}: {f.error}",
                outcome=f.outcome,
                t_wall=time.time(),
            )
        )
        if f.final and f.then == "stop":
            self.gate.request_stop(
                f"{f.device} error: {f.error} (on_error.{f.device}.then: stop)",
                "stopped",
                by="on_error",
            )

    # ------------------------------------------------------------ analysis thread

    def _on_result(self, result: FrameResult) -> None:
        """Log, store, and let the reactions decide (analysis thread). The
        frame counts as settled whatever happens here."""
        try:
            self._react(result)
        finally:
            self.gate.settled()

    def _react(self, result: FrameResult) -> None:
        f = result.frame
        view = self._views.pop(f.frame_index, None)
        self._log(R.analysis_record(result, t0=self._t0))
        update = result.extra.get("denoiser_update")
        if update is not None:
            self._log(R.DenoiserAdaptedRecord(index=f.frame_index, **update))
        if result.error is not None:
            self._log(R.AnalysisErrorRecord(index=f.frame_index, error=result.error))
        elif self._recorder is not None:
            self._recorder.on_result(result)
        if result.error is None and view is not None:
            t = time.perf_counter()
            for action, rec in self.reactions.react(result, view):
                if rec is not None:
                    self._log(rec)
                else:  # whatever was returned: the executor refuses non-actions
                    self.acquisition.put(action, f.position, f.t_frame)
            # the reactions' decisions on this frame (queued, not yet applied)
            self.reaction_ms.append((time.perf_counter() - t) * 1000.0)
            if self.reactions.stop_reason:
                self.gate.request_stop(
                    self.reactions.stop_reason, "stopped", by="on_error"
                )
        self._emit(self.frame_analysed, result)

    def _on_skipped(self, frame_index: int, reason: str = "queue full") -> None:
        self._views.pop(frame_index, None)
        if self.gate.stopping and reason != "too late":  # late before the stop
            reason = "abandoned at stop"
        self._log(R.AnalysisSkippedRecord(index=frame_index, reason=reason))
        self.gate.settled()


def _grid_waits_for_objective(core: CMMCorePlus, p: Protocol) -> bool:
    """Whether the plan's grids are laid out for a field of view that only the
    protocol's objective gives (then the plan is checked after switching to it,
    before anything else moves)."""
    grids = p.sequence.grid_plan is not None or any(
        pos.sequence is not None and pos.sequence.grid_plan is not None
        for pos in p.sequence.stage_positions
    )
    group = p.devices.objective_group
    return (
        grids
        and p.objective is not None
        and (p.objective != core.getCurrentConfig(group))
    )
