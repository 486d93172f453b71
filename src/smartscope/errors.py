"""The exception hierarchy: every error smartscope raises on purpose is a SmartscopeError."""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "ConfigError",
    "SimulatedDeviceError",
    "SimulatorError",
    "SmartscopeError",
]


class SmartscopeError(Exception):
    """Root of smartscope's exceptions."""


class ConfigError(SmartscopeError, ValueError):
    """A configuration file (Micro-Manager .cfg, scene preset) was refused.

    The message names the file, the line (when known) and what was expected.
    """

    def __init__(
        self, message: str, *, path: str | Path | None = None, line: int | None = None
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}"
            if line is not None:
                where += f", line {line}"
            where += ": "
        super().__init__(where + message)


class SimulatorError(SmartscopeError):
    """Misuse of the simulator API (e.g. asking for truth before any image)."""


class SimulatedDeviceError(SmartscopeError, RuntimeError):
    """A fault injected into a simulated device, raised the way a real device
    failure surfaces: as a RuntimeError from the core call."""
