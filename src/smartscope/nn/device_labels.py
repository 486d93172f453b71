"""The segmenter's post-processing in torch, on the tensors' own device.

:func:`smartscope.nn.instances.labels_from_maps` (scipy's labelling,
scikit-image's watershed) runs on the CPU: on a GPU the maps would cross to
the host and the watershed of a 2048 x 2048 frame alone takes longer than the
network. These functions do the same steps with tensor operations only (no
Python loop over pixels or objects), so they run where the maps are:

- percentile normalisation (:func:`percentile_range_t`, the same strided
  sample and linear interpolation as :func:`smartscope.nn.normalize.percentile_range`);
- connected components of a mask (:func:`connected_components_t`): a
  union-find on tensors (neighbouring roots hooked smaller-first, paths
  compressed by pointer jumping), so each component ends up with the index
  of its first pixel in raster order, the order :func:`scipy.ndimage.label`
  numbers them in;
- a seeded watershed (:func:`labels_from_maps_t`): the seeds' labels spread
  into the foreground in bands of the normalised distance, highest first
  (``levels`` bands below the seed threshold), and within a band by
  4-neighbour steps. A priority-flood watershed takes pixels one by one in
  order of distance; here pixels of one band are taken in order of their
  geodesic distance to the labels already placed. Where two nuclei touch,
  the border can move by a pixel or two; elsewhere the result is the same
  (tests: average precision against :func:`labels_from_maps` on simulated
  frames).

The watershed's steps are the longest path inside a band, a few tens of
pixels for nuclei at the training diameter (each a handful of element-wise
operations over the frame, cheap on a GPU); connected components take a
few rounds and about the logarithm of a component's size in jumps, whatever
its shape. The spreading checks for convergence every :data:`CHECK_EVERY`
steps, the components after each round and every two jumps: each check one
device-to-host sync. On a GPU these launches and syncs, not the arithmetic,
are the cost: ``benchmarks/device_ops.py`` counts them (a 512² demo frame:
under 400 kernels and about 20 syncs for the segmenter, network included).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = [
    "CHECK_EVERY",
    "compiled_spreading",
    "connected_components_t",
    "labels_from_maps_t",
    "normalize_t",
    "percentile_range_t",
    "relabel_sequential_t",
]

#: steps between two convergence checks (each check syncs with the device)
CHECK_EVERY = 4
#: bands of the normalised distance below the seed threshold that the
#: labels flood one after the other (the watershed's priority, coarsened)
DEFAULT_LEVELS = 8

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=64)
def _constant(
    values: tuple[float, ...], dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """A small constant tensor on ``device``, made once: made anew per
    frame, it would be a blocking copy from the host (a sync) on CUDA.
    A normal tensor even when first asked for under ``inference_mode``, so
    it serves calls outside it too."""
    with torch.inference_mode(False):
        return torch.tensor(values, dtype=dtype, device=device)


def percentile_range_t(
    image: torch.Tensor, *, p_low: float = 1.0, p_high: float = 99.8
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(low, high)`` percentiles of a (Y, X) image as 0-d float32 tensors
    on its device (of each image of a (B, Y, X) batch: (B,) tensors),
    ``high > low`` guaranteed; the same sample and interpolation as
    :func:`smartscope.nn.normalize.percentile_range` (no host sync)."""
    rows = 1 if image.ndim == 2 else image.shape[0]
    flat = image.reshape(rows, -1).float()
    n = flat.shape[1]
    if n > 1 << 18:
        flat = flat[:, :: n >> 18]
    q = _constant((p_low / 100.0, p_high / 100.0), torch.float32, flat.device)
    low, high = torch.quantile(flat, q, dim=1, interpolation="linear")
    floor = torch.clamp(low.abs() * 1e-6, min=1e-6)
    high = torch.where(high > low, high, low + floor)
    if image.ndim == 2:
        return low[0], high[0]
    return low, high


def normalize_t(
    image: torch.Tensor, low: torch.Tensor, high: torch.Tensor
) -> torch.Tensor:
    """``(image - low) / (high - low)`` as float32, on ``image``'s device
    (``low``, ``high``: 0-d, or (B,) for a (B, Y, X) batch)."""
    if low.ndim == 1:
        low, high = low[:, None, None], high[:, None, None]
    return (image.float() - low) / (high - low)


def _step(src: torch.Tensor, dst: torch.Tensor, open_key: float) -> None:
    """One step of spreading, from the padded keys ``src`` into the padded
    ``dst`` (same shape, (Y + 2, X + 2), a border of walls): each open pixel
    (key ``open_key``) takes the smallest key among itself and its 4
    neighbours, every other pixel keeps its own. Six kernels, no copy of the
    frame: the neighbours are views of ``src``, the result is written into
    ``dst``'s interior."""
    inner = src[1:-1, 1:-1]
    low = torch.minimum(inner, src[:-2, 1:-1])
    torch.minimum(low, src[2:, 1:-1], out=low)
    torch.minimum(low, src[1:-1, :-2], out=low)
    torch.minimum(low, src[1:-1, 2:], out=low)
    torch.where(inner == open_key, low, inner, out=dst[1:-1, 1:-1])


def _block(
    keys: torch.Tensor, open_key: float, wall: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """:data:`CHECK_EVERY` steps of :func:`_step` written as new tensors
    (what ``torch.compile`` takes whole, ``out=`` views it does not):
    returns the keys after the last step and after the one before it."""
    prev = keys
    for _ in range(CHECK_EVERY):
        prev = keys
        inner = keys[1:-1, 1:-1]
        low = torch.minimum(inner, keys[:-2, 1:-1])
        low = torch.minimum(low, keys[2:, 1:-1])
        low = torch.minimum(low, keys[1:-1, :-2])
        low = torch.minimum(low, keys[1:-1, 2:])
        grown = torch.where(inner == open_key, low, inner)
        keys = F.pad(grown, (1, 1, 1, 1), value=wall)
    return keys, prev


_compiled: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]] | None] = {}
_compiled_lock = threading.Lock()
#: (shape, device) the compiled block has run at on a GPU: a new one
#: compiles, and Triton tunes its kernels then, synchronising the device
_compiled_shapes: set[tuple[tuple[int, ...], str]] = set()


@functools.cache
def _one_call_failures() -> tuple[type[BaseException], ...]:
    """Failures of a compiled call that say nothing about later calls.
    Looked up when a compiled call failed (an ``except`` clause's classes
    are evaluated then): importing ``torch._dynamo`` costs about a second,
    which a process that never compiles does not pay."""
    out: list[type[BaseException]] = [torch.OutOfMemoryError]
    try:
        from torch._dynamo.exc import FailOnRecompileLimitHit

        out.append(FailOnRecompileLimitHit)
    except ImportError:  # another torch: such a failure turns compiling off
        pass
    return tuple(out)


def compiled_spreading() -> Callable[..., tuple[torch.Tensor, torch.Tensor]] | None:
    """:func:`_block` through ``torch.compile`` (each step one fused kernel,
    Triton's on a GPU, C++ on the CPU, where eager mode launches six), made
    once per process; ``None`` where torch cannot compile here, or compiling
    failed (the caller runs the steps eagerly).

    Compiled for each frame size it meets (static shapes: on this project's
    CPU the kernels made for any size ran half as fast), up to torch's
    recompile limit (8 sizes by default); a further size spreads eagerly.
    The open and wall keys are the same at every size
    (:func:`_open_and_wall`), so only a new size compiles again."""
    with _compiled_lock:
        if "block" not in _compiled:
            try:
                _compiled["block"] = torch.compile(
                    _block, fullgraph=True, dynamic=False
                )
            except Exception as exc:
                log.warning("torch.compile unavailable (%s); spreading eagerly", exc)
                _compiled["block"] = None
        return _compiled["block"]


def _spread_loop(
    block: Callable[..., tuple[torch.Tensor, torch.Tensor]],
    keys: torch.Tensor,
    open_key: float,
    wall: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blocks of compiled steps until one changes nothing."""
    while True:
        new, prev = block(keys, open_key, wall)
        if torch.equal(new, prev):
            return new, prev
        keys = new


def _spread_compiled(
    keys: torch.Tensor, open_key: float, wall: float
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """:func:`_spread` with the compiled block; ``None`` (and compiling off
    for this process, with a warning) where compiling fails, e.g. no C++
    compiler or no Triton: ``keys`` are then as they came."""
    block = compiled_spreading()
    if block is None:
        return None
    try:
        shape = (tuple(keys.shape), str(keys.device))
        if keys.is_cuda and shape not in _compiled_shapes:
            from smartscope.nn.predictor import CUDA_CAPTURE_LOCK

            # compiling for a new size syncs the device: not while another
            # thread records a CUDA graph
            with CUDA_CAPTURE_LOCK:
                done = _spread_loop(block, keys, open_key, wall)
            _compiled_shapes.add(shape)
            return done
        return _spread_loop(block, keys, open_key, wall)
    except _one_call_failures() as exc:
        # a size past torch's recompile limit, or the device out of memory:
        # this frame spreads eagerly, the sizes compiled so far stay so
        log.debug("compiled spreading not used for this frame: %s", exc)
        return None
    except Exception as exc:
        log.warning(
            "compiled spreading failed (%s); spreading eagerly from now on", exc
        )
        with _compiled_lock:
            _compiled["block"] = None
        return None


def _spread(
    keys: torch.Tensor, spare: torch.Tensor, open_key: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spread the labels' keys into the open pixels (``open_key``),
    4-connected, one step at a time, until a step changes nothing: each open
    pixel takes the smallest key reaching it in one step; labelled pixels
    keep theirs, and walls (keys above ``open_key``) neither take nor pass
    one. ``keys`` and ``spare``: padded (Y + 2, X + 2) buffers with a border
    of walls, used in turn; returns them swapped as they end up (the keys
    first).

    Spreading only ever fills open pixels, so a step that changes nothing
    ends it: each check (one sync) compares the last two of
    :data:`CHECK_EVERY` steps, and a band that fills in fewer steps costs
    one check.
    """
    while True:
        for _ in range(CHECK_EVERY):
            _step(keys, spare, open_key)
            keys, spare = spare, keys
        if torch.equal(keys, spare):
            return keys, spare


def _key_dtype(n: int) -> torch.dtype:
    # float32 holds integers exactly up to 2**24; min-pooling needs a float
    return torch.float32 if n < (1 << 24) - 2 else torch.float64


def _open_and_wall(dtype: torch.dtype) -> tuple[float, float]:
    """The keys of open pixels and of walls: above every label's key (at
    most the frame's pixel count, which :func:`_key_dtype` holds exactly),
    the same at every frame size."""
    top = 1 << (24 if dtype == torch.float32 else 53)
    return float(top - 1), float(top)


def connected_components_t(mask: torch.Tensor) -> torch.Tensor:
    """4-connected components of a (Y, X) bool mask: int64 labels, 0 outside,
    each component labelled with 1 + the raster index of its first pixel
    (not numbered 1..N: :func:`relabel_sequential_t` does that).

    Union-find on tensors: every pixel starts as its own root; each round
    hooks, for every pair of 4-neighbours in the mask with different roots,
    the larger root onto the smaller (a scatter of minima), then compresses
    the paths by pointer jumping (each pixel takes its parent's parent until
    nothing changes). A few rounds and about the logarithm of a component's
    length in jumps, where spreading the smallest index one pixel a step
    took as many steps as the component is long: a 1500-px disc in a 2048²
    mask took 2 rounds and 22 jumps (1.4 s on 2 CPU cores, against 14.3 s
    spreading), blobs of filtered noise 4 rounds and 20 jumps against 161
    steps (0.5 against 1.7 s).
    """
    h, w = mask.shape
    n = h * w
    parent = torch.arange(n, device=mask.device)
    # the pairs of 4-neighbours both in the mask, in one nonzero (one sync):
    # plane 0 pairs each pixel with the one to its right, plane 1 with the
    # one below
    pairs = torch.zeros((2, h, w), dtype=torch.bool, device=mask.device)
    pairs[0, :, :-1] = mask[:, :-1] & mask[:, 1:]
    pairs[1, :-1, :] = mask[:-1, :] & mask[1:, :]
    a = pairs.view(-1).nonzero()[:, 0]
    below = a >= n
    a = torch.where(below, a - n, a)
    b = a + torch.where(below, w, 1)
    while True:
        ra, rb = parent[a], parent[b]
        if torch.equal(ra, rb):
            break
        parent.scatter_reduce_(0, torch.maximum(ra, rb), torch.minimum(ra, rb), "amin")
        # two jumps per check (one sync): a jump more than needed changes
        # nothing once every pixel points at its root
        while True:
            up = parent[parent]
            parent, up = up[up], up
            if torch.equal(parent, up):
                break
    labels = (parent + 1).reshape(h, w)
    return torch.where(mask, labels, torch.zeros_like(labels))


def relabel_sequential_t(labels: torch.Tensor) -> torch.Tensor:
    """Labels renumbered 1..N in increasing order of their old value, int32,
    on ``labels``' device (the torch twin of
    :func:`smartscope.nn.instances.relabel_sequential`)."""
    if labels.numel() == 0:
        return labels.to(torch.int32)
    top = int(labels.max())
    if top <= 0:
        return torch.zeros_like(labels, dtype=torch.int32)
    present = torch.zeros(top + 1, dtype=torch.bool, device=labels.device)
    present[labels.reshape(-1)] = True
    present[0] = False
    table = torch.cumsum(present, 0, dtype=torch.int32)
    table = torch.where(present, table, 0)  # not table[~present]: a sync
    return table[labels.long()]


def _drop_small_t(
    labels: torch.Tensor, min_size_px: int, border_min_size_px: int | None
) -> torch.Tensor:
    """Objects under ``min_size_px`` (touching the border: under
    ``border_min_size_px``) removed, the rest numbered 1..N."""
    if max(min_size_px, border_min_size_px or 0) > 1 and labels.numel():
        sizes = torch.bincount(labels.reshape(-1))
        limit = torch.full_like(sizes, int(min_size_px))
        if border_min_size_px is not None:
            edge = torch.cat([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
            limit[edge] = int(border_min_size_px)
        small = sizes < limit
        small[0] = False
        labels = torch.where(small[labels], torch.zeros_like(labels), labels)
    return relabel_sequential_t(labels)


def labels_from_maps_t(
    foreground: torch.Tensor,
    distance: torch.Tensor,
    *,
    fg_threshold: float = 0.5,
    seed_threshold: float = 0.5,
    min_size_px: int = 8,
    border_min_size_px: int | None = None,
    levels: int = DEFAULT_LEVELS,
    compiled: bool = False,
) -> torch.Tensor:
    """Instance labels from the foreground probability and normalised
    distance, on their device: the tensor counterpart of
    :func:`smartscope.nn.instances.labels_from_maps` (same thresholds, same
    4-connectivity, seedless foreground blobs kept as objects, small objects
    dropped).

    Parameters
    ----------
    foreground, distance : (Y, X) float Tensor in [0, 1], same device
    fg_threshold, seed_threshold, min_size_px, border_min_size_px : as in
        :func:`~smartscope.nn.instances.labels_from_maps`
    levels : bands of the distance below ``seed_threshold`` flooded one
        after the other (more: closer to a priority-flood watershed, more
        steps)
    compiled : spread through ``torch.compile`` (:func:`compiled_spreading`;
        the same labels; the first frame of a size compiles, seconds); where
        compiling fails, eagerly, with a warning

    Returns
    -------
    (Y, X) int32 Tensor on the maps' device, labels 1..N, 0 = background
    """
    if foreground.shape != distance.shape or foreground.ndim != 2:
        raise ValueError(
            "foreground and distance must be (Y, X) tensors of one shape, got "
            f"{tuple(foreground.shape)} and {tuple(distance.shape)}"
        )
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    mask = foreground > fg_threshold
    dist = distance.float()
    n = mask.numel()
    # seeds keep 1 + their first pixel's raster index; orphans (foreground
    # blobs without a seed) come after every seed, as labels_from_maps
    # numbers them
    seed_px = mask & (dist > seed_threshold)
    seeds = connected_components_t(seed_px)
    # keys: a label's (1 + its first pixel's index, at most n), ``open_key``
    # where a band lets a label in and none came yet, ``wall`` elsewhere;
    # padded by a border of walls so a step reads its neighbours as views
    dtype = _key_dtype(n + 2)
    open_key, wall = _open_and_wall(dtype)
    h, w = mask.shape
    keys = torch.full((h + 2, w + 2), wall, dtype=dtype, device=mask.device)
    keys[1:-1, 1:-1] = torch.where(seeds > 0, seeds.to(dtype), wall)
    spare = keys.clone()
    # the band each pixel joins: the first k (1 .. levels - 1) with
    # dist > seed_threshold - k * step, else the last (the bounds in the
    # distance's dtype, as comparing with a Python number rounds them); 0
    # for seeds and background, which no band opens. A pixel of band k is
    # still a wall when its band opens (only open pixels take a label), so
    # opening it is one comparison, where a band mask per band took four.
    step = seed_threshold / levels
    bounds = _constant(
        tuple(seed_threshold - k * step for k in range(levels - 1, 0, -1)),
        dist.dtype,
        dist.device,
    )
    # (the maps arrive as views of the network's output: searchsorted wants
    # them contiguous)
    band_of = levels - torch.bucketize(dist.contiguous(), bounds, out_int32=True)
    band_of.masked_fill_(seed_px | ~mask, 0)
    for k in range(1, levels + 1):
        inner = keys[1:-1, 1:-1]
        inner.masked_fill_(band_of == k, open_key)
        done = _spread_compiled(keys, open_key, wall) if compiled else None
        if done is None:
            compiled = False
            done = _spread(keys, spare, open_key)
        keys, spare = done
    keys = keys[1:-1, 1:-1]
    labelled = keys < open_key
    orphans = connected_components_t(mask & ~labelled)
    labels = torch.where(labelled, keys.long(), torch.zeros_like(orphans))
    labels = torch.where(orphans > 0, orphans + n, labels)
    return _drop_small_t(labels, int(min_size_px), border_min_size_px)
