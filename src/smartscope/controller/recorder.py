"""The run folder: ``events.jsonl``, ``measurements.csv``, label and denoised
images, the simulator's truth, ``summary.json``.

The recorder only listens: it writes every :class:`~.records.Record` the
controller emits and every analysis result, and counts them for the summary
(so the summary is what the log says, not a second bookkeeping). Raw frames
are written by pymmcore-plus's sink, not here. Thread-safe: records arrive
from the runner and the analysis threads.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from smartscope.analysis.result import FrameResult
from smartscope.controller import records as R
from smartscope.io import DerivedImageStore, EventLog, MeasurementsWriter, percentiles

__all__ = ["Counts", "Recorder"]


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
    actions: Counter = field(default_factory=Counter)


class Recorder:
    """Writes one run folder. Create it only once the run is validated."""

    def __init__(
        self,
        out_dir: Path,
        *,
        protocol_yaml: str,
        save_labels: bool,
        save_denoised: bool,
    ) -> None:
        self.out_dir = out_dir
        self.counts = Counts()
        self._lock = threading.Lock()
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "protocol.yaml").write_text(protocol_yaml)
        self.log = EventLog(out_dir / "events.jsonl")
        try:
            self.measurements = MeasurementsWriter(out_dir / "measurements.csv")
        except BaseException:
            self.log.close()
            raise
        zarr_root = out_dir / "data.ome.zarr"
        self.labels = (
            DerivedImageStore(zarr_root, "nuclei", dtype="int32", label=True)
            if save_labels
            else None
        )
        self.denoised = (
            DerivedImageStore(zarr_root, "denoised", dtype="float32", label=False)
            if save_denoised
            else None
        )
        self._closers: list[Any] = []
        self.summary: dict[str, Any] | None = None

    def keep_open(self, closable: Any) -> None:
        """Close ``closable`` (a truth recorder ...) when the run folder is finished."""
        self._closers.append(closable)

    # ------------------------------------------------------------ listeners

    def on_record(self, rec: R.Record) -> None:
        """Write one record and count it (any thread)."""
        c = self.counts
        with self._lock:
            if isinstance(rec, R.FrameRecord):
                c.frames += 1
                if rec.role == "autofocus":
                    c.autofocus_frames += 1
            elif isinstance(rec, R.AnalysisRecord):
                c.analysed += 1
                c.failed += rec.error is not None
                c.result_latency_ms.append(rec.latency_ms)
            elif isinstance(rec, R.AnalysisSkippedRecord):
                if rec.reason == "abandoned at stop":
                    c.abandoned += 1
                else:
                    c.skipped += 1
            elif isinstance(rec, R.ActionRecord):
                c.actions[(rec.type, rec.status)] += 1
                if rec.latency_ms is not None:
                    c.action_latency_ms.append(rec.latency_ms)
            elif isinstance(rec, R.ReactionErrorRecord):
                c.reaction_errors += 1
                if rec.disabled:
                    c.disabled.append(rec.reaction)
            elif isinstance(rec, R.DeviceErrorRecord):
                c.device_errors += 1
            elif isinstance(rec, R.SubscriberErrorRecord):
                c.subscriber_errors += 1
        self.log.write_line(rec.model_dump_json())

    def on_result(self, result: FrameResult) -> None:
        """Store an analysed frame's measurements and images (analysis thread)."""
        if result.error is not None:
            return
        f = result.frame
        self.measurements.write(result)
        if self.labels is not None and result.labels is not None:
            self.labels.write(f.frame_index, result.labels, f.pixel_size_um)
        if self.denoised is not None and result.denoised is not None:
            self.denoised.write(f.frame_index, result.denoised, f.pixel_size_um)

    # ------------------------------------------------------------ finish

    def finish(self, **fields: Any) -> dict[str, Any]:
        """Pad the derived images, close every file and write ``summary.json``
        from the counts and ``fields``; each step runs even if one before it
        failed, and the summary is always written."""
        c = self.counts
        errors: list[str] = []
        for store in (self.labels, self.denoised):
            if store is not None:
                try:
                    store.finalize(c.frames)
                except Exception as e:  # the summary must still be written
                    errors.append(f"finalising {store.name}: {type(e).__name__}: {e}")
        for closable in self._closers:
            try:
                closable.close()
            except Exception as e:
                errors.append(f"closing {closable!r:.80}: {type(e).__name__}: {e}")
        by_kind: dict[str, dict[str, int]] = {}
        for (kind, status), n in sorted(c.actions.items()):
            by_kind.setdefault(kind, {})[status] = n
        summary = R.Summary(
            frames_acquired=c.frames,
            frames_autofocus=c.autofocus_frames,
            frames_analysed=c.analysed,
            frames_skipped_analysis=c.skipped,
            frames_abandoned_analysis=c.abandoned,
            frames_failed_analysis=c.failed,
            device_errors=c.device_errors,
            reaction_errors=c.reaction_errors,
            reactions_disabled=list(c.disabled),
            subscriber_errors=c.subscriber_errors,
            latency_frame_to_result_ms=percentiles(c.result_latency_ms),
            latency_frame_to_action_ms=percentiles(c.action_latency_ms),
            actions=by_kind,
            **fields,
        ).model_dump(mode="json")
        if errors:
            summary["finish_errors"] = errors
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
        (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        self.summary = summary
        return summary


def protocol_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False)
