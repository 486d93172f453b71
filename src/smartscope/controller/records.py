"""The run's records: one typed, versioned model per line of ``events.jsonl``,
and ``summary.json``.

Like Bluesky's documents, each record says what happened once, in order, with
enough to replay and audit the run; every record carries ``kind`` and the file
begins with a ``run_started`` record holding ``schema_version``. Times:
``t_frame``, ``t_result``, ``t_action`` are wall-clock seconds since the run
started (``time.perf_counter``), ``t_s`` is the sample's clock (virtual in
virtual time), ``t_wall`` is Unix time. ``docs/controller.md`` documents every
field.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "SCHEMA_VERSION",
    "ActionRecord",
    "AnalysisErrorRecord",
    "AnalysisRecord",
    "AnalysisSkippedRecord",
    "AutofocusRecord",
    "DeviceErrorRecord",
    "FrameRecord",
    "ReactionErrorRecord",
    "Record",
    "RunErrorRecord",
    "RunFinishedRecord",
    "RunStartedRecord",
    "SubscriberErrorRecord",
    "Summary",
    "action_record",
    "analysis_record",
    "exit_code",
    "frame_record",
    "jsonable",
    "requested",
]

#: version of events.jsonl and summary.json; bumped on any incompatible change
SCHEMA_VERSION = 3


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: str


class RunStartedRecord(Record):
    kind: Literal["run_started"] = "run_started"
    schema_version: int = SCHEMA_VERSION
    protocol: str
    t_wall: float
    positions: list[str]
    time_mode: str
    plan_mode: Literal["dynamic", "verbatim"]
    devices: dict[str, Any]
    #: the simulator as the run found it (seed, scene); None on real hardware
    simulator: dict[str, Any] | None = None
    #: the plan's shortest mean time between frames, ms (None without a
    #: time plan of two or more points)
    planned_frame_ms: float | None = None
    #: what the analysis needed a frame at its warm-up, ms: ``denoise``,
    #: ``segment``, ``per_frame`` (None without models)
    analysis_warm_up_ms: dict[str, float] | None = None


class FrameRecord(Record):
    kind: Literal["frame"] = "frame"
    index: int
    #: "acquisition" (a planned frame) or "autofocus" (a sweep plane)
    role: str = "acquisition"
    position: str
    event_index: dict[str, int]
    channel: str
    x_um: float
    y_um: float
    z_um: float
    exposure_ms: float
    laser_mw: float
    #: the dose ledger after this frame, mJ
    dose_mj: float
    t_s: float
    t_frame: float
    #: where the frame is stored in data.ome.zarr: series, t, c, z
    image: dict[str, Any] | None = None
    #: the objective preset in use and the image's pixel size, µm
    objective: str | None = None
    pixel_size_um: float | None = None
    #: how long after its time plan's start time the frame's event began, ms
    #: (0: on time; None: no time plan); realtime runs that cannot keep their
    #: interval fall behind it (frames are then taken as soon as possible)
    late_ms: float | None = None


class AnalysisRecord(Record):
    kind: Literal["analysis"] = "analysis"
    index: int
    position: str
    n_objects: int
    #: [label, track_id, x_um, y_um, area_um2, mean_intensity] per object
    objects: list[list[float]]
    background: float
    error: str | None = None
    t_result: float
    latency_ms: float
    #: where the frame's analysis time went, ms: background, denoise,
    #: segment, measure, track
    stages_ms: dict[str, float] | None = None


class AnalysisSkippedRecord(Record):
    kind: Literal["analysis_skipped"] = "analysis_skipped"
    index: int
    #: "queue full", "too late" (waited longer than analysis.max_wait_ms) or
    #: "abandoned at stop"; the frame stays on disk
    reason: str


class AnalysisErrorRecord(Record):
    kind: Literal["analysis_error"] = "analysis_error"
    index: int
    error: str


class ActionRecord(Record):
    kind: Literal["action"] = "action"
    type: str
    source: str = ""
    frame_index: int = -1
    reason: str = ""
    requested: dict[str, Any] | str
    #: applied | clamped | refused | failed | not_applied
    status: str
    #: why it was clamped, refused, failed or not applied
    limit: str | None = None
    before: Any = None
    after: Any = None
    t_action: float
    latency_ms: float | None = None


class ReactionErrorRecord(Record):
    kind: Literal["reaction_error"] = "reaction_error"
    index: int
    reaction: str
    error: str
    #: the reaction was switched off for the rest of the run
    disabled: bool = False


class DeviceErrorRecord(Record):
    kind: Literal["device_error"] = "device_error"
    device: str
    event_index: dict[str, int]
    position: str | None
    attempt: int
    error: str
    outcome: str
    t_wall: float


class SubscriberErrorRecord(Record):
    kind: Literal["subscriber_error"] = "subscriber_error"
    signal: str
    error: str


class AutofocusRecord(Record):
    kind: Literal["autofocus"] = "autofocus"
    sweep: int
    position: str
    z_um: list[float]
    scores: list[float | None]
    frames: list[int]
    best_z_um: float | None
    outcome: str


class DenoiserAdaptedRecord(Record):
    """A new weight version of the denoiser fine-tuned during the run
    (``analysis.denoise.adapt``), in use from frame ``index`` on."""

    kind: Literal["denoiser_adapted"] = "denoiser_adapted"
    index: int
    version: int
    #: training steps and frames offered to the training so far
    steps: int
    frames_seen: int
    frames_kept: int
    #: the version's mean blind-spot loss, dB (10·log10 of the masked MSE)
    loss: float
    #: the training process's CPU time for this version, s
    seconds: float


class DenoiserSavedRecord(Record):
    """The adapted denoiser written as a model package in the run folder."""

    kind: Literal["denoiser_saved"] = "denoiser_saved"
    #: the package folder, relative to the run folder (None: not written)
    path: str | None
    version: int
    steps: int
    #: frames not offered to the training because it was behind
    frames_dropped: int = 0
    #: why the adaptation stopped early, or the package could not be written
    error: str | None = None


class RunErrorRecord(Record):
    kind: Literal["run_error"] = "run_error"
    error: str
    traceback: str = ""


class RunFinishedRecord(Record):
    kind: Literal["run_finished"] = "run_finished"
    status: str
    reason: str
    frames: int
    t_wall: float


class Summary(BaseModel):
    """``summary.json``: what the run did, in one object."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    protocol: str
    #: completed | stopped | interrupted | error | killed (rebuilt by
    #: ``smartscope recover``)
    status: str
    finish_reason: str
    interrupted: bool
    #: who asked a "stopped" run to stop: protocol (a stop condition), reaction
    #: (a Stop action), on_error (the fault or reaction policy), user (the API)
    stopped_by: str | None = None
    #: the signal that interrupted the run (SIGINT, SIGTERM, SIGHUP)
    signal: str | None = None
    #: the exit status of ``smartscope run`` for this run (:func:`exit_code`)
    exit_code: int = 0
    frames_acquired: int = Field(description="every frame on disk, autofocus included")
    frames_autofocus: int
    frames_analysed: int
    frames_skipped_analysis: int = Field(description="queue full or too late; on disk")
    frames_abandoned_analysis: int = Field(
        description="queued when the run was stopped"
    )
    frames_failed_analysis: int
    device_errors: int
    reaction_errors: int
    reactions_disabled: list[str]
    subscriber_errors: int
    latency_frame_to_result_ms: dict[str, int | float | None]
    latency_frame_to_action_ms: dict[str, int | float | None]
    #: how long the reactions took to decide on an analysed frame, ms
    #: (p50/p95/p99/max; the "react" stage of frame → action)
    reaction_ms: dict[str, int | float | None] | None = None
    #: how late the acquisition frames began for the time plan, ms
    #: (n/p50/p95/p99/max of the frames' ``late_ms``; None without a time plan)
    frame_late_ms: dict[str, int | float | None] | None = None
    #: the plan's shortest mean time between frames, ms (``run_started``'s)
    planned_frame_ms: float | None = None
    #: what the analysis needed a frame at its warm-up, ms (``run_started``'s)
    analysis_warm_up_ms: dict[str, float] | None = None
    #: where the analysed frames' time went, ms: per stage (background,
    #: denoise, segment, measure, track) n/p50/p95/p99/max
    analysis_stages_ms: dict[str, dict[str, int | float | None]] | None = None
    #: what storing an analysed frame (its measurements.csv rows, label and
    #: denoised planes, on the recorder's results thread) took, ms
    #: (n/p50/p95/p99/max; None without frames stored)
    storage_ms: dict[str, int | float | None] | None = None
    #: how long the analysis waited for room in that thread's queue in all, s
    #: (above 0: the disk, not the analysis, held the analysis back)
    storage_waited_s: float | None = None
    light_dose_mj: float
    light_dose_counts: str
    light_dose_mj_simulator: float | None = None
    actions: dict[str, dict[str, int]]
    wall_time_s: float
    sample_time_s: float
    positions: list[dict[str, Any]]
    time_mode: str
    sample_clock_s: float | None = None
    #: what ``smartscope recover`` found and did (a killed run only)
    recovery: dict[str, Any] | None = None
    #: steps of finishing that failed (the summary was written nonetheless)
    finish_errors: list[str] | None = None


#: exit status of ``smartscope run`` by how the run ended
EXIT_CODES = {
    "completed": 0,
    "stopped": 0,  # by a stop condition, a reaction's Stop or the API
    "stopped_on_error": 3,  # by the on_error policy
    "error": 1,
    "killed": 137,
}


def exit_code(status: str, stopped_by: str | None, signal: str | None) -> int:
    """The exit status of a run that ended with ``status``: 0 only when it
    completed or stopped as its protocol (or the caller) asked."""
    if status == "interrupted":
        from smartscope.interrupts import exit_status

        return exit_status(signal or "SIGINT")
    if status == "stopped" and stopped_by == "on_error":
        return EXIT_CODES["stopped_on_error"]
    return EXIT_CODES.get(status, 1)


def requested(a: Any) -> dict[str, Any] | str:
    from smartscope.actions import Action

    if isinstance(a, Action):
        try:
            return jsonable(a.to_dict())
        except Exception:
            pass
    return f"{a!r:.200}"


def jsonable(v: Any) -> Any:
    """Values as JSON can hold them (numbers, strings, lists, dicts); else repr."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if np.isfinite(v) else repr(v)
    if isinstance(v, (np.generic,)):
        return jsonable(v.item())
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    return f"{v!r:.200}"


def rounded(values: Sequence[float], digits: int) -> list[float]:
    """``[round(v, digits) for v in values]``, the same floats, a sixth of
    the time for many values (numpy's multiply, round and divide; Python's
    ``round`` where the product lies within 1e-6 of a tie, where the
    multiply's own rounding could have moved it across, and for values
    beyond 1e9 once multiplied, infinities and NaN)."""
    a = np.asarray(values, dtype=np.float64)
    scale = 10.0**digits
    with np.errstate(invalid="ignore", over="ignore"):
        y = a * scale
        out: list[float] = (np.rint(y) / scale).tolist()
        exact = (np.abs(y - np.floor(y) - 0.5) > 1e-6) & (np.abs(y) < 1e9)
    if not exact.all():
        for i in np.flatnonzero(~exact).tolist():
            out[i] = round(values[i], digits)
    return out


def analysis_record(result: Any, *, t0: float) -> AnalysisRecord:
    """The record of one analysed frame (``t0``: the run's start, perf_counter s)."""
    f = result.frame
    objs = result.objects
    objects: list[list[float]] = []
    if objs:
        label, track, x, y, area, mean = zip(
            *[
                (o.label, o.track_id, o.x_um, o.y_um, o.area_um2, o.mean_intensity)
                for o in objs
            ],
            strict=True,
        )
        objects = list(
            map(
                list,
                zip(
                    label,
                    track,
                    rounded(x, 3),
                    rounded(y, 3),
                    rounded(area, 2),
                    rounded(mean, 1),
                    strict=True,
                ),
            )
        )
    return AnalysisRecord(
        index=f.frame_index,
        position=f.position,
        n_objects=len(objs),
        objects=objects,
        background=round(result.background, 2),
        error=result.error,
        t_result=round(result.t_result - t0, 6),
        latency_ms=round(result.latency_ms, 3),
        stages_ms={
            k: round(float(v), 3)
            for k, v in (result.extra.get("stages_ms") or {}).items()
        }
        or None,
    )


def frame_record(
    frame: Any, *, role: str, dose_mj: float, t0: float, late_ms: float | None = None
) -> FrameRecord:
    """The record of one acquired frame (a ``FrameInput``)."""
    return FrameRecord(
        index=frame.frame_index,
        role=role,
        position=frame.position,
        event_index=frame.event_index,
        channel=frame.channel,
        x_um=frame.stage_x_um,
        y_um=frame.stage_y_um,
        z_um=frame.z_um,
        exposure_ms=frame.exposure_ms,
        laser_mw=frame.laser_mw,
        dose_mj=round(dose_mj, 6),
        t_s=round(frame.t_s, 4),
        t_frame=round(frame.t_frame - t0, 6),
        image=frame.image_at,
        objective=frame.objective,
        pixel_size_um=frame.pixel_size_um,
        late_ms=None if late_ms is None else round(float(late_ms), 3),
    )


def action_record(
    out: Any, *, t_action: float, latency_ms: float | None
) -> ActionRecord:
    """The record of what became of one action (an executor ``Outcome``);
    whatever a reaction returned is described, even if it is not an action."""
    from smartscope.actions import Action

    a = out.action
    ok = isinstance(a, Action)

    def field(name: str, kind: type, default: Any) -> Any:
        v = getattr(a, name, default) if ok else default
        return v if isinstance(v, kind) and not isinstance(v, bool) else default

    return ActionRecord(
        type=a.kind if ok else type(a).__name__,
        source=field("source", str, ""),
        frame_index=field("frame_index", int, -1),
        reason=field("reason", str, ""),
        requested=requested(a),
        status=out.status,
        limit=out.reason or None,
        before=jsonable(out.before),
        after=jsonable(out.after),
        t_action=t_action,
        latency_ms=None if latency_ms is None else round(latency_ms, 3),
    )
