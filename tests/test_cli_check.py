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
