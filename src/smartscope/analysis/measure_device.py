"""The area filter and the measurements of a batch of frames on the device
that made their labels.

On a GPU the segmenter's labels are made on the card; the host then
filtered them by area (:func:`~smartscope.analysis.segment.filter_by_area`)
and measured every object (:func:`~smartscope.analysis.measure.measure_objects`):
on this project's 2-core VM 3-10 and 5-14 ms a 2048² frame (514 nuclei),
most of the 10 ms a frame that 100 frames/s leave, on one core, in turn
with the models (docs/benchmarks.md, "the host's work once the labels are
in"). Here both are a few passes over the foreground pixels on the
device: per-label sums by ``index_add_`` (float64) and maxima by
``scatter_reduce``, for all the batch's frames at once (each frame's labels
offset into its own range of bins), then one small copy of the sums back:
three syncs a batch (the foreground's ``nonzero``, the largest label, the
copy back) besides the labels' own copy. The labels come back renumbered as
the host's filter renumbers them; the sums give the same
:class:`~smartscope.analysis.measure.ObjectTable` through
:func:`~smartscope.analysis.measure.object_table` (the same values up to
the order of float64 additions, which a GPU does not fix).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from smartscope.analysis.measure import ObjectStats

if TYPE_CHECKING:
    import torch

__all__ = ["filter_and_measure_t"]

#: the sums :func:`filter_and_measure_t` makes per label, in this order
_SUMS = ("n_px", "row", "col", "m_rr", "m_cc", "m_rc", "mean", "max")


def filter_and_measure_t(
    labels: torch.Tensor,
    images: torch.Tensor,
    *,
    min_px: int,
    max_px: float,
    relabel: bool = True,
) -> tuple[torch.Tensor | None, list[ObjectStats | None]]:
    """Drop the objects outside ``[min_px, max_px]`` pixels, renumber the
    rest 1..N in their order, and sum up each kept object.

    Parameters
    ----------
    labels : (B, Y, X) integer Tensor
        Instance labels of each frame, 0 = background (any numbering).
    images : (B, Y, X) Tensor on the same device
        The intensities measured under the labels (the raw frames).
    min_px, max_px : object sizes kept, pixels (inclusive; ``min_px`` ≥ 1)
    relabel : make the filtered label image (False: the sums only, where
        nothing keeps the labels)

    Returns
    -------
    labels : (B, Y, X) int32 Tensor on the device, or None (``relabel``)
        As :func:`~smartscope.analysis.segment.filter_by_area` numbers them.
    stats : list of ObjectStats or None (no object), one per frame
        For :func:`~smartscope.analysis.measure.object_table`.
    """
    import torch

    if labels.ndim != 3 or labels.shape != images.shape:
        raise ValueError(
            f"labels {tuple(labels.shape)} and images {tuple(images.shape)} must "
            "be (B, Y, X) of one shape"
        )
    if min_px < 1:
        raise ValueError(f"min_px must be at least 1, got {min_px}")
    b, h, w = labels.shape
    device = labels.device
    f64 = torch.float64
    flat = labels.reshape(-1)
    top = flat.amax() if flat.numel() else flat.new_zeros(())
    # only the foreground (a few % of a frame): its bins see no background
    # crowd, and the temporaries stay small (a batch of eight 2048² frames
    # is 34 million pixels). nonzero waits for the card; the maximum asked
    # for before it is then ready.
    fg = torch.nonzero(flat).squeeze(1)
    bins = int(top) + 1
    ids = flat[fg].to(torch.int64)
    if bins > 2 * fg.numel() + 1024:
        # sparse numbering (ids far above the count of objects, which sizes
        # the bins): numbered densely first, in the same order (one sync
        # more; the analysis's own labels are 1..N and never take it)
        uniq, ids = torch.unique(ids, sorted=True, return_inverse=True)
        ids = ids + 1
        bins = int(uniq.numel()) + 1
    frame = torch.div(fg, h * w, rounding_mode="floor")
    pixel = fg - frame * (h * w)
    idx = ids + frame * bins
    total = b * bins

    def summed(*columns: torch.Tensor) -> torch.Tensor:
        # (total, k) sums of k columns, one index_add_ for them all (not
        # bincount: CUDA's reads the input's minimum and maximum back
        # first, two syncs a call)
        sums = torch.zeros((total, len(columns)), device=device, dtype=f64)
        return sums.index_add_(0, idx, torch.stack(columns, dim=1))

    r = torch.div(pixel, w, rounding_mode="floor").to(f64)
    c = (pixel % w).to(f64)
    values = images.reshape(-1)[fg].to(f64)
    first = summed(torch.ones_like(r), r, c, values)
    counts = first[:, 0]
    first = first / counts.clamp(min=1.0)[:, None]
    row, col, mean = first[:, 1], first[:, 2], first[:, 3]
    # second central moments about each object's own centroid (as the host
    # computes them: no cancellation of large raw moments)
    dr = r - row[idx]
    dc = c - col[idx]
    second = summed(dr * dr, dc * dc, dr * dc) / counts.clamp(min=1.0)[:, None]
    m_rr, m_cc, m_rc = second.unbind(1)
    peak = torch.full((total,), -torch.inf, device=device, dtype=f64)
    peak.scatter_reduce_(0, idx, values, reduce="amax", include_self=True)
    keep = (counts >= min_px) & (counts <= max_px)
    keep.view(b, bins)[:, 0] = False
    out = None
    if relabel:
        # each kept label's new number within its frame: 1..N in the old order
        new = torch.cumsum(keep.view(b, bins).to(torch.int32), dim=1)
        lut = (new * keep.view(b, bins)).reshape(-1).to(torch.int32)
        out = torch.zeros(b * h * w, device=device, dtype=torch.int32)
        out[fg] = lut[idx]
        out = out.view(b, h, w)
    # one copy back for the sums and what is kept
    sums = torch.stack([counts, row, col, m_rr, m_cc, m_rc, mean, peak, keep.to(f64)])
    host = sums.view(len(_SUMS) + 1, b, bins).cpu().numpy()
    kept = host[-1] > 0
    host = host[:-1]
    stats: list[ObjectStats | None] = []
    for i in range(b):
        bins_kept = np.flatnonzero(kept[i])
        if bins_kept.size == 0:
            stats.append(None)
            continue
        s = dict(zip(_SUMS, host[:, i, bins_kept], strict=True))
        stats.append(
            ObjectStats(
                label=np.arange(1, bins_kept.size + 1, dtype=np.int32),
                n_px=s["n_px"],
                row=s["row"],
                col=s["col"],
                m_rr=s["m_rr"],
                m_cc=s["m_cc"],
                m_rc=s["m_rc"],
                mean_intensity=s["mean"],
                max_intensity=s["max"],
            )
        )
    return out, stats
