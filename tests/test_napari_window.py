"""Real napari windows (OpenGL canvas) on an X virtual framebuffer: the
simulator in napari-micromanager, and ``smartscope view``'s layers rendered.

Qt's offscreen platform has no OpenGL here, so these run in a child process
under ``xvfb-run`` (Xvfb with Mesa's software GL); skipped where xvfb-run,
napari or napari-micromanager is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("napari", reason="the [view] extra is not installed")
if shutil.which("xvfb-run") is None:
    pytest.skip("xvfb-run not installed (apt install xvfb)", allow_module_level=True)

_XVFB = ["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24"]


def _qt_under_xvfb() -> str | None:
    """Why a Qt window cannot open under xvfb-run here (None: it can)."""
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}
    probe = "from qtpy.QtWidgets import QApplication; QApplication([])"
    try:
        proc = subprocess.run(
            [*_XVFB, sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"xvfb-run failed: {e}"
    if proc.returncode != 0:
        return "Qt cannot open a window under xvfb-run (missing xcb libraries?)"
    return None


_WHY = _qt_under_xvfb()
if _WHY is not None:
    pytest.skip(_WHY, allow_module_level=True)


def _in_a_window(script: str, tmp_path: Path) -> dict:
    """Run ``script`` under xvfb-run; it prints one JSON line last."""
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(script))
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}
    env["PYMM_SIGNALS_BACKEND"] = "auto"  # pymmcore-plus's default in a Qt app
    proc = subprocess.run(
        [*_XVFB, sys.executable, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_simulator_in_napari_micromanager(tmp_path: Path) -> None:
    pytest.importorskip("napari_micromanager")
    out = _in_a_window(
        """
        import json
        import os
        import sys
        import napari, useq
        from qtpy.QtWidgets import QApplication
        from napari_micromanager import MainWindow
        from pymmcore_plus.core.events import QCoreSignaler
        from smartscope.hardware import load_core
        from smartscope.sim import get_simulator

        viewer = napari.Viewer(show=False)
        core = load_core(time_mode="virtual")
        window = MainWindow(viewer, mmcore=core)
        core.setConfig("Objective", "20x")
        seq = useq.MDASequence(
            channels=[{"config": "DAPI", "exposure": 20}],
            stage_positions=[{"x": 0, "y": 0}, {"x": 200, "y": 0}],
            time_plan={"interval": 0, "loops": 3},
        )
        core.mda.run(seq)
        for _ in range(50):
            QApplication.processEvents()
        layers = [l for l in viewer.layers if l.data.ndim >= 3]
        data = layers[0].data
        print(json.dumps({
            "qt_signals": isinstance(core.events, QCoreSignaler),
            "shape": list(data.shape),
            "max": float(data[-1].max()),
            "dose_mj": get_simulator(core).light_dose_mj,
        }))
        viewer.close()
        sys.stdout.flush()
        os._exit(0)  # no Qt/GL teardown at exit: Mesa under Xvfb may crash there
        """,
        tmp_path,
    )
    assert out["qt_signals"]
    # napari-micromanager's layer holds the whole sequence: t, p, c (+ y, x)
    assert out["shape"][:3] == [3, 2, 1]
    assert out["max"] > 0
    assert out["dose_mj"] > 0


def test_smartscope_view_renders_in_a_napari_window(tmp_path: Path) -> None:
    pytest.importorskip("napari_ome_zarr")
    out = _in_a_window(
        """
        import json
        import os
        import sys
        import napari
        import numpy as np
        from smartscope._data import data_dir
        from smartscope.controller import Controller
        from smartscope.hardware import load_core, release_core
        from smartscope.protocol import load_protocol
        from smartscope.view import RunViewer

        text = (data_dir("protocols") / "demo.yaml").read_text()
        open("short.yaml", "w").write(text.replace("loops: 150", "loops: 6"))
        proto = load_protocol("short.yaml")
        core = load_core(time_mode=proto.time_mode, seed=proto.seed, scene=proto.scene)
        try:
            Controller(core, proto, out_dir="run").run()
        finally:
            release_core(core)
        viewer = napari.Viewer(show=True)  # a canvas only renders once shown
        RunViewer("run", viewer).refresh()
        viewer.reset_view()

        def lit():
            shot = viewer.screenshot(canvas_only=True)
            return list(shot.shape), float((shot[..., :3].max(axis=-1) > 0).mean())

        shape, everything = lit()
        for layer in viewer.layers[1:]:
            layer.visible = False
        _, image_only = lit()
        viewer.layers[0].visible = False
        _, nothing = lit()
        print(json.dumps({
            "layers": [type(l).__name__ for l in viewer.layers],
            "shot": shape,
            "everything": everything,
            "image": image_only,
            "nothing": nothing,
        }))
        viewer.close()
        sys.stdout.flush()
        os._exit(0)  # no Qt/GL teardown at exit: Mesa under Xvfb may crash there
        """,
        tmp_path,
    )
    # the raw image first (then a denoised one, if the protocol saves it)
    assert out["layers"][0] == "Image"
    assert set(out["layers"]) == {"Image", "Labels", "Tracks", "Points"}
    assert out["shot"][0] > 100
    assert out["shot"][1] > 100
    # the frame is drawn (nuclei above the display window's black), and the
    # labels, tracks and actions are drawn over it
    assert out["nothing"] == 0
    assert out["image"] > 0.005
    assert out["everything"] > out["image"]
