"""Foreign bioimage.io packages: written by bioimageio.spec, passed by
bioimageio.core's test_model, then loaded, run and used in a protocol by
smartscope without any ``config.smartscope`` section.

Offline: bioimage.io's cache goes to a temporary folder and any network
connection fails the test.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import socket
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from scipy import ndimage as ndi

pytest.importorskip("bioimageio.core")
torch = pytest.importorskip("torch")

import bioimageio.core  # noqa: E402
from bioimageio.spec import (  # noqa: E402
    ValidationContext,
    load_description,
    save_bioimageio_package,
)
from bioimageio.spec.model import v0_5  # noqa: E402

from smartscope.nn import ModelError, load_model  # noqa: E402
from smartscope.nn.imported import ImportedDenoiser, ImportedSegmenter  # noqa: E402
from smartscope.nn.locate import check_model_files  # noqa: E402

#: The package's own network, as an author would ship it: a Python file.
ARCHITECTURE = '''
import torch
from torch import nn


class TinyNet(nn.Module):
    """(B, 1, Y, X) -> (B, out_channels, Y, X): one 3x3 convolution."""

    def __init__(self, out_channels: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(1, out_channels, 3, padding=1)

    def forward(self, x):
        return self.conv(x)
'''

MEAN, STD = 120.0, 40.0  # the denoiser's declared fixed normalisation


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


def _tiny_net(folder: Path, out_channels: int, seed: int) -> tuple[Path, Any]:
    arch = folder / "tiny_net.py"
    arch.write_text(ARCHITECTURE)
    spec = importlib.util.spec_from_file_location(f"tiny_net_{seed}", arch)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(seed)
    return arch, module.TinyNet(out_channels=out_channels).eval()


def _smoother(net: Any) -> Any:
    """The denoiser's weights: a 3x3 mean filter."""
    with torch.no_grad():
        net.conv.weight.fill_(1 / 9)
        net.conv.bias.zero_()
    return net


def _space(axis: str, ref: str | None) -> Any:
    if ref is None:
        return v0_5.SpaceInputAxis(
            id=v0_5.AxisId(axis), size=v0_5.ParameterizedSize(min=16, step=8)
        )
    return v0_5.SpaceOutputAxis(
        id=v0_5.AxisId(axis),
        size=v0_5.SizeReference(
            tensor_id=v0_5.TensorId(ref), axis_id=v0_5.AxisId(axis)
        ),
    )


def _raw_image(shape: tuple[int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = ndi.gaussian_filter(rng.uniform(0, 400, shape), 4) + 100
    return rng.poisson(img).astype(np.float32)


def _build_package(folder: Path, kind: str) -> Path:
    """A bioimage.io package for a tiny network, written by bioimageio.spec's
    own classes: a denoiser (fixed mean/std in, scale_linear back out) or a
    segmenter (scale_range in, sigmoid out), with test outputs computed here
    by hand."""
    folder.mkdir(parents=True)
    seg = kind == "segment"
    arch, net = _tiny_net(folder, out_channels=1, seed=1)
    if not seg:
        net = _smoother(net)
    x = _raw_image((64, 64), seed=3)[None, None]
    if seg:
        pre: list[Any] = [
            v0_5.ScaleRangeDescr(
                kwargs=v0_5.ScaleRangeKwargs(
                    axes=[v0_5.AxisId("y"), v0_5.AxisId("x")],
                    min_percentile=1.0,
                    max_percentile=99.0,
                )
            )
        ]
        post: list[Any] = [v0_5.SigmoidDescr()]
        lo, hi = np.percentile(x, [1.0, 99.0])
        xn = (x - lo) / (hi - lo + 1e-6)
    else:
        pre = [
            v0_5.FixedZeroMeanUnitVarianceDescr(
                kwargs=v0_5.FixedZeroMeanUnitVarianceKwargs(mean=MEAN, std=STD)
            )
        ]
        post = [
            v0_5.ScaleLinearDescr(kwargs=v0_5.ScaleLinearKwargs(gain=STD, offset=MEAN))
        ]
        xn = (x - MEAN) / (STD + 1e-6)
    with torch.no_grad():
        y = net(torch.from_numpy(xn.astype(np.float32))).numpy()
    y = 1 / (1 + np.exp(-y)) if seg else y * STD + MEAN
    return _write_package(
        folder,
        kind,
        net=net,
        arch=arch,
        channels=["foreground" if seg else "denoised"],
        pre=pre,
        post=post,
        test=(x, y),
    )


def _write_package(
    folder: Path,
    kind: str,
    *,
    net: Any,
    arch: Path,
    channels: list[str],
    pre: list[Any],
    post: list[Any],
    test: tuple[np.ndarray, np.ndarray],
) -> Path:
    seg = kind.startswith("segment")
    np.save(folder / "test_input.npy", test[0])
    np.save(folder / "test_output.npy", test[1].astype(np.float32))
    torch.save(net.state_dict(), folder / "weights.pt")
    traced = torch.jit.trace(net, torch.from_numpy(test[0]))
    traced.save(str(folder / "weights_torchscript.pt"))
    (folder / "README.md").write_text(
        "# tiny\n\n## Validation\n\nNone: a test model.\n"
    )
    out_name = "foreground" if seg else "denoised"
    version = v0_5.Version(torch.__version__.split("+")[0])
    descr = v0_5.ModelDescr(
        name=f"tiny foreign {'segmenter' if seg else 'denoiser'}",
        description="A one-convolution model for tests.",
        authors=[v0_5.Author(name="test author")],
        cite=[v0_5.CiteEntry(text="none", doi=v0_5.Doi("10.5281/zenodo.5764892"))],
        license=v0_5.LicenseId("MIT"),
        tags=["2d", "segmentation" if seg else "denoising"],
        documentation=v0_5.FileDescr(source=folder / "README.md"),
        inputs=[
            v0_5.InputTensorDescr(
                id=v0_5.TensorId("raw"),
                axes=[
                    v0_5.BatchAxis(),
                    v0_5.ChannelAxis(channel_names=[v0_5.Identifier("raw")]),
                    _space("y", None),
                    _space("x", None),
                ],
                test_tensor=v0_5.FileDescr(source=folder / "test_input.npy"),
                preprocessing=pre,
            )
        ],
        outputs=[
            v0_5.OutputTensorDescr(
                id=v0_5.TensorId(out_name),
                axes=[
                    v0_5.BatchAxis(),
                    v0_5.ChannelAxis(
                        channel_names=[v0_5.Identifier(c) for c in channels]
                    ),
                    _space("y", "raw"),
                    _space("x", "raw"),
                ],
                test_tensor=v0_5.FileDescr(source=folder / "test_output.npy"),
                postprocessing=post,
            )
        ],
        weights=v0_5.WeightsDescr(
            pytorch_state_dict=v0_5.PytorchStateDictWeightsDescr(
                source=folder / "weights.pt",
                architecture=v0_5.ArchitectureFromFileDescr(
                    source=arch,
                    callable=v0_5.Identifier("TinyNet"),
                    kwargs={"out_channels": len(channels)},
                ),
                pytorch_version=version,
            ),
            torchscript=v0_5.TorchscriptWeightsDescr(
                source=folder / "weights_torchscript.pt", pytorch_version=version
            ),
        ),
    )
    return save_bioimageio_package(descr, output_path=folder.parent / f"{kind}.zip")


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("foreign")
    with ValidationContext(perform_io_checks=True):
        return {k: _build_package(root / k, k) for k in ("denoise", "segment")}


def _reference(zip_path: Path, image: np.ndarray) -> np.ndarray:
    """The package's network applied by hand, with its declared processing."""
    with zipfile.ZipFile(zip_path) as zf:
        net = torch.jit.load(zf.open("weights_torchscript.pt"))
    if "segment" in zip_path.name:
        lo, hi = np.percentile(image, [1.0, 99.0])
        xn = (image - lo) / (hi - lo + 1e-6)
    else:
        xn = (image - MEAN) / (STD + 1e-6)
    with torch.no_grad():
        y = net(torch.from_numpy(xn.astype(np.float32))[None, None]).numpy()[0, 0]
    return 1 / (1 + np.exp(-y)) if "segment" in zip_path.name else y * STD + MEAN


def _unzipped(zip_path: Path, out: Path) -> Path:
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(out)
    return out


def _card(folder: Path) -> tuple[Path, dict[str, Any]]:
    (card,) = [p for p in folder.iterdir() if p.name.endswith(".yaml")]
    return card, yaml.safe_load(card.read_text())


@pytest.mark.parametrize("kind", ["denoise", "segment"])
def test_the_foreign_package_passes_bioimageio_checks(packages, kind) -> None:
    descr = load_description(packages[kind])
    assert isinstance(descr, v0_5.ModelDescr), descr.validation_summary.format()
    rdf = yaml.safe_load(zipfile.ZipFile(packages[kind]).read("rdf.yaml"))
    assert "smartscope" not in (rdf.get("config") or {})
    summary = bioimageio.core.test_model(packages[kind])
    assert summary.status == "passed", summary.format()
    tested = {d.loc[1] for d in summary.details if d.loc[:1] == ("weights",)}
    assert tested == {"pytorch_state_dict", "torchscript"}


def test_smartscope_runs_a_foreign_denoiser(packages, tmp_path) -> None:
    model = load_model(packages["denoise"], device="cpu")
    assert isinstance(model, ImportedDenoiser)
    assert model.kind == "denoise"
    assert model.description.weights.format == "torchscript"  # no code to import
    image = _raw_image((96, 88), seed=5).astype(np.uint16)
    out = model.predict(image)
    assert out.shape == image.shape
    assert out.dtype == np.float32
    expected = _reference(packages["denoise"], image.astype(np.float32))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-3)
    # a size the card does not allow is padded (reflected) to one and cropped
    odd = model.predict(image[:91, :85])
    assert odd.shape == (91, 85)
    np.testing.assert_allclose(odd[:-1, :-1], out[:90, :84], rtol=1e-5, atol=1e-3)
    # its output is in the input's units because its card says so
    assert abs(float(out.mean()) - float(image.mean())) < 0.1 * float(image.mean())
    # the same package with its state dict only: the architecture file is imported
    folder = _unzipped(packages["denoise"], tmp_path / "sd")
    card, rdf = _card(folder)
    del rdf["weights"]["torchscript"]
    card.write_text(yaml.safe_dump(rdf))
    (folder / "weights_torchscript.pt").unlink()
    sd = load_model(folder, device="cpu")
    assert sd.description.weights.format == "pytorch_state_dict"
    np.testing.assert_allclose(sd.predict(image), out, rtol=1e-5, atol=1e-3)
    # large frames run in tiles and still agree
    tiled = load_model(packages["denoise"], device="cpu", tile_px=48)
    np.testing.assert_allclose(tiled.predict(image), out, rtol=1e-5, atol=1e-3)


def test_smartscope_runs_a_foreign_segmenter(packages) -> None:
    model = load_model(packages["segment"], device="cpu")
    assert isinstance(model, ImportedSegmenter)
    image = _raw_image((80, 96), seed=7)
    labels = model.predict(image, diameter_px=12)
    assert labels.dtype == np.int32
    assert labels.shape == image.shape
    probability = _reference(packages["segment"], image)
    expected, n = ndi.label(probability > 0.5)
    assert n > 0
    np.testing.assert_array_equal(labels, expected)


def test_a_card_named_bioimageio_yaml_is_found(packages, tmp_path) -> None:
    """bioimage.io also names the description bioimageio.yaml (or *.bioimageio.yaml)."""
    folder = _unzipped(packages["segment"], tmp_path / "renamed")
    (folder / "rdf.yaml").rename(folder / "tiny.bioimageio.yaml")
    assert check_model_files(folder).kind == "segment"
    assert load_model(folder, device="cpu").kind == "segment"
    assert load_model(folder / "tiny.bioimageio.yaml", device="cpu").kind == "segment"
    renamed = tmp_path / "renamed.zip"
    with zipfile.ZipFile(renamed, "w") as zf:
        for f in folder.iterdir():
            zf.write(f, f.name)
    assert check_model_files(renamed).kind == "segment"
    assert isinstance(load_model(renamed, device="cpu"), ImportedSegmenter)


def _yx() -> list[Any]:
    return [v0_5.AxisId("y"), v0_5.AxisId("x")]


@pytest.mark.parametrize("kind", ["denoise-stats", "segment-softmax"])
def test_smartscope_processing_agrees_with_bioimageio_core(kind, tmp_path) -> None:
    """Other declared steps (per-image mean/std, clip; scale_range to the
    input's percentiles, scale_linear along channels; softmax over two
    channels): smartscope's prediction is bioimageio.core's (the test output
    is a placeholder: these packages are not test_model'd)."""
    folder = tmp_path / kind
    folder.mkdir()
    seg = kind == "segment-softmax"
    arch, net = _tiny_net(folder, out_channels=2 if seg else 1, seed=2)
    if not seg:
        net = _smoother(net)
    x = _raw_image((64, 64), seed=3)[None, None]
    pre: list[Any] = [
        v0_5.ZeroMeanUnitVarianceDescr(
            kwargs=v0_5.ZeroMeanUnitVarianceKwargs(axes=_yx())
        ),
        v0_5.ClipDescr(kwargs=v0_5.ClipKwargs(min=-2.5, max=2.5)),
    ]
    if seg:
        post: list[Any] = [v0_5.SoftmaxDescr(kwargs=v0_5.SoftmaxKwargs())]
        channels = ["background", "foreground"]
    else:
        # (not scale_mean_variance: bioimageio.core 0.11 cannot run it on an
        # output, it looks for the output's statistics before there is one)
        post = [
            v0_5.ScaleRangeDescr(
                kwargs=v0_5.ScaleRangeKwargs(
                    axes=_yx(),
                    min_percentile=5.0,
                    max_percentile=95.0,
                    reference_tensor=v0_5.TensorId("raw"),
                )
            ),
            v0_5.ScaleLinearDescr(
                kwargs=v0_5.ScaleLinearAlongAxisKwargs(
                    axis=v0_5.AxisId("channel"), gain=[300.0], offset=[100.0]
                )
            ),
        ]
        channels = ["denoised"]
    with ValidationContext(perform_io_checks=True):
        pkg = _write_package(
            folder,
            kind,
            net=net,
            arch=arch,
            channels=channels,
            pre=pre,
            post=post,
            test=(x, np.full((1, len(channels), 64, 64), 0.5, np.float32)),
        )
    image = _raw_image((72, 88), seed=9)  # a valid size: nothing padded
    theirs = bioimageio.core.predict(
        model=pkg, inputs={"raw": image[None, None]}
    ).members
    (out,) = [t.data.to_numpy()[0] for t in theirs.values()]
    model = load_model(pkg, device="cpu")
    if seg:
        expected, n = ndi.label(out[1] > 0.5)
        assert n > 0
        np.testing.assert_array_equal(model.predict(image), expected)
    else:
        np.testing.assert_allclose(model.predict(image), out[0], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(model.outputs(image), out, rtol=1e-4, atol=1e-3)


def _edit(packages: dict[str, Path], tmp_path: Path, change: Any) -> Path:
    folder = _unzipped(packages["denoise"], tmp_path / "edited")
    card, rdf = _card(folder)
    change(rdf)
    card.write_text(yaml.safe_dump(rdf))
    return card


def _add_z(rdf: dict[str, Any]) -> None:
    for t in (*rdf["inputs"], *rdf["outputs"]):
        z = dict(t["axes"][2])
        z["id"] = "z"
        t["axes"].insert(2, z)


def _two_inputs(rdf: dict[str, Any]) -> None:
    second = json.loads(json.dumps(rdf["inputs"][0]))
    second["id"] = "mask"
    rdf["inputs"].append(second)


def _onnx_only(rdf: dict[str, Any]) -> None:
    rdf["weights"] = {"onnx": {"source": "weights.onnx", "opset_version": 17}}


def _offset_output(rdf: dict[str, Any]) -> None:
    rdf["outputs"][0]["axes"][2]["size"]["offset"] = -8


def _format_04(rdf: dict[str, Any]) -> None:
    rdf["format_version"] = "0.4.10"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_add_z, "3D (a z axis)"),
        (_two_inputs, "2 inputs and 1 outputs"),
        (_onnx_only, "weights formats onnx"),
        (_offset_output, "outputs[0].axes[2].size"),
        (_format_04, "format_version 0.4.10"),
    ],
)
def test_what_smartscope_cannot_run_is_refused_naming_the_file(
    packages, tmp_path, change, expected
) -> None:
    card = _edit(packages, tmp_path, change)
    with pytest.raises(ModelError) as info:
        load_model(card.parent, device="cpu")
    message = str(info.value)
    assert message.startswith(str(card)), message
    assert expected in message
    assert "config.smartscope" in message  # and not a smartscope card either
    # the protocol-time check (no torch) says the same
    with pytest.raises(ModelError) as info:
        check_model_files(card.parent)
    assert str(info.value).startswith(str(card))
    assert expected in str(info.value)


def test_a_foreign_denoiser_in_a_protocol_run(packages, tmp_path) -> None:
    from smartscope.io.read_images import list_images
    from smartscope.protocol import ProtocolError, load_protocol
    from smartscope.run import run_protocol

    assert check_model_files(packages["denoise"]).kind == "denoise"
    assert check_model_files(packages["segment"]).kind == "segment"
    text = f"""
name: foreign-denoiser
seed: 2
time_mode: virtual
objective: 20x
laser_power_mw: 5
sequence:
  channels: [{{config: DAPI, exposure: 30}}]
  stage_positions: [{{name: a, x: 0, y: 0}}]
  time_plan: {{interval: 30, loops: 4}}
analysis:
  segmenter: classical
  denoise: {packages["denoise"]}
  save_denoised: true
  diameter_um: 12
limits:
  xy_box_um: [-300, 300, -300, 300]
  max_xy_step_um: 50
  max_laser_mw: 8
"""
    path = tmp_path / "protocol.yaml"
    path.write_text(text)
    load_protocol(path)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(
        text.replace("  segmenter: classical\n", "  segmenter: model\n").replace(
            f"  denoise: {packages['denoise']}\n  save_denoised: true\n",
            f"  model: {packages['denoise']}\n",
        )
    )
    with pytest.raises(ProtocolError, match="denoising model"):
        load_protocol(wrong)
    run, summary = run_protocol(
        path, out_dir=tmp_path / "run", device="cpu", progress=False, report=False
    )
    assert summary["status"] == "completed"
    assert summary["frames_acquired"] == 4
    events = [json.loads(line) for line in (run / "events.jsonl").open()]
    assert not [e for e in events if "error" in e["kind"]], events
    assert len([e for e in events if e["kind"] == "analysis"]) == 4
    kinds = {image.kind for image in list_images(run)}
    assert {"raw", "denoised"} <= kinds
