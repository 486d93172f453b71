"""``smartscope train n2v --data PATH``: the user's own noisy frames.

PATH is a TIFF (an image or a stack), a folder of TIFFs, or a run folder /
its ``data.ome.zarr`` (a real run on the simulator, written by the real
writer). One image is split by rows so the validation is not the training
data; bad input is refused naming the file; training starts from the shipped
Noise2Void unless told otherwise, and ``--threads auto`` picks the thread
count from the steps' own times.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

pytest.importorskip("torch")

import torch
from typer.testing import CliRunner

from smartscope.controller import Controller
from smartscope.hardware import load_core, release_core
from smartscope.nn.cli import train_app
from smartscope.nn.errors import ModelError
from smartscope.nn.user_images import (
    read_noisy_images,
    split_for_validation,
)
from smartscope.protocol import Protocol


def _noisy(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.poisson(5.0, shape).astype(np.uint16)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run: 2 positions x 3 time points, no analysis."""
    out = tmp_path_factory.mktemp("n2v-run") / "run"
    proto = Protocol.model_validate(
        {
            "version": 1,
            "name": "n2v-data",
            "seed": 5,
            "time_mode": "virtual",
            "sequence": {
                "channels": [{"config": "DAPI", "exposure": 10}],
                "stage_positions": [
                    {"name": "a", "x": 0, "y": 0},
                    {"name": "b", "x": 200, "y": 0},
                ],
                "time_plan": {"interval": 10, "loops": 3},
            },
            "analysis": {"enabled": False},
            "save": {"report": False},
        }
    )
    core = load_core(seed=5, time_mode="virtual")
    try:
        Controller(core, proto, out_dir=out).run()
    finally:
        release_core(core)
    return out


def test_a_tiff_a_stack_and_a_folder(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "one.tif", _noisy((40, 50)))
    tifffile.imwrite(tmp_path / "stack.tiff", _noisy((3, 40, 50), 1))
    images, desc = read_noisy_images(tmp_path / "one.tif")
    assert len(images) == 1
    assert images[0].shape == (40, 50)
    assert images[0].dtype == np.float32
    assert "one.tif" in desc
    stack, _ = read_noisy_images(tmp_path / "stack.tiff")
    assert len(stack) == 3
    every, desc = read_noisy_images(tmp_path)
    assert len(every) == 4
    assert "2 user TIFF(s)" in desc


def test_a_run_folder_and_its_zarr(run_folder: Path) -> None:
    from smartscope.io.read_images import read_frames

    raw = read_frames(run_folder, role="acquisition")
    frames, desc = read_noisy_images(run_folder)
    assert len(frames) == len(raw) == 6
    np.testing.assert_array_equal(frames[0], raw[0])
    assert "smartscope run" in desc
    same, _ = read_noisy_images(run_folder / "data.ome.zarr")
    assert len(same) == 6


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda d: d / "missing.tif", "no such file"),
        (lambda d: _write(d / "notes.txt", b"x"), "expected a TIFF"),
        (lambda d: d, "no .tif/.tiff files"),
        (lambda d: _tiff(d / "rgb.tif", _noisy((60, 70, 3))), "RGB"),
        (lambda d: _tiff(d / "line.tif", _noisy((1, 70))), "2D image"),
        (lambda d: _tiff(d / "nan.tif", np.full((20, 20), np.nan, np.float32)), "NaN"),
    ],
)
def test_bad_input_names_the_file(tmp_path: Path, make, words: str) -> None:
    path = make(tmp_path)
    with pytest.raises(ModelError, match=None) as info:
        read_noisy_images(path)
    assert words in str(info.value)
    assert str(path) in str(info.value)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _tiff(path: Path, a: np.ndarray) -> Path:
    tifffile.imwrite(path, a)
    return path


def test_one_image_is_split_by_rows() -> None:
    a = np.arange(200 * 10, dtype=np.float32).reshape(200, 10)
    train, val, held = split_for_validation([a], 0.25, seed=0)
    assert train[0].shape == (150, 10)
    assert val[0].shape == (50, 10)
    # at least 32 rows are held out
    _, small, _ = split_for_validation([a], 0.05, seed=0)
    assert small[0].shape == (32, 10)
    # no validation pixel is trained on
    assert train[0].max() < val[0].min()
    assert "rows held out" in held
    several = [a, a + 1, a + 2, a + 3]
    train, val, held = split_for_validation(several, 0.25, seed=0)
    assert len(train) == 3
    assert len(val) == 1
    assert "1 of 4 images" in held


def test_cli_trains_on_a_run_folder_from_the_shipped_n2v(
    run_folder: Path, tmp_path: Path
) -> None:
    from smartscope.nn import load_model

    out = tmp_path / "mine"
    args = ["n2v", "--data", str(run_folder), "--out", str(out), "--steps", "3"]
    args += ["--batch", "2", "--workers", "0"]
    res = CliRunner().invoke(train_app, args)
    assert res.exit_code == 0, res.output
    model = load_model(out, device="cpu")
    shipped = load_model("denoise-n2v", device="cpu")
    assert model.card.unet == shipped.card.unet  # started from it
    training = model.card.training
    assert training["config"]["init"] == "denoise-n2v"
    assert training["config"]["threads"] == "auto"
    assert "6 raw frames of the smartscope run" in training["data"]
    assert model.card.validation["validation_data"] == "1 of 6 images held out"
    # fine-tuning from loaded weights keeps their batch-norm statistics
    # (docs/models.md: 0.2-0.8 dB on real images) while the weights learn
    assert training["config"]["freeze_norm"] is None  # the default: auto
    mine, theirs = model.source_state, shipped.source_state
    assert mine is not None
    assert theirs is not None
    stats = [k for k in mine if k.endswith(("running_mean", "running_var"))]
    assert stats
    assert all(torch.equal(mine[k], theirs[k]) for k in stats)
    convs = [k for k in mine if k.endswith("weight") and mine[k].ndim == 4]
    assert any(not torch.equal(mine[k], theirs[k]) for k in convs)


def test_cli_refuses_a_model_of_another_kind_to_start_from(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "x.tif", _noisy((64, 64)))
    res = CliRunner().invoke(
        train_app,
        [
            "n2v",
            "--data",
            str(tmp_path / "x.tif"),
            "--out",
            str(tmp_path / "m"),
            "--steps",
            "2",
            "--init",
            "denoise-care",
        ],
    )
    assert res.exit_code == 1
    assert "--init 'denoise-care'" in res.output
    assert "--init none" in res.output
