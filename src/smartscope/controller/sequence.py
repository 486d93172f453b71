"""What a useq sequence asks of the controller: the fields it cannot honour,
the axes it uses, grid plans laid out for the field of view. Pure functions of
the sequence, used by the protocol's validation and by the plan."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from typing import Any

import useq

__all__ = [
    "acquire_every",
    "num_timepoints",
    "shortest_interval_s",
    "time_first",
    "timepoint_blocks",
    "timepoints",
    "unsupported_fields",
    "used_axes",
    "verbatim_blocks",
    "with_fov",
]


def unsupported_fields(seq: useq.MDASequence) -> list[tuple[str, str]]:
    """(field, why) for every part of ``seq`` the controller cannot honour."""
    out: list[tuple[str, str]] = []
    if seq.keep_shutter_open_across:
        out.append(
            (
                "sequence.keep_shutter_open_across",
                "a shutter held open between frames puts light on the sample that no "
                "frame accounts for (the dose ledger counts exposures); remove it",
            )
        )
    if seq.setup is not None:
        out.append(
            (
                "sequence.setup",
                "a setup event is not supported; set the objective and light with "
                "the protocol's `objective` and `laser_power_mw`",
            )
        )
    for i, ch in enumerate(seq.channels):
        if ch.camera is not None:
            out.append(
                (
                    f"sequence.channels.{i}.camera",
                    "multi-camera acquisition is not supported",
                )
            )
    for i, pos in enumerate(seq.stage_positions):
        sub = pos.sequence
        if sub is None:
            continue
        if sub.channels and any(
            c.acquire_every > 1 for c in (*seq.channels, *sub.channels)
        ):
            out.append(
                (
                    f"sequence.stage_positions.{i}.sequence.channels",
                    "acquire_every with channels inside a position is not supported "
                    "(useq applies the outer channels' setting to the inner ones)",
                )
            )
        if sub.time_plan is not None:
            out.append(
                (
                    f"sequence.stage_positions.{i}.sequence.time_plan",
                    "a time plan inside a position is not supported; use the "
                    "sequence's time_plan",
                )
            )
        if sub.stage_positions:
            out.append(
                (
                    f"sequence.stage_positions.{i}.sequence.stage_positions",
                    "positions inside a position are not supported",
                )
            )
        for f, why in unsupported_fields(
            sub.model_copy(update={"stage_positions": ()})
        ):
            out.append((f"sequence.stage_positions.{i}.{f}", why))
    tp = seq.time_plan
    if tp is not None and not time_first(seq) and math.isinf(num_timepoints(tp)):
        out.append(
            (
                "sequence.axis_order",
                f"{seq.axis_order!r} puts time inside another axis, which needs a "
                "finite time_plan (give loops or a duration)",
            )
        )
    return out


def num_timepoints(tp: Any) -> float:
    try:
        return float(tp.num_timepoints())
    except (OverflowError, ValueError, TypeError):
        return math.inf


#: time points of a plan looked at for its shortest interval
INTERVAL_LOOKAHEAD = 10_000


def shortest_interval_s(tp: Any) -> float | None:
    """The shortest planned time between two consecutive points of the time
    plan ``tp``, s (0: as fast as possible), among its first
    :data:`INTERVAL_LOOKAHEAD`; None with fewer than two points."""
    offsets = [float(t) for t in itertools.islice(iter(tp), INTERVAL_LOOKAHEAD)]
    if len(offsets) < 2:
        return None
    return max(0.0, min(b - a for a, b in itertools.pairwise(offsets)))


def used_axes(seq: useq.MDASequence) -> str:
    has = {
        "t": seq.time_plan is not None,
        "p": bool(seq.stage_positions),
        "g": seq.grid_plan is not None,
        "c": bool(seq.channels),
        "z": seq.z_plan is not None,
    }
    return "".join(ax for ax in seq.axis_order if has.get(ax))


def time_first(seq: useq.MDASequence) -> bool:
    used = used_axes(seq)
    return not used or used[0] == "t" or "t" not in used


def acquire_every(seq: useq.MDASequence, ev: useq.MDAEvent) -> int:
    c = ev.index.get("c")
    if c is None:
        return 1
    channels = seq.channels
    p = ev.index.get("p")
    if p is not None and p < len(seq.stage_positions):
        sub = seq.stage_positions[p].sequence
        if sub is not None and sub.channels:
            channels = sub.channels
    return channels[c].acquire_every if c < len(channels) else 1


def with_fov(seq: useq.MDASequence, fov_um: tuple[float, float]) -> useq.MDASequence:
    """Grid plans laid out for this field of view (as pymmcore-plus's engine
    does in ``setup_sequence``, which a generator-fed run never calls)."""
    w, h = fov_um

    def fix(s: useq.MDASequence) -> useq.MDASequence:
        upd: dict[str, Any] = {}
        if s.grid_plan is not None:
            upd["grid_plan"] = s.grid_plan.model_copy(
                update={"fov_width": w, "fov_height": h}
            )
        if s.stage_positions:
            upd["stage_positions"] = tuple(
                p.model_copy(update={"sequence": fix(p.sequence)})
                if p.sequence is not None
                else p
                for p in s.stage_positions
            )
        return s.model_copy(update=upd) if upd else s

    return fix(seq)


def timepoints(
    tp: Any, override: Callable[[], float | None]
) -> Iterator[tuple[int, float, float | None]]:
    """(index, due_s, planned interval to the next or None) of a time plan's
    points, as useq times them until ``override()`` gives an interval: from
    then on every interval is that. The plan keeps its number of time points,
    or, for an interval-and-duration plan, its duration."""
    offsets = iter(tp)
    duration = getattr(tp, "duration", None)
    span = (
        duration.total_seconds()
        if duration is not None and not hasattr(tp, "loops")
        else None
    )
    due = 0.0
    nxt = next(offsets, None)
    for k in itertools.count():
        cur, nxt = nxt, next(offsets, None)
        step = override()
        if k > 0 and step is not None:
            due += step
            if (span is not None and due > span + 1e-9) or (
                span is None and cur is None
            ):
                return
        elif cur is None:
            return
        else:
            due = float(cur)
        planned = float(nxt) - due if step is None and nxt is not None else None
        yield k, due, planned


#: events of a block, each with its channel's ``acquire_every``
BlockEvents = list[tuple[useq.MDAEvent, int]]


def timepoint_blocks(seq: useq.MDASequence) -> list[BlockEvents]:
    """One time point of ``seq`` (which has no time plan), as useq lays it
    out, in blocks: one position's channels, grid and z-stack each; the whole
    time point when another axis is outside the positions (``tcpz``)."""
    from useq._iter_sequence import iter_sequence

    blocks: list[BlockEvents] = []
    last_p: object = object()
    used = used_axes(seq)
    # a time point of a sequence with no other axis is one frame
    events = iter_sequence(seq) if used else [useq.MDAEvent()]
    by_position = used.lstrip("t")[:1] == "p"
    for ev in events:
        p = ev.index.get("p") if by_position else None
        if p != last_p or not blocks:
            blocks.append([])
            last_p = p
        blocks[-1].append((ev, acquire_every(seq, ev)))
    return blocks


def verbatim_blocks(seq: useq.MDASequence) -> Iterator[BlockEvents]:
    """``seq``'s own events in blocks: runs that share time, position and
    grid tile (channels and z-stacks stay together)."""
    from useq._iter_sequence import iter_sequence

    outer = [a for a in used_axes(seq) if a in "tpg"]
    current: BlockEvents = []
    key: tuple[Any, ...] | None = None
    for ev in iter_sequence(seq):
        k = tuple(ev.index.get(a) for a in outer)
        if key is not None and k != key and current:
            yield current
            current = []
        key = k
        current.append((ev, 1))
    if current:
        yield current
