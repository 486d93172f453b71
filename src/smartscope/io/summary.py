"""Helpers for ``summary.json``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["percentiles", "readable_ms"]


def percentiles(values_ms: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99/max of a list of latencies in ms (None when empty)."""
    if len(values_ms) == 0:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    a = np.asarray(values_ms, dtype=float)
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {
        "n": int(a.size),
        "p50": round(float(p50), 3),
        "p95": round(float(p95), 3),
        "p99": round(float(p99), 3),
        "max": round(float(a.max()), 3),
    }


def readable_ms(value: float) -> str:
    """A duration in ms as a person reads it: 21, 0.2, 0.013."""
    return f"{value:.0f}" if value >= 10 else f"{value:.2g}"
