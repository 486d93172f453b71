"""``smartscope recover``: a run killed at any moment gets a complete, honest
run folder back, and nothing acquired is lost.

Two ways to kill a run: in-process, a finished run folder is damaged exactly
as SIGKILL leaves one (no summary, a half-written last log line, the raw
array grown before its chunk was written, a ``.partial`` chunk file, a frame
written but not logged, label images behind the raw frames); and for real, a
``smartscope run`` process is SIGKILLed at seeded random moments. Every check
reads the files, never the recovery's own word.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from processes import frames_logged, run_smartscope, start_smartscope
from smartscope import cli
from smartscope.controller import Controller
from smartscope.hardware import load_core, release_core
from smartscope.io.measurements import MEASUREMENT_COLUMNS
from smartscope.protocol import Protocol
from smartscope.recover import RecoveryError, recover_run

N_FRAMES = 30

runner = CliRunner()


def _events(run: Path) -> list[dict[str, Any]]:
    """Every line of events.jsonl, each of which must be one JSON object."""
    return [
        json.loads(line) for line in (run / "events.jsonl").read_text().split("\n")[:-1]
    ]


def _frame_records(run: Path) -> int:
    return sum(e["kind"] == "frame" for e in _events(run))


def _raw(run: Path) -> Any:
    """The one position's raw image, (t, c, z, y, x)."""
    return zarr.open_array(str(run / "data.ome.zarr" / "0" / "0"), mode="r")


def _assert_valid_ngff(run: Path) -> None:
    import yaozarrs

    yaozarrs.validate_zarr_store(str(run / "data.ome.zarr"))


def _partial_files(run: Path) -> list[Path]:
    return list((run / "data.ome.zarr").rglob("*.partial"))


# ------------------------------------------------------------------ in-process


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run on the simulator: 30 frames, classical segmentation,
    labels saved. Tests copy it before they damage it."""
    out = tmp_path_factory.mktemp("recover") / "run"
    proto = Protocol.model_validate(
        {
            "name": "recover-me",
            "seed": 2,
            "time_mode": "virtual",
            "objective": "20x",
            "laser_power_mw": 5,
            "sequence": {
                "channels": [{"config": "DAPI", "exposure": 30}],
                "stage_positions": [{"name": "a", "x": 0, "y": 0}],
                "time_plan": {"interval": 30, "loops": N_FRAMES},
            },
            "analysis": {"segmenter": "classical"},
            "save": {"labels": True},
        }
    )
    core = load_core()
    try:
        summary = Controller(core, proto, out_dir=out).run()
    finally:
        release_core(core)
    assert summary["frames_acquired"] == N_FRAMES
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def _kill_damage(run: Path) -> dict[str, Any]:
    """Leave ``run`` as SIGKILL would between the last frame's chunk write and
    its log line, the next frame's array growth and half its chunk, while a
    log line was being written. Returns what the test needs to know."""
    (run / "summary.json").unlink()
    log = run / "events.jsonl"
    lines = log.read_bytes().split(b"\n")[:-1]
    last_frame = max(i for i, ln in enumerate(lines) if b'"kind":"frame"' in ln)
    kept = lines[:last_frame]  # the last frame record (and all after it) is lost
    cut = kept[-1]
    assert b'"kind":"frame"' not in cut  # an analysis record, cut in half
    log.write_bytes(b"".join(ln + b"\n" for ln in kept[:-1]) + cut[: len(cut) // 2])
    image = run / "data.ome.zarr" / "0"
    raw = zarr.open_array(str(image / "0"), mode="r+")
    raw.resize((N_FRAMES + 1, *raw.shape[1:]))  # grown before a chunk landed
    chunk_dir = image / "0" / "c" / str(N_FRAMES) / "0" / "0" / "0"
    chunk_dir.mkdir(parents=True)
    (chunk_dir / "0.3f9a1c.partial").write_bytes(b"\x00" * 1000)
    labels = zarr.open_array(str(image / "labels" / "nuclei" / "0"), mode="r+")
    labels.resize((N_FRAMES - 3, *labels.shape[1:]))  # analysis was behind
    with (run / "measurements.csv").open("a") as fh:
        fh.write("29,a,870.0")  # a row cut mid-way
    frames = [json.loads(ln) for ln in kept[:-1] if b'"kind":"frame"' in ln]
    return {
        "cut_line": len(kept),
        "frames_logged": len(frames),
        "dose_mj": frames[-1]["dose_mj"],
        "analysed": sum(b'"kind":"analysis"' in ln for ln in kept[:-1]),
    }


def test_recover_repairs_everything_a_kill_leaves(
    finished_run: Path, tmp_path: Path
) -> None:
    run = _copy(finished_run, tmp_path)
    before = np.asarray(_raw(run)[:])
    damage = _kill_damage(run)

    result = recover_run(run)

    assert result.recovered
    summary = json.loads((run / "summary.json").read_text())
    assert summary == result.summary
    assert summary["status"] == "killed"
    assert summary["exit_code"] == 137
    assert summary["interrupted"] is False
    assert "without finishing" in summary["finish_reason"]
    assert "rebuilt" in summary["finish_reason"]
    rec = summary["recovery"]
    # the frame whose log line was lost is kept and counted
    raw = _raw(run)
    assert raw.shape[0] == N_FRAMES == summary["frames_acquired"]
    assert rec["frames_logged"] == damage["frames_logged"] == N_FRAMES - 1
    assert rec["frames_unlogged"] == 1
    assert _frame_records(run) + rec["frames_unlogged"] == summary["frames_acquired"]
    # every frame reads as it did before the kill
    np.testing.assert_array_equal(np.asarray(raw[:]), before)
    # the allocated, never-written frame and its .partial file are gone
    assert not _partial_files(run)
    assert rec["raw_arrays"][0]["shape_before"][0] == N_FRAMES + 1
    assert rec["raw_arrays"][0]["shape_after"][0] == N_FRAMES
    assert rec["raw_arrays"][0]["frames_on_disk"] == N_FRAMES
    assert rec["raw_arrays"][0]["partial_files_removed"] == 1
    # labels padded to the raw frames
    labels = zarr.open_array(
        str(run / "data.ome.zarr" / "0" / "labels" / "nuclei" / "0"), mode="r"
    )
    assert labels.shape == raw.shape
    assert rec["derived_arrays"][0]["shape_before"][0] == N_FRAMES - 3
    _assert_valid_ngff(run)
    # the cut log line is dropped and named; the log is one object per line
    assert [d["line"] for d in rec["lines_dropped"]] == [damage["cut_line"]]
    events = _events(run)
    assert events[0]["kind"] == "run_started"
    assert events[-1]["kind"] == "run_finished"
    assert events[-1]["status"] == "killed"
    assert events[-1]["frames"] == N_FRAMES
    assert sum(e["kind"] == "run_finished" for e in events) == 1
    # counted as the live recorder counts
    assert summary["frames_analysed"] == damage["analysed"]
    assert summary["frames_analysed"] == sum(e["kind"] == "analysis" for e in events)
    assert summary["light_dose_mj"] == damage["dose_mj"]
    assert summary["positions"][0]["name"] == "a"
    assert summary["time_mode"] == "virtual"
    assert summary["sample_time_s"] > 0
    # the plan's pace from run_started, the analysis' time from its records
    assert summary["planned_frame_ms"] == 30_000.0
    assert summary["analysis_warm_up_ms"] is None  # classical: no models
    stages = summary["analysis_stages_ms"]
    assert set(stages) == {"background", "denoise", "segment", "measure", "track"}
    assert stages["segment"]["n"] == damage["analysed"]
    # the half-written CSV row is cut
    csv_text = (run / "measurements.csv").read_text()
    assert csv_text.endswith("\n")
    width = len(MEASUREMENT_COLUMNS)
    assert all(len(r.split(",")) == width for r in csv_text.splitlines())
    assert rec["files_trimmed"] == {"measurements.csv": len("29,a,870.0")}

    # a second recover finds the summary and does nothing
    snapshot = (run / "summary.json").read_bytes(), (run / "events.jsonl").read_bytes()
    again = recover_run(run)
    assert not again.recovered
    assert "nothing to do" in again.notes[0]
    assert again.summary["status"] == "killed"
    assert snapshot == (
        (run / "summary.json").read_bytes(),
        (run / "events.jsonl").read_bytes(),
    )


def _label_image_being_created(run: Path, moment: str) -> None:
    """Leave ``run``'s label image as a kill at ``moment`` of its creation
    would (the labels group is made, then its attributes, then the label
    image's group and its array; each metadata write is atomic: a
    ``zarr.<hex>.partial`` file renamed into place)."""
    labels = run / "data.ome.zarr" / "0" / "labels"
    meta = (labels / "zarr.json").read_text()
    shutil.rmtree(labels)
    labels.mkdir()
    plain_group = json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}})
    if moment == "labels group written":
        (labels / "zarr.3b1f.partial").write_text(meta[: len(meta) // 2])
        return
    if moment == "labels attributes written":
        (labels / "zarr.json").write_text(plain_group)
        (labels / "zarr.77aa.partial").write_text(meta[:10])
        return
    (labels / "zarr.json").write_text(meta)
    nuclei = labels / "nuclei"
    nuclei.mkdir()
    if moment == "image group written":
        (nuclei / "zarr.0c0c.partial").write_text(plain_group[:7])
    elif moment == "image array written":
        (nuclei / "zarr.json").write_text(plain_group)
        (nuclei / "0").mkdir()
        (nuclei / "0" / "zarr.9e9e.partial").write_text("{")
    else:
        raise AssertionError(moment)


@pytest.mark.parametrize(
    "moment",
    [
        "labels group written",
        "labels attributes written",
        "image group written",
        "image array written",
    ],
)
def test_killed_while_the_label_image_was_created(
    finished_run: Path, tmp_path: Path, moment: str
) -> None:
    """The label image is created at the first analysis result, which can lag
    the raw frames: a kill then leaves group metadata half-written. It held
    no frames yet; recover removes it, and what is left is valid NGFF."""
    run = _copy(finished_run, tmp_path)
    (run / "summary.json").unlink()
    _label_image_being_created(run, moment)

    summary = recover_run(run).summary

    assert not _partial_files(run)
    assert not (run / "data.ome.zarr" / "0" / "labels").exists()
    mended = summary["recovery"]["images_mended"]
    assert mended
    assert any("removed" in m for m in mended)
    assert summary["frames_acquired"] == _raw(run).shape[0] == N_FRAMES
    _assert_valid_ngff(run)


def test_killed_while_an_image_was_created(finished_run: Path, tmp_path: Path) -> None:
    """A position added while the run reacted, killed while its image was
    made: removed (no frames), and OME/series lists the images there are."""
    run = _copy(finished_run, tmp_path)
    (run / "summary.json").unlink()
    root = run / "data.ome.zarr"
    zarr.open_group(str(root / "OME"), mode="a").attrs["ome"] = {
        "version": "0.5",
        "series": ["0", "1"],
    }
    (root / "1").mkdir()
    (root / "1" / "zarr.5d5d.partial").write_text("{")

    summary = recover_run(run).summary

    assert not _partial_files(run)
    assert not (root / "1").exists()
    ome = zarr.open_group(str(root / "OME"), mode="r").attrs.asdict()["ome"]
    assert ome["series"] == ["0"]
    assert any("OME/series" in m for m in summary["recovery"]["images_mended"])
    assert summary["frames_acquired"] == N_FRAMES
    _assert_valid_ngff(run)


def test_a_finished_run_is_left_alone(finished_run: Path, tmp_path: Path) -> None:
    run = _copy(finished_run, tmp_path)
    log = (run / "events.jsonl").read_bytes()
    result = recover_run(run)
    assert not result.recovered
    assert result.summary["status"] == "completed"
    assert "status completed" in result.notes[0]
    assert (run / "events.jsonl").read_bytes() == log


def test_a_garbled_line_is_dropped_and_named(
    finished_run: Path, tmp_path: Path
) -> None:
    run = _copy(finished_run, tmp_path)
    (run / "summary.json").unlink()
    log = run / "events.jsonl"
    lines = log.read_bytes().split(b"\n")[:-1]
    lines = lines[:-1]  # no run_finished: the process was killed
    third_frame = [i for i, ln in enumerate(lines) if b'"kind":"frame"' in ln][2]
    lines[third_frame] = b'{"kind": "frame", \x00\xff garbage'
    log.write_bytes(b"".join(ln + b"\n" for ln in lines))

    summary = recover_run(run).summary

    dropped = summary["recovery"]["lines_dropped"]
    assert [d["line"] for d in dropped] == [third_frame + 1]
    assert dropped[0]["reason"].startswith("not JSON")
    events = _events(run)  # every line parses again
    assert len(events) == len(lines)  # one dropped, run_finished appended
    # frame 2's record was the garbled line, but its chunk is on disk
    assert summary["frames_acquired"] == _raw(run).shape[0] == N_FRAMES
    assert summary["recovery"]["frames_unlogged"] == 1


@pytest.mark.parametrize("how", ["summary.json.tmp", "summary.json"])
def test_killed_while_finishing(finished_run: Path, tmp_path: Path, how: str) -> None:
    """run_finished was written, then the process died while summary.json was
    written (atomically: a half ``summary.json.tmp``; in place by an older
    version: a half ``summary.json``): rebuilt, no second run_finished."""
    run = _copy(finished_run, tmp_path)
    text = (run / "summary.json").read_text()
    (run / "summary.json").unlink()
    (run / how).write_text(text[: len(text) // 2])

    result = recover_run(run)

    summary = json.loads((run / "summary.json").read_text())
    assert summary == result.summary
    assert summary["status"] == "killed"
    assert "had finished (completed" in summary["finish_reason"]
    assert summary["frames_acquired"] == N_FRAMES == _raw(run).shape[0]
    assert sum(e["kind"] == "run_finished" for e in _events(run)) == 1
    assert not (run / "summary.json.tmp").exists()
    if how == "summary.json":
        kept = (run / "summary.json.unreadable").read_text()
        assert kept == text[: len(text) // 2]


def test_a_record_written_after_a_cut_one_is_kept(
    finished_run: Path, tmp_path: Path
) -> None:
    """A write that failed half-way (a full disk) and the next line written
    after it: the cut part is dropped, the whole record after it kept."""
    run = _copy(finished_run, tmp_path)
    (run / "summary.json").unlink()
    (run / ".space-reserve").write_bytes(b"\0" * 4096)  # the run's reserve
    log = run / "events.jsonl"
    lines = log.read_bytes().split(b"\n")[:-2]  # no run_finished
    i = [k for k, ln in enumerate(lines) if b'"kind":"frame"' in ln][4]
    assert b'"kind":"frame"' not in lines[i - 1]
    lines[i - 1] = lines[i - 1][:40] + lines[i]  # line i-1 cut, then frame 4
    del lines[i]
    log.write_bytes(b"".join(ln + b"\n" for ln in lines))

    summary = recover_run(run).summary

    rec = summary["recovery"]
    assert rec["lines_salvaged"] == [i]
    assert [d["line"] for d in rec["lines_dropped"]] == [i]
    assert rec["frames_unlogged"] == 0
    events = _events(run)
    assert [e["index"] for e in events if e["kind"] == "frame"] == list(range(N_FRAMES))
    assert summary["frames_acquired"] == N_FRAMES
    assert rec["space_reserve_released"] is True
    assert not (run / ".space-reserve").exists()


def test_a_folder_that_is_not_a_run_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RecoveryError, match="no such run folder"):
        recover_run(tmp_path / "absent")
    with pytest.raises(RecoveryError, match=r"no events\.jsonl"):
        recover_run(tmp_path)
    (tmp_path / "events.jsonl").write_text('{"kind": "frame", "index": 0}\n')
    with pytest.raises(RecoveryError, match="run_started"):
        recover_run(tmp_path)
    assert not (tmp_path / "summary.json").exists()

    result = runner.invoke(cli.app, ["recover", str(tmp_path)])
    assert result.exit_code == 2
    out = result.output.strip()
    assert len(out.splitlines()) == 1
    assert str(tmp_path) in out
    assert "Traceback" not in out


def test_cli_prints_what_it_did(finished_run: Path, tmp_path: Path) -> None:
    run = _copy(finished_run, tmp_path)
    _kill_damage(run)
    result = runner.invoke(cli.app, ["recover", str(run)])
    assert result.exit_code == 0, result.output
    assert "frames on disk" in result.output
    assert "without a frame record" in result.output
    assert "killed" in result.output
    result = runner.invoke(cli.app, ["recover", str(run), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["recovered"] is False
    assert out["summary"]["frames_acquired"] == N_FRAMES


# ------------------------------------------------------------------ real kills

_KILL_PROTOCOL = """\
version: 1
name: kill-me
seed: 3
time_mode: realtime
objective: 20x
laser_power_mw: 5
sequence:
  channels: [{config: DAPI, exposure: 10}]
  stage_positions: [{name: a, x: 0, y: 0}]
  time_plan: {interval: 0.1, loops: 300}
analysis: {segmenter: classical}
save: {labels: true}
"""


def _kill_and_recover(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    proto = tmp_path / "kill.yaml"
    # frames back to back (a kill mostly lands mid-frame) or 0.15 s apart
    interval = rng.choice([0, 0.15])
    proto.write_text(_KILL_PROTOCOL.replace("interval: 0.1,", f"interval: {interval},"))
    run = tmp_path / "run"
    proc = start_smartscope("run", str(proto), "--out", str(run), cwd=tmp_path)
    try:
        first = rng.randint(1, 6)  # then a random moment within ~0.1-1 frame times
        t0 = time.monotonic()
        while frames_logged(run) < first:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() - t0 < 120, "no frames in time"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "summary.json").exists()

    rec = run_smartscope("recover", str(run), "--json", cwd=tmp_path, timeout=120)
    assert rec.returncode == 0, rec.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert json.loads(rec.stdout)["summary"] == summary
    assert summary["status"] == "killed"
    assert summary["exit_code"] == 137
    recovery = summary["recovery"]
    raw = _raw(run)
    n = summary["frames_acquired"]
    assert n >= first
    assert raw.shape[0] == n
    assert _frame_records(run) + recovery["frames_unlogged"] == n
    assert recovery["frames_logged_not_on_disk"] == 0
    assert not _partial_files(run)
    assert not (run / ".space-reserve").exists()
    frames = np.asarray(raw[:])
    assert (frames.reshape(n, -1).max(axis=1) > 0).all(), "a frame reads as zeros"
    _assert_valid_ngff(run)
    labels = run / "data.ome.zarr" / "0" / "labels"
    if labels.exists():  # whole (listed, with its array), or not there at all
        attrs = zarr.open_group(str(labels), mode="r").attrs.asdict()
        assert attrs["ome"]["labels"] == ["nuclei"]
        nuclei = zarr.open_array(str(labels / "nuclei" / "0"), mode="r")
        assert nuclei.shape == raw.shape
    events = _events(run)  # every line is one JSON object
    assert events[-1]["kind"] == "run_finished"
    assert events[-1]["frames"] == n
    analysed = sum(e["kind"] == "analysis" for e in events)
    assert summary["frames_analysed"] == analysed
    dose = [e["dose_mj"] for e in events if e["kind"] == "frame"]
    assert summary["light_dose_mj"] == (dose[-1] if dose else 0.0)


@pytest.mark.parametrize("seed", range(3))
def test_sigkill_at_a_random_moment_then_recover(tmp_path: Path, seed: int) -> None:
    _kill_and_recover(tmp_path, seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 120))
def test_sigkill_campaign(tmp_path: Path, seed: int) -> None:
    _kill_and_recover(tmp_path, seed)
