"""``smartscope report`` and the report ``smartscope run`` writes, on real runs
on the simulator: every figure section is there (an image, or the sentence
that says why not), the page is self-contained, what it states matches the
run folder and the truth, and headless Chromium renders every image.

Runs (module scoped): a short demo through the CLI (with its report), the
same through the CLI with ``--no-report``, analysis off and no truth; a
four-position run with a denoiser, a small analysis queue (frames skipped)
and a reaction that changes power and interval, in process; a killed copy of
it, recovered; a run whose camera never delivers (0 frames).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from processes import run_smartscope
from smartscope._data import data_dir
from smartscope.actions import Action, SetExposure, SetInterval, SetLaserPower
from smartscope.analysis.result import FrameResult
from smartscope.controller import Controller
from smartscope.hardware import load_core, release_core
from smartscope.protocol import Protocol
from smartscope.reactions.base import Reaction, RunView
from smartscope.recover import recover_run
from smartscope.report import SECTIONS, ReportError, build_report, write_report
from smartscope.report_data import (
    dose_per_position_mj,
    followed_cell,
    latencies_ms,
    load_run,
)
from smartscope.run import run_protocol

SECTION_IDS = [s.id for s in SECTIONS]
_SECTION = re.compile(r'<section id="([a-z-]+)">(.*?)</section>', re.S)
_IMG = re.compile(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def _sections(page: str) -> dict[str, str]:
    return dict(_SECTION.findall(page))


def _pngs(section: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(b))) for b in _IMG.findall(section)]


def _has_plot(section: str) -> bool:
    return bool(_IMG.search(section))


def _sentence(section: str) -> str:
    m = re.search(r'<p class="nodata">(.*?)</p>', section, re.S)
    return m.group(1) if m else ""


def _check_page(page: str) -> dict[str, str]:
    """Every section, each with a decodable image or a no-data sentence,
    nothing failed, nothing loaded from elsewhere; returns the sections."""
    found = _sections(page)
    assert list(found) == [*SECTION_IDS, "summary"]
    for sid in SECTION_IDS:
        body = found[sid]
        assert "could not be drawn" not in body, body
        images = _pngs(body)
        if images:
            assert all(im.width > 100 and im.height > 100 for im in images), sid
            assert "<figcaption>" in body
        else:
            assert len(_sentence(body)) > 20, f"{sid}: neither an image nor a sentence"
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "<link" not in page
    assert "<script" not in page
    assert all(
        src.startswith(("data:image/png;base64,", "#"))
        for src in re.findall(r'(?:src|href)="([^"]*)"', page)
    )
    return found


# ------------------------------------------------------------------ runs


def _demo_protocol(tmp: Path, name: str, loops: int, **changes: Any) -> Path:
    """protocols/demo.yaml with top-level ``changes`` and ``loops`` time points."""
    data = yaml.safe_load((data_dir("protocols") / "demo.yaml").read_text())
    data["sequence"]["time_plan"]["loops"] = loops
    data.update(changes)
    p = tmp / f"{name}.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """The demo protocol, 20 time points, through ``smartscope run``."""
    work = tmp_path_factory.mktemp("cli")
    out = work / "run"
    proc = run_smartscope(
        "run", str(_demo_protocol(work, "demo", 20)), "--out", str(out), cwd=work
    )
    return proc, out


@pytest.fixture(scope="module")
def cli_run_no_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """Analysis off, no truth, ``--no-report``."""
    work = tmp_path_factory.mktemp("cli-off")
    out = work / "run"
    protocol = _demo_protocol(
        work,
        "off",
        4,
        analysis={"enabled": False},
        reactions=[],
        save={"truth": False},
    )
    proc = run_smartscope(
        "run", str(protocol), "--out", str(out), "--no-report", cwd=work
    )
    return proc, out


class _Vary(Reaction):
    """Changes the interval, the power and (beyond the limits) the exposure
    once each, on position a."""

    name = "vary"

    def react(self, result: FrameResult, run: RunView) -> Sequence[Action]:
        f = result.frame
        if f.position != "a":
            return ()
        t = f.event_index.get("t", 0)
        kw: dict[str, Any] = {
            "source": self.name,
            "frame_index": f.frame_index,
            "t_frame": f.t_frame,
        }
        if t == 1:
            return (SetInterval(interval_s=10, **kw),)
        if t == 2:
            return (SetLaserPower(power_mw=8, **kw),)
        if t == 3:
            return (SetExposure(exposure_ms=5000, **kw),)
        return ()


@pytest.fixture(scope="module")
def rich_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rich") / "run"
    proto = Protocol.model_validate(
        {
            "name": "rich",
            "seed": 3,
            "time_mode": "virtual",
            "objective": "20x",
            "laser_power_mw": 5,
            "sequence": {
                "channels": [{"config": "DAPI", "exposure": 30}],
                "stage_positions": [
                    {"name": "a", "x": 0, "y": 0},
                    {"name": "b", "x": 400, "y": -200},
                    {"name": "c", "x": -400, "y": 300},
                    {"name": "d", "x": 300, "y": 400},
                ],
                "time_plan": {"interval": 30, "loops": 5},
            },
            "analysis": {
                "segmenter": "classical",
                "denoise": "denoise-n2v",
                "queue_size": 1,
            },
            "reactions": [{"type": "center_on", "position": "a"}],
            "limits": {"max_laser_mw": 10, "exposure_range_ms": [1, 500]},
            "save": {"labels": True, "denoised": True},
        }
    )
    core = load_core()
    try:
        Controller(core, proto, out_dir=out, reactions=[_Vary()]).run()
    finally:
        release_core(core)
    write_report(out)
    return out


@pytest.fixture(scope="module")
def killed_run(rich_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rich run as SIGKILL leaves it (no summary, no run_finished, a
    half-written last line), then ``smartscope recover``."""
    run = tmp_path_factory.mktemp("killed") / "run"
    shutil.copytree(rich_run, run)
    (run / "report.html").unlink()
    (run / "summary.json").unlink()
    lines = (run / "events.jsonl").read_bytes().split(b"\n")[:-2]  # no run_finished
    body = b"".join(ln + b"\n" for ln in lines[:-1]) + lines[-1][:40]
    (run / "events.jsonl").write_bytes(body)
    assert recover_run(run).summary["status"] == "killed"
    return run


@pytest.fixture(scope="module")
def empty_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run whose camera never delivers a frame: stopped with 0 frames."""
    out = tmp_path_factory.mktemp("empty") / "run"
    proto = Protocol.model_validate(
        {
            "name": "empty",
            "seed": 1,
            "time_mode": "virtual",
            "sequence": {
                "channels": [{"config": "DAPI", "exposure": 10}],
                "time_plan": {"interval": 1, "loops": 3},
            },
            "on_error": {"camera": {"retries": 0, "then": "stop"}},
        }
    )
    core = load_core()
    try:
        from smartscope.sim import get_simulator

        get_simulator(core).inject("camera_timeout", count=100, timeout_s=0.01)
        summary = Controller(core, proto, out_dir=out).run()
    finally:
        release_core(core)
    assert summary["frames_acquired"] == 0
    return out


# ------------------------------------------------------------------ tests


def test_smartscope_run_writes_the_report(cli_run: tuple[Any, Path]) -> None:
    proc, out = cli_run
    assert proc.returncode == 0, proc.stderr
    assert "report.html not written" not in proc.stderr
    assert str((out / "report.html").resolve()) in proc.stdout.replace("\n", "")
    page = (out / "report.html").read_text()
    found = _check_page(page)
    summary = json.loads((out / "summary.json").read_text())
    # status and finish reason at the top, before any figure
    head = page[: page.index("<section")]
    assert summary["status"] in head
    assert summary["finish_reason"] in head
    for sid in (
        "stage-path",
        "settings",
        "latency",
        "analysis-time",
        "dose",
        "contact-sheet",
    ):
        assert _has_plot(found[sid]), sid
    # the stages' medians, as the summary has them
    stages = summary["analysis_stages_ms"]
    for k in ("denoise", "segment"):
        assert f"{k} {stages[k]['p50']:.1f} ms" in found["analysis-time"], k
    # the demo takes a frame a minute: far above the analysis' time
    assert "a frame every 60000 ms, is far above" in found["analysis-time"]
    # the demo follows one nucleus: the report names it, and it is the truth's
    assert "Followed: track" in found["stage-path"]
    assert "it was the simulator&#x27;s cell" in found["stage-path"]
    # the demo saves its denoiser's output: a raw and a denoised row
    assert "denoiser&#x27;s output" in found["contact-sheet"]


def test_the_followed_cell_is_the_one_the_stage_kept_in_view(
    cli_run: tuple[Any, Path],
) -> None:
    data = load_run(cli_run[1])
    followed = followed_cell(data)
    assert followed is not None
    assert followed.cell_id is not None
    assert followed.votes >= 0.8 * followed.moves
    truth = data.truth
    assert truth is not None
    near = 0
    frames = data.acquisition_frames()
    for f in frames:
        rows = (truth.frame == f.index) & (truth.cell_id == followed.cell_id)
        if rows.any():
            d = np.hypot(truth.x_um[rows] - f.x_um, truth.y_um[rows] - f.y_um)
            near += bool(d.min() < 30.0)  # within 30 µm of the field's centre
    assert near >= 0.8 * len(frames)


def test_dose_and_latency_agree_with_the_summary(cli_run: tuple[Any, Path]) -> None:
    data = load_run(cli_run[1])
    summary = data.summary
    assert summary is not None
    total = sum(dose_per_position_mj(data.frames).values())
    assert total == pytest.approx(summary["light_dose_mj"], rel=1e-6)
    found = _sections((cli_run[1] / "report.html").read_text())
    assert f"{summary['light_dose_mj']:.2f} mJ in all" in found["dose"]
    lat = latencies_ms(data)
    assert lat["frame → result"].size == summary["latency_frame_to_result_ms"]["n"]
    assert lat["frame → action"].size == summary["latency_frame_to_action_ms"]["n"]
    assert np.all(lat["result → action"] >= 0)


def test_no_report_option_and_a_report_without_analysis_or_truth(
    cli_run_no_report: tuple[Any, Path],
) -> None:
    proc, out = cli_run_no_report
    assert proc.returncode == 0, proc.stderr
    assert not (out / "report.html").exists()
    assert not (out / "truth").exists()
    path = write_report(out)
    found = _check_page(path.read_text())
    assert "No frame was analysed" in _sentence(found["latency"])
    assert "No frame was analysed" in _sentence(found["analysis-time"])
    assert "analysis was off" in _sentence(found["skipped"])
    assert "No ground truth" in found["stage-path"]
    assert "did not follow" in found["stage-path"]
    assert _has_plot(found["contact-sheet"])  # raw frames, without outlines
    assert "No label images" in found["contact-sheet"]


def test_report_of_a_run_with_denoiser_skips_and_actions(rich_run: Path) -> None:
    page = (rich_run / "report.html").read_text()
    found = _check_page(page)
    summary = json.loads((rich_run / "summary.json").read_text())
    assert "denoiser&#x27;s output" in found["contact-sheet"]
    (sheet,) = _pngs(found["contact-sheet"])
    assert sheet.height >= 2 * 256  # a raw row and a denoised row of 256 px tiles
    assert "Markers: the actions" in found["settings"]
    assert "analysed frames" in found["contact-sheet"]
    skipped = summary["frames_skipped_analysis"] + summary["frames_abandoned_analysis"]
    assert _has_plot(found["skipped"]) == (skipped > 0)
    if skipped:
        assert "queue full" in found["skipped"] or "abandoned" in found["skipped"]


def test_killed_then_recovered_run_reports(killed_run: Path) -> None:
    page = write_report(killed_run).read_text()
    found = _check_page(page)
    head = page[: page.index("<section")]
    assert ">killed<" in head
    assert "smartscope recover" in head
    assert _has_plot(found["stage-path"])
    assert _has_plot(found["contact-sheet"])


def test_unrecovered_killed_run_reports(killed_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(killed_run, run)
    (run / "summary.json").unlink()
    page = build_report(run)
    found = _check_page(page)
    assert "no summary.json" in page[: page.index("<section")]
    assert "no readable summary.json" in _sentence(found["summary"])


def test_zero_frame_run_reports(empty_run: Path) -> None:
    page = write_report(empty_run).read_text()
    found = _check_page(page)
    for sid in SECTION_IDS:
        assert not _has_plot(found[sid]), sid
        assert "No frame was acquired" in _sentence(found[sid]), sid
    assert "<table>" in found["summary"]


def test_a_report_that_fails_leaves_the_run_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import smartscope.report

    def broken(run_dir: Path) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(smartscope.report, "write_report", broken)
    out, summary = run_protocol(
        _demo_protocol(tmp_path, "tiny", 3), out_dir=tmp_path / "run", progress=False
    )
    assert summary["status"] == "completed"
    assert summary["exit_code"] == 0
    assert json.loads((out / "summary.json").read_text()) == summary
    assert not (out / "report.html").exists()
    err = capsys.readouterr().err
    assert "report.html not written (OSError: " in err
    assert f"smartscope report {out}" in err


def test_protocol_can_turn_the_report_off(tmp_path: Path) -> None:
    protocol = _demo_protocol(
        tmp_path, "quiet", 2, save={"labels": True, "report": False}
    )
    out, summary = run_protocol(protocol, out_dir=tmp_path / "run", progress=False)
    assert summary["frames_acquired"] == 2
    assert not (out / "report.html").exists()


def test_a_folder_that_is_not_a_run_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="not a run folder"):
        write_report(tmp_path)
    proc = run_smartscope("report", str(tmp_path), cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "not a run folder" in proc.stderr


# ------------------------------------------------------------------ Chromium

_CHROMIUM_NAMES = (
    "chromium-headless-shell",
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
    "headless_shell",
)

_CHECK_JS = """
<script>
window.addEventListener("load", () => {
  const imgs = [...document.images];
  document.body.setAttribute("data-check", JSON.stringify({
    images: imgs.length,
    broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length,
    sections: [...document.querySelectorAll("section")].map(s => s.id),
  }));
});
</script>
"""


def _chromium() -> str | None:
    found = os.environ.get("SMARTSCOPE_CHROMIUM")
    if found:
        return found
    for name in _CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def test_chromium_renders_every_image(
    cli_run: tuple[Any, Path], tmp_path: Path
) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip(
            "no Chromium binary on PATH (chromium-headless-shell, chromium, "
            "google-chrome; or set SMARTSCOPE_CHROMIUM): the in-browser check "
            "of report.html is skipped"
        )
    page = (cli_run[1] / "report.html").read_text()
    # the page itself has no script: the check is added to a copy
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", _CHECK_JS + "</body>"))
    args = [browser, "--headless", "--disable-gpu", "--virtual-time-budget=5000"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium refuses to run as root otherwise
    proc = subprocess.run(
        [*args, "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = re.search(r"data-check=\"([^\"]*)\"", proc.stdout)
    assert m, proc.stdout[:500]
    check = json.loads(m.group(1).replace("&quot;", '"'))
    assert check["sections"] == [*SECTION_IDS, "summary"]
    assert check["images"] == len(_IMG.findall(page)) >= 5
    assert check["broken"] == 0
