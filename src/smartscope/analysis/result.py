"""What goes into the analysis pipeline and what comes out of it.

``FrameInput`` is one acquired frame as the controller hands it over;
``FrameResult`` is what reactions see. Both are plain frozen dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ALL_IMAGES", "FrameInput", "FrameResult", "ObjectMeasurement"]

#: the images a :class:`FrameResult` can carry (``labels``, ``denoised``)
ALL_IMAGES = frozenset({"labels", "denoised"})


@dataclass(frozen=True)
class FrameInput:
    """One acquired frame and where/when it was taken.

    Attributes
    ----------
    image : (Y, X) uint16 ndarray
        The raw frame (the pipeline must not modify it).
    frame_index : int
        Running index of the frame in the run (0, 1, 2 ...).
    position : str
        Name (or "p<index>") of the stage position; tracks are per position.
    stage_x_um, stage_y_um : float
        XY stage position when the frame was taken: the image centre in stage µm.
    z_um : float
        Focus position.
    pixel_size_um : float
        Image pixel size at the sample, µm.
    exposure_ms : float
    t_frame : float
        Wall-clock time (``time.perf_counter()``, s) when the frame was
        received (in a run: just after ``core.getImage()``, before the frame
        is written).
    t_s : float
        Sample time of the frame (s since the run started; virtual in virtual mode).
    channel : str
    event_index : dict
        The useq event index (e.g. {"t": 3, "p": 0, "c": 0}).
    laser_mw : float
        Laser power during the exposure, mW.
    image_at : dict or None
        Where the frame is stored in ``data.ome.zarr``: ``series``, ``t``,
        ``c``, ``z`` (None: not stored, e.g. outside a run).
    objective : str or None
        The objective preset in use (None: not known).
    last_in_block : bool
        The last frame of its position's block at its time point (every
        channel, grid tile and plane of the position is then acquired).

    Stage coordinates are sample coordinates as the protocol's reference
    objective sees them (``devices.objective_offsets``): the same sample point
    has the same coordinates whichever objective took the frame.
    """

    image: np.ndarray
    frame_index: int
    position: str
    stage_x_um: float
    stage_y_um: float
    z_um: float
    pixel_size_um: float
    exposure_ms: float
    t_frame: float
    t_s: float
    channel: str = ""
    event_index: dict[str, int] = field(default_factory=dict)
    laser_mw: float = 0.0
    image_at: dict[str, Any] | None = None
    objective: str | None = None
    last_in_block: bool = False

    def pixel_to_stage(self, row: float, col: float) -> tuple[float, float]:
        """Stage coordinates (x_um, y_um) of image pixel (row, col).

        Convention of the simulator and of a camera aligned with the stage:
        column increases with stage x, row with stage y, and the image centre
        is at the stage position.
        """
        h, w = self.image.shape[:2]
        return (
            self.stage_x_um + (col + 0.5 - w / 2) * self.pixel_size_um,
            self.stage_y_um + (row + 0.5 - h / 2) * self.pixel_size_um,
        )


@dataclass(frozen=True)
class ObjectMeasurement:
    """One segmented object in one frame.

    ``x_um``/``y_um`` are stage coordinates of the centroid (the XY stage
    position that would centre the object in the field of view).
    """

    label: int
    track_id: int
    x_um: float
    y_um: float
    row: float
    col: float
    area_um2: float
    mean_intensity: float
    max_intensity: float = 0.0
    eccentricity: float = 0.0


@dataclass(frozen=True)
class FrameResult:
    """The analysis of one frame: what reactions get.

    Attributes
    ----------
    frame : FrameInput
        The frame analysed (with its image).
    objects : tuple[ObjectMeasurement, ...]
        Segmented objects with their track ids.
    labels : (Y, X) int32 ndarray or None
        Instance labels (0 = background); None where the analysis failed or
        does not keep them (``FrameAnalyser.images_kept``: a run keeps what
        it saves and what its reactions read, ``Reaction.reads_images``).
    denoised : (Y, X) float32 ndarray or None
        Denoised image, in the raw image's intensity units, if denoising is
        on and the analysis keeps it (as ``labels``).
    background : float
        Estimated background level (ADU) of the raw frame.
    t_result : float
        Wall-clock time (``time.perf_counter()``) when the result was ready.
    error : str or None
        If analysis failed, what went wrong (objects are then empty).
    """

    frame: FrameInput
    objects: tuple[ObjectMeasurement, ...]
    labels: np.ndarray | None
    denoised: np.ndarray | None
    background: float
    t_result: float
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def frame_index(self) -> int:
        return self.frame.frame_index

    @property
    def latency_ms(self) -> float:
        """Frame received → result ready, ms."""
        return (self.t_result - self.frame.t_frame) * 1000.0

    def track(self, track_id: int) -> ObjectMeasurement | None:
        """The object of this track in this frame, if present."""
        for o in self.objects:
            if o.track_id == track_id:
                return o
        return None
