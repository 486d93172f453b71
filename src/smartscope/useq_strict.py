"""A protocol's ``sequence`` read strictly: useq-schema with ``extra="forbid"``.

useq-schema's models ignore keys they do not know, so ``exposur: 20`` in a
channel runs at the default exposure and ``{interval, loops, duration}``
quietly drops ``loops``. :func:`check_raw_sequence` walks the raw mapping
against useq's own models (their ``model_fields`` names and aliases) before
pydantic sees it and refuses, with the field path, every key no model there
takes; where a field is a union of models (time, z and grid plans) the keys
must all belong to one member, and that member must accept the values (else
pydantic would fall back to another member and drop them). Each part is
validated on its own, so an error names its list index
(``sequence.channels.1.exposure``), which useq's nested validators lose.

:func:`plan_problems` then refuses what useq accepts but cannot mean: a
negative interval or duration, an interval of 0 with a duration (endless),
a duration over a single loop (useq divides by zero), z steps of 0 or less,
z plans with no plane or too many, grid overlaps of 100 % or more, grids and
random point sets too large to lay out.
"""

from __future__ import annotations

import difflib
import math
import re
import types
import warnings
from collections.abc import Sequence
from typing import Annotated, Any, Union, get_args, get_origin

import useq
from pydantic import AliasChoices, AliasPath, BaseModel, ValidationError
from useq._position import PositionBase
from useq._time import MultiPhaseTimePlan

__all__ = [
    "MAX_GRID_TILES",
    "MAX_Z_PLANES",
    "SequenceFieldError",
    "check_raw_sequence",
    "clean_loc",
    "describe_error",
    "plan_problems",
]

#: Most planes a z plan may have.
MAX_Z_PLANES = 10_000
#: Most tiles (rows x columns) or random points a grid plan may have.
MAX_GRID_TILES = 10_000

Loc = tuple[str | int, ...]

# keys a model's "before" validator renames to a field (useq's own casts)
_CAST_KEYS: dict[type[BaseModel], frozenset[str]] = {
    PositionBase: frozenset({"row", "col"}),
}
# models that useq builds from a plain list, and the field the list becomes
_FROM_LIST: dict[type[BaseModel], str] = {MultiPhaseTimePlan: "phases"}


class SequenceFieldError(ValueError):
    """A part of the raw sequence was refused; ``loc`` is its field path."""

    def __init__(self, loc: Loc, message: str) -> None:
        self.loc = loc
        self.message = message
        super().__init__(f"{'.'.join(map(str, loc))}: {message}")


def describe_error(err: Any) -> str:
    """One pydantic error (an item of ``ValidationError.errors()``) as text,
    with the offending input quoted (shortened) where it is a plain value."""
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err.get("type") != "missing" and "input" in err:
        value = err["input"]
        if not isinstance(value, dict | list | tuple):
            text = repr(value)
            if len(text) > 80:
                text = text[:77] + "..."
            msg += f" (got {text})"
    return msg


def check_raw_sequence(raw: Any, *, loc: Loc = ("sequence",)) -> None:
    """Refuse keys useq would ignore and union members it would fall back from.

    ``raw`` is the protocol's ``sequence`` as read from YAML; anything that is
    not a mapping is left to pydantic. Raises :class:`SequenceFieldError`.
    """
    _walk(raw, [useq.MDASequence], [], loc)


# ------------------------------------------------------------------ the walk


def _split(annotations: Sequence[Any]) -> tuple[list[type[BaseModel]], list[Any]]:
    """The models a mapping may be read as, and the annotations a list's items
    may be read as, in these annotations (unions, Optional, Annotated unpacked)."""
    models: list[type[BaseModel]] = []
    items: list[Any] = []
    todo = list(annotations)
    while todo:
        a = todo.pop(0)
        origin = get_origin(a)
        if origin is Annotated:
            todo.append(get_args(a)[0])
        elif origin is Union or origin is types.UnionType:
            todo.extend(get_args(a))
        elif isinstance(a, type) and issubclass(a, BaseModel):
            if a not in models:
                models.append(a)
        elif origin in (tuple, list, set, frozenset, Sequence):
            args = [x for x in get_args(a) if x is not Ellipsis]
            items.extend(args)
    return models, items


def _field_keys(model: type[BaseModel]) -> dict[str, str]:
    """Every key ``model`` takes (names, aliases, useq's casts) → its field name."""
    keys: dict[str, str] = {}
    for name, info in model.model_fields.items():
        keys[name] = name
        for alias in (info.alias, info.validation_alias):
            if isinstance(alias, str):
                keys[alias] = name
            elif isinstance(alias, AliasChoices):
                for choice in alias.choices:
                    first = choice.path[0] if isinstance(choice, AliasPath) else choice
                    if isinstance(first, str):
                        keys[first] = name
    for base, extra in _CAST_KEYS.items():
        if issubclass(model, base):
            for k in extra:
                keys.setdefault(k, f"grid_{k}")
    return keys


def _walk(raw: Any, models: list[type[BaseModel]], items: list[Any], loc: Loc) -> None:
    if isinstance(raw, dict):
        if models:
            _walk_mapping(raw, models, loc)
    elif isinstance(raw, list):
        from_list = [m for m in models if m in _FROM_LIST]
        if from_list:
            field = from_list[0].model_fields[_FROM_LIST[from_list[0]]]
            models, items = _split([field.annotation])
        sub_models, sub_items = _split(items)
        for i, item in enumerate(raw):
            if sub_models and not _fits_shape(item, sub_models):
                names = " or ".join(m.__name__ for m in sub_models)
                fields = ", ".join(sub_models[0].model_fields)
                raise SequenceFieldError(
                    (*loc, i),
                    f"expected a mapping of {names} fields ({fields}), got {item!r}",
                )
            _walk(item, sub_models, sub_items, (*loc, i))


def _fits_shape(item: Any, models: list[type[BaseModel]]) -> bool:
    """Whether a list item has a shape useq turns into one of ``models``:
    a mapping, a channel's name, a phase list."""
    if isinstance(item, dict):
        return True
    if isinstance(item, str):
        return useq.Channel in models
    if isinstance(item, list):
        return any(m in _FROM_LIST for m in models)
    return False


def _walk_mapping(raw: dict[Any, Any], models: list[type[BaseModel]], loc: Loc) -> None:
    for k in raw:
        if not isinstance(k, str):
            raise SequenceFieldError((*loc, k), f"a field name must be text, got {k!r}")
    keys = {m: _field_keys(m) for m in models}
    fitting = [m for m in models if all(k in keys[m] for k in raw)]
    if not fitting:
        _refuse_keys(raw, models, keys, loc)
    if useq.MDASequence in fitting:
        _check_absolute_grid(raw, loc)
    for k, value in raw.items():
        annotations = [
            m.model_fields[keys[m][k]].annotation
            for m in fitting
            if keys[m][k] in m.model_fields
        ]
        sub_models, sub_items = _split(annotations)
        _walk(value, sub_models, sub_items, (*loc, k))
    failures: list[tuple[Loc, str, list[str] | None]] = []
    for m in fitting:
        try:
            with warnings.catch_warnings():
                # useq warns, then drops, x/y that an absolute grid overrides
                warnings.filterwarnings(
                    "error", message=".*is ignored when", category=UserWarning
                )
                m.model_validate(raw)
        except ValidationError as e:
            errors = e.errors()
            missing = [
                str(x["loc"][-1]) for x in errors if x["type"] == "missing" and x["loc"]
            ]
            err = errors[0]
            where = (*loc, *clean_loc(err["loc"]))
            complete = len(missing) == len(errors)
            failures.append((where, describe_error(err), missing if complete else None))
        except UserWarning as e:
            failures.append((loc, f"useq would ignore a value here: {e}", None))
        except (TypeError, ValueError, ArithmeticError) as e:
            failures.append((loc, f"cannot read this value: {e}", None))
        else:
            return
    if len(failures) > 1 and all(f[2] for f in failures):
        options = " or ".join(", ".join(f[2] or ()) for f in failures)
        raise SequenceFieldError(
            loc, f"incomplete: {', '.join(map(str, raw))} needs {options} as well"
        )
    if failures:
        raise SequenceFieldError(*failures[0][:2])


def _check_absolute_grid(raw: dict[str, Any], loc: Loc) -> None:
    """useq drops (with a warning) the x and y of positions when the grid plan
    is absolute (edges or a polygon place the tiles): refuse them instead."""
    grid = raw.get("grid_plan")
    positions = raw.get("stage_positions")
    if not (isinstance(grid, dict) and isinstance(positions, list)):
        return
    if not {"top", "bottom", "left", "right", "vertices"} & set(grid):
        return
    for i, p in enumerate(positions):
        if not isinstance(p, dict):
            continue
        sub = p.get("sequence")
        if isinstance(sub, dict) and sub.get("grid_plan"):
            continue  # a position's own grid starts from its x and y
        if p.get("x") is not None or p.get("y") is not None:
            raise SequenceFieldError(
                (*loc, "stage_positions", i),
                "x and y would be ignored: the absolute grid_plan (edges or "
                "vertices) places every tile; remove them, or use a relative "
                "grid (rows and columns, or width and height)",
            )


def _refuse_keys(
    raw: dict[str, Any],
    models: list[type[BaseModel]],
    keys: dict[type[BaseModel], dict[str, str]],
    loc: Loc,
) -> None:
    known = {k for m in models for k in keys[m]}
    names = sorted({n for m in models for n in m.model_fields})
    unknown = [k for k in raw if k not in known]
    if unknown:
        k = unknown[0]
        close = difflib.get_close_matches(k, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SequenceFieldError(
            (*loc, k),
            f"unknown field{hint}; expected one of {', '.join(names)}",
        )
    choices = "; ".join(f"{m.__name__} ({', '.join(m.model_fields)})" for m in models)
    raise SequenceFieldError(
        loc,
        f"the fields {', '.join(raw)} do not belong together; give the fields "
        f"of one of: {choices}",
    )


def _model_names(root: type[BaseModel]) -> frozenset[str]:
    """Class names of every model reachable from ``root``'s fields."""
    seen: dict[str, type[BaseModel]] = {}
    todo = [root]
    while todo:
        m = todo.pop()
        if m.__name__ in seen:
            continue
        seen[m.__name__] = m
        for info in m.model_fields.values():
            models, items = _split([info.annotation])
            todo += models + _split(items)[0]
    return frozenset(seen)


_USEQ_MODELS = _model_names(useq.MDASequence)
_PYDANTIC_STEP = re.compile(r"[a-z][a-z-]*\[.*\]")  # function-after[...], tuple[...]


def clean_loc(loc: Sequence[Any]) -> Loc:
    """A pydantic error location without the union members and validator
    functions pydantic puts in it (``TIntervalLoops``, ``function-after[...]``)."""
    return tuple(
        x
        for x in loc
        if not (
            isinstance(x, str) and (x in _USEQ_MODELS or _PYDANTIC_STEP.fullmatch(x))
        )
    )


# -------------------------------------------------------- degenerate plans


def plan_problems(
    seq: useq.MDASequence, *, prefix: str = "sequence"
) -> list[tuple[str, str]]:
    """(field, why) for every plan in ``seq`` (positions' own included) that
    useq accepts but that cannot mean what it says."""
    out: list[tuple[str, str]] = []
    if seq.time_plan is not None:
        out += _time_problems(seq.time_plan, f"{prefix}.time_plan")
    if seq.z_plan is not None:
        out += _z_problems(seq.z_plan, f"{prefix}.z_plan")
    if seq.grid_plan is not None:
        out += _grid_problems(seq.grid_plan, f"{prefix}.grid_plan")
    if isinstance(seq.stage_positions, tuple):
        for i, pos in enumerate(seq.stage_positions):
            if pos.sequence is not None:
                out += plan_problems(
                    pos.sequence, prefix=f"{prefix}.stage_positions.{i}.sequence"
                )
    return out


def _time_problems(tp: Any, fld: str) -> list[tuple[str, str]]:
    if isinstance(tp, MultiPhaseTimePlan):
        if not tp.phases:
            return [(fld, "a time plan given as a list needs at least one phase")]
        out: list[tuple[str, str]] = []
        for i, phase in enumerate(tp.phases):
            out += _time_problems(phase, f"{fld}.{i}")
        return out
    fields = type(tp).model_fields
    out = []
    for name in ("interval", "duration"):
        if name in fields:
            s = getattr(tp, name).total_seconds()
            if s < 0:
                out.append((f"{fld}.{name}", f"must not be negative (got {s:g} s)"))
    if (
        "interval" in fields
        and "duration" in fields
        and not out
        and tp.interval.total_seconds() <= 0
    ):
        out.append(
            (
                f"{fld}.interval",
                "an interval of 0 s with a duration never ends; give "
                "interval and loops for frames as fast as possible",
            )
        )
    if "duration" in fields and "loops" in fields and tp.loops < 2:
        out.append(
            (
                f"{fld}.loops",
                f"a duration needs loops of 2 or more to space them (got "
                f"{tp.loops}); for one time point give interval: 0 and loops: 1",
            )
        )
    return out


def _z_problems(zp: Any, fld: str) -> list[tuple[str, str]]:
    if isinstance(zp, useq.ZRelativePositions | useq.ZAbsolutePositions):
        name = "relative" if isinstance(zp, useq.ZRelativePositions) else "absolute"
        values = list(getattr(zp, name))
        if not values:
            return [(f"{fld}.{name}", "lists no plane; give at least one")]
        if not all(math.isfinite(v) for v in values):
            return [(f"{fld}.{name}", "every plane must be a finite number")]
        if len(values) > MAX_Z_PLANES:
            return [
                (
                    f"{fld}.{name}",
                    f"lists {len(values):,} planes; at most {MAX_Z_PLANES:,}",
                )
            ]
        return []
    numbers = {
        k: float(getattr(zp, k))
        for k in ("top", "bottom", "range", "above", "below", "step")
        if k in type(zp).model_fields
    }
    for k, v in numbers.items():
        if not math.isfinite(v):
            return [(f"{fld}.{k}", f"must be a finite number (got {v})")]
    step = numbers.get("step", 1.0)
    if step <= 0:
        return [
            (
                f"{fld}.step",
                f"must be greater than 0 µm (got {step:g}); for a single plane "
                "leave z_plan out",
            )
        ]
    for k in ("range", "above", "below"):
        if numbers.get(k, 0.0) < 0:
            return [(f"{fld}.{k}", f"must not be negative (got {numbers[k]:g} µm)")]
    if "top" in numbers and numbers["top"] < numbers["bottom"]:
        return [
            (
                f"{fld}.top",
                f"top ({numbers['top']:g} µm) is below bottom "
                f"({numbers['bottom']:g} µm): no plane between them",
            )
        ]
    try:
        n: float = zp.num_positions()
    except (OverflowError, ValueError):
        n = math.inf
    if n > MAX_Z_PLANES:
        return [(fld, f"makes {n:,} planes; at most {MAX_Z_PLANES:,} (a larger step?)")]
    return []


def _grid_problems(gp: Any, fld: str) -> list[tuple[str, str]]:
    overlap = getattr(gp, "overlap", None)
    if overlap is not None and not all(math.isfinite(o) and o < 100 for o in overlap):
        return [
            (
                f"{fld}.overlap",
                f"must be below 100 % (got {tuple(overlap)}); at 100 % or more "
                "the tiles do not advance",
            )
        ]
    for k in ("top", "bottom", "left", "right", "width", "height"):
        v = getattr(gp, k, None) if k in type(gp).model_fields else None
        if isinstance(v, float) and not math.isfinite(v):
            return [(f"{fld}.{k}", f"must be a finite number (got {v})")]
    n = None
    if isinstance(gp, useq.GridRowsColumns):
        n = gp.rows * gp.columns
    elif isinstance(gp, useq.RandomPoints):
        n = gp.num_points
    if n is not None and n > MAX_GRID_TILES:
        return [(fld, f"makes {n:,} tiles; at most {MAX_GRID_TILES:,}")]
    return []
