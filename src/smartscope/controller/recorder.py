"""The run folder: ``data.ome.zarr`` (raw, label and denoised images),
``events.jsonl``, ``measurements.csv``, the simulator's truth, ``summary.json``.

The recorder only listens: it stores every frame the engine hands it (before
the runner announces the frame), writes every :class:`~.records.Record` the
controller emits and every analysis result, and counts them for the summary
(so the summary is what the log says, not a second bookkeeping).
Thread-safe: frames and records arrive from the runner and the analysis
threads; the analysed frames' measurements and images are written on a
thread of the recorder's own (:class:`~.result_writer.ResultWriter`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from smartscope.analysis.result import FrameResult
from smartscope.controller import records as R
from smartscope.controller.result_writer import ResultWriter
from smartscope.errors import SmartscopeError
from smartscope.io import EventLog, MeasurementsWriter, percentiles
from smartscope.io.disk import SpaceReserve, disk_full_error, disk_full_message
from smartscope.io.image_repair import repair_images
from smartscope.io.images import RunImages, Where
from smartscope.io.measurements import FrameRows

__all__ = ["Counts", "Recorder", "store_mda_frame"]


def store_mda_frame(
    images: RunImages, image: Any, event: Any, meta: dict[str, Any]
) -> Where:
    """Write one frame of an MDA (its image, ``useq.MDAEvent`` and
    pymmcore-plus metadata) into ``images`` where its event says: the
    controller's writer, also used as a plain MDA's output handler by
    :func:`smartscope.overhead.measure_controller_overhead`."""
    from smartscope.controller.autofocus import frame_role

    role = frame_role(event)
    return images.store_frame(
        image,
        position=event.pos_name or f"p{event.index.get('p', 0)}",
        index=dict(event.index),
        channel=event.channel.config if event.channel else "",
        pixel_um=float(meta.get("pixel_size_um") or 1.0),
        autofocus=role if role and role.get("role") == "autofocus" else None,
    )


logger = logging.getLogger("smartscope.controller")


@dataclass(frozen=True)
class _Stored:
    """What is stored of one analysed frame (not its raw image, which is
    stored already and need not wait in the queue)."""

    rows: FrameRows
    image_at: dict[str, Any] | None
    labels: Any
    denoised: Any

    @classmethod
    def of(cls, result: FrameResult) -> _Stored:
        return cls(
            rows=FrameRows.of(result),
            image_at=result.frame.image_at,
            labels=result.labels,
            denoised=result.denoised,
        )


@dataclass
class Counts:
    """What the records said so far."""

    frames: int = 0
    autofocus_frames: int = 0
    analysed: int = 0
    failed: int = 0
    skipped: int = 0
    abandoned: int = 0
    device_errors: int = 0
    reaction_errors: int = 0
    subscriber_errors: int = 0
    disabled: list[str] = field(default_factory=list)
    result_latency_ms: list[float] = field(default_factory=list)
    action_latency_ms: list[float] = field(default_factory=list)
    frame_late_ms: list[float] = field(default_factory=list)
    #: per analysis stage, each frame's ms (8 bytes a value: a long run's
    #: 5 stages x 1,000,000 frames hold 40 MB)
    stages_ms: dict[str, array] = field(default_factory=dict)
    actions: Counter = field(default_factory=Counter)

    def add(self, rec: R.Record) -> None:
        """Count one record."""
        if isinstance(rec, R.FrameRecord):
            self.frames += 1
            if rec.role == "autofocus":
                self.autofocus_frames += 1
            elif rec.late_ms is not None:
                self.frame_late_ms.append(rec.late_ms)
        elif isinstance(rec, R.AnalysisRecord):
            self.analysed += 1
            self.failed += rec.error is not None
            self.result_latency_ms.append(rec.latency_ms)
            for stage, ms in (rec.stages_ms or {}).items():
                self.stages_ms.setdefault(stage, array("d")).append(ms)
        elif isinstance(rec, R.AnalysisSkippedRecord):
            if rec.reason == "abandoned at stop":
                self.abandoned += 1
            else:
                self.skipped += 1
        elif isinstance(rec, R.ActionRecord):
            self.actions[(rec.type, rec.status)] += 1
            if rec.latency_ms is not None:
                self.action_latency_ms.append(rec.latency_ms)
        elif isinstance(rec, R.ReactionErrorRecord):
            self.reaction_errors += 1
            if rec.disabled:
                self.disabled.append(rec.reaction)
        elif isinstance(rec, R.DeviceErrorRecord):
            self.device_errors += 1
        elif isinstance(rec, R.SubscriberErrorRecord):
            self.subscriber_errors += 1

    def summary(self, **fields: Any) -> dict[str, Any]:
        """``summary.json``'s content: these counts and ``fields``."""
        by_kind: dict[str, dict[str, int]] = {}
        for (kind, status), n in sorted(self.actions.items()):
            by_kind.setdefault(kind, {})[status] = n
        return R.Summary(
            frames_acquired=self.frames,
            frames_autofocus=self.autofocus_frames,
            frames_analysed=self.analysed,
            frames_skipped_analysis=self.skipped,
            frames_abandoned_analysis=self.abandoned,
            frames_failed_analysis=self.failed,
            device_errors=self.device_errors,
            reaction_errors=self.reaction_errors,
            reactions_disabled=list(self.disabled),
            subscriber_errors=self.subscriber_errors,
            latency_frame_to_result_ms=percentiles(self.result_latency_ms),
            latency_frame_to_action_ms=percentiles(self.action_latency_ms),
            frame_late_ms=(
                percentiles(self.frame_late_ms) if self.frame_late_ms else None
            ),
            analysis_stages_ms={k: percentiles(v) for k, v in self.stages_ms.items()}
            or None,
            actions=by_kind,
            **fields,
        ).model_dump(mode="json")


class Recorder:
    """Writes one run folder. Create it only once the run is validated."""

    def __init__(
        self,
        out_dir: Path,
        *,
        protocol_yaml: str,
        save_labels: bool,
        save_denoised: bool,
        run_meta: dict[str, Any] | None = None,
        interval_s: float = 0.0,
        z_step_um: float = 0.0,
        on_disk_full: Callable[[str], None] | None = None,
    ) -> None:
        self.out_dir = out_dir
        self.counts = Counts()
        self._lock = threading.Lock()
        #: called (once, any thread) with a one-line message when the disk fills
        self.on_disk_full = on_disk_full
        #: the first disk-full message, when the disk filled
        self.disk_full: str | None = None
        out_dir.mkdir(parents=True, exist_ok=True)
        # room for the summary and the log's last lines, whatever fills the disk
        self.reserve = SpaceReserve(out_dir)
        (out_dir / "protocol.yaml").write_text(protocol_yaml)
        self.log = EventLog(
            out_dir / "events.jsonl",
            on_disk_full=lambda e: self.disk_filled(e, "the event log"),
        )
        try:
            self.measurements = MeasurementsWriter(out_dir / "measurements.csv")
        except BaseException:
            self.log.close()
            raise
        try:
            self.images = RunImages(
                out_dir / "data.ome.zarr",
                run=run_meta or {},
                interval_s=interval_s,
                z_step_um=z_step_um,
                save_labels=save_labels,
                save_denoised=save_denoised,
            )
        except BaseException:
            self.log.close()
            self.measurements.close()
            raise
        self._closers: list[Any] = []
        self.summary: dict[str, Any] | None = None
        #: stores the analysed frames (:meth:`on_result`) on a thread of its own
        self.results: ResultWriter[_Stored] = ResultWriter(self._store)

    def disk_filled(self, error: OSError, what: str) -> bool:
        """A write failed for want of space: give the reserve back (so the
        summary and the log's last lines can be written) and ask the run to
        stop; whether the reserve had space to give."""
        freed = self.reserve.release_half()  # the other half: for the summary
        with self._lock:
            first = self.disk_full is None
            if first:
                self.disk_full = disk_full_message(error, self.out_dir, what)
                logger.error("%s", self.disk_full)
        if first and self.on_disk_full is not None:
            with contextlib.suppress(Exception):
                self.on_disk_full(self.disk_full or "disk full")
        return freed

    def keep_open(self, closable: Any) -> None:
        """Close ``closable`` (a truth recorder ...) when the run folder is finished."""
        self._closers.append(closable)

    # ------------------------------------------------------------ listeners

    def store_frame(
        self, image: Any, event: Any, meta: dict[str, Any]
    ) -> dict[str, Any]:
        """Write one raw frame (runner thread, before the runner announces
        it); where it went, for its frame record."""
        return store_mda_frame(self.images, image, event, meta).as_dict()

    def on_record(self, rec: R.Record) -> None:
        """Write one record and count it (any thread)."""
        with self._lock:
            self.counts.add(rec)
        self.log.write_line(rec.model_dump_json())

    def on_result(self, result: FrameResult) -> None:
        """Hand an analysed frame's measurements and images over to be
        stored (analysis thread; written on :attr:`results`' thread, in
        order, so that the reactions need not wait for the disk)."""
        if result.error is not None or self.disk_full:
            return  # a full disk: what space is left is for the raw frames' log
        self.results.put(_Stored.of(result))

    def drain_results(self, timeout_s: float | None = None) -> bool:
        """Store every result handed over; whether all are (False:
        ``timeout_s`` passed first). Results handed over after this are
        stored at once, on the caller's thread."""
        return self.results.close(timeout_s)

    def _store(self, s: _Stored) -> None:
        if self.disk_full:
            return
        try:
            self.measurements.write_rows(s.rows)
            if s.image_at is not None:
                self.images.store_derived(
                    Where.from_dict(s.image_at), labels=s.labels, denoised=s.denoised
                )
        except OSError as e:
            full = disk_full_error(e)
            if full is None:
                raise
            self.disk_filled(full, f"the analysis of frame {s.rows.index}")

    # ------------------------------------------------------------ finish

    def close(self) -> None:
        """Store what is queued, size the images and close the files, with no
        summary: a folder written for a measurement (the benchmarks), not a
        run's (:meth:`finish`)."""
        self.drain_results()
        self.images.finish()
        self.log.close()
        self.measurements.close()
        self.reserve.release()

    def finish(self, **fields: Any) -> dict[str, Any]:
        """Size the label and denoised images as their raw images, close every
        file and write ``summary.json`` from the counts and ``fields``; each
        step runs even if one before it failed, and the summary is always
        written."""
        c = self.counts
        errors: list[str] = []
        self.drain_results()  # before the images are sized and the files closed
        self.reserve.release_half()
        try:
            self.images.finish()
        except Exception as e:  # the summary must still be written
            errors.append(f"finishing the images: {type(e).__name__}: {e}")
        if self.images.write_failed or self.images.frames_stored != c.frames:
            try:
                # a write that failed (a full disk) leaves room made for a
                # plane never written: cut back, so no frame reads as zeros
                root = self.out_dir / "data.ome.zarr"
                on_disk = repair_images(root).frames_on_disk
                if on_disk != c.frames:
                    errors.append(
                        f"data.ome.zarr: {on_disk} frames on disk, {c.frames} logged"
                    )
            except Exception as e:
                errors.append(f"checking the images: {type(e).__name__}: {e}")
        for closable in self._closers:
            try:
                closable.close()
            except Exception as e:
                errors.append(f"closing {closable!r:.80}: {type(e).__name__}: {e}")
        stored = self.results
        summary = c.summary(
            finish_errors=errors or None,
            storage_ms=percentiles(stored.write_ms) if stored.written else None,
            storage_waited_s=round(stored.waited_s, 3),
            **fields,
        )
        with contextlib.suppress(Exception):
            self.on_record(
                R.RunFinishedRecord(
                    status=summary["status"],
                    reason=summary["finish_reason"],
                    frames=c.frames,
                    t_wall=time.time(),
                )
            )
        for closable in (self.log, self.measurements):
            with contextlib.suppress(Exception):
                closable.close()
        self.reserve.release()
        try:
            write_atomic(self.out_dir / "summary.json", json.dumps(summary, indent=2))
        except OSError as e:
            full = disk_full_error(e)
            if full is None:
                raise
            err = SmartscopeError(
                disk_full_message(full, self.out_dir / "summary.json", "the summary")
                + "; the frames and events.jsonl are on disk: free space, then "
                "`smartscope recover` rebuilds the summary"
            )
            err.exit_code = 1  # type: ignore[attr-defined]
            raise err from e
        self.summary = summary
        return summary


def write_atomic(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all (a temporary file renamed over it)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def protocol_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False)
