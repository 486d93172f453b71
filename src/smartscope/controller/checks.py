"""Checks of a protocol against the hardware, before anything moves.

What the protocol alone can tell is checked when it loads
(``smartscope.protocol``); what needs the configuration (presets, device
roles, device ranges, the focus and exposure the run starts from, the plan's
every position and z plane) is checked here, with the field named.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import useq

from smartscope.controller.meaning import objective_devices
from smartscope.protocol import Protocol

if TYPE_CHECKING:
    from pymmcore_plus import CMMCorePlus

    from smartscope.controller.plan import Plan

__all__ = ["check_grid_sizes", "check_hardware", "check_plan"]


def check_hardware(core: CMMCorePlus, p: Protocol) -> None:
    """Refuse (``ProtocolError`` naming the field, and the protocol's file and
    line when it was loaded from one) what this core cannot run."""
    seq, roles, lim = p.sequence, p.devices, p.limits
    problems: list[tuple[str, str]] = []
    if not core.getCameraDevice():
        problems.append(("sequence", "the core has no camera (Core-Camera is not set)"))
    if seq.stage_positions and not core.getXYStageDevice():
        problems.append(
            ("sequence.stage_positions", "needs an XY stage (Core-XYStage)")
        )
    if seq.z_plan is not None and not core.getFocusDevice():
        problems.append(("sequence.z_plan", "needs a focus device (Core-Focus)"))
    af_plans = [("sequence.autofocus_plan", seq.autofocus_plan)] + [
        (
            f"sequence.stage_positions.{i}.sequence.autofocus_plan",
            pos.sequence.autofocus_plan,
        )
        for i, pos in enumerate(seq.stage_positions)
        if pos.sequence is not None
    ]
    for fld, af in af_plans:
        if af is None or core.getAutoFocusDevice():
            continue
        problems.append(
            (
                fld,
                "needs a hardware autofocus device (Core-AutoFocus), and this "
                "configuration has none; use the Autofocus action (a software "
                "Z sweep) instead",
            )
        )
    for fld, ch in _channels(seq):
        if ch.config not in core.getAvailableConfigs(ch.group):
            problems.append(
                (
                    fld,
                    f"channel {ch.config!r} is not a preset of config group "
                    f"{ch.group!r} (available: {list(core.getAvailableConfigs(ch.group))})",
                )
            )
        else:
            why = _preset_problem(core, p, ch.group, ch.config)
            if why:
                problems.append((fld, why))
    if p.objective is not None:
        group = roles.objective_group
        if p.objective not in core.getAvailableConfigs(group):
            problems.append(
                (
                    "objective",
                    f"{p.objective!r} is not a preset of the {group!r} group "
                    f"(devices.objective_group; presets: {list(core.getAvailableConfigs(group))})",
                )
            )
    named = [*roles.objective_offsets, *(p.limits.objectives or ())]
    if named:
        group = roles.objective_group
        presets = (
            list(core.getAvailableConfigs(group))
            if group in core.getAvailableConfigGroups()
            else []
        )
        for label in named:
            if label not in presets:
                fld = (
                    f"devices.objective_offsets.{label}"
                    if label in roles.objective_offsets
                    else "limits.objectives"
                )
                problems.append(
                    (
                        fld,
                        f"{label!r} is not a preset of the {group!r} group "
                        f"(devices.objective_group; presets: {presets})",
                    )
                )
    light, prop = roles.light_source, roles.power_property
    if light is not None:
        if light not in core.getLoadedDevices():
            problems.append(
                (
                    "devices.light_source",
                    f"no device {light!r} in the configuration (devices: "
                    f"{[d for d in core.getLoadedDevices() if d != 'Core']}); name "
                    "your light source, or null to run without light control",
                )
            )
        elif not core.hasProperty(light, prop):
            problems.append(
                (
                    "devices.power_property",
                    f"{light!r} has no property {prop!r} "
                    f"(properties: {list(core.getDevicePropertyNames(light))})",
                )
            )
        else:
            power = p.laser_power_mw
            if power is None:
                power = float(core.getProperty(light, prop))
                why = lim.check_power(power)
                if why:
                    problems.append(
                        (
                            "laser_power_mw",
                            f"not set, and the {light} is at {power:g} mW: {why}",
                        )
                    )
            elif core.hasPropertyLimits(light, prop):
                lo = core.getPropertyLowerLimit(light, prop)
                hi = core.getPropertyUpperLimit(light, prop)
                if not lo <= power <= hi:
                    problems.append(
                        (
                            "laser_power_mw",
                            f"{power:g} is outside the range of {light}.{prop} "
                            f"({lo:g} to {hi:g})",
                        )
                    )
    if problems:
        fld, why = problems[0]
        more = f" [and {len(problems) - 1} more]" if len(problems) > 1 else ""
        raise p.error(why + more, field=fld)


def check_plan(plan: Plan, p: Protocol) -> None:
    """Every event of a time point (positions, grid, z planes, exposures,
    with the defaults that apply) inside the limits."""
    lim = p.limits
    check_grid_sizes(plan.sequence, p)
    for ev in plan.preview():
        why = lim.check_point(ev.x_pos, ev.y_pos, ev.z_pos)
        if why:
            where = f" (position {ev.pos_name or ev.index.get('p', 0)}, index {dict(ev.index)})"
            raise p.error(why + where, field="sequence")
        if ev.exposure is not None:
            why = lim.check_exposure(ev.exposure)
            if why:
                ch = ev.channel.config if ev.channel else "(no channel)"
                raise p.error(
                    f"{why} (channel {ch}; a channel without exposure uses the "
                    "camera's current one)",
                    field="sequence.channels",
                )


def check_grid_sizes(seq: useq.MDASequence, p: Protocol) -> None:
    """Grids laid out for the field of view hold at most MAX_GRID_TILES tiles
    (counted, not walked: a grid over a huge area must not hang the check)."""
    from smartscope.useq_strict import MAX_GRID_TILES

    grids = [("sequence.grid_plan", seq.grid_plan)] + [
        (f"sequence.stage_positions.{k}.sequence.grid_plan", pos.sequence.grid_plan)
        for k, pos in enumerate(seq.stage_positions)
        if pos.sequence is not None
    ]
    for fld, grid in grids:
        if grid is None:
            continue
        try:
            n = grid.num_positions()
        except (ValueError, ZeroDivisionError, OverflowError):
            continue
        if n > MAX_GRID_TILES:
            raise p.error(
                f"the grid holds {n} tiles at this field of view; at most "
                f"{MAX_GRID_TILES} (a smaller area, or a larger overlap step)",
                field=fld,
            )


def _channels(seq: useq.MDASequence) -> list[tuple[str, useq.Channel]]:
    """Every channel of the sequence, positions' own included, with its field."""
    out = [(f"sequence.channels.{i}", c) for i, c in enumerate(seq.channels)]
    for k, pos in enumerate(seq.stage_positions):
        if pos.sequence is not None:
            out += [
                (f"sequence.stage_positions.{k}.sequence.channels.{i}", c)
                for i, c in enumerate(pos.sequence.channels)
            ]
    return out


def _preset_problem(
    core: CMMCorePlus, p: Protocol, group: str, preset: str
) -> str | None:
    """Why a channel preset would get around the limits: a setting of the light
    source's power above them, of the exposure outside them, or of a stage,
    the shutter, the objective or the core (which no frame may change)."""
    roles, lim = p.devices, p.limits
    fixed = {
        core.getXYStageDevice(): "the XY stage",
        core.getFocusDevice(): "the focus",
        core.getShutterDevice(): "the shutter",
        "Core": "the core",
    }
    objective = objective_devices(core, roles.objective_group)
    for dev, prop, value in core.getConfigData(group, preset):
        where = f"preset {group}/{preset} sets {dev}.{prop}={value}"
        if dev in fixed and dev:
            return f"{where}, which changes {fixed[dev]} with every frame"
        if dev in objective:
            return f"{where}, which changes the objective with every frame"
        try:
            number = float(value)
        except ValueError:
            number = None
        if roles.light_source is not None and (dev, prop) == (
            roles.light_source,
            roles.power_property,
        ):
            why = lim.check_power(number if number is not None else float("nan"))
            if why:
                return f"{where}: {why}"
        if dev == core.getCameraDevice() and prop == "Exposure":
            why = lim.check_exposure(number if number is not None else float("nan"))
            if why:
                return f"{where}: {why}"
    return None
