"""The models' device path (what runs on a GPU), run here on the CPU through
the same code: normalisation, rescaling, the network and the segmenter's
post-processing in torch (:mod:`smartscope.nn.device_labels`), against the
host path (numpy, scipy, scikit-image) on simulated frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from smartscope.hardware import open_core
from smartscope.metrics import average_precision
from smartscope.nn import load_model
from smartscope.nn.device_labels import (
    connected_components_t,
    labels_from_maps_t,
    percentile_range_t,
    relabel_sequential_t,
)
from smartscope.nn.instances import (
    distance_targets,
    labels_from_maps,
    relabel_sequential,
)
from smartscope.nn.normalize import percentile_range


def _frame(seed: int, objective: str | None = None) -> np.ndarray:
    with open_core(seed=seed) as core:
        if objective is not None:
            core.setConfig("Objective", objective)
        core.snapImage()
        return np.asarray(core.getImage()).copy()


@pytest.fixture(scope="module")
def segmenter():
    return load_model("nuclei-seg", device="cpu", precision="float32")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_components_match_scipy_numbering(seed):
    """Random masks: the same 4-connected components as ``ndi.label``,
    numbered the same way once made sequential."""
    rng = np.random.default_rng(seed)
    mask = ndi.binary_opening(rng.random((97, 131)) > 0.45)
    want, n = ndi.label(mask)
    got = relabel_sequential_t(connected_components_t(torch.from_numpy(mask)))
    assert n > 5
    assert got.dtype == torch.int32
    np.testing.assert_array_equal(got.numpy(), want)


def _serpentine(size: int) -> np.ndarray:
    """One one-pixel path running along every other row, turning at the
    ends: a component as long as a mask allows."""
    mask = np.zeros((size, size), bool)
    mask[::2] = True
    mask[1::4, -1] = True
    mask[3::4, 0] = True
    return mask


@pytest.mark.parametrize(
    "name", ["serpentine", "disc", "empty", "full", "row", "column", "checkers"]
)
def test_components_of_awkward_shapes(name):
    """Shapes where spreading an index pixel by pixel takes a step per pixel
    of length (a winding path, a large disc), and the degenerate ones: the
    union-find's components are scipy's."""
    yy, xx = np.mgrid[:300, :300]
    mask = {
        "serpentine": _serpentine(61),
        "disc": (yy - 150) ** 2 + (xx - 150) ** 2 < 140**2,
        "empty": np.zeros((40, 30), bool),
        "full": np.ones((40, 30), bool),
        "row": np.ones((1, 50), bool),
        "column": np.ones((50, 1), bool),
        "checkers": (yy[:40, :40] + xx[:40, :40]) % 2 == 0,
    }[name]
    want, n = ndi.label(mask)
    got = relabel_sequential_t(connected_components_t(torch.from_numpy(mask)))
    np.testing.assert_array_equal(got.numpy(), want)
    assert int(got.max()) == n


def test_relabel_sequential_matches_numpy():
    labels = np.array([[0, 7, 7, 3], [40, 0, 3, 3], [0, 0, 0, 9]], np.int64)
    got = relabel_sequential_t(torch.from_numpy(labels)).numpy()
    np.testing.assert_array_equal(got, relabel_sequential(labels))
    zeros = relabel_sequential_t(torch.zeros((4, 5), dtype=torch.int64))
    assert zeros.dtype == torch.int32
    assert int(zeros.max()) == 0


def test_percentiles_match_the_host():
    rng = np.random.default_rng(3)
    for shape in ((64, 80), (1024, 1024)):  # the second is sampled with a stride
        image = rng.gamma(2.0, 300.0, shape).astype(np.float32)
        low, high = percentile_range_t(torch.from_numpy(image), p_low=1, p_high=99.8)
        want = percentile_range(image, p_low=1, p_high=99.8)
        np.testing.assert_allclose([float(low), float(high)], want, rtol=1e-5)
    flat = torch.full((32, 32), 5.0)
    low, high = percentile_range_t(flat)
    assert float(high) > float(low)


@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(1).gamma(2.0, 300.0, 5000).astype(np.float32),
        np.random.default_rng(2).integers(0, 4096, 1 << 18).astype(np.float32),
        np.arange(3, dtype=np.float64),
        np.full(9, 7.0, np.float32),
        np.random.default_rng(3).integers(90, 4096, 1 << 18).astype(np.uint16),
        np.random.default_rng(4).integers(0, 256, 1001).astype(np.uint8),
        np.array([65535, 0, 65535, 7], np.uint16),
        np.full(5, 300, np.uint16),
    ],
)
@pytest.mark.parametrize("ps", [(1.0, 99.8), (0.0, 100.0), (50.0, 50.0), (0.5, 99.9)])
def test_percentiles_from_one_partition_are_numpys(values, ps):
    """The host's percentiles (one partial sort for both; a histogram for
    8- and 16-bit frames) are numpy's linear interpolation; NaN falls back
    to numpy (NaN out)."""
    from smartscope.nn.normalize import _percentiles

    np.testing.assert_allclose(
        _percentiles(values, ps), np.percentile(values, ps), rtol=1e-6, atol=1e-7
    )
    with_nan = values.astype(np.float64)
    with_nan[0] = np.nan
    assert np.isnan(_percentiles(with_nan, ps)).all()


def _tail_cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    n = 1 << 18  # a 512² frame; its sample takes every 32nd element
    fooled = rng.normal(100.0, 5.0, n).astype(np.float32)
    fooled[::32] = np.arange(n // 32, dtype=np.float32) - 1e6  # all low
    fooled_high = -fooled
    return {
        "denoised-like": rng.gamma(2.0, 300.0, n).astype(np.float32),
        "ties at the cuts": rng.integers(0, 12, n).astype(np.float32),
        "float64 with a bright corner": np.concatenate(
            [rng.normal(0, 1, n - 900), np.full(900, 1e4)]
        ),
        "sample all below the rest": fooled,
        "sample all above the rest": fooled_high,
        "sorted": np.sort(rng.normal(0, 1, 70_000)),
        "small": rng.normal(0, 1, 37),
    }


@pytest.mark.parametrize("case", list(_tail_cases()))
@pytest.mark.parametrize("ps", [(1.0, 99.8), (0.5, 99.9), (9.0, 91.0), (0.0, 100.0)])
def test_float_percentiles_from_the_tails_are_exact(case, ps):
    """Float data's ranks come from the elements beyond a cut set by a
    strided sample: the same values as a full sort, also where the sample
    misleads (its cut then holds too few elements and that tail is selected
    from the whole array) and where many elements tie at the cut."""
    from smartscope.nn.normalize import _percentiles, _tail_ranks

    values = _tail_cases()[case]
    n = values.size
    ranks = sorted({0, n - 1, *(min(int((n - 1) * p / 100), n - 1) for p in ps)})
    ranks = sorted({*ranks, *(min(k + 1, n - 1) for k in ranks)})
    got = _tail_ranks(values, ranks)
    want = np.sort(values)[ranks]
    assert [got[k] for k in ranks] == want.tolist()
    np.testing.assert_allclose(
        _percentiles(values, ps), np.percentile(values, ps), rtol=1e-6, atol=1e-7
    )


def _discs(centres, radius, shape=(96, 128)) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    for i, (cy, cx) in enumerate(centres, 1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = i
    return labels


def test_touching_nuclei_are_split_as_the_watershed_splits_them():
    """Two overlapping discs, a lone disc and a small disc at the border:
    the exact maps of these objects give the same labels both ways."""
    truth = _discs([(40, 40), (40, 62), (70, 100), (2, 120)], 12)
    fg, dist = distance_targets(truth)
    kwargs = {"min_size_px": 40, "border_min_size_px": 10}
    want = labels_from_maps(fg, dist, **kwargs)
    got = labels_from_maps_t(
        torch.from_numpy(fg), torch.from_numpy(dist), **kwargs
    ).numpy()
    assert int(want.max()) == 4
    np.testing.assert_array_equal(got, want)
    # the border object is kept by its own limit, dropped by the inner one
    cut = int((want == want[0, 120]).sum())
    assert cut < int((want == want[70, 100]).sum())
    got = labels_from_maps_t(
        torch.from_numpy(fg), torch.from_numpy(dist), min_size_px=cut + 1
    ).numpy()
    assert int(got.max()) == 3
    assert got[0, 120] == 0


def test_seedless_foreground_is_an_object_and_small_ones_go():
    fg = np.zeros((40, 40), np.float32)
    fg[5:15, 5:15] = 1.0  # no seed: distance below the threshold
    fg[30:32, 30:32] = 1.0  # 4 px, under min_size_px
    dist = np.where(fg > 0, 0.2, 0.0).astype(np.float32)
    got = labels_from_maps_t(
        torch.from_numpy(fg), torch.from_numpy(dist), min_size_px=8
    ).numpy()
    want = labels_from_maps(fg, dist, min_size_px=8)
    np.testing.assert_array_equal(got, want)
    assert int(got.max()) == 1
    assert int((got == 1).sum()) == 100
    empty = labels_from_maps_t(torch.zeros((16, 16)), torch.zeros((16, 16)))
    assert empty.dtype == torch.int32
    assert int(empty.max()) == 0


def test_labels_from_maps_t_refuses_bad_input():
    with pytest.raises(ValueError, match="one shape"):
        labels_from_maps_t(torch.zeros((8, 8)), torch.zeros((8, 9)))
    with pytest.raises(ValueError, match="levels"):
        labels_from_maps_t(torch.zeros((8, 8)), torch.zeros((8, 8)), levels=0)


@pytest.mark.parametrize(("seed", "objective"), [(1, None), (2, None), (5, "20x")])
def test_maps_of_simulated_frames_give_the_host_labels(segmenter, seed, objective):
    """The segmenter's own maps of simulated frames (10x and 20x, nuclei
    touching in places): the same objects, at IoU 0.9, as the watershed."""
    image = _frame(seed, objective)
    fg, dist = segmenter.maps(image, diameter_px=18.2 if objective is None else 37.0)
    post = segmenter.card.postprocess
    kwargs = {
        "fg_threshold": post.fg_threshold,
        "seed_threshold": post.seed_threshold,
        "min_size_px": 20,
        "border_min_size_px": 5,
    }
    want = labels_from_maps(fg, dist, **kwargs)
    got = labels_from_maps_t(torch.from_numpy(fg), torch.from_numpy(dist), **kwargs)
    assert int(want.max()) >= 10
    ap = average_precision(want, got.numpy(), thresholds=(0.5, 0.9))
    assert ap[0.5] == 1.0
    assert ap[0.9] >= 0.97
    assert (got.numpy() == want).mean() >= 0.999


def test_segmenter_device_path_agrees_with_the_host_path(segmenter):
    """``keep_on_device``: the whole predict (uint16 frame in, labels out,
    rescaled to the training diameter) through the tensors; the simulator's
    frames come out with the host path's objects."""
    image = _frame(3)
    assert not segmenter.on_device  # the CPU default is the host path
    host = segmenter.predict(image, diameter_px=18.2)
    segmenter.keep_on_device = True
    try:
        assert segmenter.on_device
        dev = segmenter.predict(image, diameter_px=18.2)
        dev_tta = segmenter.predict(image, diameter_px=18.2, tta=True)
        dev_small = segmenter.predict(image, diameter_px=18.2, min_size_px=2)
    finally:
        segmenter.keep_on_device = None
    host_tta = segmenter.predict(image, diameter_px=18.2, tta=True)
    host_small = segmenter.predict(image, diameter_px=18.2, min_size_px=2)
    assert dev.dtype == np.int32
    assert dev.shape == image.shape
    assert int(host.max()) >= 10
    for a, b in ((host, dev), (host_tta, dev_tta), (host_small, dev_small)):
        ap = average_precision(a, b, thresholds=(0.5, 0.9))
        assert ap[0.5] >= 0.99
        assert ap[0.9] >= 0.95
    assert dev_small.max() >= dev.max()


def test_denoiser_device_path_agrees_with_the_host_path():
    model = load_model("denoise-care", device="cpu", precision="float32")
    image = _frame(4)
    host = model.predict(image)
    model.keep_on_device = True
    dev = model.predict(image)
    dev_tta = model.predict(image[:128, :160], tta=True)
    model.keep_on_device = False
    host_tta = model.predict(image[:128, :160], tta=True)
    scale = float(host.max() - host.min())
    assert dev.dtype == np.float32
    assert dev.shape == image.shape
    assert np.abs(dev - host).max() < 1e-4 * scale
    assert np.abs(dev_tta - host_tta).max() < 1e-4 * scale


def test_frames_cross_in_their_own_dtype():
    """A uint16 frame goes to the device as 16 bits (half the bytes of
    float32) and keeps its values above 32767; a colour or NaN-holding image
    is handled as on the host."""
    model = load_model("denoise-care", device="cpu", precision="float32")
    frame = np.array([[0, 1, 40000], [65535, 7, 32768]], np.uint16)
    t = model.predictor.to_device(frame)
    assert t.dtype == torch.int32
    np.testing.assert_array_equal(t.numpy(), frame)
    assert model.predictor.to_device(np.zeros((8, 8), np.uint32)).dtype == torch.int64
    big_endian = frame.astype(">u2")  # as some TIFF files hold it
    np.testing.assert_array_equal(model.predictor.to_device(big_endian).numpy(), frame)
    rng = np.random.default_rng(0)
    rgb = (rng.random((64, 64, 3)) * 1000).astype(np.float32)
    rgb[3, 4, 0] = np.nan
    host = model.predict(rgb)
    model.keep_on_device = True
    dev = model.predict(rgb)
    assert np.isfinite(dev).all()
    assert np.abs(dev - host).max() < 1e-3 * float(host.max() - host.min())


def test_a_batch_gives_each_frame_what_it_gets_alone(segmenter):
    """Frames of several positions in one batch (one copy, one network
    call): each comes out as it does alone, on the device path and off it;
    frames of other sizes, or without a diameter, go one by one."""
    denoiser = load_model("denoise-care", device="cpu", precision="float32")
    frames = [_frame(seed) for seed in (6, 7, 8)]
    for on in (True, False):
        denoiser.keep_on_device = segmenter.keep_on_device = on
        try:
            alone = [denoiser.predict(f) for f in frames]
            together = denoiser.predict_batch(frames)
            for a, b in zip(alone, together, strict=True):
                assert b.dtype == np.float32
                assert np.abs(a - b).max() < 1e-4 * float(a.max() - a.min())
            labels_alone = [segmenter.predict(d, diameter_px=18.2) for d in alone]
            labels_together = segmenter.predict_batch(together, diameter_px=18.2)
            for a, b in zip(labels_alone, labels_together, strict=True):
                assert b.dtype == np.int32
                assert int(a.max()) >= 10
                ap = average_precision(a, b, thresholds=(0.5, 0.9))
                assert ap[0.5] == 1.0
                assert ap[0.9] >= 0.97
            mixed = [frames[0], frames[1][:256, :384]]
            out = segmenter.predict_batch(mixed, diameter_px=18.2, min_size_px=10)
            assert [o.shape for o in out] == [(512, 512), (256, 384)]
            np.testing.assert_array_equal(
                out[1], segmenter.predict(mixed[1], diameter_px=18.2, min_size_px=10)
            )
        finally:
            denoiser.keep_on_device = segmenter.keep_on_device = None
    assert segmenter.predict_batch([]) == []
    with pytest.raises(ValueError, match="min_size_px"):
        segmenter.predict_batch(frames, diameter_px=18.2, min_size_px=-1)


def test_a_camera_frame_normalises_as_its_float_copy(segmenter):
    """A uint16 frame (percentiles from its histogram) and the same frame as
    float32 (from a partial sort) give the model the same input."""
    frame = np.random.default_rng(5).integers(100, 3000, (300, 260)).astype(np.uint16)
    a, lo_a, hi_a = segmenter._normalized(frame)
    b, lo_b, hi_b = segmenter._normalized(frame.astype(np.float32))
    assert (lo_a, hi_a) == (lo_b, hi_b)
    np.testing.assert_array_equal(a, b)


def _spread_reference(keys: np.ndarray, open_key: float) -> np.ndarray:
    """Spreading one step at a time in plain numpy (every open pixel next to
    a key takes the smallest; the others keep theirs) until nothing
    changes."""
    keys = keys.copy()
    while True:
        new = keys.copy()
        for y, x in zip(*np.nonzero(keys == open_key), strict=True):
            around = [
                keys[y + dy, x + dx]
                for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1))
                if 0 <= y + dy < keys.shape[0] and 0 <= x + dx < keys.shape[1]
            ]
            new[y, x] = min([open_key, *around])
        if np.array_equal(new, keys):
            return keys
        keys = new


@pytest.mark.parametrize("reach", [1, 3, 4, 7, 20])
def test_spreading_checks_once_per_block_of_steps(reach):
    """The watershed's spreading gives what spreading a step at a time
    gives, and waits for the device once per CHECK_EVERY steps, counting
    the step that changes nothing: a band that fills in ``reach`` steps
    costs ceil((reach + 1) / CHECK_EVERY) checks."""
    from smartscope.nn.device_labels import CHECK_EVERY, _spread
    from smartscope.nn.op_count import OpCounter

    open_key, wall = 1000.0, 1001.0
    keys = np.full((24, 48), wall, np.float32)
    keys[5, 2 : 3 + reach] = open_key  # a corridor `reach` pixels long
    keys[5, 2] = 7.0  # a label at its end
    keys[8:11, 29:32] = open_key  # a label with open pixels one step around
    keys[9, 30] = 3.0
    keys[15, 10:13] = (5.0, open_key, 2.0)  # two labels reach it at once
    keys[20, 40] = open_key  # an open pixel no label reaches
    padded = torch.from_numpy(np.pad(keys, 1, constant_values=wall))
    counter = OpCounter()
    with counter:
        out, _ = _spread(padded, padded.clone(), open_key)
    np.testing.assert_array_equal(
        out[1:-1, 1:-1].numpy(), _spread_reference(keys, open_key)
    )
    got = out[1:-1, 1:-1]
    assert (got[5, 2 : 3 + reach] == 7.0).all()
    assert got[15, 11] == 2.0  # the smaller key wins
    assert got[20, 40] == open_key
    assert dict(counter.syncs) == {"equal": -(-(reach + 1) // CHECK_EVERY)}


def test_post_processing_waits_for_the_device_only_at_its_checks(segmenter):
    """The device path's post-processing of a frame reads from the device
    only where it must: one nonzero per labelling (the pairs of neighbours),
    the convergence checks, the largest label and the objects' sizes; no
    boolean-mask indexing (a hidden nonzero)."""
    from smartscope.nn.op_count import OpCounter

    fg, dist, _ = segmenter.maps_auto_size(_frame(3))
    counter = OpCounter()
    with counter:
        labels = labels_from_maps_t(
            torch.from_numpy(fg), torch.from_numpy(dist), min_size_px=8
        )
    assert int(labels.max()) > 10
    assert set(counter.syncs) <= {"equal", "nonzero", "bincount", "_local_scalar_dense"}
    assert counter.syncs["nonzero"] == 2  # seeds, then seedless blobs
    assert counter.syncs["bincount"] == counter.syncs["_local_scalar_dense"] == 1
    mask = torch.from_numpy(np.random.default_rng(0).random((40, 50)) > 0.4)
    counter = OpCounter()
    with counter:
        relabel_sequential_t(connected_components_t(mask))
    assert counter.syncs["nonzero"] == 1
    assert set(counter.syncs) <= {"equal", "nonzero", "_local_scalar_dense"}


def test_compiled_spreading_gives_the_same_labels(segmenter):
    """Through ``torch.compile`` (C++ here, Triton on a GPU) the watershed
    gives the eager labels exactly, also compiled on a worker thread (where
    the analysis runs)."""
    import os
    import shutil
    from concurrent.futures import ThreadPoolExecutor

    from smartscope.nn.device_labels import compiled_spreading

    compilers = (os.environ.get("CXX", "g++"), "c++", "clang++")
    if not any(shutil.which(c) for c in compilers):
        pytest.skip("no C++ compiler for torch.compile's CPU kernels")
    fg, dist, _ = segmenter.maps_auto_size(_frame(6)[:200, :240])
    fg_t, dist_t = torch.from_numpy(fg), torch.from_numpy(dist)
    want = labels_from_maps_t(fg_t, dist_t, min_size_px=8)
    with ThreadPoolExecutor(1) as pool:
        got = pool.submit(
            labels_from_maps_t, fg_t, dist_t, min_size_px=8, compiled=True
        ).result()
    assert int(want.max()) > 3
    assert torch.equal(got, want)
    assert compiled_spreading() is not None  # it compiled: no fallback
    # the segmenter's device path compiles on CUDA by default, here if told
    frame = _frame(6)[:200, :240]
    assert not segmenter.compiles_postprocess
    segmenter.keep_on_device = True
    try:
        eager = segmenter.predict(frame, diameter_px=18.2)
        segmenter.compile_postprocess = True
        assert segmenter.compiles_postprocess
        np.testing.assert_array_equal(segmenter.predict(frame, diameter_px=18.2), eager)
        assert compiled_spreading() is not None
    finally:
        segmenter.keep_on_device = segmenter.compile_postprocess = None


def test_the_denoised_frame_is_not_sent_to_the_device_again(segmenter):
    """On the device path the segmenter takes the denoiser's output where it
    already is (its twin), instead of copying the host copy back: no
    second copy to the device, the same labels as from that host copy."""
    from smartscope.nn import twins

    denoiser = load_model("denoise-care", device="cpu", precision="float32")
    frames = [_frame(7), _frame(8)]
    calls = []
    real = segmenter.predictor.to_device

    def counted(image):
        calls.append(image.shape)
        return real(image)

    denoiser.keep_on_device = segmenter.keep_on_device = True
    segmenter.predictor.to_device = counted
    try:
        denoised = denoiser.predict(frames[0])
        labels = segmenter.predict(denoised, diameter_px=18.2)
        assert calls == []
        again = segmenter.predict(denoised, diameter_px=18.2)  # taken once: copied
        assert calls == [(1, *denoised.shape)]
        np.testing.assert_array_equal(labels, again)
        assert int(labels.max()) > 10
        batch = denoiser.predict_batch(frames)
        # each twin holds its own frame, not a view of the whole batch
        held = [twins._twins[id(d)][1] for d in batch]
        assert [t.untyped_storage().nbytes() for t in held] == [d.nbytes for d in batch]
        calls.clear()
        together = segmenter.predict_batch(batch, diameter_px=18.2)
        assert calls == []
        for d, lab in zip(batch, together, strict=True):
            np.testing.assert_array_equal(
                lab, segmenter.predict(d.copy(), diameter_px=18.2)
            )
        # a batch whose first twin was pushed out: only that frame is sent
        batch = denoiser.predict_batch(frames)
        twins.forget(batch[0])
        calls.clear()
        assert all(
            np.array_equal(a, b)
            for a, b in zip(
                segmenter.predict_batch(batch, diameter_px=18.2), together, strict=True
            )
        )
        assert calls == [(1, *denoised.shape)]
        twins.forget(denoised)
    finally:
        del segmenter.predictor.to_device
        denoiser.keep_on_device = segmenter.keep_on_device = None


def test_twins_are_bounded_taken_once_and_freed_with_their_array():
    """At most MAX_TWINS device copies are kept (the oldest go first), each
    is taken once and only onto its own device, and one goes with its host
    array."""
    import gc

    from smartscope.nn import twins

    cpu = torch.device("cpu")
    arrays = [np.full((4, 4), i, np.float32) for i in range(twins.MAX_TWINS + 3)]
    for a in arrays:
        twins.remember(a, torch.from_numpy(a.copy()))
    assert all(twins.take(a, cpu) is None for a in arrays[:3])  # pushed out
    assert twins.take(arrays[3], torch.device("meta")) is None  # not its device
    got = twins.take(arrays[3], cpu)
    assert got is not None
    assert float(got[0, 0]) == 3.0
    assert twins.take(arrays[3], cpu) is None  # taken once
    twins.forget(arrays[4])
    assert twins.take(arrays[4], cpu) is None
    held = len(twins._twins)
    del arrays[5]
    gc.collect()
    assert len(twins._twins) == held - 1
    for a in arrays:
        twins.forget(a)
    assert all(twins.take(a, cpu) is None for a in arrays)


def test_a_failed_compiled_call_falls_back_to_eager_steps(segmenter, monkeypatch):
    """A frame size past torch's recompile limit (or the device out of
    memory) spreads that frame eagerly and keeps compiling on; any other
    failure of the compiled steps turns them off for the process. The
    labels are the eager ones either way."""
    from torch._dynamo.exc import FailOnRecompileLimitHit

    from smartscope.nn import device_labels

    fg, dist, _ = segmenter.maps_auto_size(_frame(6)[:96, :128])
    fg_t, dist_t = torch.from_numpy(fg), torch.from_numpy(dist)
    want = labels_from_maps_t(fg_t, dist_t, min_size_px=8)

    def past_the_limit(*args):
        raise FailOnRecompileLimitHit("recompile_limit reached")

    def broken(*args):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setitem(device_labels._compiled, "block", past_the_limit)
    got = labels_from_maps_t(fg_t, dist_t, min_size_px=8, compiled=True)
    assert torch.equal(got, want)
    assert device_labels._compiled["block"] is past_the_limit
    monkeypatch.setitem(device_labels._compiled, "block", broken)
    got = labels_from_maps_t(fg_t, dist_t, min_size_px=8, compiled=True)
    assert torch.equal(got, want)
    assert device_labels._compiled["block"] is None
