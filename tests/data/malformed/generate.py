"""Write the malformed-input corpus: protocols, Micro-Manager configs, models.

Every file here is one way a user can get an input wrong; ``smartscope run``
must refuse each with one line naming the file and the line or field, before
anything moves (most before a core even exists; the ``device`` cases and a
few ``cfg`` ones need the configuration loaded to be told apart).
``manifest.yaml`` says, for each file the test runs, what the line must
contain. Deterministic (no clock, seeded bytes); rewrite the corpus with::

    python tests/data/malformed/generate.py        # or: generate.py OTHER_DIR

Cases are grouped by category (the file name's prefix): ``yaml`` (bytes and
syntax), ``type`` (a wrong type for each protocol field), ``range`` (values
out of range or against the protocol's limits), ``device`` (values the
simulated devices would reject), ``seq`` (the useq sequence: unknown keys,
degenerate plans), ``name``, ``scene``, ``model`` (protocols naming models in
``models/``) and ``cfg``. ``valid-base.yaml`` is the valid protocol most cases
are one change away from (the test checks that it loads).
"""

from __future__ import annotations

import copy
import hashlib
import io
import random
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
#: where the corpus is written (this folder; ``generate.py DIR`` writes elsewhere)
OUT = HERE

BASE_TEXT = """\
# The valid protocol every malformed case is one change away from.
version: 1
name: corpus-base
description: A short follow-and-expose protocol on the simulator.
seed: 3
time_mode: virtual
objective: 20x
laser_power_mw: 5
sequence:
  channels:
    - config: DAPI
      exposure: 40
  stage_positions:
    - {name: a, x: 0, y: 0}
  time_plan: {interval: 60, loops: 3}
analysis:
  segmenter: classical
  diameter_um: 12
reactions:
  - type: center_on
    max_step_um: 60
  - type: adaptive_exposure
    target_adu: 1500
    min_exposure_ms: 5
    max_exposure_ms: 400
limits:
  xy_box_um: [-1000, 1000, -1000, 1000]
  max_xy_step_um: 100
  z_range_um: [-200, 200]
  exposure_range_ms: [1, 500]
  max_laser_mw: 20
stop:
  max_frames: 10
save:
  labels: false
  truth: false
on_error:
  camera: {retries: 1, then: skip}
  stage: {retries: 1, then: stop}
  reaction: {max_consecutive: 5, then: disable}
"""

BASE: dict[str, Any] = yaml.safe_load(BASE_TEXT)

CFG_TEXT = (REPO / "simulators" / "demo.cfg").read_text()

#: name -> {"category", "expect": [...], "names": optional}
MANIFEST: dict[str, dict[str, Any]] = {}


# ------------------------------------------------------------------ helpers


def _line_of(text: str, needle: str, start: int = 1) -> int:
    """1-based line of the first line at or after ``start`` containing ``needle``."""
    for n, line in enumerate(text.splitlines(), start=1):
        if n >= start and needle in line:
            return n
    raise ValueError(f"{needle!r} not in the text")


def _key_line(text: str, path: tuple[Any, ...]) -> int:
    """1-based line of the key (or list item) at ``path``, found with plain
    PyYAML (independent of the loader under test)."""
    node = yaml.compose(text)
    line = node.start_mark.line + 1
    for key in path:
        if isinstance(key, int):
            node = node.value[key]
            line = node.start_mark.line + 1
            continue
        for k, v in node.value:
            if k.value == key:
                node, line = v, k.start_mark.line + 1
                break
        else:
            raise ValueError(f"{path} not in the text")
    return line


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=200)


def _set(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(data)
    node: Any = out
    for key in path[:-1]:
        if isinstance(node, dict) and key not in node:
            node[key] = {}
        node = node[key]
    node[path[-1]] = value
    return out


def case(
    name: str,
    content: str | bytes,
    category: str,
    expect: list[str],
    *,
    names: str | None = None,
) -> None:
    """Write one corpus file and its manifest entry."""
    assert name not in MANIFEST, name
    path = OUT / name
    data = content.encode() if isinstance(content, str) else content
    path.write_bytes(data)
    entry: dict[str, Any] = {"category": category, "expect": expect}
    if names is not None:
        entry["names"] = names
    MANIFEST[name] = entry


def variant(
    name: str, old: str, new: str, category: str, expect: list[str], **kw: Any
) -> str:
    """BASE_TEXT with ``old`` replaced by ``new``; ``{line}`` in an expected
    string is the line where ``new`` starts."""
    assert old in BASE_TEXT, old
    text = BASE_TEXT.replace(old, new, 1)
    if "{line}" in " ".join(expect):
        first = new.strip().splitlines()[0] if new.strip() else old
        line = _line_of(text, first) if new.strip() else None
        expect = [e.replace("{line}", str(line)) for e in expect]
    case(name, text, category, expect, **kw)
    return text


def rand_bytes(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


# --------------------------------------------------------------- categories


def yaml_cases() -> None:
    """Bytes and syntax: what the strict YAML loader refuses."""
    c = "yaml"
    case("yaml-empty.yaml", "", c, ["line 1", "empty file"])
    case("yaml-whitespace-only.yaml", "   \n\n  \n", c, ["empty file"])
    case("yaml-comments-only.yaml", "# nothing but a comment\n", c, ["empty file"])
    case("yaml-top-level-list.yaml", "- name: a\n- name: b\n", c, ["line 1", "a list"])
    case("yaml-top-level-scalar.yaml", "just some text\n", c, ["line 1", "got text"])
    case("yaml-top-level-number.yaml", "42\n", c, ["line 1", "got a number"])
    case("yaml-top-level-null.yaml", "~\n", c, ["empty file"])
    variant(
        "yaml-unclosed-flow.yaml",
        "time_plan: {interval: 60, loops: 3}",
        "time_plan: {interval: 60, loops: 3",
        c,
        ["not valid YAML", "line 16"],
    )
    variant(
        "yaml-bad-indent.yaml",
        "  diameter_um: 12",
        "   diameter_um: 12",
        c,
        ["not valid YAML", "line {line}"],
    )
    variant(
        "yaml-unterminated-quote.yaml",
        "name: corpus-base",
        'name: "corpus-base',
        c,
        ["not valid YAML"],
    )
    variant(
        "yaml-mapping-in-scalar.yaml",
        "description: A short follow-and-expose protocol on the simulator.",
        "description: A short: follow: protocol",
        c,
        ["not valid YAML", "line {line}"],
    )
    variant(
        "yaml-tab-indent.yaml",
        "  diameter_um: 12",
        "\tdiameter_um: 12",
        c,
        ["not valid YAML", "tab", "line {line}"],
    )
    variant(
        "yaml-tab-indent-sequence.yaml",
        "    - config: DAPI\n      exposure: 40",
        "    - config: DAPI\n\t  exposure: 40",
        c,
        ["not valid YAML", "line 12"],
    )
    variant(
        "yaml-duplicate-top-key.yaml",
        "seed: 3\n",
        "seed: 3\nseed: 4\n",
        c,
        ["duplicate key 'seed'", "line 5", "line 6"],
    )
    variant(
        "yaml-duplicate-limit.yaml",
        "  max_laser_mw: 20\n",
        "  max_laser_mw: 20\n  max_laser_mw: 90\n",
        c,
        ["duplicate key 'max_laser_mw'", "line 31", "line 32"],
    )
    variant(
        "yaml-duplicate-channel-key.yaml",
        "      exposure: 40\n",
        "      exposure: 40\n      exposure: 400\n",
        c,
        ["duplicate key 'exposure'", "line 12", "line 13"],
    )
    variant(
        "yaml-duplicate-flow-key.yaml",
        "time_plan: {interval: 60, loops: 3}",
        "time_plan: {interval: 60, loops: 3, loops: 300}",
        c,
        ["duplicate key 'loops'", "line 15"],
    )
    variant(
        "yaml-duplicate-sequence.yaml",
        "analysis:\n",
        "sequence: {channels: [GFP]}\nanalysis:\n",
        c,
        ["duplicate key 'sequence'", "line 9", "line 16"],
    )
    huge = BASE_TEXT + "".join(
        f"# padding line {i:07d} to make the file larger than the limit\n"
        for i in range(17_000)
    )
    case("yaml-huge-file.yaml", huge, c, ["bytes", "limit is 1,000,000 bytes"])
    case("yaml-deep-nesting.yaml", "[" * 20_000, c, ["nested more than 64 deep"])
    case(
        "yaml-deep-nesting-closed.yaml",
        "name: deep\nsequence: " + "[" * 70 + "]" * 70 + "\n",
        c,
        ["nested more than 64 deep", "line 2"],
    )
    deep_map = "name: deep\nsequence:\n" + "".join(
        "  " * (i + 1) + f"k{i}:\n" for i in range(80)
    )
    case("yaml-deep-mapping.yaml", deep_map, c, ["nested more than 64 deep"])
    lol = ", ".join(["lol"] * 9)
    bomb = "name: bomb\na: &a [" + lol + "]\n"
    for prev, cur in zip("abcdefgh", "bcdefghi", strict=True):
        bomb += f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]\n"
    case("yaml-alias-bomb.yaml", bomb, c, ["alias", "100,000"])
    quad = "name: quad\nx: &x [" + ", ".join(["a"] * 400) + "]\n"
    quad += "y: [" + ", ".join(["*x"] * 400) + "]\n"
    case("yaml-alias-quadratic.yaml", quad, c, ["alias", "line 3"])
    long_text = (
        "name: long\nlimits:\n  allowed_properties: &p ['" + "x" * 600_000 + "']\n"
    )
    long_text += "extra: [*p, *p]\n"
    case("yaml-alias-long-text.yaml", long_text, c, ["1,000,000 characters", "line 4"])
    case(
        "yaml-alias-recursive.yaml",
        "name: loop\nsequence: &s {channels: *s}\n",
        c,
        ["recursive", "line 2"],
    )
    case(
        "yaml-alias-undefined.yaml",
        BASE_TEXT.replace("seed: 3", "seed: *nowhere"),
        c,
        ["undefined alias", "line 5"],
    )
    case(
        "yaml-alias-deep.yaml",
        "name: deep\na: &a "
        + "[" * 40
        + "1"
        + "]" * 40
        + "\nb: "
        + "[" * 30
        + "*a"
        + "]" * 30
        + "\n",
        c,
        ["nested more than 64 deep", "aliases followed"],
    )
    variant(
        "yaml-nul-byte.yaml",
        "description: A short",
        "description: A \x00short",
        c,
        ["U+0000", "NUL", "line 4", "column 16"],
    )
    case(
        "yaml-nul-bytes-only.yaml",
        b"\x00" * 64,
        c,
        ["U+0000", "line 1"],
    )
    variant(
        "yaml-ansi-escape.yaml",
        "description: A short",
        "description: \x1b[31mA short\x1b[0m",
        c,
        ["U+001B", "ESC", "line 4"],
    )
    variant(
        "yaml-escaped-ansi-key.yaml",
        "seed: 3",
        'seed: 3\n"\\e[2J\\e[31mseed": 4',
        c,
        ["field \\x1b[2J\\x1b[31mseed", "line 6"],
    )
    variant(
        "yaml-escaped-ansi-sequence-key.yaml",
        "  channels:",
        '  "\\e]0;owned\\a": 1\n  channels:',
        c,
        ["field sequence.\\x1b]0;owned\\x07", "unknown field", "line 10"],
    )
    variant("yaml-bell.yaml", "seed: 3", "seed: 3\x07", c, ["U+0007", "line 5"])
    variant("yaml-backspace.yaml", "seed: 3", "se\x08ed: 3", c, ["U+0008", "line 5"])
    variant(
        "yaml-form-feed.yaml", "seed: 3\n", "seed: 3\n\x0c\n", c, ["U+000C", "line 6"]
    )
    variant("yaml-vertical-tab.yaml", "seed: 3", "seed:\x0b3", c, ["U+000B", "line 5"])
    variant("yaml-del.yaml", "seed: 3", "seed: 3\x7f", c, ["U+007F", "DEL", "line 5"])
    variant(
        "yaml-c1-control.yaml",
        "name: corpus-base",
        "name: corpus\u009bbase",
        c,
        ["U+009B", "line 3"],
    )
    variant("yaml-nel.yaml", "seed: 3", "seed: 3\u0085", c, ["U+0085", "NEL", "line 5"])
    variant(
        "yaml-line-separator.yaml",
        "seed: 3",
        "seed: 3\u2028",
        c,
        ["U+2028", "line 5"],
    )
    variant(
        "yaml-bidi-override.yaml",
        "description: A short",
        "description: A \u202eshort",
        c,
        ["U+202E", "line 4"],
    )
    variant(
        "yaml-bom-inside.yaml",
        "seed: 3",
        "\ufeffseed: 3",
        c,
        ["U+FEFF", "BYTE ORDER MARK", "line 5"],
    )
    case(
        "yaml-utf16-bom.yaml",
        BASE_TEXT.encode("utf-16"),
        c,
        ["not UTF-8", "UTF-16", "line 1"],
    )
    case(
        "yaml-latin1.yaml",
        BASE_TEXT.replace("A short", "Une courte étude").encode("latin-1"),
        c,
        ["not UTF-8", "byte 0xe9", "line 4"],
    )
    case(
        "yaml-binary-garbage.yaml",
        rand_bytes(1, 2048),
        c,
        ["line 1"],
    )
    for tag, yaml_tag in (
        ("os-system", '!!python/object/apply:os.system ["touch PWNED-os-system"]'),
        (
            "subprocess",
            '!!python/object/apply:subprocess.check_output [["touch", "PWNED-subprocess"]]',
        ),
        ("object-new", "!!python/object/new:os.system [touch PWNED-object-new]"),
        ("name", "!!python/name:os.system"),
        ("module", "!!python/module:os"),
    ):
        variant(
            f"yaml-python-tag-{tag}.yaml",
            "seed: 3",
            f"seed: {yaml_tag}",
            c,
            ["tag", "not allowed", "line 5"],
        )
    variant(
        "yaml-python-tag-nested.yaml",
        "      exposure: 40",
        '      exposure: !!python/object/apply:os.system ["touch PWNED-nested"]',
        c,
        ["tag", "not allowed", "line 12"],
    )
    variant(
        "yaml-python-tag-key.yaml",
        "seed: 3",
        '? !!python/object/apply:os.system ["touch PWNED-key"]\n: 3',
        c,
        ["tag", "not allowed", "line 5"],
    )
    variant(
        "yaml-custom-tag.yaml", "seed: 3", "seed: !seed 3", c, ["'!seed'", "line 5"]
    )
    variant(
        "yaml-binary-tag.yaml",
        "description: A short",
        "description: !!binary aGVsbG8=\nx: A short",
        c,
        ["'!!binary'", "line 4"],
    )
    variant(
        "yaml-set-tag.yaml",
        "seed: 3",
        "seed: !!set {3: null}",
        c,
        ["'!!set'", "line 5"],
    )
    case(
        "yaml-two-documents.yaml",
        BASE_TEXT + "---\nname: second\n",
        c,
        ["single document", f"line {BASE_TEXT.count(chr(10)) + 1}"],
    )
    variant(
        "yaml-complex-key.yaml",
        "seed: 3",
        "? [seed, salt]\n: 3",
        c,
        ["key must be a plain value", "line 5"],
    )
    variant(
        "yaml-bad-date.yaml",
        "seed: 3",
        "seed: 2024-13-45",
        c,
        ["cannot read this value", "line 5"],
    )
    variant(
        "yaml-huge-integer.yaml",
        "seed: 3",
        "seed: " + "9" * 5000,
        c,
        ["cannot read this value", "line 5"],
    )
    cut = BASE_TEXT.index("      exposure: 40") + len("      expo")
    case(
        "yaml-truncated-mid-key.yaml",
        BASE_TEXT[:cut],
        c,
        ["could not find expected ':'", "cut short", "line 12"],
    )
    cut = BASE_TEXT.index("time_plan: {interval: 60,") + len(
        "time_plan: {interval: 60,"
    )
    case("yaml-truncated-flow.yaml", BASE_TEXT[:cut], c, ["cut short", "line 15"])
    cut = BASE_TEXT.index("name: a, x:") + len("name: a, x:")
    case(
        "yaml-truncated-mid-item.yaml",
        BASE_TEXT[:cut],
        c,
        ["cut short", "line 14"],
    )
    case(
        "yaml-truncated-quoted.yaml",
        BASE_TEXT.replace("name: corpus-base", 'name: "corpus-base')[:120],
        c,
        ["not valid YAML"],
    )


def _wrong(value: Any) -> Any:
    """A value of the wrong type for a field whose valid value is ``value``."""
    if isinstance(value, bool):
        return "sometimes"
    if isinstance(value, int | float):
        return "lots"
    if isinstance(value, str):
        return ["a", "list"]
    if isinstance(value, list):
        return "not-a-list"
    if isinstance(value, dict):
        return 5
    raise TypeError(value)


# a valid example value for each field the base protocol leaves out
_EXAMPLES: dict[tuple[Any, ...], Any] = {
    ("config",): "my.cfg",
    ("scene",): "migration",
    ("devices",): {},
    ("devices", "light_source"): "Laser",
    ("devices", "power_property"): "Power_mW",
    ("devices", "objective_group"): "Objective",
    ("analysis", "enabled"): True,
    ("analysis", "model"): "nuclei-seg",
    ("analysis", "denoise"): "denoise-care",
    ("analysis", "min_area_um2"): 20.0,
    ("analysis", "max_area_um2"): 2000.0,
    ("analysis", "threshold"): "otsu",
    ("analysis", "track_max_step_um"): 15.0,
    ("analysis", "track_max_gap_frames"): 2,
    ("analysis", "track_predict_velocity"): True,
    ("analysis", "queue_size"): 4,
    ("analysis", "save_labels"): False,
    ("analysis", "save_denoised"): False,
    ("limits", "max_z_step_um"): 50.0,
    ("limits", "light_dose_budget_mj"): 1000.0,
    ("limits", "interval_range_s"): [0, 86400],
    ("limits", "max_positions"): 200,
    ("limits", "max_autofocus_planes"): 41,
    ("limits", "allowed_properties"): ["Camera.Gain"],
    ("stop", "max_sample_time_s"): 3600.0,
    ("stop", "when_dose_budget_spent"): True,
    ("save", "denoised"): False,
    ("sequence", "z_plan"): {"range": 4, "step": 1},
    ("sequence", "grid_plan"): {"rows": 2, "columns": 2},
    ("sequence", "axis_order"): "tpcz",
    ("sequence", "metadata"): {"note": "x"},
    ("sequence", "channels", 0, "group"): "Channel",
    ("sequence", "channels", 0, "do_stack"): True,
    ("sequence", "channels", 0, "z_offset"): 0.0,
    ("sequence", "channels", 0, "acquire_every"): 1,
    ("sequence", "stage_positions", 0, "z"): 0.0,
    ("reactions", 0, "select"): "nearest_center",
    ("reactions", 0, "dead_band_fraction"): 0.05,
    ("reactions", 0, "lead"): 0.5,
    ("reactions", 0, "reacquire_radius_um"): 30.0,
    ("reactions", 1, "tolerance"): 0.1,
    ("reactions", 1, "min_power_mw"): 1.0,
    ("reactions", 1, "max_power_mw"): 20.0,
    ("reactions", 1, "max_change"): 2.0,
}


def _leaf_paths(data: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(data, dict) and data:
        out = [at] if at else []
        for k, v in data.items():
            out += _leaf_paths(v, (*at, k))
        return out
    if isinstance(data, list) and data and isinstance(data[0], dict):
        out = [at]
        for i, v in enumerate(data):
            out += _leaf_paths(v, (*at, i))
        return out
    return [at]


def type_cases() -> None:
    """A wrong type for every protocol field (the base's and the optional ones)."""
    paths = [p for p in _leaf_paths(BASE) if p and p[-1] != "type"]
    paths += [p for p in _EXAMPLES if p not in paths]
    for path in paths:
        if path == ("version",):
            continue  # below: a wrong version is its own case
        valid = _EXAMPLES.get(path)
        if valid is None:
            node: Any = BASE
            for k in path:
                node = node[k]
            valid = node
        data = _set(BASE, path, _wrong(valid))
        text = _dump(data)
        field = ".".join(str(k) for k in path)
        slug = "-".join(str(k) for k in path).replace("_", "-")
        case(
            f"type-{slug}.yaml",
            text,
            "type",
            [f"field {field}", f"line {_key_line(text, path)}"],
        )
    for value, why in (("2", "version-2"), ('"one"', "version-text")):
        variant(
            f"type-{why}.yaml",
            "version: 1",
            f"version: {value}",
            "type",
            ["field version", "line 2"],
        )
    variant(
        "type-reaction-type-number.yaml",
        "  - type: center_on",
        "  - type: 5",
        "type",
        ["field reactions.0.type", "line {line}"],
    )
    variant(
        "type-reaction-no-type.yaml",
        "  - type: center_on\n    max_step_um: 60",
        "  - max_step_um: 60",
        "type",
        ["field reactions.0.type", "Field required"],
    )
    variant(
        "type-reaction-item-scalar.yaml",
        "  - type: center_on\n    max_step_um: 60",
        "  - center_on",
        "type",
        ["field reactions.0", "line {line}"],
    )
    variant(
        "type-sequence-list.yaml",
        BASE_TEXT[BASE_TEXT.index("sequence:") : BASE_TEXT.index("analysis:")],
        "sequence: [DAPI, GFP]\n",
        "type",
        ["field sequence", "line 9"],
    )
    case(
        "type-sequence-missing.yaml",
        _dump({k: v for k, v in BASE.items() if k != "sequence"}),
        "type",
        ["field sequence", "Field required"],
    )
    case(
        "type-name-missing.yaml",
        _dump({k: v for k, v in BASE.items() if k != "name"}),
        "type",
        ["field name", "Field required"],
    )
    variant(
        "type-null-analysis.yaml",
        "analysis:\n",
        "analysis: null\nx_analysis:\n",
        "type",
        ["field analysis", "line {line}"],
    )
    variant(
        "type-unknown-top-key.yaml",
        "seed: 3",
        "seed: 3\nseeed: 4",
        "type",
        ["field seeed", "line 6", "Extra inputs are not permitted"],
    )
    variant(
        "type-unknown-limit.yaml",
        "  max_laser_mw: 20",
        "  max_laser_mw: 20\n  max_lazer_mw: 90",
        "type",
        ["field limits.max_lazer_mw", "line 32"],
    )
    variant(
        "type-unknown-analysis-key.yaml",
        "  diameter_um: 12",
        "  diameter_um: 12\n  diameter_px: 30",
        "type",
        ["field analysis.diameter_px", "line 19"],
    )
    variant(
        "type-unknown-devices-key.yaml",
        "laser_power_mw: 5",
        "laser_power_mw: 5\ndevices: {laser: Laser}",
        "type",
        ["field devices.laser", "line 9"],
    )
    variant(
        "type-unknown-on-error-key.yaml",
        "  camera: {retries: 1, then: skip}",
        "  camera: {retries: 1, then: skip, backoff_s: 3}",
        "type",
        ["field on_error.camera.backoff_s", "line 38"],
    )


def range_cases() -> None:
    """Values of the right type but out of range: protocol fields, the limits,
    reaction parameters, and what the simulated devices would reject."""
    c = "range"
    rows = [
        ("seed-negative", "seed: 3", "seed: -1", "field seed"),
        (
            "laser-negative",
            "laser_power_mw: 5",
            "laser_power_mw: -5",
            "field laser_power_mw",
        ),
        (
            "laser-above-limit",
            "laser_power_mw: 5",
            "laser_power_mw: 50",
            "laser_power_mw",
        ),
        ("laser-nan", "laser_power_mw: 5", "laser_power_mw: .nan", "laser_power_mw"),
        (
            "exposure-zero",
            "      exposure: 40",
            "      exposure: 0",
            "sequence.channels.0.exposure",
        ),
        (
            "exposure-negative",
            "      exposure: 40",
            "      exposure: -40",
            "sequence.channels.0.exposure",
        ),
        (
            "exposure-above-limit",
            "      exposure: 40",
            "      exposure: 900",
            "sequence.channels.0.exposure",
        ),
        (
            "exposure-inf",
            "      exposure: 40",
            "      exposure: .inf",
            "sequence.channels.0.exposure",
        ),
        (
            "position-outside-box",
            "{name: a, x: 0, y: 0}",
            "{name: a, x: 5000, y: 0}",
            "sequence.stage_positions.0",
        ),
        (
            "position-nan",
            "{name: a, x: 0, y: 0}",
            "{name: a, x: .nan, y: 0}",
            "sequence.stage_positions.0",
        ),
        (
            "position-z-outside",
            "{name: a, x: 0, y: 0}",
            "{name: a, x: 0, y: 0, z: 900}",
            "sequence.stage_positions.0",
        ),
        (
            "z-plan-outside",
            "  time_plan: {interval: 60, loops: 3}",
            "  time_plan: {interval: 60, loops: 3}\n  z_plan: {top: 900, bottom: 100, step: 100}",
            "sequence.z_plan",
        ),
        (
            "grid-edges-outside",
            "    - {name: a, x: 0, y: 0}\n  time_plan: {interval: 60, loops: 3}",
            "    - {name: a}\n  time_plan: {interval: 60, loops: 3}\n  grid_plan: {top: 5000, bottom: -5000, left: -5000, right: 5000}",
            "sequence.grid_plan",
        ),
        (
            "box-reversed",
            "xy_box_um: [-1000, 1000, -1000, 1000]",
            "xy_box_um: [1000, -1000, -1000, 1000]",
            "field limits.xy_box_um",
        ),
        (
            "box-three-numbers",
            "xy_box_um: [-1000, 1000, -1000, 1000]",
            "xy_box_um: [-1000, 1000, -1000]",
            "field limits.xy_box_um",
        ),
        (
            "z-range-reversed",
            "z_range_um: [-200, 200]",
            "z_range_um: [200, -200]",
            "field limits.z_range_um",
        ),
        (
            "exposure-range-zero",
            "exposure_range_ms: [1, 500]",
            "exposure_range_ms: [0, 500]",
            "field limits.exposure_range_ms",
        ),
        (
            "max-step-zero",
            "max_xy_step_um: 100",
            "max_xy_step_um: 0",
            "field limits.max_xy_step_um",
        ),
        (
            "max-laser-negative",
            "max_laser_mw: 20",
            "max_laser_mw: -1",
            "field limits.max_laser_mw",
        ),
        ("max-frames-zero", "max_frames: 10", "max_frames: 0", "field stop.max_frames"),
        (
            "retries-too-many",
            "camera: {retries: 1, then: skip}",
            "camera: {retries: 99, then: skip}",
            "field on_error.camera.retries",
        ),
        (
            "then-unknown",
            "camera: {retries: 1, then: skip}",
            "camera: {retries: 1, then: explode}",
            "field on_error.camera.then",
        ),
        (
            "max-consecutive-zero",
            "reaction: {max_consecutive: 5, then: disable}",
            "reaction: {max_consecutive: 0, then: disable}",
            "field on_error.reaction.max_consecutive",
        ),
        (
            "diameter-zero",
            "  diameter_um: 12",
            "  diameter_um: 0",
            "field analysis.diameter_um",
        ),
        (
            "diameter-huge",
            "  diameter_um: 12",
            "  diameter_um: 5000",
            "field analysis.diameter_um",
        ),
        (
            "segmenter-unknown",
            "  segmenter: classical",
            "  segmenter: cellpose",
            "field analysis.segmenter",
        ),
        (
            "segmenter-model-without-model",
            "  segmenter: classical",
            "  segmenter: model",
            "field analysis",
        ),
        (
            "reaction-step-negative",
            "    max_step_um: 60",
            "    max_step_um: -60",
            "field reactions.0.max_step_um",
        ),
        (
            "reaction-exposure-reversed",
            "    max_exposure_ms: 400",
            "    max_exposure_ms: 1",
            "reactions.1",
        ),
        (
            "reaction-unknown-type",
            "  - type: center_on",
            "  - type: teleport",
            "field reactions.0",
        ),
        (
            "reaction-unknown-param",
            "    max_step_um: 60",
            "    max_step_um: 60\n    max_stepp_um: 10",
            "field reactions.0.max_stepp_um",
        ),
        (
            "reaction-select-unknown",
            "    max_step_um: 60",
            "    max_step_um: 60\n    select: random",
            "field reactions.0.select",
        ),
        (
            "reactions-without-analysis",
            "  segmenter: classical",
            "  enabled: false\n  segmenter: classical",
            "field reactions",
        ),
        (
            "light-source-null-with-power",
            "laser_power_mw: 5",
            "laser_power_mw: 5\ndevices: {light_source: null}",
            "field devices.light_source",
        ),
        (
            "time-mode-unknown",
            "time_mode: virtual",
            "time_mode: warp",
            "field time_mode",
        ),
    ]
    needles = {
        "z-plan-outside": "z_plan:",
        "grid-edges-outside": "grid_plan:",
        "segmenter-model-without-model": "analysis:",
        "reaction-exposure-reversed": "type: adaptive_exposure",
        "reactions-without-analysis": "reactions:",
        "light-source-null-with-power": "devices:",
        "reaction-unknown-param": "max_stepp_um:",
        "reaction-select-unknown": "select:",
    }
    for slug, old, new, field in rows:
        text = BASE_TEXT.replace(old, new, 1)
        assert old in BASE_TEXT, slug
        line = _line_of(text, needles.get(slug, new.strip().splitlines()[0]))
        case(f"range-{slug}.yaml", text, c, [field, f"line {line}"])
    # against the simulated devices: refused by check_hardware before anything moves
    dev_rows = [
        # slug, old, new, field, what, the line's text
        (
            "laser-beyond-device",
            "laser_power_mw: 5",
            "laser_power_mw: 500",
            "field laser_power_mw",
            "0 to 100",
            "laser_power_mw:",
        ),
        (
            "objective-unknown",
            "objective: 20x",
            "objective: 100x",
            "field objective",
            "'100x'",
            "objective:",
        ),
        (
            "channel-unknown",
            "    - config: DAPI",
            "    - config: Cy5",
            "field sequence.channels.0",
            "'Cy5'",
            "config: Cy5",
        ),
        (
            "light-source-absent",
            "laser_power_mw: 5",
            "laser_power_mw: 5\ndevices: {light_source: LED}",
            "field devices.light_source",
            "'LED'",
            "devices:",
        ),
        (
            "power-property-absent",
            "laser_power_mw: 5",
            "laser_power_mw: 5\ndevices: {power_property: Intensity}",
            "field devices.power_property",
            "'Intensity'",
            "devices:",
        ),
        (
            "objective-group-absent",
            "objective: 20x",
            "objective: 20x\ndevices: {objective_group: Turret}",
            "field objective",
            "'Turret'",
            "objective:",
        ),
        (
            "channel-group-absent",
            "      exposure: 40",
            "      exposure: 40\n      group: Filters",
            "field sequence.channels.0",
            "'Filters'",
            "config: DAPI",
        ),
    ]
    for slug, old, new, field, what, needle in dev_rows:
        assert old in BASE_TEXT, slug
        text = BASE_TEXT.replace(old, new, 1)
        if slug == "laser-beyond-device":  # past the device's range, not the limit's
            text = text.replace("  max_laser_mw: 20\n", "")
        case(
            f"device-{slug}.yaml",
            text,
            "device",
            [field, what, f"line {_line_of(text, needle)}"],
        )


def seq_cases() -> None:
    """The useq sequence: keys useq would ignore, plans it cannot mean."""
    c = "seq"
    tp = "  time_plan: {interval: 60, loops: 3}"
    rows = [
        (
            "unknown-key",
            "  channels:",
            "  chanels: []\n  channels:",
            "sequence.chanels",
            "did you mean 'channels'",
        ),
        (
            "channel-exposur",
            "      exposure: 40",
            "      exposur: 20",
            "sequence.channels.0.exposur",
            "did you mean 'exposure'",
        ),
        (
            "channel-unknown-second",
            "      exposure: 40",
            "      exposure: 40\n    - config: GFP\n      exposure_ms: 20",
            "sequence.channels.1.exposure_ms",
            "unknown field",
        ),
        (
            "position-unknown-key",
            "{name: a, x: 0, y: 0}",
            "{name: a, x: 0, y: 0, zz: 3}",
            "sequence.stage_positions.0.zz",
            "unknown field",
        ),
        (
            "time-plan-typo",
            tp,
            "  time_plan: {intervl: 60, loops: 3}",
            "sequence.time_plan.intervl",
            "did you mean 'interval'",
        ),
        (
            "time-plan-three-keys",
            tp,
            "  time_plan: {interval: 60, loops: 3, duration: 600}",
            "sequence.time_plan",
            "do not belong together",
        ),
        (
            "time-plan-interval-only",
            tp,
            "  time_plan: {interval: 60}",
            "sequence.time_plan",
            "loops",
        ),
        (
            "time-plan-negative-interval",
            tp,
            "  time_plan: {interval: -60, loops: 3}",
            "sequence.time_plan.interval",
            "must not be negative",
        ),
        (
            "time-plan-negative-duration",
            tp,
            "  time_plan: {interval: 60, duration: -600}",
            "sequence.time_plan.duration",
            "must not be negative",
        ),
        (
            "time-plan-zero-interval-duration",
            tp,
            "  time_plan: {interval: 0, duration: 600}",
            "sequence.time_plan.interval",
            "never ends",
        ),
        (
            "time-plan-duration-one-loop",
            tp,
            "  time_plan: {duration: 600, loops: 1}",
            "sequence.time_plan.loops",
            "2 or more",
        ),
        (
            "time-plan-loops-zero",
            tp,
            "  time_plan: {interval: 60, loops: 0}",
            "sequence.time_plan.loops",
            "greater than 0 (got 0)",
        ),
        (
            "time-plan-interval-text",
            tp,
            "  time_plan: {interval: soon, loops: 3}",
            "sequence.time_plan.interval",
            "soon",
        ),
        (
            "time-plan-interval-mapping",
            tp,
            "  time_plan: {interval: {fortnights: 1}, loops: 3}",
            "sequence.time_plan",
            "fortnights",
        ),
        (
            "time-plan-empty-phases",
            tp,
            "  time_plan: []",
            "sequence.time_plan",
            "at least one phase",
        ),
        (
            "time-plan-phase-negative",
            tp,
            "  time_plan:\n    - {interval: 60, loops: 3}\n    - {interval: -5, loops: 3}",
            "sequence.time_plan.1.interval",
            "must not be negative",
        ),
        (
            "time-plan-phase-typo",
            tp,
            "  time_plan:\n    - {interval: 60, loops: 3}\n    - {interval: 5, loop: 3}",
            "sequence.time_plan.1.loop",
            "unknown field",
        ),
        (
            "z-step-zero",
            tp,
            tp + "\n  z_plan: {range: 10, step: 0}",
            "sequence.z_plan.step",
            "greater than 0",
        ),
        (
            "z-step-negative",
            tp,
            tp + "\n  z_plan: {above: 5, below: 5, step: -1}",
            "sequence.z_plan.step",
            "greater than 0",
        ),
        (
            "z-range-negative",
            tp,
            tp + "\n  z_plan: {range: -10, step: 1}",
            "sequence.z_plan.range",
            "must not be negative",
        ),
        (
            "z-top-below-bottom",
            tp,
            tp + "\n  z_plan: {top: -5, bottom: 5, step: 1}",
            "sequence.z_plan.top",
            "below bottom",
        ),
        (
            "z-too-many-planes",
            tp,
            tp + "\n  z_plan: {range: 100, step: 0.0001}",
            "sequence.z_plan",
            "planes",
        ),
        (
            "z-relative-empty",
            tp,
            tp + "\n  z_plan: {relative: []}",
            "sequence.z_plan.relative",
            "no plane",
        ),
        (
            "z-relative-number",
            tp,
            tp + "\n  z_plan: {relative: 5}",
            "sequence.z_plan",
            "not iterable",
        ),
        (
            "z-nan",
            tp,
            tp + "\n  z_plan: {range: .nan, step: 1}",
            "sequence.z_plan.range",
            "finite",
        ),
        (
            "z-unknown-key",
            tp,
            tp + "\n  z_plan: {range: 10, stepp: 1}",
            "sequence.z_plan.stepp",
            "did you mean 'step'",
        ),
        (
            "z-mixed-keys",
            tp,
            tp + "\n  z_plan: {range: 10, top: 5, step: 1}",
            "sequence.z_plan",
            "do not belong together",
        ),
        (
            "grid-rows-zero",
            tp,
            tp + "\n  grid_plan: {rows: 0, columns: 2}",
            "sequence.grid_plan.rows",
            "greater than or equal to 1",
        ),
        (
            "grid-overlap-100",
            tp,
            tp + "\n  grid_plan: {rows: 2, columns: 2, overlap: 100}",
            "sequence.grid_plan.overlap",
            "below 100",
        ),
        (
            "grid-too-many-tiles",
            tp,
            tp + "\n  grid_plan: {rows: 1000, columns: 1000}",
            "sequence.grid_plan",
            "tiles",
        ),
        (
            "grid-unknown-key",
            tp,
            tp + "\n  grid_plan: {rows: 2, cols: 2}",
            "sequence.grid_plan.cols",
            "unknown field",
        ),
        (
            "grid-relative-to-bogus",
            tp,
            tp + "\n  grid_plan: {rows: 2, columns: 2, relative_to: corner}",
            "sequence.grid_plan.relative_to",
            "corner",
        ),
        (
            "random-points-too-many",
            tp,
            tp
            + "\n  grid_plan: {num_points: 1000000, max_width: 500, max_height: 500}",
            "sequence.grid_plan",
            "tiles",
        ),
        (
            "channels-string",
            "  channels:\n    - config: DAPI\n      exposure: 40",
            "  channels: DAPI",
            "sequence.channels",
            "sequence",
        ),
        (
            "channel-number",
            "    - config: DAPI\n      exposure: 40",
            "    - 5",
            "sequence.channels.0",
            "expected a mapping of Channel fields",
        ),
        (
            "channel-acquire-every-zero",
            "      exposure: 40",
            "      exposure: 40\n      acquire_every: 0",
            "sequence.channels.0.acquire_every",
            "greater than 0",
        ),
        (
            "channel-camera",
            "      exposure: 40",
            "      exposure: 40\n      camera: Camera2",
            "sequence.channels.0.camera",
            "multi-camera",
        ),
        (
            "positions-as-lists",
            "    - {name: a, x: 0, y: 0}",
            "    - [0, 0]",
            "sequence.stage_positions.0",
            "got [0, 0]",
        ),
        (
            "positions-number",
            "  stage_positions:\n    - {name: a, x: 0, y: 0}",
            "  stage_positions: 5",
            "sequence.stage_positions",
            "stage_positions",
        ),
        (
            "position-sequence-unknown",
            "{name: a, x: 0, y: 0}",
            "{name: a, x: 0, y: 0, sequence: {channels: [GFP], exposur: 5}}",
            "sequence.stage_positions.0.sequence.exposur",
            "unknown field",
        ),
        (
            "position-sequence-time-plan",
            "{name: a, x: 0, y: 0}",
            "{name: a, x: 0, y: 0, sequence: {time_plan: {interval: 1, loops: 2}}}",
            "sequence.stage_positions.0.sequence.time_plan",
            "not supported",
        ),
        (
            "position-sequence-z-step-zero",
            "{name: a, x: 0, y: 0}",
            "{name: a, x: 0, y: 0, sequence: {z_plan: {range: 4, step: 0}}}",
            "sequence.stage_positions.0.sequence.z_plan.step",
            "greater than 0",
        ),
        (
            "axis-order-unknown",
            tp,
            tp + "\n  axis_order: tpxz",
            "sequence.axis_order",
            "Got extra",
        ),
        (
            "keep-shutter-open",
            tp,
            tp + "\n  keep_shutter_open_across: [z]",
            "sequence.keep_shutter_open_across",
            "shutter",
        ),
        (
            "setup-event",
            tp,
            tp + "\n  setup: {x_pos: 5}",
            "sequence.setup",
            "setup event",
        ),
        (
            "setup-unknown-key",
            tp,
            tp + "\n  setup: {x_poss: 5}",
            "sequence.setup.x_poss",
            "unknown field",
        ),
        (
            "autofocus-unknown-key",
            tp,
            tp + "\n  autofocus_plan: {axes: [t], offset: 3}",
            "sequence.autofocus_plan.offset",
            "unknown field",
        ),
        (
            "non-text-key",
            tp,
            tp + "\n  5: five",
            "sequence.5",
            "field name must be text",
        ),
    ]
    needles = {
        "channel-unknown-second": "exposure_ms:",
        "time-plan-phase-negative": "interval: -5",
        "time-plan-phase-typo": "loop: 3",
        "channel-number": "    - 5",
        "channel-acquire-every-zero": "acquire_every:",
        "channel-camera": "camera: Camera2",
        "positions-as-lists": "    - [0, 0]",
        "non-text-key": "5: five",
    }
    for slug, old, new, field, what in rows:
        assert old in BASE_TEXT, slug
        text = BASE_TEXT.replace(old, new, 1)
        needle = needles.get(slug)
        if needle is None:
            first = new.strip().splitlines()[0]
            # an appended plan: the line of the key appended after the time plan
            needle = (
                new.strip().splitlines()[-1].strip().split(":")[0] + ":"
                if first == tp.strip()
                else first
            )
        case(
            f"seq-{slug}.yaml",
            text,
            c,
            [f"field {field}", what, f"line {_line_of(text, needle)}"],
        )
    variant(
        "seq-absolute-grid-with-xy.yaml",
        "  time_plan: {interval: 60, loops: 3}",
        "  time_plan: {interval: 60, loops: 3}\n  grid_plan: {top: 100, bottom: -100, left: -100, right: 100}",
        c,
        ["field sequence.stage_positions.0", "would be ignored", "line 14"],
    )


def name_cases() -> None:
    c = "name"
    for slug, value, what in (
        ("absolute-path", "/tmp/elsewhere", "'/tmp/elsewhere'"),
        ("parent-dirs", "../..", "'../..'"),
        ("parent-escape", "../../etc/cron.d/job", "file name"),
        ("dot", ".", "file name"),
        ("hidden", ".hidden", "file name"),
        ("space", "my protocol", "'my protocol'"),
        ("slash", "a/b", "'a/b'"),
        ("backslash", "a\\\\b", "file name"),
        ("too-long", "x" * 101, "100 characters"),
        ("empty", '""', "file name"),
        ("unicode-slash", "a\u2215b", "file name"),
        ("ansi", '"\\e[31mred\\e[0m"', "file name"),
        ("newline", '"two\\nlines"', "file name"),
        ("colon", '"c:/windows"', "file name"),
        ("dash-first", "-rf", "file name"),
        ("star", '"*"', "file name"),
    ):
        variant(
            f"name-{slug}.yaml",
            "name: corpus-base",
            f"name: {value}",
            c,
            ["field name", what, "line 3"],
        )


def scene_cases() -> None:
    c = "scene"
    scenes = OUT / "scenes"
    scenes.mkdir(exist_ok=True)
    good = (REPO / "simulators" / "scenes" / "migration.yaml").read_text()
    (scenes / "duplicate-key.yaml").write_text(good + "density_per_mm2: 5000\n")
    (scenes / "unknown-field.yaml").write_text(good + "denisty_per_mm2: 5000\n")
    (scenes / "alias-bomb.yaml").write_text(
        "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
        + "".join(
            f"{n}: &{n} [" + ", ".join([f"*{p}"] * 10) + "]\n"
            for p, n in zip("abcdef", "bcdefg", strict=True)
        )
    )
    (scenes / "garbage.yaml").write_bytes(rand_bytes(7, 512))
    (scenes / "list.yaml").write_text("- density_per_mm2: 5\n")
    (scenes / "python-tag.yaml").write_text(
        good + 'x: !!python/object/apply:os.system ["touch PWNED-scene"]\n'
    )
    n_good = good.count("\n")
    rows = [
        (
            "unknown-name",
            "no-such-scene",
            ["field scene", "'no-such-scene' not found"],
            None,
        ),
        ("path-traversal", "../../../etc/passwd", ["field scene", "not found"], None),
        ("missing-file", "scenes/missing.yaml", ["field scene", "not found"], None),
        (
            "duplicate-key",
            "scenes/duplicate-key.yaml",
            ["duplicate key 'density_per_mm2'", f"line {n_good + 1}"],
            "duplicate-key.yaml",
        ),
        (
            "unknown-field",
            "scenes/unknown-field.yaml",
            ["denisty_per_mm2", f"line {n_good + 1}"],
            "unknown-field.yaml",
        ),
        ("alias-bomb", "scenes/alias-bomb.yaml", ["alias"], "alias-bomb.yaml"),
        ("garbage", "scenes/garbage.yaml", ["scene preset", "line"], "garbage.yaml"),
        ("list", "scenes/list.yaml", ["a scene preset is a mapping"], "list.yaml"),
        (
            "python-tag",
            "scenes/python-tag.yaml",
            ["tag", "not allowed"],
            "python-tag.yaml",
        ),
        ("number", "5", ["field scene", "line 6"], None),
    ]
    for slug, value, expect, names in rows:
        variant(
            f"scene-{slug}.yaml",
            "seed: 3",
            f"seed: 3\nscene: {value}",
            c,
            expect,
            names=names,
        )


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


def model_cases() -> None:
    """Model folders and packages, each named by a protocol (``model-*.yaml``)."""
    c = "model"
    models = OUT / "models"
    if models.exists():
        shutil.rmtree(models)
    models.mkdir()
    card = yaml.safe_load((REPO / "models" / "nuclei-seg" / "rdf.yaml").read_text())
    fake_weights = _zip_bytes(
        {"weights/data.pkl": b"\x80\x02}q\x00.", "weights/version": b"3\n"}
    )

    def folder(
        name: str, rdf: Any, weights: bytes | None = fake_weights, *, sha: bool = True
    ) -> None:
        d = models / name
        d.mkdir()
        if isinstance(rdf, dict):
            rdf = copy.deepcopy(rdf)
            entry = rdf["weights"]["pytorch_state_dict"]
            if weights is not None and sha:
                entry["sha256"] = hashlib.sha256(weights).hexdigest()
            elif not sha:
                entry.pop("sha256", None)
            (d / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
        elif isinstance(rdf, bytes):
            (d / "rdf.yaml").write_bytes(rdf)
        if weights is not None:
            (d / "weights.pt").write_bytes(weights)

    def protocol(
        slug: str, analysis: str, expect: list[str], names: str | None = None
    ) -> None:
        variant(
            f"model-{slug}.yaml",
            "analysis:\n  segmenter: classical\n  diameter_um: 12",
            "analysis:\n" + analysis + "\n  diameter_um: 12",
            c,
            expect,
            names=names,
        )

    seg = "  segmenter: model\n  model: "
    den = "  segmenter: classical\n  denoise: "
    # the shipped models in the wrong slot
    protocol(
        "denoiser-as-segmenter",
        seg + "denoise-care",
        ["field analysis.model", "'denoise-care' is a denoising model", "line 18"],
    )
    protocol(
        "n2v-as-segmenter",
        seg + "denoise-n2v",
        ["field analysis.model", "denoising model", "line 18"],
    )
    protocol(
        "segmenter-as-denoiser",
        den + "nuclei-seg",
        ["field analysis.denoise", "'nuclei-seg' is a segmentation model", "line 18"],
    )
    protocol(
        "unknown-name",
        seg + "nuclei-segg",
        ["field analysis.model", "no model named", "nuclei-seg"],
    )
    protocol(
        "unknown-denoiser",
        den + "denoise-care-v9",
        ["field analysis.denoise", "no model named"],
    )
    protocol(
        "missing-path",
        seg + "models/does-not-exist",
        ["field analysis.model", "no model named or at"],
    )
    # local model folders with something wrong
    folder("segmenter-card", card)
    protocol(
        "local-segmenter-as-denoiser",
        den + "models/segmenter-card",
        ["field analysis.denoise", "segmentation model"],
        names="segmenter-card",
    )
    denoise_card = copy.deepcopy(card)
    denoise_card["config"]["smartscope"]["kind"] = "denoise"
    folder("denoiser-card", denoise_card)
    protocol(
        "local-denoiser-as-segmenter",
        seg + "models/denoiser-card",
        ["field analysis.model", "denoising model"],
        names="denoiser-card",
    )
    folder("garbage-weights", card, rand_bytes(11, 4096), sha=False)
    protocol(
        "garbage-weights",
        seg + "models/garbage-weights",
        ["not a PyTorch archive", "weights.pt"],
        names="garbage-weights",
    )
    folder("garbage-weights-sha", card, rand_bytes(12, 4096))
    (models / "garbage-weights-sha" / "weights.pt").write_bytes(rand_bytes(13, 4096))
    protocol(
        "garbage-weights-sha",
        seg + "models/garbage-weights-sha",
        ["sha256 does not match", "weights.pt"],
        names="garbage-weights-sha",
    )
    folder("truncated-weights", card, fake_weights[: len(fake_weights) // 2], sha=False)
    protocol(
        "truncated-weights",
        seg + "models/truncated-weights",
        ["not a PyTorch archive"],
        names="truncated-weights",
    )
    folder("empty-weights", card, b"", sha=False)
    protocol(
        "empty-weights",
        seg + "models/empty-weights",
        ["not a PyTorch archive"],
        names="empty-weights",
    )
    folder("zip-without-pickle", card, _zip_bytes({"readme.txt": b"hello"}), sha=False)
    protocol(
        "zip-without-pickle",
        seg + "models/zip-without-pickle",
        ["no data.pkl"],
        names="zip-without-pickle",
    )
    folder("weights-missing", card, None)
    protocol(
        "weights-missing",
        seg + "models/weights-missing",
        ["does not exist"],
        names="weights-missing",
    )
    escape = copy.deepcopy(card)
    escape["weights"]["pytorch_state_dict"]["source"] = "../../../../etc/passwd"
    folder("weights-outside", escape, None)
    protocol(
        "weights-outside",
        seg + "models/weights-outside",
        ["inside the model"],
        names="weights-outside",
    )
    no_weights = copy.deepcopy(card)
    no_weights["weights"] = {}
    (models / "no-weights-entry").mkdir()
    (models / "no-weights-entry" / "rdf.yaml").write_text(yaml.safe_dump(no_weights))
    protocol(
        "no-weights-entry",
        seg + "models/no-weights-entry",
        ["'weights' must name"],
        names="no-weights-entry",
    )
    folder("rdf-garbage", rand_bytes(14, 1024))
    protocol(
        "rdf-garbage",
        seg + "models/rdf-garbage",
        ["rdf.yaml", "line"],
        names="rdf-garbage",
    )
    folder("rdf-not-a-card", b"this: is not a model card\n")
    protocol(
        "rdf-not-a-card",
        seg + "models/rdf-not-a-card",
        ["'type' must be 'model'"],
        names="rdf-not-a-card",
    )
    no_section = copy.deepcopy(card)
    del no_section["config"]
    del no_section[
        "inputs"
    ]  # without a smartscope section it would be a foreign package
    folder("rdf-no-section", no_section)
    protocol(
        "rdf-no-section",
        seg + "models/rdf-no-section",
        ["config.smartscope"],
        names="rdf-no-section",
    )
    bad_kind = copy.deepcopy(card)
    bad_kind["config"]["smartscope"]["kind"] = "classify"
    folder("rdf-bad-kind", bad_kind)
    protocol(
        "rdf-bad-kind",
        seg + "models/rdf-bad-kind",
        ["config.smartscope.kind", "'classify'"],
        names="rdf-bad-kind",
    )
    folder(
        "rdf-duplicate-key",
        (yaml.safe_dump(card, sort_keys=False) + "type: model\n").encode(),
    )
    protocol(
        "rdf-duplicate-key",
        seg + "models/rdf-duplicate-key",
        ["duplicate key 'type'"],
        names="rdf-duplicate-key",
    )
    folder(
        "rdf-alias-bomb",
        (
            "type: model\n"
            + "a: &a ["
            + ", ".join(["x"] * 10)
            + "]\n"
            + "".join(
                f"{n}: &{n} [" + ", ".join([f"*{p}"] * 10) + "]\n"
                for p, n in zip("abcdef", "bcdefg", strict=True)
            )
        ).encode(),
    )
    protocol(
        "rdf-alias-bomb",
        seg + "models/rdf-alias-bomb",
        ["alias"],
        names="rdf-alias-bomb",
    )
    folder(
        "rdf-python-tag",
        b'type: !!python/object/apply:os.system ["touch PWNED-model"]\n',
    )
    protocol(
        "rdf-python-tag",
        seg + "models/rdf-python-tag",
        ["tag", "not allowed"],
        names="rdf-python-tag",
    )
    (models / "no-rdf").mkdir()
    (models / "no-rdf" / "weights.pt").write_bytes(fake_weights)
    protocol("no-rdf", seg + "models/no-rdf", ["has no rdf.yaml"], names="no-rdf")
    (models / "garbage.zip").write_bytes(rand_bytes(15, 2048))
    protocol(
        "zip-garbage",
        seg + "models/garbage.zip",
        ["not a valid .zip"],
        names="garbage.zip",
    )
    (models / "package-no-rdf.zip").write_bytes(
        _zip_bytes({"weights.pt": fake_weights})
    )
    protocol(
        "zip-no-rdf",
        seg + "models/package-no-rdf.zip",
        ["no rdf.yaml"],
        names="package-no-rdf.zip",
    )
    pkg_card = copy.deepcopy(card)
    pkg_card["config"]["smartscope"]["kind"] = "denoise"
    pkg_card["weights"]["pytorch_state_dict"]["sha256"] = hashlib.sha256(
        fake_weights
    ).hexdigest()
    (models / "package-denoiser.zip").write_bytes(
        _zip_bytes(
            {"rdf.yaml": yaml.safe_dump(pkg_card).encode(), "weights.pt": fake_weights}
        )
    )
    protocol(
        "zip-denoiser-as-segmenter",
        seg + "models/package-denoiser.zip",
        ["field analysis.model", "denoising model"],
    )
    (models / "random.bin").write_bytes(rand_bytes(16, 256))
    protocol(
        "random-file",
        seg + "models/random.bin",
        ["expected a model folder"],
        names="random.bin",
    )


def cfg_cases() -> None:
    """Micro-Manager configurations (run with the valid base protocol, ``--config``)."""
    c = "cfg"

    def cfg(slug: str, old: str | None, new: str, expect: list[str]) -> None:
        if old is None:
            text = new
        else:
            assert old in CFG_TEXT, old
            text = CFG_TEXT.replace(old, new, 1)
        if "{line}" in " ".join(expect):
            first = new.strip().splitlines()[0]
            line = text.splitlines().index(first) + 1
            expect = [e.replace("{line}", str(line)) for e in expect]
        case(f"cfg-{slug}.cfg", text, c, expect)

    pydev = "#py pyDevice,Camera,smartscope.sim.camera,SimCamera"
    rows = [
        (
            "unknown-command",
            pydev,
            "#py pyDevise,Camera,smartscope.sim.camera,SimCamera",
            ["unknown command 'pyDevise'", "line {line}"],
        ),
        (
            "too-few-fields",
            "#py Property,Camera,Exposure,50",
            "#py Property,Camera",
            ["takes 2 or 3", "line {line}"],
        ),
        ("too-many-fields", pydev, pydev + ",extra", ["takes 3", "line {line}"]),
        (
            "empty-device-name",
            "#py Property,Camera,Exposure,50",
            "#py Property,,Exposure,50",
            ["empty device", "line {line}"],
        ),
        (
            "pydevice-path-module",
            pydev,
            "#py pyDevice,Camera,smartscope/sim/camera,SimCamera",
            ["importable dotted name", "line {line}"],
        ),
        (
            "pydevice-missing-module",
            pydev,
            "#py pyDevice,Camera,smartscope.sim.no_such_module,SimCamera",
            ["no_such_module", "line {line}"],
        ),
        (
            "pydevice-missing-class",
            pydev,
            "#py pyDevice,Camera,smartscope.sim.camera,NoSuchCamera",
            ["NoSuchCamera", "line {line}"],
        ),
        (
            "duplicate-label",
            "#py pyDevice,Filter,smartscope.sim.turrets,SimFilter",
            "#py pyDevice,Laser,smartscope.sim.turrets,SimFilter",
            ["'Laser' is defined twice", "line {line}"],
        ),
        (
            "preset-absent-device",
            "#py ConfigGroup,Channel,DAPI,Filter,Label,DAPI",
            "#py ConfigGroup,Channel,DAPI,Filterwheel,Label,DAPI",
            ["preset Channel/DAPI", "'Filterwheel'", "line {line}"],
        ),
        (
            "objective-preset-absent-device",
            "#py ConfigGroup,Objective,40x,Objective,Label,40x",
            "#py ConfigGroup,Objective,40x,Turret,Label,40x",
            ["preset Objective/40x", "'Turret'", "line {line}"],
        ),
        (
            "preset-core-role-absent",
            "#py ConfigGroup,Channel,GFP,Laser,Wavelength_nm,488",
            "#py ConfigGroup,Channel,GFP,Core,Shutter,Shutter2",
            ["'Shutter2'", "line {line}"],
        ),
        (
            "property-absent-device",
            "#py Property,Laser,Power_mW,10",
            "#py Property,Lazer,Power_mW,10",
            ["'Lazer'", "line {line}"],
        ),
        (
            "core-role-absent-device",
            "#py Property,Core,Camera,Camera",
            "#py Property,Core,Camera,Cam",
            ["Core Camera role", "'Cam'", "line {line}"],
        ),
        (
            "pixel-size-absent-device",
            "# Objectives",
            "ConfigPixelSize,Res10x,Objektiv,Label,10x\n# Objectives",
            ["pixel size preset Res10x", "'Objektiv'", "line {line}"],
        ),
        (
            "label-absent-device",
            "# Objectives",
            "Label,Wheel,0,DAPI\n# Objectives",
            ["'Wheel'", "line {line}"],
        ),
        (
            "parent-absent-hub",
            "# Objectives",
            "Parent,Camera,CameraHub\n# Objectives",
            ["'CameraHub'", "line {line}"],
        ),
        (
            "delay-absent-device",
            "# Objectives",
            "Delay,Shutter2,10\n# Objectives",
            ["'Shutter2'", "line {line}"],
        ),
        (
            "obsolete-command",
            "# Objectives",
            "Equipment,Camera,Scope\n# Objectives",
            ["obsolete", "line {line}"],
        ),
        (
            "unknown-property",
            "#py Property,Camera,Exposure,50",
            "#py Property,Camera,Exposur,50",
            ["Exposur", "line {line}"],
        ),
        (
            "bad-property-value",
            "#py Property,Camera,Exposure,50",
            "#py Property,Camera,Exposure,fast",
            ["fast", "line {line}"],
        ),
        (
            "preset-value-not-allowed",
            "#py Property,Objective,Label,10x",
            "#py Property,Objective,Label,100x",
            ["100x", "line {line}"],
        ),
        (
            "adapter-not-installed",
            "Property,Core,Initialize,0",
            "Device,Cam2,NoSuchAdapter,NoSuchCamera\nProperty,Core,Initialize,0",
            ["NoSuchAdapter", "line {line}"],
        ),
        (
            "control-chars",
            pydev,
            "#py pyDevice,Camera,smartscope.sim.camera,Sim\x1b[2JCamera",
            ["U+001B", "line {line}"],
        ),
        (
            "nul-bytes",
            pydev,
            "#py pyDevice,Camera,smart\x00scope.sim.camera,SimCamera",
            ["U+0000", "line {line}"],
        ),
    ]
    for slug, old, new, expect in rows:
        cfg(slug, old, new, expect)
    cfg("empty", None, "", ["no configuration commands"])
    cfg("comments-only", None, "# just a comment\n#\n", ["no configuration commands"])
    case(
        "cfg-latin1.cfg",
        ("# Mikroskop für Zellen\n" + CFG_TEXT).encode("latin-1"),
        c,
        ["not a text file", "line 1"],
    )
    case(
        "cfg-binary-garbage.cfg", rand_bytes(21, 4096), c, ["not a text file", "line "]
    )
    case("cfg-utf16.cfg", CFG_TEXT.encode("utf-16"), c, ["not a text file", "line 1"])
    # a configuration file that is not there, named by a protocol
    variant(
        "cfg-missing-file.yaml",
        "seed: 3",
        "seed: 3\nconfig: no-such-microscope.cfg",
        c,
        ["no-such-microscope.cfg", "not found"],
        names="no-such-microscope.cfg",
    )
    variant(
        "cfg-directory.yaml",
        "seed: 3",
        "seed: 3\nconfig: models",
        c,
        ["got a directory"],
        names="models",
    )


def main(out: Path = HERE) -> dict[str, dict[str, Any]]:
    """Write the corpus and its manifest into ``out``; return the manifest."""
    global OUT
    OUT = out
    MANIFEST.clear()
    out.mkdir(parents=True, exist_ok=True)
    for p in out.iterdir():
        if p.is_file() and p.suffix in (".yaml", ".cfg"):
            p.unlink()
    for d in ("models", "scenes"):
        if (out / d).exists():
            shutil.rmtree(out / d)
    (out / "valid-base.yaml").write_text(BASE_TEXT)
    yaml_cases()
    type_cases()
    range_cases()
    seq_cases()
    name_cases()
    scene_cases()
    model_cases()
    cfg_cases()
    header = (
        "# The malformed-input corpus: file -> what `smartscope run` must say.\n"
        "# Written by generate.py (do not edit by hand). Each file is refused with\n"
        "# exit status 2 and one line starting 'error:' that contains every\n"
        "# `expect` string and the file's name (or `names`, when the error is about\n"
        "# a file the case names: a model, a scene, a configuration). Files ending\n"
        "# .cfg run as `--config` with valid-base.yaml; the others as the protocol.\n"
    )
    counts: dict[str, int] = {}
    for entry in MANIFEST.values():
        counts[entry["category"]] = counts.get(entry["category"], 0) + 1
    summary = "".join(f"#   {k}: {v}\n" for k, v in sorted(counts.items()))
    (out / "manifest.yaml").write_text(
        header
        + f"# {len(MANIFEST)} cases:\n"
        + summary
        + yaml.safe_dump(MANIFEST, sort_keys=True, width=200, allow_unicode=False)
    )
    return MANIFEST


if __name__ == "__main__":
    manifest = main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
    counts: dict[str, int] = {}
    for entry in manifest.values():
        counts[entry["category"]] = counts.get(entry["category"], 0) + 1
    print(f"{len(manifest)} cases: {counts}")
