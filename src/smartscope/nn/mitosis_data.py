"""Training and validation data for the mitosis classifier, from simulated time-lapses.

:func:`simulate_objects` images a few fields of a simulated culture over time
(10x, DAPI, the event protocol's kind of acquisition), analyses each frame
with smartscope's own pipeline (:class:`~smartscope.analysis.analyser.
FrameAnalyser`: the classical segmenter, measurement, tracking), and labels
each segmented object with the truth state of the cell under it (the cell id
covering most of its pixels; no cell: debris or background, a negative). It
returns every object's crop (:func:`smartscope.nn.mitosis_model.frame_inputs`,
with track references that follow the truth)
with its label, its cell, its track and what the threshold detector
(:class:`~smartscope.analysis.mitosis.MitosisDetector`) said of it, so the
classifier and the rule are scored on the same objects.

Each run is one seed: scene, acquisition settings and noise follow from it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from smartscope.nn.mitosis_model import (
    CHANNELS,
    CropSettings,
    FrameObjects,
    MitosisClassifier,
    TrackReferences,
    frame_inputs,
)

__all__ = [
    "PROTOCOL_RUNS",
    "TRAIN_RUNS",
    "ObjectSet",
    "RunSpec",
    "simulate_objects",
]

#: truth state codes in :attr:`ObjectSet.state` (-1: no cell under the object)
STATES = ("interphase", "mitosis", "dead")


class RunSpec(BaseModel):
    """Ranges a simulated time-lapse is drawn from (uniform; ``*_mw``,
    ``*_ms``, ``density`` log-uniform). Units in the names."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scene: str | None = Field(
        None, description="a scene preset name (its own values); None: drawn below"
    )
    density_per_mm2: tuple[float, float] = (60.0, 400.0)
    radius_um_mean: tuple[float, float] = (5.0, 7.0)
    brightness_sd: tuple[float, float] = (0.15, 0.35)
    texture: tuple[float, float] = (0.08, 0.25)
    cycle_h_mean: tuple[float, float] = (5.0, 12.0)
    mitosis_min: tuple[float, float] = (15.0, 40.0)
    speed_um_per_min: tuple[float, float] = (0.3, 0.8)
    lethal_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="share of runs whose cells die within the run (pyknotic "
        "negatives): lethal fluence 3-10 J/cm²",
    )
    power_mw: tuple[float, float] = (2.0, 10.0)
    exposure_ms: tuple[float, float] = (20.0, 80.0)
    defocus_um: tuple[float, float] = (0.0, 1.0)
    positions: int = Field(3, ge=1, le=16)
    time_points: int = Field(24, ge=1)
    interval_s: float = Field(300.0, gt=0)


#: the classifier's training and validation runs: dense, fast-cycling
#: variants of the event protocol's scene, half of them lethal
TRAIN_RUNS = RunSpec()
#: the event protocol's own acquisition (mitosis_sparse, 5 mW x 40 ms, 5 min)
#: for 6 h: what the detector meets in protocols/event_mitosis.yaml
PROTOCOL_RUNS = RunSpec(
    scene="mitosis_sparse",
    power_mw=(5.0, 5.0),
    exposure_ms=(40.0, 40.0),
    defocus_um=(0.0, 0.0),
    lethal_share=0.0,
    time_points=72,
)


@dataclass
class ObjectSet:
    """Segmented objects of simulated runs, one row each.

    ``crops`` (N, 4, S, S) float32; ``state`` (N,) int8 index into
    :data:`STATES` (-1: no cell); ``cell``, ``track``, ``run``, ``frame``, ``t``
    (N,) int64 (``frame`` counts the run's frames, all positions; ``t`` its
    time points);
    ``position`` (N,) int16; ``threshold`` (N,) bool, the threshold
    detector's call; ``model`` (N,) bool, the classifier's call when the run
    was simulated with one (else all False).
    """

    crops: np.ndarray
    state: np.ndarray
    cell: np.ndarray
    track: np.ndarray
    run: np.ndarray
    frame: np.ndarray
    t: np.ndarray
    position: np.ndarray
    threshold: np.ndarray
    model: np.ndarray

    @property
    def mitotic(self) -> np.ndarray:
        """(N,) bool: the truth says mitosis."""
        return self.state == 1

    def __len__(self) -> int:
        return len(self.state)

    @classmethod
    def concat(cls, parts: Sequence[ObjectSet]) -> ObjectSet:
        return cls(
            **{
                k: np.concatenate([getattr(p, k) for p in parts])
                for k in cls.__dataclass_fields__
            }
        )


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _preset(spec: RunSpec, rng: np.random.Generator):  # -> ScenePreset
    from smartscope.sim import ScenePreset
    from smartscope.sim.simulator import resolve_scene_preset

    if spec.scene is not None:
        return resolve_scene_preset(spec.scene)
    lethal = rng.random() < spec.lethal_share
    death = float(rng.uniform(3.0, 10.0)) if lethal else 1000.0
    return ScenePreset(
        extent_um=2400.0,
        density_per_mm2=_loguniform(rng, *spec.density_per_mm2),
        radius_um_mean=float(rng.uniform(*spec.radius_um_mean)),
        brightness_sd=float(rng.uniform(*spec.brightness_sd)),
        texture=float(rng.uniform(*spec.texture)),
        cycle_h_mean=float(rng.uniform(*spec.cycle_h_mean)),
        cycle_h_sd=1.5,
        mitosis_min=float(rng.uniform(*spec.mitosis_min)),
        speed_um_per_min=float(rng.uniform(*spec.speed_um_per_min)),
        tox_onset_j_cm2=0.6 * death,
        tox_death_j_cm2=death,
    )


def _cells_of(labels: np.ndarray, truth_labels: np.ndarray, n: int) -> np.ndarray:
    """(n,) the truth cell id covering most of each object's pixels (labels
    1..n), 0 where it covers under half of them."""
    mask = labels > 0
    obj = labels[mask].astype(np.int64)
    tru = truth_labels[mask].astype(np.int64)
    out = np.zeros(n + 1, np.int64)
    if obj.size == 0:
        return out[1:]
    area = np.bincount(obj, minlength=n + 1)
    pairs, counts = np.unique(obj * (1 << 32) + tru, return_counts=True)
    po, pt = pairs >> 32, pairs & ((1 << 32) - 1)
    keep = pt > 0
    po, pt, counts = po[keep], pt[keep], counts[keep]
    order = np.lexsort((-counts, po))  # per object, the largest overlap first
    po, pt, counts = po[order], pt[order], counts[order]
    first = np.ones(len(po), bool)
    first[1:] = po[1:] != po[:-1]
    po, pt, counts = po[first], pt[first], counts[first]
    ok = counts * 2 >= area[po]
    out[po[ok]] = pt[ok]
    return out[1:]


def _one_run(
    core,
    seed: int,
    spec: RunSpec,
    crop: CropSettings,
    run_index: int,
    classifier: MitosisClassifier | None,
) -> ObjectSet:
    from smartscope.analysis.analyser import FrameAnalyser
    from smartscope.analysis.mitosis import MitosisDetector
    from smartscope.analysis.result import FrameInput
    from smartscope.analysis.settings import AnalysisSettings
    from smartscope.sim import get_simulator

    rng = np.random.default_rng([seed, 0x5EED])
    sim = get_simulator(core)
    sim.reset(seed=seed, preset=_preset(spec, rng))
    extent = sim.preset.extent_um
    core.setConfig("Objective", "10x")
    core.setConfig("Channel", "DAPI")
    core.setProperty("Laser", "Power_mW", _loguniform(rng, *spec.power_mw))
    core.setExposure(_loguniform(rng, *spec.exposure_ms))
    reach = extent / 2 - 250.0
    places = [
        (float(rng.uniform(-reach, reach)), float(rng.uniform(-reach, reach)))
        for _ in range(spec.positions)
    ]
    defocus = [float(rng.uniform(*spec.defocus_um)) for _ in places]
    analyser = FrameAnalyser(
        AnalysisSettings(segmenter="classical", diameter_um=12), device="cpu"
    )
    detectors = [MitosisDetector() for _ in places]
    tracks = [TrackReferences() for _ in places]
    parts: list[dict[str, np.ndarray]] = []
    frame_index = 0
    for t in range(spec.time_points):
        for p, (x, y) in enumerate(places):
            core.setXYPosition(x, y)
            core.setPosition(sim.focus_z_um() + defocus[p])
            core.snapImage()
            image = np.asarray(core.getImage(), np.uint16).copy()
            truth = sim.truth()
            frame = FrameInput(
                image=image,
                frame_index=frame_index,
                position=str(p),
                stage_x_um=x,
                stage_y_um=y,
                z_um=0.0,
                pixel_size_um=float(truth.pixel_size_um),
                exposure_ms=float(core.getExposure()),
                t_frame=0.0,
                t_s=float(truth.t_s),
                channel="DAPI",
            )
            result = analyser.analyse(frame)
            objs = result.objects
            if result.labels is not None and objs:
                n_lab = int(result.labels.max())
                cells = _cells_of(result.labels, truth.labels, n_lab)
                states = {c.id: STATES.index(c.state) for c in truth.cells}
                fo = FrameObjects.of(objs, background=result.background)
                cell = cells[fo.label - 1]
                state = np.array(
                    [states.get(int(c), -1) if c else -1 for c in cell], np.int8
                )
                flagged = {
                    id(o)
                    for o in detectors[p].update(objs, background=result.background)
                }
                crops, keep, edge = frame_inputs(
                    image,
                    result.labels,
                    fo,
                    tracks=tracks[p],
                    background=result.background,
                    pixel_size_um=frame.pixel_size_um,
                    crop=crop,
                )
                if classifier is None:
                    # training data: the references follow the truth (teacher
                    # forcing)
                    called = np.zeros(len(crops), bool)
                    skip = state[keep] == 1
                else:
                    # validation: they follow the classifier's own calls, as in
                    # MitosisDetector
                    prob = classifier.predict_crops(crops)
                    th = classifier.card.threshold
                    called, skip = prob >= th, prob >= 0.5 * th
                tracks[p].update(
                    fo.track[keep],
                    fo.signal[keep],
                    fo.area_um2[keep],
                    mitotic=skip,
                    edge=edge,
                )
                n = int(keep.sum())
                parts.append(
                    {
                        "crops": crops,
                        "state": state[keep],
                        "cell": cell[keep],
                        "track": fo.track[keep],
                        "run": np.full(n, run_index, np.int64),
                        "frame": np.full(n, frame_index, np.int64),
                        "t": np.full(n, t, np.int64),
                        "position": np.full(n, p, np.int16),
                        "threshold": np.array([id(o) in flagged for o in objs])[keep],
                        "model": called,
                    }
                )
            frame_index += 1
        sim.advance(spec.interval_s)
    if not parts:
        s = crop.crop_px
        return ObjectSet(
            np.zeros((0, len(CHANNELS), s, s), np.float32),
            *(np.zeros(0, d) for d in (np.int8, np.int64, np.int64, np.int64)),
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
            np.zeros(0, np.int16),
            np.zeros(0, bool),
            np.zeros(0, bool),
        )
    return ObjectSet(
        **{
            k: np.concatenate([d[k] for d in parts])
            for k in ObjectSet.__dataclass_fields__
        }
    )


def simulate_objects(
    seeds: Sequence[int],
    spec: RunSpec,
    *,
    crop: CropSettings | None = None,
    classifier: MitosisClassifier | None = None,
    progress: Callable[[int], None] | None = None,
) -> ObjectSet:
    """The segmented objects of one simulated time-lapse per seed.

    Parameters
    ----------
    seeds : one run each (scene, settings and noise follow from the seed)
    spec : what the runs are drawn from (:data:`TRAIN_RUNS`, :data:`PROTOCOL_RUNS`)
    crop : how objects are cropped (default :class:`CropSettings`)
    classifier : for validation: the track references follow its calls (as
        in a run) and :attr:`ObjectSet.model` holds them; None: they follow
        the truth (training data)
    progress : called with the number of runs done so far
    """
    from smartscope.hardware import load_core, release_core

    crop = crop or CropSettings()
    parts = []
    core = load_core(seed=int(seeds[0]) if seeds else 0, time_mode="virtual")
    try:
        cam = core.getCameraDevice()
        core.setProperty(cam, "SensorWidth_px", 512)
        core.setProperty(cam, "SensorHeight_px", 512)
        for i, seed in enumerate(seeds):
            parts.append(_one_run(core, int(seed), spec, crop, i, classifier))
            if progress is not None:
                progress(i + 1)
    finally:
        release_core(core)
    return ObjectSet.concat(parts)
