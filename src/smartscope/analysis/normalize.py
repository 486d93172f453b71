"""Intensity normalisation: background level, noise and percentile scaling.

The first step of the analysis of a frame. Pure functions on numpy arrays;
estimates work on a strided subsample so they cost well under a millisecond
on a 2048 × 2048 frame.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["estimate_background", "normalize_percentile"]

# Gaussian sigma from the distance between median and lower quartile
_IQR_HALF_TO_SIGMA = 1.0 / 0.6745


def _subsample(image: np.ndarray, max_pixels: int) -> np.ndarray:
    """A strided view with at most about ``max_pixels`` pixels."""
    n = image.shape[0] * image.shape[1]
    step = max(1, int(np.sqrt(n / max_pixels)))
    return image[::step, ::step]


def estimate_background(
    image: np.ndarray,
    *,
    n_iter: int = 2,
    clip_sigma: float = 3.0,
    max_pixels: int = 16_384,
) -> tuple[float, float]:
    """Background level and noise of a fluorescence image of sparse bright objects.

    The median of the pixels and a noise sigma from the spread of their lower
    half (median minus lower quartile), which bright objects do not reach;
    then ``n_iter`` times the same on the pixels below
    ``median + clip_sigma * sigma`` only. Works while the objects cover less
    than about half of the field.

    Parameters
    ----------
    image : (Y, X) ndarray, any real dtype
        Raw or denoised frame.
    n_iter : int
        Clipping iterations.
    clip_sigma : float
        Upper clipping bound in units of the noise sigma.
    max_pixels : int
        Estimate on a strided subsample of about this many pixels.

    Returns
    -------
    background : float
        Background level, in the image's intensity units (ADU for a raw frame).
    noise_sigma : float
        Standard deviation of the background, same units (0 for a flat image).
    """
    if image.ndim != 2:
        raise ValueError(f"expected a (Y, X) image, got shape {image.shape}")
    sample = _subsample(image, max_pixels)
    if sample.dtype in (np.uint8, np.uint16) and sample.size:
        # a camera's frame: the same from one histogram (0.1 against 1.1-1.4
        # ms a frame here; the analysis does this for every frame)
        return _background_from_counts(
            np.cumsum(np.bincount(sample.ravel())), n_iter, clip_sigma
        )
    sample = sample.astype(np.float32).ravel()
    median, sigma = _median_and_sigma(sample)
    for _ in range(n_iter):
        if sigma <= 0:
            break
        sample = sample[sample < median + clip_sigma * sigma]
        median, sigma = _median_and_sigma(sample)
    return median, sigma


def _background_from_counts(
    cum: np.ndarray, n_iter: int, clip_sigma: float
) -> tuple[float, float]:
    """:func:`estimate_background` of integer pixels given their cumulative
    histogram ``cum`` (``cum[v]``: pixels of value at most ``v``). The
    pixels below a cut are the histogram's first values, so each clipping
    is a count, and each percentile numpy's (linear, between the two ranks
    around it) read off the histogram."""
    n = int(cum[-1])
    median, sigma = _median_and_sigma_counted(cum, n)
    for _ in range(n_iter):
        if sigma <= 0:
            break
        # the float32 sample's comparison: the cut rounded to float32 (an
        # integer pixel is below it up to the cut's ceiling minus one)
        cut = float(np.float32(median + clip_sigma * sigma))
        top = min(math.ceil(cut) - 1, cum.size - 1)
        # (each clipping keeps what the one before kept, as the sample did)
        n = min(n, int(cum[top]) if top >= 0 else 0)
        if n == 0:
            break
        median, sigma = _median_and_sigma_counted(cum, n)
    return median, sigma


def _median_and_sigma_counted(cum: np.ndarray, n: int) -> tuple[float, float]:
    """:func:`_median_and_sigma` of the ``n`` smallest pixels of a
    cumulative histogram."""
    out = []
    for q in (25.0, 50.0):
        pos = (n - 1) * q / 100.0
        below = int(pos)
        ranks = [below, min(below + 1, n - 1)]
        lo, hi = (float(v) for v in np.searchsorted(cum, ranks, side="right"))
        out.append(lo + (hi - lo) * (pos - below))
    q25, q50 = out
    return q50, (q50 - q25) * _IQR_HALF_TO_SIGMA


def _median_and_sigma(sample: np.ndarray) -> tuple[float, float]:
    """Median and Gaussian sigma from the lower quartile: one partial sort."""
    q25, q50 = np.percentile(sample, (25.0, 50.0))
    return float(q50), float(q50 - q25) * _IQR_HALF_TO_SIGMA


def normalize_percentile(
    image: np.ndarray,
    low: float = 1.0,
    high: float = 99.8,
    *,
    clip: bool = False,
    out: np.ndarray | None = None,
    max_pixels: int = 262_144,
) -> np.ndarray:
    """Scale an image so that its ``low`` percentile maps to 0 and ``high`` to 1.

    The percentiles are taken on a strided subsample of about ``max_pixels``
    pixels.

    Parameters
    ----------
    image : (Y, X) ndarray, any real dtype
    low, high : float
        Percentiles (0..100), ``low < high``.
    clip : bool
        Clip the result to [0, 1].
    out : (Y, X) float32 ndarray, optional
        Where to write the result (reused buffer).

    Returns
    -------
    (Y, X) float32 ndarray
        Normalised image (``out`` when given).
    """
    if not 0 <= low < high <= 100:
        raise ValueError(f"need 0 <= low < high <= 100, got low={low}, high={high}")
    lo, hi = np.percentile(_subsample(image, max_pixels), (low, high))
    scale = np.float32(1.0 / (hi - lo)) if hi > lo else np.float32(1.0)
    if out is None:
        out = np.empty(image.shape, np.float32)
    np.subtract(image, np.float32(lo), out=out, casting="unsafe")
    out *= scale
    if clip:
        np.clip(out, 0.0, 1.0, out=out)
    return out
