"""An adversarial reaction against the controller's safety envelope.

A reaction returns, for every frame it is shown, whatever hypothesis drew:
moves to huge, negative, NaN and infinite places, floods of thousands of
positions, exposures and powers far past the limits, ``SetProperty`` on every
property of every device (and on devices that do not exist), autofocus sweeps
of absurd ranges, zero intervals, actions whose fields were corrupted after
they were built (``object.__setattr__``: NaN, inf, strings, ``None``), action
kinds the limits do not know, and values that are not actions at all; it
sometimes raises, returns a non-iterable, or asks to stop.

Whatever it asks, the microscope must stay inside the protocol's limits. That
is checked from the hardware and the files, never from the controller's word:
at every frame (autofocus planes included) the core is asked where the stage
is, what the exposure and the laser power are; the simulator's own dose meter
is read at the end and compared with the budget and with the ledger in
``summary.json``.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smartscope.actions import (
    ACTION_TYPES,
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
from smartscope.analysis.result import FrameResult
from smartscope.controller import Controller
from smartscope.hardware import load_core, release_core
from smartscope.protocol import Protocol
from smartscope.reactions.base import Reaction, RunView
from smartscope.sim import get_simulator

# ------------------------------------------------------------------ the envelope

XY_BOX = (-400.0, 400.0, -300.0, 300.0)
Z_RANGE = (-30.0, 30.0)
EXPOSURE_RANGE = (2.0, 100.0)
MAX_LASER_MW = 8.0
MAX_POSITIONS = 4
INTERVAL_RANGE = (0.0, 60.0)
ACTION_KINDS = {c.kind for c in ACTION_TYPES}
#: the most light one frame can get inside the envelope, mJ
ONE_FRAME_MJ = MAX_LASER_MW * EXPOSURE_RANGE[1] / 1000.0

# every property of every device of the demo microscope (simulators/demo.cfg,
# whose labels are part of smartscope's contract), plus the role properties a
# reaction might guess and devices that do not exist
DEVICE_PROPS: list[tuple[str, str]] = [
    ("Sample", "Seed"),
    ("Sample", "Scene"),
    ("Sample", "TimeMode"),
    ("Camera", "Gain_e_per_ADU"),
    ("Camera", "Offset_ADU"),
    ("Camera", "ReadNoise_e"),
    ("Camera", "QE"),
    ("Camera", "BitDepth"),
    ("Camera", "FullWell_e"),
    ("Camera", "PixelPitch_um"),
    ("Camera", "SensorWidth_px"),
    ("Camera", "SensorHeight_px"),
    ("Camera", "Binning"),
    ("Camera", "Exposure"),
    ("XY", "Speed_um_per_s"),
    ("XY", "TravelRange_um"),
    ("Z", "Position"),
    ("Shutter", "State"),
    ("Laser", "Power_mW"),
    ("Laser", "MaxPower_mW"),
    ("Laser", "Wavelength_nm"),
    ("Objective", "State"),
    ("Objective", "Label"),
    ("Filter", "State"),
    ("Filter", "Label"),
    ("Core", "AutoFocus"),
    ("Core", "AutoShutter"),
    ("Core", "Camera"),
    ("Core", "ChannelGroup"),
    ("Core", "Focus"),
    ("Core", "Shutter"),
    ("Core", "XYStage"),
    ("Core", "Initialize"),
    ("Core", "TimeoutMs"),
    ("NoSuchDevice", "Power_mW"),
    ("Laser", "NoSuchProperty"),
]

# what a protocol may list in allowed_properties here: the light source's
# power (judged as SetLaserPower), its other settings, the camera's exposure
# (judged as SetExposure) and gain, the focus (judged as MoveFocus), and
# devices the executor must refuse even when listed (objective, stage, core).
# Left out: the Sample (the simulated specimen: its Seed/Scene start a new
# sample, clock and dose meter, so the simulator could no longer witness the
# run) and the camera's sensor size and binning (a new frame shape mid-run is
# the writer's business, not the safety envelope's).
ALLOWABLE = [
    "Laser.Power_mW",
    "Laser.Wavelength_nm",
    "Laser.MaxPower_mW",
    "Camera.Exposure",
    "Camera.Gain_e_per_ADU",
    "Z.Position",
    "Filter.Label",
    "Objective.Label",
    "Objective.State",
    "XY.Speed_um_per_s",
    "Core.AutoShutter",
]

# ------------------------------------------------------------------ strategies

EDGES = [
    0.0,
    -0.0,
    1e-12,
    -1.0,
    XY_BOX[0],
    XY_BOX[1],
    XY_BOX[1] + 1e-9,
    Z_RANGE[1],
    Z_RANGE[1] + 0.001,
    MAX_LASER_MW,
    MAX_LASER_MW + 1e-9,
    99.99,
    100.0,
    101.0,
    4999.0,
    5001.0,
    1e9,
    -1e9,
    1.7e308,
    -1.7e308,
]
finite = st.one_of(
    st.sampled_from(EDGES),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
)
positive = st.one_of(
    st.sampled_from([1e-300, 1e-9, 0.001, 1.9, 2.0, 100.0, 100.01, 6e4, 1e12, 1.7e308]),
    st.floats(1e-6, 1e6, allow_nan=False, allow_infinity=False),
)
#: what a corrupted field is set to after the action was built
garbage = st.sampled_from(
    [math.nan, math.inf, -math.inf, -1.0, "12", "", None, True, [1.0], object()]
)
pos_names = st.sampled_from([None, "p0", "p1", "added2", "", "nope"])
channels = st.sampled_from([None, "DAPI", "GFP", "Nope"])
prop_values = st.one_of(
    finite,
    st.integers(-(2**40), 2**40),
    st.sampled_from(
        ["4x", "40x", "0", "1", "GFP", "488", "90", "1e9", "-5", "nan", "inf", "", "x"]
    ),
)


class _Weird(Action):
    """An action kind the limits have never heard of."""

    kind: ClassVar[str] = "Weird"


@dataclass(frozen=True)
class Flood:
    """Expands to ``n`` AddPositions on a spiral that leaves the box."""

    n: int

    def actions(self) -> list[AddPosition]:
        return [
            AddPosition(
                x_um=37.0 * k * math.cos(k),
                y_um=29.0 * k * math.sin(k),
                z_um=None if k % 3 else float(k % 70 - 35),
                source="adversary",
            )
            for k in range(self.n)
        ]


def _corruptible(
    action: st.SearchStrategy[Action], fields: tuple[str, ...]
) -> st.SearchStrategy[Action]:
    @st.composite
    def build(draw: st.DrawFn) -> Action:
        a = draw(action)
        if draw(st.integers(0, 3)) == 0:
            # malformed after the fact: the controller must check again
            object.__setattr__(a, draw(st.sampled_from(fields)), draw(garbage))
        return a

    return build()


actions: st.SearchStrategy[Any] = st.one_of(
    _corruptible(
        st.builds(
            MoveStage,
            x_um=finite,
            y_um=finite,
            relative=st.booleans(),
            position=pos_names,
        ),
        ("x_um", "y_um", "position", "source"),
    ),
    _corruptible(
        st.builds(MoveFocus, z_um=finite, relative=st.booleans(), position=pos_names),
        ("z_um", "position", "frame_index"),
    ),
    _corruptible(
        st.builds(SetExposure, exposure_ms=positive, channel=channels),
        ("exposure_ms", "channel"),
    ),
    _corruptible(
        st.builds(
            SetLaserPower,
            power_mw=st.one_of(st.sampled_from(EDGES).map(abs), positive),
        ),
        ("power_mw", "reason"),
    ),
    _corruptible(
        st.builds(
            lambda dp, v: SetProperty(device=dp[0], prop=dp[1], value=v),
            st.sampled_from(DEVICE_PROPS),
            prop_values,
        ),
        ("value", "device", "prop"),
    ),
    _corruptible(
        st.builds(
            SetInterval,
            interval_s=st.sampled_from(
                [0.0, 1e-6, 1.0, 59.9, 60.0, 60.1, 86400.0, 1e12]
            ),
        ),
        ("interval_s",),
    ),
    _corruptible(
        st.builds(
            AddPosition,
            x_um=finite,
            y_um=finite,
            z_um=st.none() | finite,
            name=st.none() | st.sampled_from(["p0", "p1", "x", ""]),
        ),
        ("x_um", "y_um", "z_um", "name"),
    ),
    _corruptible(
        st.builds(
            Autofocus,
            range_um=positive,
            step_um=positive,
            center_um=st.none() | finite,
            position=pos_names,
        ),
        ("range_um", "step_um", "center_um"),
    ),
    st.sampled_from([10, 999]).map(Flood),
    st.sampled_from(["junk", None, 42, 3.5, b"bytes", {"type": "MoveStage"}]),
    st.builds(_Weird),
)

#: how a frame's answer is returned
SHAPES = [
    "list",
    "list",
    "list",
    "tuple",
    "generator",
    "single",
    "not_iterable",
    "raise",
]


@st.composite
def scripts(draw: st.DrawFn) -> Script:
    frames = draw(
        st.lists(
            st.tuples(st.sampled_from(SHAPES), st.lists(actions, max_size=8)),
            min_size=1,
            max_size=12,
        )
    )
    return Script(
        frames=frames,
        # every 4th frame also answers with this many AddPositions (over
        # MAX_ACTIONS_PER_FRAME: the whole answer is refused as a failure)
        flood=draw(st.sampled_from([None, 999, 2500])),
        stop_at=draw(st.none() | st.integers(8, 40)),
        allowed=tuple(draw(st.lists(st.sampled_from(ALLOWABLE), unique=True))),
        budget_mj=draw(st.sampled_from([4.0, 12.0, 40.0])),
        loops=draw(st.integers(10, 16)),
    )


@dataclass(frozen=True)
class Script:
    frames: list[tuple[str, list[Any]]]
    flood: int | None
    stop_at: int | None
    allowed: tuple[str, ...]
    budget_mj: float
    loops: int


class _Adversary(Reaction):
    name = "adversary"

    def __init__(self, script: Script) -> None:
        self.script = script

    def react(self, result: FrameResult, run: RunView) -> Any:
        i = result.frame.frame_index
        if self.script.stop_at is not None and i >= self.script.stop_at:
            return [Stop(source=self.name, reason="adversary had enough")]
        shape, items = self.script.frames[i % len(self.script.frames)]
        out: list[Any] = []
        if self.script.flood is not None and i % 4 == 1:
            items = [*items, Flood(self.script.flood)]
        for it in items:
            out.extend(it.actions() if isinstance(it, Flood) else [it])
        if shape == "tuple":
            return tuple(out)
        if shape == "generator":
            return (a for a in out)
        if shape == "single":
            return out[0] if out else None
        if shape == "not_iterable":
            return 7
        if shape == "raise":
            raise RuntimeError("the adversary raised")
        return out


# ------------------------------------------------------------------ running


def _small_core() -> Any:
    core = load_core(time_mode="virtual")
    core.setProperty("Camera", "SensorWidth_px", 256)  # its smallest sensor
    core.setProperty("Camera", "SensorHeight_px", 256)
    return core


def _protocol(
    *,
    allowed: tuple[str, ...] = (),
    budget_mj: float | None = 40.0,
    loops: int = 12,
    sequence: dict[str, Any] | None = None,
    **limits: Any,
) -> Protocol:
    return Protocol.model_validate(
        {
            "name": "adversarial",
            "seed": 3,
            "objective": "10x",
            "laser_power_mw": 5,
            "sequence": sequence
            or {
                "channels": [{"config": "DAPI", "exposure": 20}],
                "stage_positions": [
                    {"name": "p0", "x": 0, "y": 0},
                    {"name": "p1", "x": 150, "y": -100},
                ],
                "time_plan": {"interval": 5, "loops": loops},
            },
            "save": {"truth": False},
            "limits": {
                "xy_box_um": list(XY_BOX),
                "z_range_um": list(Z_RANGE),
                "exposure_range_ms": list(EXPOSURE_RANGE),
                "max_laser_mw": MAX_LASER_MW,
                "light_dose_budget_mj": budget_mj,
                "max_positions": MAX_POSITIONS,
                "max_xy_step_um": 200,
                "max_z_step_um": 10,
                "max_autofocus_planes": 5,
                # a SetInterval of 1e12 s is clamped to this; a day (the
                # default cap) of virtual sample time costs the simulator's
                # cell dynamics minutes of CPU per time point
                "interval_range_s": list(INTERVAL_RANGE),
                "allowed_properties": list(allowed),
                **limits,
            },
        }
    )


@dataclass
class Observed:
    summary: dict[str, Any]
    #: per frame: (x, y, z, exposure, laser, objective) read from the core
    hardware: list[tuple[float, float, float, float, float, str]]
    dose_mj: float
    run: Path


def _run(protocol: Protocol, reactions: list[Reaction], out: Path) -> Observed:
    core = _small_core()
    try:
        sim = get_simulator(core)
        hw: list[tuple[float, float, float, float, float, str]] = []
        ctl = Controller(core, protocol, out_dir=out, reactions=reactions)

        def on_frame(_f: Any) -> None:
            x, y = core.getXYPosition()
            hw.append(
                (
                    float(x),
                    float(y),
                    float(core.getZPosition()),
                    float(core.getExposure()),
                    float(core.getProperty("Laser", "Power_mW")),
                    str(core.getProperty("Objective", "Label")),
                )
            )

        ctl.frame_acquired.connect(on_frame)
        summary = ctl.run()  # never raises, whatever the reaction does
        return Observed(summary, hw, sim.light_dose_mj, out)
    finally:
        release_core(core)


def _records(run: Path) -> Iterator[dict[str, Any]]:
    for line in (run / "events.jsonl").read_text().splitlines():
        yield json.loads(line)


def _assert_inside_the_envelope(obs: Observed, budget_mj: float | None) -> None:
    s = obs.summary
    assert s["status"] in ("completed", "stopped", "error"), s
    assert (obs.run / "summary.json").exists()
    on_disk = json.loads((obs.run / "summary.json").read_text())
    assert on_disk["status"] == s["status"]
    frames = [r for r in _records(obs.run) if r["kind"] == "frame"]
    assert len(frames) == len(obs.hardware) == s["frames_acquired"]
    x0, x1, y0, y1 = XY_BOX
    for i, (x, y, z, exposure, laser, objective) in enumerate(obs.hardware):
        where = f"frame {i} ({frames[i]['role']}, {frames[i]['position']})"
        assert x0 <= x <= x1, f"{where}: stage at ({x}, {y})"
        assert y0 <= y <= y1, f"{where}: stage at ({x}, {y})"
        assert Z_RANGE[0] <= z <= Z_RANGE[1], f"{where}: Z at {z}"
        assert EXPOSURE_RANGE[0] <= exposure <= EXPOSURE_RANGE[1], (
            f"{where}: exposure {exposure}"
        )
        assert laser <= MAX_LASER_MW, f"{where}: laser at {laser} mW"
        assert objective == "10x", f"{where}: objective {objective}"
    if budget_mj is not None:
        assert obs.dose_mj <= budget_mj + ONE_FRAME_MJ + 1e-9, obs.dose_mj
    assert s["light_dose_mj"] == pytest.approx(obs.dose_mj, rel=1e-6, abs=1e-6)
    assert len(s["positions"]) <= MAX_POSITIONS
    for r in _records(obs.run):
        if r["kind"] == "action":
            assert r["status"] in (
                "applied",
                "clamped",
                "refused",
                "failed",
                "not_applied",
            ), r
            if r["type"] not in ACTION_KINDS:  # junk, or an unknown subclass
                assert r["status"] in ("refused", "not_applied"), r


def test_no_reaction_can_take_the_microscope_outside_its_limits(
    tmp_path: Path,
) -> None:
    """Every drawn script keeps the microscope inside; together the scripts
    drive several hundred frames and over a thousand actions."""
    totals = {"examples": 0, "frames": 0, "actions": 0}
    run_ids = itertools.count()

    @settings(
        max_examples=20,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(script=scripts())
    def inside(script: Script) -> None:
        protocol = _protocol(
            allowed=script.allowed, budget_mj=script.budget_mj, loops=script.loops
        )
        out = tmp_path / f"run{next(run_ids)}"
        obs = _run(protocol, [_Adversary(script)], out)
        _assert_inside_the_envelope(obs, script.budget_mj)
        totals["examples"] += 1
        totals["frames"] += obs.summary["frames_acquired"]
        totals["actions"] += sum(1 for r in _records(out) if r["kind"] == "action")

    inside()
    assert totals["frames"] >= 300, totals
    assert totals["actions"] >= 1000, totals


# ------------------------------------------------------------------ deterministic


class _PowerViaProperty(Reaction):
    name = "power_via_property"

    def react(self, result: FrameResult, run: RunView) -> list[Action]:
        return [
            SetProperty(device="Laser", prop="Power_mW", value=90, source=self.name)
        ]


def test_laser_power_set_as_a_property_is_capped_like_set_laser_power(
    tmp_path: Path,
) -> None:
    obs = _run(
        _protocol(allowed=("Laser.Power_mW",), budget_mj=None),
        [_PowerViaProperty()],
        tmp_path / "run",
    )
    _assert_inside_the_envelope(obs, None)
    assert obs.summary["status"] == "completed"
    assert obs.summary["frames_acquired"] == 24
    lasers = [h[4] for h in obs.hardware]
    assert max(lasers) == pytest.approx(MAX_LASER_MW)  # it was raised, to the cap
    assert lasers[0] == pytest.approx(5.0)
    acts = [r for r in _records(obs.run) if r["kind"] == "action"]
    applied = [a for a in acts if a["status"] != "not_applied"]
    assert applied
    assert all(a["after"] is None or a["after"] <= MAX_LASER_MW for a in applied)
    # the ledger equals the simulator's meter, frame by frame in sum
    frames = [r for r in _records(obs.run) if r["kind"] == "frame"]
    by_frame = sum(f["laser_mw"] * f["exposure_ms"] / 1000 for f in frames)
    assert by_frame == pytest.approx(obs.dose_mj, rel=1e-6)
    assert obs.summary["light_dose_mj"] == pytest.approx(obs.dose_mj, rel=1e-6)


class _Once(Reaction):
    """Returns ``actions`` for the first frame analysed, nothing after."""

    name = "once"

    def __init__(self, actions: list[Action]) -> None:
        self.actions = actions

    def react(self, result: FrameResult, run: RunView) -> list[Action]:
        return self.actions if result.frame.frame_index == 0 else []


_GRID_OR_STACK = {
    "channels": [{"config": "DAPI", "exposure": 20}],
    "stage_positions": [
        {"name": "p0", "x": 0, "y": 0},
        {"name": "p1", "x": 150, "y": -100},
    ],
    "time_plan": {"interval": 5, "loops": 3},
}


def test_grid_tiles_stay_in_the_box_after_a_move(tmp_path: Path) -> None:
    """A position moved to the box's corner: its grid tiles too stay inside
    (before commit c6707c2 only the position's centre was judged, and tiles were
    imaged 83 µm outside xy_box_um)."""
    seq = {**_GRID_OR_STACK, "grid_plan": {"rows": 1, "columns": 2}}
    obs = _run(
        _protocol(sequence=seq, max_xy_step_um=5000),
        [_Once([MoveStage(x_um=400, y_um=300, position="p0")])],
        tmp_path / "run",
    )
    _assert_inside_the_envelope(obs, 40.0)


def test_z_stack_stays_in_range_after_a_focus_move(tmp_path: Path) -> None:
    """A position refocused to the edge of z_range_um: its relative stack too
    stays inside (it reached 32 µm with z_range_um 30 before c6707c2)."""
    seq = {**_GRID_OR_STACK, "z_plan": {"range": 4, "step": 2}}
    obs = _run(
        _protocol(sequence=seq, max_z_step_um=100),
        [_Once([MoveFocus(z_um=30, position="p0")])],
        tmp_path / "run",
    )
    _assert_inside_the_envelope(obs, 40.0)


def test_added_position_with_grid_and_stack_stays_inside(tmp_path: Path) -> None:
    """A position added at the box's corner and the top of z_range_um: its
    grid tiles and stack planes are held to the limits as a whole."""
    seq = {
        **_GRID_OR_STACK,
        "grid_plan": {"rows": 1, "columns": 2},
        "z_plan": {"range": 4, "step": 2},
    }
    obs = _run(
        _protocol(sequence=seq),
        [_Once([AddPosition(x_um=400, y_um=-300, z_um=30)])],
        tmp_path / "run",
    )
    _assert_inside_the_envelope(obs, 40.0)


def test_autofocus_centre_far_away_does_not_bypass_max_z_step(tmp_path: Path) -> None:
    """An Autofocus whose center_um is far from the focus: no Z move between
    frames larger than max_z_step_um (one sweep jumped 26 µm with 10 allowed
    before c6707c2)."""
    obs = _run(
        _protocol(),
        [_Once([Autofocus(range_um=4, step_um=2, center_um=28)])],
        tmp_path / "run",
    )
    _assert_inside_the_envelope(obs, 40.0)
    zs = [h[2] for h in obs.hardware]
    assert max(abs(b - a) for a, b in itertools.pairwise(zs)) <= 10 + 1e-6
