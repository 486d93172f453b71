"""Device copies of the host arrays a model just brought back, for the next
model to take instead of copying them over again.

On a GPU the denoiser's output comes back to the host (the writer and the
run's results want it there) and the segmenter then sends the same pixels
to the card again: at 2048² a float32 frame is 16 MB each way, staged
through page-locked memory on the way in. A denoiser on the device path
therefore leaves the tensor it copied back here, keyed by the host array
it made (:func:`remember`); a model about to copy an array to its device
takes the tensor instead when the array is one of those and the device is
its own (:func:`take`). The values are the same: the host array is a copy
of that tensor. An array changed in place after it came back would no
longer match its twin: the analysis never does that; code that does must
not hand such an array on (or calls :func:`forget`).

The model that first copies the raw frames to the device leaves those
there too when the analysis measures its objects on the device
(``Model.keep_inputs``): the measurements read the raw pixels under the
labels.

At most :data:`MAX_TWINS` are kept (the oldest go first) and each is taken
once, so the device memory they hold stays bounded (32 frames of 2048²
float32 or widened uint16: 512 MB) however long the host arrays live.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict

import numpy as np
import torch

__all__ = ["MAX_TWINS", "forget", "remember", "take"]

#: device copies kept at most (a batch of 8 frames, raw and denoised, and
#: the next batch denoised while the segmenter works on this one)
MAX_TWINS = 32

# reentrant: a twin's array may be freed (and its callback run) while the
# lock is held
_lock = threading.RLock()
_twins: OrderedDict[int, tuple[weakref.ref[np.ndarray], torch.Tensor]] = OrderedDict()


def _drop(key: int) -> None:
    with _lock:
        _twins.pop(key, None)


def _same_device(a: torch.device, b: torch.device) -> bool:
    """Whether two devices are one (``cuda`` is the current CUDA device,
    as a tensor's ``cuda:0`` is)."""
    if a.type != b.type:
        return False
    if a.index == b.index or a.type != "cuda":
        return True
    current = torch.cuda.current_device()
    return (current if a.index is None else a.index) == (
        current if b.index is None else b.index
    )


def remember(array: np.ndarray, tensor: torch.Tensor) -> None:
    """Keep ``tensor`` (on its device) as the twin of ``array``, its host
    copy, until a model takes it, ``array`` is freed, or
    :data:`MAX_TWINS` newer ones push it out. ``tensor`` should own its
    memory (not be a view of a batch, which a twin would keep whole)."""
    key = id(array)
    ref = weakref.ref(array, lambda _, key=key: _drop(key))
    with _lock:
        _twins.pop(key, None)
        _twins[key] = (ref, tensor)
        while len(_twins) > MAX_TWINS:
            _twins.popitem(last=False)


def take(array: np.ndarray, device: torch.device) -> torch.Tensor | None:
    """The twin of ``array`` on ``device`` (no longer kept), or ``None``
    where it has none there."""
    with _lock:
        entry = _twins.get(id(array))
        if (
            entry is None
            or entry[0]() is not array
            or not _same_device(entry[1].device, device)
        ):
            return None
        del _twins[id(array)]
        return entry[1]


def forget(array: np.ndarray) -> None:
    """Drop ``array``'s twin (e.g. before changing the array in place)."""
    with _lock:
        entry = _twins.get(id(array))
        if entry is not None and entry[0]() is array:
            del _twins[id(array)]
