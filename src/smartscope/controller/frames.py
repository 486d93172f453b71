"""A frame from the MDA runner as the analysis and the reactions see it."""

from __future__ import annotations

from typing import Any

import numpy as np
import useq

from smartscope.analysis.result import FrameInput

__all__ = ["BLOCK_END_KEY", "frame_input"]

#: event-metadata key of the last event of a block (one position, one time point)
BLOCK_END_KEY = "smartscope_block_end"


def frame_input(
    img: np.ndarray,
    event: useq.MDAEvent,
    meta: dict[str, Any],
    *,
    index: int,
    t_frame: float,
    t_s: float,
    laser_mw: float,
    image_at: dict[str, Any] | None = None,
    objective: str | None = None,
    offset_um: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> FrameInput:
    """``img : (Y, X) uint16`` with where and how it was taken: the stage and
    focus the engine read back (``meta["position"]``, else the event's), the
    exposure, pixel size, channel and event index; ``t_frame`` wall-clock
    (perf_counter s), ``t_s`` the sample clock, ``laser_mw`` the light source's
    power during the exposure. ``offset_um``: the objective's offsets from
    the reference objective; the frame's coordinates are sample coordinates
    (stage + x, y offset; focus - z offset)."""
    pos = meta.get("position") or {}
    return FrameInput(
        image=img,
        frame_index=index,
        position=event.pos_name or f"p{event.index.get('p', 0)}",
        stage_x_um=float(pos.get("x", event.x_pos or 0.0)) + offset_um[0],
        stage_y_um=float(pos.get("y", event.y_pos or 0.0)) + offset_um[1],
        z_um=float(pos.get("z", event.z_pos or 0.0)) - offset_um[2],
        pixel_size_um=float(meta.get("pixel_size_um") or 1.0),
        exposure_ms=float(meta.get("exposure_ms", event.exposure or 0.0)),
        t_frame=t_frame,
        t_s=t_s,
        channel=event.channel.config if event.channel else "",
        event_index=dict(event.index),
        laser_mw=laser_mw,
        image_at=image_at,
        objective=objective,
        last_in_block=bool(event.metadata.get(BLOCK_END_KEY)),
    )
