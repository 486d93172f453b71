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
