"""``measurements.csv``: one row per object per analysed frame."""

from __future__ import annotations

import csv
import threading
from pathlib import Path

from smartscope.analysis.result import FrameResult

__all__ = ["MEASUREMENT_COLUMNS", "MeasurementsWriter"]

MEASUREMENT_COLUMNS = (
    "frame",
    "position",
    "t_s",
    "label",
    "track_id",
    "x_um",
    "y_um",
    "area_um2",
    "mean_intensity",
    # appended (readers by column position keep working): the frame's channel,
    # focus position and time point (useq's "t" index; empty without a time axis)
    "channel",
    "z_um",
    "t_index",
)


class MeasurementsWriter:
    """Writes rows as results arrive; flushed per frame."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fh = self.path.open("w", newline="", encoding="utf-8")
        self._w = csv.writer(self._fh)
        self._w.writerow(MEASUREMENT_COLUMNS)
        self._lock = threading.Lock()
        self.rows = 0

    def write(self, result: FrameResult) -> None:
        f = result.frame
        rows = [
            (
                f.frame_index,
                f.position,
                f"{f.t_s:.3f}",
                o.label,
                o.track_id,
                f"{o.x_um:.3f}",
                f"{o.y_um:.3f}",
                f"{o.area_um2:.2f}",
                f"{o.mean_intensity:.2f}",
                f.channel,
                f"{f.z_um:.3f}",
                f.event_index.get("t", ""),
            )
            for o in result.objects
        ]
        with self._lock:
            if self._fh.closed:
                return
            self._w.writerows(rows)
            self._fh.flush()
            self.rows += len(rows)

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.close()
