"""``smartscope sweep``: seeded simulated runs in parallel on a local Ray.

One Ray (2 CPUs) serves the whole module. The runs are short (6 frames,
virtual time, classical segmentation); each row of the table is checked
against its run's own ``summary.json`` and ``smartscope score RUN --json``.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

ray = pytest.importorskip(
    "ray", reason="Ray is not installed (pip install 'smartscope[ray]')"
)

from smartscope import cli  # noqa: E402
from smartscope.protocol import load_protocol  # noqa: E402
from smartscope.sweep_table import (  # noqa: E402
    DEFAULT_OUTCOMES,
    SweepRow,
    choose_outcome,
    write_plot,
)

runner = CliRunner()

PROTOCOL: dict[str, Any] = {
    "version": 1,
    "name": "sweep-small",
    "seed": 1,
    "time_mode": "virtual",
    "objective": "20x",
    "laser_power_mw": 5,
    "sequence": {
        "channels": [{"config": "DAPI", "exposure": 30}],
        "stage_positions": [{"name": "a", "x": 0, "y": 0}],
        "time_plan": {"interval": 30, "loops": 6},
    },
    "analysis": {"segmenter": "classical", "diameter_um": 12},
    "limits": {
        "xy_box_um": [-300, 300, -300, 300],
        "max_xy_step_um": 50,
        "max_laser_mw": 8,
    },
    "save": {"labels": True, "report": False},
}


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    """One local Ray for the module; the sweeps use it as it is."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def protocol_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("protocol") / "small.yaml"
    path.write_text(yaml.safe_dump(PROTOCOL, sort_keys=False))
    return path


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _sweep(*args: str | Path) -> Any:
    return runner.invoke(cli.app, ["sweep", *map(str, args)])


def _flat(score: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """The score's numbers by dotted key, and its null keys (written here
    independently of smartscope.sweep_table)."""
    values: dict[str, Any] = {}
    nulls: set[str] = set()

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif node is None:
            nulls.add(prefix)
        elif isinstance(node, bool | int | float):
            values[prefix] = node

    walk("", {k: v for k, v in score.items() if k != "schema_version"})
    return values, nulls


def _rows(out: Path) -> list[dict[str, Any]]:
    return json.loads((out / "sweep.json").read_text())["runs"]


def _check_rows_against_runs(out: Path, expected: set[tuple[Any, ...]]) -> None:
    """One row per expected (params..., seed); each row's numbers are its run's."""
    rows = _rows(out)
    assert len(rows) == len(expected)
    assert {(*r["params"].values(), r["seed"]) for r in rows} == expected
    for row in rows:
        run_dir = out / row["run_dir"]
        summary = json.loads((run_dir / "summary.json").read_text())
        assert row["status"] == summary["status"] == "completed"
        assert row["error"] is None
        assert row["exit_code"] == 0
        assert row["frames"] == summary["frames_acquired"]
        assert row["light_dose_mj"] == summary["light_dose_mj"]
        # the run ran the protocol the row says
        ran = load_protocol(run_dir / "protocol.yaml")
        assert ran.seed == row["seed"]
        for key, value in row["params"].items():
            node: Any = ran
            for part in key.split("."):
                node = getattr(node, part)
            if isinstance(node, timedelta):  # useq holds intervals so
                node = node.total_seconds()
            assert node == value, key
        # the row's metrics are the run's own `smartscope score --json`
        scored = runner.invoke(cli.app, ["score", str(run_dir), "--json"])
        assert scored.exit_code == 0, scored.output
        values, nulls = _flat(json.loads(scored.stdout))
        assert row["metrics"] == values
        assert set(row["metrics_na"]) == nulls
        assert row["metrics"]["light.total_mj"] == summary["light_dose_mj"]
        assert isinstance(row["metrics"]["segmentation.ap_50"], float)
    # sweep.csv holds the same table
    with (out / "sweep.csv").open(newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [t["run"] for t in table] == [r["run"] for r in rows]
    for t, r in zip(table, rows, strict=True):
        assert int(t["seed"]) == r["seed"]
        assert float(t["light_dose_mj"]) == pytest.approx(r["light_dose_mj"])
        for key, value in r["metrics"].items():
            assert float(t[key]) == pytest.approx(float(value)), key
    with Image.open(out / "sweep.png") as img:
        assert img.size[0] > 400
        assert img.size[1] > 300


# ------------------------------------------------------------- four runs


@pytest.fixture(scope="module")
def four_runs(protocol_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("sweep4")
    grid = _write(tmp / "grid.yaml", "seeds: [1, 2]\nvary:\n  laser_power_mw: [2, 5]\n")
    out = tmp / "out"
    result = _sweep(protocol_file, "--grid", grid, "--out", out)
    assert result.exit_code == 0, result.output
    assert "4/4 runs ok" in result.stdout
    return out


def test_four_run_sweep_has_one_row_per_run_matching_its_score(
    four_runs: Path,
) -> None:
    _check_rows_against_runs(four_runs, {(p, s) for p in (2, 5) for s in (1, 2)})


def test_light_dose_follows_the_laser_power(four_runs: Path) -> None:
    # 6 frames x 30 ms x P mW: 0.36 mJ at 2 mW, 0.9 mJ at 5 mW
    for row in _rows(four_runs):
        expected = 6 * 0.030 * row["params"]["laser_power_mw"]
        assert row["light_dose_mj"] == pytest.approx(expected, rel=1e-6)


def test_plot_shows_the_default_outcome(four_runs: Path) -> None:
    doc = json.loads((four_runs / "sweep.json").read_text())
    have = {k for r in doc["runs"] for k, v in r["metrics"].items()}
    assert doc["outcome"] == next(k for k in DEFAULT_OUTCOMES if k in have)
    assert doc["runs_total"] == doc["runs_ok"] == 4


def test_outcome_is_any_metric_and_a_wrong_one_names_the_keys(
    four_runs: Path, tmp_path: Path
) -> None:
    rows = [SweepRow(**r) for r in _rows(four_runs)]
    assert (
        choose_outcome(rows, "light.per_cell_j_cm2.max") == "light.per_cell_j_cm2.max"
    )
    # a metric that is n/a in every run is still a metric: an empty plot
    na = rows[0].metrics_na[0]
    assert choose_outcome(rows, na) == na
    with Image.open(
        write_plot(rows, tmp_path / "na.png", outcome=na, title="t")
    ) as img:
        assert img.size[0] > 400
    with pytest.raises(KeyError, match=r"segmentation\.ap_50"):
        choose_outcome(rows, "segmentation.ap_05")


def test_same_parameters_and_seed_score_the_same(
    four_runs: Path, protocol_file: Path, tmp_path: Path
) -> None:
    grid = _write(tmp_path / "grid.yaml", "seeds: [2]\nvary:\n  laser_power_mw: [5]\n")
    out = tmp_path / "again"
    result = _sweep(protocol_file, "--grid", grid, "--out", out)
    assert result.exit_code == 0, result.output
    (again,) = _rows(out)
    first = {(r["params"]["laser_power_mw"], r["seed"]): r for r in _rows(four_runs)}
    assert again["metrics"] == first[(5, 2)]["metrics"]
    assert again["light_dose_mj"] == first[(5, 2)]["light_dose_mj"]
    # and the seed matters: another seed is another sample
    assert first[(5, 1)]["metrics"] != first[(5, 2)]["metrics"]


def test_a_failed_run_is_a_row_not_a_crash(protocol_file: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-such.cfg"
    grid = _write(
        tmp_path / "grid.yaml", f"seeds: [1]\nvary:\n  config: [null, {missing}]\n"
    )
    out = tmp_path / "out"
    result = _sweep(protocol_file, "--grid", grid, "--out", out)
    assert result.exit_code == 1, result.output
    ok, failed = _rows(out)
    assert ok["status"] == "completed"
    assert ok["metrics"]
    assert failed["status"] == "failed"
    assert str(missing) in failed["error"]
    assert "not found" in failed["error"]
    assert failed["metrics"] == {}
    assert "c1-seed1 failed" in result.stdout


# ------------------------------------------------------------- bad grids


@pytest.mark.parametrize(
    ("grid", "line", "words"),
    [
        (
            "seeds: [1]\nvary:\n  lasr_power_mw: [2, 5]\n",
            3,
            [
                "'lasr_power_mw'",
                "not a protocol field",
                "did you mean 'laser_power_mw'",
            ],
        ),
        (
            "seeds: [1]\nvary:\n  laser_power_mw:\n    - 2\n    - 50\n",
            5,
            ["'laser_power_mw'", "value 50", "exceeds limits.max_laser_mw 8"],
        ),
        (
            "seeds: [1]\nvary:\n  sequence.time_plan.intervl: [30]\n",
            3,
            ["'sequence.time_plan.intervl'", "did you mean 'interval'"],
        ),
        (
            "seeds: [1]\nvary:\n  sequence.channels.0.exposure: [30, -1]\n",
            3,
            ["'sequence.channels.0.exposure'", "value -1"],
        ),
        (
            "seeds: [1]\nvary:\n  laser_power_mw: [2, x]\n",
            3,
            ["'laser_power_mw'", 'value "x"', "valid number"],
        ),
        ("seeds: [1, -3]\n", 1, ["-3", "whole number >= 0"]),
        ("seeds: [1]\nvary:\n  laser_power_mw: 5\n", 3, ["non-empty list"]),
        ("seeds: [1]\nvary:\n  seed: [1, 2]\n", 3, ["seeds:"]),
        ("seeds: [1]\nrepeat: 3\n", 2, ["unknown key"]),
        ("seeds: !!python/object/apply:os.system [ls]\n", 1, ["not allowed"]),
    ],
)
def test_a_bad_grid_is_refused_before_any_run(
    protocol_file: Path, tmp_path: Path, grid: str, line: int, words: list[str]
) -> None:
    path = _write(tmp_path / "bad-grid.yaml", grid)
    out = tmp_path / "out"
    result = _sweep(protocol_file, "--grid", path, "--out", out)
    assert result.exit_code == 2, result.output
    message = result.stderr
    assert f"bad-grid.yaml, line {line}:" in message
    for word in words:
        assert word in message
    assert not out.exists()  # no sweep folder, no run folder


def test_a_bad_protocol_is_refused_before_any_run(tmp_path: Path) -> None:
    protocol = _write(tmp_path / "p.yaml", "name: x\nsequence: {loops: 3}\n")
    grid = _write(tmp_path / "grid.yaml", "seeds: [1]\n")
    out = tmp_path / "out"
    result = _sweep(protocol, "--grid", grid, "--out", out)
    assert result.exit_code == 2, result.output
    assert "p.yaml" in result.stderr
    assert not out.exists()


def test_a_used_sweep_folder_is_refused(
    protocol_file: Path, four_runs: Path, tmp_path: Path
) -> None:
    grid = _write(tmp_path / "grid.yaml", "seeds: [1]\n")
    result = _sweep(protocol_file, "--grid", grid, "--out", four_runs)
    assert result.exit_code == 2, result.output
    assert "not empty" in result.stderr


# --------------------------------------------------------------- 16 runs


@pytest.mark.slow
def test_sixteen_run_sweep(protocol_file: Path, tmp_path: Path) -> None:
    grid = _write(
        tmp_path / "grid.yaml",
        "seeds: [1, 2]\n"
        "vary:\n"
        "  laser_power_mw: [2, 5]\n"
        "  sequence.time_plan.interval: [30, 60]\n"
        "  description: [first, second]\n",
    )
    out = tmp_path / "out"
    result = _sweep(protocol_file, "--grid", grid, "--out", out, "--max-parallel", "2")
    assert result.exit_code == 0, result.output
    assert "16/16 runs ok" in result.stdout
    expected = set(itertools.product((2, 5), (30, 60), ("first", "second"), (1, 2)))
    _check_rows_against_runs(out, expected)
    # runs that differ only in their description are the same run
    by_key: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in _rows(out):
        p = r["params"]
        key = (p["laser_power_mw"], p["sequence.time_plan.interval"], r["seed"])
        by_key.setdefault(key, []).append(r)
    assert len(by_key) == 8
    for a, b in by_key.values():
        assert a["metrics"] == b["metrics"]
        assert a["light_dose_mj"] == b["light_dose_mj"]
