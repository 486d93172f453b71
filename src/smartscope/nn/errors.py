"""Errors raised when a model file cannot be used."""

from __future__ import annotations

from pathlib import Path

from smartscope.errors import SmartscopeError

__all__ = ["ModelError"]


class ModelError(SmartscopeError, ValueError):
    """A model (folder, ``rdf.yaml``, weights or package) was refused.

    The message names the file and says what was wrong and what was expected.
    """

    def __init__(self, message: str, *, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.message = message
        super().__init__(f"{path}: {message}" if path is not None else message)
