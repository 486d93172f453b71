"""Protocols: a YAML file that says what to acquire, how to analyse and how to react.

The file is data: it is read by the strict YAML loader
(:mod:`smartscope.yaml_strict`: no duplicate keys, size, depth and alias
limits, no control characters, no tags) and validated by the pydantic models
below; no value in it is ever evaluated as Python. The ``sequence`` is held to
useq-schema's own fields (:mod:`smartscope.useq_strict`: an unknown key is an
error, not a default), the analysis models named are checked for their role
(a denoiser is not a segmenter) and ``name`` must be a safe file name. Custom
behaviour comes from reactions the user installs as Python packages (entry
point group ``smartscope.reactions``), which the protocol only names.

Errors name the file, the line and the field::

    protocols/bad.yaml, line 12, field reactions.0.max_step_um: Input should be
    greater than 0 (got -5)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

import useq
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from smartscope.analysis.settings import AnalysisSettings
from smartscope.errors import SmartscopeError, printable
from smartscope.limits import SafetyLimits
from smartscope.reactions.base import Reaction, ReactionParams, reaction_class
from smartscope.useq_strict import (
    SequenceFieldError,
    check_raw_sequence,
    clean_loc,
    describe_error,
    plan_problems,
)
from smartscope.yaml_strict import YAMLInputError, key_lines, line_for, load_yaml_file

__all__ = [
    "DeviceRoles",
    "ErrorPolicy",
    "FaultPolicy",
    "ObjectiveOffset",
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
        super().__init__(
            printable((", ".join(parts) + ": " if parts else "") + message)
        )


class _FieldProblem(ValueError):
    """A cross-field rule broken at ``field`` (a dotted path): raised inside a
    model validator so that the loader can name the field and its line."""

    def __init__(self, field: str, why: str) -> None:
        self.field, self.why = field, why
        super().__init__(f"{field}: {why}")


@dataclass(frozen=True)
class _Source:
    path: Path
    lines: dict[tuple[Any, ...], int]


#: A protocol's ``name``: it names the default run folder, so a plain file name.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


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
    report: bool = Field(
        True,
        description="report.html (plots of the run) when `smartscope run` ends",
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


class ObjectiveOffset(_Frozen):
    """Where an objective's field centre and focus lie against the reference
    objective's (the one whose offsets are all 0), from a calibration: with
    this objective in, the sample point the reference objective centres at
    stage (x, y) is at the centre with the stage at (x - x_um, y - y_um), and
    in focus with the focus drive at z + z_um."""

    x_um: float = Field(0.0, ge=-5000, le=5000)
    y_um: float = Field(0.0, ge=-5000, le=5000)
    z_um: float = Field(0.0, ge=-1000, le=1000)


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
    objective_offsets: dict[str, ObjectiveOffset] = Field(
        default_factory=dict,
        description="per objective preset, its offsets from the reference "
        "objective (parfocality and centring, µm); presets not named: 0. "
        "Positions and every coordinate in the run's records are sample "
        "coordinates as the reference objective sees them.",
    )

    def offset_um(self, objective: str | None) -> tuple[float, float, float]:
        """(x_um, y_um, z_um) offsets of ``objective`` (0 where not given)."""
        o = self.objective_offsets.get(objective or "")
        return (0.0, 0.0, 0.0) if o is None else (o.x_um, o.y_um, o.z_um)


class StopConditions(_Frozen):
    max_frames: int | None = Field(None, ge=1)
    max_sample_time_s: float | None = Field(None, gt=0)
    when_dose_budget_spent: bool = True


class Protocol(_Frozen):
    """A reactive acquisition, as a protocol file describes it."""

    version: Literal[1] = 1
    name: str = Field(
        description="names the run (and its default folder runs/NAME-DATE-TIME): "
        "letters, digits, '.', '_' and '-', starting with a letter or digit, "
        "at most 100 characters"
    )
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

    _source: _Source | None = PrivateAttr(None)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not SAFE_NAME.fullmatch(v):
            raise ValueError(
                "must be a plain file name (it names the run folder): letters, "
                "digits, '.', '_' and '-', starting with a letter or digit, at most "
                "100 characters"
            )
        return v

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

        for fld, why in [
            *plan_problems(self.sequence),
            *unsupported_fields(self.sequence),
        ]:
            raise _FieldProblem(fld, why)
        lim = self.limits
        for i, p in enumerate(self.sequence.stage_positions):
            why = lim.check_point(p.x, p.y, p.z)
            if why:
                raise _FieldProblem(f"sequence.stage_positions.{i}", why)
        zp = self.sequence.z_plan
        if zp is not None and not zp.is_relative:
            for z in zp:
                why = lim.check_point(None, None, float(z))
                if why:
                    raise _FieldProblem("sequence.z_plan", why)
        gp = self.sequence.grid_plan
        if isinstance(gp, useq.GridFromEdges):
            for x, y in ((gp.left, gp.top), (gp.right, gp.bottom)):
                why = lim.check_point(x, y, None)
                if why:
                    raise _FieldProblem("sequence.grid_plan", f"an edge: {why}")
        if self.devices.light_source is None and (
            self.laser_power_mw is not None
            or lim.max_laser_mw is not None
            or lim.light_dose_budget_mj is not None
        ):
            raise _FieldProblem(
                "devices.light_source",
                "devices.light_source is null, but laser_power_mw, "
                "limits.max_laser_mw or limits.light_dose_budget_mj need one",
            )
        lo, hi = lim.exposure_range_ms
        for i, ch in enumerate(self.sequence.channels):
            if ch.exposure is not None and not lo <= ch.exposure <= hi:
                raise _FieldProblem(
                    f"sequence.channels.{i}.exposure",
                    f"channel {ch.config!r} exposure {ch.exposure} ms is outside "
                    f"limits.exposure_range_ms {lim.exposure_range_ms}",
                )
        if (
            lim.max_laser_mw is not None
            and self.laser_power_mw is not None
            and self.laser_power_mw > lim.max_laser_mw
        ):
            raise _FieldProblem(
                "laser_power_mw",
                f"laser_power_mw {self.laser_power_mw} exceeds limits.max_laser_mw "
                f"{lim.max_laser_mw}",
            )
        if self.analysis is not None and not self.analysis.enabled and self.reactions:
            raise _FieldProblem("reactions", "reactions need analysis.enabled: true")
        return self

    def error(self, message: str, *, field: str | None = None) -> ProtocolError:
        """A :class:`ProtocolError` about ``field`` (a dotted path) of this
        protocol, naming its file and line when it was loaded from one."""
        src = self._source
        if src is None:
            return ProtocolError(message, field=field)
        loc = tuple(
            int(x) if x.isdigit() else x for x in (field.split(".") if field else ())
        )
        return ProtocolError(
            message, path=src.path, line=line_for(loc, src.lines), field=field
        )

    def build_reactions(self) -> list[Reaction]:
        return [spec.build() for spec in self.reactions]


# --------------------------------------------------------------------- loading

_KIND_WORDS = {
    "segment": "segmentation",
    "denoise": "denoising",
    "event": "mitosis classification",
}
_KIND_OF = {
    list: "a list",
    str: "text",
    int: "a number",
    float: "a number",
    bool: "a boolean",
}


def load_protocol(path: str | Path) -> Protocol:
    """Read and validate a protocol file. Raises :class:`ProtocolError`, naming
    the file and, wherever the problem has one, the line and the field."""
    path = Path(path)
    if not path.exists():
        raise ProtocolError("protocol file not found", path=path)
    if not path.is_file():
        what = "a folder" if path.is_dir() else "something that is not a regular file"
        raise ProtocolError(f"expected a protocol YAML file, got {what}", path=path)
    try:
        doc = load_yaml_file(path, what="protocol")
    except YAMLInputError as e:
        raise ProtocolError(e.problem, path=path, line=e.line) from None
    data = doc.data
    if not isinstance(data, dict) or doc.node is None:
        got = (
            "nothing: an empty file or only null"
            if data is None
            else _KIND_OF.get(type(data), "a value")
        )
        line = doc.node.start_mark.line + 1 if doc.node is not None else 1
        raise ProtocolError(
            f"expected a mapping of protocol fields (name, sequence, ...) at the "
            f"top level, got {got}",
            path=path,
            line=line,
        )
    lines = key_lines(doc.node)

    def fail(loc: tuple[Any, ...], message: str) -> NoReturn:
        raise ProtocolError(
            message,
            path=path,
            line=line_for(loc, lines),
            field=".".join(str(x) for x in loc) or None,
        )

    if "sequence" in data:
        try:
            check_raw_sequence(data["sequence"])
        except SequenceFieldError as e:
            fail(e.loc, e.message)
    try:
        proto = Protocol.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        problem = (err.get("ctx") or {}).get("error")
        if isinstance(problem, _FieldProblem):
            loc: tuple[Any, ...] = tuple(
                int(x) if x.isdigit() else x for x in problem.field.split(".")
            )
            msg = problem.why
        else:
            loc, msg = clean_loc(err["loc"]), describe_error(err)
        more = len(e.errors()) - 1
        if more:
            msg += f" [and {more} more error(s)]"
        fail(loc, msg)
    except (TypeError, ValueError, ArithmeticError) as e:
        # a validator of a library model that raised instead of reporting
        raise ProtocolError(
            f"cannot read the protocol: {type(e).__name__}: {e}", path=path
        ) from e
    proto._source = _Source(path, lines)
    _check_models(proto, fail)
    return proto


def _check_models(
    proto: Protocol, fail: Callable[[tuple[Any, ...], str], NoReturn]
) -> None:
    """The models the analysis names exist, are well-formed and fit their
    slot (``analysis.model`` a segmenter, ``analysis.denoise`` a denoiser),
    from their cards alone (no torch)."""
    a = proto.analysis
    if not a.enabled:
        return
    slots: list[tuple[str, str, str]] = []
    if a.segmenter == "model" and a.model is not None:
        slots.append(("model", a.model, "segment"))
    if a.denoise is not None:
        slots.append(("denoise", a.denoise, "denoise"))
    if not slots:
        return
    from smartscope.nn.errors import ModelError
    from smartscope.nn.locate import available_models, check_model_files

    for key, name, want in slots:
        try:
            found = check_model_files(name)
        except ModelError as e:
            fail(("analysis", key), str(e))
        if found.kind != want:
            fitting = []
            for shipped in available_models():
                try:
                    if check_model_files(shipped).kind == want:
                        fitting.append(shipped)
                except ModelError:
                    continue
            hint = f" (shipped: {', '.join(fitting)})" if fitting else ""
            fail(
                ("analysis", key),
                f"{name!r} is a {_KIND_WORDS[found.kind]} model (its card says "
                f"kind: {found.kind}); analysis.{key} needs a {_KIND_WORDS[want]} "
                f"model{hint}",
            )
