"""The repository keeps its promises: CI runs exactly the README's test command."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index("```bash")
    block = lines[start + 1 : lines.index("```", start + 1)]
    return [line.split("#")[0].strip() for line in block]


def test_readme_starts_with_the_two_commands() -> None:
    demo, tests = _readme_commands()[:2]
    assert "smartscope demo" in demo
    assert "pytest" in tests
    assert demo.startswith("pip install torch==2.13.0")
    assert tests.startswith("pip install torch==2.13.0")


def test_ci_runs_exactly_the_readme_test_command() -> None:
    tests = _readme_commands()[1]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert tests in ci


def test_pyproject_keeps_a_torch_range() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert '"torch>=2.4"' in text
