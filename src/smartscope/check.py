"""``smartscope check``: validate a protocol against a configuration and move
nothing (a dry run before the first run on a real microscope).

It does everything ``smartscope run`` does before the first device moves:
the protocol file (strict YAML, fields, limits, models' roles), the
configuration (every device it names defined and loaded), the protocol
against the hardware (device roles, channel presets, values each device
accepts, every planned position, plane and exposure within the limits, the
grid's size), and the disk space for the planned frames. Then it reports the
plan and releases the core. Only reads are made of the devices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CheckReport", "check_protocol"]


@dataclass
class CheckReport:
    """What ``check_protocol`` found (all of it passed: a refusal raises)."""

    protocol: str
    config: str
    devices: dict[str, str | None]
    objective: str | None
    positions: int
    frames: int | None
    bytes_planned: int | None
    bytes_per_frame: int
    free_bytes: int
    time_mode: str
    notes: list[str] = field(default_factory=list)

    def rows(self) -> list[tuple[str, str]]:
        """The report as (label, value) rows for a table."""
        frames = "open-ended" if self.frames is None else str(self.frames)
        planned = (
            "open-ended"
            if self.bytes_planned is None
            else f"{self.bytes_planned / 1e6:.1f} MB"
        )
        return [
            ("protocol", self.protocol),
            ("configuration", self.config),
            ("light source", str(self.devices.get("light_source"))),
            ("power property", str(self.devices.get("power_property"))),
            ("objective group", str(self.devices.get("objective_group"))),
            ("objective", self.objective or "(as the microscope is)"),
            ("positions", str(self.positions)),
            ("frames planned", frames),
            (
                "data planned",
                f"{planned} ({self.bytes_per_frame / 1e6:.2f} MB a frame)",
            ),
            ("free where the run folder goes", f"{self.free_bytes / 1e6:.1f} MB"),
            ("time", self.time_mode),
        ]


def check_protocol(
    protocol_path: str | Path,
    *,
    config: str | Path | None = None,
    out_dir: str | Path | None = None,
    core: Any = None,
) -> CheckReport:
    """Validate ``protocol_path`` against ``config`` (None: the protocol's, else
    the simulator) without moving anything; raise a SmartscopeError naming
    what is wrong. With ``core`` (already loaded), check against it instead of
    loading ``config``, and leave it loaded."""
    from smartscope.controller import Controller
    from smartscope.controller.checks import check_grid_sizes
    from smartscope.controller.controller import RunError, _grid_waits_for_objective
    from smartscope.controller.lifecycle import planned_bytes
    from smartscope.hardware import load_core, release_core
    from smartscope.io.disk import RESERVE_BYTES, free_bytes
    from smartscope.protocol import load_protocol
    from smartscope.run import default_run_dir

    protocol_path = Path(protocol_path)
    proto = load_protocol(protocol_path)
    cfg = config if config is not None else proto.config
    if cfg is not None and not Path(cfg).is_absolute() and config is None:
        cfg = protocol_path.parent / cfg
    out = Path(out_dir) if out_dir is not None else default_run_dir(proto.name)
    own = core is None
    if own:
        core = load_core(
            cfg, time_mode=proto.time_mode, seed=proto.seed, scene=proto.scene
        )
    try:
        # everything the controller checks before a run, nothing it moves
        ctl = Controller(core, proto, out_dir=out)
        notes: list[str] = []
        if _grid_waits_for_objective(core, proto):
            notes.append(
                f"the grid is laid out for objective {proto.objective}, which is "
                "not in place: its positions and size are checked when the run "
                "starts, after the switch and before anything else moves"
            )
        else:
            check_grid_sizes(ctl.plan.sequence, proto)
        need, per_frame = planned_bytes(ctl)
        free = free_bytes(out)
        if need is not None and need > free - RESERVE_BYTES:
            raise RunError(
                f"not enough disk space for {out}: the plan writes "
                f"{need / 1e6:.1f} MB, {max(free - RESERVE_BYTES, 0) / 1e6:.1f} MB "
                "are free"
            )
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise RunError(
                f"run folder {out} exists and is not an empty folder; choose "
                "another --out"
            )
        n_frames = None if need is None else need // max(per_frame, 1)
        if proto.reactions and proto.stop.max_frames is None:
            notes.append(
                "reactions may add frames (autofocus sweeps, added positions); "
                "stop.max_frames bounds the run"
            )
        cfg_name = (
            str(cfg) if cfg is not None else "the simulator (simulators/demo.cfg)"
        )
        return CheckReport(
            protocol=str(protocol_path),
            config=cfg_name,
            devices=proto.devices.model_dump(),
            objective=proto.objective,
            positions=len(ctl.plan.view().positions),
            frames=n_frames,
            bytes_planned=need,
            bytes_per_frame=per_frame,
            free_bytes=free,
            time_mode=_time_mode(core),
            notes=notes,
        )
    finally:
        if own:
            release_core(core)


def _time_mode(core: Any) -> str:
    from smartscope.sim import has_simulator

    if not has_simulator(core):
        return "real time (hardware)"
    from smartscope.sim import get_simulator

    return f"{get_simulator(core).time_mode} (simulator)"
