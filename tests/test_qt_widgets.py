"""The simulator inside a Qt application, driven by pymmcore-widgets.

With a ``QApplication`` running, pymmcore-plus gives the core Qt signals
instead of psygnal ones; ``load_core()`` must work all the same, its Python
devices must tell the GUI what changed (property, stage, exposure), and
pymmcore-widgets' own widgets must read and drive it: the property browser,
the group/preset table, the stage and exposure widgets, the image preview,
and an MDA whose sequence comes from ``MDAWidget.value()``. Runs headless
(``QT_QPA_PLATFORM=offscreen``); skipped where Qt or pymmcore-widgets is not
installed (the ``gui`` extra).
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("qtpy.QtWidgets")
pytest.importorskip("pymmcore_widgets")
pytest.importorskip("pytestqt")

import numpy as np
import useq
from pymmcore_plus.core.events import QCoreSignaler

from smartscope.hardware import load_core, release_core
from smartscope.sim import get_simulator


@pytest.fixture(autouse=True)
def _icons_offline(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """pymmcore-widgets' icons come from the iconify web API (pyconify), which
    this machine cannot reach: every icon is a blank local SVG instead."""
    blank = tmp_path / "blank.svg"
    blank.write_text('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1 1"/>')
    import pymmcore_widgets.control._stage_widget as stage_module
    import superqt.iconify

    for module in (superqt.iconify, stage_module):
        monkeypatch.setattr(module, "svg_path", lambda *a, **k: blank)


@pytest.fixture
def qcore(qapp, monkeypatch: pytest.MonkeyPatch):
    # a QApplication runs before the core is made, and the signal backend is
    # pymmcore-plus's default (tests/conftest.py pins psygnal for the others)
    monkeypatch.setenv("PYMM_SIGNALS_BACKEND", "auto")
    core = load_core(time_mode="virtual")
    try:
        yield core
    finally:
        release_core(core)


def test_the_simulator_loads_with_qt_signals(qcore) -> None:
    assert isinstance(qcore.events, QCoreSignaler)  # the default under Qt
    sim = get_simulator(qcore)
    qcore.setConfig("Objective", "20x")
    assert qcore.getPixelSizeUm() == pytest.approx(6.5 / 20)
    qcore.snapImage()
    assert qcore.getImage().shape == (512, 512)
    assert sim.truth().expected_adu.shape == (512, 512)


def test_devices_tell_the_gui_what_changed(qcore, qtbot) -> None:
    with qtbot.waitSignal(qcore.events.propertyChanged, timeout=2000) as blk:
        qcore.setProperty("Laser", "Power_mW", 7)
    assert blk.args[:2] == ["Laser", "Power_mW"]
    assert float(blk.args[2]) == 7
    with qtbot.waitSignal(qcore.events.XYStagePositionChanged, timeout=2000) as blk:
        qcore.setXYPosition(120.0, -40.0)
    assert blk.args == ["XY", 120.0, -40.0]
    with qtbot.waitSignal(qcore.events.stagePositionChanged, timeout=2000) as blk:
        qcore.setPosition(3.5)
    assert blk.args == ["Z", 3.5]
    with qtbot.waitSignal(qcore.events.exposureChanged, timeout=2000) as blk:
        qcore.setExposure(37.0)
    assert blk.args == ["Camera", 37.0]


def test_widgets_read_and_drive_the_simulator(qcore, qtbot) -> None:
    from pymmcore_widgets import (
        ExposureWidget,
        GroupPresetTableWidget,
        ImagePreview,
        PropertyBrowser,
        StageWidget,
    )

    browser = PropertyBrowser(mmcore=qcore)
    table = GroupPresetTableWidget(mmcore=qcore)
    stage = StageWidget("XY", mmcore=qcore)
    focus = StageWidget("Z", mmcore=qcore)
    exposure = ExposureWidget(mmcore=qcore)
    preview = ImagePreview(mmcore=qcore)
    for w in (browser, table, stage, focus, exposure, preview):
        qtbot.addWidget(w)

    # the group/preset table shows every group, and the current preset
    grid = table.table_wdg
    rows = {grid.item(r, 0).text(): r for r in range(grid.rowCount())}
    assert {"Channel", "Objective"} <= set(rows)
    qcore.setConfig("Channel", "GFP")
    qtbot.waitUntil(lambda: grid.cellWidget(rows["Channel"], 1).value() == "GFP")

    # the exposure widget follows the core, and sets it
    qcore.setExposure(25.0)
    qtbot.waitUntil(lambda: exposure.spinBox.value() == 25.0, timeout=2000)
    exposure.spinBox.setValue(60.0)
    exposure.spinBox.editingFinished.emit()
    qtbot.waitUntil(lambda: qcore.getExposure() == 60.0, timeout=2000)

    # the stage widgets follow the simulated stage (polling, as they do for
    # moves made elsewhere), and move it
    stage._poll_cb.setChecked(True)
    focus._poll_cb.setChecked(True)
    qcore.setXYPosition(150.0, -75.0)
    qtbot.waitUntil(lambda: stage._x_pos.value() == 150.0, timeout=2000)
    assert stage._y_pos.value() == -75.0
    qcore.setPosition(4.0)
    qtbot.waitUntil(lambda: focus._y_pos.value() == 4.0, timeout=2000)
    stage.snap_checkbox.setChecked(False)
    stage._on_move_requested(1, 0)  # one step right, as its arrow button does
    qtbot.waitUntil(lambda: qcore.getXYPosition()[0] > 150.0, timeout=5000)
    assert qcore.getXYPosition()[1] == pytest.approx(-75.0)

    # the image preview shows a snapped frame
    with qtbot.waitSignal(qcore.events.imageSnapped, timeout=5000):
        qcore.snapImage()
    qtbot.waitUntil(lambda: preview.image is not None, timeout=5000)

    # no polling timer may outlive the core (released after the test)
    stage._poll_cb.setChecked(False)
    focus._poll_cb.setChecked(False)


def test_an_mda_from_the_mda_widget_runs_frame_for_frame(qcore, qtbot) -> None:
    from pymmcore_widgets import MDAWidget

    wdg = MDAWidget(mmcore=qcore)
    qtbot.addWidget(wdg)
    wanted = useq.MDASequence(
        channels=[
            {"config": "DAPI", "exposure": 10},
            {"config": "GFP", "exposure": 20},
        ],
        time_plan={"interval": 1, "loops": 3},
        z_plan={"range": 2, "step": 1},
        axis_order="tpcz",
    )
    wdg.setValue(wanted)
    seq = wdg.value()
    expected = len(list(seq))
    assert expected == 3 * 2 * 3
    frames: list[np.ndarray] = []
    qcore.mda.events.frameReady.connect(lambda img, *_: frames.append(img))
    with qtbot.waitSignal(qcore.mda.events.sequenceFinished, timeout=60_000):
        qcore.run_mda(seq)
    qtbot.waitUntil(lambda: len(frames) == expected, timeout=10_000)
    assert len(frames) == expected
    assert all(f.shape == (512, 512) and f.max() > 0 for f in frames)


def test_a_reactive_run_inside_a_qt_application(qcore, qtbot, tmp_path) -> None:
    """A smartscope run in a Qt application (a lab's GUI), with the core's Qt
    signals: the controller's frame handling must not wait for the GUI's
    event loop (``run()`` blocks the thread that would process it). The demo
    protocol, shortened: the reactions act on every frame, in virtual time."""
    from pymmcore_plus.mda.events import QMDASignaler

    from smartscope._data import data_dir
    from smartscope.controller import Controller
    from smartscope.io.read_images import frames_on_disk
    from smartscope.protocol import load_protocol

    assert isinstance(qcore.mda.events, QMDASignaler)
    text = (data_dir("protocols") / "demo.yaml").read_text()
    path = tmp_path / "short.yaml"
    path.write_text(text.replace("loops: 150", "loops: 12"))
    proto = load_protocol(path)
    seen: list[int] = []
    qcore.mda.events.frameReady.connect(lambda img, ev, meta: seen.append(1))
    summary = Controller(qcore, proto, out_dir=tmp_path / "run").run()
    assert summary["status"] == "completed"
    assert summary["frames_acquired"] == 12 == frames_on_disk(tmp_path / "run")
    assert summary["frames_analysed"] == 12
    moves = summary["actions"].get("MoveStage", {})
    assert moves.get("applied", 0) + moves.get("clamped", 0) > 0
    # the GUI's own subscribers get every frame once its loop runs
    qtbot.waitUntil(lambda: len(seen) == 12, timeout=10_000)
