"""Mitosis detection from the measured objects of a frame.

Sits after measurement and tracking: a ``FrameResult``'s objects in, the
objects that look mitotic out. A nucleus entering mitosis condenses: its
chromatin gets brighter and the nucleus rounds up and shrinks (in the
simulator, ``Scene.brightness`` and ``Scene.axes_um``: x2.2 brightness, 0.8 of
the radius). The detector compares each object with a reference for the same
nucleus: the running mean of its own track while it looked interphase, or,
at a track's first sighting, the median object of the frame. An object
is mitotic when its background-subtracted mean intensity is at least
``bright_ratio`` times the reference and its area between ``min_area_ratio``
and ``max_area_ratio`` of it (a dead, pyknotic nucleus is bright too, but
smaller).

The thresholds are chosen on simulator runs with known truth (seeds named in
``docs/protocols.md``); this is a rule on measured features, not a trained
classifier.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from smartscope.analysis.result import ObjectMeasurement

__all__ = ["MitosisDetector", "MitosisDetectorSettings"]


class MitosisDetectorSettings(BaseModel):
    """Thresholds of :class:`MitosisDetector` (ratios to the reference nucleus)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bright_ratio: float = Field(
        1.5,
        gt=1,
        description="mitotic: background-subtracted mean intensity at least this "
        "many times the reference",
    )
    min_area_ratio: float = Field(
        0.45,
        gt=0,
        lt=1,
        description="mitotic: area at least this share of the reference",
    )
    max_area_ratio: float = Field(
        1.3,
        gt=0,
        le=2,
        description="mitotic: area at most this share of the reference",
    )
    min_area_um2: float = Field(
        20.0, ge=0, description="objects smaller than this are ignored, µm²"
    )
    history_weight: float = Field(
        0.3,
        gt=0,
        le=1,
        description="weight of the newest interphase frame in a track's running "
        "reference",
    )

    @model_validator(mode="after")
    def _check(self) -> MitosisDetectorSettings:
        if self.min_area_ratio >= self.max_area_ratio:
            raise ValueError(
                f"min_area_ratio ({self.min_area_ratio}) must be below "
                f"max_area_ratio ({self.max_area_ratio})"
            )
        return self


class MitosisDetector:
    """Flags mitotic nuclei in the frames of one stage position.

    One detector per position: track ids and references belong to the
    position's tracker. Call :meth:`update` with each frame's objects, in the
    order of acquisition.
    """

    def __init__(self, settings: MitosisDetectorSettings | None = None) -> None:
        self.settings = settings or MitosisDetectorSettings()
        #: track id -> (reference signal, ADU above background; reference area, µm²)
        self._ref: dict[int, tuple[float, float]] = {}

    def reset(self) -> None:
        """Forget every track's reference."""
        self._ref.clear()

    def update(
        self, objects: Sequence[ObjectMeasurement], *, background: float
    ) -> list[ObjectMeasurement]:
        """The mitotic objects among ``objects`` (one frame, ``background`` in
        ADU); updates the references of the others."""
        s = self.settings
        objs = [o for o in objects if o.area_um2 >= s.min_area_um2]
        if not objs:
            return []
        signal = np.array([o.mean_intensity - background for o in objs])
        area = np.array([o.area_um2 for o in objs])
        frame_ref = (float(np.median(signal)), float(np.median(area)))
        mitotic: list[ObjectMeasurement] = []
        w = s.history_weight
        for o, sig, a in zip(objs, signal.tolist(), area.tolist(), strict=True):
            ref_sig, ref_area = self._ref.get(o.track_id, frame_ref)
            is_mitotic = (
                ref_sig > 0
                and sig >= s.bright_ratio * ref_sig
                and s.min_area_ratio * ref_area <= a <= s.max_area_ratio * ref_area
            )
            if is_mitotic:
                mitotic.append(o)
            if o.track_id not in self._ref:
                # a track's first sighting becomes its reference whatever it
                # looked like: an unusually bright interphase nucleus is judged
                # against itself from then on (a nucleus already in mitosis
                # at its first sighting is flagged once)
                self._ref[o.track_id] = (sig, a)
            elif not is_mitotic:
                self._ref[o.track_id] = (
                    (1 - w) * ref_sig + w * sig,
                    (1 - w) * ref_area + w * a,
                )
        return mitotic
