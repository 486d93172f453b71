"""``benchmarks/gpu_check.sh --rehearse``: the GPU session's script, run on
the CPU at small sizes, so that a session lent a GPU (15 minutes of device
time, all tries together) does not spend it on a broken script."""

from __future__ import annotations

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


def test_the_paced_part_packs_its_results_where_the_device_tool_returns_them(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    done = _rehearse(out, "paced")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "== paced took" in done.stdout
    # at most 8 files come back from the device tool's $OUT: two here
    assert sorted(p.name for p in out.iterdir()) == [
        "gpu-check.log",
        "gpu-check.tar.gz",
    ]
    files = _packed(out)
    assert {"torch.txt", "paced-cpu.jsonl"} <= set(files)
    (line,) = files["paced-cpu.jsonl"].decode().splitlines()
    r = json.loads(line)
    assert r["device"] == "cpu"
    assert r["submitted"] == r["analysed"] + r["skipped"] == 10


def test_an_unknown_part_fails_and_the_others_still_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = _rehearse(out, "nonsense", "paced")
    assert done.returncode == 1
    assert "unknown part: nonsense" in done.stdout + done.stderr
    assert "failed: nonsense" in done.stdout + done.stderr
    assert "paced-cpu.jsonl" in _packed(out)


@pytest.mark.slow
def test_every_part_rehearses_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = _rehearse(out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    files = _packed(out)
    for name in (
        "pytest-gpu.txt",
        "paced-cpu.jsonl",
        "device-labels-cpu.json",
        "device-ops-cpu-compile-on.json",
        "device-ops-cpu-compile-off.json",
        "bench-cpu.json",
        "scaling-5-cpu.json",
        "stages-2048-cpu.json",
    ):
        assert name in files, sorted(files)
    bench = json.loads(files["bench-cpu.json"])
    assert {"scaling", "positions"} <= set(bench)
    assert "controller" not in bench
