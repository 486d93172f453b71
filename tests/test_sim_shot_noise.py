"""The simulated camera's shot noise: Poisson counts drawn from a table for the
uniform background plus numpy's draw where there is light, checked against
the Poisson distribution itself (scipy.stats) with goodness-of-fit tests on
seeded draws."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from smartscope.sim.shot_noise import (
    TABLE_MAX_MEAN,
    ShotNoise,
    draw_from_table,
    poisson_table,
)


def _fits_poisson(counts: np.ndarray, mean: float) -> float:
    """p-value of a chi-squared test of ``counts`` against Poisson(``mean``),
    over the counts expected at least 20 times (the rest pooled in the tails)."""
    counts = counts.ravel()
    ks = np.arange(counts.max() + 2)
    expected = stats.poisson.pmf(ks, mean) * counts.size
    keep = expected >= 20
    lo, hi = ks[keep][0], ks[keep][-1]
    observed = np.bincount(np.clip(counts, lo, hi) - lo, minlength=hi - lo + 1)
    exp = expected[lo : hi + 1].copy()
    exp[0] = stats.poisson.cdf(lo, mean) * counts.size
    exp[-1] = stats.poisson.sf(hi - 1, mean) * counts.size
    return float(stats.chisquare(observed, exp).pvalue)


@pytest.mark.parametrize("mean", [0.05, 0.7, 4.0, 33.3, 250.0, TABLE_MAX_MEAN])
def test_the_table_draws_poisson_counts(mean: float) -> None:
    cdf, guide = poisson_table(mean)
    assert cdf[-1] == 1.0
    assert np.all(np.diff(cdf) >= 0)
    assert guide.size == cdf.size
    # the tail left out is below float64's resolution
    assert stats.poisson.sf(cdf.size - 1, mean) < 1e-16
    counts = draw_from_table(np.random.default_rng(7), cdf, guide, (1000, 1000))
    assert counts.shape == (1000, 1000)
    assert counts.mean() == pytest.approx(mean, rel=0.01, abs=1e-3)
    assert counts.var() == pytest.approx(mean, rel=0.02, abs=1e-3)
    assert _fits_poisson(counts, mean) > 1e-3


def test_a_bad_mean_is_refused() -> None:
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="Poisson mean"):
            poisson_table(bad)


@pytest.mark.parametrize(
    "background",
    [3.0, 120.0, 0.0, 5000.0],  # table, table, no background, numpy's draw
)
def test_a_frame_is_poisson_at_every_level_of_light(background: float) -> None:
    """Dark pixels, dim and bright ones and saturated ones, each level
    Poisson of its mean (the background plus its light, at most the full well)."""
    full_well = 20000.0
    levels = np.array([0.0, 0.4, 25.0, 900.0, 50000.0], np.float32)
    signal = np.repeat(levels, 400 * 400 // levels.size).reshape(400, 400)
    expected = np.minimum(signal + np.float32(background), np.float32(full_well))
    noise, rng = ShotNoise(), np.random.default_rng(3)
    frames = np.stack(
        [noise.draw(rng, expected, background, full_well) for _ in range(4)]
    )
    assert frames.dtype == np.float32
    assert frames.shape == (4, 400, 400)
    assert np.array_equal(frames, np.round(frames))
    per_level = frames.reshape(4, levels.size, -1)
    for i, level in enumerate(levels):
        mean = min(background + float(level), full_well)
        counts = per_level[:, i].astype(np.int64)
        if mean == 0:
            assert not counts.any()
            continue
        assert counts.mean() == pytest.approx(mean, rel=0.01, abs=0.01)
        assert _fits_poisson(counts, mean) > 1e-3, (background, level)


def test_the_same_generator_state_draws_the_same_frame() -> None:
    expected = np.full((64, 64), 50.0, np.float32)
    expected[20:30, 20:30] = 90.0
    a = ShotNoise().draw(np.random.default_rng(5), expected, 50.0, 30000.0)
    b = ShotNoise().draw(np.random.default_rng(5), expected, 50.0, 30000.0)
    np.testing.assert_array_equal(a, b)
