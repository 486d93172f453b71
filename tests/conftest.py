"""Shared fixtures: a fresh simulated microscope per test, its simulator, a run folder.

Every test gets its own core loaded from ``simulators/demo.cfg`` (seed 1,
virtual time, 512 x 512 camera at 10x), so no state leaks between tests.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pymmcore_plus.experimental.unicore import UniMMCore

from smartscope.hardware import load_core, release_core
from smartscope.sim import Simulator, get_simulator

# Once a QApplication exists (tests/test_qt_widgets.py), pymmcore-plus would
# give every later core Qt signals, whose cross-thread deliveries wait for an
# event loop these tests do not run. Every test gets psygnal signals unless it
# asks for the default (the Qt tests do).
os.environ["PYMM_SIGNALS_BACKEND"] = "psygnal"


def pytest_configure(config: pytest.Config) -> None:
    """With as many test workers as cores (``-n auto``), each worker's torch
    calls get one intra-op thread: torch's default, one per core, on cores
    the other workers also use, runs several times slower than one (a tiny
    training step 20x). The analysis sets its own threads on its own
    threads, as in a run; only what a test calls on its own thread is
    concerned. Results do not depend on it."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and workers >= (os.cpu_count() or 1):
        import torch

        torch.set_num_threads(1)


@pytest.fixture
def core() -> Iterator[UniMMCore]:
    """A freshly loaded demo microscope (the simulator), released afterwards."""
    c = load_core()
    try:
        yield c
    finally:
        release_core(c)


@pytest.fixture
def sim(core: UniMMCore) -> Simulator:
    """The simulator behind ``core``: ground truth, clock, dose, faults."""
    return get_simulator(core)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """An empty folder for files a test writes."""
    d = tmp_path / "run"
    d.mkdir()
    return d


@pytest.fixture
def snap(core: UniMMCore):
    """``snap() -> (Y, X) uint16``: snap one image on ``core`` and return it."""

    def _snap() -> np.ndarray:
        core.snapImage()
        return np.asarray(core.getImage())

    return _snap
