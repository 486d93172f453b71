"""``protocols/autofocus_timelapse.yaml``: focus held at 20x through focal drift.

The shipped protocol on the simulator, shortened (half the time points, a
narrower first sweep), scored with :func:`smartscope.score.score_run`. The
drift and the defocus of each frame are taken from the live simulator
(``sim.truth()``) while the run goes on, not from the protocol or the scorer.
The same run with the autofocus reaction removed shows that the reaction is
what holds the focus. The full-length protocol runs under ``-m slow``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from smartscope.actions import Autofocus, MoveFocus
from smartscope.analysis.result import FrameInput, FrameResult
from smartscope.controller import Controller
from smartscope.controller.autofocus import sharpness
from smartscope.hardware import load_core, release_core
from smartscope.limits import HardwareState
from smartscope.protocol import Protocol, load_protocol
from smartscope.reactions import KeepFocus, RunView
from smartscope.score import score_run
from smartscope.score_focus import depth_of_field_um
from smartscope.sim import get_simulator
from smartscope.sim.scene import ScenePreset
from smartscope.sim.turrets import OBJECTIVES

PROTOCOL = (
    Path(__file__).resolve().parents[1] / "protocols" / "autofocus_timelapse.yaml"
)

#: the bar of issue 10
IN_FOCUS_FRACTION = 0.95
AUTOFOCUS_LIGHT_FRACTION = 0.20


def _data() -> dict[str, Any]:
    return yaml.safe_load(PROTOCOL.read_text())


def _short(*, autofocus: bool = True) -> Protocol:
    """The protocol for 1 h instead of 2 (120 time points of 30 s): the focal
    plane still drifts by ~10 µm, over 40 depths of field."""
    data = _data()
    data["sequence"]["time_plan"]["loops"] = 120
    data["save"] = {"truth": True, "report": False}
    if autofocus:
        (spec,) = data["reactions"]
        spec["first_range_um"] = 6  # the fixed first-sweep cost, over half the frames
    else:
        data["reactions"] = []
        data["analysis"] = {"enabled": False}
    return Protocol.model_validate(data)


def _run(out: Path, proto: Protocol) -> dict[str, Any]:
    """Run ``proto`` on the simulator; keep, per acquisition frame, the
    simulator's own defocus and the focal plane's z (stage z - defocus)."""
    live: dict[str, list[float]] = {"defocus_um": [], "plane_um": [], "t_s": []}
    core = load_core(seed=proto.seed, scene=proto.scene, time_mode=proto.time_mode)
    try:
        sim = get_simulator(core)
        ctl = Controller(core, proto, out_dir=out)

        def on_frame(f: Any) -> None:
            if not f.event_index:  # an autofocus plane
                return
            truth = sim.truth()
            live["defocus_um"].append(truth.defocus_um)
            live["plane_um"].append(f.z_um - truth.defocus_um)
            live["t_s"].append(f.t_s)

        ctl.frame_acquired.connect(on_frame)
        ctl.run()
    finally:
        release_core(core)
    return {"run": out, "score": score_run(out), **live}


def _dof_um(proto: Protocol) -> float:
    """The score's depth of field for the protocol's objective and dye."""
    (obj,) = [o for o in OBJECTIVES if o.label == proto.objective]
    dye = ScenePreset().channels["DAPI"]
    return depth_of_field_um(
        emission_nm=dye.emission_nm, na=obj.na, immersion_n=obj.immersion_n
    )


@pytest.fixture(scope="module")
def short(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _run(tmp_path_factory.mktemp("af") / "on", _short())


@pytest.fixture(scope="module")
def short_off(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _run(tmp_path_factory.mktemp("af") / "off", _short(autofocus=False))


def _check_focus_bar(res: dict[str, Any], proto: Protocol, drift_um: float) -> None:
    """Drift of at least ``drift_um`` (from the truth), focus within the depth
    of field in >= 95 % of frames, autofocus light <= 20 % of the total."""
    plane = np.array(res["plane_um"])
    assert np.ptp(plane) >= drift_um
    defocus = np.abs(res["defocus_um"])
    dof = _dof_um(proto)
    assert dof == pytest.approx(0.227, abs=0.001)  # 20x / 0.75, DAPI
    assert np.mean(defocus <= dof) >= IN_FOCUS_FRACTION
    focus = res["score"]["focus"]
    assert focus["depth_of_field_um"] == {"DAPI": pytest.approx(dof, abs=1e-4)}
    assert focus["frames_scored"] >= 0.95 * len(defocus)
    assert focus["fraction_in_depth_of_field"] >= IN_FOCUS_FRACTION
    assert focus["abs_error_um"]["p95"] <= dof
    # the scorer's errors are the simulator's own defocus
    scored = np.abs([e for _, e in focus["error_um_by_frame"]])
    assert scored.max() == pytest.approx(defocus.max(), abs=1e-3)
    assert focus["autofocus_frames"] > 0
    assert 0 < focus["autofocus_light_fraction"] <= AUTOFOCUS_LIGHT_FRACTION


def test_the_focal_plane_drifts_in_the_scene_at_the_rate_of_the_preset(
    short: dict[str, Any],
) -> None:
    # from the truth: a straight line of the sample clock, far beyond the DOF
    t_min = np.array(short["t_s"]) / 60.0
    slope, _ = np.polyfit(t_min, short["plane_um"], 1)
    assert slope == pytest.approx(0.18, rel=0.01)  # simulators/scenes/drifting.yaml
    assert np.ptp(short["plane_um"]) > 40 * _dof_um(_short())


def test_the_short_protocol_holds_focus_with_little_light(
    short: dict[str, Any],
) -> None:
    _check_focus_bar(short, _short(), drift_um=10.0)


def test_without_the_autofocus_reaction_the_same_run_loses_focus(
    short: dict[str, Any], short_off: dict[str, Any]
) -> None:
    # the same sample, the same drift; nothing follows it
    assert np.allclose(short_off["plane_um"][:5], short["plane_um"][:5], atol=0.05)
    focus = short_off["score"]["focus"]
    assert focus["autofocus_frames"] == 0
    assert focus["fraction_in_depth_of_field"] < IN_FOCUS_FRACTION
    assert focus["fraction_in_depth_of_field"] < 0.1
    assert focus["abs_error_um"]["max"] > 9.0


def test_the_protocol_file_names_the_autofocus_reaction_and_the_drift() -> None:
    proto = load_protocol(PROTOCOL)
    assert [r.type for r in proto.reactions] == ["autofocus"]
    assert proto.objective == "20x"
    assert proto.scene == "drifting"


@pytest.mark.slow
def test_the_full_protocol_holds_focus_through_20_um_of_drift(
    tmp_path: Path,
) -> None:
    data = _data()
    data["save"] = {"truth": True, "report": False}
    proto = Protocol.model_validate(data)
    res = _run(tmp_path / "full", proto)
    _check_focus_bar(res, proto, drift_um=20.0)


# ------------------------------------------------------------ the pieces


def test_sweep_sharpness_peaks_within_the_depth_of_field_and_ignores_brightness() -> (
    None
):
    core = load_core(seed=5, scene="drifting")
    try:
        sim = get_simulator(core)
        core.setConfig("Objective", "20x")
        core.setExposure(40)
        core.snapImage()
        z0 = core.getPosition() - sim.truth().defocus_um
        scores = {}
        for dz in (-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0):
            core.setPosition(z0 + dz)
            core.snapImage()
            img = np.asarray(core.getImage())
            scores[dz] = sharpness(img)
    finally:
        release_core(core)
    assert max(scores, key=scores.get) == 0.0
    # a quarter micrometre off focus (about the 20x depth of field) costs
    # over 10 % of the score, so a 0.5 µm sweep can locate the peak
    assert scores[0.25] < 0.9 * scores[0.0]
    assert scores[-0.25] < 0.9 * scores[0.0]
    assert scores[1.0] < scores[0.5] < scores[0.25]
    assert scores[-1.0] < scores[-0.5] < scores[-0.25]
    # bleaching dims a frame; the score does not follow the brightness
    assert sharpness(0.5 * img) == pytest.approx(sharpness(img), rel=1e-6)
    assert sharpness(np.zeros((8, 8))) == 0.0


def _frame(i: int, t_s: float, z_um: float) -> FrameResult:
    f = FrameInput(
        image=np.zeros((4, 4), np.uint16),
        frame_index=i,
        position="dish",
        stage_x_um=0.0,
        stage_y_um=0.0,
        z_um=z_um,
        pixel_size_um=0.325,
        exposure_ms=40.0,
        t_frame=0.0,
        t_s=t_s,
        channel="DAPI",
    )
    return FrameResult(
        frame=f, objects=(), labels=None, denoised=None, background=0.0, t_result=0
    )


_VIEW = RunView(
    state=HardwareState(
        x_um=0,
        y_um=0,
        z_um=0,
        exposure_ms=40,
        laser_mw=5,
        light_dose_mj=0,
        n_positions=1,
        interval_s=30,
    ),
    positions={"dish": (0, 0, None)},
    fov_um=(166, 166),
    frames_acquired=0,
    t_s=0,
)


def test_the_reaction_sweeps_less_often_while_it_predicts_the_drift() -> None:
    """A focal plane drifting 0.2 µm/min, found exactly by every sweep: the
    reaction sweeps wide, then fine, doubles the gap while its prediction
    holds, and in between moves the focus along the fitted line."""
    r = KeepFocus(max_every_n=8, tolerance_um=0.05)
    rate_um_per_s = 0.2 / 60

    def plane(t_s: float) -> float:
        return 3.0 + rate_um_per_s * t_s

    z, swept, sweeps, moves = 0.0, None, [], {}
    for i in range(60):
        t = 30.0 * i
        if swept is not None:  # the sweep ran right after the frame that asked
            z = plane(swept)
        (a,) = r.react(_frame(i, t, z), _VIEW) or (None,)
        swept = None
        if isinstance(a, Autofocus):
            sweeps.append((i, a.range_um, a.step_um))
            swept = t
        elif isinstance(a, MoveFocus):
            z = a.z_um
            moves[i + 1] = abs(z - plane(t + 30.0))
    assert sweeps[0] == (0, 10.0, 1.0)
    assert all(s[1:] == (1.0, 0.5) for s in sweeps[1:])
    gaps = np.diff([s[0] for s in sweeps[1:]])
    # one anchor cannot give a rate: the third sweep follows at once
    assert list(gaps[:5]) == [1, 2, 4, 8, 8]  # then doubled up to max_every_n
    assert max(moves.values()) < 1e-6  # the drift followed exactly between sweeps


def test_a_sweep_that_finds_the_focus_elsewhere_brings_the_next_one_forward() -> None:
    r = KeepFocus(max_every_n=8, tolerance_um=0.05)
    z, swept, sweeps = 0.0, False, []  # a still focal plane at z = 0
    for i in range(40):
        if swept:
            z = 2.0 if i > 20 else 0.0  # the sample jumps by 2 µm after frame 20
        (a,) = r.react(_frame(i, 30.0 * i, z), _VIEW) or (None,)
        swept = isinstance(a, Autofocus)
        if swept:
            sweeps.append(i)
        elif isinstance(a, MoveFocus):
            z = a.z_um
    assert np.diff([i for i in sweeps if i <= 20])[-1] == 8  # gap grown
    first_late = next(i for i in sweeps if i > 20)
    # the sweep after the jump disagrees with the prediction: sweep again next frame
    assert first_late + 2 in sweeps
