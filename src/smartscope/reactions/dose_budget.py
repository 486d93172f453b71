"""dose_budget: light budgets per cell, per position and for the run.

Every analysed frame adds its light to the budgets it counts against:
``laser_mw × exposure`` (mJ, the ledger's unit) to its position, and its
fluence, ``laser_mw × exposure / field area`` (J/cm², the field of view lit
evenly, as the simulator lights it), to every tracked nucleus in the frame.
When a budget is reached the reaction acts once, as ``then`` says:

- ``slow``: the position is visited every ``slow_interval_s`` from then on
  (a :class:`~smartscope.actions.SetInterval` for the position; asked again
  if another reaction speeds it up);
- ``remove``: the position is no longer imaged
  (:class:`~smartscope.actions.RemovePosition`);
- ``stop``: the run ends.

A cell's budget protects its position: the first tracked nucleus of a
position to reach ``per_cell_j_cm2`` spends the position's budget. The run's
budget (``total_mj``, read from the controller's ledger) slows the whole run
to ``slow_interval_s`` (``then: slow``) or ends it; the hard limit
``limits.light_dose_budget_mj`` still refuses light past its value.

Counted from the frames the analysis sees: a frame skipped for analysis adds
to the run's ledger but not to its position's or its cells' (in virtual
time the analysis keeps up). A nucleus that leaves the field and comes back
under a new track starts a new count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field, model_validator

from smartscope.actions import Action, RemovePosition, SetInterval, Stop
from smartscope.analysis.result import FrameResult
from smartscope.reactions.base import Reaction, ReactionParams, RunView, register

__all__ = ["DoseBudget", "DoseBudgetParams"]


class DoseBudgetParams(ReactionParams):
    per_cell_j_cm2: float | None = Field(
        None, gt=0, description="fluence one tracked nucleus may receive, J/cm²"
    )
    per_position_mj: float | None = Field(
        None, gt=0, description="light one position may receive, mJ (mW x s)"
    )
    total_mj: float | None = Field(
        None, gt=0, description="light the whole run may use, mJ (mW x s)"
    )
    then: Literal["slow", "remove", "stop"] = Field(
        "slow",
        description="at a spent budget: slow the position (the run, for "
        "total_mj) to slow_interval_s, stop imaging the position, or end the run",
    )
    slow_interval_s: float = Field(
        600.0, gt=0, description="the interval of a position (run) past its budget, s"
    )

    @model_validator(mode="after")
    def _check(self) -> DoseBudgetParams:
        if (
            self.per_cell_j_cm2 is None
            and self.per_position_mj is None
            and self.total_mj is None
        ):
            raise ValueError(
                "name at least one budget: per_cell_j_cm2, per_position_mj or total_mj"
            )
        return self


@register
class DoseBudget(Reaction):
    """Slow down, drop a position or stop when a light budget is spent."""

    name = "dose_budget"
    reads_images = frozenset()
    Params = DoseBudgetParams
    params: DoseBudgetParams

    def __init__(
        self, params: DoseBudgetParams | None = None, **kwargs: object
    ) -> None:
        super().__init__(params, **kwargs)
        self.reset()

    def reset(self) -> None:
        #: light per position so far, mJ
        self.position_mj: dict[str, float] = {}
        #: fluence per (position, track id) so far, J/cm²
        self.cell_j_cm2: dict[tuple[str, int], float] = {}
        #: per position, the most fluence one of its tracks got: (J/cm², track)
        self._worst: dict[str, tuple[float, int]] = {}
        #: positions whose budget is spent, with why
        self.spent: dict[str, str] = {}
        self.total_spent = False

    def react(self, result: FrameResult, run: RunView) -> Sequence[Action]:
        p, f = self.params, result.frame
        pos = f.position
        mj = f.laser_mw * f.exposure_ms / 1000.0
        self.position_mj[pos] = self.position_mj.get(pos, 0.0) + mj
        w, h = run.fov_um
        area_cm2 = w * h * 1e-8
        if area_cm2 > 0:
            fluence = mj * 1e-3 / area_cm2
            worst = self._worst.get(pos, (0.0, 0))
            for o in result.objects:
                key = (pos, o.track_id)
                v = self.cell_j_cm2[key] = self.cell_j_cm2.get(key, 0.0) + fluence
                if v > worst[0]:
                    worst = (v, o.track_id)
            self._worst[pos] = worst
        stamp = {
            "source": self.name,
            "frame_index": f.frame_index,
            "t_frame": f.t_frame,
        }
        out: list[Action] = []
        total = p.total_mj
        if (
            not self.total_spent
            and total is not None
            and run.state.light_dose_mj >= total
        ):
            self.total_spent = True
            why = (
                f"the run's light {run.state.light_dose_mj:.4g} mJ reached "
                f"total_mj {total:g}"
            )
            if p.then != "slow":
                return [Stop(reason=why, **stamp)]
            out.append(SetInterval(interval_s=p.slow_interval_s, reason=why, **stamp))
        why = self._position_spent(pos)
        if why is None:
            return out
        if pos not in self.spent:
            self.spent[pos] = why
            if p.then == "stop":
                return [*out, Stop(reason=why, **stamp)]
            if p.then == "remove":
                return [*out, RemovePosition(position=pos, reason=why, **stamp)]
        if p.then == "slow" and (
            run.position_intervals.get(pos, run.state.interval_s) < p.slow_interval_s
        ):
            out.append(
                SetInterval(
                    interval_s=p.slow_interval_s,
                    position=pos,
                    reason=self.spent[pos],
                    **stamp,
                )
            )
        return out

    def _position_spent(self, pos: str) -> str | None:
        p = self.params
        if pos in self.spent:
            return self.spent[pos]
        used = self.position_mj.get(pos, 0.0)
        if p.per_position_mj is not None and used >= p.per_position_mj:
            return f"{pos}: {used:.4g} mJ reached per_position_mj {p.per_position_mj:g}"
        worst = self._worst.get(pos)
        if (
            p.per_cell_j_cm2 is not None
            and worst is not None
            and worst[0] >= p.per_cell_j_cm2
        ):
            return (
                f"{pos}: track {worst[1]} received {worst[0]:.4g} J/cm², "
                f"per_cell_j_cm2 {p.per_cell_j_cm2:g}"
            )
        return None
