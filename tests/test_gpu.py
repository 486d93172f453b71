"""GPU paths (``-m gpu``; skipped where CUDA is absent): the models on CUDA
agree with the CPU, and the controller runs its analysis there.

No timing is asserted: GPU speed is measured with ``smartscope bench`` and
``benchmarks/bench_models.py`` on a GPU machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def _frame() -> np.ndarray:
    from smartscope.hardware import load_core, release_core

    core = load_core(seed=4)
    try:
        core.snapImage()
        return np.asarray(core.getImage()).copy()
    finally:
        release_core(core)


def test_segmenter_on_cuda_matches_cpu() -> None:
    from smartscope.metrics import average_precision
    from smartscope.nn import load_model

    image = _frame()
    cpu = load_model("nuclei-seg", device="cpu").predict(image)
    gpu = load_model("nuclei-seg", device="cuda").predict(image)  # bfloat16 autocast
    assert gpu.dtype == np.int32
    assert gpu.shape == image.shape
    assert average_precision(cpu, gpu, thresholds=(0.5,))[0.5] >= 0.95


def test_denoiser_on_cuda_matches_cpu() -> None:
    from smartscope.nn import load_model

    image = _frame()
    cpu = load_model("denoise-care", device="cpu").predict(image)
    gpu = load_model("denoise-care", device="cuda").predict(image)
    assert gpu.dtype == np.float32
    scale = float(cpu.max() - cpu.min())
    assert np.abs(gpu - cpu).mean() < 0.02 * scale


def test_controller_analyses_on_cuda(tmp_path: Path) -> None:
    from smartscope.controller import Controller
    from smartscope.hardware import load_core, release_core
    from smartscope.protocol import Protocol

    proto = Protocol.model_validate(
        {
            "name": "gpu",
            "sequence": {"time_plan": {"interval": 10, "loops": 5}},
            "analysis": {
                "segmenter": "model",
                "model": "nuclei-seg",
                "denoise": "denoise-care",
            },
        }
    )
    core = load_core()
    try:
        summary = Controller(core, proto, out_dir=tmp_path / "run", device="cuda").run()
    finally:
        release_core(core)
    assert summary["frames_analysed"] == 5


def test_device_path_is_the_default_on_cuda() -> None:
    """On CUDA the frame stays on the card from normalisation to labels
    (``on_device``), and its labels agree with the CPU's host path, also
    for a 2048² frame predicted in tiles."""
    from smartscope.bench_scaling import demo_frame
    from smartscope.metrics import average_precision
    from smartscope.nn import load_model

    gpu = load_model("nuclei-seg", device="cuda")
    cpu = load_model("nuclei-seg", device="cpu", precision="float32")
    assert gpu.on_device
    assert not cpu.on_device
    for size in (512, 2048):
        image = demo_frame(size)
        want = cpu.predict(image, diameter_px=18.2)
        got = gpu.predict(image, diameter_px=18.2)
        assert got.dtype == np.int32
        assert got.shape == image.shape
        assert average_precision(want, got, thresholds=(0.5,))[0.5] >= 0.95


def test_device_labels_on_cuda_match_the_cpu() -> None:
    """The torch post-processing gives the same labels on CUDA as on the CPU
    (it is deterministic: integer spreading, no atomics)."""
    from smartscope.nn import load_model
    from smartscope.nn.device_labels import labels_from_maps_t

    image = _frame()
    fg, dist = load_model("nuclei-seg", device="cpu").maps(image, diameter_px=18.2)
    fg_t, dist_t = torch.from_numpy(fg), torch.from_numpy(dist)
    want = labels_from_maps_t(fg_t, dist_t, min_size_px=20)
    got = labels_from_maps_t(fg_t.cuda(), dist_t.cuda(), min_size_px=20)
    assert got.device.type == "cuda"
    assert torch.equal(got.cpu(), want)


def test_frames_cross_to_cuda_pinned_as_16_bits() -> None:
    from smartscope.nn import load_model

    model = load_model("denoise-care", device="cuda")
    image = _frame()
    image[0, :3] = (0, 40000, 65535)  # above int16's range too
    t = model.predictor.to_device(image)
    assert t.device.type == "cuda"
    assert t.dtype == torch.int32
    back = model.predictor.to_host(t)
    np.testing.assert_array_equal(back, image)


def test_a_2048_frame_runs_in_one_piece_on_cuda(monkeypatch) -> None:
    """On a GPU a 2048² frame goes through each network in one piece (no
    tiles: a tile is a launch of every kernel again), the segmenter's
    rescaled to its training diameter too, and gives the CPU's tiled
    labels; the denoised frame is not sent to the card again (its twin)."""
    from smartscope.metrics import average_precision
    from smartscope.nn import load_model

    image = np.tile(_frame(), (4, 4))
    cpu = load_model("nuclei-seg", device="cpu").predict(image, diameter_px=18.2)
    gpu = load_model("nuclei-seg", device="cuda")
    denoiser = load_model("denoise-care", device="cuda")

    def no_tiles(x):
        raise AssertionError(f"tiled a {tuple(x.shape)} input on CUDA")

    uploads = []
    real = gpu.predictor.to_device
    monkeypatch.setattr(gpu.predictor, "_run_tiled", no_tiles)
    monkeypatch.setattr(denoiser.predictor, "_run_tiled", no_tiles)
    monkeypatch.setattr(
        gpu.predictor, "to_device", lambda a: uploads.append(a.shape) or real(a)
    )
    got = gpu.predict(image, diameter_px=18.2)
    assert got.shape == image.shape
    assert average_precision(cpu, got, thresholds=(0.5,))[0.5] >= 0.95
    uploads.clear()
    denoised = denoiser.predict(image)
    labels = gpu.predict(denoised, diameter_px=18.2)
    assert uploads == []
    again = gpu.predict(denoised.copy(), diameter_px=18.2)  # sent: the same input
    assert average_precision(again, labels, thresholds=(0.9,))[0.9] >= 0.99
