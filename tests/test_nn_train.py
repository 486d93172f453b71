"""Training: the loop lowers the loss, tiny runs on simulated data give a usable
model with a filled-in card, and the train CLI writes model + QC report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tifffile = pytest.importorskip("tifffile")

from typer.testing import CliRunner  # noqa: E402

from smartscope.nn import load_model  # noqa: E402
from smartscope.nn.cli import train_app  # noqa: E402
from smartscope.nn.datasets import (  # noqa: E402
    N2VSampler,
    PairSampler,
    SegmentationSampler,
)
from smartscope.nn.train import TrainConfig, fit, train  # noqa: E402
from smartscope.nn.unet import UNet, UNetConfig  # noqa: E402

TINY = {
    "batch_size": 4,
    "patch_px": 32,
    "depth": 2,
    "base_channels": 8,
    "workers": 0,
    "val_patches": 4,
    "train_fields": 2,
    "val_fields": 1,
    # one thread: two on two cores the suite's other worker also uses run
    # 20x slower (8 s for 40 steps against 0.4 s)
    "threads": 1,
}
#: the train commands' options for the same tiny network, in-process data
TINY_CLI = (
    *("--patch", "32", "--width", "8", "--depth", "2", "--workers", "0"),
    *("--threads", "1"),
)


def _blobs(
    n: int, size: int = 64, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    out = []
    for _ in range(n):
        clean = np.zeros((size, size), np.float32)
        lab = np.zeros((size, size), np.int32)
        for k in range(1, 7):
            cy, cx = rng.uniform(6, size - 6, 2)
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(16, 40)
            clean[inside] = 100.0
            lab[inside & (lab == 0)] = k
        out.append(
            (
                clean + rng.normal(0, 30, clean.shape).astype(np.float32) + 100,
                clean + 100,
                lab,
            )
        )
    return out


class _Fixed:
    """A sampler that always returns the same batch: the loop must fit it."""

    def __init__(self, batch):
        self._batch = batch

    def batch(self, n, rng):
        return self._batch


@pytest.mark.parametrize("method", ["care", "n2v", "segment"])
def test_fit_lowers_the_loss(method):
    data = _blobs(4)
    if method == "care":
        sampler = PairSampler([(n, c) for n, c, _ in data], patch_px=32)
    elif method == "segment":
        sampler = SegmentationSampler([(c, lab) for _, c, lab in data], patch_px=32)
    else:
        sampler = N2VSampler([n for n, _, _ in data], patch_px=32, mask_fraction=0.1)
    batch = sampler.batch(4, np.random.default_rng(0))
    cfg = TrainConfig(method=method, steps=40, lr=3e-3, val_every=10, **TINY)
    net = UNet(
        UNetConfig(
            depth=2,
            base_channels=8,
            residual=method == "care",
            blind_residual=method == "n2v",
            out_channels=2 if method == "segment" else 1,
        )
    )
    hist = fit(net, _Fixed(batch), cfg, val_batch=batch)
    if method == "segment":
        assert hist[-1]["val_loss"] < 0.8 * hist[0]["val_loss"]
    else:  # restoration losses are 10·log10(MSE): a drop of 1 is a 1 dB better fit
        assert hist[-1]["val_loss"] < hist[0]["val_loss"] - 1.0
    assert [h["step"] for h in hist] == [10, 20, 30, 40]


def test_tiny_care_run_on_the_simulator():
    cfg = TrainConfig(method="care", steps=6, val_every=3, **TINY)
    res = train(cfg, command="test")
    m = res.metrics
    assert {"psnr_db", "psnr_db_gaussian", "gaussian_sigma_px", "ssim"} <= set(m)
    assert res.model.card.training["command"] == "test"
    img = np.full((40, 40), 150, np.uint16)
    out = res.model.predict(img)
    assert out.shape == (40, 40)
    assert out.dtype == np.float32


def _write_folder(root: Path, kind: str) -> Path:
    data = _blobs(3, seed=1)
    if kind == "segment":
        (root / "images").mkdir(parents=True)
        (root / "masks").mkdir()
        for i, (noisy, _, lab) in enumerate(data):
            tifffile.imwrite(root / "images" / f"f{i}.tif", noisy.astype(np.uint16))
            tifffile.imwrite(root / "masks" / f"f{i}.tif", lab)
    elif kind == "care":
        (root / "low").mkdir(parents=True)
        (root / "high").mkdir()
        for i, (noisy, clean, _) in enumerate(data):
            tifffile.imwrite(root / "low" / f"f{i}.tif", noisy.astype(np.uint16))
            tifffile.imwrite(root / "high" / f"f{i}.tif", clean.astype(np.uint16))
    else:
        root.mkdir(parents=True)
        for i, (noisy, _, _) in enumerate(data):
            tifffile.imwrite(root / f"f{i}.tif", noisy.astype(np.uint16))
    return root


@pytest.mark.parametrize("kind", ["segment", "care", "n2v"])
def test_train_cli_on_a_tiff_folder_writes_model_and_qc(tmp_path, kind):
    data = _write_folder(tmp_path / "data", kind)
    out = tmp_path / "model"
    args = [
        kind,
        "--data",
        str(data),
        "--out",
        str(out),
        "--steps",
        "4",
        "--batch",
        "2",
        *TINY_CLI,
    ]
    res = CliRunner().invoke(train_app, args)
    assert res.exit_code == 0, res.output
    for name in ("rdf.yaml", "weights.pt", "qc/report.md", "qc/loss.png"):
        assert (out / name).is_file(), name
    report = (out / "qc" / "report.md").read_text()
    assert "Validation metrics" in report
    model = load_model(out, device="cpu")
    assert model.card.training["command"].startswith("smartscope train")
    pred = model.predict(
        tifffile.imread(
            next(
                (
                    data
                    / (
                        "images"
                        if kind == "segment"
                        else "low"
                        if kind == "care"
                        else ""
                    )
                ).glob("*.tif")
            )
        )
    )
    assert pred.shape == (64, 64)
    assert pred.dtype == (np.int32 if kind == "segment" else np.float32)


def test_train_cli_names_a_bad_folder(tmp_path):
    res = CliRunner().invoke(
        train_app,
        ["care", "--data", str(tmp_path), "--out", str(tmp_path / "m"), "--steps", "2"],
    )
    assert res.exit_code == 1
    assert "low" in res.output
    assert str(tmp_path) in res.output


def test_same_config_same_weights():
    # what makes a card's command reproduce its model: seeded data, init and order
    cfg = TrainConfig(method="n2v", steps=5, val_every=5, **TINY)
    a, b = train(cfg), train(cfg)
    for (k, va), vb in zip(
        a.network.state_dict().items(), b.network.state_dict().values(), strict=False
    ):
        assert torch.equal(va, vb), k
    assert a.metrics == b.metrics


@pytest.mark.parametrize("kind", ["care", "n2v", "segment", "mitosis"])
def test_train_never_writes_into_models_unless_asked(kind):
    """No default output folder: a trial run cannot overwrite a shipped model."""
    res = CliRunner().invoke(train_app, [kind, "--steps", "1"])
    assert res.exit_code == 2
    assert "--out" in res.output


def test_tiny_step_counts_have_a_schedule():
    """torch's OneCycleLR divides by zero when its warm-up or decay is one
    step (10 steps at a 10% warm-up crashed `smartscope train segment
    --steps 10`)."""
    from smartscope.nn.train import warmup_fraction

    for steps in range(1, 300):
        p = [torch.nn.Parameter(torch.zeros(1))]
        opt = torch.optim.AdamW(p, lr=1e-3)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=1e-3, total_steps=steps, pct_start=warmup_fraction(steps)
        )
        for _ in range(steps - 1):
            opt.step()
            sched.step()


def test_segment_on_user_images_mixes_simulated_crops(tmp_path):
    """`train segment --data DIR --sim-fraction F`: the user's annotated
    images with simulated crops mixed in; thresholds tuned at the automatic
    size on the held-out user images, both kinds scored on the card."""
    data = _write_folder(tmp_path / "data", "segment")
    out = tmp_path / "model"
    args = [
        "segment",
        "--data",
        str(data),
        "--out",
        str(out),
        "--sim-fraction",
        "0.5",
        "--fields",
        "2",
        "--val-fields",
        "1",
        "--lr",
        "1e-3",
        "--steps",
        "3",
        "--batch",
        "4",
        *TINY_CLI,
    ]
    res = CliRunner().invoke(train_app, args)
    assert res.exit_code == 0, res.output
    card = load_model(out, device="cpu").card
    assert card.training["config"]["sim_fraction"] == 0.5
    assert card.training["config"]["lr"] == 1e-3
    assert str(data) in card.training["data"]
    assert "50% of the training crops" in card.training["data"]
    assert "simulated fields" in card.training["data"]
    assert "automatic size" in card.validation["postprocess_tuning"]["grid"]
    sim = card.validation["simulated_validation"]
    assert sim["n_images"] == 1
    assert 0.0 <= sim["ap50"] <= 1.0
    # the held-out user image is what the card's own figures are on
    assert card.validation["n_images"] == 1
    assert card.validation["validation_data"] == "1 held-out TIFFs"


def test_init_carries_a_segmenter_into_user_training(tmp_path):
    """--init starts from a model's weights (here a tiny one trained first)."""
    data = _write_folder(tmp_path / "data", "segment")
    tiny = ["--steps", "2", "--batch", "2", "--patch", "32", "--workers", "0"]
    base = tmp_path / "base"
    res = CliRunner().invoke(
        train_app,
        [
            *("segment", "--out", str(base), "--fields", "1", "--val-fields", "1"),
            *("--width", "8", "--depth", "2", *tiny),
        ],
    )
    assert res.exit_code == 0, res.output
    out = tmp_path / "tuned"
    res = CliRunner().invoke(
        train_app,
        [
            *("segment", "--data", str(data), "--out", str(out), "--init", str(base)),
            *("--sim-fraction", "0.3", "--fields", "1", "--val-fields", "1", *tiny),
        ],
    )
    assert res.exit_code == 0, res.output
    card = load_model(out, device="cpu").card
    # the U-Net comes from --init, not from the default --width 16 --depth 3
    assert (card.unet.base_channels, card.unet.depth) == (8, 2)
    assert card.training["config"]["init"] == str(base)


@pytest.mark.parametrize(
    "args",
    [
        ["segment", "--sim-fraction", "0.3"],  # nothing to mix into
        ["care", "--sim-fraction", "0.3"],  # not an option of care
    ],
)
def test_sim_fraction_needs_user_images_for_segmentation(tmp_path, args):
    res = CliRunner().invoke(
        train_app, [*args, "--out", str(tmp_path / "m"), "--steps", "2"]
    )
    assert res.exit_code == 2
    assert "sim" in res.output
    assert "fraction" in res.output
    assert not (tmp_path / "m").exists()


def test_sim_fraction_is_refused_for_the_simulator_alone():
    with pytest.raises(ValueError, match=r"sim_fraction=0.3 .* needs method 'segment'"):
        TrainConfig(method="segment", sim_fraction=0.3)
    with pytest.raises(ValueError, match="less than 1"):
        TrainConfig(method="segment", sim_fraction=1.0, data_dir=Path("d"))


def test_mixed_sampler_draws_the_asked_share():
    from smartscope.nn.datasets import MixedSampler

    class Const:
        def __init__(self, value):
            self.value = value

        def batch(self, n, rng):
            x = np.full((n, 1, 4, 4), self.value, np.float32)
            return x, x.copy()

    mixed = MixedSampler(Const(0.0), Const(1.0), share_b=0.3)
    rng = np.random.default_rng(0)
    xs = np.concatenate([mixed.batch(12, rng)[0] for _ in range(500)])
    assert xs.shape == (6000, 1, 4, 4)
    assert abs(xs[:, 0, 0, 0].mean() - 0.3) < 0.02
    with pytest.raises(ValueError, match="share_b"):
        MixedSampler(Const(0.0), Const(1.0), share_b=1.5)


def test_user_images_lose_their_camera_offset_before_augmentation():
    """A Cell Tracking Challenge set sits on a 33,000 ADU offset: the
    per-nucleus brightness and gamma augmentations must see the signal
    alone, so the crops do not depend on the offset."""
    from smartscope.nn.train import _sampler

    cfg = TrainConfig(method="segment", patch_px=32, data_dir=Path("d"))
    (noisy, _, lab), *_ = _blobs(1, seed=3)
    plain = _sampler(cfg, [(noisy, lab)], real=True)
    lifted = _sampler(cfg, [(noisy + 33000.0, lab)], real=True)
    a = plain.batch(6, np.random.default_rng(5))
    b = lifted.batch(6, np.random.default_rng(5))
    # to within one 8-bit level (the augmentation's quantisation: a value
    # next to a rounding edge may land on the other side of it)
    np.testing.assert_allclose(a[0], b[0], atol=1e-2)
    assert np.mean(np.abs(a[0] - b[0]) > 1e-3) < 1e-3
    np.testing.assert_array_equal(a[1], b[1])
