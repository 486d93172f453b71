"""The runner thread's side of a run: events from the plan, actions applied
between blocks, autofocus sweeps, stop conditions.

pymmcore-plus's runner pulls :meth:`Acquisition.events`; before each block
(one position of a time point) the actions queued by reactions go through the
executor, and autofocus sweeps they asked for run as events of their own.
What became of each action is reported through ``report`` (the controller
logs it and emits its signals); nothing here knows the analysis or the files.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator
from typing import Any

import useq

from smartscope.controller.autofocus import Sweep
from smartscope.controller.executor import Executor, Outcome
from smartscope.controller.frames import BLOCK_END_KEY
from smartscope.controller.gate import RunGate
from smartscope.controller.plan import Plan
from smartscope.controller.records import Record
from smartscope.protocol import Protocol

__all__ = ["VIRTUAL_WAIT_S", "Acquisition"]

#: in virtual time, the longest the acquisition waits for the analysis (wall
#: s): a frame's analysis that takes longer than this is left behind
VIRTUAL_WAIT_S = 60.0


class Acquisition:
    """Feeds the runner from the plan and applies actions between blocks.

    Parameters
    ----------
    plan, executor, gate, protocol
        What to acquire, who applies actions, the shared run state, the
        stop conditions.
    report : callable
        ``report(outcome, t_frame)``: log and announce what became of an action.
    log : callable
        ``log(record)``: write a record (autofocus results).
    frames, sample_time : callable
        Frames acquired so far; the sample clock, s.
    """

    def __init__(
        self,
        *,
        plan: Plan,
        executor: Executor,
        gate: RunGate,
        protocol: Protocol,
        report: Callable[[Outcome, float | None], None],
        log: Callable[[Record], None],
        frames: Callable[[], int],
        sample_time: Callable[[], float],
    ) -> None:
        self.plan, self.executor, self.gate = plan, executor, gate
        self._protocol = protocol
        self._report, self._log = report, log
        self._frames, self._sample_time = frames, sample_time
        self._actions: queue.SimpleQueue[tuple[Any, str | None, float | None]] = (
            queue.SimpleQueue()
        )
        self._sweeps: list[Sweep] = []
        #: the sweep whose planes are being acquired (its frames are scored)
        self.active_sweep: Sweep | None = None
        #: position of the last frame: where an action naming none applies
        self.last_position: str | None = None
        #: how long to let the analysis catch up before a time point (set at
        #: start: None without analysis; "virtual" waits until it has, before
        #: every block, so that a seeded run does not depend on the host)
        self.analysis_wait: str | None = None

    def put(self, action: Any, position: str | None, t_frame: float | None) -> None:
        """Queue whatever a reaction (or a script) returned (any thread)."""
        self._actions.put((action, position, t_frame))

    # ------------------------------------------------------------ events

    def events(self) -> Iterator[useq.MDAEvent]:
        """The events to acquire, from the (changing) plan (runner thread)."""
        for block in self.plan.blocks(self._before_timepoint):
            if self.analysis_wait == "virtual" and not block.new_timepoint:
                # the sample clock waits for the analysis: every action the
                # frames so far call for is applied before the next block,
                # however fast the host is
                self.gate.wait_caught_up(VIRTUAL_WAIT_S)
            self.apply_pending()
            if (yield from self._sweep_events()) or self.check_stop():
                return
            events = block.events()
            for i, ev in enumerate(events):
                if self.gate.hold() or self.check_stop():
                    return
                if i == len(events) - 1:
                    ev = ev.model_copy(
                        update={"metadata": {**ev.metadata, BLOCK_END_KEY: True}}
                    )
                yield ev

    def _before_timepoint(self, t_index: int | None, due_s: float | None) -> None:
        """Before a time point is laid out: let the analysis of the last one
        catch up (so reactions to one time point act on the next; never past
        the time the next frame is due, in realtime), then apply what the
        reactions decided."""
        if t_index and self.analysis_wait == "virtual":
            self.gate.wait_caught_up(VIRTUAL_WAIT_S)
        elif t_index and self.analysis_wait is not None:
            self._act_while_waiting(
                max(0.0, (due_s or 0.0) - self._sample_time() - 0.005)
            )
        self.apply_pending()
        self.check_stop()

    def _act_while_waiting(self, timeout_s: float) -> None:
        """Realtime: wait for the analysis to catch up, at most ``timeout_s``,
        applying each decision as soon as its frame's result is in (the
        hardware is idle until the next frame; a result that arrived while the
        last frame was being taken acts now, not after the wait). Virtual time
        keeps the one wait, so that a seeded run does not depend on when each
        result arrives."""
        end = time.perf_counter() + timeout_s
        seen = -1
        while True:
            self.apply_pending()
            done, seen = self.gate.wait_settled_after(
                seen, max(0.0, end - time.perf_counter())
            )
            if done or time.perf_counter() >= end:
                return

    def check_stop(self) -> bool:
        """Whether the run is ending; asks it to when a stop condition is met."""
        if self.gate.stopping:
            return True
        st = self._protocol.stop
        budget = self._protocol.limits.light_dose_budget_mj
        why = None
        if st.max_frames is not None and self._frames() >= st.max_frames:
            why = f"max_frames {st.max_frames} reached"
        elif st.max_sample_time_s is not None and (
            self._sample_time() >= st.max_sample_time_s
        ):
            why = f"max_sample_time_s {st.max_sample_time_s:g} reached"
        elif self.plan.dynamic and self.plan.n_active == 0:
            why = "no position left to image (every position was removed)"
        elif (
            st.when_dose_budget_spent
            and budget is not None
            and self.executor.dose_mj >= budget
        ):
            why = f"light-dose budget {budget:g} mJ spent"
        if why:
            self.gate.request_stop(why, "stopped", by="protocol")
        return self.gate.stopping

    # ------------------------------------------------------------ actions

    def apply_pending(self) -> None:
        while True:
            try:
                action, position, t_frame = self._actions.get_nowait()
            except queue.Empty:
                return
            out = self.executor.apply(
                action, default_position=position or self.last_position
            )
            self._done(out, t_frame)

    def pending(self) -> list[tuple[Any, str | None, float | None]]:
        """Take what is still queued (the run has ended)."""
        out = []
        while True:
            try:
                out.append(self._actions.get_nowait())
            except queue.Empty:
                return out

    def _done(self, out: Outcome, t_frame: float | None) -> None:
        self._report(out, t_frame)
        if out.stop:
            a = out.action
            self.gate.request_stop(
                a.reason or f"stopped by {a.source or 'an action'}",
                "stopped",
                by="reaction" if a.source else "user",
            )
        if out.sweep is not None:
            self._sweeps.append(out.sweep)

    # ------------------------------------------------------------ autofocus

    def _sweep_events(self) -> Iterator[useq.MDAEvent]:
        """Autofocus sweeps asked for, then their result; True if stopped."""
        while self._sweeps:
            sweep = self.active_sweep = self._sweeps.pop(0)
            for ev in sweep.planned:
                if self.gate.hold() or self.check_stop():
                    self.end_sweep(sweep, stopped=True)
                    return True
                yield ev
            self.end_sweep(sweep)
        return False

    def end_sweep(self, sweep: Sweep, *, stopped: bool = False) -> None:
        """Log a sweep's outcome and refocus, judged from the focus before it."""
        self.active_sweep = None
        self.executor.sweep_done(sweep)
        record, move = sweep.result(stopped=stopped)
        self._log(record)
        if move is not None:
            self._done(self.executor.apply(move, z_from_um=sweep.z_before_um), None)

    def abandon_sweeps(self) -> None:
        """Sweeps started or queued when the run ended: logged as stopped."""
        for sweep in [self.active_sweep, *self._sweeps]:
            if sweep is not None:
                self.end_sweep(sweep, stopped=True)
        self._sweeps.clear()
