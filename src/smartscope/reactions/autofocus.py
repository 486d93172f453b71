"""autofocus: keep a position in focus with few, small Z sweeps.

The reaction asks for an :class:`~smartscope.actions.Autofocus` sweep (run by
the controller, see ``docs/controller.md``) on a schedule, and between sweeps
follows the focal drift it has measured, without extra light:

- The first frame of a position gets a wide sweep (``first_range_um``), the
  next one a fine sweep; each fine sweep is ``range_um`` in ``step_um`` steps.
- The frame after a sweep shows where the sweep put the focus: an *anchor*
  ``(t_s, z_um)`` of the focal plane, dated at the sweep (which runs right
  after the frame that asked for it).
- A straight line through the last ``fit_anchors`` anchors predicts the focal
  plane; every frame that is not a sweep moves the focus to the prediction
  for the next frame's time (``MoveFocus``, absolute).
- The gap between sweeps doubles, up to ``max_every_n``, while each sweep finds
  the focus within ``tolerance_um`` of the prediction, and falls back to one
  frame when it does not (the drift changed, or the sample jumped).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pydantic import Field, model_validator

from smartscope.actions import Action, Autofocus, MoveFocus
from smartscope.analysis.result import FrameResult
from smartscope.reactions.base import Reaction, ReactionParams, RunView, register

__all__ = ["AutofocusParams", "KeepFocus"]


class AutofocusParams(ReactionParams):
    range_um: float = Field(1.0, gt=0, description="span of a fine sweep, µm")
    step_um: float = Field(0.5, gt=0, description="plane spacing of a fine sweep, µm")
    first_range_um: float = Field(
        10.0, gt=0, description="span of the first sweep of a position, µm"
    )
    first_step_um: float = Field(
        1.0, gt=0, description="plane spacing of the first sweep, µm"
    )
    max_every_n: int = Field(
        32, ge=1, description="most frames of a position between two sweeps"
    )
    tolerance_um: float = Field(
        0.15,
        gt=0,
        description="a sweep that finds the focus this close to the prediction "
        "lets the gap to the next one double, µm",
    )
    fit_anchors: int = Field(
        4, ge=2, description="sweep results the drift line is fitted to"
    )
    follow_drift: bool = Field(
        True, description="move the focus along the fitted drift between sweeps"
    )
    channel: str | None = Field(
        None, description="only react to frames of this channel"
    )

    @model_validator(mode="after")
    def _steps(self) -> AutofocusParams:
        if self.step_um > self.range_um:
            raise ValueError("step_um must not exceed range_um")
        if self.first_step_um > self.first_range_um:
            raise ValueError("first_step_um must not exceed first_range_um")
        return self


@dataclass
class _Focus:
    """What the reaction knows about one position's focus."""

    #: (t_s, z_um) where sweeps found the focal plane
    anchors: list[tuple[float, float]] = field(default_factory=list)
    #: sample time of the frame that asked for the sweep now running (None: none)
    swept_at_s: float | None = None
    first_done: bool = False
    frames_since_sweep: int = 0
    gap: int = 1
    last_t_s: float | None = None
    dt_s: float = 0.0


@register
class KeepFocus(Reaction):
    """Autofocus sweeps on an adaptive schedule, drift followed in between."""

    name = "autofocus"
    reads_images = frozenset()
    Params = AutofocusParams
    params: AutofocusParams

    def __init__(self, params: AutofocusParams | None = None, **kwargs: object) -> None:
        super().__init__(params, **kwargs)
        self._focus: dict[str, _Focus] = {}

    def reset(self) -> None:
        self._focus.clear()

    def predicted_z_um(self, position: str, t_s: float) -> float | None:
        """The focal plane the anchors predict at ``t_s`` (None: too few)."""
        st = self._focus.get(position)
        if st is None or not st.anchors:
            return None
        a = np.array(st.anchors[-self.params.fit_anchors :], float)
        if len(a) < 2 or not self.params.follow_drift or np.ptp(a[:, 0]) <= 0:
            return float(a[-1, 1])
        slope, icpt = np.polyfit(a[:, 0], a[:, 1], 1)
        return float(icpt + slope * t_s)

    def react(self, result: FrameResult, run: RunView) -> Sequence[Action]:
        p, f = self.params, result.frame
        if p.channel is not None and f.channel != p.channel:
            return ()
        st = self._focus.setdefault(f.position, _Focus())
        if st.last_t_s is not None and f.t_s > st.last_t_s:
            st.dt_s = f.t_s - st.last_t_s
        st.last_t_s = f.t_s
        common = {
            "position": f.position or None,
            "source": self.name,
            "frame_index": f.frame_index,
            "t_frame": f.t_frame,
        }
        if st.swept_at_s is not None:  # this frame is where the last sweep put us
            expected = self.predicted_z_um(f.position, st.swept_at_s)
            st.anchors.append((st.swept_at_s, f.z_um))
            st.swept_at_s = None
            if expected is not None and abs(f.z_um - expected) <= p.tolerance_um:
                st.gap = min(2 * st.gap, p.max_every_n)
            elif len(st.anchors) > 1:
                st.gap = 1
        if not st.first_done:
            st.first_done = True
            return self._sweep(st, f.t_s, p.first_range_um, p.first_step_um, common)
        st.frames_since_sweep += 1
        if st.frames_since_sweep >= st.gap:
            return self._sweep(st, f.t_s, p.range_um, p.step_um, common)
        target = self.predicted_z_um(f.position, f.t_s + st.dt_s)
        if target is None or not p.follow_drift or len(st.anchors) < 2:
            return ()
        return (
            MoveFocus(
                z_um=target,
                reason=f"focal drift followed from {len(st.anchors)} sweeps",
                **common,
            ),
        )

    def _sweep(
        self,
        st: _Focus,
        t_s: float,
        range_um: float,
        step_um: float,
        common: dict[str, object],
    ) -> Sequence[Action]:
        st.swept_at_s, st.frames_since_sweep = t_s, 0
        why = "first sweep" if not st.anchors else f"every {st.gap} frame(s)"
        return (Autofocus(range_um=range_um, step_um=step_um, reason=why, **common),)
