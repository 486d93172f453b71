"""The U-Net, augmentation and training targets: shapes, identity start, seeding."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from smartscope.nn import augment  # noqa: E402
from smartscope.nn.instances import distance_targets, labels_from_maps  # noqa: E402
from smartscope.nn.unet import UNet, UNetConfig  # noqa: E402


@pytest.mark.parametrize(
    ("depth", "unshuffle", "out"), [(1, 1, 1), (2, 2, 2), (3, 2, 1), (3, 1, 2)]
)
def test_unet_shapes(depth, unshuffle, out):
    cfg = UNetConfig(
        depth=depth, base_channels=8, pixel_unshuffle=unshuffle, out_channels=out
    )
    net = UNet(cfg).eval()
    m = cfg.size_multiple
    x = torch.randn(2, 1, 3 * m, 2 * m)
    with torch.inference_mode():
        y = net(x)
    assert y.shape == (2, out, 3 * m, 2 * m)
    assert y.dtype == torch.float32


def test_residual_unet_starts_as_identity():
    net = UNet(UNetConfig(depth=2, base_channels=8, residual=True)).eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(net(x), x)


def test_config_refuses_bad_residual():
    with pytest.raises(ValueError, match="residual"):
        UNetConfig(residual=True, out_channels=2)
    with pytest.raises(ValueError, match="blind_residual"):
        UNetConfig(residual=True, blind_residual=True)


def test_blind_residual_baseline_never_sees_the_pixel():
    """With the learned part silenced, a blind-residual U-Net outputs a
    smoothing of each pixel's neighbours: a constant image comes back as is,
    and changing one pixel changes its neighbours' outputs but not its own."""
    net = UNet(UNetConfig(depth=2, base_channels=8, blind_residual=True)).eval()
    torch.nn.init.zeros_(net.head.weight)
    torch.nn.init.zeros_(net.head.bias)
    with torch.inference_mode():
        flat = torch.full((1, 1, 32, 32), 0.37)
        assert torch.allclose(net(flat), flat, atol=1e-6)
        x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
        bumped = x.clone()
        bumped[0, 0, 16, 16] += 5.0
        diff = (net(bumped) - net(x))[0, 0]
    assert float(diff[16, 16].abs()) < 1e-6
    assert float(diff[16, 17]) > 0.1
    assert float(diff[15, 16]) > 0.1
    assert float(diff[16, 20].abs()) < 1e-6  # outside the 7 x 7 window


def test_import_smartscope_does_not_import_torch():
    code = (
        "import sys, smartscope, smartscope.nn, smartscope.metrics; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_packed_nuclei_touch_along_seams_and_are_seeded():
    from scipy import ndimage as ndi

    img, lab = augment.packed_nuclei(
        (96, 96),
        np.random.default_rng(3),
        diameter_px=20,
        keep=(1.0, 1.0),
        seam=(0.4, 0.4),
    )
    again = augment.packed_nuclei(
        (96, 96),
        np.random.default_rng(3),
        diameter_px=20,
        keep=(1.0, 1.0),
        seam=(0.4, 0.4),
    )
    np.testing.assert_array_equal(lab, again[1])
    assert img.dtype == np.float32
    assert lab.dtype == np.int32
    ids = np.unique(lab)
    assert ids[0] == 0
    np.testing.assert_array_equal(ids, np.arange(len(ids)))  # numbered 1..n
    assert len(ids) - 1 >= 10
    # packed: many pixels of one nucleus border another nucleus directly
    big = lab.max() + 1
    higher = ndi.maximum_filter(lab, size=3) > lab
    lower = ndi.minimum_filter(np.where(lab > 0, lab, big), size=3) < lab
    contact = (lab > 0) & (higher | lower)
    assert contact.sum() > 50
    # each nucleus is one piece, and the seam is dimmer than the nucleus around it
    for k in ids[1:]:
        assert ndi.label(lab == k)[1] == 1
    inner = (lab > 0) & ~contact & (ndi.minimum_filter(lab, size=3) > 0)
    assert img[contact].mean() < 0.8 * img[inner].mean()


def test_augmentation_is_seeded_and_keeps_labels_aligned():
    img = np.zeros((64, 64), np.float32)
    lab = np.zeros((64, 64), np.int32)
    lab[10:30, 10:30] = 1
    lab[35:55, 30:50] = 2
    img[lab > 0] = 1.0
    outs = [
        augment.warp(img, lab, np.random.default_rng(5), out_shape=(48, 48), zoom=1.2)
        for _ in range(2)
    ]
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    w_img, w_lab = outs[0]
    assert w_lab is not None
    assert set(np.unique(w_lab)) <= {0, 1, 2}
    # image and labels moved together: labelled pixels are the bright ones
    assert w_img[w_lab > 0].mean() > 0.9
    assert w_img[w_lab == 0].mean() < 0.1
    r1 = augment.rot90_flip([img, lab], np.random.default_rng(1))
    assert (r1[0] > 0).sum() == (img > 0).sum()
    noisy = augment.add_poisson_gaussian(
        img * 100, np.random.default_rng(0), photons_per_unit=1.0, read_sd_photons=1.0
    )
    assert abs(noisy[lab > 0].mean() - 100) < 2


def test_distance_targets_split_touching_nuclei():
    lab = np.zeros((30, 50), np.int32)
    lab[5:25, 5:25] = 1
    lab[5:25, 25:45] = 2  # touching along a column
    fg, dist = distance_targets(lab)
    assert fg.sum() == (lab > 0).sum()
    assert dist.max() == pytest.approx(1.0)
    assert dist[15, 24] < 0.2
    assert dist[15, 25] < 0.2
    out = labels_from_maps(fg, dist)
    assert out.max() == 2
    assert out.dtype == np.int32


def test_diameter_estimate_is_not_outvoted_by_debris():
    """Five nuclei 80 px across among fifty specks of debris: the estimate is
    the nuclei's (a plain median over components gave the specks' size)."""
    from smartscope.nn.instances import estimate_diameter_px

    yy, xx = np.mgrid[:600, :600]
    mask = np.zeros((600, 600), bool)
    for cy, cx in [(100, 100), (100, 300), (300, 200), (450, 450), (300, 480)]:
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= 40**2
    rng = np.random.default_rng(0)
    for _ in range(50):
        y, x = rng.integers(0, 595, 2)
        if not mask[y : y + 5, x : x + 5].any():
            mask[y : y + 5, x : x + 5] = True
    assert 70 <= estimate_diameter_px(mask) <= 90


def test_object_diameter_weights_by_area():
    """Instances (touching nuclei counted one by one): five 60-px discs among
    thirty 3 x 3 specks measure ~60 px, not the specks' size."""
    from smartscope.nn.instances import object_diameter_px

    yy, xx = np.mgrid[:400, :400]
    labels = np.zeros((400, 400), np.int32)
    for i, (cy, cx) in enumerate(
        [(80, 80), (80, 141), (250, 100), (300, 300), (100, 300)]
    ):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= 30**2] = i + 1
    for j in range(30):
        y, x = 380, 10 + 12 * j
        labels[y : y + 3, x : x + 3] = 10 + j
    assert 55 <= object_diameter_px(labels) <= 62
    assert object_diameter_px(np.zeros((8, 8), np.int32)) is None


def test_small_objects_at_the_image_border_are_kept_down_to_their_own_limit():
    """A nucleus cut by the image border is small but real: the same 6 x 6
    object is dropped inside the image and kept at its edge."""
    fg = np.zeros((40, 40), np.float32)
    dist = np.zeros((40, 40), np.float32)
    big = (slice(10, 30), slice(10, 30))
    fg[big], dist[big] = 1.0, 1.0
    for sl in [(slice(0, 6), slice(2, 8)), (slice(32, 38), slice(32, 38))]:
        fg[sl], dist[sl] = 1.0, 1.0  # at the top edge; inside
    out = labels_from_maps(fg, dist, min_size_px=50, border_min_size_px=8)
    assert out.max() == 2
    assert out[2, 4] > 0  # the border piece
    assert out[35, 35] == 0  # the inner speck
    same = labels_from_maps(fg, dist, min_size_px=50)
    assert same.max() == 1


@pytest.mark.parametrize("limits", [(1, None), (9, None), (30, 5), (5, 30)])
def test_dropping_small_objects_and_renumbering_in_one_lookup(limits):
    """The removal of small objects and the renumbering 1..N share one table:
    the same labels as removing them first and renumbering after (random
    blobs, gaps in the numbering, objects at every border)."""
    from scipy import ndimage as ndi

    from smartscope.nn.instances import _drop_small, relabel_sequential

    rng = np.random.default_rng(3)
    blobs, n = ndi.label(ndi.gaussian_filter(rng.random((96, 80)), 2) > 0.52)
    labels = np.where(blobs > 0, blobs * 3 + 7, 0).astype(np.int32)  # gaps
    inner, border = limits
    sizes = np.bincount(labels.ravel())
    limit = np.full(sizes.shape, inner)
    if border is not None:
        edge = np.unique(
            np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
        )
        limit[edge] = border
    small = sizes < limit
    small[0] = False
    want = labels.copy()
    want[small[want]] = 0
    want = relabel_sequential(want)
    got = _drop_small(labels.copy(), inner, border)
    assert n > 10
    assert got.dtype == np.int32
    assert 0 < got.max() <= n
    np.testing.assert_array_equal(got, want)
    assert _drop_small(np.zeros((4, 4), np.int32), 9).max() == 0


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint16])
def test_dropping_nothing_keeps_the_labels(dtype):
    """Labels already numbered 1..N with nothing to drop come back as they
    are (int32: the same array; other dtypes as int32 copies); a gap or a
    dropped object renumbers them."""
    from scipy import ndimage as ndi

    from smartscope.nn.instances import _drop_small

    rng = np.random.default_rng(4)
    blobs, n = ndi.label(ndi.gaussian_filter(rng.random((64, 64)), 2) > 0.52)
    labels = blobs.astype(dtype)
    got = _drop_small(labels, 1)
    assert n > 5
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, blobs)
    assert (got is labels) == (dtype == np.int32)
    gap = np.where(labels == 2, 0, labels)
    np.testing.assert_array_equal(
        _drop_small(gap, 1), np.where(blobs > 2, blobs - 1, blobs * (blobs != 2))
    )


def test_dropping_from_labels_without_objects():
    """Labels with no positive value (empty, or negative only) have no
    objects, as before the foreground-only count."""
    from smartscope.nn.instances import _drop_small

    for labels in (np.zeros((5, 6), np.int32), np.full((5, 6), -3, np.int64)):
        out = _drop_small(labels, 4)
        assert out.dtype == np.int32
        assert not out.any()
