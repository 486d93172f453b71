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
    marker = tmp_path / "pwned"
    path = _write(
        tmp_path,
        GOOD + f"extra: !!python/object/apply:os.system ['touch {marker}']\n",
    )
    with pytest.raises(ProtocolError, match=r"line 15: the tag .* is not allowed"):
        load_protocol(path)
    assert not marker.exists()


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


# ------------------------------------------------------------ strict loading


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        # a second value for a key no longer silently wins
        (
            "  xy_box_um: [-500, 500, -500, 500]",
            "  xy_box_um: [-500, 500, -500, 500]\n  xy_box_um: [-9e9, 9e9, -9e9, 9e9]",
            r"line 15: duplicate key 'xy_box_um' \(first at line 14, again at line 15\)",
        ),
        # control characters: named with line and column, not a ReaderError
        (
            "name: test",
            "name: te\x00st",
            r"line 2: character U\+0000 \(NUL\) at column 9",
        ),
        ("name: test", "name: \x1b[31mtest", r"line 2: character U\+001B \(ESC\)"),
        # useq ignores unknown keys; the protocol does not
        (
            "      exposure: 20",
            "      exposur: 20",
            r"line 6, field sequence.channels.0.exposur: unknown field "
            r"\(did you mean 'exposure'\?\)",
        ),
        (
            "{interval: 10, loops: 3}",
            "{interval: 10, loops: 3, duration: 60}",
            r"line 9, field sequence.time_plan: the fields interval, loops, "
            r"duration do not belong together",
        ),
        # values useq accepts but cannot mean
        (
            "{interval: 10, loops: 3}",
            "{interval: -10, loops: 3}",
            r"field sequence.time_plan.interval: must not be negative",
        ),
        (
            "{interval: 10, loops: 3}",
            "{interval: 10, loops: 3}\n  z_plan: {range: 4, step: 0}",
            r"line 10, field sequence.z_plan.step: must be greater than 0",
        ),
        # the name is a file name: no paths, no escapes
        ("name: test", "name: ../..", r"line 2, field name: must be a plain file name"),
        ("name: test", "name: /abs/path", r"field name: .*\(got '/abs/path'\)"),
        ("name: test", 'name: "\\e[31mred"', r"field name: .*\\x1b"),
    ],
)
def test_strict_loading_names_file_line_and_field(
    tmp_path: Path, old: str, new: str, match: str
) -> None:
    assert old in GOOD
    path = _write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(ProtocolError, match=match) as exc:
        load_protocol(path)
    assert str(exc.value).startswith(str(path))
    assert "\x1b" not in str(exc.value)  # nothing reaches a terminal raw


def test_alias_bomb_and_deep_nesting_are_refused_fast(tmp_path: Path) -> None:
    import time

    bomb = "name: bomb\na: &a [" + ", ".join(["lol"] * 9) + "]\n"
    for prev, cur in zip("abcdefgh", "bcdefghi", strict=True):
        bomb += f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]\n"
    cases = {
        "bomb.yaml": (bomb, "alias bomb"),
        "deep.yaml": ("[" * 20_000, "nested more than 64 deep"),
        "big.yaml": (GOOD + "#" * 1_100_000 + "\n", "the limit is 1,000,000 bytes"),
    }
    for name, (text, match) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        t0 = time.perf_counter()
        with pytest.raises(ProtocolError, match=match):
            load_protocol(path)
        assert time.perf_counter() - t0 < 5, name


def test_bom_anchors_and_merge_keys_still_load(tmp_path: Path) -> None:
    """What YAML allows and people use: a leading byte-order mark (Windows
    editors), anchors and merge keys within the limits."""
    text = GOOD.replace(
        "    - config: DAPI\n      exposure: 20",
        "    - &dapi {config: DAPI, exposure: 20}\n    - {<<: *dapi, config: GFP}",
    )
    path = tmp_path / "p.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    proto = load_protocol(path)
    assert [(c.config, c.exposure) for c in proto.sequence.channels] == [
        ("DAPI", 20),
        ("GFP", 20),
    ]


@pytest.mark.parametrize(
    ("analysis", "match"),
    [
        (
            "{segmenter: model, model: denoise-care}",
            r"line 13, field analysis.model: 'denoise-care' is a denoising model",
        ),
        (
            "{denoise: nuclei-seg}",
            r"line 13, field analysis.denoise: 'nuclei-seg' is a segmentation model",
        ),
        ("{segmenter: model, model: no-such-model}", r"no model named"),
    ],
)
def test_models_are_checked_for_their_role_at_load(
    tmp_path: Path, analysis: str, match: str
) -> None:
    path = _write(tmp_path, GOOD.replace("limits:", f"analysis: {analysis}\nlimits:"))
    with pytest.raises(ProtocolError, match=match):
        load_protocol(path)


def test_shipped_models_in_their_slots_load(tmp_path: Path) -> None:
    text = GOOD.replace(
        "limits:",
        "analysis: {segmenter: model, model: nuclei-seg, denoise: denoise-n2v}\nlimits:",
    )
    proto = load_protocol(_write(tmp_path, text))
    assert proto.analysis.model == "nuclei-seg"


def test_hardware_checks_name_the_protocol_file_and_line(tmp_path: Path, core) -> None:
    """What only the configuration can tell (the laser's range) is refused
    with the protocol's file and line too."""
    from smartscope.controller.checks import check_hardware

    path = _write(
        tmp_path, GOOD.replace("name: test", "name: test\nlaser_power_mw: 500")
    )
    proto = load_protocol(path)
    with pytest.raises(ProtocolError) as exc:
        check_hardware(core, proto)
    msg = str(exc.value)
    assert msg.startswith(f"{path}, line 3, field laser_power_mw: 500 is outside")


def test_a_model_in_the_wrong_slot_is_refused_when_it_loads(monkeypatch) -> None:
    """A protocol built in code skips the file's checks; the model's own
    ``kind`` is checked again when the run loads it, before anything moves."""
    import sys
    import types

    from smartscope.analysis.models import ModelLoadError, load_analysis_model

    class _Denoiser:
        kind = "denoise"

        def predict(self, image, *, diameter_px=None):
            return image

    fake_nn = types.SimpleNamespace(load_model=lambda name, **kw: _Denoiser())
    monkeypatch.setitem(sys.modules, "smartscope.nn", fake_nn)  # no torch
    with pytest.raises(
        ModelLoadError, match="'dn' is a 'denoise' model, not a segmenter"
    ):
        load_analysis_model("dn", role="segmenter")
    assert load_analysis_model("dn", role="denoiser").kind == "denoise"


def test_special_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ProtocolError, match="got a folder"):
        load_protocol(tmp_path)
    with pytest.raises(ProtocolError, match="not a regular file"):
        load_protocol("/dev/zero")
