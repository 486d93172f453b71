"""Count the torch operations a piece of code runs: what it asks of a GPU.

On a GPU a frame's arithmetic takes microseconds; what costs is each
operation torch launches (a few microseconds of host time each, in order)
and each point where the host waits for the device's answer (a sync drains
the queue). :class:`OpCounter` sees every aten operation run inside it, on
any device, so these counts are known before a GPU is at hand
(benchmarks/device_ops.py, tests/test_nn_device_path.py).
"""

from __future__ import annotations

import collections
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["SYNC_OPS", "OpCounter"]

#: operations that make the host wait for the device's answer
SYNC_OPS = frozenset(
    {
        "equal",
        "nonzero",
        "_local_scalar_dense",
        "bincount",
        "masked_select",
        "unique",
        "_unique2",
        "item",
    }
)


def _bool_index(args: tuple) -> bool:
    """Whether an ``index``/``index_put_`` call indexes with a bool mask
    (a hidden ``nonzero``)."""
    return any(
        isinstance(a, (list, tuple))
        and any(isinstance(t, torch.Tensor) and t.dtype == torch.bool for t in a)
        for a in args
    )


#: operations that launch nothing besides the views (an allocation only)
_NO_LAUNCH = frozenset(
    {"lift_fresh", "detach", "alias", "empty", "empty_like", "empty_strided"}
)


#: operations that copy a tensor, maybe between the host and a device
_COPIES = frozenset({"_to_copy", "copy_", "_copy_from", "_copy_from_and_resize"})


class OpCounter(TorchDispatchMode):
    """Counts the aten operations run inside it, by kind: ``kernels`` (by
    name: operations that compute, each a launch on a GPU), ``views``
    (views and bare allocations: host time only), ``syncs`` (by name:
    the host waits for the result, :data:`SYNC_OPS` and boolean-mask
    indexing) and ``transfers`` (copies between the host and a device, by
    direction, ``"to device"`` / ``"to host"``: seen only where a device
    is, e.g. a tensor made from a Python list on CUDA, a blocking copy)."""

    def __init__(self) -> None:
        super().__init__()
        self.kernels: collections.Counter[str] = collections.Counter()
        self.views = 0
        self.syncs: collections.Counter[str] = collections.Counter()
        self.transfers: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        name = func.overloadpacket.__name__
        if func.is_view or name in _NO_LAUNCH:
            self.views += 1
        else:
            self.kernels[name] += 1
        if name in SYNC_OPS or (
            name in ("index", "index_put", "index_put_") and _bool_index(args)
        ):
            self.syncs[name] += 1
        out = func(*args, **(kwargs or {}))
        if name in _COPIES and isinstance(out, torch.Tensor):
            on_host = {
                a.device.type == "cpu" for a in args if isinstance(a, torch.Tensor)
            }
            if out.device.type != "cpu" and True in on_host:
                self.transfers["to device"] += 1
            elif out.device.type == "cpu" and False in on_host:
                self.transfers["to host"] += 1
        return out

    @property
    def n_kernels(self) -> int:
        """Operations that compute (each a launch on a GPU)."""
        return sum(self.kernels.values())

    @property
    def n_syncs(self) -> int:
        """Operations whose result the host waits for."""
        return sum(self.syncs.values())
