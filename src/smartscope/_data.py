"""Locate the data folders (models/, protocols/, simulators/).

In a wheel they are bundled under ``smartscope/_bundled``; in a source checkout
(editable install) they are the top-level folders of the repository.
"""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """Return the folder ``name`` ("models", "protocols" or "simulators")."""
    bundled = _PKG / "_bundled" / name
    if bundled.is_dir():
        return bundled
    source = _PKG.parent.parent / name
    if source.is_dir():
        return source
    raise FileNotFoundError(
        f"smartscope data folder {name!r} not found (looked in {bundled} and "
        f"{source}); reinstall smartscope"
    )
