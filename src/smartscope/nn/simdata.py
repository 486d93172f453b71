"""Training and validation data made with the simulated microscope.

:func:`simulate_frames` snaps frames of the simulated sample under a spread of
acquisition settings drawn from a :class:`SimDataSpec` and returns them with
their ground truth. Each frame gets its own sample (``sim.reset`` with its own
seed and scene preset), so frames are independent. The same spec and seed
always give the same frames.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["SimDataSpec", "SimFrame", "equivalent_diameter_px", "simulate_frames"]


@dataclass(frozen=True)
class SimFrame:
    """One simulated frame and its truth.

    ``image`` (Y, X) uint16 noisy camera frame; ``clean`` (Y, X) float32
    noise-free mean in ADU (offset included); ``labels`` (Y, X) int32;
    ``settings`` the acquisition settings used.
    """

    image: np.ndarray
    clean: np.ndarray
    labels: np.ndarray
    pixel_size_um: float
    offset_adu: float
    settings: dict


class SimDataSpec(BaseModel):
    """Ranges the acquisition settings are drawn from (uniform unless noted).

    Dose-like quantities (power, exposure, density, radius) are drawn
    log-uniformly between their bounds.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    size_px: int = Field(
        256, ge=64, le=2048, description="square frame side (camera ROI)"
    )
    objectives: tuple[str, ...] = ("10x", "20x")
    channels: tuple[str, ...] = ("DAPI", "GFP")
    power_mw: tuple[float, float] = (1.0, 20.0)
    exposure_ms: tuple[float, float] = (10.0, 100.0)
    density_per_mm2: tuple[float, float] = (200.0, 2500.0)
    radius_um_mean: tuple[float, float] = (4.0, 8.0)
    texture: tuple[float, float] = (0.05, 0.35)
    brightness_sd: tuple[float, float] = (0.1, 0.5)
    elongation_sd: tuple[float, float] = (0.05, 0.3)
    defocus_um: tuple[float, float] = (0.0, 4.0)
    bit_depth: tuple[int, ...] = (16,)
    gain_e_per_adu: tuple[float, float] = (0.46, 0.46)
    read_noise_e: tuple[float, float] = (1.6, 1.6)
    min_nuclei: int = Field(
        0,
        ge=0,
        description="move to another place in the dish until this many nuclei show",
    )
    extent_um: float = Field(
        1400.0,
        gt=0,
        le=3000,
        description="side of the simulated dish; fields are drawn inside it (smaller is faster)",
    )


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def equivalent_diameter_px(labels: np.ndarray) -> float:
    """Median equivalent-circle diameter of the labelled objects, pixels (0 if none)."""
    sizes = np.bincount(labels.ravel())[1:]
    sizes = sizes[sizes > 0]
    if sizes.size == 0:
        return 0.0
    return float(2.0 * np.sqrt(np.median(sizes) / np.pi))


def simulate_frames(
    n: int,
    spec: SimDataSpec,
    *,
    seed: int,
    snaps_per_field: int = 1,
    progress: Callable[[int], None] | None = None,
) -> list[SimFrame]:
    """Snap ``n`` fields with settings drawn from ``spec``.

    Parameters
    ----------
    n : number of fields (independent samples)
    spec : ranges of the settings
    seed : makes the settings, samples and noise reproducible
    snaps_per_field : noisy snaps per field (same truth, independent noise)
    progress : called with the number of fields done so far

    Returns
    -------
    list of ``n * snaps_per_field`` frames
    """
    from smartscope.hardware import load_core, release_core
    from smartscope.sim import ScenePreset, get_simulator

    rng = np.random.default_rng([seed, 0xDA7A])
    core = load_core(seed=seed, time_mode="virtual")
    frames: list[SimFrame] = []
    try:
        sim = get_simulator(core)
        cam = core.getCameraDevice()
        core.setProperty(cam, "SensorWidth_px", 512 if spec.size_px <= 512 else 2048)
        core.setProperty(cam, "SensorHeight_px", 512 if spec.size_px <= 512 else 2048)
        full = 512 if spec.size_px <= 512 else 2048
        x0 = (full - spec.size_px) // 2
        for i in range(n):
            s = {
                "objective": str(rng.choice(spec.objectives)),
                "channel": str(rng.choice(spec.channels)),
                "power_mw": _loguniform(rng, *spec.power_mw),
                "exposure_ms": _loguniform(rng, *spec.exposure_ms),
                "density_per_mm2": _loguniform(rng, *spec.density_per_mm2),
                "radius_um_mean": _loguniform(rng, *spec.radius_um_mean),
                "texture": float(rng.uniform(*spec.texture)),
                "brightness_sd": float(rng.uniform(*spec.brightness_sd)),
                "elongation_sd": float(rng.uniform(*spec.elongation_sd)),
                "defocus_um": float(
                    rng.uniform(*spec.defocus_um) * rng.choice([-1, 1])
                ),
                "bit_depth": int(rng.choice(spec.bit_depth)),
                "gain_e_per_adu": float(rng.uniform(*spec.gain_e_per_adu)),
                "read_noise_e": float(rng.uniform(*spec.read_noise_e)),
            }
            # keep the whole field inside the dish (6.5 µm camera pixels / magnification)
            field_um = spec.size_px * 6.5 / float(s["objective"].rstrip("x"))
            reach = max(0.0, (spec.extent_um - field_um) / 2 - 20.0)
            s["x_um"] = float(rng.uniform(-reach, reach))
            s["y_um"] = float(rng.uniform(-reach, reach))
            preset = ScenePreset(
                extent_um=spec.extent_um,
                density_per_mm2=s["density_per_mm2"],
                radius_um_mean=s["radius_um_mean"],
                radius_um_sd=0.15 * s["radius_um_mean"],
                texture=s["texture"],
                brightness_sd=s["brightness_sd"],
                elongation_sd=s["elongation_sd"],
            )
            sim.reset(seed=int(rng.integers(1 << 31)), preset=preset)
            core.setConfig("Objective", s["objective"])
            core.setConfig("Channel", s["channel"])
            core.setProperty(cam, "BitDepth", s["bit_depth"])
            core.setProperty(cam, "Gain_e_per_ADU", s["gain_e_per_adu"])
            core.setProperty(cam, "ReadNoise_e", s["read_noise_e"])
            core.setProperty("Laser", "Power_mW", s["power_mw"])
            core.setExposure(s["exposure_ms"])
            if spec.size_px < full:
                core.setROI(x0, x0, spec.size_px, spec.size_px)
            for _attempt in range(30):
                core.setXYPosition(s["x_um"], s["y_um"])
                core.setPosition(sim.focus_z_um() + s["defocus_um"])
                core.snapImage()
                t = sim.truth()
                if len(t.cells) >= spec.min_nuclei:
                    break
                s["x_um"] = float(rng.uniform(-reach, reach))
                s["y_um"] = float(rng.uniform(-reach, reach))
            offset = float(core.getProperty(cam, "Offset_ADU"))
            for k in range(snaps_per_field):
                if k > 0:
                    core.snapImage()
                img = np.asarray(core.getImage(), np.uint16).copy()
                t = sim.truth()
                frames.append(
                    SimFrame(
                        img,
                        t.expected_adu.astype(np.float32),
                        t.labels.copy(),
                        float(t.pixel_size_um),
                        offset,
                        s,
                    )
                )
            if progress is not None:
                progress(i + 1)
    finally:
        release_core(core)
    return frames
