"""The demo as a new user runs it, ``smartscope demo``, once in a child
process for every test here: what it prints against its own run folder, the
folder's files (the zarr read with zarr and ome-zarr, the log, the
measurements), and what the reactions did, against the simulator's truth
(truth/cells.csv), never against the controller's own estimates."""

from __future__ import annotations

import csv
import json
import re
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
import zarr
from scipy import ndimage as ndi

from processes import frames_logged, run_smartscope
from smartscope.io.measurements import MEASUREMENT_COLUMNS
from smartscope.io.read_images import frames_on_disk, list_images, read_frames

#: the demo's process, its run folder and its summary.json
_Demo = tuple[subprocess.CompletedProcess, Path, dict[str, Any]]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> _Demo:
    work = tmp_path_factory.mktemp("demo")
    out = work / "run"
    proc = run_smartscope("demo", "--out", str(out), cwd=work)
    assert proc.returncode == 0, proc.stderr
    return proc, out, json.loads((out / "summary.json").read_text())


def _events(run: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()
    ]


def _documented_measurement_columns() -> tuple[str, ...]:
    """The columns docs/controller.md lists for ``measurements.csv``."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "controller.md").read_text()
    start = doc.index("`measurements.csv` has one row per object")
    paragraph = doc[start : doc.index("\n\n", start)]
    return tuple(re.findall(r"`([a-z0-9_]+)`", paragraph))


def _truth(run: Path) -> dict[int, list[dict[str, str]]]:
    by: dict[int, list[dict[str, str]]] = {}
    with (run / "truth" / "cells.csv").open() as fh:
        for r in csv.DictReader(fh):
            by.setdefault(int(r["frame"]), []).append(r)
    return by


def _number(pattern: str, text: str) -> list[float]:
    found = re.search(pattern, text)
    assert found, f"{pattern!r} not in the printout:\n{text}"
    return [float(g) for g in found.groups()]


def _saved_images(run: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The demo's raw frames, label images and denoised frames, each (n, y, x)
    in frame order, read with zarr, and the pixel size (µm)."""
    raw_image, den_image = list_images(run)
    assert (den_image.kind, den_image.source) == ("denoised", raw_image.series)
    root = zarr.open_group(str(run / "data.ome.zarr"), mode="r")
    raw = root[f"{raw_image.series}/0"][:, 0, 0]
    np.testing.assert_array_equal(raw, read_frames(run))  # frame i is t = i
    labels = root[f"{raw_image.series}/labels/nuclei/0"][:, 0, 0]
    denoised = root[f"{den_image.series}/0"][:, 0, 0]
    return raw, labels, denoised, raw_image.scale[-1]


def _snr(img: np.ndarray, nuclei: np.ndarray, far: np.ndarray) -> float:
    bg = img[far].astype(np.float64)
    return (img[nuclei].astype(np.float64).mean() - bg.mean()) / bg.std()


def test_demo_command_runs_and_prints_the_run_folder(demo: _Demo) -> None:
    proc, out, _ = demo
    assert proc.returncode == 0, proc.stderr
    assert "FATAL" not in proc.stderr
    text = proc.stdout.replace("\n", " ")
    assert str(out.resolve()) in proc.stdout.replace("\n", "")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert frames_on_disk(out) == summary["frames_acquired"] == frames_logged(out)
    # virtual time: every frame began on its planned time
    assert summary["frame_late_ms"]["max"] == 0.0
    assert "fell behind" not in text

    # what the models did, as printed, against the run's own files
    assert "what the models did" in text
    assert "model nuclei-seg" in text
    assert "denoise-care" in text
    events = [
        json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()
    ]
    analysed = [e for e in events if e["kind"] == "analysis" and not e["error"]]
    raw, labels, denoised, pixel_um = _saved_images(out)
    per_frame = [len(np.unique(labels[e["index"]])) - 1 for e in analysed]
    assert per_frame == [e["n_objects"] for e in analysed]
    med, lo, hi, n = _number(
        r"median (\S+) per frame \(min (\d+), max (\d+)\) in (\d+) frames", text
    )
    assert (med, lo, hi, n) == (
        np.median(per_frame),
        min(per_frame),
        max(per_frame),
        150,
    )
    assert med >= 1  # the nucleus it follows, at least

    # nuclei: the stored labels; background: farther than half the
    # protocol's nucleus diameter from all of them
    proto = yaml.safe_load((out / "protocol.yaml").read_text())
    margin_px = proto["analysis"]["diameter_um"] / 2 / pixel_um
    raw_snr, den_snr = [], []
    for r, lab, d in zip(raw, labels, denoised, strict=True):
        far = ndi.distance_transform_edt(lab == 0) > margin_px
        raw_snr.append(_snr(r, lab != 0, far))
        den_snr.append(_snr(d, lab != 0, far))
    snr_raw, snr_den, gain = _number(r"SNR (\S+) raw → (\S+) denoised, ×(\S+) ", text)
    assert snr_raw == pytest.approx(np.median(raw_snr), abs=0.5)
    assert snr_den == pytest.approx(np.median(den_snr), abs=0.5)
    ratios = np.asarray(den_snr) / np.asarray(raw_snr)
    assert gain == pytest.approx(np.median(ratios), abs=0.05)
    assert gain > 3  # the denoiser did something a user would see
    assert _number(r"median of (\d+) frames", text) == [150]

    actions = Counter((e["type"], e["status"]) for e in events if e["kind"] == "action")
    assert actions[("MoveStage", "applied")] > 0
    assert actions[("SetExposure", "applied")] > 0
    for (kind, status), count in actions.items():
        said = _number(rf"{kind} (?:[^;]*?, )?(\d+) {status.replace('_', ' ')}", text)
        assert said == [count], (kind, status)
    refused, clamped = _number(r"(\d+) refused, (\d+) clamped", text)
    assert refused == sum(c for (_, st), c in actions.items() if st == "refused")
    assert clamped == sum(c for (_, st), c in actions.items() if st == "clamped")


def test_demo_writes_a_complete_run_folder(
    demo: _Demo,
) -> None:
    _, run, summary = demo
    for name in (
        "data.ome.zarr",
        "events.jsonl",
        "measurements.csv",
        "summary.json",
        "truth/cells.csv",
        "protocol.yaml",
    ):
        assert (run / name).exists(), name
    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk["frames_acquired"] == summary["frames_acquired"] == 150
    assert on_disk["status"] == "completed"
    # one image for the one position, axes t, c, z, y, x; labels alongside,
    # and the denoiser's output as an image of its own
    image, denoised = list_images(run)
    assert (denoised.kind, denoised.source) == ("denoised", image.series)
    assert denoised.shape == image.shape
    assert (image.kind, image.position) == ("raw", "cell")
    assert image.shape[:3] == (summary["frames_acquired"], 1, 1)
    assert image.scale[0] == 60.0  # the planned interval, s
    assert image.scale[3:] == pytest.approx((0.325, 0.325))  # 20x
    assert image.channels == ("DAPI",)
    assert image.has_labels
    root = zarr.open_group(str(run / "data.ome.zarr"), mode="r")
    raw = root["0/0"]
    assert raw.dtype == np.uint16
    assert raw.metadata.dimension_names == ("t", "c", "z", "y", "x")
    labels = root["0/labels/nuclei/0"]
    assert labels.shape == raw.shape
    assert labels[10, 0, 0].max() > 0
    np.testing.assert_array_equal(read_frames(run)[:, None, None], raw[:])


def test_demo_log_agrees_with_the_zarr(demo: _Demo) -> None:
    _, run, summary = demo
    events = _events(run)
    kinds = {e["kind"] for e in events}
    assert {"run_started", "frame", "analysis", "action", "run_finished"} <= kinds
    frames = [e for e in events if e["kind"] == "frame"]
    assert [f["index"] for f in frames] == list(range(summary["frames_acquired"]))
    assert len(frames) == len(read_frames(run))
    assert [f["image"]["t"] for f in frames] == list(range(len(frames)))
    for f in frames:
        assert {
            "x_um",
            "y_um",
            "z_um",
            "exposure_ms",
            "laser_mw",
            "t_s",
            "t_frame",
        } <= f.keys()
    actions = [e for e in events if e["kind"] == "action"]
    assert actions
    for a in actions:
        assert a["status"] in ("applied", "clamped", "refused", "not_applied")
        assert "reason" in a
        assert "t_action" in a
    with (run / "measurements.csv").open() as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert rows
    # every column, in the order readers by position rely on: the writer's,
    # as docs/controller.md promises them
    assert tuple(reader.fieldnames or ()) == MEASUREMENT_COLUMNS
    assert _documented_measurement_columns() == MEASUREMENT_COLUMNS
    assert {r["channel"] for r in rows} == {"DAPI"}
    assert {int(r["t_index"]) for r in rows} == set(
        range(len({r["frame"] for r in rows}))
    )
    assert summary["latency_frame_to_result_ms"]["n"] == summary["frames_analysed"]
    # the reactions decided on every analysed frame, and that is timed
    assert summary["reaction_ms"]["n"] == summary["frames_analysed"]
    assert 0 <= summary["reaction_ms"]["p50"] <= summary["reaction_ms"]["max"]
    # every analysed frame was stored, on the results thread, and that is timed
    assert summary["storage_ms"]["n"] == summary["frames_analysed"]
    assert 0 < summary["storage_ms"]["p50"] <= summary["storage_ms"]["max"]
    assert summary["storage_waited_s"] >= 0


def test_center_on_keeps_the_nucleus_centred_by_the_truth(
    demo: _Demo,
) -> None:
    _, run, _ = demo
    frames = [e for e in _events(run) if e["kind"] == "frame"]
    truth = _truth(run)
    f0 = frames[0]
    target = min(
        truth[0],
        key=lambda r: np.hypot(
            float(r["x_um"]) - f0["x_um"], float(r["y_um"]) - f0["y_um"]
        ),
    )
    tid = target["cell_id"]
    half_fov = 512 * 0.325 / 2
    dist = []
    for f in frames:
        cell = [r for r in truth.get(f["index"], []) if r["cell_id"] == tid]
        dist.append(
            np.hypot(
                float(cell[0]["x_um"]) - f["x_um"], float(cell[0]["y_um"]) - f["y_um"]
            )
            if cell
            else np.inf
        )
    dist = np.asarray(dist)
    assert np.mean(dist <= 0.25 * half_fov) >= 0.9
    xy = np.array([(f["x_um"], f["y_um"]) for f in frames])
    travel = np.max(np.hypot(*(xy - xy[0]).T))
    # the nucleus crawled more than a field of view, out of where it started,
    # and the stage went with it (how far depends on the run's exposures: the
    # scene steps with the frames' timing, so a slightly different
    # segmentation gives another walk: the stage went 1.75 fields with the
    # int8 segmenter, 2.1 with float32)
    cell_xy = np.array(
        [
            (float(r["x_um"]), float(r["y_um"]))
            for f in frames
            for r in truth.get(f["index"], [])
            if r["cell_id"] == tid
        ]
    )
    cell_travel = np.max(np.hypot(*(cell_xy - cell_xy[0]).T))
    assert cell_travel > 2 * half_fov
    assert travel > cell_travel - 0.25 * half_fov


def test_adaptive_exposure_holds_the_signal_while_it_bleaches(
    demo: _Demo,
) -> None:
    _, run, _ = demo
    events = _events(run)
    frames = {e["index"]: e for e in events if e["kind"] == "frame"}
    target = 1500.0
    signal = []
    for e in events:
        if e["kind"] == "analysis" and e["objects"]:
            signal.append(np.median([o[5] for o in e["objects"]]) - e["background"])
    signal = np.asarray(signal)
    settled = signal[10:]
    assert np.mean(np.abs(settled / target - 1) <= 0.2) >= 0.9
    # it had to work for it: the dye bleached, so the exposure went up
    truth = _truth(run)
    doses = [max(float(r["dose"]) for r in truth[i]) for i in (0, len(frames) - 1)]
    assert doses[1] > doses[0]
    exposures = [frames[i]["exposure_ms"] for i in sorted(frames)]
    assert exposures[-1] > min(exposures[2:20])


def test_demo_zarr_opens_with_ome_zarr(demo: _Demo) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    _, run, summary = demo
    nodes = list(Reader(parse_url(str(run / "data.ome.zarr" / "0")))())
    image = nodes[0]
    assert image.data[0].shape[0] == summary["frames_acquired"]
    axes = image.metadata["axes"]
    assert [a["name"] for a in axes] == ["t", "c", "z", "y", "x"]
    assert [a.get("unit") for a in axes] == [
        "second",
        None,
        "micrometer",
        "micrometer",
        "micrometer",
    ]
    labels = [n for n in nodes if "labels/nuclei" in str(n)]
    assert labels
    assert labels[0].data[0].shape == image.data[0].shape
