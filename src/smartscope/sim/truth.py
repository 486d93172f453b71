"""Ground truth of the simulated sample: what each image really shows."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

__all__ = ["CellTruth", "FrameTruth", "TruthRecorder"]

CELLS_CSV_HEADER = (
    "frame",
    "t_s",
    "cell_id",
    "parent_id",
    "x_um",
    "y_um",
    "radius_um",
    "state",
    "dose",
    "target",
)


@dataclass(frozen=True)
class CellTruth:
    """One nucleus.

    ``x_um``/``y_um`` are stage coordinates: the XY stage position that puts the
    cell at the centre of the field of view of the reference (10x) objective
    (with another objective, at stage ``x_um - offset_x_um``: see
    ``smartscope.sim.turrets.ObjectiveSpec``). ``dose`` is the light fluence
    the cell has received, J/cm². ``state`` is "interphase", "mitosis" or
    "dead". ``target`` marks the scene's rare target cells (bright in the
    preset's ``target_channel``).
    """

    id: int
    x_um: float
    y_um: float
    radius_um: float
    state: str
    dose: float
    parent_id: int = 0
    target: bool = False


@dataclass(frozen=True)
class FrameTruth:
    """The truth behind one image.

    Attributes
    ----------
    expected_adu : (Y, X) float32
        Noise-free mean pixel value in ADU, offset included, before shot and
        read noise and before clipping to the bit depth.
    labels : (Y, X) int32
        Instance labels on the same pixel grid; the value is the cell ``id``,
        0 is background.
    cells : tuple[CellTruth, ...]
        The nuclei that appear in the image (at least one labelled pixel).
    t_s : float
        Sample clock at the start of the exposure, seconds.
    stage_x_um, stage_y_um : float
        XY stage position, as the core reads it.
    center_x_um, center_y_um : float
        The sample point at the image centre in the cells' coordinates: the
        stage position plus the objective's offset (``objective``).
    z_um, focus_z_um : float
        Z stage position and the Z that is in focus here with this objective
        (the scene's focal plane plus the objective's ``parfocal_z_um``).
    """

    expected_adu: np.ndarray
    labels: np.ndarray
    cells: tuple[CellTruth, ...]
    t_s: float
    frame_index: int
    stage_x_um: float
    stage_y_um: float
    center_x_um: float
    center_y_um: float
    z_um: float
    focus_z_um: float
    pixel_size_um: float
    objective: str
    exposure_ms: float
    channel: str
    laser_mw: float
    illuminated: bool
    meta: dict = field(default_factory=dict)

    @property
    def defocus_um(self) -> float:
        """Z stage position minus the focal plane, µm."""
        return self.z_um - self.focus_z_um

    def cell(self, cell_id: int) -> CellTruth:
        """The cell with this id (KeyError if it is not in the image)."""
        for c in self.cells:
            if c.id == cell_id:
                return c
        raise KeyError(f"cell {cell_id} is not in frame {self.frame_index}")


class TruthRecorder:
    """Writes one ``cells.csv`` row per cell per frame as frames are acquired.

    Rows are flushed after every frame, so a crash leaves a readable file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] | None = self.path.open("w", newline="")
        self._writer = csv.writer(self._fh)
        self._writer.writerow(CELLS_CSV_HEADER)
        self.frames = 0

    def write(self, truth: FrameTruth) -> None:
        if self._fh is None:
            return
        for c in truth.cells:
            self._writer.writerow(
                (
                    truth.frame_index,
                    f"{truth.t_s:.3f}",
                    c.id,
                    c.parent_id,
                    f"{c.x_um:.3f}",
                    f"{c.y_um:.3f}",
                    f"{c.radius_um:.3f}",
                    c.state,
                    f"{c.dose:.4f}",
                    int(c.target),
                )
            )
        self._fh.flush()
        self.frames += 1

    @property
    def closed(self) -> bool:
        return self._fh is None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> TruthRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
