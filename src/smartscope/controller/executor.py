"""The only code that applies an action: meaning → limits → core or plan.

The executor owns the device roles the protocol names (light source, its
power property, objective group) and the light-dose ledger. Every action is
judged by what it changes, not by its name: a ``SetProperty`` of the light
source's power is a ``SetLaserPower``, of the camera's exposure a
``SetExposure``, of the focus a ``MoveFocus``, and passes the same limits;
the shutter, the stages' other properties, the objective and the core's own
settings are never set by an action. Runs on the runner thread, between
events, and is the only caller of the core for an action.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from smartscope.actions import (
    ACTION_TYPES,
    Action,
    AddPosition,
    Autofocus,
    MoveFocus,
    MoveStage,
    RemovePosition,
    SetExposure,
    SetInterval,
    SetLaserPower,
    SetObjective,
    SetProperty,
    Stop,
)
from smartscope.controller.autofocus import Sweep
from smartscope.controller.engine import DEVICE_ERRORS
from smartscope.controller.meaning import meaning
from smartscope.limits import HardwareState, SafetyLimits

if TYPE_CHECKING:
    from pymmcore_plus import CMMCorePlus

    from smartscope.controller.plan import Plan
    from smartscope.protocol import DeviceRoles

__all__ = ["Executor", "Outcome"]

#: what the dose ledger counts (written into summary.json)
LEDGER_COUNTS = (
    "sum over every frame (autofocus frames included) of the light source's power "
    "(read from the device when the frame is taken) x the exposure; mJ = mW x s"
)


logger = logging.getLogger("smartscope.controller")


@dataclass(frozen=True)
class Outcome:
    """What became of one action."""

    action: Any
    status: str  # applied | clamped | refused | failed
    reason: str = ""
    applied: Action | None = None
    before: Any = None
    after: Any = None
    stop: bool = False
    sweep: Sweep | None = None


def _refused(action: Any, reason: str) -> Outcome:
    return Outcome(action, "refused", reason)


class Executor:
    """Applies actions to the core and the plan, through the limits.

    Parameters
    ----------
    core : CMMCorePlus
    plan : Plan
    limits : SafetyLimits
    roles : DeviceRoles
        Which device is the light source, its power property, the objective group.
    """

    def __init__(
        self, core: CMMCorePlus, plan: Plan, limits: SafetyLimits, roles: DeviceRoles
    ) -> None:
        self.core = core
        self.plan = plan
        self.limits = limits
        self.roles = roles
        #: light delivered so far, mJ (see LEDGER_COUNTS)
        self.dose_mj = 0.0
        #: light that autofocus sweeps already granted will take, mJ
        self.committed_mj = 0.0
        self._last_power_mw = 0.0
        #: move the stage as soon as a move of the only position is applied
        #: (set for realtime runs: a simulator in virtual time keeps the
        #: moves in the frames' setup, so seeded runs keep their timeline)
        self.move_ahead = False

    # ------------------------------------------------------------ devices

    def light_power_mw(self) -> float:
        """The light source's power now, mW (0 without a light source)."""
        r = self.roles
        if r.light_source is None:
            return 0.0
        return float(self.core.getProperty(r.light_source, r.power_property))

    def record_frame(self, exposure_ms: float) -> float:
        """Add one frame to the ledger (runner thread); the power it had, mW.

        If the light source cannot be read (a device error), the ledger errs
        high: it counts the most the limits allow, else the last power read.
        """
        try:
            power = self.light_power_mw()
            self._last_power_mw = power
        except DEVICE_ERRORS as e:
            cap = self.limits.max_laser_mw
            power = max(self._last_power_mw, cap if cap is not None else 0.0)
            logger.warning(
                "could not read the light power (%s); the dose ledger counts "
                "%.3g mW for this frame",
                e,
                power,
            )
        self.dose_mj += power * exposure_ms / 1000.0
        return power

    def state(
        self,
        p_index: int | None = None,
        channel: str | None = None,
        *,
        z_um: float | None = None,
    ) -> HardwareState:
        """What the limits judge against: the position's planned coordinates
        where the plan sets them, the hardware's otherwise (runner thread)."""
        core, plan = self.core, self.plan
        x = y = z = None
        if p_index is not None:
            x, y, z = plan.coords(p_index)
        ox, oy, oz = plan.offset_um  # hardware reads are stage coordinates
        if x is None or y is None:
            x, y = core.getXYPosition() if core.getXYStageDevice() else (0.0, 0.0)
            x, y = x + ox, y + oy
        if z_um is not None:
            z = z_um
        if z is None:
            z = core.getZPosition() - oz if core.getFocusDevice() else 0.0
        if channel is None and plan.channels():
            exposure = min(plan.exposure_ms(c) for c in plan.channels())
        else:
            exposure = plan.exposure_ms(channel)
        view = plan.view()
        return HardwareState(
            x_um=float(x),
            y_um=float(y),
            z_um=float(z),
            exposure_ms=exposure,
            laser_mw=self.light_power_mw(),
            light_dose_mj=self.dose_mj + self.committed_mj,
            n_positions=view.n_positions,
            interval_s=view.interval_s,
        )

    # ------------------------------------------------------------ actions

    def apply(
        self,
        action: Any,
        *,
        default_position: str | None = None,
        z_from_um: float | None = None,
    ) -> Outcome:
        """Judge ``action`` and apply what the limits allow (runner thread).
        ``z_from_um``: the focus to judge a Z move from (default: the plan's or
        the hardware's). Never raises: an error in judging is a refusal."""
        try:
            return self._apply(action, default_position, z_from_um)
        except Exception as e:  # a malformed value must not end the run
            return _refused(
                action, f"could not judge it: {type(e).__name__}: {e}"[:500]
            )

    def _apply(
        self, action: Any, default_position: str | None, z_from_um: float | None
    ) -> Outcome:
        if not isinstance(action, Action):
            return _refused(action, f"not an Action: {_describe(action)}")
        if type(action) not in ACTION_TYPES or action.kind != type(action).kind:
            return _refused(
                action,
                f"{type(action).__name__} is not one of smartscope.actions' "
                "action types (subclasses are not applied)",
            )
        problems = action.problems()
        if problems:
            return _refused(action, "malformed: " + "; ".join(problems))
        meant = meaning(action, self.core, self.roles, self.limits)
        if isinstance(meant, str):
            return _refused(action, meant)
        name = getattr(meant, "position", None) or default_position
        p_index = self.plan.position_index(name)
        if getattr(meant, "position", None) is not None and p_index is None:
            return _refused(action, f"no position named {meant.position!r} in the plan")  # type: ignore[attr-defined]
        why = self._plan_can(meant)
        if why:
            return _refused(action, why)
        channel = getattr(meant, "channel", None)
        if isinstance(meant, Autofocus) and self.plan.channels():
            channel = self.plan.channels()[0]  # the sweep's channel
        state = self.state(p_index, channel, z_um=z_from_um)
        if isinstance(meant, SetInterval) and meant.position is not None:
            own = self.plan.view().position_intervals.get(meant.position)
            state = replace(
                state, interval_s=own if own is not None else state.interval_s
            )
        verdict = self.limits.check(meant, state)
        if not verdict.allowed or verdict.action is None:
            return _refused(action, verdict.reason)
        act = verdict.action
        why = self._block_leaves_limits(act, p_index)
        if why:
            return _refused(action, why)
        try:
            before, after, extra = self._execute(act, state, p_index, name)
        except DEVICE_ERRORS as e:
            return Outcome(action, "failed", f"{type(e).__name__}: {e}", act)
        return Outcome(
            action,
            verdict.status,
            verdict.reason,
            act,
            before,
            after,
            stop=isinstance(act, Stop),
            sweep=extra,
        )

    def _block_leaves_limits(self, a: Action, p: int | None) -> str | None:
        """Whether moving or adding a position would take any frame of its
        grid or z-stack outside the envelope (the limits judge its centre)."""
        plan, lim = self.plan, self.limits
        if isinstance(a, MoveStage) and p is not None:
            events = plan.position_events(p, x_um=a.x_um, y_um=a.y_um)
        elif isinstance(a, MoveFocus) and p is not None:
            events = plan.position_events(p, z_um=a.z_um)
        elif isinstance(a, AddPosition) and plan.dynamic:
            events = plan.new_position_events(a.x_um, a.y_um, a.z_um)
        else:
            return None
        for ev in events:
            why = lim.check_point(ev.x_pos, ev.y_pos, ev.z_pos)
            if why:
                return f"a frame of the position's grid or z-stack would be out: {why}"
        return None

    def _plan_can(self, a: Action) -> str | None:
        plan = self.plan
        if (
            isinstance(a, (SetInterval, AddPosition, RemovePosition))
            and not plan.dynamic
        ):
            return (
                f"axis_order {plan.sequence.axis_order!r} runs time inside another "
                f"axis; {a.kind} needs time as the outermost axis"
            )
        if isinstance(a, SetInterval) and not plan.has_time:
            return "the sequence has no time_plan"
        if isinstance(a, SetExposure) and a.channel is not None:
            chans = plan.channels()
            if a.channel not in chans:
                return f"no channel {a.channel!r} in the plan (channels: {chans})"
        if isinstance(a, SetLaserPower) and self.roles.light_source is None:
            return "no light source is named in the protocol (devices.light_source)"
        if isinstance(a, SetObjective):
            group = self.roles.objective_group
            if group not in self.core.getAvailableConfigGroups():
                return f"no config group {group!r} (devices.objective_group)"
            presets = list(self.core.getAvailableConfigs(group))
            if a.objective not in presets:
                return (
                    f"{a.objective!r} is not a preset of the {group!r} group "
                    f"(presets: {presets})"
                )
        return None

    def _premove(self, p: int) -> None:
        """Start the stage towards position ``p``'s moved coordinates now,
        when its next frame is surely the next one taken (the only position):
        the stage travels and settles while the acquisition waits for that
        frame to be due, instead of after (the frame's own setup then finds
        it there, or waits for the rest of the move). A stage still moving
        (an earlier move of this wait) is sent on to the new target; a
        controller that refuses a command while it moves raises, and that
        error, like any device error here, is left to the frame's setup,
        which waits for the stage to stop before commanding it and moves
        with the protocol's retries. (Waiting here instead, or leaving such a
        move to the setup, cost part of a settle per frame: 19.6 and
        18.6-18.9 against 20.0 frames/s at 20/s, 2026-12-04.)"""
        xy = self.plan.next_xy(p) if self.move_ahead else None
        if xy is None:
            return
        try:
            self.core.setXYPosition(*xy)
        except DEVICE_ERRORS as e:
            logger.info("moving the stage ahead of the next frame failed: %s", e)

    def _execute(
        self, a: Action, s: HardwareState, p: int | None, name: str | None
    ) -> tuple[Any, Any, Sweep | None]:
        core, plan = self.core, self.plan
        ox, oy, oz = plan.offset_um  # actions are in sample coordinates
        if isinstance(a, MoveStage):
            if p is None or not plan.move(p, x_um=a.x_um, y_um=a.y_um):
                core.setXYPosition(a.x_um - ox, a.y_um - oy)
                core.waitForDevice(core.getXYStageDevice())
            else:
                self._premove(p)
            return [s.x_um, s.y_um], [a.x_um, a.y_um], None
        if isinstance(a, MoveFocus):
            if p is None or not plan.move(p, z_um=a.z_um):
                core.setZPosition(a.z_um + oz)
                core.waitForDevice(core.getFocusDevice())
            return s.z_um, a.z_um, None
        if isinstance(a, SetExposure):
            return plan.set_exposure(a.channel, a.exposure_ms), a.exposure_ms, None
        if isinstance(a, SetLaserPower):
            r = self.roles
            assert r.light_source is not None
            core.setProperty(r.light_source, r.power_property, a.power_mw)
            return s.laser_mw, self.light_power_mw(), None
        if isinstance(a, SetInterval):
            if a.position is not None and p is not None:
                return plan.set_position_interval(p, a.interval_s), a.interval_s, None
            return plan.set_interval(a.interval_s), a.interval_s, None
        if isinstance(a, RemovePosition):
            assert p is not None  # checked: the position exists
            plan.remove_position(p)
            return a.position, None, None
        if isinstance(a, SetObjective):
            return *self._switch_objective(a.objective), None
        if isinstance(a, AddPosition):
            plan.ensure_indexed()
            new = plan.add_position(x_um=a.x_um, y_um=a.y_um, z_um=a.z_um, name=a.name)
            return (
                None,
                {"name": new, "x_um": a.x_um, "y_um": a.y_um, "z_um": a.z_um},
                None,
            )
        if isinstance(a, SetProperty):
            before = core.getProperty(a.device, a.prop)
            core.setProperty(a.device, a.prop, a.value)
            return before, core.getProperty(a.device, a.prop), None
        if isinstance(a, Autofocus):
            return s.z_um, None, self._sweep(a, s, p, name)
        if isinstance(a, Stop):
            return None, None, None
        raise TypeError(f"no executor for action {a.kind}")

    def _switch_objective(self, objective: str) -> tuple[Any, Any]:
        """Switch the objective; the stage follows its offsets where no
        position of the plan will move it (runner thread)."""
        core, plan, group = self.core, self.plan, self.roles.objective_group
        before = core.getCurrentConfig(group)
        old = plan.offset_um
        new = self.roles.offset_um(objective)
        core.setConfig(group, objective)
        core.waitForConfig(group, objective)
        plan.set_objective(objective, new)
        dx, dy, dz = (n - o for n, o in zip(new, old, strict=True))
        if (dx or dy) and core.getXYStageDevice():
            x, y = core.getXYPosition()
            core.setXYPosition(x - dx, y - dy)
            core.waitForDevice(core.getXYStageDevice())
        if dz and core.getFocusDevice():
            core.setZPosition(core.getZPosition() + dz)
            core.waitForDevice(core.getFocusDevice())
        return before, {
            "objective": objective,
            "pixel_size_um": core.getPixelSizeUm(),
            "offset_um": list(new),
        }

    def _sweep(
        self, a: Autofocus, s: HardwareState, p: int | None, name: str | None
    ) -> Sweep:
        centre = s.z_um if a.center_um is None else a.center_um
        n = a.n_planes
        zs = np.linspace(centre - a.range_um / 2, centre + a.range_um / 2, n)
        sweep = Sweep(name or "", p, zs, reason=a.reason, z_before_um=s.z_um)
        chans = self.plan.sequence.channels
        ch = chans[0] if chans else None
        sweep.build_events(
            x_um=s.x_um if self.core.getXYStageDevice() else None,
            y_um=s.y_um if self.core.getXYStageDevice() else None,
            channel=ch,
            exposure_ms=self.plan.exposure_ms(ch.config if ch else None),
            offset_um=self.plan.offset_um,
        )
        # granted at the most power the light may have when the sweep runs
        power = max(s.laser_mw, self.limits.max_laser_mw or 0.0)
        sweep.committed_mj = n * power * sweep.planned[0].exposure / 1000.0
        self.committed_mj += sweep.committed_mj
        return sweep

    def sweep_done(self, sweep: Sweep) -> None:
        """The sweep's frames are in the ledger now (or will never be taken)."""
        self.committed_mj = max(0.0, self.committed_mj - sweep.committed_mj)


def _describe(v: Any) -> str:
    """A short description of any value, even one whose repr raises."""
    try:
        return f"{v!r:.200}"
    except Exception:
        return object.__repr__(v)
