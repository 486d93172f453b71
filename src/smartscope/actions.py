"""Actions: what a reaction asks the microscope to do.

Reactions return these values; only the controller applies them, after the
safety limits (``smartscope.limits``). Actions are small frozen dataclasses:
they are created on the hot path, so they avoid validation overhead; the
controller checks every value against the limits before any hardware call.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar

__all__ = [
    "Action",
    "AddPosition",
    "Autofocus",
    "MoveFocus",
    "MoveStage",
    "SetExposure",
    "SetInterval",
    "SetLaserPower",
    "SetProperty",
    "Stop",
]


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
    x_um: float
    y_um: float
    relative: bool = False
    position: str | None = None


@dataclass(frozen=True, kw_only=True)
class MoveFocus(Action):
    """Move Z to ``z_um`` (or by it, if ``relative``)."""

    kind: ClassVar[str] = "MoveFocus"
    z_um: float
    relative: bool = False
    position: str | None = None


@dataclass(frozen=True, kw_only=True)
class SetExposure(Action):
    """Camera exposure for the following frames, ms: for frames of ``channel``,
    or of every channel when ``channel`` is None."""

    kind: ClassVar[str] = "SetExposure"
    exposure_ms: float
    channel: str | None = None


@dataclass(frozen=True, kw_only=True)
class SetLaserPower(Action):
    """Laser power for the following frames, mW."""

    kind: ClassVar[str] = "SetLaserPower"
    power_mw: float


@dataclass(frozen=True, kw_only=True)
class SetProperty(Action):
    """Set any device property (checked against the protocol's allowed list)."""

    kind: ClassVar[str] = "SetProperty"
    device: str
    prop: str
    value: str | float | int


@dataclass(frozen=True, kw_only=True)
class SetInterval(Action):
    """Time between time points from now on, s."""

    kind: ClassVar[str] = "SetInterval"
    interval_s: float


@dataclass(frozen=True, kw_only=True)
class AddPosition(Action):
    """Add a stage position to the plan (visited from the next time point)."""

    kind: ClassVar[str] = "AddPosition"
    x_um: float
    y_um: float
    z_um: float | None = None
    name: str | None = None


@dataclass(frozen=True, kw_only=True)
class Autofocus(Action):
    """Refocus: a software autofocus (Z scan and sharpness) at the current position."""

    kind: ClassVar[str] = "Autofocus"
    range_um: float = 20.0
    step_um: float = 2.0
    position: str | None = None


@dataclass(frozen=True, kw_only=True)
class Stop(Action):
    """End the run after the current frame."""

    kind: ClassVar[str] = "Stop"
