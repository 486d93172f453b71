"""The simulated microscope: pymmcore-plus Python devices and a live-cell sample.

``smartscope.hardware.load_core()`` loads it from ``simulators/demo.cfg``;
``get_simulator(core)`` gives its ground truth, clock, light dose and faults.
"""

from smartscope.sim.clock import SimClock, TimeMode
from smartscope.sim.scene import DyeSpec, Scene, ScenePreset, load_scene_preset
from smartscope.sim.simulator import (
    FAULTS,
    PIXEL_SIZE_CONFIG,
    Simulator,
    get_simulator,
    has_simulator,
)
from smartscope.sim.truth import CellTruth, FrameTruth, TruthRecorder

__all__ = [
    "FAULTS",
    "PIXEL_SIZE_CONFIG",
    "CellTruth",
    "DyeSpec",
    "FrameTruth",
    "Scene",
    "ScenePreset",
    "SimClock",
    "Simulator",
    "TimeMode",
    "TruthRecorder",
    "get_simulator",
    "has_simulator",
    "load_scene_preset",
]
