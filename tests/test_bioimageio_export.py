"""smartscope's bioimage.io packages and shipped cards, checked by bioimage.io's
own tools: bioimageio.spec validates them, bioimageio.core's test_model
reproduces their test outputs from both weights formats, and its predict gives
what smartscope's own prediction gives (denoisers: image intensities).

Offline: bioimage.io's cache goes to a temporary folder and any network
connection fails the test.
"""

from __future__ import annotations

import gc
import socket
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

pytest.importorskip("bioimageio.core")
torch = pytest.importorskip("torch")

import bioimageio.core  # noqa: E402
from bioimageio.spec import load_description  # noqa: E402
from bioimageio.spec.model import v0_5  # noqa: E402

from smartscope._data import data_dir  # noqa: E402
from smartscope.nn import export_model, load_model  # noqa: E402
from smartscope.nn.card import ModelCard, Postprocess  # noqa: E402
from smartscope.nn.export import synthetic_image  # noqa: E402
from smartscope.nn.instances import labels_from_maps  # noqa: E402
from smartscope.nn.model import save_model  # noqa: E402
from smartscope.nn.unet import UNet, UNetConfig  # noqa: E402

SHIPPED = (
    "denoise-care",
    "denoise-care-fast",
    "denoise-n2v",
    "nuclei-seg",
    "nuclei-seg-sim",
)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path_factory) -> None:
    """No network, and bioimage.io's cache in a temporary folder."""
    import bioimageio.spec

    cache = tmp_path_factory.getbasetemp() / "bioimageio-cache"
    monkeypatch.setenv("BIOIMAGEIO_CACHE_PATH", str(cache))
    for settings in (bioimageio.spec.settings, bioimageio.core.settings):
        monkeypatch.setattr(settings, "cache_path", cache)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError("a test tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    # bioimageio.core runs gc.collect() twice per unloaded model, 8 times per
    # test_model: seconds each in a long pytest session, and nothing to test
    monkeypatch.setattr(gc, "collect", lambda *args, **kwargs: 0)


def _tiny(kind: str, folder: Path) -> Path:
    """A small untrained model of each shipped kind, saved by save_model."""
    torch.manual_seed(0)
    common = {"depth": 2, "base_channels": 8, "pixel_unshuffle": 2}
    if kind == "seg":
        unet = UNetConfig(**common, out_channels=2)
        card = ModelCard(
            kind="segment",
            method="distance-watershed",
            unet=unet,
            postprocess=Postprocess(),
            train_diameter_px=20.0,
            training={"data": "nothing: an untrained test model"},
        )
    else:
        unet = UNetConfig(
            **common, residual=kind == "care", blind_residual=kind == "n2v"
        )
        card = ModelCard(kind="denoise", method=kind, unet=unet)
    net = UNet(unet)
    if kind == "care":  # a correction that is not zero, so the test means something
        with torch.no_grad():
            net.head.weight.normal_(0, 0.05)
    return save_model(net, card, folder, name=f"tiny-{kind}", description="test")


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export")
    return {
        k: export_model(load_model(_tiny(k, root / k), device="cpu"), root / f"{k}.zip")
        for k in ("seg", "care", "n2v")
    }


def _halo(descr: Any) -> int:
    (halo,) = {a.halo for a in descr.outputs[0].axes if getattr(a, "halo", 0)}
    return int(halo)


def _rdf(pkg: Path) -> dict[str, Any]:
    return yaml.safe_load(zipfile.ZipFile(pkg).read("rdf.yaml"))


@pytest.mark.parametrize("kind", ["seg", "care", "n2v"])
def test_exported_package_passes_the_spec_and_test_model(packages, kind) -> None:
    descr = load_description(packages[kind])
    assert isinstance(descr, v0_5.ModelDescr), descr.validation_summary.format()
    assert descr.validation_summary.status == "valid-format"
    summary = bioimageio.core.test_model(packages[kind])
    assert summary.status == "passed", summary.format()
    tested = {d.loc[1] for d in summary.details if d.loc[:1] == ("weights",)}
    assert tested == {"pytorch_state_dict", "torchscript"}
    arch = _rdf(packages[kind])["weights"]["pytorch_state_dict"]["architecture"]
    assert arch["import_from"] == "smartscope.nn.architectures"
    assert all(not isinstance(v, dict) for v in arch["kwargs"].values())  # plain


@pytest.mark.parametrize("kind", ["care", "n2v"])
def test_a_bioimageio_consumer_gets_restored_intensities(packages, kind) -> None:
    """Any image, not only the test tensor: bioimageio.core's prediction is
    smartscope's, in the input's units (ADU), for both weights formats.

    bioimageio.core mirrors each side by the card's halo before predicting
    (and crops it after), so smartscope is given the same mirrored image."""
    image = synthetic_image(96, seed=4) * 3 + 500  # brighter than the test image
    descr = load_description(packages[kind])
    h = _halo(descr)
    ours = load_model(packages[kind], device="cpu").predict(
        np.pad(image, h, mode="symmetric")
    )[h:-h, h:-h]
    for fmt in ("pytorch_state_dict", "torchscript"):
        # predict enters (loads) and leaves (unloads) the pipeline itself
        pipeline = bioimageio.core.create_prediction_pipeline(descr, weight_format=fmt)
        theirs = bioimageio.core.predict(
            model=pipeline, inputs={"raw": image[None, None]}
        )
        out = theirs.members["restored"].data.to_numpy()[0, 0]
        np.testing.assert_allclose(out, ours, rtol=1e-4, atol=1e-2)
    assert abs(float(ours.mean()) - float(image.mean())) < 0.2 * float(image.mean())
    assert ours.max() > 100  # not normalised to about 0..1


def test_a_bioimageio_consumer_gets_the_segmenter_maps(packages) -> None:
    """bioimage.io gets the probability maps; smartscope's labels are its
    watershed of those same maps, as the card says."""
    image = synthetic_image(112, seed=5)
    model = load_model(packages["seg"], device="cpu")
    descr = load_description(packages["seg"])
    theirs = bioimageio.core.predict(model=descr, inputs={"raw": image[None, None]})
    maps = theirs.members["maps"].data.to_numpy()[0]
    h = _halo(descr)  # mirrored by bioimageio.core, as above
    fg, dist = model.maps(np.pad(image, h, mode="symmetric"))
    np.testing.assert_allclose(
        maps, np.stack([fg, dist])[:, h:-h, h:-h], rtol=1e-4, atol=1e-4
    )
    post = model.card.postprocess
    expected = labels_from_maps(
        maps[0],
        maps[1],
        fg_threshold=post.fg_threshold,
        seed_threshold=post.seed_threshold,
        min_size_px=post.min_size_px,
        border_min_size_px=post.border_min_size_px,
    )
    model.card = model.card.model_copy(
        update={"postprocess": post.model_copy(update={"auto_diameter_px": None})}
    )
    np.testing.assert_array_equal(model.predict(image), expected)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_card_passes_the_spec(name) -> None:
    folder = data_dir("models") / name
    descr = load_description(folder / "rdf.yaml")
    assert isinstance(descr, v0_5.ModelDescr), descr.validation_summary.format()
    assert descr.validation_summary.status == "valid-format"
    assert descr.inputs[0].test_tensor is not None
    assert descr.covers
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert size < 3 * 1024 * 1024
    # smartscope still reads it as its own card
    assert load_model(name, device="cpu").card.kind in ("denoise", "segment")


@pytest.mark.parametrize(
    "name",
    [
        "denoise-care",  # the others with -m slow (about 5 s each)
        pytest.param("denoise-care-fast", marks=pytest.mark.slow),
        pytest.param("denoise-n2v", marks=pytest.mark.slow),
        pytest.param("nuclei-seg", marks=pytest.mark.slow),
        pytest.param("nuclei-seg-sim", marks=pytest.mark.slow),
    ],
)
def test_shipped_card_passes_test_model(name) -> None:
    summary = bioimageio.core.test_model(data_dir("models") / name / "rdf.yaml")
    assert summary.status == "passed", summary.format()


def test_shipped_mitosis_classifier_passes_the_spec_and_test_model() -> None:
    """The crop classifier (kind: event) is a bioimage.io model too: crops
    (batch, channel, y, x) in, one probability per crop out."""
    folder = data_dir("models") / "mitosis-clf"
    descr = load_description(folder / "rdf.yaml")
    assert isinstance(descr, v0_5.ModelDescr), descr.validation_summary.format()
    assert descr.validation_summary.status == "valid-format"
    assert descr.inputs[0].test_tensor is not None
    assert descr.covers
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert size < 3 * 1024 * 1024
    assert load_model("mitosis-clf", device="cpu").card.kind == "event"
    summary = bioimageio.core.test_model(folder / "rdf.yaml")
    assert summary.status == "passed", summary.format()
