"""useq-schema's own example sequences, run by the controller on the simulator.

Every sequence below is copied from useq-schema's repository
(https://github.com/pymmcore-plus/useq-schema at commit 867e9a1;
``tests/fixtures/cases.py`` unless the case says otherwise), with the
changes each case lists. The controller must either refuse a sequence before
anything moves (a ``ProtocolError``/validation error naming the sequence
field it cannot honour), or acquire exactly the frames useq-schema lays out:
the same event indices, channels, stage positions and z planes, in the same
order, no frame before its ``min_start_time``. The frames are read from
``events.jsonl``, the positions are those the simulator's stages report (the
frame record's ``x_um``/``y_um``/``z_um`` come from the image metadata, not
from the plan).

Channel names are mapped to the simulator's presets (group "Channel"):
``DAPI`` -> DAPI, ``FITC`` -> GFP, ``Cy3`` -> mCherry, ``Cy5`` -> mCherry (Cy3
and Cy5 never appear in the same channel list of these sequences, so no two
channels of one list collapse into one).

Sizes are reduced so that the whole file runs in well under a minute: time
plans have at most 3 time points and the two largest z stacks are cut (9 -> 5
and 11 -> 3 planes); each reduction is noted with its case. The camera is set
to its smallest sensor (256 x 256) for speed; grid plans are laid out by the
controller for that field of view, so the expected events are
``list(ctl.plan.sequence)`` (the sequence with ``fov_width``/``fov_height``
set), taken before the run.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import useq
from useq import (
    Channel,
    GridFromEdges,
    GridRowsColumns,
    MDASequence,
    Position,
    TIntervalDuration,
    TIntervalLoops,
    ZAboveBelow,
    ZRangeAround,
    ZTopBottom,
)

from smartscope.controller import Controller
from smartscope.hardware import load_core, release_core
from smartscope.protocol import Protocol, ProtocolError
from smartscope.sim import get_simulator

# useq-schema's example channel names -> the simulator's presets (see module doc)
CHANNEL_MAP = {"DAPI": "DAPI", "FITC": "GFP", "Cy3": "mCherry", "Cy5": "mCherry"}

CASES_PY = "useq-schema tests/fixtures/cases.py"

# useq warns about some of its own examples by design (acquire_every with "ct")
pytestmark = pytest.mark.filterwarnings(
    "ignore:Channels with skipped frames:UserWarning"
)


def ch(name: str, **kw: Any) -> Channel:
    """useq-schema's channel ``name`` as the simulator's preset."""
    return Channel(config=CHANNEL_MAP[name], **kw)


@dataclass(frozen=True)
class Case:
    id: str
    #: builds the sequence (lazily: some of useq's examples warn when built)
    seq: Callable[[], MDASequence]
    source: str
    #: the sequence field the controller must name when it refuses the case;
    #: None: the case must run
    refused: str | None = None


class ExposureMismatch(AssertionError):
    """A frame was taken with another exposure than its channel asks for."""


class NotRefused(AssertionError):
    """The controller accepted a sequence it cannot honour."""


CASES: list[Case] = [
    # ---------------------------------------------------------- channels
    Case(
        "channel_only_in_position_sub_sequence",
        lambda: MDASequence(
            stage_positions=[
                {},
                Position(sequence=MDASequence(channels=[ch("FITC", exposure=100)])),
            ]
        ),
        CASES_PY,
    ),
    Case(
        "channel_in_main_and_position_sub_sequence",
        lambda: MDASequence(
            stage_positions=[
                {},
                Position(sequence=MDASequence(channels=[ch("FITC", exposure=100)])),
            ],
            channels=[ch("Cy5", exposure=50)],
        ),
        CASES_PY,
    ),
    Case(
        "subchannel_inherits_global_channel",
        lambda: MDASequence(
            stage_positions=[
                {},
                {"sequence": {"z_plan": ZTopBottom(bottom=28, top=30, step=1)}},
            ],
            channels=[ch("Cy5", exposure=50)],
        ),
        CASES_PY,
    ),
    Case(
        "sub_channels_and_any_plan",
        lambda: MDASequence(
            channels=[ch("Cy5"), ch("FITC")],
            stage_positions=[
                Position(
                    sequence=MDASequence(
                        channels=[ch("FITC")], z_plan=ZRangeAround(range=2, step=1)
                    )
                )
            ],
        ),
        CASES_PY,
    ),
    # ---------------------------------------------------------- grids
    Case(
        "grid_relative_with_multi_stage_positions",
        lambda: MDASequence(
            stage_positions=[Position(x=0, y=0), (10, 20)],
            grid_plan=GridRowsColumns(rows=2, columns=2),
        ),
        CASES_PY,
    ),
    Case(
        "grid_relative_only_in_position_sub_sequence",
        lambda: MDASequence(
            stage_positions=[
                Position(x=0, y=0),
                Position(
                    x=10,
                    y=10,
                    sequence={"grid_plan": GridRowsColumns(rows=2, columns=2)},
                ),
            ]
        ),
        CASES_PY,
    ),
    Case(
        "grid_absolute_only_in_position_sub_sequence",
        lambda: MDASequence(
            stage_positions=[
                Position(x=0, y=0),
                Position(
                    x=None,
                    y=None,
                    sequence={
                        "grid_plan": GridFromEdges(top=1, bottom=-1, left=0, right=0)
                    },
                ),
            ]
        ),
        CASES_PY,
    ),
    Case(
        "grid_absolute_in_main_and_grid_relative_in_position_sub_sequence",
        lambda: MDASequence(
            stage_positions=[
                {},
                Position(
                    name="name",
                    x=10,
                    y=10,
                    sequence={"grid_plan": GridRowsColumns(rows=2, columns=2)},
                ),
            ],
            grid_plan=GridFromEdges(top=1, bottom=-1, left=0, right=0),
        ),
        CASES_PY,
    ),
    Case(
        "multi_g_in_position_sub_sequence",
        lambda: MDASequence(
            stage_positions=[
                {"x": 0, "y": 0, "sequence": {"grid_plan": {"rows": 1, "columns": 2}}},
                {
                    "x": 0,
                    "y": 0,
                    "sequence": {"grid_plan": GridRowsColumns(rows=2, columns=2)},
                },
                {
                    "sequence": {
                        "grid_plan": GridFromEdges(top=1, bottom=-1, left=0, right=0)
                    }
                },
            ]
        ),
        CASES_PY,
    ),
    Case(
        "channels_and_pos_grid_plan",
        lambda: MDASequence(
            channels=[ch("Cy5", exposure=50), ch("FITC", exposure=100)],
            stage_positions=[
                Position(
                    x=0,
                    y=0,
                    sequence=MDASequence(grid_plan=GridRowsColumns(rows=2, columns=1)),
                )
            ],
        ),
        CASES_PY,
    ),
    # ---------------------------------------------------------- z plans
    Case(
        "z_relative_with_multi_stage_positions",
        lambda: MDASequence(
            stage_positions=[(0, 0, 0), (10, 20, 10)],
            z_plan=ZRangeAround(range=2, step=1),
        ),
        CASES_PY,
    ),
    Case(
        "z_absolute_with_multi_stage_positions",
        lambda: MDASequence(
            stage_positions=[Position(x=0, y=0), (10, 20)],
            z_plan=ZTopBottom(bottom=58, top=60, step=1),
        ),
        CASES_PY,
    ),
    Case(
        "z_relative_in_main_and_position_sub_sequence",
        lambda: MDASequence(
            stage_positions=[
                Position(z=0),
                Position(
                    name="name",
                    z=10,
                    sequence={"z_plan": ZRangeAround(range=3, step=1)},
                ),
            ],
            z_plan=ZRangeAround(range=2, step=1),
        ),
        CASES_PY,
    ),
    Case(
        "z_absolute_in_main_and_z_relative_in_position_sub_sequence",
        lambda: MDASequence(
            stage_positions=[
                {},
                Position(
                    name="name",
                    z=10,
                    sequence={"z_plan": ZRangeAround(range=3, step=1)},
                ),
            ],
            z_plan=ZTopBottom(bottom=58, top=60, step=1),
        ),
        CASES_PY,
    ),
    Case(
        "multi_z_in_position_sub_sequence",
        lambda: MDASequence(
            stage_positions=[
                {"sequence": {"z_plan": ZTopBottom(bottom=58, top=60, step=1)}},
                {"sequence": {"z_plan": ZRangeAround(range=3, step=1)}},
                {"sequence": {"z_plan": ZTopBottom(bottom=28, top=30, step=1)}},
            ]
        ),
        CASES_PY,
    ),
    Case(
        "order",
        lambda: MDASequence(
            stage_positions=[
                Position(z=0),
                Position(
                    z=50,
                    sequence=MDASequence(
                        channels=[ch("FITC", exposure=100), ch("Cy3", exposure=200)]
                    ),
                ),
            ],
            channels=[ch("FITC", exposure=100), ch("Cy5", exposure=50)],
            z_plan=ZRangeAround(range=2, step=1),
        ),
        CASES_PY,
    ),
    Case(
        "mix_cgz_axes",
        lambda: MDASequence(
            axis_order="tpgcz",
            stage_positions=[
                Position(z=2),
                Position(
                    name="name",
                    x=10,
                    y=10,
                    z=30,
                    sequence=MDASequence(
                        channels=[
                            {"config": CHANNEL_MAP["FITC"], "exposure": 200},
                            {"config": CHANNEL_MAP["Cy3"], "exposure": 100},
                        ],
                        grid_plan=GridRowsColumns(rows=2, columns=1),
                        z_plan=ZRangeAround(range=2, step=1),
                    ),
                ),
            ],
            channels=[ch("Cy5", exposure=50)],
            z_plan={"top": 100, "bottom": 98, "step": 1},
            grid_plan=GridFromEdges(top=1, bottom=-1, left=0, right=0),
        ),
        CASES_PY,
    ),
    # useq-schema tests/test_sequence.py::test_axis_order_errors ("p before z ok")
    Case(
        "axis_order_pzc_with_position_z_plan",
        lambda: MDASequence(
            axis_order=tuple("pzc"),
            z_plan={"top": 6, "bottom": 0, "step": 1},
            channels=[ch("DAPI")],
            stage_positions=[
                {
                    "x": 0,
                    "y": 0,
                    "z": 0,
                    "sequence": {"z_plan": {"range": 2, "step": 1}},
                }
            ],
        ),
        "useq-schema tests/test_sequence.py::test_axis_order_errors",
    ),
    # useq-schema tests/test_sequence.py::test_skip_channel_do_stack_no_zplan
    Case(
        "do_stack_false_without_z_plan",
        lambda: MDASequence(channels=[{"config": "DAPI", "do_stack": False}]),
        "useq-schema tests/test_sequence.py::test_skip_channel_do_stack_no_zplan",
    ),
    # useq-schema tests/test_time_estimation.py (SEQS_WITH_Z_SKIPS): a channel
    # without its stack (middle plane only) next to one with it
    Case(
        "do_stack_false_with_z_plan_and_time",
        lambda: MDASequence(
            channels=[
                ch("DAPI", exposure=10, do_stack=False),
                # the original's "FITC_30" is config DAPI too (a typo there): kept
                ch("DAPI", exposure=30),
            ],
            stage_positions=[(0, 0), (1, 1)],
            z_plan=ZRangeAround(range=3, step=1),
            time_plan=TIntervalLoops(interval=1, loops=2),
        ),
        "useq-schema tests/test_time_estimation.py::SEQS_WITH_Z_SKIPS",
    ),
    # not in useq-schema's tests (none sets a z_offset): the test_time_estimation
    # z-skip sequence above with a per-channel z_offset (useq/_channel.py)
    Case(
        "channel_z_offset",
        lambda: MDASequence(
            channels=[ch("DAPI", exposure=10), ch("FITC", exposure=30, z_offset=2.5)],
            stage_positions=[(0, 0, 5)],
            z_plan=ZRangeAround(range=3, step=1),
        ),
        "derived from useq-schema tests/test_time_estimation.py",
    ),
    # ---------------------------------------------------------- time
    Case(
        "t_with_multi_stage_positions",
        lambda: MDASequence(
            stage_positions=[{}, {}],
            time_plan=[TIntervalLoops(interval=1, loops=2)],
        ),
        CASES_PY,
    ),
    # useq-schema tests/test_sequence.py::test_shape_and_axes; duration 4 -> 2 s
    # (3 time points instead of 5)
    Case(
        "shape_and_axes_tzp",
        lambda: MDASequence(
            z_plan=ZAboveBelow(above=8, below=4, step=2),
            time_plan=TIntervalDuration(interval=1, duration=2),
            axis_order=tuple("tzp"),
        ),
        "useq-schema tests/test_sequence.py::test_shape_and_axes",
    ),
    # the same test's mda.replace(axis_order="zptc"): time inside z (each plane's
    # time-lapse in turn, the controller's verbatim mode); duration 4 -> 2 s
    Case(
        "shape_and_axes_zptc",
        lambda: MDASequence(
            z_plan=ZAboveBelow(above=8, below=4, step=2),
            time_plan=TIntervalDuration(interval=1, duration=2),
            axis_order=tuple("zptc"),
        ),
        "useq-schema tests/test_sequence.py::test_shape_and_axes",
    ),
    # useq-schema tests/test_sequence.py::test_axis_order_errors ("c precedes t",
    # which warns); duration 10 -> 2 s (3 time points)
    Case(
        "axis_order_ct_acquire_every",
        lambda: MDASequence(
            axis_order=tuple("ct"),
            time_plan={"interval": 1, "duration": 2},
            channels=[{"config": "DAPI", "acquire_every": 3}],
        ),
        "useq-schema tests/test_sequence.py::test_axis_order_errors",
    ),
    Case(
        "reset_event_timer_with_time_intervals",
        lambda: MDASequence(
            stage_positions=[(100, 100), (0, 0)],
            time_plan={"interval": 1, "loops": 2},
            axis_order=tuple("ptgcz"),
        ),
        CASES_PY,
    ),
    # useq-schema README.md; loops 20 -> 3
    Case(
        "readme_example",
        lambda: MDASequence(
            stage_positions=[(100, 100, 30), (200, 150, 35)],
            channels=[ch("DAPI"), ch("FITC")],
            time_plan={"interval": 1, "loops": 3},
            z_plan={"range": 4, "step": 1},  # step 0.5 -> 1 (5 planes, not 9)
            axis_order="tpcz",
        ),
        "useq-schema README.md",
    ),
    # useq-schema tests/conftest.py::mda1 (also tests/fixtures/mda.yaml) without
    # its autofocus_plan (refused: see mda1 below); time plan
    # [3 s x 3, every 10 s for 40 min] -> [3 s x 2, 10 s x 1] (3 time points, two
    # phases kept); the position's stack above 10 -> above 2 (3 planes)
    Case(
        "mda1_without_autofocus",
        lambda: MDASequence(
            axis_order="tpgcz",
            metadata={"some info": "something"},
            stage_positions=[
                (10, 20),
                {
                    "x": 10,
                    "y": 20,
                    "z": 50,
                    "name": "test_name",
                    "sequence": MDASequence(
                        z_plan={"above": 2, "below": 0, "step": 1},
                        grid_plan={"rows": 2, "columns": 3},
                    ),
                },
            ],
            channels=[
                ch("Cy5", exposure=50),
                ch("FITC", exposure=100.0),
                ch("DAPI", do_stack=False, acquire_every=3),
            ],
            time_plan=[{"interval": 3, "loops": 2}, {"interval": 10, "loops": 1}],
            z_plan={"range": 1.0, "step": 0.5},
            grid_plan={"rows": 2, "columns": 1},
        ),
        "useq-schema tests/conftest.py::mda1",
    ),
    # ---------------------------------------------------------- refused
    # autofocus_plan: the simulator has no hardware autofocus device
    Case(
        "mda1",
        lambda: MDASequence(
            axis_order="tpgcz",
            stage_positions=[(10, 20)],
            channels=[ch("Cy5", exposure=50), ch("FITC", exposure=100.0)],
            time_plan=[{"interval": 3, "loops": 3}],
            z_plan={"range": 1.0, "step": 0.5},
            autofocus_plan={
                "autofocus_device_name": "Z",
                "autofocus_motor_offset": 50,
                "axes": ("c",),
            },
        ),
        "useq-schema tests/conftest.py::mda1 (positions, channels and time cut)",
        refused="sequence.autofocus_plan",
    ),
    Case(
        "af_axes_c_basic",
        lambda: MDASequence(
            stage_positions=[Position(z=30)],
            z_plan=ZRangeAround(range=2, step=1),
            channels=[ch("DAPI"), ch("FITC")],
            autofocus_plan=useq.AxesBasedAF(autofocus_device_name="Z", axes=("c",)),
        ),
        CASES_PY,
        refused="sequence.autofocus_plan",
    ),
    Case(
        "af_subsequence_af",
        lambda: MDASequence(
            stage_positions=[
                Position(z=30),
                Position(
                    z=10,
                    sequence=MDASequence(
                        autofocus_plan=useq.AxesBasedAF(
                            autofocus_device_name="Z", axes=("c",)
                        )
                    ),
                ),
            ],
            channels=[ch("DAPI"), ch("FITC")],
        ),
        CASES_PY,
        refused="autofocus_plan",
    ),
    Case(
        "af_mixed_main_and_sub",
        lambda: MDASequence(
            stage_positions=[
                Position(z=30),
                Position(
                    z=10,
                    sequence=MDASequence(
                        autofocus_plan=useq.AxesBasedAF(
                            autofocus_device_name="Z",
                            autofocus_motor_offset=40,
                            axes=("z",),
                        ),
                    ),
                ),
            ],
            channels=[ch("DAPI"), ch("FITC")],
            z_plan=ZRangeAround(range=2, step=1),
            autofocus_plan=useq.AxesBasedAF(
                autofocus_device_name="Z", autofocus_motor_offset=40, axes=("p",)
            ),
        ),
        CASES_PY,
        refused="autofocus_plan",
    ),
    # keep_shutter_open_across: light between frames that no frame accounts for
    Case(
        "keep_shutter_open_across_z_order_tcz",
        lambda: MDASequence(
            axis_order=tuple("tcz"),
            channels=[ch("DAPI"), ch("FITC")],
            time_plan=TIntervalLoops(loops=2, interval=0),
            z_plan=ZRangeAround(range=1, step=1),
            keep_shutter_open_across="z",
        ),
        CASES_PY,
        refused="sequence.keep_shutter_open_across",
    ),
    Case(
        "keep_shutter_open_across_g_order_pgc_with_subseq",
        lambda: MDASequence(
            axis_order=tuple("pgc"),
            channels=[ch("DAPI"), ch("FITC")],
            stage_positions=[
                Position(
                    sequence=MDASequence(grid_plan=GridRowsColumns(rows=2, columns=2))
                )
            ],
            keep_shutter_open_across="g",
        ),
        CASES_PY,
        refused="sequence.keep_shutter_open_across",
    ),
    # a time plan inside a position
    Case(
        "t_only_in_position_sub_sequence",
        lambda: MDASequence(
            stage_positions=[
                {},
                {"sequence": {"time_plan": [TIntervalLoops(interval=1, loops=5)]}},
            ]
        ),
        CASES_PY,
        refused="sequence.stage_positions.1.sequence.time_plan",
    ),
    Case(
        "channels_and_pos_time_plan",
        lambda: MDASequence(
            axis_order="tpgcz",
            channels=[ch("Cy5", exposure=50), ch("FITC", exposure=100)],
            stage_positions=[
                Position(
                    x=0,
                    y=0,
                    sequence={"time_plan": [TIntervalLoops(interval=1, loops=3)]},
                )
            ],
        ),
        CASES_PY,
        refused="sequence.stage_positions.0.sequence.time_plan",
    ),
    Case(
        "reset_event_timer_with_nested_position_sequences",
        lambda: MDASequence(
            stage_positions=[
                Position(
                    x=0,
                    y=0,
                    sequence=MDASequence(
                        channels=[ch("Cy5")], time_plan={"interval": 1, "loops": 2}
                    ),
                ),
                Position(
                    x=1,
                    y=1,
                    sequence=MDASequence(
                        channels=[ch("DAPI")], time_plan={"interval": 1, "loops": 2}
                    ),
                ),
            ]
        ),
        CASES_PY,
        refused="sequence.stage_positions.0.sequence.time_plan",
    ),
]

#: how long the controller may take to start a time point after it is due (s of
#: sample time: stage travel, settling, the frame's own exposure)
START_SLACK_S = 1.0


def _build(case: Case) -> MDASequence:
    with warnings.catch_warnings():
        # some of useq's examples warn by design (acquire_every with "ct", a
        # global absolute grid with positions)
        warnings.simplefilter("ignore", UserWarning)
        return case.seq()


def _protocol(seq: MDASequence) -> Protocol:
    return Protocol.model_validate(
        {
            "name": "useq-example",
            "sequence": seq,
            "analysis": {"enabled": False},
            "save": {"truth": False},
            "limits": {
                "xy_box_um": [-4000, 4000, -4000, 4000],
                "z_range_um": [-500, 500],
                "exposure_range_ms": [0.1, 1000],
                "max_positions": 50,
            },
        }
    )


def _frames(run: Path) -> list[dict[str, Any]]:
    recs = [
        json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()
    ]
    return [r for r in recs if r["kind"] == "frame"]


def _refusal(case: Case, core: Any, out: Path) -> str | None:
    """The message of the refusal, or None when the protocol is accepted."""
    try:
        Controller(core, _protocol(_build(case)), out_dir=out)
    except (ProtocolError, ValueError) as e:  # pydantic's ValidationError too
        return str(e)
    return None


def _param(case: Case) -> Any:
    return pytest.param(case, id=case.id)


def _small_core() -> Any:
    core = load_core(time_mode="virtual")
    core.setProperty("Camera", "SensorWidth_px", 256)
    core.setProperty("Camera", "SensorHeight_px", 256)
    return core


def test_the_case_list_is_representative() -> None:
    assert 15 <= len(CASES) <= 40
    assert len({c.id for c in CASES}) == len(CASES)
    ran = [c for c in CASES if c.refused is None]
    assert len(ran) >= 15


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_useq_example_runs_as_laid_out_or_is_refused(
    case: Case, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    core = _small_core()
    try:
        sim = get_simulator(core)
        xy0, z0, exp0 = core.getXYPosition(), core.getZPosition(), core.getExposure()
        if case.refused is not None:
            msg = _refusal(case, core, out)
            if msg is None:
                raise NotRefused(f"{case.id}: expected a refusal naming {case.refused}")
            assert case.refused in msg, msg
            # refused before anything moved or was lit
            assert core.getXYPosition() == xy0
            assert core.getZPosition() == z0
            assert sim.light_dose_mj == 0
            assert not out.exists()
            return
        ctl = Controller(core, _protocol(_build(case)), out_dir=out)
        # the frames useq lays out (hardware autofocus events take none)
        expected = [
            e
            for e in ctl.plan.sequence
            if not isinstance(e.action, useq.HardwareAutofocus)
        ]
        summary = ctl.run()
        dose = sim.light_dose_mj
    finally:
        release_core(core)

    assert summary["status"] == "completed", summary.get("finish_reason")
    assert (out / "summary.json").exists()
    assert summary["light_dose_mj"] == pytest.approx(dose, rel=1e-6)
    frames = _frames(out)
    assert all(f["role"] == "acquisition" for f in frames)
    assert [f["index"] for f in frames] == list(range(len(frames)))
    assert len(frames) == len(expected) == summary["frames_acquired"], (
        [f["event_index"] for f in frames],
        [dict(e.index) for e in expected],
    )

    x, y, z = xy0[0], xy0[1], z0
    prev_t = -math.inf
    wrong_exposure = []
    for f, ev in zip(frames, expected, strict=True):
        where = f"{case.id} frame {f['index']} {dict(ev.index)}"
        assert f["event_index"] == dict(ev.index), where
        assert f["channel"] == (ev.channel.config if ev.channel else ""), where
        if ev.pos_name:
            assert f["position"] == ev.pos_name, where
        # a coordinate the event leaves unset is where the stage already was
        x = ev.x_pos if ev.x_pos is not None else x
        y = ev.y_pos if ev.y_pos is not None else y
        z = ev.z_pos if ev.z_pos is not None else z
        assert f["x_um"] == pytest.approx(x, abs=1e-6), where
        assert f["y_um"] == pytest.approx(y, abs=1e-6), where
        assert f["z_um"] == pytest.approx(z, abs=1e-6), where
        # a channel without its own exposure gets the camera's at the start
        want_exp = ev.exposure if ev.exposure is not None else exp0
        if f["exposure_ms"] != pytest.approx(want_exp):
            wrong_exposure.append(f"{where}: {f['exposure_ms']} ms, want {want_exp}")
        t = f["t_s"]
        if ev.reset_event_timer:
            prev_t = -math.inf
        # sample time runs forward (between the resets useq asks for)
        assert t >= prev_t or t == pytest.approx(prev_t), where
        if ev.min_start_time is not None:
            # never before its time, and not much after it when the previous
            # frames left time to spare
            assert t >= ev.min_start_time or t == pytest.approx(ev.min_start_time), (
                where
            )
            due = max(ev.min_start_time, prev_t if math.isfinite(prev_t) else 0.0)
            assert t <= due + f["exposure_ms"] / 1000 + START_SLACK_S, where
        prev_t = t
    # checked last, so that every other difference is reported first
    if wrong_exposure:
        raise ExposureMismatch("\n".join(wrong_exposure))


# ---------------------------------------------------------------- z anchor
#
# useq-schema centres a relative z plan of a position that names no z on 0
# ("TODO: either disallow without position z, or add concept of 'current'",
# useq/_iter_sequence.py); the controller's Plan documents that it centres it
# on the focus at the start instead. Checked with the focus away from 0.

FOCUS0_UM = 7.0

ANCHOR_CASES = [
    pytest.param(
        MDASequence(z_plan=ZRangeAround(range=2, step=1)),
        [[6.0, 7.0, 8.0]],
        id="no_positions",
    ),
    pytest.param(
        MDASequence(
            stage_positions=[{}, (10, 0)], z_plan=ZRangeAround(range=2, step=1)
        ),
        [[6.0, 7.0, 8.0], [6.0, 7.0, 8.0]],
        id="positions_without_z",
    ),
    pytest.param(
        # cases.py "multi_z_in_position_sub_sequence", first two positions: a
        # relative z plan of a position's own sequence, at a position without z
        MDASequence(
            stage_positions=[
                {"sequence": {"z_plan": ZTopBottom(bottom=58, top=60, step=1)}},
                {"sequence": {"z_plan": ZRangeAround(range=2, step=1)}},
            ]
        ),
        [[58.0, 59.0, 60.0], [6.0, 7.0, 8.0]],
        id="sub_sequence_z_plan_position_without_z",
    ),
]


@pytest.mark.parametrize(("seq", "want_z"), ANCHOR_CASES)
def test_relative_z_plan_without_position_z_is_centred_on_the_starting_focus(
    seq: MDASequence, want_z: list[list[float]], tmp_path: Path
) -> None:
    core = _small_core()
    try:
        core.setZPosition(FOCUS0_UM)
        core.waitForDevice("Z")
        summary = Controller(core, _protocol(seq), out_dir=tmp_path / "run").run()
    finally:
        release_core(core)
    assert summary["status"] == "completed"
    by_p: dict[int, list[float]] = {}
    for f in _frames(tmp_path / "run"):
        by_p.setdefault(f["event_index"].get("p", 0), []).append(f["z_um"])
    got = [by_p[p] for p in sorted(by_p)]
    assert got == [pytest.approx(zs, abs=1e-6) for zs in want_z]
