"""Simulator frames described the way the controller describes them, and
the field's reference for what is measured in them."""

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


def assert_regionprops(table, labels, image, pixel_size_um: float, **tol) -> None:
    """Every column of ``table`` (an ``ObjectTable``) as scikit-image's
    ``regionprops_table`` measures ``labels`` over ``image``; ``tol``:
    ``rtol`` for the centroids and areas (numpy's default otherwise)."""
    import numpy as np
    from skimage.measure import regionprops_table

    ref = regionprops_table(
        labels,
        intensity_image=image,
        properties=(
            "label",
            "centroid",
            "area",
            "intensity_mean",
            "intensity_max",
            "eccentricity",
        ),
    )
    np.testing.assert_array_equal(table.label, ref["label"])
    np.testing.assert_allclose(table.row, ref["centroid-0"], **tol)
    np.testing.assert_allclose(table.col, ref["centroid-1"], **tol)
    np.testing.assert_allclose(table.area_um2, ref["area"] * pixel_size_um**2, **tol)
    np.testing.assert_allclose(table.mean_intensity, ref["intensity_mean"])
    np.testing.assert_allclose(table.max_intensity, ref["intensity_max"])
    np.testing.assert_allclose(table.eccentricity, ref["eccentricity"], atol=1e-9)
