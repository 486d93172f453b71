"""What an action means for the hardware, whatever it is called.

A ``SetProperty`` of the light source's power is a ``SetLaserPower``, of the
camera's exposure a ``SetExposure``, of the focus's position a ``MoveFocus``:
the executor judges those by the same limits as the dedicated actions. A
property of a stage, the shutter, the objective or the core is never set by
an action (each would get around a limit or the dose ledger); other
properties of the light source need ``allowed_properties``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from smartscope.actions import (
    Action,
    MoveFocus,
    SetExposure,
    SetLaserPower,
    SetProperty,
)
from smartscope.limits import SafetyLimits

if TYPE_CHECKING:
    from pymmcore_plus import CMMCorePlus

    from smartscope.protocol import DeviceRoles

__all__ = ["meaning", "objective_devices"]


def objective_devices(core: CMMCorePlus, group: str) -> set[str]:
    """The devices the objective group's presets set."""
    if group not in core.getAvailableConfigGroups():
        return set()
    return {
        dev
        for preset in core.getAvailableConfigs(group)
        for dev, _prop, _val in core.getConfigData(group, preset)
    }


def meaning(
    a: Action, core: CMMCorePlus, roles: DeviceRoles, limits: SafetyLimits
) -> Action | str:
    """The dedicated action ``a`` amounts to, a refusal (why), or ``a``."""
    if not isinstance(a, SetProperty):
        return a
    r = roles
    common = {
        "reason": a.reason,
        "source": a.source,
        "frame_index": a.frame_index,
        "t_frame": a.t_frame,
    }
    dev, prop = a.device, a.prop

    def number() -> float | None:
        try:
            v = float(a.value)
        except (TypeError, ValueError, OverflowError):
            return None
        return v if math.isfinite(v) else None

    if dev == "Core":
        return "the core's own settings (roles, auto-shutter) are not set by actions"
    if (
        r.light_source is not None
        and dev == r.light_source
        and prop == r.power_property
    ):
        v = number()
        if v is None:
            return f"{dev}.{prop} needs a finite number, got {a.value!r}"
        return SetLaserPower(power_mw=v, **common)
    if dev == core.getCameraDevice() and prop == "Exposure":
        v = number()
        if v is None or v <= 0:
            return f"{dev}.{prop} needs a number > 0, got {a.value!r}"
        return SetExposure(exposure_ms=v, **common)
    if dev == core.getFocusDevice() and prop == "Position":
        v = number()
        if v is None:
            return f"{dev}.{prop} needs a finite number, got {a.value!r}"
        return MoveFocus(z_um=v, **common)
    if dev in (core.getXYStageDevice(), core.getFocusDevice()):
        return f"{dev}.{prop} changes a stage; use MoveStage or MoveFocus"
    if dev == core.getShutterDevice():
        return (
            f"{dev}.{prop}: the shutter is driven by the acquisition; light "
            "outside an exposure would reach the sample uncounted"
        )
    if dev in objective_devices(core, r.objective_group):
        return (
            f"{dev}.{prop} changes the objective (pixel size, focus); "
            "not allowed during a run"
        )
    if r.light_source is not None and dev == r.light_source:
        key = f"{dev}.{prop}"
        if key not in limits.allowed_properties:
            return f"{key} changes the light source and is not in allowed_properties"
    return a
