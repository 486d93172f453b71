"""Seeded data augmentation for training (numpy/scipy only).

Every function takes a ``numpy.random.Generator`` so a training run is
reproducible from its seed. Geometric transforms apply the same warp to an
image and its label mask (linear interpolation for the image, nearest for
labels); photometric ones touch the image only.

- :func:`rot90_flip`: one of the 8 symmetries of the square (exact, so it is
  safe on noisy images whose noise must stay pixel-independent).
- :func:`warp`: zoom, rotation, flip, shear and a smooth elastic displacement
  in one resampling.
- :func:`add_poisson_gaussian`: shot noise at a given photon count plus
  Gaussian read noise.
- :func:`background`: constant, linear gradient and low-frequency haze.
- :func:`quantize`: 8-, 12- or 16-bit storage, with saturation.
- :func:`packed_nuclei`: a crop of nuclei pressed against each other (flat
  contact lines, optional dim seam), drawn from scratch with its labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "add_poisson_gaussian",
    "background",
    "packed_nuclei",
    "quantize",
    "rot90_flip",
    "smooth_field",
    "warp",
]


def rot90_flip(
    arrays: Sequence[np.ndarray], rng: np.random.Generator
) -> list[np.ndarray]:
    """Apply the same random rotation by k·90° and optional flip to each (Y, X) array."""
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    out = []
    for a in arrays:
        a = np.rot90(a, k, axes=(-2, -1))
        if flip:
            a = a[..., ::-1]
        out.append(np.ascontiguousarray(a))
    return out


def smooth_field(
    shape: tuple[int, int], rng: np.random.Generator, *, scale_px: float
) -> np.ndarray:
    """Zero-mean, unit-SD random field smooth on ``scale_px`` pixels, (Y, X) float32."""
    # draw on a coarse grid and zoom up: far cheaper than a wide Gaussian filter
    step = max(1.0, scale_px / 2)
    gh, gw = int(np.ceil(shape[0] / step)) + 3, int(np.ceil(shape[1] / step)) + 3
    coarse = ndi.gaussian_filter(rng.standard_normal((gh, gw)).astype(np.float32), 1.0)
    fine = ndi.zoom(
        coarse, (shape[0] / (gh - 3) * 1.0, shape[1] / (gw - 3) * 1.0), order=1
    )
    fine = fine[: shape[0], : shape[1]]
    if fine.shape != shape:
        fine = np.pad(
            fine,
            [(0, shape[0] - fine.shape[0]), (0, shape[1] - fine.shape[1])],
            mode="edge",
        )
    sd = float(fine.std())
    return ((fine - fine.mean()) / (sd if sd > 0 else 1.0)).astype(np.float32)


def warp(
    image: np.ndarray,
    labels: np.ndarray | None,
    rng: np.random.Generator,
    *,
    out_shape: tuple[int, int],
    zoom: float = 1.0,
    rotate: bool = True,
    shear: float = 0.1,
    elastic_px: float = 2.0,
    elastic_scale_px: float = 12.0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Resample a random region of ``image`` (and ``labels``) to ``out_shape``.

    Parameters
    ----------
    image : (Y, X) float32
    labels : (Y, X) int labels or None
    zoom : output pixels per input pixel (> 1 enlarges objects)
    rotate : rotate by a random angle and flip at random
    shear : largest shear factor (uniform in [-shear, shear])
    elastic_px : amplitude (SD, output pixels) of the smooth displacement
    elastic_scale_px : smoothness of the displacement field, output pixels

    Returns
    -------
    image : out_shape float32, labels : out_shape int32 (or None)
    """
    h, w = out_shape
    ang = rng.uniform(0, 2 * np.pi) if rotate else 0.0
    c, s = np.cos(ang), np.sin(ang)
    sh = rng.uniform(-shear, shear) if shear > 0 else 0.0
    flip = -1.0 if (rotate and rng.integers(2)) else 1.0
    # output offset from the centre → input offset: (R · Shear · Flip) / zoom
    m = np.array([[c, -s], [s, c]]) @ np.array([[1.0, sh], [0.0, 1.0]])
    m = m @ np.diag([1.0, flip]) / zoom
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy -= (h - 1) / 2
    xx -= (w - 1) / 2
    if elastic_px > 0:
        yy += smooth_field(out_shape, rng, scale_px=elastic_scale_px) * elastic_px
        xx += smooth_field(out_shape, rng, scale_px=elastic_scale_px) * elastic_px
    src_y = m[0, 0] * yy + m[0, 1] * xx
    src_x = m[1, 0] * yy + m[1, 1] * xx
    # pick a centre so the whole region stays inside the source where possible
    ext_y = (src_y.max() - src_y.min()) / 2
    ext_x = (src_x.max() - src_x.min()) / 2
    H, W = image.shape
    cy = rng.uniform(min(ext_y, H / 2), max(H - 1 - ext_y, H / 2))
    cx = rng.uniform(min(ext_x, W / 2), max(W - 1 - ext_x, W / 2))
    coords = np.stack([src_y + cy, src_x + cx])
    # outside the source: nearest edge value for the image, background for labels
    # (a mirrored nucleus would carry the same label twice)
    img = ndi.map_coordinates(image, coords, order=1, mode="nearest").astype(np.float32)
    lab = None
    if labels is not None:
        lab = ndi.map_coordinates(labels, coords, order=0, mode="constant", cval=0)
        lab = lab.astype(np.int32)
    return img, lab


def add_poisson_gaussian(
    clean: np.ndarray,
    rng: np.random.Generator,
    *,
    photons_per_unit: float,
    read_sd_photons: float,
) -> np.ndarray:
    """Shot and read noise: ``(Poisson(clean · k) + N(0, σ²)) / k``, float32.

    ``clean`` must be ≥ 0; the result is in the units of ``clean``.
    """
    k = float(photons_per_unit)
    lam = np.clip(clean, 0, None).astype(np.float64) * k
    noisy = rng.poisson(lam).astype(np.float32)
    if read_sd_photons > 0:
        noisy += rng.normal(0.0, read_sd_photons, clean.shape).astype(np.float32)
    noisy /= np.float32(k)
    return noisy


def background(
    shape: tuple[int, int],
    rng: np.random.Generator,
    *,
    level: float,
    gradient: float,
    haze: float,
    haze_scale_px: float = 64.0,
) -> np.ndarray:
    """Additive background: ``level`` + a linear ramp of peak-to-peak ``gradient``
    in a random direction + low-frequency haze of SD ``haze``; (Y, X) float32, ≥ 0."""
    h, w = shape
    ang = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = np.cos(ang) * yy / max(h, 1) + np.sin(ang) * xx / max(w, 1)
    ramp -= ramp.min()
    ramp /= max(float(ramp.max()), 1e-6)
    bg = level + gradient * ramp
    if haze > 0:
        bg = bg + haze * smooth_field(shape, rng, scale_px=haze_scale_px)
    return np.clip(bg, 0, None).astype(np.float32)


def quantize(
    image: np.ndarray, rng: np.random.Generator, *, bits: int, headroom: float = 1.0
) -> np.ndarray:
    """Store ``image`` as a ``bits``-bit camera would: scale its maximum to
    ``headroom`` × full range (values above clip, i.e. saturate), round.

    Returns float32 holding integer values in [0, 2**bits - 1].
    """
    top = float(2**bits - 1)
    peak = float(np.percentile(image, 99.9))
    lo = float(image.min())
    scale = top * headroom / max(peak - lo, 1e-6)
    out = np.clip(np.round((image - lo) * scale), 0, top)
    return out.astype(np.float32)


def packed_nuclei(
    shape: tuple[int, int],
    rng: np.random.Generator,
    *,
    diameter_px: float,
    spacing: tuple[float, float] = (0.6, 1.0),
    keep: tuple[float, float] = (0.5, 1.0),
    elongation_sd: float = 0.3,
    seam: tuple[float, float] = (0.0, 0.5),
) -> tuple[np.ndarray, np.ndarray]:
    """Nuclei pressed against each other, as in dense cultures and tissue.

    Ellipses whose centres are closer than their diameters overlap; every
    pixel goes to the ellipse in whose normalised radius it lies deepest, so
    neighbours meet along a flat contact line without the waist two
    overlapping ellipses would show. Each nucleus gets its own brightness and
    a slightly domed profile; a seam (a dimmer line one pixel wide along
    contacts, depth drawn from ``seam``) is what often separates real pressed
    nuclei, and sometimes nothing does.

    Parameters
    ----------
    shape : (Y, X) of the crop
    diameter_px : mean nucleus diameter
    spacing : centre-to-centre distance, as a fraction of the diameter (drawn)
    keep : fraction of the candidate nuclei kept (drawn): fewer leave gaps
        and isolated nuclei between the packed ones
    elongation_sd : log-normal spread of the axis ratio
    seam : depth range of the dim line along contacts (0 = none)

    Returns
    -------
    image : (Y, X) float32 noise-free signal, about 0-1
    labels : (Y, X) int32, 0 = background
    """
    h, w = shape
    d = float(diameter_px)
    gap = d * rng.uniform(*spacing)
    # centres by dart throwing at the drawn spacing, then thinned
    n_try = int(4 * (h + d) * (w + d) / gap**2) + 8
    cand = rng.uniform([-d / 2, -d / 2], [h + d / 2, w + d / 2], size=(n_try, 2))
    centres: list[np.ndarray] = []
    for c in cand:
        if all(np.hypot(*(c - o)) >= gap for o in centres):
            centres.append(c)
    kept = [c for c in centres if rng.random() < rng.uniform(*keep)] or centres[:1]
    depth = np.full(shape, np.inf, np.float32)
    labels = np.zeros(shape, np.int32)
    profile = np.zeros(shape, np.float32)
    for k, (cy, cx) in enumerate(kept, start=1):
        size = d / 2 * float(np.exp(rng.normal(0, 0.15)))
        ratio = float(np.exp(abs(rng.normal(0, elongation_sd))))
        a, b = size * np.sqrt(ratio), size / np.sqrt(ratio)
        th = rng.uniform(0, np.pi)
        r = int(np.ceil(a)) + 1
        y0, y1 = max(0, int(cy) - r), min(h, int(cy) + r + 1)
        x0, x1 = max(0, int(cx) - r), min(w, int(cx) + r + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        dy, dx = yy - cy, xx - cx
        u = (dx * np.cos(th) + dy * np.sin(th)) / a
        v = (-dx * np.sin(th) + dy * np.cos(th)) / b
        rho = np.sqrt(u * u + v * v).astype(np.float32)
        win = (rho < 1.0) & (rho < depth[y0:y1, x0:x1])
        depth[y0:y1, x0:x1][win] = rho[win]
        labels[y0:y1, x0:x1][win] = k
        profile[y0:y1, x0:x1][win] = (1.0 - 0.3 * rho[win] ** 2) * float(
            np.exp(rng.normal(0, 0.25))
        )
    # relabel 1..n (nuclei outside the crop left gaps in the numbering)
    ids = np.unique(labels)
    lut = np.zeros(int(ids.max()) + 1, np.int32)
    lut[ids] = np.arange(len(ids), dtype=np.int32)
    labels = lut[labels]
    s = rng.uniform(*seam)
    if s > 0 and labels.max() > 1:
        # pixels with another nucleus (not background) among their 8 neighbours
        big = np.int32(labels.max() + 1)
        higher = ndi.maximum_filter(labels, size=3) > labels
        lower = ndi.minimum_filter(np.where(labels > 0, labels, big), size=3) < labels
        profile[(labels > 0) & (higher | lower)] *= np.float32(1.0 - s)
    return profile, labels
