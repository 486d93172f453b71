"""A run's ``data.ome.zarr`` as the field's tools read it: valid OME-NGFF 0.5
(yaozarrs' and ome-zarr-models' validators), one image per position with
axes t, c, z, y, x and real scales, label and denoised images alongside, and
napari (through napari-ome-zarr, its OME-Zarr reader) showing positions,
time, channels and z apart with the right pixel sizes.

The run is a reactive one on the simulator: two positions, two channels, a
z stack, a denoiser and the segmenter, and a reaction that adds a position
and halves the interval while it runs. Every frame the controller announced
is compared with what is on disk where its record says it is.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import zarr

from smartscope.actions import Action, AddPosition, SetInterval
from smartscope.analysis.result import FrameResult
from smartscope.controller import Controller
from smartscope.hardware import load_core, release_core
from smartscope.io.read_images import (
    frame_places,
    frames_on_disk,
    list_images,
    read_derived,
    read_frame,
)
from smartscope.protocol import Protocol
from smartscope.reactions.base import Reaction, RunView

CHANNELS = ["DAPI", "GFP"]
Z_STEP = 2.0
INTERVAL = 30.0
LOOPS = 3


class _AddAndSpeedUp(Reaction):
    """On the first analysed frame of time point 1: add a position and halve
    the interval (what a reactive protocol does to a plan)."""

    name = "add-and-speed-up"

    def __init__(self) -> None:
        self.done = False

    def react(self, result: FrameResult, run: RunView) -> Sequence[Action]:
        f = result.frame
        if self.done or f.event_index.get("t") != 1:
            return ()
        self.done = True
        common = {
            "source": self.name,
            "frame_index": f.frame_index,
            "t_frame": f.t_frame,
        }
        return (
            AddPosition(x_um=120, y_um=-80, name="added", **common),
            SetInterval(interval_s=INTERVAL / 2, **common),
        )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("ngff") / "run"
    proto = Protocol.model_validate(
        {
            "name": "ngff",
            "seed": 4,
            "time_mode": "virtual",
            "objective": "20x",
            "laser_power_mw": 5,
            "sequence": {
                "channels": [{"config": c, "exposure": 20} for c in CHANNELS],
                "stage_positions": [
                    {"name": "left", "x": -60, "y": 0},
                    {"name": "right", "x": 60, "y": 0},
                ],
                "z_plan": {"range": 2 * Z_STEP, "step": Z_STEP},
                "time_plan": {"interval": INTERVAL, "loops": LOOPS},
                "axis_order": "tpcz",
            },
            "analysis": {"segmenter": "classical", "denoise": "denoise-care"},
            "save": {"labels": True, "denoised": True},
            "limits": {"xy_box_um": [-400, 400, -400, 400], "max_xy_step_um": 300},
        }
    )
    core = load_core()
    frames: dict[int, np.ndarray] = {}
    try:
        ctl = Controller(core, proto, out_dir=out, reactions=[_AddAndSpeedUp()])
        ctl.frame_acquired.connect(
            lambda f: frames.__setitem__(f.frame_index, f.image.copy())
        )
        summary = ctl.run()
    finally:
        release_core(core)
    records = [
        json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()
    ]
    return {
        "out": out,
        "summary": summary,
        "frames": frames,
        "records": records,
        # the simulated camera's 6.5 µm pixels through the 20x objective
        "pixel_um": 6.5 / 20,
    }


def _frame_records(run: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in run["records"] if r["kind"] == "frame"]


def test_the_run_is_valid_ngff_05(run: dict[str, Any]) -> None:
    import yaozarrs
    from ome_zarr_models.v05.bioformats2raw import BioFormats2Raw
    from ome_zarr_models.v05.image import Image
    from ome_zarr_models.v05.image_label import ImageLabel

    root = run["out"] / "data.ome.zarr"
    yaozarrs.validate_zarr_store(str(root))  # raises on anything invalid
    group = zarr.open_group(str(root), mode="r")
    BioFormats2Raw.from_zarr(group)
    for image in list_images(run["out"]):
        Image.from_zarr(group[image.series])
        if image.has_labels:
            ImageLabel.from_zarr(group[f"{image.series}/labels/nuclei"])
    for array in (a for _, a in group.arrays()):
        raise AssertionError(f"an array at the root: {array}")
    # OME/METADATA.ome.xml: valid OME-XML (ome-types) listing the same images
    import ome_types

    ome = ome_types.from_xml((root / "OME" / "METADATA.ome.xml").read_text())
    images = list_images(run["out"])
    assert [i.id for i in ome.images] == [f"Image:{i.series}" for i in images]
    for xml, image in zip(ome.images, images, strict=True):
        t, c, z, y, x = image.shape
        px = xml.pixels
        assert (px.size_t, px.size_c, px.size_z, px.size_y, px.size_x) == (
            t,
            c,
            z,
            y,
            x,
        )
        assert [ch.name for ch in px.channels] == list(image.channels)


def test_one_image_per_position_with_real_axes(run: dict[str, Any]) -> None:
    images = list_images(run["out"])
    raw = {i.position: i for i in images if i.kind == "raw"}
    assert sorted(raw) == ["added", "left", "right"]
    n_z = 3  # range 4 µm in 2 µm steps
    for name, image in raw.items():
        _, c, z, _, _ = image.shape
        assert (c, z) == (len(CHANNELS), n_z), name
        assert image.channels == tuple(CHANNELS)
        # time in seconds (the planned interval), z step and pixel size in µm
        assert image.scale[0] == INTERVAL
        assert image.scale[2] == Z_STEP
        assert image.scale[3] == image.scale[4] == pytest.approx(run["pixel_um"])
        assert image.has_labels
    # the added position starts at the time point it was added in
    assert raw["left"].shape[0] == raw["right"].shape[0] == LOOPS
    first_t = min(
        r["image"]["t"] for r in _frame_records(run) if r["position"] == "added"
    )
    assert first_t >= 1
    assert raw["added"].shape[0] == LOOPS
    # denoised images: one per raw image, the same shape, made from it
    den = {i.source: i for i in images if i.kind == "denoised"}
    assert sorted(den) == sorted(i.series for i in raw.values())
    for image in raw.values():
        assert den[image.series].shape == image.shape


def test_every_frame_is_where_its_record_says(run: dict[str, Any]) -> None:
    records = _frame_records(run)
    summary = run["summary"]
    assert len(records) == summary["frames_acquired"] == len(run["frames"])
    assert frames_on_disk(run["out"]) == len(records)
    places = frame_places(run["out"])
    seen = set()
    series = {i.series: i for i in list_images(run["out"])}
    for r in records:
        where = places[r["index"]]
        image = series[where.series]
        assert image.position == r["position"]
        # the plane is the event's own time point, channel and z plane
        idx = r["event_index"]
        assert (where.t, where.c, where.z) == (idx["t"], idx["c"], idx["z"])
        assert image.channels[where.c] == r["channel"]
        assert (where.series, where.t, where.c, where.z) not in seen
        seen.add((where.series, where.t, where.c, where.z))
        np.testing.assert_array_equal(
            read_frame(run["out"], r["index"]), run["frames"][r["index"]]
        )


def test_labels_and_denoised_are_at_the_frame_s_place(run: dict[str, Any]) -> None:
    """Every analysed frame's (they are stored on a thread of their own, and
    the last ones while the run finishes)."""
    analysed = [r for r in run["records"] if r["kind"] == "analysis" and not r["error"]]
    assert len(analysed) == run["summary"]["frames_analysed"] > 12
    with (run["out"] / "measurements.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in analysed:
        mine = [row for row in rows if int(row["frame"]) == r["index"]]
        assert [[int(m["label"]), int(m["track_id"])] for m in mine] == [
            [int(o[0]), int(o[1])] for o in r["objects"]
        ]
        labels = read_derived(run["out"], r["index"], "labels")
        den = read_derived(run["out"], r["index"], "denoised")
        assert labels is not None
        assert den is not None
        assert len(np.unique(labels[labels > 0])) == r["n_objects"]
        raw = run["frames"][r["index"]].astype(float)
        # the denoised frame is the raw frame's, not another plane's
        assert np.corrcoef(den.ravel(), raw.ravel())[0, 1] > 0.5


def test_ome_zarr_py_reads_each_image(run: dict[str, Any]) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    for image in list_images(run["out"]):
        path = run["out"] / "data.ome.zarr" / image.series
        nodes = list(Reader(parse_url(str(path)))())
        assert nodes[0].data[0].shape == image.shape
        axes = nodes[0].metadata["axes"]
        assert [a["name"] for a in axes] == ["t", "c", "z", "y", "x"]


def test_napari_opens_positions_time_channels_and_z_apart(run: dict[str, Any]) -> None:
    pytest.importorskip("napari_ome_zarr", reason="napari-ome-zarr not installed")
    from napari.components import ViewerModel
    from napari.plugins import _initialize_plugins

    _initialize_plugins()
    viewer = ViewerModel()
    viewer.open(str(run["out"] / "data.ome.zarr"), plugin="napari-ome-zarr")
    images = [layer for layer in viewer.layers if type(layer).__name__ == "Image"]
    labels = [layer for layer in viewer.layers if type(layer).__name__ == "Labels"]
    raw = [i for i in list_images(run["out"]) if i.kind == "raw"]
    # one layer per position (and per denoised image) and channel
    names = {layer.name for layer in images}
    for image in raw:
        for ch in CHANNELS:
            assert f"{image.name}: {ch}" in names
    assert len(labels) == len(raw)
    px = run["pixel_um"]
    for layer in images:
        assert layer.axis_labels == ("t", "z", "y", "x")
        assert [str(u) for u in layer.units] == [
            "second",
            "micrometer",
            "micrometer",
            "micrometer",
        ]
        assert tuple(layer.scale) == pytest.approx((INTERVAL, Z_STEP, px, px))
        assert layer.data.shape[:2] == (LOOPS, 3)


def test_the_time_axis_grows_ahead_and_is_cut_back_at_the_end(tmp_path) -> None:
    """The writer makes room along t ahead of the frames (a few metadata
    rewrites a run, not one per time point), and finishing cuts every array
    (raw and labels) back to the planes placed, and lists them so."""
    import ome_types

    from smartscope.io.images import RunImages

    root = tmp_path / "data.ome.zarr"
    images = RunImages(
        root,
        run={"name": "t"},
        interval_s=1.0,
        z_step_um=1.0,
        save_labels=True,
        save_denoised=False,
    )
    rng = np.random.default_rng(0)
    planes = rng.integers(0, 4000, (40, 32, 48), dtype=np.uint16)
    resizes = 0
    for t, plane in enumerate(planes):
        before = zarr.open_array(str(root / "0" / "0"), mode="r").shape if t else None
        where = images.store_frame(
            plane, position="p0", index={"t": t}, channel="DAPI", pixel_um=0.5
        )
        images.store_derived(where, labels=(plane > 2000).astype(np.int32))
        after = zarr.open_array(str(root / "0" / "0"), mode="r").shape
        resizes += before != after
        assert after[0] >= t + 1
    assert resizes <= 4  # 1 -> 17 -> 50 time points of room, not 40 resizes
    assert zarr.open_array(str(root / "0" / "0"), mode="r").shape[0] > 40
    images.finish()
    arr = zarr.open_array(str(root / "0" / "0"), mode="r")
    lab = zarr.open_array(str(root / "0" / "labels" / "nuclei" / "0"), mode="r")
    assert arr.shape == (40, 1, 1, 32, 48)
    assert lab.shape == (40, 1, 1, 32, 48)
    np.testing.assert_array_equal(arr[:, 0, 0], planes)
    np.testing.assert_array_equal(lab[:, 0, 0], planes > 2000)
    xml = ome_types.from_xml((root / "OME" / "METADATA.ome.xml").read_text())
    assert xml.images[0].pixels.size_t == 40
