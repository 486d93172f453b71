"""Storing analysed frames off the analysis thread (``ResultWriter``), the
rows of ``measurements.csv`` (``MeasurementsWriter``) and the numbers of an
``analysis`` record (``records.rounded``).

The writer must keep the order it was handed, never hold more than its
bound, write everything queued before ``close`` returns, go on past an
item whose write raises, and write on the caller's thread once closed. The
measurements file must read as the csv module wrote it before (the same
bytes), whatever a position or channel name holds.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import threading
import zlib

import numpy as np
import pytest

from frames import frame_of
from smartscope.analysis.result import FrameResult, ObjectMeasurement
from smartscope.controller.records import rounded
from smartscope.controller.result_writer import ResultWriter
from smartscope.io.measurements import MEASUREMENT_COLUMNS, MeasurementsWriter


def test_items_are_written_in_order_and_all_before_close_returns() -> None:
    seen: list[int] = []
    gate = threading.Event()
    high = []
    writer: ResultWriter[int] = ResultWriter(
        lambda i: (gate.wait(), high.append(writer.pending), seen.append(i)),
        max_queued=3,
    )
    done = threading.Event()

    def hand_over() -> None:
        for i in range(50):
            writer.put(i)
        done.set()

    t = threading.Thread(target=hand_over)
    t.start()
    gate.set()
    t.join()
    assert done.is_set()
    assert writer.close()
    assert seen == list(range(50))
    assert writer.written == 50
    assert max(high) <= 3  # never more queued than the bound


def test_a_write_that_raises_is_logged_and_the_next_one_written(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[int] = []

    def write(i: int) -> None:
        if i == 2:
            raise OSError("the disk said no")
        seen.append(i)

    writer: ResultWriter[int] = ResultWriter(write)
    with caplog.at_level(logging.ERROR, logger="smartscope.controller"):
        for i in range(5):
            writer.put(i)
        assert writer.close()
    assert seen == [0, 1, 3, 4]
    assert "storing an analysis result failed" in caplog.text
    assert "the disk said no" in caplog.text


def test_after_close_items_are_written_on_the_caller_s_thread() -> None:
    threads: list[str] = []
    writer: ResultWriter[int] = ResultWriter(
        lambda i: threads.append(threading.current_thread().name)
    )
    writer.put(0)
    assert writer.close()
    writer.put(1)
    assert threads == ["smartscope-results", threading.current_thread().name]
    assert writer.close()  # again: nothing to wait for


def test_no_thread_is_started_for_a_writer_never_used() -> None:
    before = {t.name for t in threading.enumerate()}
    writer: ResultWriter[int] = ResultWriter(lambda i: None)
    assert writer.close()
    assert "smartscope-results" not in {t.name for t in threading.enumerate()} - before


def test_the_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_queued must be at least 1, got 0"):
        ResultWriter(lambda i: None, max_queued=0)


def test_a_recorder_stores_every_result_handed_over_before_it_finishes(
    tmp_path,
) -> None:
    """The real recorder and writer: 30 results handed over as fast as they
    come; once ``finish`` returns, every one's rows, labels and denoised
    plane are on disk, in order, and the summary says they were stored."""
    from smartscope.controller.recorder import Recorder
    from smartscope.io.read_images import read_derived

    out = tmp_path / "run"
    rec = Recorder(
        out,
        protocol_yaml="name: t\n",
        save_labels=True,
        save_denoised=True,
        interval_s=1.0,
        z_step_um=1.0,
    )
    rng = np.random.default_rng(0)
    image = rng.integers(100, 4000, (128, 128), dtype=np.uint16)
    handed = []
    for k in range(30):
        where = rec.images.store_frame(
            image, position="a", index={"t": k}, channel="DAPI", pixel_um=0.65
        )
        rec.on_record(_frame_record(k, where.as_dict()))
        labels = np.zeros((128, 128), np.int32)
        labels[10 : 20 + k, 10:20] = 1
        labels[50:60, 50 : 60 + k] = 2
        objects = tuple(
            ObjectMeasurement(
                label=i,
                track_id=i,
                x_um=k,
                y_um=i,
                row=0,
                col=0,
                area_um2=1.0,
                mean_intensity=2.0,
            )
            for i in (1, 2)
        )
        result = FrameResult(
            frame=dataclasses.replace(frame_of(image, k), image_at=where.as_dict()),
            objects=objects,
            labels=labels,
            denoised=image.astype(np.float32) + k,
            background=0.0,
            t_result=0.0,
        )
        rec.on_result(result)
        handed.append(result)
    summary = rec.finish(
        protocol="t",
        status="completed",
        finish_reason="completed",
        interrupted=False,
        light_dose_mj=0.0,
        light_dose_counts="",
        wall_time_s=0.0,
        sample_time_s=0.0,
        positions=[],
        time_mode="virtual",
    )
    assert summary["storage_ms"]["n"] == 30
    with (out / "measurements.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(int(r["frame"]), int(r["label"])) for r in rows] == [
        (k, i) for k in range(30) for i in (1, 2)
    ]
    for r in handed:
        k = r.frame.frame_index
        np.testing.assert_array_equal(read_derived(out, k, "labels"), r.labels)
        np.testing.assert_array_equal(read_derived(out, k, "denoised"), r.denoised)


def _frame_record(k: int, image_at: dict) -> object:
    from smartscope.controller.records import FrameRecord

    return FrameRecord(
        index=k,
        role="acquisition",
        position="a",
        event_index={"t": k},
        channel="DAPI",
        x_um=0.0,
        y_um=0.0,
        z_um=0.0,
        exposure_ms=20.0,
        laser_mw=1.0,
        dose_mj=0.0,
        t_s=float(k),
        t_frame=0.0,
        image=image_at,
        objective=None,
        pixel_size_um=0.65,
    )


# ------------------------------------------------------------ measurements.csv


def _csv_module_rows(result: FrameResult) -> str:
    """The rows as the writer wrote them with the csv module (before it
    formatted them itself)."""
    f = result.frame
    out = io.StringIO()
    csv.writer(out).writerows(
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
    )
    return out.getvalue()


def _result(
    k: int, position: str, channel: str, rng: np.random.Generator
) -> FrameResult:
    n = int(rng.integers(0, 6))
    values = rng.normal(0, 1e3, (n, 6)) * rng.choice([1e-4, 1, 1e3], (n, 6))
    values[rng.random((n, 6)) < 0.05] = np.nan
    objects = tuple(
        ObjectMeasurement(
            label=int(rng.integers(1, 70000)),
            track_id=int(rng.integers(-1, 10**6)),
            x_um=float(v[0]),
            y_um=np.float64(v[1]),  # numpy scalars, as a reaction may make them
            row=0.0,
            col=0.0,
            area_um2=float(abs(v[2])),
            mean_intensity=float(v[3]),
        )
        for v in values
    )
    frame = dataclasses.replace(
        frame_of(np.zeros((4, 4), np.uint16), k, pixel_size_um=1.0),
        position=position,
        z_um=float(rng.normal(0, 50)),
        t_s=float(rng.uniform(0, 1e5)),
        channel=channel,
        event_index={"t": k} if k % 3 else {"p": 1},
    )
    return FrameResult(
        frame=frame,
        objects=objects,
        labels=None,
        denoised=None,
        background=0.0,
        t_result=0.0,
    )


@pytest.mark.parametrize(
    "position",
    ["p0", "well A,1", 'the "left" one', "two\nlines", "100%", "tab\there", ""],
)
def test_measurements_are_the_bytes_the_csv_module_wrote(tmp_path, position) -> None:
    rng = np.random.default_rng(zlib.crc32(position.encode()))
    channels = ["DAPI", "GFP, 488", '"Cy5"', "a\r\nb", "%d"]
    results = [_result(k, position, channels[k % 5], rng) for k in range(40)]
    path = tmp_path / "measurements.csv"
    w = MeasurementsWriter(path)
    for r in results:
        w.write(r)
    w.close()
    header = io.StringIO()
    csv.writer(header).writerow(MEASUREMENT_COLUMNS)
    expected = header.getvalue() + "".join(_csv_module_rows(r) for r in results)
    assert path.read_bytes() == expected.encode("utf-8")
    assert w.rows == sum(len(r.objects) for r in results) > 0
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert len(rows) == 1 + w.rows
    assert {row[1] for row in rows[1:]} == {position}


# ------------------------------------------------------------ the analysis record


@pytest.mark.parametrize("digits", [1, 2, 3])
def test_rounded_is_python_s_round_float_for_float(digits: int) -> None:
    rng = np.random.default_rng(digits)
    values = np.concatenate(
        [
            rng.normal(0, 1, 20000) * 10.0 ** rng.integers(-4, 7, 20000),
            # decimal ties, where multiplying by 10**digits can land either side
            (rng.integers(-(10**7), 10**7, 20000) + 0.5) / 10**digits,
            # areas: pixel counts times a pixel's area (0.65 µm, 0.325 µm)
            rng.integers(1, 50000, 10000) * 0.4225,
            rng.integers(1, 50000, 10000) * 0.105625,
            [0.0, -0.0, 0.0005, 0.0015, 2.675, 1e12, -1e12, 5e-324],
            [np.nan, np.inf, -np.inf],
        ]
    ).tolist()
    got = rounded(values, digits)
    want = [round(v, digits) for v in values]
    assert [repr(v) for v in got] == [repr(v) for v in want]
    assert rounded([], digits) == []
