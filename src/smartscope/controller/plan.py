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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import useq
from useq._iter_sequence import iter_sequence

from smartscope.controller.positions import plan_position
from smartscope.controller.sequence import (
    num_timepoints,
    time_first,
    timepoint_blocks,
    timepoints,
    unsupported_fields,
    verbatim_blocks,
    with_fov,
)

__all__ = ["Block", "Plan", "PlanView", "unsupported_fields"]


@dataclass(frozen=True)
class PlanView:
    """A snapshot of the plan: what a reaction and the limits may know."""

    #: position name -> (x_um, y_um, z_um); None where the plan does not set it
    #: (positions still visited; removed ones are left out)
    positions: dict[str, tuple[float | None, float | None, float | None]]
    interval_s: float
    n_positions: int
    #: position name -> its own interval, s (positions that have one)
    position_intervals: dict[str, float] = field(default_factory=dict)


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
        # the first exposure a channel of that name is given, positions' included
        self._channel_exposure: dict[str | None, float] = {}
        for c in reversed(self._all_channels(seq)):
            if c.exposure is not None:
                self._channel_exposure[c.config] = float(c.exposure)
        self._exposure: dict[str | None, float] = {}
        self._interval_override: float | None = None
        self._interval_now = 0.0
        self._focus = focus_um
        #: the objective in use and its offsets (x, y, z µm) from the
        #: reference objective: events go to the stage at x - dx, y - dy, z + dz
        self.objective: str | None = None
        self._offset = (0.0, 0.0, 0.0)
        if seq.stage_positions:
            self._positions = [
                plan_position(p.name or f"p{i}", p, seq, focus_um)
                for i, p in enumerate(seq.stage_positions)
            ]
        else:
            self._positions = [plan_position("p0", None, seq, focus_um, indexed=False)]
        self._template_cache: (
            tuple[int, list[list[tuple[useq.MDAEvent, int]]]] | None
        ) = None

    # ------------------------------------------------------------ reading

    @property
    def has_time(self) -> bool:
        return self.sequence.time_plan is not None

    def view(self) -> PlanView:
        with self._lock:
            live = [p for p in self._positions if p.active]
            return PlanView(
                positions={p.name: p.coords() for p in live},
                interval_s=self._interval_now,
                n_positions=len(live),
                position_intervals={
                    p.name: p.interval_s for p in live if p.interval_s is not None
                },
            )

    def all_positions(
        self,
    ) -> list[tuple[str, tuple[float | None, float | None, float | None], bool]]:
        """(name, (x_um, y_um, z_um), still visited) of every position, removed
        ones included."""
        with self._lock:
            return [(p.name, p.coords(), p.active) for p in self._positions]

    @property
    def n_active(self) -> int:
        """Positions still visited."""
        with self._lock:
            return sum(p.active for p in self._positions)

    @property
    def offset_um(self) -> tuple[float, float, float]:
        """(dx, dy, dz) of the objective in use from the reference objective, µm."""
        with self._lock:
            return self._offset

    def position_index(self, name: str | None) -> int | None:
        """The index of the position named ``name`` still visited (None: none)."""
        with self._lock:
            for i, p in enumerate(self._positions):
                if p.name == name and p.active:
                    return i
        return None

    def coords(self, index: int) -> tuple[float | None, ...]:
        """(x_um, y_um, z_um) of position ``index`` now (None: not set by the plan)."""
        with self._lock:
            return self._positions[index].coords()

    def next_xy(self, index: int) -> tuple[float, float] | None:
        """Where the stage goes for the next frame, when that is sure: (x, y)
        as the first event of position ``index``'s next visit sets the stage,
        when it is the only position still visited in a time-first plan (its
        next visit is then the next block); else None."""
        if not self.dynamic:
            return None
        blocks = self._template()
        with self._lock:
            live = [p for p in self._positions if p.active]
            if len(live) != 1 or live[0] is not self._positions[index]:
                return None
            for events in blocks:
                if events and (_p_index(events[0][0]) or 0) == index:
                    ev = self._overlay(events[0][0])
                    if ev.x_pos is None or ev.y_pos is None:
                        return None
                    return ev.x_pos, ev.y_pos
        return None

    def channels(self) -> list[str]:
        """The channel presets the plan acquires (positions' own included)."""
        return list(dict.fromkeys(c.config for c in self._all_channels()))

    def exposure_ms(self, channel: str | None) -> float:
        """The exposure the next frame of ``channel`` gets, ms."""
        with self._lock:
            return self._exposure_for(channel)

    def _exposure_for(self, channel: str | None, planned: float | None = None) -> float:
        """A SetExposure's value, else the event's own (``planned``), else the
        channel's, else the camera's at the start."""
        if channel in self._exposure:
            return self._exposure[channel]
        if None in self._exposure:
            return self._exposure[None]
        if planned is not None:
            return float(planned)
        return self._channel_exposure.get(channel, self._default_exposure)

    def _all_channels(self, seq: useq.MDASequence | None = None) -> list[useq.Channel]:
        seq = seq or self.sequence
        out = list(seq.channels)
        for p in seq.stage_positions:
            if p.sequence is not None:
                out.extend(p.sequence.channels)
        return out

    def preview(self) -> list[useq.MDAEvent]:
        """One time point's events as they would run now (for checks)."""
        events = self._one_timepoint()
        with self._lock:
            return [self._overlay(e) for e in events]

    def _one_timepoint(self) -> list[useq.MDAEvent]:
        if self.dynamic:
            return [e for b in self._template() for e, _ in b]
        seq = self.sequence
        if seq.time_plan is not None:
            seq = seq.model_copy(update={"time_plan": None})
        return list(iter_sequence(seq))

    def position_events(
        self,
        index: int,
        *,
        x_um: float | None = None,
        y_um: float | None = None,
        z_um: float | None = None,
    ) -> list[useq.MDAEvent]:
        """Position ``index``'s events of one time point, as they would be with
        the position moved to (x_um, y_um, z_um) (None: where it is)."""
        events = self._one_timepoint()
        with self._lock:
            pos = self._positions[index]
            saved = list(pos.shift)
            try:
                cur = pos.coords()
                for axis, value in enumerate((x_um, y_um, z_um)):
                    if value is not None and cur[axis] is not None:
                        pos.shift[axis] += value - cur[axis]
                return [
                    self._overlay(e)
                    for e in events
                    if not pos.indexed or _p_index(e) == index
                ]
            finally:
                pos.shift[:] = saved

    def new_position_events(
        self, x_um: float, y_um: float, z_um: float | None
    ) -> list[useq.MDAEvent]:
        """The events one time point of a position added there would take."""
        src = useq.Position(x=x_um, y=y_um, z=z_um)
        pos = plan_position("new", src, self.sequence, self._focus)
        seq = self.sequence.model_copy(
            update={"time_plan": None, "stage_positions": (src,)}
        )
        out = []
        for e in iter_sequence(seq):
            z = None if e.z_pos is None else e.z_pos + pos.add_z
            out.append(e.model_copy(update={"z_pos": z}))
        return out

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
            cur = pos.coords()
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

    def set_position_interval(self, index: int, interval_s: float) -> float | None:
        """Time between position ``index``'s visits from now on; the previous
        value (None: it had none, every time point)."""
        with self._lock:
            pos = self._positions[index]
            before, pos.interval_s = pos.interval_s, float(interval_s)
            return before

    def remove_position(self, index: int) -> None:
        """Stop visiting position ``index`` (from the next block)."""
        with self._lock:
            self._positions[index].active = False

    def set_objective(
        self, objective: str, offset_um: tuple[float, float, float]
    ) -> None:
        """The objective in use from the next block, and its offsets (x, y, z
        µm) from the reference objective."""
        with self._lock:
            self.objective = objective
            self._offset = tuple(float(v) for v in offset_um)  # type: ignore[assignment]

    def add_position(
        self, *, x_um: float, y_um: float, z_um: float | None, name: str | None
    ) -> str:
        """A new position, visited from the next time point; its name."""
        with self._lock:
            names = {p.name for p in self._positions}
            name = name or f"added{len(self._positions)}"
            base = name
            for k in itertools.count(2):
                if name not in names:
                    break
                name = f"{base}-{k}"
            src = useq.Position(x=x_um, y=y_um, z=z_um, name=name)
            self._positions.append(plan_position(name, src, self.sequence, self._focus))
            self._template_cache = None
            return name

    def ensure_indexed(self) -> None:
        """Before the first position is added to a plan without positions, what
        it was imaging becomes position ``p0`` (no coordinates: its frames stay
        where they were, grid tiles included)."""
        with self._lock:
            old = self._positions[0]
            if old.indexed:
                return
            new = plan_position(
                "p0", useq.Position(name="p0"), self.sequence, self._focus
            )
            new.shift = old.shift
            self._positions = [new]
            self._template_cache = None

    # ------------------------------------------------------------ events

    def blocks(
        self, before_timepoint: Callable[[int | None, float | None], None]
    ) -> Iterator[Block]:
        """The blocks to acquire, in order (runner thread). ``before_timepoint(t,
        due_s)`` is called before each time point is laid out, so that what changes
        the plan then (positions added) takes part in it."""
        if self.dynamic:
            yield from self._dynamic_blocks(before_timepoint)
        else:
            yield from self._verbatim_blocks(before_timepoint)

    def _dynamic_blocks(
        self, before: Callable[[int | None, float | None], None]
    ) -> Iterator[Block]:
        for t_index, due in self._timepoints():
            before(t_index, due)
            if not self.n_active:  # every position removed: nothing more to do
                return
            first = True
            for events in self._visits(self._template(), due):
                yield Block(t_index, _p_index(events[0][0]), first, due, self, events)
                first = False

    def _visits(
        self, blocks: list[list[tuple[useq.MDAEvent, int]]], due: float | None
    ) -> Iterator[list[tuple[useq.MDAEvent, int]]]:
        """The blocks of a time point due at ``due`` s that are to be acquired:
        positions still in the plan whose own interval has passed since their
        last visit, those with the shortest interval first (the order is
        useq's among equals). Each is marked visited as it is handed out."""
        with self._lock:
            run = self._interval_now
            todo = []
            for events in blocks:
                if not events:
                    continue
                pos = self._positions[_p_index(events[0][0]) or 0]
                if not pos.active:
                    continue
                if (
                    pos.interval_s is not None
                    and due is not None
                    and pos.last_due_s is not None
                    # a tick's worth of rounding: due times are sums of floats
                    and due - pos.last_due_s < pos.interval_s - 1e-6
                ):
                    continue
                todo.append(
                    (pos.interval_s if pos.interval_s is not None else run, pos, events)
                )
            todo.sort(key=lambda x: x[0])
        for _, pos, events in todo:
            with self._lock:
                if not pos.active:  # removed while this time point ran
                    continue
                pos.last_due_s = due
            yield events

    def _timepoints(self) -> Iterator[tuple[int | None, float | None]]:
        tp = self.sequence.time_plan
        if tp is None:
            yield None, None
            return

        def override() -> float | None:
            with self._lock:
                return self._interval_override

        for k, due, planned in timepoints(tp, override):
            if planned is not None:
                with self._lock:
                    self._interval_now = planned
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
        blocks = timepoint_blocks(seq)
        with self._lock:
            self._template_cache = (key, blocks)
        return blocks

    def _verbatim_blocks(
        self, before: Callable[[int | None, float | None], None]
    ) -> Iterator[Block]:
        last_t: Any = object()
        for events in verbatim_blocks(self.sequence):
            t = events[0][0].index.get("t")
            if t != last_t:
                before(t, None)
            yield Block(t, _p_index(events[0][0]), t != last_t, None, self, events)
            last_t = t

    def _resolve(self, block: Block) -> list[useq.MDAEvent]:
        out = []
        t = block.t_index
        with self._lock:
            for ev, every in block._events:
                if t is not None and every > 1 and t % every:
                    continue
                upd = self._overlay_update(ev)
                if self.dynamic and t is not None:
                    upd["index"] = {"t": t, **ev.index}
                    upd["min_start_time"] = block.due_s
                    if t == 0 and block.new_timepoint and not out:
                        upd["reset_event_timer"] = True
                out.append(ev.model_copy(update=upd))  # one copy per event
        return out

    def _overlay(self, ev: useq.MDAEvent) -> useq.MDAEvent:
        return ev.model_copy(update=self._overlay_update(ev))

    def _overlay_update(self, ev: useq.MDAEvent) -> dict[str, Any]:
        """What the run changed for ``ev``: exposure, position shift (lock held)."""
        pos = self._positions[_p_index(ev) or 0]
        dx, dy, dz = pos.shift
        dz += pos.add_z
        # the positions are sample coordinates as the reference objective
        # sees them; the objective in use sees them at the stage minus its offset
        ox, oy, oz = self._offset
        dx, dy, dz = dx - ox, dy - oy, dz + oz
        ch = ev.channel.config if ev.channel is not None else None
        upd: dict[str, Any] = {"exposure": self._exposure_for(ch, ev.exposure)}
        if ev.x_pos is not None and dx:
            upd["x_pos"] = ev.x_pos + dx
        if ev.y_pos is not None and dy:
            upd["y_pos"] = ev.y_pos + dy
        if ev.z_pos is not None and dz:
            upd["z_pos"] = ev.z_pos + dz
        return upd


def _p_index(ev: useq.MDAEvent) -> int | None:
    return ev.index.get("p")
