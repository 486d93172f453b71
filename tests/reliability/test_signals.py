"""SIGINT and SIGTERM at seeded random moments of a ``smartscope run`` process.

Each case starts a real ``smartscope run`` of the demo protocol in real time
on the simulator, sends SIGINT or SIGTERM (sometimes a second one soon after)
at a moment between start-up and the middle of the run (by default once the
run logged a given frame, so the moment does not depend on the host's speed;
behind ``-m slow`` at seeded times after the start), and judges the
result from the files alone: the exit status names the signal, there is never
a traceback, and either nothing was left behind (interrupted during start-up)
or the run folder is complete: ``summary.json`` says ``interrupted`` and which
signal, and the summary, ``events.jsonl`` and the raw zarr agree frame for
frame, every frame readable and not blank. Five cases run by default (SIGHUP,
a closed terminal, among them), 24 behind ``-m slow``; and a SIGHUP under
``nohup`` is ignored. A signal in the models' warm-up, after the run folder
is made, is sent from inside it.
"""

from __future__ import annotations

import csv
import json
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from processes import frames_logged, start_smartscope
from smartscope._data import data_dir
from smartscope.io.read_images import frames_on_disk, read_derived, read_frames

EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}


def _protocol(tmp_path: Path) -> Path:
    text = (data_dir("protocols") / "demo.yaml").read_text()
    text = text.replace("time_mode: virtual", "time_mode: realtime")
    text = text.replace(
        "time_plan: {interval: 60, loops: 150}",
        "time_plan: {interval: 0.15, loops: 400}",
    )
    p = tmp_path / "realtime.yaml"
    p.write_text(text)
    return p


def _records(out: Path) -> list[dict]:
    lines = (out / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]  # every line whole after a stop


def _interrupt(
    tmp_path: Path,
    sig: signal.Signals,
    delay_s: float,
    second: float | None,
    after_frames: int = 0,
):
    """Start the run; once it logged ``after_frames`` frames (the moment is
    then one of the run's own, whatever the host's speed), wait ``delay_s``
    and send ``sig``, and ``second`` s later the same again if it still runs."""
    out = tmp_path / "run"
    proc = start_smartscope(
        "run", str(_protocol(tmp_path)), "--out", str(out), cwd=tmp_path
    )
    t0 = time.monotonic()
    while frames_logged(out) < after_frames:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < 120, "no frames in time"
        time.sleep(0.02)
    time.sleep(delay_s)
    proc.send_signal(sig)
    if second is not None:
        time.sleep(second)
        if proc.poll() is None:
            proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=180)
    return out, proc.returncode, stdout, stderr


def _check(out: Path, sig: signal.Signals, code: int, stdout: str, stderr: str) -> str:
    """Judge one interrupted run from its files; return where it was stopped."""
    assert code == EXIT[sig], (code, stderr[-2000:])
    assert "Traceback" not in stderr + stdout, stderr[-4000:]
    if not out.exists():  # interrupted before the run folder was made
        assert f"interrupted ({sig.name}) during start-up" in stderr, stderr
        return "start-up"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted", summary["finish_reason"]
    assert summary["signal"] == sig.name
    assert summary["exit_code"] == code
    assert str(out.resolve()) in stdout.replace("\n", "")  # the table was printed
    records = _records(out)
    assert records[0]["kind"] == "run_started"
    assert records[-1]["kind"] == "run_finished"
    frames = [r for r in records if r["kind"] == "frame"]
    assert [r["index"] for r in frames] == list(range(len(frames)))
    assert summary["frames_acquired"] == len(frames)
    raw = read_frames(out)
    for i in range(len(raw)):
        assert raw[i].max() > 0, f"frame {i} reads blank"
    n_raw = frames_on_disk(out)
    assert n_raw == len(raw) == len(frames), (n_raw, len(frames))
    assert not list(out.rglob("*.partial"))
    assert not (out / ".space-reserve").exists()
    # every frame analysed was stored before the folder was finished (the
    # results thread writes behind the analysis, and is drained at a stop
    # too): its rows in measurements.csv, its label and denoised planes
    with (out / "measurements.csv").open(newline="") as fh:
        rows = Counter(int(row["frame"]) for row in csv.DictReader(fh))
    analysed = [r for r in records if r["kind"] == "analysis" and not r["error"]]
    assert summary["storage_ms"] is None or (
        summary["storage_ms"]["n"] == len(analysed)
    )
    for r in analysed:
        i = r["index"]
        assert rows[i] == r["n_objects"], i
        labels = read_derived(out, i, "labels")
        assert labels is not None, i
        assert len(np.unique(labels[labels > 0])) == r["n_objects"], i
        denoised = read_derived(out, i, "denoised")
        assert denoised is not None, i
        assert denoised.any(), i  # written, not the array's zero fill
    return "running" if frames else "before the first frame"


def _cases(n: int, seed: int) -> list[tuple[signal.Signals, float, float | None]]:
    rng = random.Random(seed)
    cases = []
    for _ in range(n):
        sig = rng.choice([signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
        delay = rng.uniform(0.6, 9.0)
        second = rng.uniform(0.0, 0.3) if rng.random() < 0.4 else None
        cases.append((sig, round(delay, 2), second))
    return cases


#: (signal, frames logged before it, then seconds, a second signal after)
DEFAULT = [
    (signal.SIGINT, 0, 0.8, None),  # during start-up (imports, models, core)
    (signal.SIGTERM, 12, 0.0, 0.05),  # mid-run, then a second one while finishing
    (signal.SIGINT, 20, 0.07, None),  # mid-run, between two frames
    (signal.SIGINT, 1, 0.0, 0.02),  # at the first frame
    (signal.SIGHUP, 5, 0.0, None),  # the terminal or SSH session closed
]


@pytest.mark.parametrize(("sig", "after_frames", "delay_s", "second"), DEFAULT)
def test_an_interrupted_run_leaves_a_true_and_complete_folder(
    tmp_path: Path,
    sig: signal.Signals,
    after_frames: int,
    delay_s: float,
    second: float | None,
) -> None:
    out, code, stdout, stderr = _interrupt(tmp_path, sig, delay_s, second, after_frames)
    where = _check(out, sig, code, stdout, stderr)
    if after_frames:
        assert where == "running"


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "delay_s", "second"), _cases(24, seed=13))
def test_signal_campaign(
    tmp_path: Path, sig: signal.Signals, delay_s: float, second: float | None
) -> None:
    out, code, stdout, stderr = _interrupt(tmp_path, sig, delay_s, second)
    _check(out, sig, code, stdout, stderr)


def test_under_nohup_a_hangup_is_ignored(tmp_path: Path) -> None:
    """``nohup smartscope run`` must survive its terminal: a SIGHUP the process
    was started to ignore stays ignored; SIGTERM still stops it cleanly."""
    out = tmp_path / "run"
    proc = start_smartscope(
        "run",
        str(_protocol(tmp_path)),
        "--out",
        str(out),
        cwd=tmp_path,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )
    t0 = time.monotonic()
    while frames_logged(out) < 3:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < 120, "no frames in time"
        time.sleep(0.05)
    proc.send_signal(signal.SIGHUP)
    n = frames_logged(out)
    while frames_logged(out) < n + 3:  # still acquiring
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=180)
    assert _check(out, signal.SIGTERM, proc.returncode, stdout, stderr) == "running"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_a_signal_while_the_command_imports_says_so_and_names_itself(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    sig: signal.Signals,
) -> None:
    """A signal that lands while ``smartscope run`` still imports its modules,
    before its own handlers are in place, reaches typer first: typer 0.29
    makes any KeyboardInterrupt a silent exit 130 (found by CI: SIGINT 0.8 s
    after start on a busy machine, exit 130 and an empty stderr; a SIGTERM
    there would have exited 130 too). Sent here from inside the import of
    ``smartscope.run`` itself, in this process, so that it lands there every
    time."""
    import importlib.abc
    import os
    import sys

    from smartscope import cli

    class SignalOnImport(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, path: object, target: object = None) -> None:
            if name == "smartscope.run":
                os.kill(os.getpid(), sig)
                time.sleep(0.05)  # the handler runs here and raises
            return None

    out = tmp_path / "run"
    monkeypatch.delitem(sys.modules, "smartscope.run", raising=False)
    monkeypatch.setattr(sys, "meta_path", [SignalOnImport(), *sys.meta_path])
    argv = ["smartscope", "run", str(_protocol(tmp_path)), "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    handlers = {s: signal.getsignal(s) for s in EXIT}
    try:
        with pytest.raises(SystemExit) as exit_:
            cli.main()
    finally:  # main leaves the signals ignored for the interpreter's exit
        for s, handler in handlers.items():
            signal.signal(s, handler)
    assert exit_.value.code == EXIT[sig]
    stderr = capsys.readouterr().err
    assert f"interrupted ({sig.name}) during start-up" in stderr
    assert "Traceback" not in stderr
    assert not out.exists()


def test_a_signal_while_models_load_is_raised_after_loading() -> None:
    """TorchScript compiles in C++ that calls back into Python: an exception
    raised in there by the signal handler aborted the process (found by the
    slow campaign: SIGTERM 1.7 s after start, exit -6). Model loading runs
    ``deferred``: the signal is raised when the loading is done."""
    import os

    from smartscope.interrupts import Interrupted, deferred, stop_signals

    done: list[str] = []

    def load() -> None:
        with deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the handler runs here: it must not raise
            done.append("loaded")
        done.append("after the block")  # not reached: the signal is raised

    with stop_signals() as guard:
        try:
            load()
        except Interrupted as e:
            caught = e
    assert done == ["loaded"]  # the block ran to its end, then the signal
    assert caught.signal_name == "SIGTERM"
    assert guard.received == "SIGTERM"
    assert guard.pending is None


def _run_after_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, then: Callable[[], None]
) -> Path:
    """A real run of ``_protocol`` in this process, under the CLI's stop
    signals, with ``then()`` called on the main thread right after the
    analysis has started (models warmed up, nothing acquired yet); its
    run folder."""
    from smartscope.analysis import AnalysisPipeline
    from smartscope.controller import Controller
    from smartscope.hardware import load_core, release_core
    from smartscope.interrupts import stop_signals
    from smartscope.protocol import load_protocol

    start = AnalysisPipeline.start

    def start_then(self: AnalysisPipeline, *args: object, **kw: object) -> None:
        start(self, *args, **kw)
        then()

    monkeypatch.setattr(AnalysisPipeline, "start", start_then)
    proto = load_protocol(_protocol(tmp_path))
    core = load_core(seed=proto.seed, scene=proto.scene, time_mode=proto.time_mode)
    out = tmp_path / "run"
    try:
        ctl = Controller(core, proto, out_dir=out, device="cpu")
        with stop_signals():
            ctl.run()
    finally:
        release_core(core)
    return out


def test_a_signal_in_the_warm_up_still_leaves_events_that_begin_with_run_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run folder exists before the models warm up at the camera's frame
    size; a signal in that warm-up (found by the slow campaign: SIGINT 2.49 s
    after start, on a busy machine) left an ``events.jsonl`` that began with
    ``run_finished``. Sent here from inside the warm-up itself, in this
    process, so that it lands there every time."""
    import os

    def signal_here() -> None:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler runs here

    # the signal ends the run: its summary says so
    out = _run_after_start(tmp_path, monkeypatch, signal_here)
    records = _records(out)
    assert records[0]["kind"] == "run_started"
    assert records[-1]["kind"] == "run_finished"
    assert [r for r in records if r["kind"] == "frame"] == []
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["signal"] == "SIGINT"
    assert summary["frames_acquired"] == 0


def test_a_signal_a_library_turns_into_its_own_error_still_stops_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pydantic-core turns an exception raised while it serialises into its
    own serialization error, keeping only the text: a stop signal landing
    there (found by CI: SIGINT 6-7 s into a run, exit 1 "internal error:
    ... serializer: Interrupted: SIGINT (a bug in smartscope ...)", no
    summary.json) was a crash. Sent here from inside a serialization in the
    run's start-up, in this process: the run ends interrupted, its folder
    complete, as for a signal anywhere else."""
    import os

    from pydantic import BaseModel, field_serializer
    from pydantic_core import PydanticSerializationError

    from smartscope.interrupts import interrupt_behind

    class Serialised(BaseModel):
        x: int

        @field_serializer("x")
        def _signal(self, v: int) -> int:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler runs here, inside pydantic-core
            return v

    hidden: list[BaseException] = []

    def serialise() -> None:
        try:
            Serialised(x=1).model_dump_json()
        except PydanticSerializationError as e:  # what pydantic makes of it
            hidden.append(e)
            raise

    out = _run_after_start(tmp_path, monkeypatch, serialise)
    (error,) = hidden
    assert "Interrupted: SIGINT" in str(error)
    assert interrupt_behind(error) is not None
    assert interrupt_behind(ValueError("an error of its own")) is None
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["signal"] == "SIGINT"
    records = _records(out)
    assert records[0]["kind"] == "run_started"
    assert records[-1]["kind"] == "run_finished"
