"""The grid of a sweep: GRID.yaml read, expanded and validated into run protocols.

A grid is data (read by the strict YAML loader, never evaluated)::

    seeds: [1, 2, 3, 4]
    vary:
      laser_power_mw: [2, 5]
      sequence.time_plan.interval: [30, 60]

``vary`` maps a dotted protocol field (``reactions.0.max_step_um``: a number
indexes a list) to the values it takes; every combination of the values runs
once per seed. :func:`plan_sweep` builds each run's protocol from the base
protocol file and validates every one with
:func:`~smartscope.protocol.load_protocol` (the checks ``smartscope run``
makes) before anything runs, so a bad key or value is refused with nothing
written. It sits between the command line and :mod:`smartscope.sweep`, which
runs the planned protocols.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml

from smartscope.errors import SmartscopeError, printable
from smartscope.yaml_strict import YAMLInputError, key_lines, load_yaml_file

__all__ = [
    "MAX_RUNS",
    "PlannedRun",
    "SweepError",
    "SweepGrid",
    "SweepPlan",
    "load_grid",
    "plan_sweep",
]

#: Most runs one grid may expand to (combinations x seeds).
MAX_RUNS = 10_000
_GRID_KEYS = ("seeds", "vary")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+")


class SweepError(SmartscopeError, ValueError):
    """A sweep was refused (a bad grid, protocol or sweep folder); the message
    names the file, the line where known, the key and the value."""

    def __init__(
        self, message: str, *, path: str | Path | None = None, line: int | None = None
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.line = line
        where = []
        if path is not None:
            where.append(str(path))
        if line is not None:
            where.append(f"line {line}")
        super().__init__(
            printable((", ".join(where) + ": " if where else "") + message)
        )


@dataclass(frozen=True)
class SweepGrid:
    """A grid file, read and checked on its own (not yet against a protocol)."""

    path: Path
    seeds: tuple[int, ...] | None
    """The seeds every combination runs with (None: the protocol's own seed)."""
    vary: tuple[tuple[str, tuple[Any, ...]], ...]
    """(dotted key, its values) in the file's order."""
    lines: dict[tuple[Any, ...], int]
    """Key path -> 1-based line in the file (see :func:`~smartscope.yaml_strict.key_lines`)."""

    def combinations(self) -> list[dict[str, Any]]:
        """Every combination of the varied values, the first key slowest."""
        keys = [k for k, _ in self.vary]
        return [
            dict(zip(keys, values, strict=True))
            for values in itertools.product(*(v for _, v in self.vary))
        ]


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: a validated protocol and where it goes."""

    run_id: str
    """``c<combination>-seed<seed>``: names the run's folder."""
    combo: int
    """Index of the combination (0-based, in :meth:`SweepGrid.combinations` order)."""
    params: dict[str, Any]
    """Dotted key -> value of this combination."""
    seed: int
    protocol_yaml: str
    """The run's protocol (the base with the values and the seed applied)."""

    @property
    def label(self) -> str:
        """``key=value, key=value`` (``seed only`` when nothing is varied)."""
        return combo_label(self.params)


@dataclass(frozen=True)
class SweepPlan:
    """Every run of a sweep, validated."""

    protocol_path: Path
    protocol_name: str
    grid: SweepGrid
    runs: tuple[PlannedRun, ...]


def combo_label(params: dict[str, Any]) -> str:
    """``laser_power_mw=2, sequence.time_plan.interval=30``."""
    if not params:
        return "seed only"
    return ", ".join(f"{k}={_show(v, bare=True)}" for k, v in params.items())


def _show(value: Any, limit: int = 60, *, bare: bool = False) -> str:
    """``value`` as a message quotes it (JSON; ``bare``: a plain word unquoted)."""
    text = json.dumps(value, default=str, ensure_ascii=False)
    if bare and isinstance(value, str) and re.fullmatch(r"[\w.+-]+", value):
        text = value
    return text if len(text) <= limit else text[: limit - 3] + "..."


_KIND_OF = {list: "a list", dict: "a mapping", str: "text", bool: "a boolean"}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return _KIND_OF.get(type(value), type(value).__name__)


# ------------------------------------------------------------------ reading


def load_grid(path: str | Path) -> SweepGrid:
    """Read and check a grid file on its own. Raises :class:`SweepError`."""
    path = Path(path)
    if not path.exists():
        raise SweepError("grid file not found", path=path)
    if not path.is_file():
        raise SweepError("expected a grid YAML file, got a folder", path=path)
    try:
        doc = load_yaml_file(path, what="grid")
    except YAMLInputError as e:
        raise SweepError(e.problem, path=path, line=e.line) from None
    data = doc.data
    lines = key_lines(doc.node)

    def fail(loc: tuple[Any, ...], message: str) -> SweepError:
        return SweepError(message, path=path, line=lines.get(loc))

    if not isinstance(data, dict):
        got = "nothing (an empty file)" if data is None else _kind(data)
        raise fail(
            (), f"expected a mapping with seeds: and vary: at the top, got {got}"
        )
    for key in data:
        if key not in _GRID_KEYS:
            raise fail(
                (str(key),),
                f"unknown key {_show(key)}: a grid has seeds: (a list of seeds) "
                "and vary: (dotted protocol field: list of values)",
            )
    seeds = _read_seeds(data.get("seeds"), fail) if "seeds" in data else None
    vary = _read_vary(data.get("vary"), fail) if "vary" in data else ()
    n_runs = len(seeds or (0,))
    for _, values in vary:
        n_runs *= len(values)
    if n_runs > MAX_RUNS:
        raise fail(
            (),
            f"the grid expands to {n_runs:,} runs; the limit is {MAX_RUNS:,} "
            "(split it into several sweeps)",
        )
    return SweepGrid(path, seeds, vary, lines)


def _read_seeds(raw: Any, fail: Any) -> tuple[int, ...]:
    if not isinstance(raw, list) or not raw:
        raise fail(
            ("seeds",),
            f"seeds: expected a non-empty list of whole numbers >= 0, e.g. [1, 2, 3], "
            f"got {_show(raw)} ({_kind(raw)})",
        )
    seen: set[int] = set()
    for i, s in enumerate(raw):
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise fail(
                ("seeds", i),
                f"seeds: item {i} is {_show(s)} ({_kind(s)}); expected a whole "
                "number >= 0 (the simulator's seed)",
            )
        if s in seen:
            raise fail(("seeds", i), f"seeds: {s} is listed twice")
        seen.add(s)
    return tuple(raw)


def _read_vary(raw: Any, fail: Any) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise fail(
            ("vary",),
            f"vary: expected a mapping of dotted protocol fields to lists of "
            f"values, got {_kind(raw)}",
        )
    from smartscope.protocol import Protocol

    fields = list(Protocol.model_fields)
    out: list[tuple[str, tuple[Any, ...]]] = []
    for key, values in raw.items():
        loc = ("vary", str(key))
        parts = str(key).split(".")
        if not isinstance(key, str) or not all(_KEY.fullmatch(p) for p in parts):
            raise fail(
                loc,
                f"vary key {_show(key)}: expected a dotted protocol field such as "
                "laser_power_mw or sequence.time_plan.interval",
            )
        if parts[0] not in fields:
            close = difflib.get_close_matches(parts[0], fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise fail(
                loc,
                f"vary key {key!r}: {parts[0]!r} is not a protocol field{hint}; "
                f"the fields are {', '.join(fields)}",
            )
        if parts[0] == "seed":
            raise fail(loc, "vary key 'seed': list the seeds under seeds: instead")
        if parts[0] == "version":
            raise fail(loc, "vary key 'version': the protocol's version cannot vary")
        for other, _ in out:
            a, b = sorted((key, other), key=len)
            if b.startswith(a + "."):
                raise fail(loc, f"vary keys {a!r} and {b!r} overlap: keep one")
        if not isinstance(values, list) or not values:
            raise fail(
                loc,
                f"vary key {key!r}: expected a non-empty list of values, e.g. "
                f"[2, 5], got {_show(values)} ({_kind(values)})",
            )
        seen: dict[str, int] = {}
        for i, v in enumerate(values):
            ident = json.dumps(v, sort_keys=True, default=str)
            if ident in seen:
                raise fail(
                    (*loc, i),
                    f"vary key {key!r}: value {_show(v)} is listed twice "
                    f"(items {seen[ident]} and {i})",
                )
            seen[ident] = i
        out.append((key, tuple(values)))
    return tuple(out)


# ----------------------------------------------------------------- planning


def plan_sweep(protocol_path: str | Path, grid: SweepGrid) -> SweepPlan:
    """Every run of the sweep, each protocol validated; nothing is written.

    Each combination is applied to the protocol file's data and validated with
    :func:`~smartscope.protocol.load_protocol` (the checks ``smartscope run``
    makes); the seed, the only thing that differs between a combination's
    runs, is checked against the protocol's ``seed`` field. A relative
    ``config`` (relative to the protocol) and a relative ``scene`` path are
    made absolute, so that the run protocols read the same files from
    anywhere. Raises :class:`SweepError` (naming the grid file, the key and
    the value) or :class:`~smartscope.protocol.ProtocolError` (the base
    protocol itself is refused).
    """
    from smartscope.protocol import load_protocol

    protocol_path = Path(protocol_path)
    base = load_protocol(protocol_path)  # the base protocol, its own errors
    data = load_yaml_file(protocol_path, what="protocol").data
    _absolute_paths(data, protocol_path)
    seeds = grid.seeds
    if seeds is None:
        if base.seed is None:
            raise SweepError(
                "no seeds: and the protocol sets no seed; add e.g. seeds: [1, 2, 3]",
                path=grid.path,
            )
        seeds = (base.seed,)
    _check_seeds(seeds, grid)
    combos = grid.combinations()
    width = len(str(len(combos) - 1))
    runs: list[PlannedRun] = []
    with tempfile.TemporaryDirectory(prefix="smartscope-sweep-") as tmp:
        for i, params in enumerate(combos):
            varied = copy.deepcopy(data)
            for key, value in params.items():
                _apply(varied, key, value, grid)
            varied["seed"] = seeds[0]
            text = yaml.safe_dump(varied, sort_keys=False, allow_unicode=True)
            _validate(Path(tmp) / f"c{i}.yaml", text, params, grid, protocol_path)
            for seed in seeds:
                varied["seed"] = seed
                runs.append(
                    PlannedRun(
                        run_id=f"c{i:0{width}d}-seed{seed}",
                        combo=i,
                        params=params,
                        seed=seed,
                        protocol_yaml=yaml.safe_dump(
                            varied, sort_keys=False, allow_unicode=True
                        ),
                    )
                )
    return SweepPlan(protocol_path, base.name, grid, tuple(runs))


def _check_seeds(seeds: tuple[int, ...], grid: SweepGrid) -> None:
    """Each seed as the protocol's own ``seed`` field takes it."""
    from pydantic import TypeAdapter, ValidationError

    from smartscope.protocol import Protocol

    info = Protocol.model_fields["seed"]
    adapter: TypeAdapter[Any] = TypeAdapter(Annotated[info.annotation, info])
    for i, seed in enumerate(seeds):
        try:
            adapter.validate_python(seed)
        except ValidationError as e:
            raise SweepError(
                f"seeds: item {i} ({seed}) is not a valid protocol seed: "
                f"{e.errors()[0]['msg']}",
                path=grid.path,
                line=grid.lines.get(("seeds", i)),
            ) from None


def _absolute_paths(data: dict[str, Any], protocol_path: Path) -> None:
    cfg = data.get("config")
    if isinstance(cfg, str) and not Path(cfg).is_absolute():
        data["config"] = str((protocol_path.parent / cfg).resolve())
    scene = data.get("scene")
    if isinstance(scene, str) and Path(scene).suffix and not Path(scene).is_absolute():
        data["scene"] = str(Path(scene).resolve())  # read from the working folder


def _apply(data: dict[str, Any], key: str, value: Any, grid: SweepGrid) -> None:
    """Set dotted ``key`` of protocol ``data`` to ``value`` (copied)."""
    parts = key.split(".")
    node: Any = data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        here = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise SweepError(
                    f"vary key {key!r}: {'.'.join(parts[:depth])} is a list of "
                    f"{len(node)} item(s) in the protocol; {part!r} is not one "
                    f"of its indices 0-{len(node) - 1}",
                    path=grid.path,
                    line=grid.lines.get(("vary", key)),
                )
            idx = int(part)
            if last:
                node[idx] = copy.deepcopy(value)
            else:
                node = node[idx]
        elif isinstance(node, dict):
            if last:
                node[part] = copy.deepcopy(value)
            else:
                if node.get(part) is None:
                    if parts[depth + 1].isdigit():
                        raise SweepError(
                            f"vary key {key!r}: the protocol has no {here} "
                            f"list, so no item {parts[depth + 1]} to set",
                            path=grid.path,
                            line=grid.lines.get(("vary", key)),
                        )
                    node[part] = {}
                node = node[part]
        else:
            raise SweepError(
                f"vary key {key!r}: {'.'.join(parts[:depth])} is {_kind(node)} "
                f"({_show(node)}) in the protocol, so it has no field {here!r}",
                path=grid.path,
                line=grid.lines.get(("vary", key)),
            )


def _validate(
    tmp_file: Path,
    text: str,
    params: dict[str, Any],
    grid: SweepGrid,
    protocol_path: Path,
) -> None:
    """Refuse combination ``params`` unless its protocol loads as a run's would."""
    from smartscope.protocol import ProtocolError, load_protocol

    tmp_file.write_text(text, encoding="utf-8")
    try:
        load_protocol(tmp_file)
    except ProtocolError as e:
        why = _without_place(str(e), e.path)
        blamed = _blamed_key(e.field, why, params)
        if blamed is not None:
            value = params[blamed]
            index = _value_index(grid, blamed, value)
            raise SweepError(
                f"vary key {blamed!r}, value {_show(value)}: not a valid value for "
                f"{protocol_path}: {why}"
                + (f" (with {combo_label(params)})" if len(params) > 1 else ""),
                path=grid.path,
                line=grid.lines.get(("vary", blamed, index)),
            ) from None
        raise SweepError(
            f"the combination {combo_label(params)} does not make a valid protocol "
            f"from {protocol_path}: {why}",
            path=grid.path,
            line=grid.lines.get(("vary",)),
        ) from None


def _value_index(grid: SweepGrid, key: str, value: Any) -> int:
    values = dict(grid.vary)[key]
    for i, v in enumerate(values):
        if v == value and type(v) is type(value):
            return i
    return 0


def _blamed_key(field: str | None, why: str, params: dict[str, Any]) -> str | None:
    """The varied key to blame for a refused combination: the one the refused
    ``field`` (dotted) belongs to, else the one the reason ``why`` names
    (``laser_power_mw 5 exceeds limits.max_laser_mw 3``), else the only one."""
    for key in params:
        if field and (
            field == key or field.startswith(key + ".") or key.startswith(field + ".")
        ):
            return key
    named = [k for k in params if re.search(rf"(?<![\w.]){re.escape(k)}(?![\w])", why)]
    if len(named) == 1:
        return named[0]
    return next(iter(params)) if len(params) == 1 else None


def _without_place(message: str, path: Path | None) -> str:
    """A ProtocolError's message less its (temporary) file and line."""
    if path is not None and message.startswith(str(path)):
        message = message[len(str(path)) :]
        message = re.sub(r"^, line \d+", "", message)
        message = message.removeprefix(", ").removeprefix(": ")
    return message
