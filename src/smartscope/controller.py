"""The controller: acquire, analyse every frame while acquiring, react, record.

Data flow::

    plan (positions, channels, interval) ──► event generator ──► pymmcore-plus MDA runner
                                                  ▲                     │ frameReady
                       actions (through limits) ──┘                     ▼
    reactions ◄── FrameResult ◄── AnalysisPipeline (worker) ◄── frame ──► OME-Zarr sink

The MDA runner and engine are pymmcore-plus's own: the controller feeds the
runner a generator of ``useq.MDAEvent`` built from a plan it may change while
running (positions added or moved, the interval changed, a refocus, stop), and
subclasses the engine only to apply the protocol's device-error policy.
Actions from reactions are queued and applied on the runner thread between
events, after the safety limits; nothing else touches the core during a run.
Before a time point that has to wait, the generator gives the analysis of the
frames already taken the chance to finish (never past the time the next frame
is due), so reactions to one time point act on the next.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import useq
import yaml
from psygnal import Signal
from pymmcore_plus.mda import MDAEngine
from pymmcore_plus.mda._runner import SkipEvent

from smartscope.actions import (
    Action,
    AddPosition,
    Autofocus,
    MoveFocus,
    MoveStage,
    SetExposure,
    SetInterval,
    SetLaserPower,
    SetProperty,
    Stop,
)
from smartscope.analysis import AnalysisPipeline
from smartscope.analysis.result import FrameInput, FrameResult
from smartscope.errors import SmartscopeError
from smartscope.io import DerivedImageStore, EventLog, MeasurementsWriter, percentiles
from smartscope.limits import HardwareState, Verdict
from smartscope.protocol import FaultPolicy, Protocol, ProtocolError
from smartscope.reactions.base import Reaction, RunView

if TYPE_CHECKING:
    from pymmcore_plus import CMMCorePlus
    from pymmcore_plus.mda import PImagePayload

__all__ = ["Controller", "RunError"]

logger = logging.getLogger("smartscope.controller")

LASER_DEVICE, LASER_POWER_PROP = "Laser", "Power_mW"


class RunError(SmartscopeError):
    """The run could not start (bad output folder, missing device ...)."""


@dataclass
class _Position:
    name: str
    x_um: float | None
    y_um: float | None
    z_um: float | None


@dataclass
class _Stats:
    frames: int = 0
    analysed: int = 0
    skipped: int = 0
    failed: int = 0
    device_errors: int = 0
    reaction_errors: int = 0
    result_latency_ms: list[float] = field(default_factory=list)
    action_latency_ms: list[float] = field(default_factory=list)
    actions: Counter = field(default_factory=Counter)


class _ControllerEngine(MDAEngine):
    """pymmcore-plus's engine plus the protocol's device-error policy."""

    def __init__(self, core: CMMCorePlus, controller: Controller) -> None:
        # no hardware sequencing: every event passes the generator, so actions
        # land between frames; no restore: the stage stays with the sample
        super().__init__(
            core, use_hardware_sequencing=False, restore_initial_state=False
        )
        self._ctl = controller

    def _retry(
        self,
        what: str,
        policy: FaultPolicy,
        event: useq.MDAEvent,
        fn: Callable[[], None],
    ) -> bool:
        """Run ``fn`` with the policy's retries. False if it finally failed."""
        for attempt in range(policy.retries + 1):
            try:
                fn()
                return True
            except Exception as e:  # device errors surface as RuntimeError/ValueError
                final = attempt == policy.retries
                self._ctl._device_error(
                    what, event, e, attempt=attempt + 1, final=final, then=policy.then
                )
        return False

    def setup_single_event(self, event: useq.MDAEvent) -> None:
        core, pol = self.mmcore, self._ctl.protocol.on_error.stage
        if event.x_pos is not None and event.y_pos is not None:
            x, y = event.x_pos, event.y_pos
            if not self._retry("stage", pol, event, lambda: core.setXYPosition(x, y)):
                raise SkipEvent(num_frames=0, reason="XY stage error")
        if event.z_pos is not None:
            z = event.z_pos
            if not self._retry("stage", pol, event, lambda: core.setZPosition(z)):
                raise SkipEvent(num_frames=0, reason="Z stage error")
        # the remaining setup (channel, exposure, properties) is pymmcore-plus's
        super().setup_single_event(
            event.model_copy(update={"x_pos": None, "y_pos": None, "z_pos": None})
        )

    def exec_single_event(self, event: useq.MDAEvent) -> Iterator[PImagePayload]:
        core = self.mmcore
        if not self._retry(
            "camera", self._ctl.protocol.on_error.camera, event, core.snapImage
        ):
            return
        t0 = event.metadata.get("runner_t0") or time.perf_counter()
        meta = self.get_frame_metadata(
            event,
            runner_time_ms=(time.perf_counter() - t0) * 1000,
            camera_device=core.getCameraDevice(),
            include_position=True,
        )
        yield (core.getImage(), event, meta)  # type: ignore[misc]


class Controller:
    """Runs a protocol on a core: acquisition, real-time analysis, reactions.

    Parameters
    ----------
    core : CMMCorePlus
        A ready core (``smartscope.hardware.load_core``).
    protocol : Protocol
        The validated protocol.
    out_dir : Path
        Run folder to create (must not exist, or be empty).
    reactions : sequence of Reaction, optional
        Extra Python reactions, in addition to the protocol's.
    """

    frame_acquired = Signal(FrameInput)
    """Emits ``(frame: FrameInput)`` for every frame, as soon as it is on disk."""
    frame_analysed = Signal(FrameResult)
    """Emits ``(result: FrameResult)`` after a frame is analysed."""
    action_taken = Signal(object, str)
    """Emits ``(action: Action, status: str)`` for an applied or clamped action."""
    action_refused = Signal(object, str)
    """Emits ``(action: Action, reason: str)`` for an action the limits refused."""
    run_finished = Signal(dict)
    """Emits ``(summary: dict)`` when the run folder is complete."""

    def __init__(
        self,
        core: CMMCorePlus,
        protocol: Protocol,
        *,
        out_dir: str | Path,
        reactions: Sequence[Reaction] = (),
        device: str = "auto",
    ) -> None:
        self.core = core
        self.protocol = protocol
        self.out_dir = Path(out_dir)
        self.device = device
        self.reactions: list[Reaction] = [*protocol.build_reactions(), *reactions]
        self.stats = _Stats()
        self._actions: queue.Queue[Action] = queue.Queue()
        self._extra_events: deque[useq.MDAEvent] = deque()
        self._stop = threading.Event()
        self._stop_reason = ""
        self._interrupted = False
        self._paused = threading.Event()
        self._lock = threading.Lock()
        self._positions: list[_Position] = []
        self._channels: list[useq.Channel | None] = [None]
        self._exposure_ms: dict[str, float] = {}
        self._interval_s = 0.0
        self._n_timepoints: int | float = 1
        self._z_offsets: list[float] | None = None
        self._laser_mw = 0.0
        self._dose_mj = 0.0
        self._last_position = ""
        self._last_frame: FrameInput | None = None
        self._submitted = 0
        self._pipeline: AnalysisPipeline | None = None
        self._log: EventLog | None = None
        self._measurements: MeasurementsWriter | None = None
        self._labels_store: DerivedImageStore | None = None
        self._denoised_store: DerivedImageStore | None = None
        self._truth_recorder: Any = None
        self._sim: Any = None
        self._t_start_wall = 0.0
        self._fov_um = (0.0, 0.0)
        self.summary: dict[str, Any] | None = None
        self._validate_hardware()

    # ------------------------------------------------------------ validation

    def _validate_hardware(self) -> None:
        """Refuse a protocol the hardware can't run, before anything moves."""
        core, p = self.core, self.protocol
        seq = p.sequence
        problems = []
        if not core.getCameraDevice():
            problems.append("the core has no camera (Core-Camera is not set)")
        if seq.stage_positions and not core.getXYStageDevice():
            problems.append("sequence.stage_positions needs an XY stage (Core-XYStage)")
        if seq.grid_plan is not None:
            problems.append(
                "sequence.grid_plan is not supported by the controller; "
                "list stage_positions instead"
            )
        if any(pos.sequence is not None for pos in seq.stage_positions):
            problems.append("sub-sequences in stage_positions are not supported")
        for ch in seq.channels:
            if ch.config not in core.getAvailableConfigs(ch.group):
                problems.append(
                    f"channel {ch.config!r} is not a preset of config group {ch.group!r} "
                    f"(available: {list(core.getAvailableConfigs(ch.group))})"
                )
        if p.objective is not None and p.objective not in core.getAvailableConfigs(
            "Objective"
        ):
            problems.append(
                f"objective {p.objective!r} is not a preset of the 'Objective' group"
            )
        needs_laser = p.laser_power_mw is not None or any(
            r.type == "adaptive_exposure" for r in p.reactions
        )
        if needs_laser and LASER_DEVICE not in core.getLoadedDevices():
            problems.append(
                f"laser power control needs a device labelled {LASER_DEVICE!r}"
            )
        if problems:
            raise ProtocolError("; ".join(problems), field="sequence")

    # ------------------------------------------------------------ public control

    def stop(
        self, reason: str = "stopped by user", *, interrupted: bool = False
    ) -> None:
        """End the run after the current frame (thread-safe). ``interrupted``
        marks the run as interrupted (Ctrl-C) in the summary."""
        if interrupted:
            self._interrupted = True
        if not self._stop.is_set():
            self._stop_reason = reason
            self._stop.set()
        with contextlib.suppress(Exception):
            self.core.mda.cancel()

    def pause(self) -> None:
        """Hold acquisition before the next event (thread-safe)."""
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    def submit(self, action: Action) -> None:
        """Queue an action from outside (a GUI, a script); it passes the limits
        like any reaction's action."""
        self._actions.put(action)

    @property
    def frames_acquired(self) -> int:
        return self.stats.frames

    @property
    def analysis_lag(self) -> int:
        """Frames acquired but not yet analysed (or skipped)."""
        s = self.stats
        return max(0, self._submitted - s.analysed - s.skipped - s.failed)

    # ------------------------------------------------------------ run

    def run(self, *, on_tick: Callable[[], None] | None = None) -> dict[str, Any]:
        """Run to the end (or until stopped); return the summary.

        The acquisition runs on its own thread; this thread waits for it, so
        Ctrl-C (KeyboardInterrupt) stops the run cleanly and the run folder is
        complete up to the last frame. ``on_tick()`` is called on this thread
        about every 50 ms while the run goes on (a progress display); an
        exception in it is logged and never stops the run.
        """
        self._prepare()
        failures: list[BaseException] = []
        done = threading.Event()

        def _acquire() -> None:
            try:
                self.core.mda.run(self._events(), output=self._raw_output())
            except BaseException as e:  # reported on the caller's thread
                failures.append(e)
            finally:
                done.set()

        threading.Thread(target=_acquire, name="smartscope-mda", daemon=True).start()
        # Poll an Event with sleeps rather than Thread.join(): a KeyboardInterrupt
        # landing inside join() can leave the thread looking finished while it
        # still runs, and the core would then be released under the acquisition.
        while not done.is_set():
            try:
                time.sleep(0.05)
                if on_tick is not None:
                    try:
                        on_tick()
                    except Exception:
                        logger.exception("on_tick raised")
            except KeyboardInterrupt:
                self.stop("interrupted (Ctrl-C)", interrupted=True)
        error = failures[0] if failures else None
        if error is not None:
            self._log_error(error)
        self._finish(interrupted=self._interrupted, error=error)
        if error is not None:
            raise RunError(
                f"the acquisition failed: {type(error).__name__}: {error} "
                f"(frames so far are in {self.out_dir})"
            ) from error
        assert self.summary is not None
        return self.summary

    def _raw_output(self) -> Any:
        """Where pymmcore-plus's sink writes the raw frames: OME-Zarr through
        ome-writers' zarr-python backend, which writes each frame before the
        runner announces it (the tensorstore backend writes asynchronously, so a
        killed process could lose frames it had already logged)."""
        from ome_writers import AcquisitionSettings

        return AcquisitionSettings(
            root_path=str(self.out_dir / "data.ome.zarr"), format="zarr-python"
        )

    def _log_error(self, error: BaseException) -> None:
        if self._log is not None:
            import traceback

            self._log.write(
                "run_error",
                error=f"{type(error).__name__}: {error}",
                traceback="".join(traceback.format_exception(error))[-4000:],
            )

    def _prepare(self) -> None:
        p, core = self.protocol, self.core
        out = self.out_dir
        if out.exists() and any(out.iterdir()):
            raise RunError(
                f"run folder {out} exists and is not empty; choose another --out"
            )
        if p.analysis.enabled:
            # models are loaded (and a bad model file refused) before anything
            # is written or any hardware moves
            self._pipeline = AnalysisPipeline(
                p.analysis, on_result=self._on_result, device=self.device
            )
            self._pipeline.load_models()
        out.mkdir(parents=True, exist_ok=True)
        (out / "protocol.yaml").write_text(
            yaml.safe_dump(
                p.model_dump(mode="json", exclude_none=True), sort_keys=False
            )
        )
        self._log = EventLog(out / "events.jsonl")
        self._measurements = MeasurementsWriter(out / "measurements.csv")
        try:
            from smartscope.sim import get_simulator

            self._sim = get_simulator(core)
        except SmartscopeError:
            self._sim = None
        if self._sim is not None:
            if p.seed is not None or p.scene is not None:
                self._sim.reset(seed=p.seed, preset=p.scene)
            if p.time_mode is not None:
                self._sim.time_mode = p.time_mode
            if p.save.truth:
                self._truth_recorder = self._sim.record_truth(
                    out / "truth" / "cells.csv"
                )
            # the truth streams to disk; keeping it in memory too would grow
            # without bound over a long run
            self._sim_kept_history = self._sim.keep_history
            self._sim.keep_history = False
        # initial hardware state (validated: the protocol and limits agree)
        if p.objective is not None:
            core.setConfig("Objective", p.objective)
            core.waitForConfig("Objective", p.objective)
        if p.laser_power_mw is not None:
            core.setProperty(LASER_DEVICE, LASER_POWER_PROP, p.laser_power_mw)
        if LASER_DEVICE in core.getLoadedDevices():
            self._laser_mw = float(core.getProperty(LASER_DEVICE, LASER_POWER_PROP))
        self._build_plan()
        px = core.getPixelSizeUm() or 1.0
        self._fov_um = (core.getImageWidth() * px, core.getImageHeight() * px)
        for r in self.reactions:
            r.reset()
        if self._pipeline is not None:
            self._pipeline.frame_skipped.connect(self._on_skipped)
            self._pipeline.analysis_failed.connect(self._on_failed)
            if p.save.labels or p.analysis.save_labels:
                self._labels_store = DerivedImageStore(
                    out / "data.ome.zarr", "nuclei", dtype="int32", label=True
                )
            if (p.save.denoised or p.analysis.save_denoised) and p.analysis.denoise:
                self._denoised_store = DerivedImageStore(
                    out / "data.ome.zarr", "denoised", dtype="float32", label=False
                )
            self._pipeline.start()
        core.mda.events.frameReady.connect(self._on_frame)
        self._old_engine = core.mda.set_engine(_ControllerEngine(core, self))
        self._t_start_wall = time.perf_counter()
        self._log.write(
            "run_started",
            protocol=p.name,
            t_wall=time.time(),
            positions=[pos.name for pos in self._positions],
            time_mode=self._sim.time_mode if self._sim else "realtime",
        )

    def _build_plan(self) -> None:
        seq, core = self.protocol.sequence, self.core
        if seq.stage_positions:
            for i, pos in enumerate(seq.stage_positions):
                self._positions.append(
                    _Position(pos.name or f"p{i}", pos.x, pos.y, pos.z)
                )
        else:
            x, y = core.getXYPosition() if core.getXYStageDevice() else (None, None)
            self._positions.append(_Position("p0", x, y, None))
        if seq.channels:
            self._channels = list(seq.channels)
        exposure_now = core.getExposure()
        for ch in self._channels:
            key = ch.config if ch is not None else ""
            self._exposure_ms[key] = (
                float(ch.exposure) if ch is not None and ch.exposure else exposure_now
            )
        tp = seq.time_plan
        if tp is not None:
            self._interval_s = (
                float(tp.interval.total_seconds()) if hasattr(tp, "interval") else 0.0
            )
            self._n_timepoints = tp.num_timepoints()
        if seq.z_plan is not None:
            self._z_offsets = [float(z) for z in seq.z_plan]
            self._z_relative = bool(getattr(seq.z_plan, "is_relative", True))

    # ------------------------------------------------------------ events

    def _stop_condition(self) -> str | None:
        st = self.protocol.stop
        if st.max_frames is not None and self.stats.frames >= st.max_frames:
            return f"max_frames {st.max_frames} reached"
        if (
            st.max_sample_time_s is not None
            and self._sample_time() >= st.max_sample_time_s
        ):
            return f"max_sample_time_s {st.max_sample_time_s:g} reached"
        budget = self.protocol.limits.light_dose_budget_mj
        if st.when_dose_budget_spent and budget is not None and self._dose_mj >= budget:
            return f"light-dose budget {budget:g} mJ spent"
        return None

    def _sample_time(self) -> float:
        try:
            return float(self.core.mda.event_seconds_elapsed())
        except Exception:
            return time.perf_counter() - self._t_start_wall

    def _wait_for_analysis(self, due_s: float) -> None:
        """Let pending analysis finish, never past the time the next frame is due."""
        if self._pipeline is None:
            self._apply_pending()
            return
        virtual = self._sim is not None and self._sim.time_mode == "virtual"
        wall_deadline = time.perf_counter() + (
            5.0 if virtual else max(0.0, due_s - self._sample_time() - 0.005)
        )
        while self.analysis_lag > 0 and not self._stop.is_set():
            if time.perf_counter() >= wall_deadline:
                break
            time.sleep(0.0005)
            self._apply_pending()
        self._apply_pending()

    def _events(self) -> Iterator[useq.MDAEvent]:
        """Generate events from the (changing) plan; runs on the runner thread."""
        t_index = 0
        t_due = 0.0
        while t_index < self._n_timepoints and not self._stop.is_set():
            if t_index > 0:
                t_due += self._interval_s
                self._wait_for_analysis(t_due)
            first = True
            for p_index, pos in enumerate(list(self._positions)):
                for c_index, ch in enumerate(self._channels):
                    for z_index, z in enumerate(self._z_list(pos)):
                        self._apply_pending()
                        while self._paused.is_set() and not self._stop.is_set():
                            time.sleep(0.02)
                        while self._extra_events:
                            yield self._extra_events.popleft()
                        why = self._stop_condition()
                        if why and not self._stop.is_set():
                            self._stop_reason = why
                            self._stop.set()
                        if self._stop.is_set():
                            return
                        index = {"t": t_index, "p": p_index, "c": c_index}
                        if self._z_offsets is not None:
                            index["z"] = z_index
                        key = ch.config if ch is not None else ""
                        yield useq.MDAEvent(
                            index=index,
                            channel=ch and {"config": ch.config, "group": ch.group},
                            exposure=self._exposure_ms[key],
                            x_pos=pos.x_um,
                            y_pos=pos.y_um,
                            z_pos=z,
                            pos_name=pos.name,
                            min_start_time=t_due if first and t_index > 0 else None,
                            reset_event_timer=False,
                        )
                        first = False
            t_index += 1
        # let the analysis of the last frames finish so that their results and
        # the reactions' decisions are logged; actions decided now are not
        # applied (the acquisition is over) and are logged as such
        if self._pipeline is not None:
            deadline = time.perf_counter() + 5.0
            while self.analysis_lag > 0 and time.perf_counter() < deadline:
                time.sleep(0.001)

    def _z_list(self, pos: _Position) -> list[float | None]:
        if self._z_offsets is None:
            return [pos.z_um]
        if self._z_relative:
            base = pos.z_um if pos.z_um is not None else self.core.getZPosition()
            return [base + dz for dz in self._z_offsets]
        return list(self._z_offsets)

    # ------------------------------------------------------------ frames

    def _on_frame(self, img: np.ndarray, event: useq.MDAEvent, meta: dict) -> None:
        """Runner thread: a frame is on disk; log it and hand it to analysis."""
        t_frame = time.perf_counter()
        st = self.stats
        index = st.frames
        st.frames += 1
        pos = meta.get("position") or {}
        x = float(pos.get("x", event.x_pos or 0.0))
        y = float(pos.get("y", event.y_pos or 0.0))
        z = float(pos.get("z", event.z_pos or 0.0))
        exposure = float(meta.get("exposure_ms", event.exposure or 0.0))
        self._dose_mj += self._laser_mw * exposure / 1000.0
        t_s = self._sample_time()
        name = event.pos_name or f"p{event.index.get('p', 0)}"
        self._last_position = name
        frame = FrameInput(
            image=img,
            frame_index=index,
            position=name,
            stage_x_um=x,
            stage_y_um=y,
            z_um=z,
            pixel_size_um=float(meta.get("pixel_size_um") or 1.0),
            exposure_ms=exposure,
            t_frame=t_frame,
            t_s=t_s,
            channel=event.channel.config if event.channel else "",
            event_index=dict(event.index),
            laser_mw=self._laser_mw,
        )
        self._last_frame = frame
        assert self._log is not None
        self._log.write(
            "frame",
            index=index,
            position=name,
            event_index=dict(event.index),
            channel=frame.channel,
            x_um=x,
            y_um=y,
            z_um=z,
            exposure_ms=exposure,
            laser_mw=self._laser_mw,
            t_s=round(t_s, 4),
            t_frame=round(t_frame - self._t_start_wall, 6),
        )
        if self._pipeline is not None:
            self._submitted += 1
            self._pipeline.submit(frame)
        try:
            self.frame_acquired.emit(frame)
        except Exception:  # a broken subscriber never stops the acquisition
            logger.exception("a frame_acquired subscriber raised")

    def _on_skipped(self, frame_index: int) -> None:
        self.stats.skipped += 1
        if self._log is not None:
            self._log.write(
                "analysis_skipped",
                index=frame_index,
                reason="analysis queue full (frame kept on disk)",
            )

    def _on_failed(self, frame_index: int, message: str) -> None:
        if self._log is not None:
            self._log.write("analysis_error", index=frame_index, error=message)

    def _run_view(self) -> RunView:
        return RunView(
            state=self._hardware_state(cached=True),
            positions={
                p.name: (p.x_um or 0.0, p.y_um or 0.0, p.z_um) for p in self._positions
            },
            fov_um=self._fov_um,
            frames_acquired=self.stats.frames,
            t_s=self._sample_time(),
        )

    def _on_result(self, result: FrameResult) -> None:
        """Analysis thread: log, store, and let the reactions decide."""
        st = self.stats
        if result.error is not None:
            st.failed += 1
        else:
            st.analysed += 1
        t_result = result.t_result
        st.result_latency_ms.append((t_result - result.frame.t_frame) * 1000.0)
        f = result.frame
        assert self._log is not None
        self._log.write(
            "analysis",
            index=f.frame_index,
            position=f.position,
            n_objects=len(result.objects),
            objects=[
                [
                    o.label,
                    o.track_id,
                    round(o.x_um, 3),
                    round(o.y_um, 3),
                    round(o.area_um2, 2),
                    round(o.mean_intensity, 1),
                ]
                for o in result.objects
            ],
            background=round(result.background, 2),
            error=result.error,
            t_result=round(t_result - self._t_start_wall, 6),
            latency_ms=round((t_result - f.t_frame) * 1000.0, 3),
        )
        if result.error is None:
            assert self._measurements is not None
            self._measurements.write(result)
            if self._labels_store is not None and result.labels is not None:
                self._labels_store.write(f.frame_index, result.labels, f.pixel_size_um)
            if self._denoised_store is not None and result.denoised is not None:
                self._denoised_store.write(
                    f.frame_index, result.denoised, f.pixel_size_um
                )
            view = self._run_view()
            for reaction in self.reactions:
                try:
                    for action in reaction.react(result, view):
                        self._actions.put(action)
                except Exception as e:
                    st.reaction_errors += 1
                    logger.exception("reaction %s failed", reaction.name)
                    self._log.write(
                        "reaction_error",
                        index=f.frame_index,
                        reaction=reaction.name,
                        error=f"{type(e).__name__}: {e}",
                    )
        with contextlib.suppress(Exception):
            self.frame_analysed.emit(result)

    # ------------------------------------------------------------ actions

    def _hardware_state(self, *, cached: bool = False) -> HardwareState:
        """The state the limits and reactions see. ``cached`` (the analysis
        thread) takes it from the last frame and never calls into the core,
        which only the runner thread drives during a run."""
        f = self._last_frame
        if cached:
            x, y, z = (f.stage_x_um, f.stage_y_um, f.z_um) if f else (0.0, 0.0, 0.0)
            exposure = f.exposure_ms if f else 0.0
        else:
            core = self.core
            x, y = core.getXYPosition() if core.getXYStageDevice() else (0.0, 0.0)
            z = core.getZPosition() if core.getFocusDevice() else 0.0
            exposure = core.getExposure()
        return HardwareState(
            x_um=x,
            y_um=y,
            z_um=z,
            exposure_ms=exposure,
            laser_mw=self._laser_mw,
            light_dose_mj=self._dose_mj,
            n_positions=len(self._positions),
            interval_s=self._interval_s,
        )

    def _apply_pending(self) -> None:
        """Runner thread: apply queued actions through the limits."""
        while True:
            try:
                action = self._actions.get_nowait()
            except queue.Empty:
                return
            self._apply(action)

    def _apply(self, action: Action) -> None:
        state = self._hardware_state()
        verdict: Verdict = self.protocol.limits.check(action, state)
        assert self._log is not None
        record: dict[str, Any] = {
            "type": action.kind,
            "source": action.source,
            "frame_index": action.frame_index,
            "reason": action.reason,
            "requested": action.to_dict(),
        }
        if not verdict.allowed or verdict.action is None:
            t = time.perf_counter()
            self.stats.actions[(action.kind, "refused")] += 1
            self._log.write(
                "action",
                status="refused",
                limit=verdict.reason,
                t_action=round(t - self._t_start_wall, 6),
                **record,
            )
            with contextlib.suppress(Exception):
                self.action_refused.emit(action, verdict.reason)
            return
        act = verdict.action
        try:
            before, after = self._execute(act, state)
        except Exception as e:
            self.stats.device_errors += 1
            self._log.write(
                "action",
                status="failed",
                error=f"{type(e).__name__}: {e}",
                t_action=round(time.perf_counter() - self._t_start_wall, 6),
                **record,
            )
            return
        t = time.perf_counter()
        self.stats.actions[(action.kind, verdict.status)] += 1
        latency = None
        if action.t_frame is not None:
            latency = (t - action.t_frame) * 1000.0
            self.stats.action_latency_ms.append(latency)
        self._log.write(
            "action",
            status=verdict.status,
            limit=verdict.reason or None,
            before=before,
            after=after,
            t_action=round(t - self._t_start_wall, 6),
            latency_ms=None if latency is None else round(latency, 3),
            **record,
        )
        with contextlib.suppress(Exception):
            self.action_taken.emit(act, verdict.status)

    def _position(self, name: str | None) -> _Position | None:
        name = name or self._last_position
        return next((p for p in self._positions if p.name == name), None)

    def _execute(self, a: Action, s: HardwareState) -> tuple[Any, Any]:
        core = self.core
        if isinstance(a, MoveStage):
            pos = self._position(a.position)
            if pos is not None:
                pos.x_um, pos.y_um = a.x_um, a.y_um
            if pos is None or pos.name == self._last_position:
                core.setXYPosition(a.x_um, a.y_um)
                core.waitForDevice(core.getXYStageDevice())
            return [s.x_um, s.y_um], [a.x_um, a.y_um]
        if isinstance(a, MoveFocus):
            pos = self._position(a.position)
            if pos is not None:
                pos.z_um = a.z_um
            core.setZPosition(a.z_um)
            return s.z_um, a.z_um
        if isinstance(a, SetExposure):
            if a.channel is not None and a.channel in self._exposure_ms:
                before = self._exposure_ms[a.channel]
                self._exposure_ms[a.channel] = a.exposure_ms
            else:
                before = s.exposure_ms
                for k in self._exposure_ms:
                    self._exposure_ms[k] = a.exposure_ms
            core.setExposure(a.exposure_ms)
            return before, a.exposure_ms
        if isinstance(a, SetLaserPower):
            before = self._laser_mw
            core.setProperty(LASER_DEVICE, LASER_POWER_PROP, a.power_mw)
            self._laser_mw = a.power_mw
            return before, a.power_mw
        if isinstance(a, SetInterval):
            before = self._interval_s
            self._interval_s = a.interval_s
            return before, a.interval_s
        if isinstance(a, AddPosition):
            name = a.name or f"added{len(self._positions)}"
            self._positions.append(_Position(name, a.x_um, a.y_um, a.z_um))
            return None, {"name": name, "x_um": a.x_um, "y_um": a.y_um, "z_um": a.z_um}
        if isinstance(a, SetProperty):
            before = core.getProperty(a.device, a.prop)
            core.setProperty(a.device, a.prop, a.value)
            return before, a.value
        if isinstance(a, Autofocus):
            return self._autofocus(a, s)
        if isinstance(a, Stop):
            self._stop_reason = a.reason or f"stopped by {a.source or 'an action'}"
            self._stop.set()
            return None, None
        raise SmartscopeError(f"no executor for action {a.kind}")

    def _autofocus(self, a: Autofocus, s: HardwareState) -> tuple[Any, Any]:
        """Software autofocus: Z scan, normalised-variance sharpness, parabolic peak."""
        core = self.core
        z0 = s.z_um
        n = max(3, round(a.range_um / a.step_um) + 1)
        zs = np.linspace(z0 - a.range_um / 2, z0 + a.range_um / 2, n)
        scores = []
        for z in zs:
            core.setZPosition(float(z))
            core.waitForDevice(core.getFocusDevice())
            core.snapImage()
            im = core.getImage().astype(np.float32)
            m = float(im.mean()) or 1.0
            scores.append(float(im.var()) / m)
            self._dose_mj += self._laser_mw * core.getExposure() / 1000.0
        k = int(np.argmax(scores))
        best = float(zs[k])
        if 0 < k < n - 1:
            y0, y1, y2 = scores[k - 1], scores[k], scores[k + 1]
            denom = y0 - 2 * y1 + y2
            if denom < 0:
                best += 0.5 * (y0 - y2) / denom * (zs[1] - zs[0])
        core.setZPosition(best)
        pos = self._position(a.position)
        if pos is not None:
            pos.z_um = best
        return z0, best

    def _device_error(
        self,
        what: str,
        event: useq.MDAEvent,
        exc: BaseException,
        *,
        attempt: int,
        final: bool,
        then: str,
    ) -> None:
        """Engine callback: a device call failed (logged; policy decides)."""
        self.stats.device_errors += 1
        outcome = (
            "retrying"
            if not final
            else ("frame skipped" if then == "skip" else "run stopped")
        )
        if self._log is not None:
            self._log.write(
                "device_error",
                device=what,
                event_index=dict(event.index),
                position=event.pos_name,
                attempt=attempt,
                error=f"{type(exc).__name__}: {exc}",
                outcome=outcome,
                t_wall=round(time.perf_counter() - self._t_start_wall, 6),
            )
        if final and then == "stop":
            self._stop_reason = f"{what} error: {exc}"
            self._stop.set()

    # ------------------------------------------------------------ finish

    def _finish(self, *, interrupted: bool, error: BaseException | None) -> None:
        core = self.core
        with contextlib.suppress(Exception):
            core.mda.events.frameReady.disconnect(self._on_frame)
        with contextlib.suppress(Exception):
            if getattr(self, "_old_engine", None) is not None:
                core.mda.set_engine(self._old_engine)
        if self._pipeline is not None:
            self._pipeline.stop(drain=not interrupted, timeout_s=10.0)
            self._apply_pending_after_run()
        if self._labels_store is not None:
            self._labels_store.finalize(self.stats.frames)
        if self._denoised_store is not None:
            self._denoised_store.finalize(self.stats.frames)
        if self._truth_recorder is not None:
            self._truth_recorder.close()
        if self._sim is not None and hasattr(self, "_sim_kept_history"):
            self._sim.keep_history = self._sim_kept_history
        st = self.stats
        wall = time.perf_counter() - self._t_start_wall
        by_kind: dict[str, dict[str, int]] = {}
        for (kind, status), n in sorted(st.actions.items()):
            by_kind.setdefault(kind, {})[status] = n
        reason = self._stop_reason or (
            "completed" if error is None else f"error: {error}"
        )
        if interrupted:
            reason = "interrupted"
        summary: dict[str, Any] = {
            "protocol": self.protocol.name,
            "status": "interrupted"
            if interrupted
            else ("error" if error else "completed"),
            "finish_reason": reason,
            "interrupted": interrupted,
            "frames_acquired": st.frames,
            "frames_analysed": st.analysed,
            "frames_skipped_analysis": st.skipped,
            "frames_failed_analysis": st.failed,
            "device_errors": st.device_errors,
            "reaction_errors": st.reaction_errors,
            "latency_frame_to_result_ms": percentiles(st.result_latency_ms),
            "latency_frame_to_action_ms": percentiles(st.action_latency_ms),
            "light_dose_mj_estimated": round(self._dose_mj, 4),
            "actions": by_kind,
            "wall_time_s": round(wall, 3),
            "sample_time_s": round(self._sample_time(), 3),
            "positions": [
                {"name": p.name, "x_um": p.x_um, "y_um": p.y_um, "z_um": p.z_um}
                for p in self._positions
            ],
        }
        if self._sim is not None:
            summary["light_dose_mj"] = round(self._sim.light_dose_mj, 4)
            summary["sample_clock_s"] = round(self._sim.clock_s, 3)
            summary["time_mode"] = self._sim.time_mode
        if self._log is not None:
            self._log.write(
                "run_finished",
                status=summary["status"],
                reason=reason,
                frames=st.frames,
                t_wall=time.time(),
            )
            self._log.close()
        if self._measurements is not None:
            self._measurements.close()
        (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        self.summary = summary
        with contextlib.suppress(Exception):
            self.run_finished.emit(summary)

    def _apply_pending_after_run(self) -> None:
        """Actions decided after the last frame are logged as not applied."""
        while True:
            try:
                action = self._actions.get_nowait()
            except queue.Empty:
                return
            if self._log is not None:
                self._log.write(
                    "action",
                    status="not_applied",
                    type=action.kind,
                    source=action.source,
                    frame_index=action.frame_index,
                    reason=action.reason,
                    requested=action.to_dict(),
                    limit="the run had ended",
                    t_action=round(time.perf_counter() - self._t_start_wall, 6),
                )
