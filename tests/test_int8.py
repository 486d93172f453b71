"""int8 networks on the CPU: the shipped segmenter's ONNX Runtime copy, the
quantiser that makes (or refuses) such copies, and how they travel."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from smartscope.metrics import average_precision
from smartscope.nn.card import INT8_NAME
from smartscope.nn.errors import ModelError
from smartscope.nn.locate import resolve_model_path
from smartscope.nn.model import load_model
from smartscope.nn.quantize import QuantizationRejected, quantize_folder
from smartscope.nn.simdata import simulate_frames
from smartscope.nn.train import SEGMENT_VAL_SPEC


def _without_int8(src: str, dest: Path) -> Path:
    """A copy of a shipped model folder with no int8 weights."""
    shutil.copytree(resolve_model_path(src), dest)
    (dest / INT8_NAME).unlink(missing_ok=True)
    rdf = yaml.safe_load((dest / "rdf.yaml").read_text())
    rdf["config"]["smartscope"].pop("int8", None)
    (dest / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False, width=100))
    return dest


def test_shipped_segmenter_runs_int8_on_the_cpu_with_the_same_objects() -> None:
    int8 = load_model("nuclei-seg", device="cpu")
    f32 = load_model("nuclei-seg", device="cpu", precision="float32")
    assert int8.predictor.precision == "int8"
    assert f32.predictor.precision == "float32"
    frames = simulate_frames(3, SEGMENT_VAL_SPEC, seed=100_001)
    ap_int8, ap_f32, agree = [], [], []
    for f in frames:
        a, b = int8.predict(f.image), f32.predict(f.image)
        ap_int8.append(average_precision(f.labels, a)[0.5])
        ap_f32.append(average_precision(f.labels, b)[0.5])
        agree.append(average_precision(b, a)[0.75])
    # against the simulator's truth as good as float32, and nearly the same objects
    assert np.mean(ap_int8) >= np.mean(ap_f32) - 0.02
    assert np.mean(ap_int8) > 0.9
    assert min(agree) > 0.9


def test_the_onnx_threads_follow_torchs_setting() -> None:
    model = load_model("nuclei-seg", device="cpu")
    runner = model.predictor._onnx
    image = simulate_frames(1, SEGMENT_VAL_SPEC, seed=100_002)[0].image
    before = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            model.predict(image)
        assert sorted(runner._sessions) == [1, 2]
    finally:
        torch.set_num_threads(before)


def test_int8_without_int8_weights_is_refused_with_the_way_to_make_them(
    tmp_path: Path,
) -> None:
    folder = _without_int8("denoise-care", tmp_path / "care")
    with pytest.raises(ValueError, match=r"smartscope\.nn\.quantize"):
        load_model(folder, device="cpu", precision="int8")
    # "auto" falls back to float32 for a model without them
    assert load_model(folder, device="cpu").predictor.precision == "float32"


def test_shipped_denoisers_run_mixed_int8_within_their_tolerance() -> None:
    from smartscope.metrics import psnr
    from smartscope.nn.train import DENOISE_SPEC

    frames = simulate_frames(2, DENOISE_SPEC, seed=100_003)
    for name in ("denoise-care", "denoise-care-fast", "denoise-n2v"):
        int8 = load_model(name, device="cpu")
        f32 = load_model(name, device="cpu", precision="float32")
        assert int8.predictor.precision == "int8"
        for f in frames:
            a = psnr(f.clean, int8.predict(f.image))
            b = psnr(f.clean, f32.predict(f.image))
            assert a > b - 0.3
    # CARE's full-resolution layers stay float32 (8 bits spoil them)
    kept = load_model("denoise-care", device="cpu").card.int8.float32_layers
    assert {"/up.2/up.2.0/Conv", "/up.2/up.2.3/Conv", "/head/Conv"} <= set(kept)


def test_quantize_writes_checked_int8_weights(tmp_path: Path) -> None:
    folder = _without_int8("nuclei-seg", tmp_path / "seg")
    assert load_model(folder, device="cpu").predictor.precision == "float32"
    res = quantize_folder(folder, n_calibration=2, n_validation=2)
    card = yaml.safe_load((folder / "rdf.yaml").read_text())["config"]["smartscope"]
    entry = card["int8"]
    assert entry["source"] == INT8_NAME
    assert len(entry["sha256"]) == 64
    assert entry["accuracy"] == res["scores"]
    f32, int8 = res["scores"]["float32"], res["scores"]["int8"]
    assert set(f32) == {
        "validation_ap50",
        "validation_ap75",
        "shifted_ap50",
        "shifted_ap75",
    }
    assert all(f32[k] - int8[k] <= 0.01 for k in f32)
    assert res["float32_layers"] == entry["float32_layers"] == []  # all int8
    assert load_model(folder, device="cpu").predictor.precision == "int8"
    # a damaged copy is refused by name, not run
    data = bytearray((folder / INT8_NAME).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / INT8_NAME).write_bytes(bytes(data))
    with pytest.raises(ModelError, match=INT8_NAME):
        load_model(folder, device="cpu")
    # asking for float32 does not read it
    assert load_model(folder, device="cpu", precision="float32") is not None


def test_quantize_refuses_a_denoiser_all_in_int8(tmp_path: Path) -> None:
    folder = _without_int8("denoise-care", tmp_path / "care")
    before = (folder / "rdf.yaml").read_text()
    with pytest.raises(QuantizationRejected, match="validation_psnr_db") as err:
        quantize_folder(folder, n_calibration=2, n_validation=2, mixed=False)
    scores = err.value.scores
    drop = (
        scores["float32"]["validation_psnr_db"] - scores["int8"]["validation_psnr_db"]
    )
    assert drop > 0.2
    assert not (folder / INT8_NAME).exists()
    assert (folder / "rdf.yaml").read_text() == before


def test_an_exported_package_carries_the_int8_weights(tmp_path: Path) -> None:
    from smartscope.nn.export import export_model

    path = export_model(
        load_model("nuclei-seg", device="cpu", precision="float32"),
        tmp_path / "seg.zip",
        torchscript=False,
    )
    assert load_model(path, device="cpu").predictor.precision == "int8"


def test_the_analysis_precision_setting_reaches_the_models() -> None:
    from smartscope.analysis.analyser import FrameAnalyser
    from smartscope.analysis.settings import AnalysisSettings

    def loaded(**kw: str) -> FrameAnalyser:
        settings = AnalysisSettings(
            denoise="denoise-care", segmenter="model", model="nuclei-seg", **kw
        )
        analyser = FrameAnalyser(settings, device="cpu")
        analyser.load_models()
        return analyser

    auto = loaded()
    assert auto._segmenter.predictor.precision == "int8"
    assert auto._denoiser.predictor.precision == "int8"
    f32 = loaded(precision="float32")
    assert f32._segmenter.predictor.precision == "float32"
    assert f32._denoiser.predictor.precision == "float32"


@pytest.mark.slow
def test_quantize_finds_a_mixed_denoiser_within_tolerance(tmp_path: Path) -> None:
    folder = _without_int8("denoise-care", tmp_path / "care")
    res = quantize_folder(folder, n_calibration=2, n_validation=3)
    f32, int8 = res["scores"]["float32"], res["scores"]["int8"]
    assert f32["validation_psnr_db"] - int8["validation_psnr_db"] <= 0.2
    kept = res["float32_layers"]
    assert kept  # not all in int8 ...
    assert len(kept) < 18  # ... and not all in float32
    card = yaml.safe_load((folder / "rdf.yaml").read_text())["config"]["smartscope"]
    assert card["int8"]["float32_layers"] == kept
    assert load_model(folder, device="cpu").predictor.precision == "int8"
