"""The ``smartscope`` command line, run for real: help, ``sim-demo``, ``bench``, errors.

``smartscope sim-demo`` runs once per module in a child process (the real exit code
matters: a config-loaded UniMMCore can abort the interpreter at exit), and the
files it writes are opened with the standard readers (zarr, imageio, csv).
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from contracts import CELLS_CSV_COLUMNS
from smartscope import cli
from smartscope._data import data_dir
from smartscope.errors import SmartscopeError

PIXEL_SIZE_UM = 0.65  # 6.5 µm camera pixels behind the default 10x objective
N_POSITIONS, N_CHANNELS = 3, 2
TIME_POINTS, INTERVAL_S = 4, 120.0
OUTLINE_RGB = (255, 200, 0)  # interphase outlines on the contact sheet

runner = CliRunner()


def _smartscope(
    *args: str, cwd: Path, timeout: float = 240
) -> subprocess.CompletedProcess:
    """Run ``python -m smartscope.cli ARGS`` in a child process."""
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "smartscope.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# ------------------------------------------------------------------- help


def test_help_lists_commands():
    result = runner.invoke(cli.app, ["--help"])
    assert result.exit_code == 0, result.output
    assert "demo" in result.output
    assert "bench" in result.output


def test_demo_help_shows_options():
    result = runner.invoke(cli.app, ["sim-demo", "--help"])
    assert result.exit_code == 0, result.output
    for option in ("--out", "--seed", "--time-points", "--frames", "--interval-s"):
        assert option in result.output


def test_help_in_a_fresh_process(tmp_path):
    proc = _smartscope("--help", cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "demo" in proc.stdout


def test_console_script_help(tmp_path):
    # `pip install` puts it next to the interpreter (or on PATH)
    script = Path(sys.executable).with_name("smartscope")
    found = str(script) if script.exists() else shutil.which("smartscope")
    assert found, f"console script `smartscope` not installed next to {sys.executable}"
    proc = subprocess.run(
        [found, "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "bench" in proc.stdout


def test_import_loads_no_heavy_modules(tmp_path):
    heavy = ("torch", "zarr", "tensorstore", "pymmcore_plus", "useq", "skimage")
    code = (
        "import sys, smartscope.cli\n"
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"imported at startup: {proc.stdout.strip()}"


# ------------------------------------------------------------------- demo


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """``smartscope sim-demo`` once, in a child process: (process, run folder)."""
    work = tmp_path_factory.mktemp("demo")
    out = work / "run"
    proc = _smartscope(
        "sim-demo",
        "--out",
        str(out),
        "--seed",
        "3",
        "--frames",
        str(TIME_POINTS),
        "--interval-s",
        str(INTERVAL_S),
        cwd=work,
    )
    return proc, out


def test_demo_process_exits_cleanly(demo_run):
    proc, out = demo_run
    assert proc.returncode == 0, proc.stderr
    assert "FATAL" not in proc.stderr
    assert "Traceback" not in proc.stderr
    assert str(out / "data.ome.zarr") in proc.stdout
    assert str(out / "contact_sheet.png") in proc.stdout


def _series(out: Path) -> list[tuple[str, object, dict]]:
    """(name, array, multiscale attrs) of every position in the demo's OME-Zarr."""
    import zarr

    root = zarr.open_group(out / "data.ome.zarr", mode="r")
    # bioformats2raw layout: the positions are listed in the "OME" group
    assert root.attrs["ome"]["bioformats2raw.layout"] == 3
    names = root["OME"].attrs["ome"]["series"]
    series = []
    for name in names:
        group = root[name]
        multiscale = group.attrs["ome"]["multiscales"][0]
        series.append(
            (name, group[multiscale["datasets"][0]["path"]], group.attrs["ome"])
        )
    return series


def test_demo_zarr_frames_and_dtype(demo_run):
    proc, out = demo_run
    assert proc.returncode == 0, proc.stderr
    series = _series(out)
    assert len(series) == N_POSITIONS
    n_frames = 0
    for _name, arr, _ in series:
        assert arr.dtype == np.uint16
        assert arr.shape == (TIME_POINTS, N_CHANNELS, 512, 512)
        n_frames += int(np.prod(arr.shape[:-2]))
        data = arr[:]
        # every frame was written (the camera offset keeps real frames above 0)
        assert (data.reshape(-1, 512 * 512).min(axis=1) > 0).all()
    assert n_frames == N_POSITIONS * TIME_POINTS * N_CHANNELS
    first = [np.asarray(arr[0, 0]) for _, arr, _ in series]
    assert not np.array_equal(first[0], first[1]), "positions show the same field"


def test_demo_zarr_ngff_metadata(demo_run):
    _, out = demo_run
    for _, _, ome in _series(out):
        multiscale = ome["multiscales"][0]
        axes = multiscale["axes"]
        assert [a["name"] for a in axes] == ["t", "c", "y", "x"]
        assert axes[-1]["unit"] == axes[-2]["unit"] == "micrometer"
        (scale,) = (
            t["scale"]
            for t in multiscale["datasets"][0]["coordinateTransformations"]
            if t["type"] == "scale"
        )
        assert scale[-2:] == pytest.approx([PIXEL_SIZE_UM, PIXEL_SIZE_UM])
        assert scale[0] == pytest.approx(INTERVAL_S)
        assert [c["label"] for c in ome["omero"]["channels"]] == ["DAPI", "GFP"]


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or ()), list(reader)


def test_demo_truth_csv(demo_run):
    _, out = demo_run
    header, rows = _read_csv(out / "truth" / "cells.csv")
    assert header == CELLS_CSV_COLUMNS
    assert rows
    frames = {int(r["frame"]) for r in rows}
    assert frames <= set(range(N_POSITIONS * TIME_POINTS * N_CHANNELS))
    assert {r["state"] for r in rows} <= {"interphase", "mitosis", "dead"}


def test_demo_truth_matches_the_images(demo_run):
    """Nuclei listed in the truth sit on bright pixels of the stored images."""
    _, out = demo_run
    _, frames = _read_csv(out / "truth" / "frames.csv")
    _, cells = _read_csv(out / "truth" / "cells.csv")
    arrays = {name: arr for name, arr, _ in _series(out)}
    channel_index = {"DAPI": 0, "GFP": 1}
    frame = next(f for f in frames if f["channel"] == "DAPI" and f["t_index"] == "1")
    image = np.asarray(arrays[f"p{frame['position']}"][1, channel_index["DAPI"]])
    sx, sy = float(frame["stage_x_um"]), float(frame["stage_y_um"])
    inside = []
    for c in cells:
        if c["frame"] != frame["frame"]:
            continue
        col = (float(c["x_um"]) - sx) / PIXEL_SIZE_UM + 256 - 0.5
        row = (float(c["y_um"]) - sy) / PIXEL_SIZE_UM + 256 - 0.5
        if 10 <= row < 502 and 10 <= col < 502:
            inside.append(image[round(row), round(col)])
    assert len(inside) >= 5
    background = np.median(image)
    assert np.median(inside) > 3 * background


def test_demo_contact_sheet(demo_run):
    import imageio.v3 as iio

    _, out = demo_run
    sheet = iio.imread(out / "contact_sheet.png")
    assert sheet.dtype == np.uint8
    assert sheet.ndim == 3
    assert sheet.shape[2] == 3
    # rows = positions, columns = time points, 256-px tiles
    assert sheet.shape[0] >= N_POSITIONS * 256
    assert sheet.shape[1] >= TIME_POINTS * 256
    outline = np.all(sheet == OUTLINE_RGB, axis=2)
    assert outline.sum() > 100, "no ground-truth outlines drawn"


@pytest.mark.slow
def test_demo_exits_cleanly_again_and_again(tmp_path):
    for i in range(3):
        proc = _smartscope(
            "sim-demo", "--out", str(tmp_path / f"r{i}"), "--frames", "2", cwd=tmp_path
        )
        assert proc.returncode == 0, f"run {i}: {proc.stderr}"
        assert "FATAL" not in proc.stderr


# ----------------------------------------------------------------- errors


def test_missing_config_is_one_red_line_and_exit_2(tmp_path):
    out = tmp_path / "run"
    proc = _smartscope(
        "sim-demo",
        "--config",
        str(tmp_path / "nope.cfg"),
        "--out",
        str(out),
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "error:" in lines[0]
    assert "nope.cfg" in lines[0]
    assert "configuration file not found" in lines[0]
    assert not (out / "data.ome.zarr").exists()


def test_malformed_config_names_the_line(tmp_path):
    bad = tmp_path / "bad.cfg"
    bad.write_text("# a comment\nProperty,Core,Initialize\nNotACommand,1,2\n")
    result = runner.invoke(
        cli.app, ["sim-demo", "--config", str(bad), "--out", str(tmp_path)]
    )
    assert result.exit_code == 2, result.output
    assert "bad.cfg, line 3" in result.output
    assert "NotACommand" in result.output
    assert "Traceback" not in result.output


def test_occupied_out_dir_is_refused(tmp_path):
    (tmp_path / "data.ome.zarr").mkdir()
    result = runner.invoke(cli.app, ["sim-demo", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "already holds a run" in result.output


def test_time_points_must_be_positive():
    result = runner.invoke(cli.app, ["sim-demo", "--time-points", "0"])
    assert result.exit_code == 2
    assert "--time-points" in result.output


# ------------------------------------------------------------------ bench


def test_bench_missing_module_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "smartscope.bench", None)  # import fails
    result = runner.invoke(cli.app, ["bench"])
    assert result.exit_code == 1
    assert "smartscope.bench" in result.output
    assert "Traceback" not in result.output


@pytest.fixture
def bench_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """``smartscope.bench`` replaced by a module whose ``run`` only records
    its keyword arguments (the CLI's own checks and forwarding, not the
    measurements); the list of calls."""
    calls: list[dict] = []
    fake = types.ModuleType("smartscope.bench")
    fake.run = lambda **kw: calls.append(kw) or {}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "smartscope.bench", fake)
    return calls


def test_bench_forwards_options(tmp_path, bench_calls):
    target = tmp_path / "bench.json"
    result = runner.invoke(cli.app, ["bench", "--json", str(target), "--quick"])
    assert result.exit_code == 0, result.output
    assert bench_calls == [
        {
            "json_path": target,
            "quick": True,
            "long": False,
            "scaling": False,
            "positions": False,
            "realtime": False,
            "device": "auto",
            "realtime_denoise": None,
        }
    ]
    result = runner.invoke(cli.app, ["bench", "--scaling", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert bench_calls[-1]["scaling"] is True
    assert bench_calls[-1]["device"] == "cpu"
    result = runner.invoke(cli.app, ["bench", "--positions"])
    assert result.exit_code == 0, result.output
    assert bench_calls[-1]["positions"] is True
    result = runner.invoke(cli.app, ["bench", "--realtime"])
    assert result.exit_code == 0, result.output
    assert bench_calls[-1]["realtime"] is True
    result = runner.invoke(cli.app, ["bench", "--realtime", "--denoise", "denoise-n2v"])
    assert result.exit_code == 0, result.output
    assert bench_calls[-1]["realtime_denoise"] == "denoise-n2v"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--realtime", "--denoise", "nope"], "no model named or at 'nope'"),
        (["--realtime", "--denoise", "nuclei-seg"], "is a segment model"),
        (["--denoise", "denoise-care"], "add --realtime"),
    ],
)
def test_bench_refuses_a_denoiser_it_cannot_use_before_measuring(
    argv, says, bench_calls
):
    result = runner.invoke(cli.app, ["bench", *argv])
    assert result.exit_code == 2
    assert "--denoise" in result.output
    assert says in result.output
    assert bench_calls == []


def test_bench_refuses_a_device_it_cannot_use_before_measuring(bench_calls):
    result = runner.invoke(cli.app, ["bench", "--device", "tpu"])
    assert result.exit_code == 2
    assert "--device" in result.output
    assert "'tpu'" in result.output
    assert bench_calls == []


def test_bench_all_is_every_measurement_in_one_run(tmp_path, bench_calls):
    out = tmp_path / "all.json"
    result = runner.invoke(cli.app, ["bench", "--all", "--json", str(out)])
    assert result.exit_code == 0, result.output
    (kw,) = bench_calls
    assert all(kw[k] for k in ("long", "scaling", "positions", "realtime"))
    assert not kw["quick"]
    assert kw["json_path"] == out
    refused = runner.invoke(cli.app, ["bench", "--all", "--quick"])
    assert refused.exit_code == 2
    assert "--quick" in refused.output
    assert len(bench_calls) == 1


def test_bench_smartscope_error_exits_2(monkeypatch):
    def run(**kw):
        raise SmartscopeError("camera [Camera] timed out")

    fake = types.ModuleType("smartscope.bench")
    fake.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "smartscope.bench", fake)
    result = runner.invoke(cli.app, ["bench"])
    assert result.exit_code == 2
    assert "camera [Camera] timed out" in result.output  # markup escaped, not eaten
    assert "Traceback" not in result.output


# ------------------------------------------------------- lazy sub-commands


def test_lazy_subcommand_forwards_arguments(monkeypatch):
    seen = []
    train_app = typer.Typer()

    @train_app.command()
    def fit(epochs: int = 1) -> None:
        seen.append(epochs)

    @train_app.command()
    def export() -> None:
        raise SmartscopeError("no model to export")

    app = typer.Typer()

    @app.command()
    def other() -> None: ...

    # registering imports nothing: the module does not exist yet
    cli.add_lazy_subcommand(
        app, "train", "smartscope_fake_train", "train_app", "Train."
    )
    fake = types.ModuleType("smartscope_fake_train")
    fake.train_app = train_app  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "smartscope_fake_train", fake)
    result = runner.invoke(app, ["train", "fit", "--epochs", "3"])
    assert result.exit_code == 0, result.output
    assert seen == [3]
    result = runner.invoke(app, ["train", "--help"])
    assert result.exit_code == 0
    assert "fit" in result.output
    assert "export" in result.output
    result = runner.invoke(app, ["train", "export"])
    assert result.exit_code == 2
    assert "no model to export" in result.output


def test_a_stop_signal_in_a_lazy_subcommand_names_itself(monkeypatch):
    """`smartscope train` runs a typer app of its own, which makes a stop
    signal in a long training an exit 130 without a word (whatever the
    signal); the forwarding command says it was interrupted, by which
    signal, and exits with that signal's status, not as a start-up
    interrupt."""
    from smartscope.interrupts import Interrupted

    train_app = typer.Typer()

    @train_app.command()
    def fit() -> None:
        raise Interrupted("SIGTERM")  # what the stop-signal guard raises

    @train_app.command()
    def other() -> None: ...

    app = typer.Typer()

    @app.command()
    def nothing() -> None: ...

    cli.add_lazy_subcommand(app, "train", "smartscope_fake_train2", "train_app", "T.")
    fake = types.ModuleType("smartscope_fake_train2")
    fake.train_app = train_app  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "smartscope_fake_train2", fake)
    result = runner.invoke(app, ["train", "fit"])
    assert result.exit_code == 143, result.output
    assert "interrupted (SIGTERM)" in result.output
    assert "start-up" not in result.output


def test_run_refuses_an_unknown_device_before_anything_moves(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(
        cli.app,
        [
            "run",
            str(data_dir("protocols") / "demo.yaml"),
            "--device",
            "tpu",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 2
    assert "--device must be auto, cpu or cuda, got 'tpu'" in result.output
    assert not out.exists()
