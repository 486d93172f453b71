"""Protocols: a YAML file that says what to acquire, how to analyse and how to react.

The file is data: it is read with ``yaml.safe_load`` and validated by the
pydantic models below; no value in it is ever evaluated as Python. Custom
behaviour comes from reactions the user installs as Python packages (entry
point group ``smartscope.reactions``), which the protocol only names.

Errors name the file, the line and the field::

    protocols/bad.yaml, line 12, field reactions.0.max_step_um: Input should be
    greater than 0 (got -5)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import useq
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from smartscope.analysis.settings import AnalysisSettings
from smartscope.errors import SmartscopeError
from smartscope.limits import SafetyLimits
from smartscope.reactions.base import Reaction, ReactionParams, reaction_class

__all__ = [
    "DeviceRoles",
    "ErrorPolicy",
    "FaultPolicy",
    "Protocol",
    "ProtocolError",
    "ReactionPolicy",
    "ReactionSpec",
    "SaveSettings",
    "StopConditions",
    "load_protocol",
]


class ProtocolError(SmartscopeError, ValueError):
    """A protocol file was refused; the message names file, line and field."""

    def __init__(
        self,
        message: str,
        *,
        path: Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path, self.line, self.field = path, line, field
        parts = []
        if path is not None:
            parts.append(str(path))
        if line is not None:
            parts.append(f"line {line}")
        if field:
            parts.append(f"field {field}")
        super().__init__((", ".join(parts) + ": " if parts else "") + message)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ReactionSpec(_Frozen):
    """One reaction: its registered ``type`` and its parameters (validated by
    the reaction's own parameter model)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    type: str

    @model_validator(mode="after")
    def _known(self) -> ReactionSpec:
        try:
            cls = reaction_class(self.type)
        except KeyError as e:
            raise ValueError(str(e.args[0])) from None
        cls.Params.model_validate(self.params)
        return self

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def build(self) -> Reaction:
        cls = reaction_class(self.type)
        params: ReactionParams = cls.Params.model_validate(self.params)
        return cls(params)


class SaveSettings(_Frozen):
    """What to write besides the raw frames (which are always written)."""

    labels: bool = False
    denoised: bool = False
    truth: bool = Field(
        True, description="truth/cells.csv when the core is the simulator"
    )


class FaultPolicy(_Frozen):
    """What to do when a device call fails: retry it ``retries`` times, then
    skip the frame (``skip``) or end the run (``stop``)."""

    retries: int = Field(1, ge=0, le=10)
    then: Literal["skip", "stop"] = "skip"


class ReactionPolicy(_Frozen):
    """What to do with a reaction that raises: after ``max_consecutive``
    failures in a row it is switched off for the rest of the run (``disable``)
    or the run ends (``stop``). Every failure is logged either way, and a run
    with reaction errors does not end as ``completed``."""

    max_consecutive: int = Field(10, ge=1)
    then: Literal["disable", "stop"] = "disable"


class ErrorPolicy(_Frozen):
    camera: FaultPolicy = FaultPolicy()
    stage: FaultPolicy = FaultPolicy()
    reaction: ReactionPolicy = ReactionPolicy()


class DeviceRoles(_Frozen):
    """Which devices play which part, by their labels in the configuration
    (the simulator's labels are the defaults)."""

    light_source: str | None = Field(
        "Laser",
        description="the light source whose power the limits cap and the dose "
        "ledger counts (None: no light control, no dose accounting)",
    )
    power_property: str = Field("Power_mW", description="its power property, mW")
    objective_group: str = Field(
        "Objective", description="the config group whose presets are the objectives"
    )


class StopConditions(_Frozen):
    max_frames: int | None = Field(None, ge=1)
    max_sample_time_s: float | None = Field(None, gt=0)
    when_dose_budget_spent: bool = True


class Protocol(_Frozen):
    """A reactive acquisition, as a protocol file describes it."""

    version: Literal[1] = 1
    name: str = Field(min_length=1)
    description: str = ""
    config: str | None = Field(
        None, description="Micro-Manager .cfg (None: the simulator)"
    )
    time_mode: Literal["virtual", "realtime"] | None = None
    seed: int | None = Field(None, ge=0)
    scene: str | None = Field(
        None,
        description="simulator only: scene preset name (simulators/scenes/) or YAML path",
    )
    objective: str | None = Field(
        None, description='preset of the "Objective" group to use'
    )
    laser_power_mw: float | None = Field(None, ge=0)
    devices: DeviceRoles = DeviceRoles()
    sequence: useq.MDASequence
    analysis: AnalysisSettings = AnalysisSettings()
    reactions: tuple[ReactionSpec, ...] = ()
    limits: SafetyLimits = SafetyLimits()
    stop: StopConditions = StopConditions()
    save: SaveSettings = SaveSettings()
    on_error: ErrorPolicy = ErrorPolicy()

    @field_validator("scene")
    @classmethod
    def _scene_exists(cls, v: str | None) -> str | None:
        if v is not None:
            from smartscope.sim.simulator import resolve_scene_preset

            try:
                resolve_scene_preset(v)
            except SmartscopeError as e:
                raise ValueError(str(e)) from None
        return v

    @model_validator(mode="after")
    def _plan_within_limits(self) -> Protocol:
        from smartscope.controller.sequence import unsupported_fields

        for fld, why in unsupported_fields(self.sequence):
            raise ValueError(f"{fld}: {why}")
        lim = self.limits
        for i, p in enumerate(self.sequence.stage_positions):
            why = lim.check_point(p.x, p.y, p.z)
            if why:
                raise ValueError(f"sequence.stage_positions.{i}: {why}")
        zp = self.sequence.z_plan
        if zp is not None and not zp.is_relative:
            for z in zp:
                why = lim.check_point(None, None, float(z))
                if why:
                    raise ValueError(f"sequence.z_plan: {why}")
        if self.devices.light_source is None and (
            self.laser_power_mw is not None
            or lim.max_laser_mw is not None
            or lim.light_dose_budget_mj is not None
        ):
            raise ValueError(
                "devices.light_source is null, but laser_power_mw, "
                "limits.max_laser_mw or limits.light_dose_budget_mj need one"
            )
        lo, hi = lim.exposure_range_ms
        for ch in self.sequence.channels:
            if ch.exposure is not None and not lo <= ch.exposure <= hi:
                raise ValueError(
                    f"channel {ch.config!r} exposure {ch.exposure} ms is outside "
                    f"limits.exposure_range_ms {lim.exposure_range_ms}"
                )
        if (
            lim.max_laser_mw is not None
            and self.laser_power_mw is not None
            and self.laser_power_mw > lim.max_laser_mw
        ):
            raise ValueError(
                f"laser_power_mw {self.laser_power_mw} exceeds limits.max_laser_mw {lim.max_laser_mw}"
            )
        if self.analysis is not None and not self.analysis.enabled and self.reactions:
            raise ValueError("reactions need analysis.enabled: true")
        return self

    def build_reactions(self) -> list[Reaction]:
        return [spec.build() for spec in self.reactions]


# --------------------------------------------------------------------- loading


def _line_map(
    node: yaml.Node, path: tuple = (), out: dict | None = None
) -> dict[tuple, int]:
    """Map each key path (('reactions', 0, 'type')) to its 1-based line."""
    if out is None:
        out = {}
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value
            out[(*path, key)] = k.start_mark.line + 1
            _line_map(v, (*path, key), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _line_map(v, (*path, i), out)
    return out


def _line_for(loc: tuple, lines: dict[tuple, int]) -> int | None:
    loc = tuple(
        x for x in loc if not (isinstance(x, str) and x.startswith("function-"))
    )
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def load_protocol(path: str | Path) -> Protocol:
    """Read and validate a protocol file. Raises :class:`ProtocolError`."""
    path = Path(path)
    if not path.is_file():
        raise ProtocolError("protocol file not found", path=path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ProtocolError(f"cannot read: {e}", path=path) from e
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        line = e.problem_mark.line + 1 if e.problem_mark is not None else None
        raise ProtocolError(f"not valid YAML: {e.problem}", path=path, line=line) from e
    if not isinstance(data, dict) or node is None:
        raise ProtocolError(
            "expected a mapping of protocol fields at the top level", path=path
        )
    lines = _line_map(node)
    try:
        return Protocol.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(err["loc"])
        fld = ".".join(str(x) for x in loc) or None
        msg = err["msg"]
        if (
            "input" in err
            and err["type"] not in ("missing",)
            and not isinstance(err["input"], dict)
        ):
            msg += f" (got {err['input']!r})"
        more = len(e.errors()) - 1
        if more:
            msg += f" [and {more} more error(s)]"
        raise ProtocolError(
            msg, path=path, line=_line_for(loc, lines), field=fld
        ) from e
