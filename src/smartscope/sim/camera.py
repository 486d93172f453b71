"""Simulated scientific CMOS camera (pymmcore-plus Python device).

Each pixel is Poisson(photons · QE) electrons (clipped at the full well), plus
Gaussian read noise, divided by the gain, plus the offset, rounded and clipped
to the bit depth. The image is the scene convolved with the objective's PSF
and blurred by defocus (see ``smartscope.sim.optics``).

Bit depth: UniMMCore reports the bit depth of the buffer's dtype (16 for
uint16). ``BitDepth`` (12, 14 or 16) sets where the simulated ADC clips
(2**BitDepth - 1); ``truth().expected_adu`` is the mean before that clipping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import DTypeLike
from pymmcore_plus.experimental.unicore import CameraDevice, pymm_property

from smartscope.sim._link import SimLinked, check_choice

__all__ = ["SimCamera"]

BINNINGS = (1, 2, 4)
BIT_DEPTHS = (12, 14, 16)
SENSOR_SIZES = (256, 512, 1024, 2048)


class SimCamera(SimLinked, CameraDevice):
    """Simulated sCMOS camera: 6.5 µm pixels, up to 2048 x 2048."""

    _ROLE = "camera"
    pixel_pitch_um: float = 6.5

    def __init__(self) -> None:
        super().__init__()
        self._exposure_ms = 50.0
        self.binning = 1
        self.sensor_width_px = 2048
        self.sensor_height_px = 2048
        self._roi: tuple[int, int, int, int] | None = None
        self.gain_e_per_adu = 0.46
        self.offset_adu = 100.0
        self.read_noise_e = 1.6
        self.qe = 0.72
        self.bit_depth = 16
        self.full_well_e = 30000.0
        self.set_property_limits("Exposure", (0.01, 60000.0))
        self.set_property_limits("Binning", (1, 4))

    # ------------------------------------------------------------ exposure
    @property
    def exposure_ms(self) -> float:
        return self._exposure_ms

    def get_exposure(self) -> float:
        return self._exposure_ms

    def set_exposure(self, exposure: float) -> None:
        exposure = float(exposure)
        if not 0.01 <= exposure <= 60000:
            raise ValueError(f"Exposure: expected 0.01 to 60000 ms, got {exposure}")
        self._exposure_ms = exposure
        self._emit("exposureChanged", self.get_label(), exposure)

    def get_binning(self) -> int:
        return self.binning

    def set_binning(self, value: int) -> None:
        self.binning = check_choice("Binning", value, BINNINGS)
        self._roi = None

    # --------------------------------------------------------- properties
    @pymm_property(limits=(0.05, 20.0), name="Gain_e_per_ADU", property_type=float)
    def gain_e_per_adu_prop(self) -> float:
        return self.gain_e_per_adu

    @gain_e_per_adu_prop.setter
    def gain_e_per_adu_prop(self, value: float) -> None:
        self.gain_e_per_adu = float(value)

    @pymm_property(limits=(0.0, 2000.0), name="Offset_ADU", property_type=float)
    def offset_prop(self) -> float:
        return self.offset_adu

    @offset_prop.setter
    def offset_prop(self, value: float) -> None:
        self.offset_adu = float(value)

    @pymm_property(limits=(0.0, 50.0), name="ReadNoise_e", property_type=float)
    def read_noise_prop(self) -> float:
        return self.read_noise_e

    @read_noise_prop.setter
    def read_noise_prop(self, value: float) -> None:
        self.read_noise_e = float(value)

    @pymm_property(limits=(0.01, 1.0), name="QE", property_type=float)
    def qe_prop(self) -> float:
        return self.qe

    @qe_prop.setter
    def qe_prop(self, value: float) -> None:
        self.qe = float(value)

    @pymm_property(limits=(12, 16), name="BitDepth", property_type=int)
    def bit_depth_prop(self) -> int:
        return self.bit_depth

    @bit_depth_prop.setter
    def bit_depth_prop(self, value: int) -> None:
        self.bit_depth = check_choice("BitDepth", value, BIT_DEPTHS)

    @pymm_property(limits=(1000.0, 500000.0), name="FullWell_e", property_type=float)
    def full_well_prop(self) -> float:
        return self.full_well_e

    @full_well_prop.setter
    def full_well_prop(self, value: float) -> None:
        self.full_well_e = float(value)

    @pymm_property(is_read_only=True, name="PixelPitch_um", property_type=float)
    def pixel_pitch_prop(self) -> float:
        return self.pixel_pitch_um

    @pymm_property(limits=(256, 2048), name="SensorWidth_px", property_type=int)
    def sensor_width_prop(self) -> int:
        return self.sensor_width_px

    @sensor_width_prop.setter
    def sensor_width_prop(self, value: int) -> None:
        self.sensor_width_px = check_choice("SensorWidth_px", value, SENSOR_SIZES)
        self._roi = None

    @pymm_property(limits=(256, 2048), name="SensorHeight_px", property_type=int)
    def sensor_height_prop(self) -> int:
        return self.sensor_height_px

    @sensor_height_prop.setter
    def sensor_height_prop(self, value: int) -> None:
        self.sensor_height_px = check_choice("SensorHeight_px", value, SENSOR_SIZES)
        self._roi = None

    # ------------------------------------------------------------- geometry
    @property
    def max_adu(self) -> int:
        return 2**self.bit_depth - 1

    @property
    def roi(self) -> tuple[int, int, int, int]:
        """(x, y, width, height) in binned pixels."""
        if self._roi is not None:
            return self._roi
        return (
            0,
            0,
            self.sensor_width_px // self.binning,
            self.sensor_height_px // self.binning,
        )

    def shape(self) -> tuple[int, int]:
        _, _, w, h = self.roi
        return (h, w)

    def dtype(self) -> DTypeLike:
        return np.uint16

    def get_roi(self) -> tuple[int, int, int, int]:
        return self.roi

    def set_roi(self, x: int, y: int, width: int, height: int) -> None:
        fw, fh = (
            self.sensor_width_px // self.binning,
            self.sensor_height_px // self.binning,
        )
        if (
            x < 0
            or y < 0
            or width <= 0
            or height <= 0
            or x + width > fw
            or y + height > fh
        ):
            raise ValueError(
                f"ROI ({x}, {y}, {width}, {height}) does not fit the {fw}x{fh} "
                "(binned) sensor"
            )
        self._roi = (int(x), int(y), int(width), int(height))

    def clear_roi(self) -> None:
        self._roi = None

    # ------------------------------------------------------------ acquisition
    def start_sequence(
        self,
        n: int | None,
        get_buffer: Callable[[Sequence[int], DTypeLike], np.ndarray],
    ) -> Iterator[Mapping[str, Any]]:
        shape, dtype = self.shape(), self.dtype()
        count = 0
        while n is None or count < n:
            buf = get_buffer(shape, dtype)
            yield self.sim._acquire(self, buf)
            count += 1
