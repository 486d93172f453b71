"""``smartscope run`` as a real process: exit codes, Ctrl-C, a killed process,
refused protocols and a run that falls behind its plan (``smartscope demo``:
tests/test_demo.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from processes import frames_logged, run_smartscope, start_smartscope
from smartscope._data import data_dir
from smartscope.io.read_images import frames_on_disk, read_frames


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
