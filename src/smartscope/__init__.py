"""smartscope: reactive microscopy on Micro-Manager.

Heavy modules (torch, zarr) are imported only where they are used, so
``import smartscope`` and ``smartscope --help`` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from smartscope.errors import (
    ConfigError,
    SimulatedDeviceError,
    SimulatorError,
    SmartscopeError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "SimulatedDeviceError",
    "SimulatorError",
    "SmartscopeError",
    "__version__",
    "get_simulator",
    "load_core",
]

if TYPE_CHECKING:
    from smartscope.hardware import load_core
    from smartscope.sim import get_simulator


def __getattr__(name: str) -> Any:
    if name == "load_core":
        from smartscope.hardware import load_core

        return load_core
    if name == "get_simulator":
        from smartscope.sim import get_simulator

        return get_simulator
    raise AttributeError(f"module 'smartscope' has no attribute {name!r}")
