"""Image formation: from nuclei in stage coordinates to photons on camera pixels.

Pure functions on numpy arrays. The optical model is a Gaussian approximation:
the in-focus PSF has sigma = 0.21 λ / NA, and defocus adds a geometric blur
whose radius is |dz| · tan(asin(NA / n)), taken as a Gaussian of sigma
radius / 2. The two add in quadrature and are applied to the whole field
(focus is evaluated at the field centre; tilt across one field is below a
micrometre at the default tilt).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["View", "blur_sigma_px", "render_nuclei"]


@dataclass(frozen=True)
class View:
    """Which part of the sample lands on which pixels.

    Attributes
    ----------
    center_x_um, center_y_um : float
        The sample point at the centre of the full sensor, in the scene's
        stage coordinates: the stage position plus the objective's offset
        (zero for the reference objective).
    pixel_um : float
        Size of one (binned) image pixel in the sample, µm.
    full_w, full_h : int
        Size of the full binned sensor, pixels.
    roi : tuple[int, int, int, int]
        ``(x, y, width, height)`` of the read-out region, binned pixels.

    Image column increases with sample x and row with sample y: moving the
    stage by +dx µm shifts the image content by -dx / pixel_um columns.
    """

    center_x_um: float
    center_y_um: float
    pixel_um: float
    full_w: int
    full_h: int
    roi: tuple[int, int, int, int]

    def pixel_to_stage(self, row: float, col: float) -> tuple[float, float]:
        """Stage coordinates (x, y) in µm of ROI pixel (row, col)."""
        x0, y0, _, _ = self.roi
        x = self.center_x_um + (x0 + col + 0.5 - self.full_w / 2) * self.pixel_um
        y = self.center_y_um + (y0 + row + 0.5 - self.full_h / 2) * self.pixel_um
        return x, y

    def bounds_um(self, margin_um: float = 0.0) -> tuple[float, float, float, float]:
        """(x0, x1, y0, y1) of the ROI in stage µm, grown by ``margin_um``."""
        _x0, _y0, w, h = self.roi
        left, top = self.pixel_to_stage(-0.5, -0.5)
        return (
            left - margin_um,
            left + w * self.pixel_um + margin_um,
            top - margin_um,
            top + h * self.pixel_um + margin_um,
        )


def blur_sigma_px(
    *,
    emission_nm: float,
    na: float,
    defocus_um: float,
    pixel_um: float,
    immersion_n: float = 1.0,
) -> float:
    """Gaussian sigma (pixels) of in-focus PSF plus defocus blur."""
    psf_um = 0.21 * emission_nm / 1000.0 / na
    half_angle = np.arcsin(min(na / immersion_n, 0.999))
    defocus_um_sigma = abs(defocus_um) * np.tan(half_angle) / 2.0
    return float(np.hypot(psf_um, defocus_um_sigma) / pixel_um)


def render_nuclei(
    view: View,
    *,
    x_um: np.ndarray,
    y_um: np.ndarray,
    a_um: np.ndarray,
    b_um: np.ndarray,
    theta: np.ndarray,
    brightness: np.ndarray,
    ids: np.ndarray,
    phase1: np.ndarray,
    phase2: np.ndarray,
    texture: float,
    texture_period_um: float = 2.5,
    out: np.ndarray | None = None,
    labels: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw nuclei as textured, anti-aliased ellipses.

    Returns
    -------
    density : (H, W) float32
        Fluorophore brightness per pixel (relative units, before blur).
    labels : (H, W) int32
        Cell id where the pixel lies inside a nucleus (nearest nucleus wins
        where they overlap), 0 elsewhere.
    """
    _, _, w, h = view.roi
    if out is None:
        out = np.zeros((h, w), np.float32)
    else:
        out.fill(0)
    if labels is None:
        labels = np.zeros((h, w), np.int32)
    else:
        labels.fill(0)
    drawn = np.zeros(ids.size, bool)
    if ids.size == 0:
        return out, labels, drawn
    best = np.full((h, w), np.inf, np.float32)
    px = view.pixel_um
    # cell centres in ROI pixel coordinates (col, row)
    left, top = view.pixel_to_stage(0, 0)
    cols = (x_um - left) / px
    rows = (y_um - top) / px
    k = 2 * np.pi * px / texture_period_um
    for i in range(ids.size):
        a, b = a_um[i] / px, b_um[i] / px
        ext = max(a, b) + 1.5
        c0, c1 = int(np.floor(cols[i] - ext)), int(np.ceil(cols[i] + ext)) + 1
        r0, r1 = int(np.floor(rows[i] - ext)), int(np.ceil(rows[i] + ext)) + 1
        c0, r0 = max(c0, 0), max(r0, 0)
        c1, r1 = min(c1, w), min(r1, h)
        if c0 >= c1 or r0 >= r1:
            continue
        dy = (np.arange(r0, r1, dtype=np.float32) - rows[i])[:, None]
        dx = (np.arange(c0, c1, dtype=np.float32) - cols[i])[None, :]
        ct, st = np.float32(np.cos(theta[i])), np.float32(np.sin(theta[i]))
        u = dx * ct + dy * st
        v = -dx * st + dy * ct
        rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        edge = np.clip((1.0 - rho) * min(a, b) + 0.5, 0.0, 1.0)
        tex = 1.0 + texture * np.sin(k * u + phase1[i]) * np.sin(k * v + phase2[i])
        val = brightness[i] * edge * (1.0 - 0.3 * np.minimum(rho, 1.0) ** 2) * tex
        out[r0:r1, c0:c1] += val
        inside = rho < 1.0
        sub_best = best[r0:r1, c0:c1]
        win = inside & (rho < sub_best)
        sub_best[win] = rho[win]
        labels[r0:r1, c0:c1][win] = ids[i]
        drawn[i] = bool(win.any())
    return out, labels, drawn


def blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur: (Y, X) float32 in, (Y, X) float32 out.

    Small sigmas use a direct separable convolution; large ones (far out of
    focus) multiply in Fourier space, whose cost does not grow with sigma. The
    caller renders a margin of 3 sigma around the image, so the FFT's
    wrap-around only touches pixels that are cropped away.
    """
    if sigma_px < 0.3:
        return image
    if sigma_px > 8.0:
        from scipy import fft

        spec = fft.rfft2(image, workers=-1)
        spec = ndimage.fourier_gaussian(spec, sigma_px, n=image.shape[1])
        return fft.irfft2(spec, s=image.shape, workers=-1).astype(
            np.float32, copy=False
        )
    return ndimage.gaussian_filter(image, sigma_px, truncate=3.0, mode="nearest")
