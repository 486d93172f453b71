"""What to acquire: the protocol's useq sequence, changed while it runs.

The events come from useq-schema itself (``useq.iter_sequence``): the plan
never re-implements the order of time, positions, grid, channels and z. What a
run may change is kept as overlays on those events: a shift of each position
(moved by a reaction, refocused), an exposure per channel, the interval from a
time point on, and positions added to the following time points.

Two modes, chosen from ``axis_order``:

- time outermost (``tpgcz``, the usual time-lapse): the plan iterates one time
  point at a time from a template (the sequence without its time plan, so new
  positions can join it), applying ``acquire_every`` and the time point's start
  time itself. Intervals may change and positions may be added; infinite time
  plans run until stopped.
- time inside another axis (``ptgcz``: each position's whole time-lapse in
  turn): the sequence's own events, verbatim, with the overlays; the interval
  and the position list cannot change (refused with that reason).

The plan is thread-safe; it knows nothing of analysis or hardware. Its events
are grouped in :class:`Block` s (one position of one time point): changes take
effect at block boundaries, never inside a position's channels and z-stack.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import useq
from useq._iter_sequence import iter_sequence

from smartscope.controller.sequence import (
    acquire_every,
    num_timepoints,
    time_first,
    unsupported_fields,
    used_axes,
    with_fov,
)

__all__ = ["Block", "Plan", "PlanView", "unsupported_fields"]


@dataclass(frozen=True)
class PlanView:
    """A snapshot of the plan: what a reaction and the limits may know."""

    #: position name -> (x_um, y_um, z_um); None where the plan does not set it
    positions: dict[str, tuple[float | None, float | None, float | None]]
    interval_s: float
    n_positions: int


@dataclass
class _Position:
    name: str
    #: useq position as the protocol wrote it (None: the plan has no positions)
    source: useq.Position | None
    indexed: bool
    #: shift of every event of this position from the template, µm
    shift: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])

    def coords(self, anchor_z: float | None) -> tuple[float | None, ...]:
        s = self.source
        x = None if s is None or s.x is None else s.x + self.shift[0]
        y = None if s is None or s.y is None else s.y + self.shift[1]
        z0 = s.z if s is not None and s.z is not None else anchor_z
        z = None if z0 is None else z0 + self.shift[2]
        return (x, y, z)


@dataclass
class Block:
    """The events of one position at one time point (or of one time point, when
    the plan has no positions). ``events()`` resolves them with the plan's
    overlays as they are when it is called."""

    t_index: int | None
    p_index: int | None
    new_timepoint: bool
    due_s: float | None
    _plan: Plan
    _events: list[tuple[useq.MDAEvent, int]]

    def events(self) -> list[useq.MDAEvent]:
        return self._plan._resolve(self)


class Plan:
    """The sequence to acquire plus what the run changed.

    Parameters
    ----------
    sequence : useq.MDASequence
        As the protocol gives it (validated: :func:`unsupported_fields` empty).
    focus_um : float or None
        Focus position at the start: the reference of relative z plans at
        positions that name no z (None: no focus device).
    fov_um : (width_um, height_um)
        Field of view, for grid plans given by edges or overlap.
    default_exposure_ms : float
        Exposure of channels that name none (the camera's at the start).
    """

    def __init__(
        self,
        sequence: useq.MDASequence,
        *,
        focus_um: float | None,
        fov_um: tuple[float, float],
        default_exposure_ms: float,
    ) -> None:
        seq = with_fov(sequence, fov_um)
        self.sequence = seq
        self.dynamic = time_first(seq)
        self._lock = threading.Lock()
        self._default_exposure = float(default_exposure_ms)
        self._exposure: dict[str | None, float] = {}
        self._interval_override: float | None = None
        self._interval_now = 0.0
        # the focus a position without z is imaged at: the focus at the start
        # for relative z plans (so stacks do not creep), 0 for absolute ones
        # (then z holds a correction), None without a z plan (Z is not moved)
        zp = seq.z_plan
        self._rel_anchor = focus_um if zp is not None and zp.is_relative else None
        self._anchor_z = None if zp is None else (self._rel_anchor or 0.0)
        if seq.stage_positions:
            self._positions = [
                _Position(p.name or f"p{i}", p, True)
                for i, p in enumerate(seq.stage_positions)
            ]
        else:
            self._positions = [_Position("p0", None, False)]
        self._template_cache: (
            tuple[int, list[list[tuple[useq.MDAEvent, int]]]] | None
        ) = None

    # ------------------------------------------------------------ reading

    @property
    def has_time(self) -> bool:
        return self.sequence.time_plan is not None

    def view(self) -> PlanView:
        with self._lock:
            return PlanView(
                positions={p.name: p.coords(self._anchor_z) for p in self._positions},
                interval_s=self._interval_now,
                n_positions=len(self._positions),
            )

    def position_index(self, name: str | None) -> int | None:
        with self._lock:
            for i, p in enumerate(self._positions):
                if p.name == name:
                    return i
        return None

    def coords(self, index: int) -> tuple[float | None, ...]:
        """(x_um, y_um, z_um) of position ``index`` now (None: not set by the plan)."""
        with self._lock:
            return self._positions[index].coords(self._anchor_z)

    def channels(self) -> list[str]:
        return [c.config for c in self.sequence.channels]

    def exposure_ms(self, channel: str | None) -> float:
        """The exposure the next frame of ``channel`` gets, ms."""
        with self._lock:
            return self._exposure_for(channel)

    def _exposure_for(self, channel: str | None) -> float:
        if channel in self._exposure:
            return self._exposure[channel]
        if None in self._exposure:
            return self._exposure[None]
        for c in self.sequence.channels:
            if c.config == channel and c.exposure is not None:
                return float(c.exposure)
        return self._default_exposure

    def preview(self) -> list[useq.MDAEvent]:
        """One time point's events as they would run now (for checks)."""
        if self.dynamic:
            blocks = self._template()
            fake = [Block(0, None, False, None, self, b) for b in blocks]
            return [e for b in fake for e in self._resolve(b, filter_every=False)]
        seq = self.sequence
        if seq.time_plan is not None:
            seq = seq.model_copy(update={"time_plan": None})
        p_of = _p_index
        with self._lock:
            return [self._overlay(e, p_of(e)) for e in iter_sequence(seq)]

    def events_per_timepoint(self) -> int:
        return len(self.preview())

    def n_timepoints(self) -> float:
        tp = self.sequence.time_plan
        return 1.0 if tp is None else num_timepoints(tp)

    # ------------------------------------------------------------ changes

    def move(
        self,
        index: int,
        *,
        x_um: float | None = None,
        y_um: float | None = None,
        z_um: float | None = None,
    ) -> bool:
        """Move position ``index`` (its later events follow). False when the plan
        does not set that coordinate for it (the caller moves the hardware)."""
        with self._lock:
            pos = self._positions[index]
            cur = pos.coords(self._anchor_z)
            done = True
            for axis, value in enumerate((x_um, y_um, z_um)):
                if value is None:
                    continue
                if cur[axis] is None:
                    done = False
                    continue
                pos.shift[axis] += value - cur[axis]
            return done

    def set_exposure(self, channel: str | None, exposure_ms: float) -> float:
        """Exposure of ``channel`` (None: every channel) from the next block; the
        previous value."""
        with self._lock:
            before = self._exposure_for(channel)
            if channel is None:
                self._exposure = {None: float(exposure_ms)}
            else:
                self._exposure[channel] = float(exposure_ms)
            return before

    def set_interval(self, interval_s: float) -> float:
        """Interval from the next time point on; the previous value."""
        with self._lock:
            before = self._interval_now
            self._interval_override = float(interval_s)
            self._interval_now = float(interval_s)
            return before

    def add_position(
        self, *, x_um: float, y_um: float, z_um: float | None, name: str | None
    ) -> str:
        """A new position, visited from the next time point; its name."""
        with self._lock:
            if not self._positions[0].indexed:
                # the plan had no positions: the place it was imaging becomes one
                self._positions = []
            names = {p.name for p in self._positions}
            name = name or f"added{len(self._positions)}"
            base = name
            for k in itertools.count(2):
                if name not in names:
                    break
                name = f"{base}-{k}"
            z = z_um if z_um is not None else None
            src = useq.Position(x=x_um, y=y_um, z=z, name=name)
            self._positions.append(_Position(name, src, True))
            self._template_cache = None
            return name

    def ensure_indexed(self, x_um: float, y_um: float) -> None:
        """Before the first position is added to a plan without positions: the
        current place becomes position ``p0``."""
        with self._lock:
            if self._positions[0].indexed:
                return
            self._positions = [
                _Position("p0", useq.Position(x=x_um, y=y_um, name="p0"), True)
            ]
            self._template_cache = None

    # ------------------------------------------------------------ events

    def blocks(self) -> Iterator[Block]:
        """The blocks to acquire, in order (runner thread)."""
        if self.dynamic:
            yield from self._dynamic_blocks()
        else:
            yield from self._verbatim_blocks()

    def _dynamic_blocks(self) -> Iterator[Block]:
        for t_index, due in self._timepoints():
            first = True
            for events in self._template():
                if not events:
                    continue
                p = _p_index(events[0][0])
                yield Block(t_index, p, first, due, self, events)
                first = False

    def _timepoints(self) -> Iterator[tuple[int | None, float | None]]:
        tp = self.sequence.time_plan
        if tp is None:
            yield None, None
            return
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
            with self._lock:
                override = self._interval_override
            if k > 0 and override is not None:
                due += override
                if span is not None:
                    if due > span + 1e-9:
                        return
                elif cur is None:
                    return
            elif cur is None:
                return
            else:
                due = float(cur)
            with self._lock:
                if override is None and nxt is not None:
                    self._interval_now = float(nxt) - due
            yield k, due

    def _template(self) -> list[list[tuple[useq.MDAEvent, int]]]:
        """One time point's events grouped by position, with each event's
        ``acquire_every`` (cached until the position list changes)."""
        with self._lock:
            key = len(self._positions)
            if self._template_cache is not None and self._template_cache[0] == key:
                return self._template_cache[1]
            positions = [p.source for p in self._positions if p.source is not None]
        seq = self.sequence.model_copy(
            update={"time_plan": None, "stage_positions": tuple(positions)}
        )
        blocks: list[list[tuple[useq.MDAEvent, int]]] = []
        last_p: object = object()
        # a time point of a sequence with no other axis is one frame
        events = iter_sequence(seq) if used_axes(seq) else [useq.MDAEvent()]
        for ev in events:
            p = _p_index(ev)
            if p != last_p:
                blocks.append([])
                last_p = p
            blocks[-1].append((ev, acquire_every(seq, ev)))
        with self._lock:
            self._template_cache = (key, blocks)
        return blocks

    def _verbatim_blocks(self) -> Iterator[Block]:
        current: list[tuple[useq.MDAEvent, int]] = []
        key: tuple[Any, Any] | None = None
        last_t = None
        for ev in iter_sequence(self.sequence):
            k = (ev.index.get("t"), _p_index(ev))
            if key is not None and k != key and current:
                yield Block(key[0], key[1], key[0] != last_t, None, self, current)
                last_t = key[0]
                current = []
            key = k
            current.append((ev, 1))
        if current and key is not None:
            yield Block(key[0], key[1], key[0] != last_t, None, self, current)

    def _resolve(
        self, block: Block, *, filter_every: bool = True
    ) -> list[useq.MDAEvent]:
        out = []
        t = block.t_index
        with self._lock:
            for ev, every in block._events:
                if filter_every and t is not None and every > 1 and t % every:
                    continue
                ev = self._overlay(ev, block.p_index)
                if self.dynamic and t is not None:
                    upd: dict[str, Any] = {
                        "index": {"t": t, **ev.index},
                        "min_start_time": block.due_s,
                    }
                    if t == 0 and block.new_timepoint and not out:
                        upd["reset_event_timer"] = True
                    ev = ev.model_copy(update=upd)
                out.append(ev)
        return out

    def _overlay(self, ev: useq.MDAEvent, p_index: int | None) -> useq.MDAEvent:
        pos = self._positions[p_index or 0]
        dx, dy, dz = pos.shift
        if self._rel_anchor is not None and (
            pos.source is None or pos.source.z is None
        ):
            # useq puts a relative stack of a position without z around 0
            dz += self._rel_anchor
        ch = ev.channel.config if ev.channel is not None else None
        upd: dict[str, Any] = {"exposure": self._exposure_for(ch)}
        if ev.x_pos is not None and dx:
            upd["x_pos"] = ev.x_pos + dx
        if ev.y_pos is not None and dy:
            upd["y_pos"] = ev.y_pos + dy
        if ev.z_pos is not None and dz:
            upd["z_pos"] = ev.z_pos + dz
        return ev.model_copy(update=upd)


def _p_index(ev: useq.MDAEvent) -> int | None:
    return ev.index.get("p")
