"""Full-size checks of the shipped models (slow: run with ``pytest -m slow``).

- the shipped models still meet the numbers in docs/models.md;
- retraining with a card's command reproduces the card's metrics.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

pytest.importorskip("torch")

pytestmark = pytest.mark.slow


def test_shipped_models_beat_the_baselines():
    from smartscope.nn.evaluate import EVALUATE_STEPS, evaluate_shipped

    steps: list[str] = []
    res = evaluate_shipped(n_val=16, n_shifted=12, progress=steps.append)
    assert len(steps) == EVALUATE_STEPS  # the progress bar reaches its end
    care, n2v = res["denoise-care"], res["denoise-n2v"]
    assert care["psnr_gain_over_gaussian_db"] >= 2.0
    assert n2v["psnr_gain_over_gaussian_db"] >= 2.0
    assert res["n2v_fraction_of_care_gain"] >= 0.7
    assert n2v["psnr_db"] > care["psnr_db_input"] + 5
    for key in ("nuclei-seg", "nuclei-seg-crowded", "nuclei-seg-shifted"):
        seg = res[key]
        assert seg["ap50"] > seg["ap50_otsu_watershed"], key
        assert seg["ap75"] > seg["ap75_otsu_watershed"], key
    assert res["nuclei-seg"]["ap50"] >= 0.85
    assert res["nuclei-seg-shifted"]["ap50"] >= 0.8


@pytest.mark.parametrize(
    "name",
    [
        "denoise-care",
        "denoise-care-fast",
        "denoise-n2v",
        "nuclei-seg-sim",
        "nuclei-seg",
    ],
)
def test_card_command_reproduces_card_metrics(name, tmp_path):
    from typer.testing import CliRunner

    from smartscope.nn import load_model
    from smartscope.nn.cli import train_app

    card = load_model(name).card
    argv = shlex.split(card.training["command"])[2:]  # drop "smartscope train"
    out = argv.index("--out")
    argv[out + 1] = str(tmp_path / name)
    if "--data" in argv and not Path(argv[argv.index("--data") + 1]).is_dir():
        pytest.skip(
            f"{name} was trained on real images that are not shipped (no licence "
            f"to redistribute): rebuild {argv[argv.index('--data') + 1]} as "
            "benchmarks/data/build/README.md says"
        )
    res = CliRunner().invoke(train_app, argv)
    assert res.exit_code == 0, res.output
    again = load_model(tmp_path / name).card.validation
    for key in ("psnr_db", "ap50", "ap75"):
        if key in card.validation:
            tol = 0.3 if key == "psnr_db" else 0.02
            assert again[key] == pytest.approx(card.validation[key], abs=tol), key
