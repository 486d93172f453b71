"""scan_then_zoom: find rare cells in a low-magnification scan, then image
each at high magnification.

After Zeiss Guided Acquisition and MicroPilot: the protocol's first position
(``scan_position``) is a tiled scan at low magnification (a useq grid plan on
that position). Every scan frame of ``channel`` is segmented by the run's
analysis; an object is a hit when its background-subtracted mean intensity
is at least ``min_signal_adu`` and its area inside the area window. When the
scan's last frame has been analysed (its time point's block is complete), the
hits are merged across overlapping tiles, ranked (brightest or largest first)
and capped at ``max_targets``, and the reaction asks for:

1. ``RemovePosition(scan_position)``: the scan is not repeated;
2. ``SetObjective(objective)``: the high magnification; the protocol's
   ``devices.objective_offsets`` keep sample coordinates on the same point and
   in focus, and the pixel size follows the objective;
3. one ``AddPosition`` per target (``{name_prefix}1``, ``2`` ... in rank
   order) at the hit's centroid and the scan tile's focus.

A scan with no hit stops the run (nothing to zoom on). While the targets are
imaged, each zoom frame re-centres its target (``recenter``): the object
nearest the field centre within ``recenter_radius_um`` is brought to the
centre when it is off by more than ``dead_band_fraction`` of the half field,
so a migrating cell stays in the middle of the small high-magnification field.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from smartscope.actions import (
    Action,
    AddPosition,
    MoveStage,
    RemovePosition,
    SetObjective,
    Stop,
)
from smartscope.analysis.result import FrameResult
from smartscope.reactions.base import Reaction, ReactionParams, RunView, register

__all__ = ["Hit", "ScanThenZoom", "ScanThenZoomParams"]


class ScanThenZoomParams(ReactionParams):
    objective: str = Field(
        description="the objective preset to image the targets with (e.g. '40x')"
    )
    scan_position: str | None = Field(
        None,
        description="the position whose frames are the scan (None: the position "
        "of the first frame)",
    )
    channel: str | None = Field(
        None, description="detect on frames of this channel only (None: every frame)"
    )
    min_signal_adu: float = Field(
        0.0,
        ge=0,
        description="a hit's mean intensity above the frame's background, ADU",
    )
    min_area_um2: float = Field(20.0, ge=0, description="smallest hit, µm²")
    max_area_um2: float | None = Field(
        None, gt=0, description="largest hit, µm² (None: no limit)"
    )
    rank_by: Literal["signal", "area"] = Field(
        "signal", description="targets first: the brightest, or the largest"
    )
    max_targets: int = Field(
        20, ge=1, le=1000, description="at most this many targets are imaged"
    )
    merge_within_um: float = Field(
        6.0,
        ge=0,
        description="hits closer than this are one cell (seen in two overlapping "
        "tiles), µm",
    )
    name_prefix: str = Field(
        "target",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,40}$",
        description="the targets' positions are named PREFIX1, PREFIX2 ...",
    )
    recenter: bool = Field(True, description="re-centre each target on its zoom frames")
    recenter_radius_um: float = Field(
        15.0, gt=0, description="the target is the object nearest the centre within"
    )
    dead_band_fraction: float = Field(
        0.1,
        ge=0,
        le=0.5,
        description="no re-centring move while the target is within this fraction "
        "of the half field",
    )

    @model_validator(mode="after")
    def _check(self) -> ScanThenZoomParams:
        if self.max_area_um2 is not None and self.max_area_um2 <= self.min_area_um2:
            raise ValueError(
                f"max_area_um2 ({self.max_area_um2}) must exceed min_area_um2 "
                f"({self.min_area_um2})"
            )
        return self


@dataclass(frozen=True)
class Hit:
    """An object of the scan that passed the thresholds (sample µm, ADU, µm²)."""

    x_um: float
    y_um: float
    z_um: float
    signal_adu: float
    area_um2: float
    frame_index: int


@register
class ScanThenZoom(Reaction):
    """Tile scan at low magnification, then the best hits at high magnification."""

    name = "scan_then_zoom"
    reads_images = frozenset()
    Params = ScanThenZoomParams
    params: ScanThenZoomParams

    def __init__(
        self, params: ScanThenZoomParams | None = None, **kwargs: object
    ) -> None:
        super().__init__(params, **kwargs)
        self.reset()

    def reset(self) -> None:
        self.scan_position: str | None = self.params.scan_position
        #: every hit of the scan, in the order found
        self.hits: list[Hit] = []
        #: the targets chosen (rank order), once the scan is done
        self.targets: list[Hit] = []
        self.scan_done = False
        self._scan_t: int | None = None

    def react(self, result: FrameResult, run: RunView) -> Sequence[Action]:
        f = result.frame
        p = self.params
        if result.error is not None:
            return ()
        if self.scan_position is None:
            self.scan_position = f.position
        if not self.scan_done and f.position == self.scan_position:
            if self._scan_t is None:
                self._scan_t = f.event_index.get("t", 0)
            if p.channel is None or f.channel == p.channel:
                self._collect(result)
            if f.last_in_block and f.event_index.get("t", 0) == self._scan_t:
                self.scan_done = True
                return self._zoom(result)
            return ()
        if self.scan_done and p.recenter and f.position in self._target_names():
            return self._recenter(result, run)
        return ()

    # ------------------------------------------------------------ the scan

    def _collect(self, result: FrameResult) -> None:
        p = self.params
        for o in result.objects:
            signal = o.mean_intensity - result.background
            if signal < p.min_signal_adu or o.area_um2 < p.min_area_um2:
                continue
            if p.max_area_um2 is not None and o.area_um2 > p.max_area_um2:
                continue
            self.hits.append(
                Hit(
                    x_um=o.x_um,
                    y_um=o.y_um,
                    z_um=result.frame.z_um,
                    signal_adu=signal,
                    area_um2=o.area_um2,
                    frame_index=result.frame.frame_index,
                )
            )

    def ranked(self) -> list[Hit]:
        """The hits, best first, one per cell (the best of those within
        ``merge_within_um`` of each other), capped at ``max_targets``."""
        p = self.params
        key = (
            (lambda h: h.signal_adu)
            if p.rank_by == "signal"
            else (lambda h: h.area_um2)
        )
        kept: list[Hit] = []
        for h in sorted(self.hits, key=key, reverse=True):
            if all(
                math.hypot(h.x_um - k.x_um, h.y_um - k.y_um) >= p.merge_within_um
                for k in kept
            ):
                kept.append(h)
        return kept[: p.max_targets]

    def _zoom(self, result: FrameResult) -> list[Action]:
        p = self.params
        self.targets = self.ranked()
        stamp = {
            "source": self.name,
            "frame_index": result.frame.frame_index,
            "t_frame": result.frame.t_frame,
        }
        assert self.scan_position is not None
        if not self.targets:
            return [
                RemovePosition(
                    position=self.scan_position, reason="scan done", **stamp
                ),
                Stop(reason="the scan found no target", **stamp),
            ]
        n = len(self.hits)
        out: list[Action] = [
            RemovePosition(
                position=self.scan_position,
                reason=f"scan done: {n} hit(s), {len(self.targets)} target(s)",
                **stamp,
            ),
            SetObjective(
                objective=p.objective, reason="zoom on the scan's targets", **stamp
            ),
        ]
        for k, h in enumerate(self.targets, 1):
            out.append(
                AddPosition(
                    x_um=h.x_um,
                    y_um=h.y_um,
                    z_um=h.z_um,
                    name=f"{p.name_prefix}{k}",
                    reason=f"target {k} of {len(self.targets)}: "
                    f"{h.signal_adu:.0f} ADU, {h.area_um2:.0f} µm² "
                    f"(scan frame {h.frame_index})",
                    **stamp,
                )
            )
        return out

    # ------------------------------------------------------------ the zoom

    def _target_names(self) -> set[str]:
        return {
            f"{self.params.name_prefix}{k}" for k in range(1, len(self.targets) + 1)
        }

    def _recenter(self, result: FrameResult, run: RunView) -> Sequence[Action]:
        p, f = self.params, result.frame
        if p.channel is not None and f.channel != p.channel:
            return ()
        best, best_d = None, p.recenter_radius_um
        for o in result.objects:
            d = math.hypot(o.x_um - f.stage_x_um, o.y_um - f.stage_y_um)
            if d <= best_d:
                best, best_d = o, d
        if best is None:
            return ()
        half = min(run.fov_um) / 2
        if best_d <= p.dead_band_fraction * half:
            return ()
        return (
            MoveStage(
                x_um=best.x_um,
                y_um=best.y_um,
                position=f.position,
                reason=f"re-centre the target ({best_d:.1f} µm off centre)",
                source=self.name,
                frame_index=f.frame_index,
                t_frame=f.t_frame,
            ),
        )
