"""``smartscope view``: a run in napari (its layer model, ``ViewerModel``: a
napari window needs OpenGL, which this machine's offscreen Qt has not).

The run is the demo protocol, shortened: it follows a nucleus (MoveStage
every frame) and adapts the exposure. The checks read the run's own files:
every tracked object drawn lands on its own label in the stored label image,
every applied action is drawn, and a view refreshed while the run writes
shows the frames on disk then, and all of them at the end.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from smartscope._data import data_dir
from smartscope.controller import Controller
from smartscope.hardware import load_core, release_core
from smartscope.protocol import load_protocol

napari = pytest.importorskip("napari", reason="the [view] extra is not installed")
pytest.importorskip("napari_ome_zarr", reason="the [view] extra is not installed")

from napari.components import ViewerModel  # noqa: E402

from smartscope.view import RunViewer, ViewError  # noqa: E402

LOOPS = 16
PEEK_AT = 6  # the frame at which a live view looks at the folder


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("view")
    text = (data_dir("protocols") / "demo.yaml").read_text()
    proto_path = tmp / "short.yaml"
    proto_path.write_text(text.replace("loops: 150", f"loops: {LOOPS}"))
    proto = load_protocol(proto_path)
    out = tmp / "run"
    core = load_core(time_mode=proto.time_mode, seed=proto.seed, scene=proto.scene)
    peeks: list[int] = []
    live = ViewerModel()
    try:
        ctl = Controller(core, proto, out_dir=out)

        def peek(frame: Any) -> None:
            # a live view refreshes while the run writes (here: in the
            # runner thread, at a known frame, instead of on a timer)
            if frame.frame_index == PEEK_AT:
                viewer = RunViewer(out, live)
                assert viewer.refresh()
                peeks.append(live.layers[0].data.shape[0])

        ctl.frame_acquired.connect(peek)
        summary = ctl.run()
    finally:
        release_core(core)
    return {"out": out, "summary": summary, "peeks": peeks, "live": live}


def _layers(viewer: Any, kind: str) -> list[Any]:
    return [layer for layer in viewer.layers if type(layer).__name__ == kind]


def test_the_view_shows_images_labels_tracks_and_actions(run: dict[str, Any]) -> None:
    viewer = ViewerModel()
    view = RunViewer(run["out"], viewer)
    assert view.refresh()
    assert not view.refresh()  # nothing changed since
    image, denoised = _layers(viewer, "Image")  # the demo keeps its denoised frames
    (labels,) = _layers(viewer, "Labels")
    (tracks,) = _layers(viewer, "Tracks")
    (actions,) = _layers(viewer, "Points")
    assert image.name == "cell: DAPI"
    assert denoised.name == "cell denoised: DAPI"
    assert labels.name == "cell labels: DAPI"
    # every layer has the same axes: t, z, y, x (seconds, µm)
    assert viewer.dims.ndim == 4
    assert image.axis_labels == labels.axis_labels == ("t", "z", "y", "x")
    assert denoised.axis_labels == image.axis_labels
    assert tuple(image.scale) == tuple(labels.scale) == tuple(tracks.scale)
    assert tuple(denoised.scale) == tuple(image.scale)
    assert image.data.shape[0] == run["summary"]["frames_acquired"] == LOOPS
    # the tracks are the measurements' tracks, ids and all
    with (run["out"] / "measurements.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    ids = {int(r["track_id"]) for r in rows if int(r["track_id"]) >= 0}
    assert set(np.unique(tracks.data[:, 0]).astype(int)) == ids
    # each tracked object drawn lands on a label of its own frame
    lab = np.asarray(labels.data[0] if labels.multiscale else labels.data)
    h, w = lab.shape[-2:]
    hits = total = 0
    for _, t, z, row, col in tracks.data:
        r, c = round(row), round(col)
        if 0 <= r < h and 0 <= c < w:
            total += 1
            hits += lab[int(t), int(z), r, c] > 0
    assert total > LOOPS
    assert hits / total > 0.95, (hits, total)
    # every applied action is drawn; a stage move where the stage went
    records = [
        json.loads(line)
        for line in (run["out"] / "events.jsonl").read_text().splitlines()
    ]
    applied = [
        r
        for r in records
        if r["kind"] == "action" and r["status"] in ("applied", "clamped")
    ]
    assert len(actions.data) == len(applied)
    moves = [r for r in applied if r["type"] == "MoveStage"]
    assert moves
    assert list(actions.text.values).count("MoveStage") == len(moves)
    frames = {r["index"]: r for r in records if r["kind"] == "frame"}
    # the stage moved to centre the cell: the next frame's centre is the target
    m = moves[0]
    nxt = frames[m["frame_index"] + 1]
    assert (nxt["x_um"], nxt["y_um"]) == pytest.approx(tuple(m["after"]), abs=1e-6)


def test_a_live_view_shows_what_is_on_disk(run: dict[str, Any]) -> None:
    # refreshed at frame PEEK_AT: the frames written by then, not the run's
    assert run["peeks"]
    assert PEEK_AT <= run["peeks"][0] < LOOPS
    # refreshed again after the end: every frame
    live = run["live"]
    viewer = RunViewer(run["out"], live)
    assert viewer.refresh()
    assert _layers(live, "Image")[0].data.shape[0] == LOOPS
    # the live view ends on the newest time point
    assert live.dims.current_step[0] == LOOPS - 1


def test_a_folder_that_is_not_a_run_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ViewError, match="not a run folder"):
        RunViewer(tmp_path, ViewerModel())


def test_view_command_refuses_a_non_run_folder(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from smartscope import cli

    result = CliRunner().invoke(cli.app, ["view", str(tmp_path)])
    assert result.exit_code == 2
    assert "not a run folder" in result.output
