"""Protocol files: validated data, refused with file, line and field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from smartscope._data import data_dir
from smartscope.protocol import ProtocolError, load_protocol

GOOD = """\
version: 1
name: test
sequence:
  channels:
    - config: DAPI
      exposure: 20
  stage_positions:
    - {name: a, x: 0, y: 0}
  time_plan: {interval: 10, loops: 3}
reactions:
  - type: center_on
    max_step_um: 40
limits:
  xy_box_um: [-500, 500, -500, 500]
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "p.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def test_shipped_protocols_are_valid() -> None:
    files = sorted(data_dir("protocols").glob("*.yaml"))
    assert files, "no shipped protocols"
    for f in files:
        proto = load_protocol(f)
        assert proto.name
        for r in proto.build_reactions():
            assert r.name


def test_good_protocol_loads(tmp_path: Path) -> None:
    proto = load_protocol(_write(tmp_path, GOOD))
    assert proto.sequence.time_plan.num_timepoints() == 3
    assert proto.reactions[0].params == {"max_step_um": 40}


@pytest.mark.parametrize(
    ("old", "new", "line", "field"),
    [
        # wrong type
        ("    max_step_um: 40", "    max_step_um: lots", 12, "max_step_um"),
        # unknown reaction
        ("  - type: center_on", "  - type: teleport", 11, "reactions.0"),
        # negative where positive is required
        ("    max_step_um: 40", "    max_step_um: -5", 12, "max_step_um"),
        # unknown field (typo)
        ("limits:", "limitz:", 13, "limitz"),
        # limits that contradict
        (
            "  xy_box_um: [-500, 500, -500, 500]",
            "  xy_box_um: [500, -500, -500, 500]",
            14,
            "limits",
        ),
        # missing field
        ("name: test", "", None, "name"),
    ],
)
def test_malformed_protocols_name_file_line_and_field(
    tmp_path: Path, old: str, new: str, line: int | None, field: str
) -> None:
    assert old in GOOD
    path = _write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(ProtocolError) as exc:
        load_protocol(path)
    msg = str(exc.value)
    assert str(path) in msg
    assert field in msg
    if line is not None:
        assert f"line {line}" in msg, msg


def test_positions_outside_limits_are_refused(tmp_path: Path) -> None:
    path = _write(
        tmp_path, GOOD.replace("{name: a, x: 0, y: 0}", "{name: a, x: 900, y: 0}")
    )
    with pytest.raises(ProtocolError, match="outside xy_box_um"):
        load_protocol(path)


def test_yaml_is_data_not_code(tmp_path: Path) -> None:
    path = _write(
        tmp_path, GOOD + "extra: !!python/object/apply:os.system ['echo pwned']\n"
    )
    with pytest.raises(ProtocolError, match="not valid YAML"):
        load_protocol(path)


def test_bad_yaml_syntax_names_the_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        GOOD.replace(
            "  time_plan: {interval: 10, loops: 3}",
            "  time_plan: {interval: 10, loops: 3",
        ),
    )
    with pytest.raises(ProtocolError, match=r"line \d+"):
        load_protocol(path)


def test_missing_file() -> None:
    with pytest.raises(ProtocolError, match="not found"):
        load_protocol("/nonexistent/protocol.yaml")
