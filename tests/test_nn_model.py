"""load_model / Model.predict: shapes, dtypes, units, tiling, rescaling, bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")

from smartscope.errors import SmartscopeError  # noqa: E402
from smartscope.nn import ModelError, load_model  # noqa: E402
from smartscope.nn.card import ModelCard, Postprocess  # noqa: E402
from smartscope.nn.model import available_models, save_model  # noqa: E402
from smartscope.nn.unet import UNet, UNetConfig  # noqa: E402


def _tiny(folder: Path, kind: str) -> Path:
    torch.manual_seed(0)
    unet = UNetConfig(
        depth=2,
        base_channels=8,
        pixel_unshuffle=2,
        out_channels=1 if kind == "denoise" else 2,
        residual=kind == "denoise",
    )
    card = ModelCard(
        kind=kind,
        method="care" if kind == "denoise" else "distance-watershed",
        unet=unet,
        postprocess=Postprocess() if kind == "segment" else None,
        train_diameter_px=20.0 if kind == "segment" else None,
    )
    return save_model(UNet(unet), card, folder, name=f"tiny-{kind}", description="test")


@pytest.fixture
def denoiser_dir(tmp_path: Path) -> Path:
    return _tiny(tmp_path / "den", "denoise")


@pytest.fixture
def segmenter_dir(tmp_path: Path) -> Path:
    return _tiny(tmp_path / "seg", "segment")


@pytest.mark.parametrize("shape", [(50, 70), (256, 256), (700, 300)])
def test_denoiser_output_shape_dtype_and_units(denoiser_dir, shape):
    model = load_model(denoiser_dir, device="cpu", tile_px=256)
    rng = np.random.default_rng(0)
    img = (rng.poisson(50, shape) + 100).astype(np.uint16)
    out = model.predict(img)
    assert out.shape == shape
    assert out.dtype == np.float32
    # an untrained residual network is the identity: output stays in ADU
    np.testing.assert_allclose(out, img, atol=1e-2)


def test_tiled_prediction_matches_whole_frame(segmenter_dir):
    rng = np.random.default_rng(1)
    img = rng.random((300, 280)).astype(np.float32)
    whole = load_model(segmenter_dir, device="cpu", tile_px=512)
    tiled = load_model(segmenter_dir, device="cpu", tile_px=128)
    fw, _dw = whole.maps(img)
    ft, _dt = tiled.maps(img)
    # tiles keep their centres; differences only where the receptive field is cut
    assert np.mean(np.abs(fw - ft)) < 0.02


@pytest.mark.parametrize("n", [300, 1025, 1109, 2048, 2218, 4436])
def test_tiles_are_sized_to_the_frame(n):
    """Each axis is covered once by the kept parts of as few tiles as
    ``tile_px`` allows, each tile keeping at least half the overlap from its
    inner edges, and the tiles hold at most 10 % more pixels than the axis
    (a 1109-px side was two 1024-px tiles, 85 % more)."""
    from torch import nn

    from smartscope.nn.predictor import Predictor

    p = Predictor(nn.Identity(), device="cpu", tile_px=1024, overlap_px=64)
    tiles = p._layout(n)
    assert len(tiles) == max(1, -(-(n - 64) // (1024 - 64)))
    kept = np.zeros(n, int)
    for start, size, k0, k1 in tiles:
        assert size <= 1024
        assert start <= k0 < k1 <= start + size <= n
        assert start == 0 or k0 - start >= 32
        assert start + size == n or start + size - k1 >= 32
        kept[k0:k1] += 1
    assert (kept == 1).all()
    assert sum(size for _, size, _, _ in tiles) <= 1.1 * n


def test_segmenter_returns_int32_labels_and_rescales(segmenter_dir):
    model = load_model(segmenter_dir, device="cpu")
    img = np.random.default_rng(2).random((96, 128)).astype(np.float32)
    for d in (None, 10.0, 40.0):
        lab = model.predict(img, diameter_px=d)
        assert lab.shape == img.shape
        assert lab.dtype == np.int32
        assert lab.min() >= 0
    with pytest.raises(ValueError, match="diameter_px"):
        model.predict(img, diameter_px=-3)


def test_predictor_warm_up_and_device(denoiser_dir):
    model = load_model(denoiser_dir, device="auto", warm_up=True)
    assert model.predictor.device.type in ("cpu", "cuda")
    assert "denoise" in repr(model) or model.kind == "denoise"


def test_unknown_name_lists_shipped_models():
    with pytest.raises(ModelError, match="no model named") as e:
        load_model("no-such-model")
    assert isinstance(e.value, SmartscopeError)


def test_corrupt_weights_are_refused_with_the_file_named(denoiser_dir):
    w = denoiser_dir / "weights.pt"
    w.write_bytes(b"not a torch file" * 10)
    with pytest.raises(ModelError, match="corrupt") as e:
        load_model(denoiser_dir)
    assert "weights.pt" in str(e.value)
    # without the checksum the loader still refuses, naming the file
    rdf = yaml.safe_load((denoiser_dir / "rdf.yaml").read_text())
    del rdf["weights"]["pytorch_state_dict"]["sha256"]
    (denoiser_dir / "rdf.yaml").write_text(yaml.safe_dump(rdf))
    with pytest.raises(ModelError, match=r"weights\.pt.*cannot read weights"):
        load_model(denoiser_dir)


def test_mismatched_architecture_is_refused(denoiser_dir):
    rdf = yaml.safe_load((denoiser_dir / "rdf.yaml").read_text())
    rdf["config"]["smartscope"]["unet"]["base_channels"] = 16
    del rdf["weights"]["pytorch_state_dict"]["sha256"]
    (denoiser_dir / "rdf.yaml").write_text(yaml.safe_dump(rdf))
    with pytest.raises(ModelError, match="do not match the architecture"):
        load_model(denoiser_dir)


def test_bad_card_field_is_named(denoiser_dir):
    rdf_path = denoiser_dir / "rdf.yaml"
    rdf = yaml.safe_load(rdf_path.read_text())
    rdf["config"]["smartscope"]["kind"] = "classify"
    rdf_path.write_text(yaml.safe_dump(rdf))
    with pytest.raises(ModelError, match=r"rdf\.yaml.*config\.smartscope\.kind"):
        load_model(rdf_path)
    rdf_path.write_text("type: model\n  bad: [indent")
    with pytest.raises(ModelError, match="not valid YAML"):
        load_model(denoiser_dir)


def test_shipped_models_load_and_predict():
    names = available_models()
    assert {"nuclei-seg", "denoise-care", "denoise-care-fast", "denoise-n2v"} <= set(
        names
    )
    img = np.random.default_rng(3).poisson(20, (128, 160)).astype(np.uint16) + 100
    for name in ("denoise-care", "denoise-care-fast", "denoise-n2v"):
        out = load_model(name, device="cpu").predict(img)
        assert out.shape == img.shape
        assert out.dtype == np.float32
    lab = load_model("nuclei-seg", device="cpu").predict(img)
    assert lab.dtype == np.int32
    for name in names:
        folder = Path(load_model(name).path)
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        assert size <= 5 * 1024 * 1024


def test_fast_care_is_care_at_a_quarter_of_the_arithmetic():
    """``denoise-care-fast`` is ``denoise-care``'s network and training at 8
    base channels instead of 16: a quarter of the multiply-adds per frame
    (counted, not timed), for a CPU that cannot run the other at the
    camera's rate; and it still restores low-dose frames far past the best
    Gaussian filter (its card's validation, checked on two more frames)."""
    import torch
    from scipy import ndimage as ndi
    from torch.utils.flop_counter import FlopCounterMode

    from smartscope.metrics import psnr
    from smartscope.nn.simdata import simulate_frames
    from smartscope.nn.train import DENOISE_SPEC

    care = load_model("denoise-care", device="cpu", precision="float32")
    fast = load_model("denoise-care-fast", device="cpu", precision="float32")
    assert fast.card.unet.base_channels == 8
    assert fast.card.unet.model_dump() == {
        **care.card.unet.model_dump(),
        "base_channels": 8,
    }
    flops = {}
    for name, m in (("care", care), ("fast", fast)):
        with torch.inference_mode(), FlopCounterMode(display=False) as count:
            m.predictor.network(torch.zeros(1, 1, 512, 512))
        flops[name] = count.get_total_flops()
    assert flops["fast"] <= 0.26 * flops["care"]
    assert fast.card.validation["psnr_gain_over_gaussian_db"] >= 3.5
    for f in simulate_frames(2, DENOISE_SPEC, seed=100_005):
        gauss = ndi.gaussian_filter(f.image.astype(np.float32), 1.25)
        assert psnr(f.clean, fast.predict(f.image)) > psnr(f.clean, gauss) + 2.0


def test_automatic_size_finds_nuclei_six_times_the_training_size():
    """A simulated 20x field enlarged 6x (nuclei ~130 px across, as in 60x
    images): without ``diameter_px`` the shipped segmenter measures the nuclei
    on each pass and rescales until they are near the training diameter. With
    a single correction the first, shattered pass sent it to the wrong scale
    (AP@0.5 0.2 on this frame); scored against the simulator's labels."""
    from scipy import ndimage as ndi

    import smartscope.nn.model as model_module
    from smartscope.metrics import average_precision
    from smartscope.nn.simdata import equivalent_diameter_px, simulate_frames
    from smartscope.nn.train import SEGMENT_VAL_SPEC

    spec = SEGMENT_VAL_SPEC.model_copy(
        update={"size_px": 256, "objectives": ("20x",), "min_nuclei": 5}
    )
    frame = simulate_frames(1, spec, seed=3)[0]
    image = ndi.zoom(frame.image.astype(np.float32), 6, order=1)
    truth = ndi.zoom(frame.labels, 6, order=0)
    assert 110 <= equivalent_diameter_px(truth) <= 150
    model = load_model("nuclei-seg", device="cpu", precision="float32")
    scales: list[float] = []
    maps = model._maps
    model._maps = lambda x, f, *a: (scales.append(f), maps(x, f, *a))[1]  # type: ignore[method-assign]
    ap = average_precision(truth, model.predict(image))
    assert ap[0.5] >= 0.9
    assert ap[0.75] >= 0.8
    assert 3 <= len(scales) <= model_module.AUTO_SIZE_PASSES
    # the last pass saw the nuclei near the training diameter (20 px)
    assert 20 / 1.3 <= equivalent_diameter_px(truth) * scales[-1] <= 20 * 1.3


def test_fragment_limit_follows_the_nuclei_size_at_the_image_own_scale():
    """``min_size_px`` is at the training diameter (20 px). Rescaled passes
    scale it with the image; a pass at the image's own scale (nuclei anywhere
    in 10-30 px) scales it with the nuclei measured there, so a limit tuned
    to drop fragments of real nuclei (128 px) does not drop small simulated
    nuclei whole. Scored against the simulator's labels."""
    from smartscope.metrics import average_precision
    from smartscope.nn.simdata import equivalent_diameter_px, simulate_frames
    from smartscope.nn.train import SEGMENT_VAL_SPEC

    spec = SEGMENT_VAL_SPEC.model_copy(
        update={"size_px": 256, "objectives": ("10x",), "min_nuclei": 8}
    )
    frame = simulate_frames(1, spec, seed=5)[0]
    assert equivalent_diameter_px(frame.labels) < 16  # area under 128 px
    model = load_model("nuclei-seg-sim", device="cpu", precision="float32")
    post = model.card.postprocess
    base = average_precision(frame.labels, model.predict(frame.image))
    model.card = model.card.model_copy(
        update={"postprocess": post.model_copy(update={"min_size_px": 128})}
    )
    strict = average_precision(frame.labels, model.predict(frame.image))
    assert base[0.5] >= 0.9
    assert strict[0.5] >= base[0.5] - 0.05


def test_flip_averaged_maps_segment_simulated_fields():
    """``predict(tta=True)``: the maps averaged over the frame and its three
    flips (4 network passes), mapped back before averaging: the labels stay
    on the nuclei (scored against the simulator's truth, four 20x fields)
    and are no worse than the plain maps'."""
    from smartscope.metrics import average_precision
    from smartscope.nn.simdata import equivalent_diameter_px, simulate_frames
    from smartscope.nn.train import SEGMENT_VAL_SPEC

    spec = SEGMENT_VAL_SPEC.model_copy(
        update={"size_px": 256, "objectives": ("20x",), "min_nuclei": 5}
    )
    frames = simulate_frames(4, spec, seed=5)
    model = load_model("nuclei-seg", device="cpu", precision="float32")
    run = model.predictor.run
    runs: list[int] = []
    truths, plain, flipped = [], [], []
    for frame in frames:
        diameter = equivalent_diameter_px(frame.labels)
        plain.append(model.predict(frame.image, diameter_px=diameter))
        runs.clear()
        model.predictor.run = lambda x: (runs.append(1), run(x))[1]  # type: ignore[method-assign]
        labels = model.predict(frame.image, diameter_px=diameter, tta=True)
        model.predictor.run = run  # type: ignore[method-assign]
        assert len(runs) == 4
        assert labels.dtype == np.int32
        assert labels.shape == frame.image.shape
        truths.append(frame.labels)
        flipped.append(labels)
    # nuclei-seg (8000 steps): 0.917 pooled, plain and flipped alike; the
    # first nuclei-seg split a pair on the first field only with the flips
    ap_plain = average_precision(truths, plain)[0.5]
    assert average_precision(truths, flipped)[0.5] >= max(0.9, ap_plain - 0.02)


def test_min_size_keeps_nuclei_smaller_than_the_fragment_limit():
    """``predict(min_size_px=)`` replaces the card's fragment limits: nuclei at
    0.56x the stated diameter (0.31 of its area, under nuclei-seg's 0.41)
    are dropped by the card's limit and kept with a lower one (scored
    against the simulator's truth)."""
    from smartscope.metrics import average_precision
    from smartscope.nn.simdata import equivalent_diameter_px, simulate_frames
    from smartscope.nn.train import SEGMENT_VAL_SPEC

    spec = SEGMENT_VAL_SPEC.model_copy(
        update={"size_px": 256, "objectives": ("20x",), "min_nuclei": 5}
    )
    frames = simulate_frames(3, spec, seed=0)
    model = load_model("nuclei-seg", device="cpu", precision="float32")
    truths, card_limit, lowered = [], [], []
    for frame in frames:
        stated = 1.8 * equivalent_diameter_px(frame.labels)
        truths.append(frame.labels)
        card_limit.append(model.predict(frame.image, diameter_px=stated))
        lowered.append(model.predict(frame.image, diameter_px=stated, min_size_px=10))
    # measured: 0.61 with the card's limit, 0.94 with 10 px
    assert average_precision(truths, card_limit)[0.5] < 0.75
    assert average_precision(truths, lowered)[0.5] >= 0.9
    # a limit above every nucleus leaves nothing; a negative one is refused
    assert model.predict(frames[0].image, min_size_px=1e6).max() == 0
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="min_size_px must be a finite number"):
            model.predict(frames[0].image, min_size_px=bad)


def test_tiles_by_default_on_the_cpu_not_on_a_gpu():
    """The CPU predicts frames above 1024 px in tiles (they keep the
    activations in its caches); a GPU takes frames up to 2560 px whole
    (a 2048-px frame rescaled to the training diameter), so a 2219-px
    input is one tile there and 3 x 3 here."""
    import torch
    from torch import nn

    from smartscope.nn.predictor import Predictor, default_tile_px

    cpu = Predictor(nn.Identity(), device="cpu")
    assert len(cpu._layout(2219)) == 3
    for precision in ("float32", "int8"):
        assert default_tile_px(torch.device("cpu"), precision) == 1024
    gpu_tile = default_tile_px(torch.device("cuda"), "bfloat16")
    assert gpu_tile == 2560
    cpu.tile_px = gpu_tile
    assert cpu._layout(2219) == [(0, 2219, 0, 2219)]


def test_cuda_graphs_by_default_for_this_project_s_networks_only():
    """A U-Net of this project's replays CUDA graphs on a GPU by default; a
    foreign network (an imported bioimage.io model, which may read values
    back or branch on them mid-call) only when asked; ONNX Runtime's int8
    copy never. On the CPU none is recorded."""
    from torch import nn

    from smartscope.nn.predictor import Predictor

    unet = Predictor(UNet(UNetConfig()), device="cpu", precision="float32")
    foreign = Predictor(nn.Conv2d(1, 1, 3, padding=1), device="cpu")
    asked = Predictor(nn.Conv2d(1, 1, 3, padding=1), device="cpu", cuda_graphs=True)
    assert (unet.wants_cuda_graphs, foreign.wants_cuda_graphs) == (True, False)
    assert asked.wants_cuda_graphs
    unet.cuda_graphs = False
    assert not unet.wants_cuda_graphs
    shipped = load_model("nuclei-seg", device="cpu")  # int8 in ONNX Runtime
    assert shipped.predictor.own_network
    assert not shipped.predictor.wants_cuda_graphs
    for p in (unet, foreign, asked):
        assert not p.uses_cuda_graphs
        p.run(np.zeros((32, 32), np.float32))
        p.run(np.zeros((32, 32), np.float32))
        assert p.recorded_shapes == []
