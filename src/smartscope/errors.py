"""The exception hierarchy: every error smartscope raises on purpose is a SmartscopeError."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = [
    "ConfigError",
    "SimulatedDeviceError",
    "SimulatorError",
    "SmartscopeError",
    "printable",
]

# characters that would act on a terminal rather than show: C0, DEL, C1, line
# separators, bidirectional controls
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` on one line, with every control character written as an escape
    (``\\x1b``; tabs and line breaks become spaces), so that a message quoting
    user input cannot move the cursor, recolour or clear a terminal."""

    def _escape(m: re.Match[str]) -> str:
        c = m.group()
        return " " if c in "\t\n\r\x0b\x0c" else repr(c)[1:-1]

    return _UNPRINTABLE.sub(_escape, text)


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
        super().__init__(printable(where + message))


class SimulatorError(SmartscopeError):
    """Misuse of the simulator API (e.g. asking for truth before any image)."""


class SimulatedDeviceError(SmartscopeError, RuntimeError):
    """A fault injected into a simulated device, raised the way a real device
    failure surfaces: as a RuntimeError from the core call."""
