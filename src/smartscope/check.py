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

from smartscope.io.summary import readable_ms

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
    #: the plan's shortest mean time between frames, ms (None without a
    #: time plan of two or more points)
    planned_frame_ms: float | None = None
    #: what the analysis needed a frame here, ms (``denoise``, ``segment``,
    #: ``per_frame``), with ``time_analysis``; None otherwise or without models
    analysis_ms: dict[str, float] | None = None

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
            (
                "a frame every",
                "-"
                if self.planned_frame_ms is None
                else f"{readable_ms(self.planned_frame_ms)} ms (the plan's fastest)",
            ),
            *(
                [("analysis a frame, here", _analysis_row(self.analysis_ms))]
                if self.analysis_ms is not None
                else []
            ),
        ]


def _analysis_row(ms: dict[str, float]) -> str:
    from smartscope.controller.lifecycle import model_times

    return f"{readable_ms(ms['per_frame'])} ms at best ({model_times(ms)})"


def check_protocol(
    protocol_path: str | Path,
    *,
    config: str | Path | None = None,
    out_dir: str | Path | None = None,
    core: Any = None,
    time_analysis: bool = False,
    device: str = "auto",
) -> CheckReport:
    """Validate ``protocol_path`` against ``config`` (None: the protocol's, else
    the simulator) without moving anything; raise a SmartscopeError naming
    what is wrong. With ``core`` (already loaded), check against it instead of
    loading ``config``, and leave it loaded.

    ``time_analysis``: also load the protocol's models (on ``device``) and
    time them on a frame of the camera's size, as a run's warm-up does, and
    note whether the analysis keeps up with the plan's pace on this machine
    (seconds; no device is touched but the camera's size and pixel size
    read)."""
    from smartscope.controller import Controller
    from smartscope.controller.checks import check_grid_sizes
    from smartscope.controller.controller import RunError, _grid_waits_for_objective
    from smartscope.controller.lifecycle import planned_bytes, planned_frame_ms
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
        pace = planned_frame_ms(ctl)
        analysis_ms = None
        if time_analysis:
            analysis_ms = _time_analysis(proto, core, device, pace, notes)
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
            planned_frame_ms=pace,
            analysis_ms=analysis_ms,
        )
    finally:
        if own:
            release_core(core)


def _time_analysis(
    proto: Any, core: Any, device: str, pace: float | None, notes: list[str]
) -> dict[str, float] | None:
    """The analysis' warm-up on a frame of the camera's size, here (None
    without models), and a note on whether it keeps ``pace``."""
    from smartscope.analysis import FrameAnalyser
    from smartscope.controller.lifecycle import behind_message
    from smartscope.sim import get_simulator, has_simulator

    s = proto.analysis
    if not s.enabled or (s.denoise is None and s.segmenter != "model"):
        notes.append(
            "--time-analysis: the protocol runs no model (classical segmentation "
            "only); nothing was timed"
        )
        return None
    shape = (int(core.getImageHeight()), int(core.getImageWidth()))
    pixel, known = pixel_size_with_objective(core, proto)
    analyser = FrameAnalyser(s, device=device)
    analyser.warm_up(shape, pixel_size_um=pixel)
    cost = analyser.warm_up_cost()
    if cost is None:
        return None
    if not known:
        notes.append(
            f"the models were timed at the pixel size of the objective in place "
            f"({pixel:g} µm), not with {proto.objective}, which check does not "
            "move into place: the segmenter's cost changes with the nuclei's "
            "size in pixels"
        )
    virtual = has_simulator(core) and get_simulator(core).time_mode == "virtual"
    if pace is None:
        return cost
    if virtual:
        notes.append(
            "virtual time: the analysis paces the sample clock, so no frame is "
            "skipped whatever the models take (the run takes longer instead)"
        )
    elif (
        behind := behind_message(
            cost, pace, two_threads=analyser.stages == 2, when="here"
        )
    ) is not None:
        notes.append(behind)
    else:
        notes.append(
            f"the analysis keeps up with this plan on this machine, at best: "
            f"{readable_ms(cost['per_frame'])} ms a frame against a frame every "
            f"{readable_ms(pace)} ms (the camera, the writer and other programs "
            "share the cores during a run)"
        )
    return cost


def pixel_size_with_objective(core: Any, proto: Any) -> tuple[float, bool]:
    """The pixel size (µm, binning included) the run's frames will have once
    the protocol's objective is in place, and whether that is known: the
    pixel size now where that objective is in place (or the protocol names
    none), the simulator's for that objective; otherwise (real hardware
    with another objective in place, which check does not move) the pixel
    size now, and False."""
    from smartscope.sim import get_simulator, has_simulator

    now = float(core.getPixelSizeUm() or 1.0)
    group, preset = proto.devices.objective_group, proto.objective
    if (
        preset is None
        or group not in core.getAvailableConfigGroups()
        or core.getCurrentConfig(group) == preset
    ):
        return now, True
    if not has_simulator(core):
        return now, False
    try:
        label = next(
            v for _, prop, v in core.getConfigData(group, preset) if prop == "Label"
        )
        return get_simulator(core).pixel_size_um(str(label)), True
    except Exception:  # a preset that sets no simulated objective
        return now, False


def _time_mode(core: Any) -> str:
    from smartscope.sim import has_simulator

    if not has_simulator(core):
        return "real time (hardware)"
    from smartscope.sim import get_simulator

    return f"{get_simulator(core).time_mode} (simulator)"
