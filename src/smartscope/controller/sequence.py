"""What a useq sequence asks of the controller: the fields it cannot honour,
the axes it uses, grid plans laid out for the field of view. Pure functions of
the sequence, used by the protocol's validation and by the plan."""

from __future__ import annotations

import math
from typing import Any

import useq

__all__ = [
    "acquire_every",
    "num_timepoints",
    "time_first",
    "unsupported_fields",
    "used_axes",
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
