"""Simulator frames described the way the controller describes them."""

from __future__ import annotations

import time

from smartscope.analysis import FrameInput
from smartscope.sim import get_simulator


def snap_frame(core, index: int = 0, position: str = "p0") -> FrameInput:
    """Snap one image on ``core`` and wrap it in a :class:`FrameInput` with the
    stage, focus, pixel size, exposure and the simulator's clock at the snap."""
    core.snapImage()
    image = core.getImage()
    x, y = core.getXYPosition()
    return FrameInput(
        image=image,
        frame_index=index,
        position=position,
        stage_x_um=x,
        stage_y_um=y,
        z_um=core.getPosition(),
        pixel_size_um=core.getPixelSizeUm(),
        exposure_ms=core.getExposure(),
        t_frame=time.perf_counter(),
        t_s=get_simulator(core).truth().t_s,
    )


def frame_of(image, index: int = 0, *, pixel_size_um: float = 0.65) -> FrameInput:
    """``image`` as frame ``index`` of position ``a``, stage at the origin
    (for tests that make their own pixels)."""
    return FrameInput(
        image=image,
        frame_index=index,
        position="a",
        stage_x_um=0,
        stage_y_um=0,
        z_um=0,
        pixel_size_um=pixel_size_um,
        exposure_ms=20,
        t_frame=0.0,
        t_s=float(index),
    )
