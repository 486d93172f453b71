"""One position of a plan: where its frames go, and what the run changed.

A position keeps the useq position the protocol wrote (so useq lays out its
grid and z-stack), the focus its frames refer to, and a shift the run applied
(a reaction moved or refocused it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import useq

__all__ = ["PlanPosition", "plan_position"]


@dataclass
class PlanPosition:
    name: str
    #: useq position as the protocol wrote it (None: the plan has no positions)
    source: useq.Position | None
    indexed: bool
    #: the focus this position's frames are referred to, µm (None: the plan
    #: does not set its Z), and what is added to useq's z to get there
    base_z: float | None = None
    add_z: float = 0.0
    #: shift of every event of this position from the template, µm
    shift: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    #: time between this position's visits, s (None: every time point)
    interval_s: float | None = None
    #: when the time point of its last visit was due, s (None: not visited)
    last_due_s: float | None = None
    #: False once removed from the plan (its frames stay)
    active: bool = True

    def coords(self) -> tuple[float | None, ...]:
        s = self.source
        x = None if s is None or s.x is None else s.x + self.shift[0]
        y = None if s is None or s.y is None else s.y + self.shift[1]
        z = None if self.base_z is None else self.base_z + self.shift[2]
        return (x, y, z)


def plan_position(
    name: str,
    src: useq.Position | None,
    seq: useq.MDASequence,
    focus_um: float | None,
    *,
    indexed: bool = True,
) -> PlanPosition:
    """A plan position, with the focus its frames refer to: its own z (no z
    plan, or a relative one); the focus at the start for a relative stack at a
    position without z (useq stacks those around 0; anchoring them here keeps
    them from creeping); 0 for absolute planes (z then holds a correction)."""
    sub = src.sequence if src is not None else None
    zp = sub.z_plan if sub is not None and sub.z_plan is not None else seq.z_plan
    own_z = src.z if src is not None else None
    if zp is None:
        return PlanPosition(name, src, indexed, own_z, 0.0)
    if not zp.is_relative:
        return PlanPosition(name, src, indexed, 0.0, 0.0)
    if own_z is not None:
        return PlanPosition(name, src, indexed, own_z, 0.0)
    return PlanPosition(name, src, indexed, focus_um, focus_um or 0.0)
