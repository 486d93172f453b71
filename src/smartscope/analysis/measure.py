"""Per-object measurements of a labelled frame, in stage coordinates and µm².

Sits between segmentation and tracking: labels + the raw frame in, one row
per object out, as a table of columns (numpy arrays) that the tracker and the
run-folder writer use without building Python objects per row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from smartscope.analysis.result import FrameInput

__all__ = [
    "ObjectStats",
    "ObjectTable",
    "measure_objects",
    "object_stats",
    "object_table",
]


@dataclass(frozen=True)
class ObjectTable:
    """Measurements of the N objects of one frame, one array per column.

    Attributes
    ----------
    label : (N,) int32
        Label value in the label image.
    row, col : (N,) float64
        Centroid in pixel coordinates of the frame.
    x_um, y_um : (N,) float64
        Centroid in stage coordinates, µm (the XY stage position that would
        centre the object in the field of view).
    area_um2 : (N,) float64
        Area at the sample, µm².
    mean_intensity, max_intensity : (N,) float64
        Mean and maximum of the intensity image over the object (ADU for a
        raw frame; background not subtracted).
    eccentricity : (N,) float64
        Of the ellipse with the same second moments (0 for a circle).
    """

    label: np.ndarray
    row: np.ndarray
    col: np.ndarray
    x_um: np.ndarray
    y_um: np.ndarray
    area_um2: np.ndarray
    mean_intensity: np.ndarray
    max_intensity: np.ndarray
    eccentricity: np.ndarray

    def __len__(self) -> int:
        return int(self.label.size)

    @classmethod
    def empty(cls) -> ObjectTable:
        """A table with no objects."""
        f = np.empty(0, np.float64)
        return cls(np.empty(0, np.int32), f, f, f, f, f, f, f, f)


@dataclass(frozen=True)
class ObjectStats:
    """What :func:`object_table` needs of the N objects of a frame, in
    pixels: the sums over each object's pixels, reduced. The host computes
    them from the labels (:func:`object_stats`), a device path from its own
    copy of the labels (:mod:`smartscope.analysis.measure_device`); the
    table is then made the same way from either.

    Attributes
    ----------
    label : (N,) int32
    n_px : (N,) float64
        Pixels of each object.
    row, col : (N,) float64
        Centroid, pixels.
    m_rr, m_cc, m_rc : (N,) float64
        Second central moments, pixels².
    mean_intensity, max_intensity : (N,) float64
    """

    label: np.ndarray
    n_px: np.ndarray
    row: np.ndarray
    col: np.ndarray
    m_rr: np.ndarray
    m_cc: np.ndarray
    m_rc: np.ndarray
    mean_intensity: np.ndarray
    max_intensity: np.ndarray


def measure_objects(
    labels: np.ndarray, image: np.ndarray, frame: FrameInput
) -> ObjectTable:
    """Measure every labelled object of a frame.

    The same numbers as ``skimage.measure.regionprops_table`` (label,
    centroid, area, intensity_mean, intensity_max, eccentricity), computed in
    one pass over the foreground pixels with sorted reductions instead of one
    Python object per region (about ten times faster for ~50 nuclei).

    Parameters
    ----------
    labels : (Y, X) integer ndarray
        Instance labels, 0 = background.
    image : (Y, X) ndarray
        Intensity image measured under the labels (the raw frame).
    frame : FrameInput
        Gives the pixel size and the pixel → stage mapping
        (:meth:`FrameInput.pixel_to_stage`).

    Returns
    -------
    ObjectTable
        One row per label present, in increasing label order.
    """
    return object_table(object_stats(labels, image), frame)


def object_stats(labels: np.ndarray, image: np.ndarray) -> ObjectStats | None:
    """The per-object sums of :func:`measure_objects`, on the host; None
    without objects."""
    if labels.shape != image.shape:
        raise ValueError(
            f"labels {labels.shape} and image {image.shape} must have the same shape"
        )
    flat = labels.ravel()
    # nonzero of a bool mask: 8x faster than of the int labels themselves
    # (2048²: 1.1 against 8.7 ms, numpy 2.4)
    fg = np.flatnonzero(flat != 0)
    if fg.size == 0:
        return None
    lab = flat[fg]
    order = np.argsort(lab, kind="stable")
    fg, lab = fg[order], lab[order]
    # first index of each label's run of pixels
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
    w = labels.shape[1]
    r = (fg // w).astype(np.float64)
    c = (fg % w).astype(np.float64)
    values = image.ravel()[fg].astype(np.float64)
    counts = np.diff(np.r_[starts, lab.size])
    n_px = counts.astype(np.float64)
    row = np.add.reduceat(r, starts) / n_px
    col = np.add.reduceat(c, starts) / n_px
    # second central moments (the ellipse with the same moments)
    dr = r - np.repeat(row, counts)
    dc = c - np.repeat(col, counts)
    return ObjectStats(
        label=lab[starts].astype(np.int32, copy=False),
        n_px=n_px,
        row=row,
        col=col,
        m_rr=np.add.reduceat(dr * dr, starts) / n_px,
        m_cc=np.add.reduceat(dc * dc, starts) / n_px,
        m_rc=np.add.reduceat(dr * dc, starts) / n_px,
        mean_intensity=np.add.reduceat(values, starts) / n_px,
        max_intensity=np.maximum.reduceat(values, starts),
    )


def object_table(stats: ObjectStats | None, frame: FrameInput) -> ObjectTable:
    """The measurements of a frame's objects from their sums (None: no
    objects): area, eccentricity and stage coordinates."""
    if stats is None or stats.label.size == 0:
        return ObjectTable.empty()
    m_rr, m_cc, m_rc = stats.m_rr, stats.m_cc, stats.m_rc
    half_trace = (m_rr + m_cc) / 2
    root = np.sqrt(((m_rr - m_cc) / 2) ** 2 + m_rc * m_rc)
    l1, l2 = half_trace + root, half_trace - root
    with np.errstate(divide="ignore", invalid="ignore"):
        ecc = np.where(l1 > 0, np.sqrt(np.clip(1.0 - l2 / l1, 0.0, 1.0)), 0.0)
    # pixel_to_stage is linear in (row, col), so it maps whole columns at once
    x_um, y_um = frame.pixel_to_stage(stats.row, stats.col)  # type: ignore[arg-type]
    return ObjectTable(
        label=stats.label,
        row=stats.row,
        col=stats.col,
        x_um=np.asarray(x_um, np.float64),
        y_um=np.asarray(y_um, np.float64),
        area_um2=stats.n_px * (frame.pixel_size_um * frame.pixel_size_um),
        mean_intensity=stats.mean_intensity,
        max_intensity=stats.max_intensity,
        eccentricity=ecc,
    )
