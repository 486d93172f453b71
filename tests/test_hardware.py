"""load_core(): the demo microscope's device contract, and refusal of bad configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import useq

import smartscope
from smartscope.errors import ConfigError
from smartscope.hardware import default_config, load_core, open_core, validate_config
from smartscope.sim import get_simulator

# ----------------------------------------------------------------- devices


def test_device_labels(core):
    devices = set(core.getLoadedDevices())
    for label in (
        "Camera",
        "XY",
        "Z",
        "Shutter",
        "Laser",
        "Objective",
        "Filter",
        "Sample",
    ):
        assert label in devices, f"missing device {label!r}; loaded: {sorted(devices)}"


def test_core_roles(core):
    assert core.getCameraDevice() == "Camera"
    assert core.getXYStageDevice() == "XY"
    assert core.getFocusDevice() == "Z"
    assert core.getShutterDevice() == "Shutter"
    assert core.getAutoShutter()


def test_laser_power_has_limits_and_maximum(core):
    assert core.hasPropertyLimits("Laser", "Power_mW")
    max_mw = float(core.getProperty("Laser", "MaxPower_mW"))
    assert max_mw > 0
    assert core.getPropertyLowerLimit("Laser", "Power_mW") == 0
    assert core.getPropertyUpperLimit("Laser", "Power_mW") == pytest.approx(max_mw)
    core.setProperty("Laser", "Power_mW", 20)
    assert float(core.getProperty("Laser", "Power_mW")) == 20
    with pytest.raises(Exception, match="Power_mW"):
        core.setProperty("Laser", "Power_mW", max_mw * 2)
    assert float(core.getProperty("Laser", "Power_mW")) == 20


def test_objective_config_group(core):
    assert "Objective" in core.getAvailableConfigGroups()
    objectives = set(core.getAvailableConfigs("Objective"))
    assert {"10x", "20x", "40x"} <= objectives
    core.setConfig("Objective", "40x")
    assert core.getCurrentConfig("Objective") == "40x"
    assert core.getProperty("Objective", "Label") == "40x"


def test_channel_config_group(core):
    assert core.getChannelGroup() == "Channel"
    channels = set(core.getAvailableConfigs("Channel"))
    assert len(channels & {"DAPI", "GFP", "mCherry"}) >= 2
    for ch in sorted(channels & {"DAPI", "GFP", "mCherry"}):
        core.setConfig("Channel", ch)
        assert core.getCurrentConfig("Channel") == ch
        assert core.getProperty("Filter", "Label") == ch


@pytest.mark.parametrize(
    ("objective", "pixel_um"), [("10x", 0.65), ("20x", 0.325), ("40x", 0.1625)]
)
def test_pixel_size_follows_objective(core, objective, pixel_um):
    core.setConfig("Objective", objective)
    assert core.getPixelSizeUm() == pytest.approx(pixel_um, rel=1e-9)
    core.setProperty("Camera", "Binning", 2)
    assert core.getPixelSizeUm() == pytest.approx(2 * pixel_um, rel=1e-9)


def test_the_simulator_says_the_pixel_size_with_any_objective(core, sim):
    """What ``smartscope check`` asks before the protocol's objective is in
    place: the pixel size it will give, as the core reports it once it is."""
    core.setConfig("Objective", "10x")
    core.setProperty("Camera", "Binning", 2)
    ahead = {o: sim.pixel_size_um(o) for o in ("4x", "10x", "20x", "40x")}
    assert sim.pixel_size_um() == core.getPixelSizeUm()
    for objective, pixel_um in ahead.items():
        core.setConfig("Objective", objective)
        assert core.getPixelSizeUm() == pytest.approx(pixel_um, rel=1e-12)
    with pytest.raises(KeyError, match=r"60x.*known"):
        sim.pixel_size_um("60x")


def test_pixel_size_matches_truth(core, sim, snap):
    """The pixel size the core reports is the one the image is rendered with."""
    for objective in ("10x", "20x", "40x"):
        core.setConfig("Objective", objective)
        snap()
        assert sim.truth().pixel_size_um == pytest.approx(core.getPixelSizeUm())


def test_plain_mda_runs(core, sim):
    frames: list[tuple[np.ndarray, useq.MDAEvent]] = []
    core.mda.events.frameReady.connect(lambda img, ev, meta: frames.append((img, ev)))
    seq = useq.MDASequence(
        channels=["DAPI", "GFP"],
        time_plan={"interval": 1, "loops": 2},
        z_plan={"range": 4, "step": 2},
        axis_order="tpcz",
    )
    core.mda.run(seq)
    assert len(frames) == 2 * 2 * 3
    h, w = core.getImageHeight(), core.getImageWidth()
    for img, _ in frames:
        assert img.shape == (h, w)
        assert img.dtype == np.uint16
    # the last frame's truth is the last event's channel
    assert sim.truth().channel == frames[-1][1].channel.config
    assert sim.truth().frame_index == len(frames) - 1


def test_load_core_overrides(tmp_path):
    with open_core(seed=7, time_mode="realtime") as core:
        sim = get_simulator(core)
        assert sim.seed == 7
        assert sim.time_mode == "realtime"
    assert smartscope.load_core is load_core


def test_get_simulator_refuses_plain_core():
    from pymmcore_plus import CMMCorePlus

    from smartscope.errors import SimulatorError

    with pytest.raises(SimulatorError, match="no smartscope simulator"):
        get_simulator(CMMCorePlus())


# ------------------------------------------------------------- bad configs


def _variant(tmp_path: Path, name: str, line: str) -> tuple[Path, int]:
    """demo.cfg with ``line`` inserted after the last pyDevice line.

    Returns the new file and the 1-based number of the inserted line.
    """
    lines = default_config().read_text().splitlines()
    at = max(i for i, s in enumerate(lines) if s.startswith("#py pyDevice,")) + 1
    lines.insert(at, line)
    path = tmp_path / f"{name}.cfg"
    path.write_text("\n".join(lines) + "\n")
    return path, at + 1


BAD_LINES = {
    "unknown_command": "Frobnicate,Camera,Foo",
    "too_few_fields": "#py Property,Camera",
    "too_many_fields": "#py pyDevice,Extra,smartscope.sim.camera,SimCamera,oops",
    "missing_module": "#py pyDevice,Extra,smartscope.sim.no_such_module,Thing",
    "missing_class": "#py pyDevice,Extra,smartscope.sim.camera,NoSuchCamera",
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_config_line_is_refused_with_path_and_line(tmp_path, case):
    path, lineno = _variant(tmp_path, case, BAD_LINES[case])
    with pytest.raises(ConfigError) as info:
        load_core(path)
    msg = str(info.value)
    assert str(path) in msg
    assert f"line {lineno}" in msg
    assert info.value.line == lineno
    assert info.value.path == path


def test_missing_config_file(tmp_path):
    path = tmp_path / "nope.cfg"
    with pytest.raises(ConfigError, match="not found") as info:
        load_core(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "case", ["unknown_command", "too_few_fields", "too_many_fields"]
)
def test_malformed_config_refused_before_any_core(tmp_path, monkeypatch, case):
    """A line-level error is found by validate_config before a core exists."""
    import pymmcore_plus.experimental.unicore as unicore

    created: list[object] = []

    class _Forbidden:
        def __init__(self, *a, **k):
            created.append(self)
            raise AssertionError("a core was created for a malformed configuration")

    path, lineno = _variant(tmp_path, case, BAD_LINES[case])
    with pytest.raises(ConfigError, match=f"line {lineno}"):
        validate_config(path)
    monkeypatch.setattr(unicore, "UniMMCore", _Forbidden)
    with pytest.raises(ConfigError, match=f"line {lineno}"):
        load_core(path)
    assert created == []


def test_validate_demo_config():
    commands = validate_config(default_config())
    assert commands
    assert all(isinstance(n, int) and fields for n, fields in commands)
