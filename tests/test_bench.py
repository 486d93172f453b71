"""``smartscope bench --quick`` runs for real and reports every section.

Figures are not asserted (performance is shown by benchmarks, not tests);
this checks the benchmark itself works and says what it measured.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smartscope.bench import run


def test_quick_bench_reports_simulator_and_controller(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    results = run(json_path=out, quick=True)
    on_disk = json.loads(out.read_text())
    assert on_disk["schema_version"] == 1
    assert on_disk["machine"]["cpus_usable"] >= 1
    sim = on_disk["simulator"]
    assert sim["snap_512"]["frame_shape"] == [512, 512]
    assert sim["snap_2048"]["frame_shape"] == [2048, 2048]
    assert sim["snap_512"]["ratio"] > 0
    ctl = results["controller"]
    o = ctl["overhead"]
    assert set(o["ms_per_frame"]) == {
        "plain",
        "plain_same_writer",
        "plain_zarr",
        "controller",
    }
    assert o["repeats"] == 2  # one block: each side once first, once second
    assert len(o["all_cpu_ms_per_frame"]["controller"]) == 2
    same = o["ratios"]["wall_controller_to_plain_same_writer"]
    assert same["ci95"][0] <= same["median"] <= same["ci95"][1]
    assert isinstance(o["resolved"], bool)
    assert ctl["analysis_classical"]["objects_per_frame"] > 5


def test_the_host_sections_can_be_left_out(tmp_path: Path) -> None:
    """benchmarks/gpu_check.sh spends a GPU's time on the models only: the
    simulator and controller sections (CPU work) are left out, and the JSON
    says what was measured by what it holds."""
    out = tmp_path / "bench.json"
    run(json_path=out, quick=True, simulator=False, controller=False)
    on_disk = json.loads(out.read_text())
    assert set(on_disk) == {"schema_version", "machine", "source", "quick"}


def test_scaling_reports_each_size_stage_by_stage() -> None:
    from smartscope.bench_scaling import measure_scaling, scaling_table

    r = measure_scaling(frames=2, sizes=(256, 512), device="cpu")
    assert set(r["sizes"]) == {"256", "512"}
    for e in r["sizes"].values():
        assert e["frames"] == 2
        assert set(e["stages_ms"]) == {
            "background",
            "denoise",
            "segment",
            "measure",
            "track",
        }
        # the stages account for the frame's time (the rest: building the result)
        assert sum(e["stages_ms"].values()) <= e["ms"]["median"] * 1.05 + 1
        # inside the models (host path: no transfer), a part of their stages
        assert set(e["model_stages_ms"]) == {
            "normalise",
            "denoise_network",
            "segment_network",
            "postprocess",
        }
        assert (
            sum(e["model_stages_ms"].values())
            <= (e["stages_ms"]["denoise"] + e["stages_ms"]["segment"]) * 1.05 + 1
        )
        assert e["peak_rss_mb"] > 0
    assert r["sizes"]["512"]["ratio_to_512"] == 1.0
    assert scaling_table(r).row_count == 2


def test_positions_runs_the_controller_at_each_number_of_positions() -> None:
    from smartscope.bench_positions import measure_positions, positions_table

    r = measure_positions(positions=(1, 3), frames=6, device="cpu")
    assert set(r["runs"]) == {"1", "3"}
    for n, e in ((1, 6), (3, 6)):
        run = r["runs"][str(n if n == 1 else 3)]
        assert run["frames"] == e
        # virtual time: the analysis paces the clock, nothing is skipped
        assert run["frames_analysed"] == run["frames"]
        assert run["frames_skipped_analysis"] == 0
        assert run["frame_to_result_ms"]["n"] == run["frames_analysed"]
        moves = run["actions"].get("MoveStage", {}).get("applied", 0)
        assert run["frame_to_action_ms"]["n"] == moves
        assert run["stages_ms"]["denoise"] > 0
        assert run["stages_ms"]["segment"] > 0
        assert run["analysed_per_s"] > 0
        assert run["peak_rss_mb"] >= run["rss_mb"] > 0
    assert positions_table(r).row_count == 2


def test_the_memory_run_samples_the_protocol_s_own_sample() -> None:
    """``measure_memory`` (``smartscope bench --long``) runs its protocol's
    scene and seed (they were the configuration's default until 2026-12-04:
    the controller never sets them), samples every 5% of the run and
    analyses every frame."""
    from smartscope.overhead import measure_memory

    r = measure_memory(n_frames=40)
    assert r["simulator"] == {"seed": 3, "scene": "migration"}
    assert r["n_frames"] == r["frames_analysed"] == 40
    assert [i for i, _ in r["rss_mb"]] == list(range(0, 40, 2))
    assert all(mb > 0 for _, mb in r["rss_mb"])


def test_median_ci_brackets_the_median_and_narrows_with_more_repeats() -> None:
    import numpy as np

    from smartscope.overhead import median_ci

    rng = np.random.default_rng(3)
    few = list(1.0 + 0.05 * rng.standard_normal(8))
    many = list(1.0 + 0.05 * rng.standard_normal(200))
    m, lo, hi = median_ci(few)
    assert m == float(np.median(few))
    assert lo <= m <= hi
    _m2, lo2, hi2 = median_ci(many)
    assert hi2 - lo2 < hi - lo
    assert lo2 < 1.0 < hi2  # the true median
    assert median_ci([2.0]) == (2.0, 2.0, 2.0)


def test_the_plain_side_writes_what_the_controller_writes(tmp_path: Path) -> None:
    """The overhead's "same writer": a plain MDA through ``_SameWriter`` leaves
    the controller's OME-NGFF images, every frame in its place."""
    import useq
    import zarr
    from pymmcore_plus.mda import mda_listeners_connected

    from smartscope.hardware import load_core, release_core
    from smartscope.io.read_images import list_images
    from smartscope.overhead import _SameWriter

    seq = useq.MDASequence(
        channels=["DAPI", "GFP"],
        stage_positions=[(0, 0), (300, 0)],
        time_plan={"interval": 1, "loops": 3},
        axis_order="tpc",
    )
    core = load_core(time_mode="virtual")
    frames = []
    core.mda.events.frameReady.connect(lambda img, ev, meta: frames.append((img, ev)))
    try:
        writer = _SameWriter(tmp_path / "data.ome.zarr")
        with mda_listeners_connected(
            writer, mda_events=core.mda.events, asynchronous=False
        ):
            core.mda.run(seq)
    finally:
        release_core(core)
    assert writer.images.frames_stored == len(frames) == 12
    infos = {i.position: i for i in list_images(tmp_path)}
    assert set(infos) == {"p0", "p1"}
    assert all(i.shape[:3] == (3, 2, 1) for i in infos.values())
    root = zarr.open_group(str(tmp_path / "data.ome.zarr"), mode="r")
    for img, ev in frames:
        i = ev.index
        plane = root[infos[f"p{i['p']}"].series]["0"][i["t"], i["c"], 0]
        assert (plane == img).all()


def test_realtime_runs_each_target_through_the_controller() -> None:
    """Two short realtime runs (one beside a busy process): every frame is
    accounted for and the verdict is stated; the latencies are not asserted
    (they are the benchmark's figures, not a test's)."""
    from smartscope.bench_realtime import measure_realtime, realtime_table

    r = measure_realtime(
        frames=12, targets=(("quiet", 0.05, 0, 150.0), ("busy", 0.1, 1, 250.0))
    )
    assert set(r["runs"]) == {"quiet", "busy"}
    for one in r["runs"].values():
        assert one["frames"] == 12
        assert one["frames_analysed"] + one["frames_skipped_analysis"] == 12
        assert one["frame_to_result_ms"]["n"] == one["frames_analysed"]
        assert one["fps"] > 0
        assert one["frame_late_ms"]["n"] == 12  # the summary's
        # where the analysis' time went, and what the warm-up measured
        stages = one["analysis_stages_ms"]
        assert stages["denoise"]["n"] == one["frames_analysed"]
        assert stages["segment"]["p50"] > 0
        assert set(one["analysis_warm_up_ms"]) == {"denoise", "segment", "per_frame"}
        assert isinstance(one["rate_held"], bool)
        assert isinstance(one["met"], bool)
        assert not one["met"] or one["rate_held"]
    assert r["runs"]["busy"]["busy"] == 1
    assert r["settings"]["denoise"] == "denoise-care"  # the demo's
    table = realtime_table(r)
    assert table.row_count == 2
    cells = [str(c) for c in table.columns[3].cells]
    assert all(" ms (medians: denoise " in c and ", segment " in c for c in cells)


def test_frame_rate_is_the_acquisition_frames_own(tmp_path: Path) -> None:
    """First frame to last on the sample clock; autofocus planes and other
    records do not count."""
    from smartscope.bench_realtime import frame_rate

    t = [0.5, 0.6, 0.7, 0.83, 0.9, 1.0]
    recs = [{"kind": "frame", "role": "acquisition", "t_s": x} for x in t]
    recs.insert(2, {"kind": "frame", "role": "autofocus", "t_s": 0.65})
    recs.insert(3, {"kind": "analysis", "t_s": 0.66})
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert frame_rate(path) == pytest.approx(10.0)
    # a run that fell behind: a frame every 0.12 s
    path.write_text(
        "".join(
            json.dumps({"kind": "frame", "role": "acquisition", "t_s": 0.12 * i}) + "\n"
            for i in range(11)
        )
    )
    assert frame_rate(path) == pytest.approx(1 / 0.12, abs=1e-3)  # rounded
    path.write_text(json.dumps(recs[0]) + "\n")
    assert frame_rate(path) is None


def test_realtime_runs_take_another_denoiser() -> None:
    """``denoise`` swaps the demo's denoiser and nothing else."""
    from smartscope.bench_realtime import check_denoiser, realtime_protocol
    from smartscope.nn.errors import ModelError

    demo = realtime_protocol(0.1, 5)
    other = realtime_protocol(0.1, 5, denoise="denoise-n2v")
    assert demo["analysis"]["denoise"] == "denoise-care"
    assert other["analysis"] == {**demo["analysis"], "denoise": "denoise-n2v"}
    assert {k: v for k, v in other.items() if k != "analysis"} == {
        k: v for k, v in demo.items() if k != "analysis"
    }
    check_denoiser("denoise-n2v")
    with pytest.raises(ModelError, match="is a segment model"):
        check_denoiser("nuclei-seg")
