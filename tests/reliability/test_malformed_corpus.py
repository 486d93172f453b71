"""Every bad input gets a one-line answer: the malformed-input corpus.

``tests/data/malformed/`` holds a fixed corpus of protocols, Micro-Manager
configurations and model files, each wrong in one way (written by
``generate.py`` there; ``manifest.yaml`` says what the answer must contain).
Each is run through ``smartscope run`` in-process: exit status 2, exactly one
line on stderr starting ``error:`` that names the file and the line or field,
no traceback, no run folder, under 5 s, and no YAML tag ever executed. A
hypothesis test then fuzzes protocols/demo.yaml (byte flips, deleted lines,
renamed keys, swapped values): ``load_protocol`` returns a Protocol or raises
ProtocolError, never anything else.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from smartscope._data import data_dir
from smartscope.cli import app
from smartscope.protocol import Protocol, ProtocolError, load_protocol

CORPUS = Path(__file__).resolve().parents[1] / "data" / "malformed"
MANIFEST: dict[str, dict[str, Any]] = yaml.safe_load(
    (CORPUS / "manifest.yaml").read_text()
)
#: Seconds a refusal may take (generous: the slowest load a simulated core).
BOUND_S = 5.0
#: Files a case may write if a YAML tag ever ran (the corpus's tags `touch` these).
MARKER = "PWNED*"

runner = CliRunner()
# nothing in the answer may act on a terminal (escape sequences, bidi controls)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the corpus to run in: the cases name their models, scenes and
    configurations relative to it, and nothing a case does touches the source."""
    work = tmp_path_factory.mktemp("malformed") / "corpus"
    shutil.copytree(CORPUS, work)
    return work


def test_corpus_is_large_and_every_category_is_there() -> None:
    categories = {e["category"] for e in MANIFEST.values()}
    assert len(MANIFEST) >= 150
    assert categories >= {
        "yaml",
        "type",
        "range",
        "device",
        "seq",
        "name",
        "scene",
        "model",
        "cfg",
    }
    on_disk = {p.name for p in CORPUS.iterdir() if p.suffix in (".yaml", ".cfg")} - {
        "manifest.yaml",
        "valid-base.yaml",
    }
    assert on_disk == set(MANIFEST), "manifest and corpus files differ"


def test_corpus_matches_its_generator(tmp_path: Path) -> None:
    """The corpus is what generate.py writes today (deterministic, up to date)."""
    spec = importlib.util.spec_from_file_location("generate", CORPUS / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    gen.main(tmp_path)
    fresh = {
        p.relative_to(tmp_path): p.read_bytes()
        for p in tmp_path.rglob("*")
        if p.is_file()
    }
    kept = {
        p.relative_to(CORPUS): p.read_bytes()
        for p in CORPUS.rglob("*")
        if p.is_file() and p.name != "generate.py" and "__pycache__" not in p.parts
    }
    assert sorted(fresh) == sorted(kept)
    stale = [str(k) for k in fresh if fresh[k] != kept[k]]
    assert not stale, (
        f"{stale[:5]} differ: run `python tests/data/malformed/generate.py`"
    )


def test_the_base_protocol_is_valid(corpus: Path, monkeypatch) -> None:
    """Every case is one change away from a protocol that loads."""
    monkeypatch.chdir(corpus)
    proto = load_protocol(corpus / "valid-base.yaml")
    assert proto.name == "corpus-base"


def _command(name: str, out: Path) -> list[str]:
    if name.endswith(".cfg"):
        return ["run", "valid-base.yaml", "--config", name, "--out", str(out)]
    return ["run", name, "--out", str(out)]


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_each_case_is_refused_in_one_line(
    name: str, corpus: Path, tmp_path: Path, monkeypatch
) -> None:
    entry = MANIFEST[name]
    monkeypatch.chdir(corpus)
    out = tmp_path / "run"
    t0 = time.perf_counter()
    result = runner.invoke(app, _command(name, out))
    elapsed = time.perf_counter() - t0
    err = result.stderr
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.stdout == "", result.stdout
    assert err.startswith("error: "), err
    assert err.endswith("\n"), err
    assert err.count("\n") == 1, err  # exactly one line
    assert "Traceback" not in result.output
    assert not _CONTROL.search(err[:-1]), f"control character in {err!r}"
    for expected in entry["expect"]:
        assert expected in err, f"{expected!r} not in {err!r}"
    assert entry.get("names", name) in err, err
    assert not out.exists(), "a run folder was created"
    assert not (corpus / "runs").exists(), "a default run folder was created"
    assert not list(corpus.rglob(MARKER)), "a YAML tag was executed"
    assert elapsed < BOUND_S, f"{name} took {elapsed:.1f} s"


def test_no_tag_ever_ran(corpus: Path) -> None:
    """After every case (the module's copy) and in the source corpus."""
    assert not list(corpus.rglob(MARKER))
    assert not list(CORPUS.rglob(MARKER))
    assert not Path("/tmp/PWNED").exists()


# ------------------------------------------------------------------- fuzzing

DEMO = (data_dir("protocols") / "demo.yaml").read_text()
_KEY = re.compile(r"^(\s*-?\s*)([A-Za-z_][\w]*):", re.MULTILINE)
_VALUE = re.compile(r":[ ]+([^\s#{\[][^#\n]*?)\s*$", re.MULTILINE)
# keys a renamed key may become: other fields, useq's, YAML's merge key
_KEYS = ("exposur", "interval", "loops", "duration", "step", "name", "sequence", "<<")


@st.composite
def mutated_protocols(draw: st.DrawFn) -> bytes:
    """protocols/demo.yaml with line and key mutations (deleted or duplicated
    lines, renamed keys, values swapped between keys), then byte flips; at
    least one mutation in all."""
    text = DEMO
    n_edits = draw(st.integers(0, 3))
    for _ in range(n_edits):
        kind = draw(st.sampled_from(["delete", "duplicate", "rename", "swap"]))
        lines = text.splitlines(keepends=True)
        if kind == "delete":
            del lines[draw(st.integers(0, len(lines) - 1))]
            text = "".join(lines)
        elif kind == "duplicate":
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[i])
            text = "".join(lines)
        elif kind == "rename":
            keys = list(_KEY.finditer(text))
            if not keys:
                continue
            m = keys[draw(st.integers(0, len(keys) - 1))]
            new = draw(st.sampled_from([m.group(2)[:-1], m.group(2) + "s", *_KEYS]))
            text = text[: m.start(2)] + new + text[m.end(2) :]
        else:
            values = list(_VALUE.finditer(text))
            if len(values) < 2:
                continue
            i, j = sorted(draw(st.integers(0, len(values) - 1)) for _ in range(2))
            a, b = values[i], values[j]
            if a.end() <= b.start():
                text = (
                    text[: a.start(1)]
                    + b.group(1)
                    + text[a.end(1) : b.start(1)]
                    + a.group(1)
                    + text[b.end(1) :]
                )
    data = bytearray(text.encode())
    for _ in range(draw(st.integers(0 if n_edits else 1, 4))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


def test_fuzzed_protocols_load_or_are_refused(tmp_path: Path) -> None:
    """Mutations of the demo protocol: a Protocol or a ProtocolError, fast."""
    outcomes = {"loaded": 0, "refused": 0}
    slow: list[tuple[float, bytes]] = []
    path = tmp_path / "fuzzed.yaml"

    @settings(
        max_examples=500,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=mutated_protocols())
    def load_or_refuse(data: bytes) -> None:
        path.write_bytes(data)
        t0 = time.perf_counter()
        try:
            proto = load_protocol(path)
        except ProtocolError as e:
            message = str(e)
            assert message.startswith(str(path)), message
            outcomes["refused"] += 1
        else:
            assert isinstance(proto, Protocol)
            outcomes["loaded"] += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= BOUND_S:
            slow.append((elapsed, data))

    load_or_refuse()
    assert not slow, slow[:3]
    assert outcomes["refused"] > 50, outcomes  # the mutations do break things
