"""``benchmarks/gpu_check.sh --rehearse``: the GPU session's script, run on
the CPU at small sizes, so that a session lent a GPU (15 minutes of device
time, all tries together) does not spend it on a broken script."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _rehearse(out: Path, *parts: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(out.parent)}
    return subprocess.run(
        [
            "bash",
            str(ROOT / "benchmarks" / "gpu_check.sh"),
            str(out),
            *parts,
            "--rehearse",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def _packed(out: Path) -> dict[str, bytes]:
    with tarfile.open(out / "gpu-check.tar.gz") as tar:
        return {
            Path(m.name).name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


@pytest.fixture(scope="module")
def paced(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The rehearsal of parts ``paced``, ``graphs`` (the same runs with
    the networks' CUDA graphs off) and ``profile``, after a part that does
    not exist, once for the tests that read it."""
    out = tmp_path_factory.mktemp("gpu-check") / "out"
    return out, _rehearse(out, "nonsense", "paced", "graphs", "profile")


def test_the_paced_part_packs_its_results_where_the_device_tool_returns_them(
    paced: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out, done = paced
    assert "failed: nonsense" in done.stdout + done.stderr, done.stderr[-3000:]
    assert "== paced took" in done.stdout
    assert "== graphs took" in done.stdout
    assert "== profile took" in done.stdout
    # at most 8 files come back from the device tool's $OUT: two here
    assert sorted(p.name for p in out.iterdir()) == [
        "gpu-check.log",
        "gpu-check.tar.gz",
    ]
    files = _packed(out)
    assert {
        "torch.txt",
        "paced-cpu-graphs-on.jsonl",
        "profile-cpu.json",
        "profile-cpu.txt",
        "trace-256-cpu.json.gz",
    } <= set(files)
    prof = json.loads(files["profile-cpu.json"])
    (size,) = prof["sizes"]
    assert size["size_px"] == 256
    assert size["frames"] == 3
    assert size["wall_ms_per_frame"] > 0
    assert size["top_host"]  # the torch operators of the analysis
    for graphs in ("on", "off"):
        lines = files[f"paced-cpu-graphs-{graphs}.jsonl"].decode().splitlines()
        # graphs on: the run that keeps none, and the one that stores both
        # images as a run does; graphs off: the first only
        assert len(lines) == (2 if graphs == "on" else 1)
        runs = [json.loads(line) for line in lines]
        for r in runs:
            assert r["device"] == "cpu"
            assert r["submitted"] == r["analysed"] + r["skipped"] == 10
            assert r["settings"]["requested"]["cuda_graphs"] is (graphs == "on")
            # the CPU records none
            assert {m["used"] for m in r["cuda_graphs"].values()} == {False}
        assert runs[0]["settings"]["images_kept"] == []
        assert runs[0]["settings"]["store"] is False
    stored = json.loads(files["paced-cpu-graphs-on.jsonl"].decode().splitlines()[1])
    assert stored["settings"]["store"] is True
    assert stored["settings"]["images_kept"] == ["denoised", "labels"]
    assert stored["raw_write_ms"]["n"] == 10
    assert stored["storage_ms"]["n"] == stored["analysed"]


def _gpu_report():
    spec = importlib.util.spec_from_file_location(
        "gpu_report", ROOT / "benchmarks" / "gpu_report.py"
    )
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_the_report_reads_the_pack_and_judges_the_targets(
    paced: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out, done = paced
    assert "== profile took" in done.stdout
    gpu_report = _gpu_report()
    text = gpu_report.report(gpu_report.read_results(out / "gpu-check.tar.gz"))
    # the rehearsal's paced runs (the CPU replays no graph)
    assert (
        "| 256² | denoise not used; segment not used | none (left on the card) | 5 | "
        in text
    )
    assert "| 256² | off | none (left on the card) | 5 | " in text
    # the run that stores its frames and results as a run does
    assert "| denoised, labels, all stored | 5 | " in text
    assert "the frame's write" in text
    assert "storing a result" in text
    assert "### Where the time goes (part `profile`)" in text
    assert "| 256² | " in text.split("### Where the time goes")[1]
    assert "part `sustained` did not run" in text
    assert "part `bench` did not run" in text

    def run(size: int, rate: float, skipped: int, p99: float) -> dict:
        return {
            "settings": {"size_px": size, "rate_hz": rate},
            "skipped": skipped,
            "frame_to_result_ms": {"n": 1000, "p99": p99},
        }

    graphs = gpu_report._graphs
    failed = {"segment": {"used": False, "failed": "RuntimeError: capture"}}
    assert graphs({"settings": {}, "cuda_graphs": failed}) == (
        "segment failed: RuntimeError: capture"
    )
    assert graphs({"settings": {"requested": {"cuda_graphs": False}}}) == "off"
    used = {"denoise": {"used": True}, "segment": {"used": True}}
    assert graphs({"settings": {}, "cuda_graphs": used}) == "on"

    verdict = gpu_report.target_verdict
    assert verdict(run(2048, 100, 0, 19.9)).startswith("met")
    assert verdict(run(2048, 100, 1, 10.0)).startswith("NOT met")  # one skipped
    assert verdict(run(2048, 50, 0, 10.0)).startswith("NOT met")  # too slow a pace
    assert verdict(run(2048, 100, 0, 20.0)).startswith("NOT met")
    assert verdict(run(512, 100, 0, 4.9)).startswith("met")
    assert verdict(run(512, 100, 0, 5.1)).startswith("NOT met")
    assert verdict(run(256, 5, 0, 60.0)) == ""  # no target at that size


def test_an_unknown_part_fails_and_the_others_still_run(
    paced: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out, done = paced
    assert done.returncode == 1
    assert "unknown part: nonsense" in done.stdout + done.stderr
    assert "failed: nonsense" in done.stdout + done.stderr
    assert "failed: nonsense paced" not in done.stdout + done.stderr
    assert "paced-cpu-graphs-on.jsonl" in _packed(out)


@pytest.mark.slow
def test_every_part_rehearses_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = _rehearse(out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    files = _packed(out)
    for name in (
        "pytest-gpu.txt",
        "paced-cpu-graphs-on.jsonl",
        "paced-cpu-graphs-off.jsonl",
        "profile-cpu.json",
        "device-labels-cpu.json",
        "device-ops-cpu-compile-on.json",
        "device-ops-cpu-compile-off.json",
        "host-tables-cpu.json",
        "bench-cpu.json",
        "scaling-5-cpu.json",
        "stages-2048-cpu.json",
        "result-store.json",
        "result-store-denoised.json",
    ):
        assert name in files, sorted(files)
    bench = json.loads(files["bench-cpu.json"])
    assert {"scaling", "positions"} <= set(bench)
    assert "controller" not in bench
    gpu_report = _gpu_report()
    text = gpu_report.report(gpu_report.read_results(out / "gpu-check.tar.gz"))
    store = text.split("### Storing an analysed frame (part `store`)")[1]
    store = store.split("###")[0]
    assert "| 256² (" in store
    assert "| rows + labels |" in store
    assert "| rows + labels + denoised |" in store
