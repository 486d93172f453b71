"""AnalysisSettings: defaults, limits and cross-field rules with clear messages."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from smartscope.analysis import AnalysisSettings


def test_defaults_are_the_classical_pipeline() -> None:
    s = AnalysisSettings()
    assert s.enabled
    assert s.segmenter == "classical"
    assert s.model is None
    assert s.denoise is None
    assert s.queue_size == 4
    with pytest.raises(ValidationError):
        s.queue_size = 8  # type: ignore[misc]  # frozen


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"segmenter": "model"}, "segmenter='model' needs `model`"),
        (
            {"min_area_um2": 100, "max_area_um2": 50},
            "min_area_um2 (100) must be smaller",
        ),
        ({"diameter_um": 100}, "diameter_um=100 has an area of 7854.0 µm²"),
        ({"save_denoised": True}, "save_denoised=True needs a denoiser"),
        ({"queue_size": 0}, "greater than or equal to 1"),
        ({"threshold": "mean"}, "'otsu', 'li' or 'triangle'"),
        ({"track_max_step_um": 0}, "greater than 0"),
        ({"diameter": 10}, "Extra inputs are not permitted"),
        (
            {"segmenter": "model", "model": "m", "model_min_area_um2": float("inf")},
            "model_min_area_um2\n  Input should be a finite number",
        ),
        (
            {"segmenter": "model", "model": "m", "model_min_area_um2": 2000},
            "model_min_area_um2 (2000) must be smaller than max_area_um2 (2000)",
        ),
        ({"model_min_area_um2": 5}, "model_min_area_um2 sets the segmentation"),
    ],
)
def test_bad_settings_are_refused_with_a_message(kwargs: dict, message: str) -> None:
    with pytest.raises(
        ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")
    ):
        AnalysisSettings(**kwargs)


def test_model_paths_become_strings() -> None:
    s = AnalysisSettings(segmenter="model", model=Path("models/nuclei.pt"), denoise=" ")
    assert s.model == str(Path("models/nuclei.pt"))
    assert s.denoise is None  # blank means none


def test_round_trip_through_a_dict() -> None:
    s = AnalysisSettings(
        denoise="n2v-small", save_denoised=True, track_max_gap_frames=0
    )
    assert AnalysisSettings.model_validate(s.model_dump()) == s


@pytest.mark.parametrize("field", ["threads", "batch_frames"])
@pytest.mark.parametrize("value", [0, -3, 257, 2.5, True, "many", "2", None])
def test_a_count_or_auto_says_what_it_takes(field: str, value: object) -> None:
    """One message naming what is accepted, not one per branch of the type;
    ``true`` is not taken for 1."""
    with pytest.raises(
        ValidationError,
        match=f"expected a whole number from 1 to 256 or 'auto' for {field}",
    ):
        AnalysisSettings(**{field: value})


def test_a_count_or_auto_takes_whole_numbers_and_auto() -> None:
    import numpy as np

    s = AnalysisSettings(threads=np.int64(2), batch_frames=256)
    assert (s.threads, s.batch_frames) == (2, 256)
    assert type(s.threads) is int
    assert AnalysisSettings(threads="auto", batch_frames="auto").threads == "auto"
