"""The operation counter that says what a piece of code asks of a GPU
(launches, syncs, copies between host and device), run on the CPU."""

from __future__ import annotations

import torch

from smartscope.nn.op_count import OpCounter


def test_counts_kernels_views_syncs_and_copies() -> None:
    x = torch.arange(12.0).reshape(3, 4)
    counter = OpCounter()
    with counter:
        y = x[1:, :2]  # a view: no launch
        z = y * 2 + 1  # two kernels
        mask = z > 4  # a kernel
        z[mask]  # boolean-mask indexing: a hidden nonzero, a sync
        torch.equal(z, z)  # a sync
        mask.nonzero()  # a sync
        z.to("meta")  # a copy to another device
    assert counter.views >= 1
    assert counter.kernels["mul"] == counter.kernels["add"] == 1
    assert counter.kernels["gt"] == 1
    assert dict(counter.syncs) == {"index": 1, "equal": 1, "nonzero": 1}
    assert counter.n_syncs == 3
    assert dict(counter.transfers) == {"to device": 1}
    assert counter.n_kernels == sum(counter.kernels.values())
