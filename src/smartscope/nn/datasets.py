"""Patch samplers that turn frames into training batches (numpy only).

- :class:`PairSampler` (CARE): crops of (noisy, clean) pairs.
- :class:`N2VSampler` (Noise2Void): crops of noisy images with blind-spot
  masking: a few pixels per patch are replaced by a random neighbour, and the
  loss is taken only there against the original noisy value.
- :class:`SegmentationSampler`: crops of (image, labels) with heavy
  augmentation (zoom to a random nucleus diameter, rotation, shear, elastic
  deformation, per-nucleus brightness, texture, blur, background gradients
  and haze, Poisson/Gaussian noise at a random photon level, 8/12/16-bit
  quantisation) and targets from :func:`~smartscope.nn.instances.distance_targets`.

Every sampler draws from a ``numpy.random.Generator`` it is given, so batches
are reproducible from the training seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage as ndi

from smartscope.nn import augment
from smartscope.nn.instances import distance_targets
from smartscope.nn.normalize import normalize, percentile_range

__all__ = [
    "MixedSampler",
    "N2VSampler",
    "PairSampler",
    "SegAugment",
    "SegmentationSampler",
    "offset_free",
]


def _crop(
    shape: tuple[int, int], size: int, rng: np.random.Generator
) -> tuple[slice, slice]:
    h, w = shape
    y = int(rng.integers(0, max(1, h - size + 1)))
    x = int(rng.integers(0, max(1, w - size + 1)))
    return slice(y, y + size), slice(x, x + size)


def _pad_to(a: np.ndarray, size: int) -> np.ndarray:
    ph, pw = max(0, size - a.shape[0]), max(0, size - a.shape[1])
    if ph or pw:
        a = np.pad(a, ((0, ph), (0, pw)), mode="reflect")
    return a


class PairSampler:
    """(noisy, clean) crops for supervised restoration.

    Parameters
    ----------
    pairs : sequence of ((Y, X) noisy, (Y, X) clean) arrays in the same units
    patch_px : side of the square crops
    noise_jitter : SD of extra Gaussian noise added to the input at random,
        as a fraction of the normalised range (0 disables)
    same_units : the clean image is in the noisy image's units (simulated
        truth in ADU), so both are normalised with the noisy image's
        percentiles. False (high-dose TIFFs with another exposure): each is
        normalised with its own, and the model learns shape, not brightness.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[np.ndarray, np.ndarray]],
        *,
        patch_px: int = 96,
        noise_jitter: float = 0.0,
        normalization: tuple[float, float] = (1.0, 99.8),
        same_units: bool = True,
    ) -> None:
        if not pairs:
            raise ValueError("PairSampler needs at least one (noisy, clean) pair")
        self.pairs = [
            (np.asarray(a, np.float32), np.asarray(b, np.float32)) for a, b in pairs
        ]
        for a, b in self.pairs:
            if a.shape != b.shape:
                raise ValueError(f"pair shapes differ: {a.shape} vs {b.shape}")
        self.ranges = [
            percentile_range(a, p_low=normalization[0], p_high=normalization[1])
            for a, _ in self.pairs
        ]
        self.target_ranges = (
            self.ranges
            if same_units
            else [
                percentile_range(b, p_low=normalization[0], p_high=normalization[1])
                for _, b in self.pairs
            ]
        )
        self.patch_px = int(patch_px)
        self.noise_jitter = float(noise_jitter)

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One crop: input (1, P, P) and target (1, P, P), float32, normalised."""
        i = int(rng.integers(len(self.pairs)))
        noisy, clean = self.pairs[i]
        low, high = self.ranges[i]
        sl = _crop(noisy.shape, self.patch_px, rng)
        x = _pad_to(normalize(noisy[sl], low, high), self.patch_px)
        y = _pad_to(normalize(clean[sl], *self.target_ranges[i]), self.patch_px)
        x, y = augment.rot90_flip([x, y], rng)
        # intensity scaling: the network must not rely on the exact normalisation
        s, o = float(np.exp(rng.normal(0, 0.15))), float(rng.normal(0, 0.03))
        x = x * s + o
        y = y * s + o
        if self.noise_jitter > 0 and rng.random() < 0.3:
            x = x + rng.normal(0, self.noise_jitter * rng.random(), x.shape).astype(
                np.float32
            )
        return x[None].astype(np.float32), y[None].astype(np.float32)

    def batch(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = zip(*(self.sample(rng) for _ in range(n)), strict=False)
        return np.stack(xs), np.stack(ys)


class N2VSampler:
    """Noisy crops with blind-spot masking for Noise2Void.

    Parameters
    ----------
    images : sequence of (Y, X) noisy images
    patch_px : side of the square crops
    mask_fraction : fraction of pixels masked per patch (stratified on a grid)
    radius_px : masked pixels take the value of a random pixel at most this far
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        *,
        patch_px: int = 96,
        mask_fraction: float = 0.02,
        radius_px: int = 2,
        normalization: tuple[float, float] = (1.0, 99.8),
    ) -> None:
        if not images:
            raise ValueError("N2VSampler needs at least one image")
        self.images = [np.asarray(a, np.float32) for a in images]
        self.ranges = [
            percentile_range(a, p_low=normalization[0], p_high=normalization[1])
            for a in self.images
        ]
        self.patch_px = int(patch_px)
        self.grid = max(2, round(1.0 / np.sqrt(mask_fraction)))
        self.radius_px = int(radius_px)

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Input (1, P, P) with masked pixels replaced; target (2, P, P): the
        original noisy patch and the 0/1 mask of where the loss applies."""
        i = int(rng.integers(len(self.images)))
        img = self.images[i]
        low, high = self.ranges[i]
        sl = _crop(img.shape, self.patch_px, rng)
        y = _pad_to(normalize(img[sl], low, high), self.patch_px)
        (y,) = augment.rot90_flip([y], rng)
        s, o = float(np.exp(rng.normal(0, 0.15))), float(rng.normal(0, 0.03))
        y = (y * s + o).astype(np.float32)
        p, g, r = self.patch_px, self.grid, self.radius_px
        # one masked pixel per g x g box, at a random place in the box
        gy, gx = np.meshgrid(np.arange(0, p, g), np.arange(0, p, g), indexing="ij")
        my = np.minimum(gy + rng.integers(0, g, gy.shape), p - 1).ravel()
        mx = np.minimum(gx + rng.integers(0, g, gx.shape), p - 1).ravel()
        # a random neighbour within radius r, never the pixel itself
        dy = rng.integers(-r, r + 1, my.shape)
        dx = rng.integers(-r, r + 1, mx.shape)
        same = (dy == 0) & (dx == 0)
        dx[same] = rng.choice([-1, 1], int(same.sum()))
        ny = np.clip(my + dy, 0, p - 1)
        nx = np.clip(mx + dx, 0, p - 1)
        x = y.copy()
        x[my, mx] = y[ny, nx]
        mask = np.zeros_like(y)
        mask[my, mx] = 1.0
        return x[None], np.stack([y, mask])

    def batch(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = zip(*(self.sample(rng) for _ in range(n)), strict=False)
        return np.stack(xs), np.stack(ys)


class SegAugment(BaseModel):
    """Augmentation ranges for segmentation training."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    diameter_px: tuple[float, float] = Field(
        (8.0, 48.0), description="nucleus diameters drawn"
    )
    shear: float = 0.15
    elastic_px: float = 1.5
    cell_brightness_sd: tuple[float, float] = (0.0, 0.6)
    texture: tuple[float, float] = (0.0, 0.4)
    blur_px: tuple[float, float] = (0.0, 2.0)
    haze: tuple[float, float] = (0.0, 0.3)
    background: tuple[float, float] = (0.0, 0.3)
    gradient: tuple[float, float] = (0.0, 0.4)
    photons_peak: tuple[float, float] = (10.0, 5000.0)
    read_noise_photons: tuple[float, float] = (0.0, 3.0)
    gamma: tuple[float, float] = (0.7, 1.4)
    p_8bit: float = 0.3
    p_packed: float = Field(
        0.3,
        ge=0,
        le=1,
        description=(
            "share of crops drawn by augment.packed_nuclei (nuclei pressed together "
            "with flat contacts) instead of cut from a simulated field"
        ),
    )
    synthetic_noise: bool = Field(
        True, description="add noise to the image (off for real, already noisy images)"
    )


class SegmentationSampler:
    """Augmented (image, targets) crops for nuclei instance segmentation.

    Parameters
    ----------
    items : sequence of ((Y, X) image, (Y, X) int labels). For simulated data
        the image is the noise-free signal (offset removed) and noise is added
        here; for real data set ``augment.synthetic_noise=False``.
    patch_px : side of the square crops
    """

    def __init__(
        self,
        items: Sequence[tuple[np.ndarray, np.ndarray]],
        *,
        patch_px: int = 128,
        aug: SegAugment | None = None,
        normalization: tuple[float, float] = (1.0, 99.8),
    ) -> None:
        from smartscope.nn.simdata import equivalent_diameter_px

        if not items:
            raise ValueError(
                "SegmentationSampler needs at least one (image, labels) pair"
            )
        self.items = []
        for img, lab in items:
            lab = np.asarray(lab).astype(np.int32)
            if lab.max() == 0:
                continue
            self.items.append(
                (np.asarray(img, np.float32), lab, equivalent_diameter_px(lab))
            )
        if not self.items:
            raise ValueError("SegmentationSampler: every label image is empty")
        self.patch_px = int(patch_px)
        self.aug = aug or SegAugment()
        self.normalization = normalization

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Input (1, P, P) normalised; target (2, P, P): foreground, distance."""
        a = self.aug
        img, lab, d_frame = self.items[int(rng.integers(len(self.items)))]
        d_target = float(np.exp(rng.uniform(*np.log(a.diameter_px))))
        p = self.patch_px
        if rng.random() < a.p_packed:
            clean, labels = augment.packed_nuclei((p, p), rng, diameter_px=d_target)
            clean = ndi.gaussian_filter(clean, rng.uniform(0.5, 1.5))  # the optics
        else:
            zoom = float(
                np.clip(d_target / max(d_frame, 1.0), 1.5 * p / min(img.shape), 4.0)
            )
            clean, warped = augment.warp(
                img,
                lab,
                rng,
                out_shape=(p, p),
                zoom=zoom,
                shear=a.shear,
                elastic_px=a.elastic_px * rng.random(),
                elastic_scale_px=max(6.0, d_target / 2),
            )
            labels = warped if warped is not None else np.zeros((p, p), np.int32)
        clean = np.clip(clean, 0, None)
        peak = float(np.percentile(clean, 99.5)) if clean.max() > 0 else 1.0
        peak = max(peak, 1e-6)
        clean /= peak
        if labels.max() > 0:
            n = int(labels.max()) + 1
            sd = rng.uniform(*a.cell_brightness_sd)
            factor = np.exp(rng.normal(0, sd, n)).astype(np.float32)
            factor[0] = 1.0
            clean *= factor[labels]
            tex = rng.uniform(*a.texture)
            if tex > 0:
                field = augment.smooth_field((p, p), rng, scale_px=rng.uniform(2, 6))
                clean *= np.clip(1.0 + tex * field, 0.2, None)
        if a.haze[1] > 0:
            w = rng.uniform(*a.haze)
            clean += w * ndi.gaussian_filter(clean, max(4.0, d_target))
        sigma = rng.uniform(*a.blur_px) if rng.random() < 0.5 else 0.0
        if sigma > 0.3:
            clean = ndi.gaussian_filter(clean, sigma)
        clean += augment.background(
            (p, p),
            rng,
            level=rng.uniform(*a.background),
            gradient=rng.uniform(*a.gradient),
            haze=0.05 * rng.random(),
        )
        clean = np.clip(clean, 0, None) ** rng.uniform(*a.gamma)
        if a.synthetic_noise:
            k = float(np.exp(rng.uniform(*np.log(a.photons_peak))))
            image = augment.add_poisson_gaussian(
                clean,
                rng,
                photons_per_unit=k,
                read_sd_photons=rng.uniform(*a.read_noise_photons),
            )
        else:
            image = clean
        r = rng.random()
        if r < a.p_8bit:
            image = augment.quantize(image, rng, bits=8, headroom=rng.uniform(0.6, 1.1))
        elif r < a.p_8bit + 0.2:
            image = augment.quantize(
                image, rng, bits=12, headroom=rng.uniform(0.1, 1.0)
            )
        low, high = percentile_range(
            image, p_low=self.normalization[0], p_high=self.normalization[1]
        )
        x = normalize(image, low, high)
        fg, dist = distance_targets(labels)
        return x[None], np.stack([fg, dist])

    def batch(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = zip(*(self.sample(rng) for _ in range(n)), strict=False)
        return np.stack(xs), np.stack(ys)


def offset_free(image: np.ndarray, percentile: float = 0.5) -> np.ndarray:
    """``image`` as float32 less its ``percentile``-th percentile, clipped at 0:
    a camera's offset (e.g. 100 ADU, or 33,000 in one Cell Tracking Challenge
    set) removed so that brightness augmentations scale the signal alone."""
    a = np.asarray(image, np.float32)
    return np.clip(a - np.percentile(a, percentile), 0, None)


class BatchSampler(Protocol):
    """Anything that draws training batches (the samplers here)."""

    def batch(
        self, n: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]: ...


class MixedSampler:
    """Batches drawn from two samplers: each batch takes a binomial number of
    its crops (probability ``share_b`` each) from ``b``, the rest from ``a``
    (``a``'s crops first). E.g. the user's annotated images (``a``) mixed with
    simulated fields (``b``) so that the simulator's variety is not forgotten.
    """

    def __init__(self, a: BatchSampler, b: BatchSampler, *, share_b: float) -> None:
        if not 0.0 <= share_b <= 1.0:
            raise ValueError(f"share_b must be in [0, 1], got {share_b}")
        self.a, self.b, self.share_b = a, b, float(share_b)

    def batch(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        k = int(rng.binomial(n, 1.0 - self.share_b))
        parts = ([self.a.batch(k, rng)] if k else []) + (
            [self.b.batch(n - k, rng)] if n - k else []
        )
        return (
            np.concatenate([x for x, _ in parts]),
            np.concatenate([y for _, y in parts]),
        )
