"""Simulated camera: properties, ROI, sensor size, snap and sequence, noise model.

Noise numbers are checked against the camera model: a dark pixel reads
Offset_ADU with std ReadNoise_e / Gain_e_per_ADU; a lit pixel's variance grows
by 1 / Gain_e_per_ADU ADU per ADU of signal (photon transfer).
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

CAMERA_PROPERTIES = (
    "Gain_e_per_ADU",
    "Offset_ADU",
    "ReadNoise_e",
    "QE",
    "BitDepth",
    "Binning",
    "SensorWidth_px",
    "SensorHeight_px",
)


def _dark(core) -> None:
    core.setAutoShutter(False)
    core.setShutterOpen(False)


def _set_camera(core, **props: float) -> None:
    for name, value in props.items():
        core.setProperty("Camera", name, value)


# -------------------------------------------------------------- properties


def test_camera_properties_exist_and_round_trip(core):
    names = set(core.getDevicePropertyNames("Camera"))
    assert set(CAMERA_PROPERTIES) <= names
    _set_camera(
        core, Gain_e_per_ADU=1.5, Offset_ADU=250, ReadNoise_e=3.0, QE=0.5, BitDepth=12
    )
    assert float(core.getProperty("Camera", "Gain_e_per_ADU")) == 1.5
    assert float(core.getProperty("Camera", "Offset_ADU")) == 250
    assert float(core.getProperty("Camera", "ReadNoise_e")) == 3.0
    assert float(core.getProperty("Camera", "QE")) == 0.5
    assert int(core.getProperty("Camera", "BitDepth")) == 12


def test_binning_halves_image(core, snap):
    w, h = core.getImageWidth(), core.getImageHeight()
    core.setProperty("Camera", "Binning", 2)
    assert int(core.getProperty("Camera", "Binning")) == 2
    assert snap().shape == (h // 2, w // 2)


def test_roi(core, sim, snap):
    full = snap()
    full_truth = sim.truth().expected_adu.copy()
    core.setROI(10, 20, 100, 50)
    assert list(core.getROI()) == [10, 20, 100, 50]
    img = snap()
    assert img.shape == (50, 100)
    assert sim.truth().expected_adu.shape == (50, 100)
    assert sim.truth().labels.shape == (50, 100)
    # the ROI is the same piece of the sample as in the full frame
    np.testing.assert_allclose(
        sim.truth().expected_adu, full_truth[20:70, 10:110], rtol=0.02, atol=1.0
    )
    assert full.shape != img.shape
    core.clearROI()
    assert snap().shape == full.shape


def test_roi_outside_sensor_is_refused(core):
    with pytest.raises(Exception, match="ROI"):
        core.setROI(500, 0, 100, 100)


def test_full_2048_sensor(core, sim, snap):
    _set_camera(core, SensorWidth_px=2048, SensorHeight_px=2048)
    assert (core.getImageWidth(), core.getImageHeight()) == (2048, 2048)
    img = snap()
    assert img.shape == (2048, 2048)
    assert img.dtype == np.uint16
    assert sim.truth().expected_adu.shape == (2048, 2048)
    assert sim.truth().expected_adu.dtype == np.float32
    assert sim.truth().labels.dtype == np.int32
    assert len(sim.truth().cells) > 100  # ~1.8 mm² at 10x and 300 nuclei/mm²


def test_sequence_acquisition(core, sim):
    n = 5
    core.startSequenceAcquisition(n, 0, True)
    images = []
    deadline = time.perf_counter() + 10
    while len(images) < n and time.perf_counter() < deadline:
        if core.getRemainingImageCount():
            images.append(np.asarray(core.popNextImage()))
        else:
            time.sleep(0.001)
    assert len(images) == n
    assert all(
        im.shape == (core.getImageHeight(), core.getImageWidth()) for im in images
    )
    assert sim.truth().frame_index == n - 1
    # every frame is a fresh noise draw
    assert not np.array_equal(images[0], images[1])


def test_snap_shows_the_sample(core, sim, snap):
    img = snap().astype(np.float64)
    truth = sim.truth()
    assert truth.illuminated
    assert len(truth.cells) > 0
    assert img.max() > float(core.getProperty("Camera", "Offset_ADU")) + 500
    # the noisy image follows the noise-free truth
    assert np.corrcoef(img.ravel(), truth.expected_adu.ravel())[0, 1] > 0.95


def test_bit_depth_clips(core, snap):
    core.setProperty("Camera", "BitDepth", 12)
    core.setProperty("Laser", "Power_mW", 100)
    core.setExposure(500)
    img = snap()
    assert img.max() == 2**12 - 1


# ------------------------------------------------------------------ noise


@pytest.mark.parametrize(
    ("gain", "offset", "read_noise"),
    [(0.46, 100.0, 1.6), (2.0, 500.0, 8.0), (0.25, 100, 3.0)],
)
def test_dark_frame_offset_and_read_noise(core, sim, snap, gain, offset, read_noise):
    _dark(core)
    _set_camera(core, Gain_e_per_ADU=gain, Offset_ADU=offset, ReadNoise_e=read_noise)
    dose0 = sim.light_dose_mj
    img = snap().astype(np.float64)
    assert not sim.truth().illuminated
    assert sim.light_dose_mj == dose0
    np.testing.assert_allclose(sim.truth().expected_adu, offset)
    sigma_adu = read_noise / gain
    # rounding to integer ADU adds 1/12 ADU² of variance
    expected_std = np.sqrt(sigma_adu**2 + 1 / 12)
    assert img.mean() == pytest.approx(offset, rel=0.05)
    assert img.std() == pytest.approx(expected_std, rel=0.05)
    assert sigma_adu == pytest.approx(expected_std, rel=0.05), (
        "test setting too quantised"
    )


def _ptc_slope(means: np.ndarray, variances: np.ndarray, offset: float) -> float:
    """Slope of variance vs signal (ADU above offset), fitted over binned pixels."""
    signal = means - offset
    edges = np.quantile(signal, np.linspace(0, 1, 41))
    xs, ys = [], []
    for lo, hi in itertools.pairwise(edges):
        sel = (signal >= lo) & (signal < hi)
        if sel.sum() > 50:
            xs.append(signal[sel].mean())
            ys.append(variances[sel].mean())
    slope, _ = np.polyfit(xs, ys, 1)
    return float(slope)


@pytest.mark.parametrize("gain", [0.46, 1.0, 2.0])
def test_photon_transfer_from_repeated_snaps(core, sim, snap, gain):
    """Classic photon transfer: per-pixel variance across frames vs mean signal."""
    offset = 100.0
    _set_camera(core, Gain_e_per_ADU=gain, Offset_ADU=offset, ReadNoise_e=2.0)
    core.setExposure(5)  # short: the sample barely moves or bleaches
    core.setProperty("Laser", "Power_mW", 100)
    frames = np.stack([snap() for _ in range(24)]).astype(np.float64)
    # differences of consecutive frames cancel any slow drift of the mean
    var = np.mean(np.diff(frames, axis=0) ** 2, axis=0) / 2
    mean = frames.mean(axis=0)
    full_well_adu = float(core.getProperty("Camera", "FullWell_e")) / gain
    ok = mean < offset + 0.8 * full_well_adu
    slope = _ptc_slope(mean[ok], var[ok], offset)
    assert 1 / slope == pytest.approx(gain, rel=0.15)
    assert mean.max() - offset > 200, "signal range too small to fit"


@pytest.mark.parametrize("gain", [0.46, 2.0])
def test_photon_transfer_against_expected_adu(core, sim, snap, gain):
    """Residuals from truth().expected_adu have variance signal/gain + read noise."""
    offset, read_noise = 100.0, 2.0
    _set_camera(core, Gain_e_per_ADU=gain, Offset_ADU=offset, ReadNoise_e=read_noise)
    core.setProperty("Camera", "SensorWidth_px", 1024)
    core.setProperty("Camera", "SensorHeight_px", 1024)
    core.setProperty("Laser", "Power_mW", 50)
    img = snap().astype(np.float64)
    expected = sim.truth().expected_adu.astype(np.float64)
    resid2 = (img - expected) ** 2
    slope = _ptc_slope(expected, resid2, offset)
    assert 1 / slope == pytest.approx(gain, rel=0.15)


def test_mean_of_frames_equals_expected_adu(core, sim, snap):
    gain, offset, read_noise = 0.46, 100.0, 1.6
    n = 32
    core.setExposure(10)
    total = np.zeros((core.getImageHeight(), core.getImageWidth()))
    total_expected = np.zeros_like(total)
    for _ in range(n):
        total += snap()
        total_expected += sim.truth().expected_adu
    mean, expected = total / n, total_expected / n
    # per-pixel standard error of the mean from the camera model
    var = (expected - offset) / gain + (read_noise / gain) ** 2 + 1 / 12
    z = (mean - expected) / np.sqrt(var / n)
    assert abs(z.mean()) < 0.02  # no bias (262144 pixels)
    assert z.std() == pytest.approx(1.0, rel=0.05)
    assert np.abs(mean - expected).max() < 8 * np.sqrt(var / n).max()
    assert expected.max() - offset > 100
