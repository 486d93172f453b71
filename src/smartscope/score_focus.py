"""Focus: how far each frame was from the simulated sample's focal plane.

The simulator's focal plane (``Scene.focus_z_um``, documented in
``docs/simulator.md``) is a function of the scene preset, the stage position
and the sample clock::

    focus_z_um = focus_z0_um + tilt_x_um_per_mm * x / 1000
                 + tilt_y_um_per_mm * y / 1000 + focus_drift_um_per_min * t / 60

The run folder holds every term: the preset's name (``run_started``), each
frame's stage x, y and z (its record) and the sample clock at the start of its
exposure (``t_s`` of the frame's truth rows; a frame that shows no cell has
none and is not scored). Two things the folder does not record would move the
plane: a stage origin set during the session and an injected ``focus_jump``
fault. An autofocus sweep is a witness: when its sharpest plane lies far from
the predicted plane, the focus errors are not given.

Depth of field, from the simulator's optics (:func:`smartscope.sim.optics.blur_sigma_px`):
the defocus at which the defocus blur equals the in-focus PSF, i.e. the
blur has grown by √2.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from smartscope.controller import records as R
from smartscope.score_inputs import ImagedFrame, ScoreInputs

if TYPE_CHECKING:
    from smartscope.sim.scene import ScenePreset
    from smartscope.sim.turrets import ObjectiveSpec

__all__ = ["depth_of_field_um", "focal_plane_z_um", "score_focus"]


def focal_plane_z_um(
    preset: ScenePreset, x_um: float, y_um: float, t_s: float
) -> float:
    """Z stage position in focus at stage (x, y), µm, at sample time ``t_s``
    (the simulator's ``Scene.focus_z_um``; stage origins at 0, no focus jump)."""
    return (
        preset.focus_z0_um
        + preset.tilt_x_um_per_mm * x_um / 1000.0
        + preset.tilt_y_um_per_mm * y_um / 1000.0
        + preset.focus_drift_um_per_min * t_s / 60.0
    )


def depth_of_field_um(*, emission_nm: float, na: float, immersion_n: float) -> float:
    """Half-width of the depth of field, µm: the defocus at which the
    simulator's blur is √2 times its in-focus value."""
    from smartscope.sim.optics import blur_sigma_px

    def sigma(dz: float) -> float:
        return blur_sigma_px(
            emission_nm=emission_nm,
            na=na,
            defocus_um=dz,
            pixel_um=1.0,
            immersion_n=immersion_n,
        )

    s0 = sigma(0.0)
    per_um = float(np.sqrt(sigma(1.0) ** 2 - s0**2))  # defocus blur grows linearly
    return s0 / per_um


def _objective_of(frame: ImagedFrame, named: str | None) -> ObjectiveSpec | None:
    """The simulator objective that gives this frame's pixel size (with some
    binning): the protocol's ``objective`` when it fits, else the only one
    that fits; None when none or several do."""
    from smartscope.sim.camera import BINNINGS, SimCamera
    from smartscope.sim.turrets import OBJECTIVES

    px = frame.pixel_um
    fits = [
        o
        for o in OBJECTIVES
        if any(
            abs(SimCamera.pixel_pitch_um * b / o.magnification - px) <= 1e-6 * px
            for b in BINNINGS
        )
    ]
    for o in fits:
        if o.label == named:
            return o
    return fits[0] if len(fits) == 1 else None


def score_focus(inputs: ScoreInputs) -> dict[str, Any]:
    """The ``focus`` group of a score (see ``docs/score.md``)."""
    frames = inputs.data.frames
    light = np.array([f.laser_mw * f.exposure_ms / 1000.0 for f in frames])
    af = np.array([f.role == "autofocus" for f in frames], bool)
    out: dict[str, Any] = {
        "frames_scored": 0,
        "abs_error_um": None,
        "depth_of_field_um": None,
        "fraction_in_depth_of_field": None,
        "autofocus_frames": int(af.sum()),
        "autofocus_light_fraction": float(light[af].sum() / light.sum())
        if light.sum() > 0
        else None,
        "error_um_by_frame": None,
    }
    if light.sum() <= 0:
        inputs.notes.append("focus: no light was delivered, no autofocus share")
    truth, preset = inputs.truth, inputs.preset
    if truth is None or preset is None:
        inputs.notes.append(
            "focus: errors need the truth and the scene preset (see the notes above)"
        )
        return out
    named = inputs.protocol.get("objective")
    named = named if isinstance(named, str) else None
    errors: list[tuple[int, float]] = []
    in_dof: list[bool] = []
    dof_by_channel: dict[str, float] = {}
    no_time = no_dof = 0
    for frame in inputs.acquisition():
        rec = frame.record
        rows = inputs.rows_of.get(rec.index)
        if rows is None:
            no_time += 1
            continue
        t_s = float(truth.t_s[rows[0]])
        # the drive against the true focus of this objective at the true
        # image centre (the objectives' offsets: docs/simulator.md)
        plane = focal_plane_z_um(preset, frame.center_x_um, frame.center_y_um, t_s)
        err = frame.stage_z_um - frame.parfocal_z_um - plane
        errors.append((rec.index, round(err, 4)))
        dye = preset.channels.get(rec.channel)
        obj = _objective_of(frame, named)
        if dye is None or obj is None:
            no_dof += 1
            continue
        dof = depth_of_field_um(
            emission_nm=dye.emission_nm, na=obj.na, immersion_n=obj.immersion_n
        )
        dof_by_channel[rec.channel] = round(dof, 4)
        in_dof.append(abs(err) <= dof)
    if no_time:
        inputs.notes.append(
            f"focus: {no_time} acquisition frame(s) show no cell, so the truth gives "
            "no sample time for them; they are not scored"
        )
    if not errors:
        inputs.notes.append("focus: no frame could be scored")
        return out
    witness = _autofocus_disagrees(inputs, preset)
    if witness is not None:
        inputs.notes.append(witness)
        return out
    inputs.notes.append(
        "focus: errors assume the stage origins were not moved and no focus_jump "
        "fault was injected (neither is recorded in the run folder)"
    )
    abs_err = np.abs([e for _, e in errors])
    out.update(
        frames_scored=len(errors),
        abs_error_um={
            "median": float(np.median(abs_err)),
            "p95": float(np.percentile(abs_err, 95)),
            "max": float(abs_err.max()),
        },
        error_um_by_frame=[[i, e] for i, e in errors],
    )
    if no_dof:
        inputs.notes.append(
            f"focus: {no_dof} frame(s) have a channel without a dye in the scene "
            "preset or a pixel size no single simulator objective gives: no depth "
            "of field for them"
        )
    if in_dof:
        out.update(
            depth_of_field_um=dof_by_channel,
            fraction_in_depth_of_field=float(np.mean(in_dof)),
        )
    return out


def _autofocus_disagrees(inputs: ScoreInputs, preset: ScenePreset) -> str | None:
    """A note when an autofocus sweep found the sharpest plane far (more
    than 1.5 steps and the depth of field) from where the preset puts the
    focal plane; None when no sweep disagrees (or there is none)."""
    if not any(f.role == "autofocus" for f in inputs.data.frames):
        return None
    from smartscope.recover_log import read_events

    truth = inputs.truth
    if truth is None:
        return None
    named = inputs.protocol.get("objective")
    for rec in read_events(inputs.run_dir / "events.jsonl").records:
        if not isinstance(rec, R.AutofocusRecord) or rec.best_z_um is None:
            continue
        planes = [i for i in rec.frames if i in inputs.rows_of and i in inputs.imaged]
        if not planes or len(rec.z_um) < 2:
            continue
        frame = inputs.imaged[planes[len(planes) // 2]].record
        t_s = float(truth.t_s[inputs.rows_of[frame.index][0]])
        predicted = focal_plane_z_um(preset, frame.x_um, frame.y_um, t_s)
        step = float(np.median(np.abs(np.diff(rec.z_um))))
        dye = preset.channels.get(frame.channel)
        obj = _objective_of(
            inputs.imaged[frame.index], named if isinstance(named, str) else None
        )
        dof = (
            depth_of_field_um(
                emission_nm=dye.emission_nm, na=obj.na, immersion_n=obj.immersion_n
            )
            if dye is not None and obj is not None
            else 0.0
        )
        if abs(rec.best_z_um - predicted) > 1.5 * step + dof:
            return (
                f"focus: autofocus sweep {rec.sweep} found the sharpest plane at "
                f"z = {rec.best_z_um:.2f} µm where the scene preset puts the focal "
                f"plane at {predicted:.2f} µm: the plane moved in a way the run folder "
                "does not record (an injected focus jump?), so no focus errors are given"
            )
    return None
