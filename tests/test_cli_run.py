"""``smartscope run`` and ``smartscope demo`` as real processes: exit codes,
Ctrl-C, a killed process, and refused protocols."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr
from scipy import ndimage as ndi

from processes import frames_logged, run_smartscope, start_smartscope
from smartscope._data import data_dir
from smartscope.io.read_images import frames_on_disk, list_images, read_frames


def _wait_for_frames(
    out: Path, n: int, proc: subprocess.Popen, timeout: float = 120
) -> None:
    t0 = time.monotonic()
    while frames_logged(out) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout, "no frames in time"
        time.sleep(0.05)


def _slow_protocol(tmp_path: Path) -> Path:
    """The demo protocol in realtime with short intervals: long enough to interrupt."""
    text = (data_dir("protocols") / "demo.yaml").read_text()
    text = text.replace("time_mode: virtual", "time_mode: realtime")
    text = text.replace(
        "time_plan: {interval: 60, loops: 150}",
        "time_plan: {interval: 0.2, loops: 400}",
    )
    p = tmp_path / "slow.yaml"
    p.write_text(text)
    return p


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


def test_demo_command_runs_and_prints_the_run_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run_smartscope("demo", "--out", str(out), cwd=tmp_path)
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


def test_ctrl_c_stops_cleanly_and_says_so(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = start_smartscope(
        "run", str(_slow_protocol(tmp_path)), "--out", str(out), cwd=tmp_path
    )
    _wait_for_frames(out, 5, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "FATAL" not in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True
    assert summary["status"] == "interrupted"
    raw = read_frames(out)
    assert frames_on_disk(out) == len(raw) == summary["frames_acquired"]
    assert len(raw) == frames_logged(out)
    assert raw[-1].max() > 0
    last = json.loads((out / "events.jsonl").read_text().splitlines()[-1])
    assert last["kind"] == "run_finished"


def test_killed_process_leaves_its_frames_readable(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = start_smartscope(
        "run", str(_slow_protocol(tmp_path)), "--out", str(out), cwd=tmp_path
    )
    _wait_for_frames(out, 8, proc)
    proc.kill()
    proc.communicate(timeout=60)
    logged = frames_logged(out)
    # every frame in the log is on disk (the log line follows the write)
    assert frames_on_disk(out) >= logged >= 8
    raw = read_frames(out)  # the frames the log points at
    assert len(raw) >= logged
    for i in range(logged):
        assert raw[i].max() > 0, f"frame {i} is empty"


def test_bad_protocol_exits_2_with_file_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        (data_dir("protocols") / "demo.yaml")
        .read_text()
        .replace("max_step_um: 60", "max_step_um: -60")
    )
    proc = run_smartscope("run", str(bad), "--out", str(tmp_path / "r"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "bad.yaml" in proc.stderr
    assert "line " in proc.stderr
    assert "max_step_um" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()


def test_a_run_that_falls_behind_its_time_plan_says_so(tmp_path: Path) -> None:
    """40-ms exposures every 10 ms in realtime: frames begin later and later
    (at least 30 ms more each), and ``smartscope run`` says the plan was not
    kept; the frames are all there."""
    proto = tmp_path / "fast.yaml"
    proto.write_text(
        "version: 1\n"
        "name: too-fast\n"
        "seed: 3\n"
        "time_mode: realtime\n"
        "sequence:\n"
        "  channels: [{config: DAPI, exposure: 40}]\n"
        "  time_plan: {interval: 0.01, loops: 8}\n"
        "save: {truth: false, report: false}\n"
    )
    out = tmp_path / "r"
    proc = run_smartscope("run", str(proto), "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "fell behind its time plan" in text
    assert "frames late for the time plan" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_acquired"] == 8
    assert summary["frame_late_ms"]["max"] >= 7 * 30.0 - 1.0
