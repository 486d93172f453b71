"""From label images to training targets and from network maps back to labels.

Numpy/scipy/scikit-image only. The segmentation network predicts two maps per
pixel: the probability that it lies in a nucleus (foreground) and its
distance to the nucleus border normalised by the largest such distance in
its own nucleus (1 at the centre, falling to 0 at the border). The
normalised distance dips to 0 where two nuclei touch, so thresholding it
gives one seed per nucleus whatever the nucleus size, and a watershed on it
grows the seeds back to the foreground.

:func:`otsu_watershed` is the classical baseline the models are compared to.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "distance_targets",
    "labels_from_maps",
    "otsu_watershed",
    "relabel_sequential",
]


def distance_targets(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Foreground and normalised border-distance targets of an instance image.

    Parameters
    ----------
    labels : (Y, X) integer instance labels, 0 = background

    Returns
    -------
    foreground : (Y, X) float32 in {0, 1}
    distance : (Y, X) float32 in [0, 1], 0 outside nuclei
    """
    from skimage.segmentation import find_boundaries

    labels = np.asarray(labels)
    fg = labels > 0
    # distance to the nearest pixel that is background or another nucleus
    inner = fg & ~find_boundaries(labels, mode="inner")
    dist = ndi.distance_transform_edt(inner).astype(np.float32)
    dist[fg] += 1.0  # border pixels of a nucleus are at distance 1, not 0
    n = int(labels.max())
    if n:
        peak = np.zeros(n + 1, np.float32)
        np.maximum.at(peak, labels.ravel(), dist.ravel())
        peak[peak <= 0] = 1.0
        dist = dist / peak[labels]
    return fg.astype(np.float32), dist.astype(np.float32)


def estimate_diameter_px(mask: np.ndarray, *, min_area_px: int = 12) -> float | None:
    """Typical nucleus diameter from a foreground mask, pixels (None if no objects).

    Twice the area-weighted median, over connected components, of the largest
    inscribed radius (distance-transform maximum): touching nuclei merged into
    one component still give one nucleus's radius, not the cluster's, and
    weighting by area keeps specks of debris from outvoting the nuclei (a
    plain median over components gave 9 px on real 8-bit images of 110 px
    nuclei crowded with specks, which were then enlarged instead of shrunk).
    """
    # half resolution: four times cheaper, and exact enough to choose a scale
    step = 2 if min(mask.shape) >= 128 else 1
    mask = mask[::step, ::step]
    comp, n = ndi.label(mask)
    if n == 0:
        return None
    areas = np.bincount(comp.ravel()) * step * step
    dist = ndi.distance_transform_edt(mask).astype(np.float32) * step
    peak = np.zeros(n + 1, np.float32)
    np.maximum.at(peak, comp.ravel(), dist.ravel())
    keep = areas[1:] >= min_area_px
    if not keep.any():
        return None
    radius, weight = peak[1:][keep], areas[1:][keep].astype(np.float64)
    order = np.argsort(radius)
    cum = np.cumsum(weight[order])
    return float(2.0 * radius[order][np.searchsorted(cum, 0.5 * cum[-1])])


def object_diameter_px(labels: np.ndarray, *, min_area_px: int = 8) -> float | None:
    """Typical diameter of segmented objects, pixels (None if there are none).

    The area-weighted median, over objects of at least ``min_area_px``, of
    the equivalent-circle diameter: measured on instances, so touching
    nuclei count one by one, and weighted so that specks do not outvote
    the nuclei (as in :func:`estimate_diameter_px`).
    """
    areas = np.bincount(np.asarray(labels).ravel())[1:]
    areas = areas[areas >= min_area_px].astype(np.float64)
    if areas.size == 0:
        return None
    diameters = 2.0 * np.sqrt(areas / np.pi)
    order = np.argsort(diameters)
    cum = np.cumsum(areas[order])
    return float(diameters[order][np.searchsorted(cum, 0.5 * cum[-1])])


def relabel_sequential(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 1..N in increasing order of their old value, as int32.

    O(pixels) with a lookup table (``np.unique`` would sort every pixel).
    """
    labels = np.asarray(labels)
    top = int(labels.max(initial=0))
    if top <= 0:
        return np.zeros(labels.shape, np.int32)
    present = np.zeros(top + 1, bool)
    present[labels.ravel()] = True
    present[0] = False
    table = np.cumsum(present).astype(np.int32)
    table[~present] = 0
    return table[labels]


def _drop_small(
    labels: np.ndarray, min_size_px: int, border_min_size_px: int | None = None
) -> np.ndarray:
    """Remove objects under ``min_size_px`` pixels (those touching the image
    border: under ``border_min_size_px``, default the same) and number the
    rest 1..N in increasing order of their old value, as int32.

    One count and one lookup over the foreground pixels only (the removal
    and :func:`relabel_sequential` in one table: at 2048² 17 against 35 ms
    for the two passes over every pixel, and those 17 ms down to about 2
    over the foreground); the labels as they are, as int32, where that
    changes nothing.
    """
    labels = np.asarray(labels)
    flat = labels.ravel()
    fg = np.flatnonzero(flat != 0)  # (a bool mask's nonzero: 8x faster)
    values = flat[fg]
    if fg.size == 0 or values.max() <= 0:  # no objects (negative: none either)
        return np.zeros(labels.shape, np.int32)
    sizes = np.bincount(values)
    keep = sizes > 0
    if max(min_size_px, border_min_size_px or 0) > 1:
        limit = np.full(sizes.shape, min_size_px)
        if border_min_size_px is not None:
            edge = np.unique(
                np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
            )
            limit[edge] = border_min_size_px
        keep &= sizes >= limit
    keep[0] = False
    if keep[1:].all() and labels.dtype == np.int32:
        return labels  # every label 1..N present and kept
    table = np.cumsum(keep, dtype=np.int32)
    table[~keep] = 0
    out = np.zeros(labels.shape, np.int32)
    out.ravel()[fg] = table[values]
    return out


def labels_from_maps(
    foreground: np.ndarray,
    distance: np.ndarray,
    *,
    fg_threshold: float = 0.5,
    seed_threshold: float = 0.5,
    min_size_px: int = 8,
    border_min_size_px: int | None = None,
) -> np.ndarray:
    """Instance labels from the foreground probability and normalised distance.

    Parameters
    ----------
    foreground, distance : (Y, X) float32 in [0, 1]
    fg_threshold : probability above which a pixel is in a nucleus
    seed_threshold : normalised distance above which a pixel seeds a nucleus
    min_size_px : objects smaller than this (pixels) are removed
    border_min_size_px : the same for objects touching the image border
        (nuclei cut by it are small but real); None: ``min_size_px``

    Returns
    -------
    (Y, X) int32 labels, 1..N, 0 = background
    """
    from skimage.segmentation import watershed

    mask = foreground > fg_threshold
    seeds, _ = ndi.label(mask & (distance > seed_threshold))
    labels = watershed(-distance, seeds, mask=mask)
    # foreground blobs that got no seed still are objects
    orphans, n_orphans = ndi.label(mask & (labels == 0))
    if n_orphans:
        labels = np.where(orphans > 0, orphans + labels.max(), labels)
    return _drop_small(labels, min_size_px, border_min_size_px)


def otsu_watershed(
    image: np.ndarray,
    *,
    smooth_sigma_px: float = 1.0,
    min_distance_px: int = 4,
    min_size_px: int = 8,
) -> np.ndarray:
    """Classical nuclei segmentation: Gaussian smoothing, Otsu threshold,
    distance-transform watershed with peaks at least ``min_distance_px`` apart.

    Parameters
    ----------
    image : (Y, X) any real dtype

    Returns
    -------
    (Y, X) int32 labels
    """
    from skimage.feature import peak_local_max
    from skimage.filters import threshold_otsu
    from skimage.segmentation import watershed

    img = ndi.gaussian_filter(np.asarray(image, np.float32), smooth_sigma_px)
    mask = img > threshold_otsu(img)
    mask = ndi.binary_opening(mask)
    dist = ndi.distance_transform_edt(mask)
    comp, _ = ndi.label(mask)
    peaks = peak_local_max(
        dist,
        min_distance=max(1, int(min_distance_px)),
        labels=comp,
        exclude_border=False,
    )
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-dist, markers, mask=mask)
    return _drop_small(labels, min_size_px)
