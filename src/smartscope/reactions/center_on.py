"""center_on: keep one tracked nucleus in the centre of the field of view.

The target is chosen on the first frame with objects (nearest the centre,
brightest or largest) or by track id, and followed by its track. When the
track is lost the nearest object to the last known place (within
``reacquire_radius_um``) takes over. The stage moves only when the target is
off centre by more than the dead band, by at most ``max_step_um``, leading the
target by its recent velocity so a migrating cell stays centred.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from smartscope.actions import Action, MoveStage
from smartscope.analysis.result import FrameResult, ObjectMeasurement
from smartscope.reactions.base import Reaction, ReactionParams, RunView, register

__all__ = ["CenterOn", "CenterOnParams"]


class CenterOnParams(ReactionParams):
    select: Literal["nearest_center", "brightest", "largest", "track"] = (
        "nearest_center"
    )
    track_id: int | None = Field(
        None, description="with select='track': the track to follow"
    )
    position: str | None = Field(
        None, description="stage position to act on (default: the first seen)"
    )
    dead_band_fraction: float = Field(
        0.1,
        ge=0,
        le=0.5,
        description="no move while the target is within this fraction of the half FOV",
    )
    max_step_um: float = Field(200.0, gt=0)
    lead: float = Field(
        1.0, ge=0, le=3, description="how many frame intervals of motion to lead by"
    )
    reacquire_radius_um: float = Field(20.0, gt=0)
    min_area_um2: float = Field(0.0, ge=0)
    merge_area_ratio: float = Field(
        1.3, gt=1, description="an object this much larger than the target is a merge"
    )
    min_area_ratio: float = Field(
        0.4, gt=0, lt=1, description="smallest size, relative to the target, to accept"
    )


@register
class CenterOn(Reaction):
    """Follow one nucleus across the sample by moving the XY stage."""

    name = "center_on"
    reads_images = frozenset()
    Params = CenterOnParams
    params: CenterOnParams

    def __init__(self, params: CenterOnParams | None = None, **kwargs: object) -> None:
        super().__init__(params, **kwargs)
        self.reset()

    def reset(self) -> None:
        self.target_track: int | None = None
        self.position: str | None = self.params.position
        self._last: tuple[float, float, float] | None = None  # x, y, t_s
        self._velocity = (0.0, 0.0)
        self._ref_area: float | None = None
        self._merged = False

    def _pick(
        self, objs: Sequence[ObjectMeasurement], fx: float, fy: float
    ) -> ObjectMeasurement:
        p = self.params
        if p.select == "brightest":
            return max(objs, key=lambda o: o.mean_intensity)
        if p.select == "largest":
            return max(objs, key=lambda o: o.area_um2)
        return min(objs, key=lambda o: math.hypot(o.x_um - fx, o.y_um - fy))

    def _predicted(self, t_s: float) -> tuple[float, float] | None:
        if self._last is None:
            return None
        lx, ly, lt = self._last
        dt = max(0.0, t_s - lt)
        return lx + self._velocity[0] * dt, ly + self._velocity[1] * dt

    def _too_big(self, o: ObjectMeasurement) -> bool:
        """An object much larger than the target: the target touching a neighbour."""
        return (
            self._ref_area is not None
            and o.area_um2 > self.params.merge_area_ratio * self._ref_area
        )

    def _similar(self, o: ObjectMeasurement) -> bool:
        """Plausibly the target by size (smaller is allowed: mitotic rounding and
        daughters are smaller; larger means it touches a neighbour)."""
        if self._ref_area is None:
            return True
        ratio = o.area_um2 / self._ref_area
        return self.params.min_area_ratio <= ratio <= self.params.merge_area_ratio

    def _find(
        self, objs: Sequence[ObjectMeasurement], t_s: float
    ) -> ObjectMeasurement | None:
        """The target in this frame: by track, or by predicted position when the
        track was lost or went through a merge with a neighbour."""
        by_track = next((o for o in objs if o.track_id == self.target_track), None)
        if by_track is not None and not self._merged and self._similar(by_track):
            return by_track
        pred = self._predicted(t_s)
        if pred is None:
            return by_track
        radius = self.params.reacquire_radius_um

        def dist(o: ObjectMeasurement) -> float:
            return math.hypot(o.x_um - pred[0], o.y_um - pred[1])

        # the nearest plausible object: the target itself, or the target merged
        # with a neighbour (larger); never a clearly smaller neighbour
        cands = [
            o
            for o in objs
            if dist(o) <= radius and (self._similar(o) or self._too_big(o))
        ]
        return min(cands, key=dist) if cands else None

    def react(self, result: FrameResult, run: RunView) -> Sequence[Action]:
        frame = result.frame
        if self.position is None:
            self.position = frame.position
        if frame.position != self.position or result.error is not None:
            return ()
        p = self.params
        objs = [o for o in result.objects if o.area_um2 >= p.min_area_um2]
        if not objs:
            return ()
        fx, fy, t = frame.stage_x_um, frame.stage_y_um, frame.t_s
        if self.target_track is None:
            if p.select == "track":
                target = next((o for o in objs if o.track_id == p.track_id), None)
            else:
                target = self._pick(objs, fx, fy)
        else:
            target = self._find(objs, t)
        if target is None:
            return ()
        if self._too_big(target):
            # merged with a neighbour: aim at the blob, but keep the identity
            # and motion of the target until it separates again
            self._merged = True
            pred = self._predicted(t)
            assert pred is not None
            assert self._last is not None
            self._last = (pred[0], pred[1], t)
        else:
            if (
                self._last is not None
                and not self._merged
                and target.track_id == self.target_track
            ):
                lx, ly, lt = self._last
                dt = t - lt
                if dt > 0:
                    vx, vy = (target.x_um - lx) / dt, (target.y_um - ly) / dt
                    # smooth the estimate against segmentation jitter
                    self._velocity = (
                        0.5 * self._velocity[0] + 0.5 * vx,
                        0.5 * self._velocity[1] + 0.5 * vy,
                    )
            self._merged = False
            self.target_track = target.track_id
            self._ref_area = (
                target.area_um2
                if self._ref_area is None
                else 0.8 * self._ref_area + 0.2 * target.area_um2
            )
            self._last = (target.x_um, target.y_um, t)
        dt_next = run.state.interval_s
        gx = target.x_um + p.lead * self._velocity[0] * dt_next
        gy = target.y_um + p.lead * self._velocity[1] * dt_next
        half = min(run.fov_um) / 2
        off = math.hypot(gx - fx, gy - fy)
        if off <= p.dead_band_fraction * half:
            return ()
        if off > p.max_step_um:
            f = p.max_step_um / off
            gx, gy = fx + (gx - fx) * f, fy + (gy - fy) * f
        return (
            MoveStage(
                x_um=gx,
                y_um=gy,
                position=frame.position,
                source=self.name,
                reason=f"track {target.track_id} is {off:.1f} µm off centre",
                frame_index=frame.frame_index,
                t_frame=frame.t_frame,
            ),
        )
