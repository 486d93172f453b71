"""``smartscope check``: a protocol validated against the microscope, nothing
moved (judged from the simulator's own state)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from smartscope._data import data_dir
from smartscope.check import check_protocol
from smartscope.cli import app
from smartscope.errors import SmartscopeError
from smartscope.hardware import load_core, release_core
from smartscope.sim import get_simulator


def _state(core) -> tuple:
    return (
        core.getXYPosition(),
        core.getPosition(),
        core.getExposure(),
        core.getCurrentConfig("Objective"),
        core.getCurrentConfig("Channel"),
        core.getProperty("Laser", "Power_mW"),
    )


def test_check_reports_the_plan_and_moves_nothing(tmp_path: Path) -> None:
    core = load_core(time_mode="virtual")
    sim = get_simulator(core)
    try:
        before, clock = _state(core), sim.clock_s
        report = check_protocol(
            data_dir("protocols") / "demo.yaml", core=core, out_dir=tmp_path / "r"
        )
        assert _state(core) == before
        assert sim.clock_s == clock
        assert sim.light_dose_mj == 0
    finally:
        release_core(core)
    assert report.frames == 150  # time_plan loops
    assert report.positions == 1
    assert report.devices["light_source"] == "Laser"
    assert report.bytes_planned == 150 * report.bytes_per_frame
    assert not (tmp_path / "r").exists()


def test_check_refuses_what_run_would_refuse(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    text = (data_dir("protocols") / "demo.yaml").read_text()
    text = text.replace("laser_power_mw: 5", "laser_power_mw: 500")
    bad.write_text(
        text.replace("max_laser_mw: 20", "max_laser_mw: 600")
    )  # the device: 100
    core = load_core(time_mode="virtual")
    try:
        before = _state(core)
        with pytest.raises(SmartscopeError, match=r"laser_power_mw.*Laser\.Power_mW"):
            check_protocol(bad, core=core, out_dir=tmp_path / "r")
        assert _state(core) == before
    finally:
        release_core(core)


def test_check_command(tmp_path: Path) -> None:
    runner = CliRunner()
    proto = tmp_path / "demo.yaml"
    shutil.copy(data_dir("protocols") / "demo.yaml", proto)
    ok = runner.invoke(app, ["check", str(proto), "--out", str(tmp_path / "r")])
    assert ok.exit_code == 0, ok.output
    assert "ready to run" in ok.output
    assert "nothing was moved" in ok.output
    proto.write_text(proto.read_text().replace("max_laser_mw: 20", "max_laser_mw: 2"))
    bad = runner.invoke(app, ["check", str(proto)])
    assert bad.exit_code == 2
    assert "demo.yaml" in bad.output
    assert "Traceback" not in bad.output


@pytest.mark.parametrize(
    ("value", "says"),
    [(".inf", "finite number"), ("-1", "greater than or equal to 0")],
)
def test_check_names_a_bad_model_min_area(tmp_path: Path, value: str, says: str):
    """An infinite or negative ``analysis.model_min_area_um2`` (which would
    fail every frame, or mean nothing) is refused by ``smartscope check``,
    naming the file and the field, before anything moves."""
    proto = tmp_path / "demo.yaml"
    text = (data_dir("protocols") / "demo.yaml").read_text()
    assert "  diameter_um: 12\n" in text
    proto.write_text(
        text.replace(
            "  diameter_um: 12\n", f"  diameter_um: 12\n  model_min_area_um2: {value}\n"
        )
    )
    bad = CliRunner().invoke(app, ["check", str(proto)])
    assert bad.exit_code == 2, bad.output
    assert "demo.yaml" in bad.output
    assert "model_min_area_um2" in bad.output
    assert says in bad.output
    assert "Traceback" not in bad.output


def _protocol(tmp_path: Path, interval_s: float, analysis: str, mode: str) -> Path:
    """demo.yaml with another time plan, analysis and time mode."""
    import yaml

    d = yaml.safe_load((data_dir("protocols") / "demo.yaml").read_text())
    d["time_mode"] = mode
    d["sequence"]["time_plan"] = {"interval": interval_s, "loops": 50}
    d["sequence"]["channels"][0]["exposure"] = 1.0
    if analysis == "segment":
        d["analysis"] = {"segmenter": "model", "model": "nuclei-seg"}
    elif analysis == "classical":
        d["analysis"] = {"segmenter": "classical"}
    path = tmp_path / f"{analysis}-{interval_s}.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def test_check_times_the_models_at_the_protocols_objective_and_moves_nothing(
    tmp_path: Path,
) -> None:
    """--time-analysis: the demo's two models timed on a frame of the camera's
    size, at the pixel size of the protocol's objective (20x; 10x is in
    place), and nothing moved."""
    from smartscope.check import pixel_size_with_objective
    from smartscope.protocol import load_protocol

    core = load_core(time_mode="virtual")
    sim = get_simulator(core)
    try:
        assert core.getCurrentConfig("Objective") == "10x"
        before, clock = _state(core), sim.clock_s
        demo = data_dir("protocols") / "demo.yaml"
        report = check_protocol(
            demo, core=core, out_dir=tmp_path / "r", time_analysis=True
        )
        assert _state(core) == before
        assert sim.clock_s == clock
        assert sim.light_dose_mj == 0
        assert pixel_size_with_objective(core, load_protocol(demo)) == (0.325, True)
    finally:
        release_core(core)
    ms = report.analysis_ms
    assert ms is not None
    assert set(ms) == {"denoise", "segment", "per_frame"}
    assert min(ms.values()) > 0
    assert report.planned_frame_ms == 60_000.0  # a frame a minute
    rows = dict(report.rows())
    assert rows["a frame every"].startswith("60000 ms")
    assert "denoise" in rows["analysis a frame, here"]
    # virtual time: the analysis paces the clock
    assert any("paces the sample clock" in n for n in report.notes)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("interval_s", "says"),
    [(0.0002, "may not keep up"), (60.0, "keeps up with this plan")],
)
def test_check_says_whether_the_analysis_keeps_the_realtime_pace(
    tmp_path: Path, interval_s: float, says: str
) -> None:
    """A frame every 1 ms (0.2-ms intervals, paced by the 1-ms exposures) is
    beyond a segmentation network on a CPU; a frame a minute is within it."""
    path = _protocol(tmp_path, interval_s, "segment", "realtime")
    report = check_protocol(
        path, out_dir=tmp_path / "r", time_analysis=True, device="cpu"
    )
    assert report.analysis_ms is not None
    assert set(report.analysis_ms) == {"segment", "per_frame"}
    assert report.planned_frame_ms == pytest.approx(max(interval_s * 1000.0, 1.0))
    assert [n for n in report.notes if says in n]


def test_check_times_nothing_without_models(tmp_path: Path) -> None:
    path = _protocol(tmp_path, 1.0, "classical", "realtime")
    report = check_protocol(path, out_dir=tmp_path / "r", time_analysis=True)
    assert report.analysis_ms is None
    assert [n for n in report.notes if "nothing was timed" in n]
    assert "analysis a frame, here" not in dict(report.rows())


def test_check_command_times_the_analysis(tmp_path: Path) -> None:
    path = _protocol(tmp_path, 0.0002, "segment", "realtime")
    out = CliRunner().invoke(
        app,
        [
            "check",
            str(path),
            "--time-analysis",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert out.exit_code == 0, out.output
    assert "analysis a frame, here" in out.output
    assert "may not keep up" in out.output
    bad = CliRunner().invoke(app, ["check", str(path), "--device", "tpu"])
    assert bad.exit_code == 2
    assert "--device" in bad.output


def test_check_refuses_a_gpu_it_does_not_have_before_loading_anything(
    tmp_path: Path,
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    path = _protocol(tmp_path, 1.0, "segment", "realtime")
    out = CliRunner().invoke(
        app, ["check", str(path), "--time-analysis", "--device", "cuda"]
    )
    assert out.exit_code == 2
    assert "--device" in out.output
    assert "CUDA" in out.output
    assert "--device cpu" in out.output
    assert "Traceback" not in out.output
