"""Start, wait for and finish a :class:`~.controller.Controller` run (caller's thread).

Start: models are loaded (a bad model file is refused) and the output folder
is checked before anything is written or moved; then the protocol's objective
and light are set, and only then is the run folder created. Finish: every
step runs even if one before it failed, and ``summary.json`` is always
written; ``run()`` returns only after the runner and analysis threads ended.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smartscope.controller import records as R
from smartscope.controller.checks import check_grid_sizes, check_plan
from smartscope.controller.engine import ControllerEngine
from smartscope.controller.executor import LEDGER_COUNTS
from smartscope.controller.recorder import Recorder, protocol_yaml
from smartscope.controller.sequence import shortest_interval_s
from smartscope.errors import SmartscopeError
from smartscope.heap import trim_heap
from smartscope.interrupts import (
    deferred,
    interrupt_behind,
    shielded,
    signal_name,
    stop_signals,
)
from smartscope.io.disk import disk_full_error, disk_full_message
from smartscope.io.summary import percentiles, readable_ms

if TYPE_CHECKING:
    from collections.abc import Callable

    from smartscope.controller.controller import Controller

__all__ = ["run"]

logger = logging.getLogger("smartscope.controller")


def run(ctl: Controller, on_tick: Callable[[], None] | None) -> dict[str, Any]:
    with stop_signals():  # the CLI's guard when there is one; SIGINT only otherwise
        return _run(ctl, on_tick)


def _run(ctl: Controller, on_tick: Callable[[], None] | None) -> dict[str, Any]:
    from smartscope.controller.controller import RunError

    try:
        _start(ctl)
    except KeyboardInterrupt:
        if ctl.summary is not None:  # interrupted once the run folder existed
            return ctl.summary
        raise
    failures: list[BaseException] = []
    done = threading.Event()

    def _acquire() -> None:
        try:
            # no sink: the engine hands each frame to the recorder's images
            ctl.core.mda.run(ctl.acquisition.events())
        except BaseException as e:  # reported on the caller's thread
            failures.append(e)
        finally:
            done.set()

    thread = threading.Thread(target=_acquire, name="smartscope-mda", daemon=True)
    try:
        with shielded():  # the folder exists: from here on a signal is a stop
            thread.start()
        while not done.is_set():
            try:
                if not done.wait(0.05) and on_tick is not None:
                    try:
                        on_tick()
                    except Exception as e:
                        interrupt = interrupt_behind(e)  # a library hid it
                        if interrupt is not None:
                            raise interrupt from e
                        logger.exception("on_tick raised")
            except KeyboardInterrupt as e:  # SIGINT, or SIGTERM under stop_signals
                name = signal_name(e)
                ctl.stop(f"interrupted ({name})", interrupted=True, signal=name)
    except KeyboardInterrupt as e:  # landed between the loop's own handlers
        name = signal_name(e)
        ctl.stop(f"interrupted ({name})", interrupted=True, signal=name)
    with shielded():
        _join(thread, ctl)
        error = failures[0] if failures else None
        summary = _finish(ctl, error)
    if error is not None and disk_full_error(error) is None:
        failed = RunError(
            f"the acquisition failed: {type(error).__name__}: {error} "
            f"(frames so far are in {ctl.out_dir})"
        )
        failed.exit_code = summary.get("exit_code", 1)  # type: ignore[attr-defined]
        raise failed from error
    return summary


def _join(thread: threading.Thread, ctl: Controller) -> None:
    """Wait for the runner thread; an interrupt here only repeats the stop."""
    while thread.is_alive():
        try:
            thread.join(0.1)
        except KeyboardInterrupt as e:
            name = signal_name(e)
            ctl.stop(f"interrupted ({name})", interrupted=True, signal=name)


def _image_scales(seq: Any) -> tuple[float, float]:
    """The planned interval (s) and z step (µm) of ``seq``: the images'
    scales (0 where the sequence has none)."""
    interval = getattr(seq.time_plan, "interval", None)
    step = getattr(seq.z_plan, "step", None)
    seconds = interval.total_seconds() if hasattr(interval, "total_seconds") else 0.0
    return float(seconds or 0.0), float(step or 0.0)


def _frame_shape(ctl: Controller) -> tuple[tuple[int, int], float] | None:
    """The camera's frame shape and pixel size now (the models' warm-up;
    None when the core cannot say)."""
    core = ctl.core
    try:
        shape = (int(core.getImageHeight()), int(core.getImageWidth()))
        pixel = float(core.getPixelSizeUm() or 1.0)
    except Exception:
        return None
    return (shape, pixel) if min(shape) > 0 else None


def _run_meta(ctl: Controller) -> dict[str, Any]:
    """The run as the images' root metadata says it."""
    p, sim = ctl.protocol, ctl._sim
    meta: dict[str, Any] = {
        "protocol": p.name,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "events": "events.jsonl: each frame record's image gives its series, t, c, z",
    }
    if sim is not None:
        meta["simulator"] = {"seed": sim.seed, "scene": sim.preset_name}
    return meta


def _images_kept(ctl: Controller) -> frozenset[str]:
    """The images the run's analysis results carry (``FrameAnalyser.images_kept``):
    those it saves, those its reactions read (``Reaction.reads_images``;
    both for an object that does not say), and both while anything listens
    to ``frame_analysed``. On a GPU the others stay on the card."""
    from smartscope.analysis.result import ALL_IMAGES

    p = ctl.protocol
    kept: set[str] = set()
    if p.save.labels or p.analysis.save_labels:
        kept.add("labels")
    if p.analysis.denoise and (p.save.denoised or p.analysis.save_denoised):
        kept.add("denoised")
    for reaction in ctl.reactions.reactions:
        reads = getattr(reaction, "reads_images", ALL_IMAGES)
        if isinstance(reads, str) or not _names_of(reads) <= ALL_IMAGES:
            from smartscope.controller.controller import RunError

            name = getattr(reaction, "name", type(reaction).__name__)
            raise RunError(
                f"reaction {name!r}: reads_images must be a set of "
                f"{sorted(ALL_IMAGES)} (empty if it reads neither), got {reads!r}"
            )
        kept |= set(reads)
    if len(ctl.frame_analysed):
        kept |= ALL_IMAGES
    return frozenset(kept)


def _names_of(reads: Any) -> set[Any]:
    """The names in a reaction's ``reads_images`` (a bad value: one no
    image has)."""
    try:
        return set(reads)
    except TypeError:
        return {reads}


def _start(ctl: Controller) -> None:
    from smartscope.controller.controller import RunError, _grid_waits_for_objective

    p, core, out = ctl.protocol, ctl.core, ctl.out_dir
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunError(
            f"run folder {out} exists and is not an empty folder; choose another --out"
        )
    if p.analysis.enabled:
        # models are loaded (a bad model file refused) before anything moves
        with deferred():  # a stop while torch's C++ calls Python would abort
            from smartscope.analysis import AnalysisPipeline

            ctl._pipeline = AnalysisPipeline(
                p.analysis, on_result=ctl._on_result, device=ctl.device
            )
            ctl._pipeline.load_models()
            ctl._pipeline.images_kept = _images_kept(ctl)
    with contextlib.suppress(SmartscopeError):
        from smartscope.sim import get_simulator

        ctl._sim = get_simulator(core)
    restore: Callable[[], None] = _nothing
    created = False
    try:
        created = _probe_folder(out)
        if not _grid_waits_for_objective(core, p):  # else after the switch
            _check_space(ctl)
        restore = _set_initial_state(ctl)
        interval_s, z_step_um = _image_scales(p.sequence)
        rec = ctl._recorder = Recorder(
            out,
            protocol_yaml=protocol_yaml(p.model_dump(mode="json", exclude_none=True)),
            save_labels=p.analysis.enabled
            and (p.save.labels or p.analysis.save_labels),
            save_denoised=p.analysis.enabled
            and bool(p.analysis.denoise)
            and (p.save.denoised or p.analysis.save_denoised),
            run_meta=_run_meta(ctl),
            interval_s=interval_s,
            z_step_um=z_step_um,
            on_disk_full=lambda msg: _stop_disk_full(ctl, msg),
        )
    except BaseException as e:
        with shielded():
            restore()  # nothing acquired: the microscope as it was found
            if created:
                shutil.rmtree(out, ignore_errors=True)
        if isinstance(e, OSError):
            raise RunError(f"cannot write the run folder {out}: {e}") from e
        raise
    try:
        sim = ctl._sim
        if sim is not None:
            if p.save.truth:
                rec.keep_open(sim.record_truth(out / "truth" / "cells.csv"))
            # the truth streams to disk; keeping it in memory too would grow
            ctl._sim_kept_history = sim.keep_history
            sim.keep_history = False
        ctl.reactions.reset()
        ctl.executor.move_ahead = sim is None or sim.time_mode == "realtime"
        if ctl._pipeline is not None:
            virtual = sim is not None and sim.time_mode == "virtual"
            ctl.acquisition.analysis_wait = "virtual" if virtual else "realtime"
            ctl._pipeline.adapt_paced = virtual
            ctl._pipeline.drop_late = not virtual  # no frame is late in virtual time
        ctl.planned_frame_ms = planned_frame_ms(ctl)
        if ctl._pipeline is not None:
            ctl._pipeline.frame_skipped.connect(ctl._on_skipped)
            ctl._pipeline.start(warm_up=_frame_shape(ctl))
            ctl.analysis_warm_up_ms = ctl._pipeline.warm_up_cost()
            if sim is None or sim.time_mode != "virtual":
                _warn_if_behind(ctl)
        ctl._old_engine = core.mda.set_engine(
            ControllerEngine(
                core,
                policy=p.on_error,
                on_device_error=ctl._on_device_error,
                on_exposed=ctl.executor.record_frame,
                on_image=rec.store_frame,
                on_frame=ctl._on_frame,
            )
        )
        with deferred():  # the run's time zero and its first record, together
            _log_run_started(ctl)
    except BaseException as e:
        # a stop signal, also one a library turned into an error of its own
        interrupt = interrupt_behind(e)
        with shielded():
            if not ctl._t0:  # stopped while starting (a signal in the warm-up):
                _log_run_started(ctl)  # the events still begin with run_started
            _finish(ctl, e if interrupt is None else interrupt)
        if interrupt is not None and interrupt is not e:
            raise interrupt from e
        raise


def planned_frame_ms(ctl: Controller) -> float | None:
    """The plan's shortest mean time between two frames, ms: the shortest
    interval between its time points shared by one time point's frames (or
    their exposures, where those take longer). None without a time plan of
    two or more points, or where the plan cannot say (positions with their
    own intervals are counted at the plan's)."""
    tp = ctl.plan.sequence.time_plan
    if tp is None:
        return None
    try:
        interval_s = shortest_interval_s(tp)
        events = ctl.plan.preview()
        default_ms = float(ctl.core.getExposure())
    except Exception:
        return None
    if interval_s is None or not events:
        return None
    exposures_s = (
        sum((default_ms if e.exposure is None else float(e.exposure)) for e in events)
        / 1000.0
    )
    return round(max(interval_s, exposures_s) * 1000.0 / len(events), 3)


def _warn_if_behind(ctl: Controller) -> None:
    """Say before the first frame when the analysis, as its warm-up measured
    it, cannot take the plan's frames as fast as they come (realtime and
    real hardware; virtual time waits for the analysis)."""
    cost, planned = ctl.analysis_warm_up_ms, ctl.planned_frame_ms
    two = ctl._pipeline is not None and ctl._pipeline.stages == 2
    message = behind_message(cost, planned, two_threads=two, when="at the warm-up")
    if message is not None:
        logger.warning("%s", message)


def behind_message(
    cost: dict[str, float] | None,
    planned_ms: float | None,
    *,
    two_threads: bool,
    when: str,
) -> str | None:
    """Why the analysis may not keep up with a plan (None when it keeps up, or
    when either figure is missing): ``cost`` as ``warm_up_cost()`` gives it,
    the plan's ``planned_frame_ms``; ``when`` says where the models were timed."""
    if cost is None or planned_ms is None or cost["per_frame"] <= planned_ms:
        return None
    parts = model_times(cost)
    how = "on two threads at once" if two_threads else "one after the other"
    return (
        f"the analysis may not keep up with this plan: on this machine the "
        f"models took {readable_ms(cost['per_frame'])} ms a frame {when} "
        f"({parts}, {how}) and the plan takes a frame every "
        f"{readable_ms(planned_ms)} ms: if the acquisition keeps that pace, "
        f"roughly {100.0 * planned_ms / cost['per_frame']:.0f}% of the frames "
        "will be analysed and reacted to (the others are skipped from analysis, "
        "never from disk); a longer interval, fewer positions or channels, a "
        "faster model or a GPU keep up, and analysis.max_wait_ms keeps the "
        "reactions on the newest frames meanwhile"
    )


def model_times(cost: dict[str, float]) -> str:
    """ "denoise 21 ms, segment 18 ms" from a warm-up's ``cost``."""
    return ", ".join(
        f"{k} {readable_ms(cost[k])} ms" for k in ("denoise", "segment") if k in cost
    )


def _log_run_started(ctl: Controller) -> None:
    """Set the run's time zero and write its first record."""
    p, sim = ctl.protocol, ctl._sim
    ctl._t0 = time.perf_counter()
    ctl._log(
        R.RunStartedRecord(
            protocol=p.name,
            t_wall=time.time(),
            positions=list(ctl.plan.view().positions),
            time_mode=sim.time_mode if sim is not None else "realtime",
            plan_mode="dynamic" if ctl.plan.dynamic else "verbatim",
            devices=p.devices.model_dump(),
            simulator=None
            if sim is None
            else {"seed": sim.seed, "scene": sim.preset_name},
            planned_frame_ms=ctl.planned_frame_ms,
            analysis_warm_up_ms=ctl.analysis_warm_up_ms,
        )
    )


def _stop_disk_full(ctl: Controller, message: str) -> None:
    ctl.gate.request_stop(message, "error")
    with contextlib.suppress(Exception):
        ctl.core.mda.cancel()


#: bytes per pixel of the images written besides the raw frames
_DERIVED_BYTES = {"labels": 4, "denoised": 4}


def planned_bytes(ctl: Controller) -> tuple[int | None, int]:
    """(bytes the run will write as planned, None when open-ended; bytes per
    frame), raw and derived images together."""
    from smartscope.run import expected_frames

    p, core = ctl.protocol, ctl.core
    pixels = int(core.getImageWidth()) * int(core.getImageHeight())
    per_frame = pixels * int(core.getBytesPerPixel())
    if p.analysis.enabled and (p.save.labels or p.analysis.save_labels):
        per_frame += pixels * _DERIVED_BYTES["labels"]
    if (
        p.analysis.enabled
        and p.analysis.denoise
        and (p.save.denoised or p.analysis.save_denoised)
    ):
        per_frame += pixels * _DERIVED_BYTES["denoised"]
    n = expected_frames(ctl)
    return (None if n is None else n * per_frame), per_frame


def _check_space(ctl: Controller) -> None:
    """Refuse a run whose planned frames do not fit the free space (with the
    numbers); an open-ended run is told how many frames fit."""
    from smartscope.controller.controller import RunError
    from smartscope.io.disk import RESERVE_BYTES, free_bytes

    check_grid_sizes(ctl.plan.sequence, ctl.protocol)  # before counting events
    need, per_frame = planned_bytes(ctl)
    free = free_bytes(ctl.out_dir) - RESERVE_BYTES
    fits = max(0, free // max(per_frame, 1))
    if need is not None and need > free:
        raise RunError(
            f"not enough disk space for {ctl.out_dir}: the plan writes "
            f"{need / 1e6:.1f} MB ({need // per_frame} frames of "
            f"{per_frame / 1e6:.2f} MB), {max(free, 0) / 1e6:.1f} MB are free "
            f"(room for {fits} frames); free space, choose another --out or "
            "shorten the plan (stop.max_frames)"
        )
    if (
        need is not None
        and ctl.reactions.reactions
        and ctl.protocol.stop.max_frames is None
    ):
        logger.warning(
            "the disk check counts the planned frames (%d, %.1f MB); reactions may "
            "add more (autofocus sweeps, added positions): %s has room for about "
            "%d frames; stop.max_frames bounds the run",
            need // per_frame,
            need / 1e6,
            ctl.out_dir,
            fits,
        )
    if need is None:
        logger.warning(
            "open-ended run: %s has room for about %d frames (%.1f MB free)",
            ctl.out_dir,
            fits,
            free / 1e6,
        )


def _probe_folder(out: Path) -> bool:
    """Make sure the run folder can be written before anything moves; whether
    it was created here (then it is removed if the start fails)."""
    from smartscope.controller.controller import RunError

    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise RunError(f"cannot write the run folder {out}: {e}") from e
    return created


def _nothing() -> None:
    pass


def _set_initial_state(ctl: Controller) -> Callable[[], None]:
    """The protocol's objective and light (validated); the plan is laid out
    again for the new field of view and checked before the run folder exists.
    Returns what puts the objective and light back as they were (for a start
    that fails after this)."""
    p, core, roles = ctl.protocol, ctl.core, ctl.protocol.devices
    group = roles.objective_group
    before = core.getCurrentConfig(group) if p.objective is not None else None
    light = roles.light_source if p.laser_power_mw is not None else None
    power = core.getProperty(light, roles.power_property) if light else None

    def restore() -> None:
        if light and power is not None:
            with contextlib.suppress(Exception):
                core.setProperty(light, roles.power_property, power)
        if before and core.getCurrentConfig(group) != before:
            with contextlib.suppress(Exception):
                core.setConfig(group, before)
                core.waitForConfig(group, before)

    try:
        if p.objective is not None and p.objective != before:
            core.setConfig(group, p.objective)
            core.waitForConfig(group, p.objective)
            ctl._replace_plan()
            check_plan(ctl.plan, p)
            _check_space(ctl)  # a grid's size depends on the field of view
        if light is not None:
            core.setProperty(light, roles.power_property, p.laser_power_mw)
        if group in core.getAvailableConfigGroups():
            current = core.getCurrentConfig(group)
            ctl.plan.set_objective(current, roles.offset_um(current))
    except BaseException:
        with shielded():
            restore()
        raise
    return restore


def _finish(ctl: Controller, error: BaseException | None) -> dict[str, Any]:
    core, rec = ctl.core, ctl._recorder
    if getattr(ctl, "_old_engine", None) is not None:
        with contextlib.suppress(Exception):
            core.mda.set_engine(ctl._old_engine)
    if isinstance(error, KeyboardInterrupt):  # interrupted during start-up
        name = signal_name(error)
        ctl.gate.request_stop(
            f"interrupted ({name}) during start-up", "interrupted", signal=name
        )
        error = None
    if error is not None and rec is not None:
        with contextlib.suppress(Exception):
            ctl._log(
                R.RunErrorRecord(
                    error=f"{type(error).__name__}: {error}",
                    traceback="".join(traceback.format_exception(error))[-4000:],
                )
            )
    _stop_analysis(ctl)
    if rec is not None:
        _store_results(ctl)  # before the status reads whether the disk filled
        _save_adapted(ctl)
    # frames whose analysis never ended (a dead analysis thread): say so
    for index in sorted(ctl._views):
        with contextlib.suppress(Exception):
            ctl._log(
                R.AnalysisSkippedRecord(index=index, reason="analysis thread ended")
            )
    ctl._views.clear()
    with contextlib.suppress(Exception):
        ctl.acquisition.abandon_sweeps()
    from smartscope.controller.executor import Outcome

    for action, _pos, _t in ctl.acquisition.pending():  # decided after the end
        with contextlib.suppress(Exception):
            ctl._report(Outcome(action, "not_applied", "the run had ended"), None)
    sim = ctl._sim
    if sim is not None and hasattr(ctl, "_sim_kept_history"):
        sim.keep_history = ctl._sim_kept_history
    if rec is None:
        return {}
    status, reason = _status(ctl, error)
    gate = ctl.gate
    stopped_by = gate.stopped_by if status == "stopped" else None
    summary = rec.finish(
        protocol=ctl.protocol.name,
        status=status,
        finish_reason=reason,
        interrupted=gate.interrupted,
        stopped_by=stopped_by,
        signal=gate.signal if gate.interrupted else None,
        exit_code=R.exit_code(status, stopped_by, gate.signal),
        light_dose_mj=round(ctl.executor.dose_mj, 6),
        light_dose_counts=LEDGER_COUNTS,
        light_dose_mj_simulator=None if sim is None else round(sim.light_dose_mj, 6),
        wall_time_s=round(time.perf_counter() - ctl._t0, 3) if ctl._t0 else 0.0,
        sample_time_s=round(ctl._sample_time(), 3) if ctl._t0 else 0.0,
        positions=[
            {"name": k, "x_um": x, "y_um": y, "z_um": z}
            | ({} if active else {"removed": True})
            for k, (x, y, z), active in ctl.plan.all_positions()
        ],
        time_mode=sim.time_mode if sim is not None else "realtime",
        sample_clock_s=None if sim is None else round(sim.clock_s, 3),
        reaction_ms=percentiles(ctl.reaction_ms),
        planned_frame_ms=ctl.planned_frame_ms,
        analysis_warm_up_ms=ctl.analysis_warm_up_ms,
    )
    ctl.summary = summary
    ctl._emit(ctl.run_finished, summary)
    trim_heap()  # what the run's threads freed goes back to the system
    return summary


def _stop_analysis(ctl: Controller) -> None:
    """Wait for the analysis thread to end: the queue is analysed after a normal
    end, abandoned after an interrupt (its frames logged as such)."""
    pipe = ctl._pipeline
    if pipe is None or not pipe.is_running:
        return
    drain = not ctl.gate.interrupted
    while True:
        try:
            if pipe.stop(drain=drain, timeout_s=10.0):
                return
            logger.warning("waiting for the analysis of the current frame to end")
        except KeyboardInterrupt as e:
            drain = False
            name = signal_name(e)
            ctl.gate.request_stop(f"interrupted ({name})", "interrupted", signal=name)


def _store_results(ctl: Controller) -> None:
    """Wait for the analysed frames handed to the recorder to be stored (a
    few frames' measurements and images at most: its queue is bounded)."""
    rec = ctl._recorder
    if rec is None:
        return
    while True:
        try:
            if rec.drain_results(timeout_s=10.0):
                return
            logger.warning("waiting for the analysed frames to be stored")
        except KeyboardInterrupt as e:
            name = signal_name(e)
            ctl.gate.request_stop(f"interrupted ({name})", "interrupted", signal=name)


def _save_adapted(ctl: Controller) -> None:
    """Write the denoiser fine-tuned during the run into the run folder
    (``models/NAME-adapted``) and log where."""
    pipe = ctl._pipeline
    adapter = None if pipe is None else pipe.adapter
    if adapter is None:
        return
    folder = ctl.out_dir / "models" / f"{adapter.base_name}-adapted"
    error, path = adapter.error, None
    try:
        adapter.save(folder)
        path = folder.relative_to(ctl.out_dir).as_posix()
    except Exception as e:
        logger.exception("cannot save the adapted denoiser")
        error = f"saving to {folder}: {type(e).__name__}: {e}"
    last = adapter.history[-1] if adapter.history else None
    with contextlib.suppress(Exception):
        ctl._log(
            R.DenoiserSavedRecord(
                path=path,
                version=adapter.version,
                steps=last.steps if last else 0,
                frames_dropped=adapter.frames_dropped,
                error=error,
            )
        )


def _status(ctl: Controller, error: BaseException | None) -> tuple[str, str]:
    c, rec = ctl.stats, ctl._recorder
    if ctl.gate.interrupted:
        return "interrupted", ctl.gate.stop_reason or "interrupted"
    full = disk_full_error(error)
    if full is not None:
        return "error", disk_full_message(
            full, ctl.out_dir / "data.ome.zarr", "the raw frames"
        )
    if rec is not None and rec.disk_full:
        return "error", rec.disk_full
    if error is not None:
        return "error", f"error: {type(error).__name__}: {error}"
    if ctl.gate.stop_status in ("stopped", "error"):
        return ctl.gate.stop_status, ctl.gate.stop_reason
    if c is not None and (c.reaction_errors or c.failed):
        return "error", (
            f"acquisition completed, but reactions raised {c.reaction_errors} times "
            f"and analysis failed on {c.failed} frames (see events.jsonl)"
        )
    return "completed", "completed"
