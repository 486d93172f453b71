"""The area filter and the measurements on the device that made the labels
(:mod:`smartscope.analysis.measure_device`), here on the CPU through the
same torch code a GPU runs: against scikit-image's ``regionprops_table`` on
the simulator's true nuclei, against the host's filter on any numbering,
and through the analysis against its host path."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from skimage.segmentation import relabel_sequential

from frames import assert_regionprops, snap_frame
from smartscope.analysis import AnalysisSettings, filter_by_area, measure_objects
from smartscope.analysis.analyser import FrameAnalyser
from smartscope.analysis.measure import object_stats, object_table
from smartscope.analysis.measure_device import filter_and_measure_t
from smartscope.hardware import open_core
from smartscope.sim import get_simulator

COLUMNS = (
    "label",
    "row",
    "col",
    "x_um",
    "y_um",
    "area_um2",
    "mean_intensity",
    "max_intensity",
    "eccentricity",
)


@pytest.fixture(scope="module")
def truth_frames() -> list:
    """Two 10x fields of the simulated sample with their true labels."""
    out = []
    with open_core(seed=3) as core:
        for i, (x, y) in enumerate([(0, 0), (-500, 400)]):
            core.setXYPosition(float(x), float(y))
            core.waitForSystem()
            frame = snap_frame(core, i)
            # the cells' own ids, numbered 1..N as a segmenter numbers them
            labels = relabel_sequential(get_simulator(core).truth().labels)[0]
            out.append((frame, labels.astype(np.int32)))
    return out


def _device(frames_and_labels, *, min_px=1, max_px=np.inf, relabel=True):
    labels = torch.from_numpy(np.stack([lab for _, lab in frames_and_labels]))
    images = torch.from_numpy(
        np.stack([f.image for f, _ in frames_and_labels]).astype(np.int32)
    )
    return filter_and_measure_t(
        labels, images, min_px=min_px, max_px=max_px, relabel=relabel
    )


def test_the_device_measures_what_regionprops_measures(truth_frames) -> None:
    """The simulator's true nuclei of two fields in one batch: every
    column of the table equals scikit-image's ``regionprops_table`` of the
    same labels and raw frame, and the labels come back as they were."""
    out, stats = _device(truth_frames)
    for i, (frame, labels) in enumerate(truth_frames):
        np.testing.assert_array_equal(out[i].numpy(), labels)
        table = object_table(stats[i], frame)
        assert len(table) == int(labels.max()) > 20
        assert_regionprops(table, labels, frame.image, frame.pixel_size_um, rtol=1e-12)
        # and the host's own measurement, column by column
        host = measure_objects(labels, frame.image, frame)
        for name in COLUMNS:
            np.testing.assert_allclose(
                getattr(table, name), getattr(host, name), rtol=1e-12, atol=1e-9
            )


@pytest.mark.parametrize("seed", range(3))
def test_the_device_filter_is_the_hosts(truth_frames, seed) -> None:
    """Any numbering (gaps, a shuffled order), objects dropped at both ends
    of the range, a frame left with none: the labels are the host
    filter's, and the sums those the host makes of its labels."""
    rng = np.random.default_rng(seed)
    batch = []
    for frame, labels in truth_frames:
        n = int(labels.max())
        lut = np.zeros(n + 1, np.int32)
        lut[1:] = rng.choice(np.arange(1, 4 * n), size=n, replace=False)
        batch.append((frame, lut[labels]))
    # a frame whose objects are all too small or too large
    batch.append((truth_frames[0][0], np.where(truth_frames[0][1] > 0, 9, 0)))
    sizes = np.bincount(truth_frames[0][1].ravel())[1:]
    lo, hi = int(np.percentile(sizes, 25)), float(np.percentile(sizes, 80))
    out, stats = _device(batch, min_px=lo, max_px=hi)
    # where nothing keeps the labels: the same sums, no label image made
    none, again = _device(batch, min_px=lo, max_px=hi, relabel=False)
    assert none is None
    for a, b in zip(stats, again, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_array_equal(a.mean_intensity, b.mean_intensity)
    px2 = truth_frames[0][0].pixel_size_um ** 2
    for i, (frame, labels) in enumerate(batch):
        want = filter_by_area(
            labels,
            pixel_size_um=frame.pixel_size_um,
            min_area_um2=lo * px2,
            max_area_um2=hi * px2,
        )
        np.testing.assert_array_equal(out[i].numpy(), want)
        ref = object_stats(want, frame.image)
        if i == len(batch) - 1:
            assert ref is None
            assert stats[i] is None
            continue
        assert 0 < len(ref.label) < len(np.unique(labels)) - 1  # some dropped
        for name in ref.__dataclass_fields__:
            np.testing.assert_allclose(
                getattr(stats[i], name), getattr(ref, name), rtol=1e-12, atol=1e-9
            )


def test_sparse_numbering_is_counted_in_the_objects_not_the_ids(truth_frames):
    """Ids far above the number of objects (a foreign segmenter's, or raster
    keys) are numbered densely first: the bins grow with the objects, and
    the result is the host filter's."""
    frame, labels = truth_frames[0]
    n = int(labels.max())
    lut = np.zeros(n + 1, np.int64)
    lut[1:] = np.sort(np.random.default_rng(0).choice(10**6, size=n, replace=False)) + 1
    sparse = lut[labels]
    out, (stats,) = _device([(frame, sparse)], min_px=30)
    want = filter_by_area(sparse, pixel_size_um=1.0, min_area_um2=30)
    np.testing.assert_array_equal(out[0].numpy(), want)
    ref = object_stats(want, frame.image)
    for name in ref.__dataclass_fields__:
        np.testing.assert_allclose(
            getattr(stats, name), getattr(ref, name), rtol=1e-12, atol=1e-9
        )


def test_a_batch_costs_the_device_the_same_launches_and_syncs(truth_frames) -> None:
    """What a GPU pays per call, counted on the CPU (every aten operation):
    the same kernels for one frame as for two, and two syncs (the
    foreground's ``nonzero``, the largest label) besides the copy back;
    no ``bincount``, whose CUDA kernel reads its input's range back first."""
    from smartscope.nn.op_count import OpCounter

    counts = []
    for batch in (truth_frames[:1], truth_frames):
        counter = OpCounter()
        with counter:
            _device(batch)
        counts.append((sum(counter.kernels.values()), dict(counter.syncs)))
        assert "bincount" not in counter.kernels
    assert counts[0] == counts[1]
    assert counts[0][1] == {"nonzero": 1, "_local_scalar_dense": 1}
    assert counts[0][0] < 60


def test_bad_input_is_named() -> None:
    labels = torch.zeros((1, 8, 8), dtype=torch.int32)
    with pytest.raises(ValueError, match=r"labels \(1, 8, 8\) and images \(1, 8, 9\)"):
        filter_and_measure_t(labels, torch.zeros((1, 8, 9)), min_px=1, max_px=10)
    with pytest.raises(ValueError, match="min_px must be at least 1, got 0"):
        filter_and_measure_t(labels, torch.zeros((1, 8, 8)), min_px=0, max_px=10)
    out, stats = filter_and_measure_t(
        labels, torch.zeros((1, 8, 8)), min_px=1, max_px=10
    )
    assert stats == [None]
    assert out.dtype == torch.int32
    assert not out.any()


@pytest.fixture(scope="module")
def frames() -> list:
    """Two positions of the simulated sample."""
    out = []
    with open_core(seed=5) as core:
        for i, (x, y) in enumerate([(0, 0), (400, 0)]):
            core.setXYPosition(float(x), float(y))
            core.waitForSystem()
            f = snap_frame(core, i)
            out.append(dataclasses.replace(f, position=f"p{i}"))
    return out


def _on_the_device_path(denoise: str | None) -> tuple[FrameAnalyser, ...]:
    """Two analysers of nuclei-seg (and ``denoise``), float32, with their
    models on the device path (here the CPU)."""
    settings = AnalysisSettings(
        denoise=denoise,
        segmenter="model",
        model="nuclei-seg",
        precision="float32",
        min_area_um2=60.0,
    )
    pair = FrameAnalyser(settings), FrameAnalyser(settings)
    for a in pair:
        a.load_models()
        for m in (a._denoiser, a._segmenter):
            if m is not None:
                m.keep_on_device = True
    return pair


@pytest.mark.parametrize("denoise", ["denoise-care", None])
def test_the_analysis_measures_on_the_segmenters_device(frames, denoise) -> None:
    """With the segmenter on its device path (here the CPU), the area
    filter and the measurements run there: the same labels, objects and
    tracks as the host path, one frame at a time and in a batch; the raw
    frames the measurements read are those the first model copied over
    (with a denoiser the segmenter copies nothing; without one, each frame
    once, for its own network); the device's part is in the measure
    stage."""
    host, device = _on_the_device_path(denoise)
    # the host analyser: the same labels path, measured on the host
    host._measures_on_device = lambda: False  # type: ignore[method-assign]
    uploads: list[tuple[int, ...]] = []
    real = device._segmenter.predictor.to_device
    device._segmenter.predictor.to_device = lambda image, real=real: (
        uploads.append(image.shape) or real(image)
    )
    want = [host.analyse(f) for f in frames]
    alone = [device.analyse(f) for f in frames]
    frames_again = [dataclasses.replace(f, t_s=f.t_s + 1.0) for f in frames]
    want += [host.analyse(f) for f in frames_again]
    batched = device.analyse_batch(frames_again)
    shape = frames[0].image.shape
    if denoise is None:
        assert uploads == [(1, *shape)] * 2 + [(2, *shape)]
    else:
        assert uploads == []
    for a, b in zip(want, alone + batched, strict=True):
        assert a.error is None
        assert b.error is None
        np.testing.assert_array_equal(a.labels, b.labels)
        assert len(a.objects) == len(b.objects) > 5
        for oa, ob in zip(a.objects, b.objects, strict=True):
            assert oa.track_id == ob.track_id
            for name in COLUMNS:
                assert getattr(oa, name) == pytest.approx(
                    getattr(ob, name), rel=1e-9, abs=1e-9
                ), name
        assert b.extra["stages_ms"]["measure"] > 0
        assert b.extra["stages_ms"]["segment"] > 0


def _spy_to_host(model, calls: list) -> None:
    real = model.predictor.to_host
    model.predictor.to_host = lambda t, real=real, name=model.name: (
        calls.append(name) or real(t)
    )


@pytest.mark.parametrize(
    ("kept", "copied"),
    [
        (frozenset(), []),
        (frozenset({"labels"}), ["nuclei-seg"]),
        (frozenset({"labels", "denoised"}), ["denoise-care", "nuclei-seg"]),
    ],
)
def test_images_no_result_keeps_stay_on_the_device(frames, kept, copied) -> None:
    """``images_kept`` without the denoised frames or the labels: on the
    device path (here the CPU) they are never brought back to the host
    (the segmenter takes the denoiser's tensors as they are; the labels
    stay where they were measured) and the results carry None for them;
    the objects and tracks are those of an analysis that keeps both, one
    frame at a time and in a batch."""
    both, some = _on_the_device_path("denoise-care")
    some.images_kept = kept
    calls: list[str] = []
    _spy_to_host(some._denoiser, calls)
    _spy_to_host(some._segmenter, calls)
    want = [both.analyse(f) for f in frames] + both.analyse_batch(frames)
    got = [some.analyse(f) for f in frames]
    assert calls == copied * 2
    got += some.analyse_batch(frames)
    assert calls == copied * 3  # one copy each for the batch
    for a, b in zip(want, got, strict=True):
        assert b.error is None
        assert (b.labels is None) is ("labels" not in kept)
        assert (b.denoised is None) is ("denoised" not in kept)
        if b.labels is not None:
            np.testing.assert_array_equal(a.labels, b.labels)
        assert [o.track_id for o in a.objects] == [o.track_id for o in b.objects]
        np.testing.assert_allclose(
            [o.x_um for o in a.objects], [o.x_um for o in b.objects], atol=1e-6
        )


def test_the_host_path_leaves_out_what_no_result_keeps(frames) -> None:
    """On the host path (the CPU's default) nothing is copied, but the
    results carry only the images kept, as on a GPU."""
    settings = AnalysisSettings(
        denoise="denoise-care", segmenter="model", model="nuclei-seg"
    )
    analyser = FrameAnalyser(settings, device="cpu")
    analyser.images_kept = frozenset({"denoised"})
    result = analyser.analyse(frames[0])
    assert result.error is None
    assert result.labels is None
    assert result.denoised is not None
    assert len(result.objects) > 5
