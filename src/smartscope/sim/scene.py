"""The live-cell sample: fluorescent nuclei in a dish, millimetres across.

The scene is the part of the simulator that knows nothing about optics or
cameras: where each nucleus is (in stage coordinates, µm), how big it is, how
bright, in which state (interphase, mitosis, dead), and how much light it has
received. It moves forward in time with :meth:`Scene.advance_to`, on the
sample clock. Everything is vectorised over cells (struct of arrays) so that a
few thousand nuclei cost microseconds per step.

Coordinates: ``x_um``/``y_um`` of a cell is the XY stage position that puts the
cell at the centre of the field of view of the reference (10x) objective; the
other objectives' optical axes are a few micrometres off it (see
``smartscope.sim.turrets.OBJECTIVES``).

Rare targets: with ``target_fraction`` > 0 a share of the cells carry a marker
(``Scene.target``, inherited on division) that makes them bright in
``target_channel``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from smartscope.errors import ConfigError

__all__ = ["STATE_NAMES", "DyeSpec", "Scene", "ScenePreset", "load_scene_preset"]

INTERPHASE, MITOSIS, DEAD = 0, 1, 2
STATE_NAMES: tuple[str, str, str] = ("interphase", "mitosis", "dead")


class DyeSpec(BaseModel):
    """How the nuclei look in one fluorescence channel (filter set)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    excitation_nm: float = Field(
        gt=200, lt=1200, description="laser line that excites the dye"
    )
    emission_nm: float = Field(
        gt=200, lt=1200, description="emission peak, sets the PSF width"
    )
    nucleus_brightness: float = Field(
        ge=0, description="relative brightness of a nucleus"
    )
    background: float = Field(ge=0, description="relative brightness of the medium")
    bleach_scale: float = Field(
        ge=0, description="multiplies the preset's bleach rate for this dye"
    )


def _default_channels() -> dict[str, DyeSpec]:
    return {
        "DAPI": DyeSpec(
            excitation_nm=405,
            emission_nm=460,
            nucleus_brightness=1.0,
            background=0.04,
            bleach_scale=1.0,
        ),
        "GFP": DyeSpec(
            excitation_nm=488,
            emission_nm=520,
            nucleus_brightness=0.7,
            background=0.02,
            bleach_scale=1.5,
        ),
        "mCherry": DyeSpec(
            excitation_nm=561,
            emission_nm=610,
            nucleus_brightness=0.05,
            background=0.015,
            bleach_scale=0.5,
        ),
    }


class ScenePreset(BaseModel):
    """Parameters of a simulated live-cell sample. Units are in the field names.

    Defaults describe a sub-confluent dish of a human cell line with stained
    nuclei (Hoechst + H2B-GFP), imaged at room light levels for hours.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    extent_um: float = Field(
        3000.0, gt=0, description="side of the square sample, centred on (0, 0)"
    )
    density_per_mm2: float = Field(300.0, ge=0, le=5000)
    radius_um_mean: float = Field(6.0, gt=0.5, le=50)
    radius_um_sd: float = Field(0.8, ge=0)
    elongation_sd: float = Field(
        0.12, ge=0, le=1, description="spread of the axis ratio - 1"
    )
    min_gap_um: float = Field(
        1.5,
        ge=-10,
        le=20,
        description="closest approach of two nuclear rims (the cytoplasm between "
        "them); negative lets nuclei overlap",
    )
    brightness_sd: float = Field(
        0.2, ge=0, le=2, description="log-normal cell-to-cell spread"
    )
    texture: float = Field(
        0.15, ge=0, le=0.9, description="chromatin texture amplitude"
    )
    speed_um_per_min: float = Field(
        0.6, ge=0, description="RMS speed of the random walk"
    )
    persistence_min: float = Field(20.0, gt=0, description="velocity correlation time")
    drift_x_um_per_min: float = Field(0.05)
    drift_y_um_per_min: float = Field(0.02)
    cycle_h_mean: float = Field(18.0, gt=0)
    cycle_h_sd: float = Field(3.0, ge=0)
    mitosis_min: float = Field(
        40.0, gt=0, description="duration of the visible mitotic phase"
    )
    mitosis_brightness: float = Field(
        2.2, gt=0, description="condensed chromatin brightness factor"
    )
    bleach_per_j_cm2: float = Field(
        0.003, ge=0, description="e-fold bleach rate per fluence"
    )
    tox_onset_j_cm2: float = Field(
        300.0, gt=0, description="fluence where cells start to suffer"
    )
    tox_death_j_cm2: float = Field(
        1000.0, gt=0, description="fluence that kills a cell"
    )
    photon_yield: float = Field(
        5000.0,
        gt=0,
        description="photons per µm² of sample per (W/cm² · s) for brightness 1 at NA 0.3",
    )
    focus_z0_um: float = Field(
        0.0, description="Z position of the focal plane at (0, 0), t = 0"
    )
    tilt_x_um_per_mm: float = Field(0.5)
    tilt_y_um_per_mm: float = Field(-0.3)
    focus_drift_um_per_min: float = Field(0.02)
    channels: dict[str, DyeSpec] = Field(default_factory=_default_channels)
    target_fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of the cells that are rare targets (a marker their "
        "daughters inherit); drawn from a generator of its own, so the rest of "
        "the scene is the same for a seed whatever this is",
    )
    target_channel: str = Field(
        "mCherry", description="the dye in which targets stand out (one of channels)"
    )
    target_brightness: float = Field(
        1.0,
        ge=0,
        description="relative nucleus brightness of a target in target_channel "
        "(other cells keep the dye's nucleus_brightness)",
    )

    @model_validator(mode="after")
    def _check(self) -> ScenePreset:
        if self.tox_death_j_cm2 <= self.tox_onset_j_cm2:
            raise ValueError(
                f"tox_death_j_cm2 ({self.tox_death_j_cm2}) must exceed "
                f"tox_onset_j_cm2 ({self.tox_onset_j_cm2})"
            )
        if not self.channels:
            raise ValueError("channels must name at least one dye")
        if (
            self.target_fraction > 0 or "target_channel" in self.model_fields_set
        ) and self.target_channel not in self.channels:
            raise ValueError(
                f"target_channel {self.target_channel!r} is not one of the "
                f"channels {sorted(self.channels)}"
            )
        return self


def load_scene_preset(path: str | Path) -> ScenePreset:
    """Read a scene preset YAML file, refusing bad fields with file and field named."""
    from smartscope.yaml_strict import (
        YAMLInputError,
        key_lines,
        line_for,
        load_yaml_file,
    )

    path = Path(path)
    try:
        doc = load_yaml_file(path, what="scene preset")
    except YAMLInputError as e:
        raise ConfigError(
            f"cannot read scene preset: {e.problem}", path=path, line=e.line
        ) from e
    data = doc.data if doc.data is not None else {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"a scene preset is a mapping of fields, got a {type(data).__name__}",
            path=path,
            line=1,
        )
    try:
        return ScenePreset.model_validate(data)
    except ValidationError as e:
        errors = e.errors()
        msgs = "; ".join(
            f"field {'.'.join(map(str, err['loc'])) or '(root)'}: {err['msg']}"
            for err in errors
        )
        line = line_for(tuple(errors[0]["loc"]), key_lines(doc.node))
        raise ConfigError(f"invalid scene preset: {msgs}", path=path, line=line) from e


_ARRAYS = (
    "id",
    "parent",
    "x",
    "y",
    "vx",
    "vy",
    "r0",
    "aspect",
    "theta",
    "bright",
    "dose",
    "state",
    "age",
    "cycle",
    "t_state",
    "phase1",
    "phase2",
    "target",
)

#: The relaxed starting dishes already built in this process, by (preset,
#: seed): a dish of 22,500 nuclei takes about a second of neighbour searches
#: to settle, and a sweep or a test suite builds the same one again and again.
_RELAXED: OrderedDict[tuple[str, int], dict[str, object]] = OrderedDict()
_RELAXED_MAX = 8
_RELAXED_LOCK = threading.Lock()

#: second key of the generator that draws the target marker (the scene's own
#: generator is keyed 0x5CE7E and never draws it, so scenes are unchanged)
_TARGET_STREAM = 0x7A26E7


class Scene:
    """The nuclei of one sample, advanced in time on the sample clock.

    Parameters
    ----------
    preset : ScenePreset
        Physical parameters.
    seed : int
        Seed of the scene's own random generator; the same seed gives the same
        sample and the same history.
    """

    def __init__(self, preset: ScenePreset, seed: int = 0) -> None:
        self.preset = preset
        self.seed = int(seed)
        self._rng = np.random.default_rng([self.seed, 0x5CE7E])
        self.t_s = 0.0
        self._next_id = 1
        self.divisions: list[tuple[float, int, int, int]] = []
        self.deaths: list[tuple[float, int]] = []
        key = (preset.model_dump_json(), self.seed)
        with _RELAXED_LOCK:
            start = _RELAXED.get(key)
            if start is not None:
                _RELAXED.move_to_end(key)
        if start is not None:
            self._restore(start)
            return
        n = round(preset.density_per_mm2 * (preset.extent_um / 1000.0) ** 2)
        self._init_arrays(n)
        # Start from a relaxed dish. Nuclei are placed at random and may overlap;
        # left for the first steps, the overlaps would be pushed apart within
        # milliseconds of sample time and the nuclei would jump between frames.
        # (50 rounds settle densities up to ~2000/mm²; denser dishes keep a
        # residual overlap of about a micrometre.)
        for _ in range(50):
            if self._exclude() < 1e-3:
                break
        with _RELAXED_LOCK:
            _RELAXED[key] = self._snapshot()
            while len(_RELAXED) > _RELAXED_MAX:
                _RELAXED.popitem(last=False)

    def _snapshot(self) -> dict[str, object]:
        """Copies of the state a new scene starts from."""
        state: dict[str, object] = {k: getattr(self, k).copy() for k in _ARRAYS}
        state["_next_id"] = self._next_id
        state["_rng"] = self._rng.bit_generator.state
        return state

    def _restore(self, state: dict[str, object]) -> None:
        for k in _ARRAYS:
            setattr(self, k, state[k].copy())  # type: ignore[attr-defined]
        self._next_id = int(state["_next_id"])  # type: ignore[call-overload]
        self._rng.bit_generator.state = state["_rng"]

    # ------------------------------------------------------------------ setup

    def _init_arrays(self, n: int) -> None:
        p, rng = self.preset, self._rng
        half = p.extent_um / 2
        self.id = np.arange(1, n + 1, dtype=np.int64)
        self._next_id = n + 1
        self.parent = np.zeros(n, np.int64)
        self.x = rng.uniform(-half, half, n)
        self.y = rng.uniform(-half, half, n)
        sigma_v = p.speed_um_per_min / 60.0 / np.sqrt(2.0)
        self.vx = rng.normal(0, sigma_v, n)
        self.vy = rng.normal(0, sigma_v, n)
        self.r0 = np.clip(rng.normal(p.radius_um_mean, p.radius_um_sd, n), 2.0, None)
        self.aspect = 1.0 + np.abs(rng.normal(0, p.elongation_sd, n))
        self.theta = rng.uniform(0, np.pi, n)
        self.bright = rng.lognormal(0.0, p.brightness_sd, n)
        self.dose = np.zeros(n)
        self.state = np.zeros(n, np.int8)
        self.cycle = self._draw_cycles(n)
        self.age = rng.uniform(0, 1, n) * self.cycle  # asynchronous population
        self.t_state = np.zeros(n)
        self.phase1 = rng.uniform(0, 2 * np.pi, n)
        self.phase2 = rng.uniform(0, 2 * np.pi, n)
        marker_rng = np.random.default_rng([self.seed, _TARGET_STREAM])
        self.target = marker_rng.random(n) < p.target_fraction

    def _draw_cycles(self, n: int) -> np.ndarray:
        p = self.preset
        return (
            np.clip(
                self._rng.normal(p.cycle_h_mean, p.cycle_h_sd, n),
                p.cycle_h_mean * 0.3,
                None,
            )
            * 3600.0
        )

    @property
    def n(self) -> int:
        """Number of nuclei in the sample now."""
        return int(self.id.size)

    # ------------------------------------------------------------- dynamics

    def suffering(self) -> np.ndarray:
        """(N,) float in [0, 1]: 0 healthy, 1 at the lethal fluence."""
        p = self.preset
        return np.clip(
            (self.dose - p.tox_onset_j_cm2) / (p.tox_death_j_cm2 - p.tox_onset_j_cm2),
            0,
            1,
        )

    def advance_to(
        self, t_s: float, *, max_step_s: float = 60.0, min_step_s: float = 0.5
    ) -> None:
        """Move the sample forward to sample time ``t_s`` (seconds).

        Steps shorter than ``min_step_s`` are deferred (cells move well under a
        micrometre in that time), which keeps back-to-back frames cheap.
        """
        if t_s - self.t_s < min_step_s:
            return
        while self.t_s < t_s - 1e-9:
            dt = min(max_step_s, t_s - self.t_s)
            self._step(dt)
            self.t_s += dt

    def _step(self, dt: float) -> None:
        p, rng = self.preset, self._rng
        n = self.n
        if n == 0:
            return
        alive = self.state != DEAD
        vigour = 1.0 - self.suffering()  # phototoxicity slows motion and the cycle
        # persistent random walk (Ornstein-Uhlenbeck velocity)
        tau = p.persistence_min * 60.0
        sigma_v = p.speed_um_per_min / 60.0 / np.sqrt(2.0)
        decay = np.exp(-dt / tau)
        kick = sigma_v * np.sqrt(1 - decay**2)
        self.vx = self.vx * decay + kick * rng.standard_normal(n)
        self.vy = self.vy * decay + kick * rng.standard_normal(n)
        moving = alive & (self.state != MITOSIS)
        self.x += (
            np.where(moving, self.vx * vigour, 0.0) * dt
            + p.drift_x_um_per_min / 60 * dt
        )
        self.y += (
            np.where(moving, self.vy * vigour, 0.0) * dt
            + p.drift_y_um_per_min / 60 * dt
        )
        self._exclude()
        # cell cycle
        self.age += np.where(alive, vigour, 0.0) * dt
        self.t_state += dt
        enter = (self.state == INTERPHASE) & (self.age >= self.cycle)
        if enter.any():
            self.state[enter] = MITOSIS
            self.t_state[enter] = 0.0
        done = (self.state == MITOSIS) & (self.t_state >= p.mitosis_min * 60.0)
        die = alive & (self.dose >= p.tox_death_j_cm2)
        if die.any():
            self.state[die] = DEAD
            self.t_state[die] = 0.0
            self.deaths.extend((self.t_s + dt, int(i)) for i in self.id[die])
            done &= ~die
        if done.any():
            self._divide(np.flatnonzero(done), self.t_s + dt)

    def _exclude(self) -> float:
        """Nuclei take up space: push overlapping pairs apart (cells may touch,
        and squeeze a little, but do not pass through each other).

        Returns the largest overlap found (µm), 0 if none."""
        if self.n < 2:
            return 0.0
        from scipy.spatial import cKDTree

        # a nucleus sits in a cell: its exclusion radius is its longest
        # semi-axis plus half the cytoplasm gap between neighbouring nuclei
        a, b = self.axes_um()
        r = np.maximum(a, b) + 0.5 * self.preset.min_gap_um
        pts = np.column_stack([self.x, self.y])
        pairs = cKDTree(pts).query_pairs(float(2 * r.max()), output_type="ndarray")
        if pairs.size == 0:
            return 0.0
        i, j = pairs[:, 0], pairs[:, 1]
        d = pts[j] - pts[i]
        dist = np.hypot(d[:, 0], d[:, 1])
        overlap = (r[i] + r[j]) - dist
        hit = overlap > 0
        if not hit.any():
            return 0.0
        i, j, d, dist, overlap = i[hit], j[hit], d[hit], dist[hit], overlap[hit]
        u = d / np.maximum(dist, 1e-6)[:, None]
        push = 0.5 * overlap[:, None] * u
        np.subtract.at(self.x, i, push[:, 0])
        np.subtract.at(self.y, i, push[:, 1])
        np.add.at(self.x, j, push[:, 0])
        np.add.at(self.y, j, push[:, 1])
        return float(overlap.max())

    def _divide(self, idx: np.ndarray, t_s: float) -> None:
        rng, m = self._rng, idx.size
        ang = rng.uniform(0, 2 * np.pi, m)
        ux, uy = np.cos(ang), np.sin(ang)
        sep = self.r0[idx] * 0.75
        new: dict[str, np.ndarray] = {}
        for name in _ARRAYS:
            arr = getattr(self, name)
            new[name] = np.concatenate([arr[idx], arr[idx]])
        ids = np.arange(self._next_id, self._next_id + 2 * m, dtype=np.int64)
        self._next_id += 2 * m
        new["parent"] = np.concatenate([self.id[idx], self.id[idx]])
        new["id"] = ids
        sign = np.concatenate([np.ones(m), -np.ones(m)])
        new["x"] = new["x"] + sign * np.tile(ux * sep, 2)
        new["y"] = new["y"] + sign * np.tile(uy * sep, 2)
        away = self.preset.speed_um_per_min / 60.0
        new["vx"] = sign * np.tile(ux, 2) * away
        new["vy"] = sign * np.tile(uy, 2) * away
        new["state"] = np.zeros(2 * m, np.int8)
        new["age"] = np.zeros(2 * m)
        new["t_state"] = np.zeros(2 * m)
        new["cycle"] = self._draw_cycles(2 * m)
        new["theta"] = np.tile(ang, 2)
        new["aspect"] = 1.0 + np.abs(rng.normal(0, self.preset.elongation_sd, 2 * m))
        new["phase1"] = rng.uniform(0, 2 * np.pi, 2 * m)
        new["phase2"] = rng.uniform(0, 2 * np.pi, 2 * m)
        for k in range(m):
            self.divisions.append(
                (t_s, int(self.id[idx[k]]), int(ids[k]), int(ids[m + k]))
            )
        keep = np.ones(self.n, bool)
        keep[idx] = False
        for name in _ARRAYS:
            setattr(self, name, np.concatenate([getattr(self, name)[keep], new[name]]))

    # ------------------------------------------------------------ geometry

    def axes_um(self) -> tuple[np.ndarray, np.ndarray]:
        """(N,) semi-axes ``(a, b)`` in µm of each nucleus now."""
        growth = 0.8 + 0.35 * np.clip(self.age / self.cycle, 0, 1)
        r = self.r0 * growth
        a = r * np.sqrt(self.aspect)
        b = r / np.sqrt(self.aspect)
        mit = self.state == MITOSIS
        a = np.where(mit, r * 0.8, a)  # rounded, condensed
        b = np.where(mit, r * 0.8, b)
        dead = self.state == DEAD
        a = np.where(dead, r * 0.6, a)  # pyknotic
        b = np.where(dead, r * 0.55, b)
        return a, b

    def radius_um(self) -> np.ndarray:
        """(N,) equivalent radius sqrt(a·b) in µm."""
        a, b = self.axes_um()
        return np.sqrt(a * b)

    def brightness(self, dye: str) -> np.ndarray:
        """(N,) relative fluorophore brightness of each nucleus in channel ``dye``
        (targets carry ``target_brightness`` in the preset's ``target_channel``)."""
        p = self.preset
        spec = p.channels[dye]
        if dye == p.target_channel and self.target.any():
            f = self.bright * np.where(
                self.target, p.target_brightness, spec.nucleus_brightness
            )
        else:
            f = self.bright * spec.nucleus_brightness
        f = f * np.exp(-self.preset.bleach_per_j_cm2 * spec.bleach_scale * self.dose)
        f = np.where(self.state == MITOSIS, f * self.preset.mitosis_brightness, f)
        return np.where(self.state == DEAD, f * 1.8, f)

    def in_box(self, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
        """Indices of nuclei whose centre lies in the box (stage µm)."""
        return np.flatnonzero(
            (self.x >= x0) & (self.x < x1) & (self.y >= y0) & (self.y < y1)
        )

    def add_fluence(
        self, x0: float, x1: float, y0: float, y1: float, j_cm2: float
    ) -> None:
        """Add fluence (J/cm²) to the nuclei inside the illuminated box."""
        if j_cm2 > 0:
            self.dose[self.in_box(x0, x1, y0, y1)] += j_cm2

    def focus_z_um(self, x_um: float, y_um: float, t_s: float) -> float:
        """Z stage position that focuses on the sample at (x, y) and time t."""
        p = self.preset
        return (
            p.focus_z0_um
            + p.tilt_x_um_per_mm * x_um / 1000.0
            + p.tilt_y_um_per_mm * y_um / 1000.0
            + p.focus_drift_um_per_min * t_s / 60.0
        )
