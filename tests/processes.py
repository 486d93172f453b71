"""``smartscope`` as a real process, and what its run folder's log says so far:
shared by the tests that start, interrupt and kill runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

#: plain output, wide enough that a path is never wrapped
ENV = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}


def start_smartscope(*args: str, cwd: Path, **kw: Any) -> subprocess.Popen:
    """``python -m smartscope.cli ARGS`` in ``cwd``, output captured as text."""
    return subprocess.Popen(
        [sys.executable, "-m", "smartscope.cli", *args],
        cwd=cwd,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def run_smartscope(*args: str, cwd: Path, timeout: float = 300) -> Any:
    """Run ``python -m smartscope.cli ARGS`` to its end; the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "smartscope.cli", *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def frames_logged(run: Path) -> int:
    """``frame`` records in ``run/events.jsonl`` so far (a line being written
    is not counted)."""
    log = run / "events.jsonl"
    if not log.exists():
        return 0
    return sum(
        line.endswith(b"\n") and b'"kind":"frame"' in line
        for line in log.read_bytes().splitlines(keepends=True)
    )
