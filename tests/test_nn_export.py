"""bioimage.io export: package contents, and loading the package back by path."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")

from smartscope.nn import ModelError, export_model, load_model  # noqa: E402
from smartscope.nn.card import ModelCard, Postprocess  # noqa: E402
from smartscope.nn.model import save_model  # noqa: E402
from smartscope.nn.unet import UNet, UNetConfig  # noqa: E402


@pytest.fixture
def seg_dir(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    unet = UNetConfig(depth=2, base_channels=8, pixel_unshuffle=2, out_channels=2)
    card = ModelCard(
        kind="segment",
        method="distance-watershed",
        unet=unet,
        postprocess=Postprocess(),
        train_diameter_px=20.0,
        training={"command": "smartscope train segment"},
    )
    return save_model(
        UNet(unet), card, tmp_path / "seg", name="seg", description="test"
    )


@pytest.fixture
def n2v_dir(tmp_path: Path) -> Path:
    """A Noise2Void-style denoiser: its blind-spot smoothing is a buffer, not a
    weight, and must survive the TorchScript export too."""
    torch.manual_seed(0)
    unet = UNetConfig(depth=2, base_channels=8, pixel_unshuffle=2, blind_residual=True)
    card = ModelCard(kind="denoise", method="n2v", unet=unet)
    return save_model(
        UNet(unet), card, tmp_path / "n2v", name="n2v", description="test"
    )


def test_export_zip_round_trip(seg_dir, tmp_path):
    model = load_model(seg_dir, device="cpu")
    pkg = export_model(model, tmp_path / "seg.zip")
    names = set(zipfile.ZipFile(pkg).namelist())
    assert {
        "rdf.yaml",
        "weights.pt",
        "weights_torchscript.pt",
        "test_input.npy",
        "test_output.npy",
        "README.md",
        "cover.png",
    } <= names
    back = load_model(pkg, device="cpu")
    img = np.random.default_rng(0).random((80, 96)).astype(np.float32)
    np.testing.assert_array_equal(back.predict(img), model.predict(img))
    assert back.path == pkg
    # a model loaded from a package exports again with its state dict
    again = export_model(back, tmp_path / "again.zip")
    assert "weights.pt" in zipfile.ZipFile(again).namelist()


def test_corrupt_weights_in_a_package_are_named(seg_dir, tmp_path):
    pkg = export_model(load_model(seg_dir, device="cpu"), tmp_path / "seg.zip")
    bad = tmp_path / "bad-weights.zip"
    with zipfile.ZipFile(pkg) as src, zipfile.ZipFile(bad, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            dst.writestr(name, data[:-7] + b"garbage" if name == "weights.pt" else data)
    with pytest.raises(ModelError) as info:
        load_model(bad, device="cpu")
    message = str(info.value)
    assert message.startswith(f"{bad}/weights.pt: ")
    assert "sha256" in message


def test_loading_a_package_leaves_no_temporary_files(seg_dir, tmp_path, monkeypatch):
    import tempfile

    pkg = export_model(load_model(seg_dir, device="cpu"), tmp_path / "seg.zip")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    for _ in range(3):
        load_model(pkg, device="cpu")
    assert list(scratch.iterdir()) == []


@pytest.fixture
def care_dir(tmp_path: Path) -> Path:
    """A CARE-style residual denoiser, untrained: the identity."""
    unet = UNetConfig(depth=2, base_channels=8, pixel_unshuffle=2, residual=True)
    card = ModelCard(kind="denoise", method="care", unet=unet)
    return save_model(
        UNet(unet), card, tmp_path / "care", name="care", description="test"
    )


@pytest.mark.parametrize("fixture", ["seg_dir", "n2v_dir", "care_dir"])
def test_torchscript_only_package_reproduces_test_output(fixture, request, tmp_path):
    """The package's test output is what smartscope's own prediction gives:
    the restored image in input units (denoiser) or the two probability maps
    (segmenter), from the state dict and from the TorchScript alone."""
    source = load_model(request.getfixturevalue(fixture), device="cpu")
    folder = export_model(source, tmp_path / "pkg")
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    del rdf["weights"]["pytorch_state_dict"]
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf))
    (folder / "weights.pt").unlink()
    model = load_model(folder, device="cpu")
    x = np.load(folder / "test_input.npy")
    y = np.load(folder / "test_output.npy")
    assert x.shape == (1, 1, 128, 128)
    assert x.min() >= 50  # raw camera-like intensities, not normalised
    for m in (source, model):
        if m.kind == "denoise":
            got = m.predict(x[0, 0])[None, None]
        else:
            got = np.stack(m.maps(x[0, 0]))[None]
        np.testing.assert_allclose(got, y, rtol=1e-4, atol=1e-3)
    if fixture == "care_dir":  # the identity: output in the input's units
        np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-2)


def test_saved_folder_is_a_package_and_rewrites_to_the_same_bytes(n2v_dir, tmp_path):
    """save_model writes every file a bioimage.io package needs; exporting a
    folder onto itself (how the shipped cards are refreshed) changes nothing."""
    names = {p.name for p in n2v_dir.iterdir()}
    assert {
        "rdf.yaml",
        "weights.pt",
        "README.md",
        "test_input.npy",
        "test_output.npy",
        "cover.png",
    } <= names
    before = {p.name: p.read_bytes() for p in n2v_dir.iterdir()}
    export_model(load_model(n2v_dir, device="cpu"), n2v_dir, torchscript=False)
    after = {p.name: p.read_bytes() for p in n2v_dir.iterdir()}
    assert after == before


def test_export_needs_a_state_dict(seg_dir, tmp_path):
    model = load_model(seg_dir, device="cpu")
    model.path = None  # as built in memory, never saved
    with pytest.raises(ModelError, match=r"no weights\.pt"):
        export_model(model, tmp_path / "x.zip")


def test_bad_package_is_refused(tmp_path):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK not really a zip")
    with pytest.raises(ModelError, match=r"bad\.zip.*not a valid \.zip"):
        load_model(bad)


def test_export_command_writes_a_loadable_package(seg_dir, tmp_path):
    from typer.testing import CliRunner

    from smartscope.nn.cli import train_app

    out = tmp_path / "cli.zip"
    res = CliRunner().invoke(train_app, ["export", str(seg_dir), str(out)])
    assert res.exit_code == 0, res.output
    assert load_model(out, device="cpu").kind == "segment"
    res = CliRunner().invoke(train_app, ["export", str(tmp_path / "nope"), str(out)])
    assert res.exit_code == 1
    assert "no model named" in res.output
