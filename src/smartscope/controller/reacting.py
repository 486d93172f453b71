"""Running the reactions: what they return is checked, what they raise is logged.

A reaction gets a frame's result and the immutable snapshot of the run taken
with that frame, and returns actions. Nothing it returns or raises can end the
acquisition: a value that is not an action is handed on to be refused and
logged by the executor; an exception is logged, and after the protocol's
``on_error.reaction.max_consecutive`` failures in a row the reaction is
switched off (``then: disable``) or the run ends (``then: stop``). Analysis thread.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from types import MappingProxyType
from typing import Any

from smartscope.analysis.result import FrameInput, FrameResult
from smartscope.controller.plan import PlanView
from smartscope.controller.records import ReactionErrorRecord
from smartscope.limits import HardwareState
from smartscope.protocol import ReactionPolicy
from smartscope.reactions.base import Reaction, RunView

__all__ = ["ReactionRunner", "snapshot"]

logger = logging.getLogger("smartscope.controller")

#: most actions one reaction may return for one frame; more are not taken
MAX_ACTIONS_PER_FRAME = 1000


class ReactionRunner:
    """The run's reactions, their failure counts and who was switched off."""

    def __init__(self, reactions: Sequence[Reaction], policy: ReactionPolicy) -> None:
        self.reactions = list(reactions)
        self.policy = policy
        self._fails = [0] * len(self.reactions)
        self._off = [False] * len(self.reactions)
        #: set when a reaction failed ``max_consecutive`` times and the policy stops
        self.stop_reason = ""

    def reset(self) -> None:
        for r in self.reactions:
            r.reset()

    def react(
        self, result: FrameResult, view: RunView
    ) -> Iterator[tuple[Any | None, ReactionErrorRecord | None]]:
        """(action, None) for every value returned, (None, record) for a failure."""
        for i, reaction in enumerate(self.reactions):
            if self._off[i]:
                continue
            try:
                name = str(getattr(reaction, "name", type(reaction).__name__))
            except Exception:
                name = type(reaction).__name__
            try:
                out = reaction.react(result, view)
                values = [] if out is None else list(_take(out))
            except (Exception, SystemExit) as e:  # a reaction never ends the run
                logger.exception("reaction %s failed", name)
                self._fails[i] += 1
                limit = self._fails[i] >= self.policy.max_consecutive
                disable = limit and self.policy.then == "disable"
                self._off[i] = disable
                if limit and self.policy.then == "stop" and not self.stop_reason:
                    self.stop_reason = (
                        f"reaction {name!r} failed {self._fails[i]} times in a row: "
                        f"{type(e).__name__}: {e}"
                    )
                yield (
                    None,
                    ReactionErrorRecord(
                        index=result.frame.frame_index,
                        reaction=name,
                        error=f"{type(e).__name__}: {e}"[:2000],
                        disabled=disable,
                    ),
                )
                continue
            self._fails[i] = 0
            for v in values:
                yield _stamped(v, name, result), None


def _take(out: Any) -> Iterator[Any]:
    """The values a reaction returned (a single action counts as one)."""
    from smartscope.actions import Action

    if isinstance(out, Action):
        yield out
        return
    for n, v in enumerate(out):
        if n >= MAX_ACTIONS_PER_FRAME:
            raise ValueError(
                f"returned more than {MAX_ACTIONS_PER_FRAME} actions for one frame"
            )
        yield v


def snapshot(
    f: FrameInput, plan: PlanView, dose_mj: float, fov_um: tuple[float, float]
) -> RunView:
    """The run as it is when frame ``f`` is taken, for the reactions to it: the
    frame's own stage, focus, exposure and power, the plan and the dose then."""
    return RunView(
        state=HardwareState(
            x_um=f.stage_x_um,
            y_um=f.stage_y_um,
            z_um=f.z_um,
            exposure_ms=f.exposure_ms,
            laser_mw=f.laser_mw,
            light_dose_mj=dose_mj,
            n_positions=plan.n_positions,
            interval_s=plan.interval_s,
        ),
        positions=MappingProxyType(
            {
                k: (
                    x if x is not None else f.stage_x_um,
                    y if y is not None else f.stage_y_um,
                    z,
                )
                for k, (x, y, z) in plan.positions.items()
            }
        ),
        fov_um=fov_um,
        frames_acquired=f.frame_index + 1,
        t_s=f.t_s,
        position_intervals=MappingProxyType(dict(plan.position_intervals)),
    )


def _stamped(v: Any, name: str, result: FrameResult) -> Any:
    """An action with its source and frame filled in where the reaction left
    them empty (for the log and the latency)."""
    from dataclasses import replace

    from smartscope.actions import Action

    if not isinstance(v, Action) or (v.source and v.frame_index >= 0):
        return v
    f = result.frame
    try:
        return replace(
            v,
            source=v.source or name,
            frame_index=v.frame_index if v.frame_index >= 0 else f.frame_index,
            t_frame=v.t_frame if v.t_frame is not None else f.t_frame,
        )
    except Exception:  # malformed: left as it is, for the executor to refuse
        return v
