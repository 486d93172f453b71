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
``docs/protocols.md``); this is a rule on measured features.

With ``method: model`` the detector asks a trained classifier instead
(``models/mitosis-clf``, :mod:`smartscope.nn.mitosis_model`): a small CNN on
each object's crop of the frame, normalised by the frame's median nucleus,
trained on simulator truth. It then needs the frame's image, labels and pixel
size in :meth:`MitosisDetector.update`. The model is checked and loaded when
the settings are validated (when the protocol loads, before the run starts),
so a missing or broken model is refused with its name before any hardware
moves; the detectors of a run's positions share the loaded network.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from smartscope.analysis.result import ObjectMeasurement

if TYPE_CHECKING:
    from smartscope.nn.mitosis_model import MitosisClassifier

__all__ = ["MitosisDetector", "MitosisDetectorSettings"]


class MitosisDetectorSettings(BaseModel):
    """How :class:`MitosisDetector` decides: the threshold rule (ratios to the
    reference nucleus) or a trained classifier."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Literal["threshold", "model"] = Field(
        "threshold",
        description="threshold: the rule on measured features below; model: a "
        "trained classifier on the frame's crops (needs image and labels)",
    )
    model: str = Field(
        "mitosis-clf",
        min_length=1,
        description="method model: the classifier, a shipped name or a model folder",
    )
    probability: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="method model: mitotic above this probability (None: the "
        "threshold in the model's card)",
    )

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
        if self.method == "model":
            _classifier(self.model)  # refuse a bad model now, and load it once
        return self


def _classifier(name: str) -> MitosisClassifier:
    """The loaded classifier ``name`` (shared; loaded on first use).

    Raises
    ------
    ValueError
        Naming the model and what is wrong with it (a pydantic validator turns
        it into a field error).
    """
    from smartscope.nn.errors import ModelError
    from smartscope.nn.locate import check_model_files

    try:
        found = check_model_files(name)
        if found.kind != "event":
            raise ModelError(
                f"model {name!r} is a {found.kind} model (its card says kind: "
                f"{found.kind}); the mitosis detector needs a classifier "
                "(kind: event), e.g. the shipped 'mitosis-clf'",
                path=found.path,
            )
        from smartscope.nn.mitosis_model import load_classifier

        return load_classifier(name, cached=True)
    except ModelError as e:
        raise ValueError(f"mitosis model {name!r}: {e}") from None


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
        self._classifier: MitosisClassifier | None = None
        self._p_min = 0.5
        if self.settings.method == "model":
            from smartscope.nn.mitosis_model import FrameObjects, TrackReferences

            self._classifier = _classifier(self.settings.model)
            # the references as in the classifier's training (not history_weight,
            # which is the threshold rule's)
            self._tracks = TrackReferences()
            self._frame_objects = FrameObjects
            p = self.settings.probability
            self._p_min = self._classifier.card.threshold if p is None else p

    def reset(self) -> None:
        """Forget every track's reference."""
        self._ref.clear()
        if self._classifier is not None:
            self._tracks.reset()

    def update(
        self,
        objects: Sequence[ObjectMeasurement],
        *,
        background: float,
        image: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        pixel_size_um: float | None = None,
    ) -> list[ObjectMeasurement]:
        """The mitotic objects among ``objects`` (one frame, ``background`` in
        ADU); updates the references of the others.

        ``image`` (Y, X) raw frame, ``labels`` (Y, X) int its instance labels
        (the objects' ``label``) and ``pixel_size_um``: needed by ``method:
        model`` (crops), ignored by the threshold rule.
        """
        s = self.settings
        if self._classifier is not None:
            return self._classify(
                self._classifier, objects, background, image, labels, pixel_size_um
            )
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

    def _classify(
        self,
        classifier: MitosisClassifier,
        objects: Sequence[ObjectMeasurement],
        background: float,
        image: np.ndarray | None,
        labels: np.ndarray | None,
        pixel_size_um: float | None,
    ) -> list[ObjectMeasurement]:
        if image is None or labels is None or pixel_size_um is None:
            raise ValueError(
                "MitosisDetector with method 'model' needs the frame's image, "
                "labels and pixel_size_um in update()"
            )
        if not objects:
            return []
        fo = self._frame_objects.of(objects, background=background)
        # every object of the frame counts in the classifier's reference nucleus
        p, edge = classifier.probabilities(
            image,
            labels,
            fo,
            tracks=self._tracks,
            background=background,
            pixel_size_um=pixel_size_um,
        )
        called = p >= self._p_min
        keep = fo.area_um2 >= classifier.card.crop.min_area_um2
        # an uncertain call (at least half the threshold) does not update the
        # track's reference either: a missed mitotic frame folded into it would
        # hide the rest of the mitosis
        self._tracks.update(
            fo.track[keep],
            fo.signal[keep],
            fo.area_um2[keep],
            mitotic=p[keep] >= 0.5 * self._p_min,
            edge=edge[keep],
        )
        least = self.settings.min_area_um2
        return [
            o
            for o, c in zip(objects, called.tolist(), strict=True)
            if c and o.area_um2 >= least
        ]
