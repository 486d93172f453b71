"""Actions: what a reaction asks the microscope to do.

Reactions return these values; only the controller applies them, after the
safety limits (``smartscope.limits``). Actions are small frozen dataclasses
that check their own values when they are created (finite numbers, positive
steps and ranges: a ``ValueError`` or ``TypeError`` naming the field), so a
malformed action fails inside the reaction that made it; the controller checks
again (:meth:`Action.problems`) before anything reaches the hardware, and then
every value against the limits.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar

__all__ = [
    "ACTION_TYPES",
    "Action",
    "AddPosition",
    "Autofocus",
    "MoveFocus",
    "MoveStage",
    "RemovePosition",
    "SetExposure",
    "SetInterval",
    "SetLaserPower",
    "SetObjective",
    "SetProperty",
    "Stop",
]


def _finite(v: float) -> bool:
    try:
        return math.isfinite(v)
    except OverflowError:  # an int too large for a float
        return False


@dataclass(frozen=True, kw_only=True)
class Action:
    """Base class. ``reason`` says why (logged); ``source`` names the reaction."""

    kind: ClassVar[str] = "action"
    reason: str = ""
    source: str = ""
    #: the frame whose analysis caused this action (-1: none)
    frame_index: int = -1
    #: wall-clock time (perf_counter, s) of that frame, for latency accounting
    t_frame: float | None = field(default=None, repr=False, compare=False)

    #: fields that must be finite numbers, and those that must also be > 0
    _numbers: ClassVar[tuple[str, ...]] = ()
    _positive: ClassVar[tuple[str, ...]] = ()
    #: number fields that may also be None
    _optional: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        bad = self.problems()
        if bad:
            raise ValueError(f"{type(self).__name__}: " + "; ".join(bad))

    def problems(self) -> list[str]:
        """What is wrong with this action's values (empty when it is well-formed)."""
        out = []
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in self._numbers or f.name in self._positive:
                if v is None and f.name in self._optional:
                    continue
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    out.append(f"{f.name} must be a number, got {v!r}")
                elif not _finite(v):
                    out.append(f"{f.name} must be finite, got {v!r:.40}")
                elif f.name in self._positive and v <= 0:
                    out.append(f"{f.name} must be > 0, got {v!r}")
        for name in ("reason", "source"):
            if not isinstance(getattr(self, name), str):
                out.append(f"{name} must be a string, got {getattr(self, name)!r}")
        if isinstance(self.frame_index, bool) or not isinstance(self.frame_index, int):
            out.append(f"frame_index must be an integer, got {self.frame_index!r}")
        for name in ("position", "channel", "name"):
            v = getattr(self, name, None)
            if v is not None and not isinstance(v, str):
                out.append(f"{name} must be a string or None, got {v!r}")
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("t_frame", None)
        d["type"] = self.kind
        return d

    def with_values(self, **changes: Any) -> Action:
        """A copy with some fields changed (used to clamp)."""
        return replace(self, **changes)


@dataclass(frozen=True, kw_only=True)
class MoveStage(Action):
    """Move the XY stage to ``(x_um, y_um)``, or by that much if ``relative``.

    ``position`` names the stage position of the plan to update (its stored
    coordinates follow the move, so the next visit goes there too); ``None``
    updates the position of the frame that caused the action.
    """

    kind: ClassVar[str] = "MoveStage"
    _numbers: ClassVar[tuple[str, ...]] = ("x_um", "y_um")
    x_um: float
    y_um: float
    relative: bool = False
    position: str | None = None


@dataclass(frozen=True, kw_only=True)
class MoveFocus(Action):
    """Move Z to ``z_um`` (or by it, if ``relative``)."""

    kind: ClassVar[str] = "MoveFocus"
    _numbers: ClassVar[tuple[str, ...]] = ("z_um",)
    z_um: float
    relative: bool = False
    position: str | None = None


@dataclass(frozen=True, kw_only=True)
class SetExposure(Action):
    """Camera exposure for the following frames, ms: for frames of ``channel``,
    or of every channel when ``channel`` is None."""

    kind: ClassVar[str] = "SetExposure"
    _positive: ClassVar[tuple[str, ...]] = ("exposure_ms",)
    exposure_ms: float
    channel: str | None = None


@dataclass(frozen=True, kw_only=True)
class SetLaserPower(Action):
    """Laser power for the following frames, mW."""

    kind: ClassVar[str] = "SetLaserPower"
    _numbers: ClassVar[tuple[str, ...]] = ("power_mw",)
    power_mw: float

    def problems(self) -> list[str]:
        out = super().problems()
        if not out and self.power_mw < 0:
            out.append(f"power_mw must be >= 0, got {self.power_mw!r}")
        return out


@dataclass(frozen=True, kw_only=True)
class SetProperty(Action):
    """Set a device property. It is judged by what it changes: the light
    source's power, the camera exposure or the focus pass the same limits as
    :class:`SetLaserPower`, :class:`SetExposure` and :class:`MoveFocus`; the
    shutter, the stages' other properties and the objective are never set this
    way; anything else must be listed in the limits' ``allowed_properties``."""

    kind: ClassVar[str] = "SetProperty"
    device: str
    prop: str
    value: str | float | int

    def problems(self) -> list[str]:
        out = super().problems()
        for name in ("device", "prop"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v:
                out.append(f"{name} must be a non-empty string, got {v!r}")
        v = self.value
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            out.append(f"value must be a string or a number, got {v!r}")
        elif isinstance(v, (int, float)) and not _finite(v):
            out.append(f"value must be finite, got {v!r:.40}")
        return out


@dataclass(frozen=True, kw_only=True)
class SetInterval(Action):
    """Time between time points from now on, s; or, with ``position``, the
    time between that position's visits.

    A position's own interval makes the run skip it at time points that come
    sooner than ``interval_s`` after its last visit (the run's interval is the
    tick: a position is visited at the first time point at least its interval
    after the last one). Positions with a shorter interval of their own are
    visited first within a time point.
    """

    kind: ClassVar[str] = "SetInterval"
    _numbers: ClassVar[tuple[str, ...]] = ("interval_s",)
    interval_s: float
    position: str | None = None

    def problems(self) -> list[str]:
        out = super().problems()
        if not out and self.interval_s < 0:
            out.append(f"interval_s must be >= 0, got {self.interval_s!r}")
        return out


@dataclass(frozen=True, kw_only=True)
class AddPosition(Action):
    """Add a stage position to the plan (visited from the next time point)."""

    kind: ClassVar[str] = "AddPosition"
    _numbers: ClassVar[tuple[str, ...]] = ("x_um", "y_um", "z_um")
    _optional: ClassVar[tuple[str, ...]] = ("z_um",)
    x_um: float
    y_um: float
    z_um: float | None = None
    name: str | None = None


@dataclass(frozen=True, kw_only=True)
class RemovePosition(Action):
    """Stop visiting ``position`` (its frames stay on disk and in the log)."""

    kind: ClassVar[str] = "RemovePosition"
    position: str

    def problems(self) -> list[str]:
        out = super().problems()
        if not isinstance(self.position, str) or not self.position:
            out.append(f"position must be a non-empty string, got {self.position!r}")
        return out


@dataclass(frozen=True, kw_only=True)
class SetObjective(Action):
    """Switch to ``objective`` (a preset of the protocol's objective group)
    from the next block: the pixel size follows, and the objective offsets of
    the protocol (``devices.objective_offsets``) keep every position on the
    same sample point and in focus."""

    kind: ClassVar[str] = "SetObjective"
    objective: str

    def problems(self) -> list[str]:
        out = super().problems()
        if not isinstance(self.objective, str) or not self.objective:
            out.append(f"objective must be a non-empty string, got {self.objective!r}")
        return out


@dataclass(frozen=True, kw_only=True)
class Autofocus(Action):
    """Refocus: a Z sweep of ``range_um`` (centred on the current focus) in
    steps of ``step_um`` at ``position`` (None: the position of the frame that
    caused it), acquired through the MDA engine like every other frame; the
    sharpest plane becomes the focus. The limits cap the number of planes and
    keep the sweep inside ``z_range_um``."""

    kind: ClassVar[str] = "Autofocus"
    _positive: ClassVar[tuple[str, ...]] = ("range_um", "step_um")
    _numbers: ClassVar[tuple[str, ...]] = ("center_um",)
    _optional: ClassVar[tuple[str, ...]] = ("center_um",)
    range_um: float = 20.0
    step_um: float = 2.0
    position: str | None = None
    #: centre of the sweep, µm (None: the position's current focus); the
    #: limits set it when they move the sweep inside ``z_range_um``
    center_um: float | None = None

    @property
    def n_planes(self) -> int:
        """Planes of the sweep: ``range_um / step_um + 1``, at least 3."""
        n = self.range_um / self.step_um
        return max(3, math.floor(min(n, 1e9) + 1e-9) + 1)


@dataclass(frozen=True, kw_only=True)
class Stop(Action):
    """End the run after the current frame."""

    kind: ClassVar[str] = "Stop"


#: the action types the controller applies (a subclass of one is refused: the
#: limits and the executor must agree on what an action is)
ACTION_TYPES: tuple[type[Action], ...] = (
    MoveStage,
    MoveFocus,
    SetExposure,
    SetLaserPower,
    SetProperty,
    SetInterval,
    AddPosition,
    RemovePosition,
    SetObjective,
    Autofocus,
    Stop,
)
