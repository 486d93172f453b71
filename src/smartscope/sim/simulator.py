"""The simulated microscope's shared state and its public truth API.

One :class:`Simulator` exists per core. The Python devices declared in
``simulators/demo.cfg`` (camera, stages, shutter, laser, turrets, sample) find
it through the core's event signaler, which is the one object every device of a
core can see, so the file loads like any Micro-Manager configuration in any
pymmcore-plus client. ``get_simulator(core)`` returns it and attaches the core,
which lets the simulator keep the core's pixel size in step with the objective
and run ``core.mda`` in virtual time.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from smartscope.errors import SimulatedDeviceError, SimulatorError
from smartscope.sim import virtual_time
from smartscope.sim.clock import SimClock, TimeMode
from smartscope.sim.optics import View, blur, blur_sigma_px, render_nuclei
from smartscope.sim.scene import STATE_NAMES, Scene, ScenePreset, load_scene_preset
from smartscope.sim.shot_noise import ShotNoise
from smartscope.sim.truth import CELLS_CSV_HEADER, CellTruth, FrameTruth, TruthRecorder
from smartscope.sim.turrets import objective_spec

if TYPE_CHECKING:
    from pymmcore_plus import CMMCorePlus

__all__ = ["FAULTS", "PIXEL_SIZE_CONFIG", "Simulator", "get_simulator"]

#: Name of the pixel-size configuration the simulator maintains on the core.
PIXEL_SIZE_CONFIG = "SimObjective"
#: Faults that :meth:`Simulator.inject` understands.
FAULTS = ("camera_timeout", "stage_error", "hot_pixels", "focus_jump")
_FAULT_PARAMS: dict[str, frozenset[str]] = {
    "camera_timeout": frozenset({"count", "timeout_s"}),
    "stage_error": frozenset({"count", "device"}),
    "hot_pixels": frozenset({"n", "value_adu", "seed"}),
    "focus_jump": frozenset({"dz_um"}),
}

Role = Literal["camera", "xy", "z", "shutter", "laser", "objective", "filter", "sample"]

#: core identity -> its simulator; an entry lives as long as the simulator,
#: which the core's devices hold
_REGISTRY: weakref.WeakValueDictionary[Any, Simulator] = weakref.WeakValueDictionary()
_REGISTRY_LOCK = threading.Lock()


def _core_key(property_changed: Any) -> Any:
    """What identifies one core, from its ``events.propertyChanged`` (all a
    Python device sees of its core): with psygnal signals, the core's signal
    group; with Qt signals (a ``QApplication`` is running), the bound signal
    signal's hash, which is that of the core's signaler object."""
    group = getattr(property_changed, "instance", None)
    if group is not None:
        return group
    # a Qt bound signal hashes by its QObject and signal; the hash, not the
    # signal, is kept: a registry entry that outlives the core's QObject must
    # not compare signals of a deleted object (that crashes)
    return ("qt", hash(property_changed))


def _simulator_for_signaler(property_changed: Any) -> Simulator:
    """The simulator shared by all devices of one core (created on first use)."""
    key = _core_key(property_changed)
    with _REGISTRY_LOCK:
        sim = _REGISTRY.get(key)
        if sim is None or sim._retired:
            sim = Simulator()
            _REGISTRY[key] = sim
            # track the core's auto-shutter without needing the core itself
            # (psygnal; with Qt signals the attached core is asked instead)
            shutter_set = getattr(key, "autoShutterSet", None)
            if shutter_set is not None:
                shutter_set.connect(sim._on_autoshutter)
                sim._autoshutter_linked = True
        return sim


def has_simulator(core: CMMCorePlus) -> bool:
    """Whether ``core`` has smartscope simulator devices loaded."""
    sim = _REGISTRY.get(_core_key(core.events.propertyChanged))
    return sim is not None and bool(sim._devices)


def get_simulator(core: CMMCorePlus) -> Simulator:
    """Return the simulator behind ``core``'s simulated devices.

    Raises
    ------
    SimulatorError
        If the core has no smartscope simulator devices loaded.
    """
    sim = _REGISTRY.get(_core_key(core.events.propertyChanged))
    if sim is None or not sim._devices:
        raise SimulatorError(
            "this core has no smartscope simulator devices; load one with "
            "smartscope.hardware.load_core() (simulators/demo.cfg)"
        )
    sim.attach(core)
    return sim


def resolve_scene_preset(name_or_path: str) -> ScenePreset:
    """The scene preset a name (``simulators/scenes/<name>.yaml``) or YAML path
    stands for; ``SimulatorError`` naming what was looked for."""
    if name_or_path in ("", "default"):
        return ScenePreset()
    path = Path(name_or_path)
    if not path.suffix:
        from smartscope._data import data_dir

        path = data_dir("simulators") / "scenes" / f"{name_or_path}.yaml"
    if not path.is_file():
        raise SimulatorError(
            f"scene preset {name_or_path!r} not found (looked for {path}); use "
            "'default', a preset name from simulators/scenes/, or a YAML path"
        )
    return load_scene_preset(path)


class Simulator:
    """Truth, clock, light dose and faults of one simulated microscope.

    Obtain it with :func:`get_simulator`; do not construct it directly.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._devices: dict[str, Any] = {}
        self._core_ref: weakref.ReferenceType[CMMCorePlus] | None = None
        self.clock = SimClock("virtual")
        self._preset_name = "default"
        self._preset = ScenePreset()
        self._seed = 0
        self._scene: Scene | None = None
        self._noise_rng = np.random.default_rng([0, 1])
        self._shot_noise = ShotNoise()
        self._autoshutter = True
        self._autoshutter_linked = False
        self._retired = False
        self._exposing = False
        self._t_sync = 0.0
        self._dose_mj = 0.0
        self._frame_index = -1
        self._last_truth: FrameTruth | None = None
        self._history: list[np.ndarray] = []
        self._recorders: list[TruthRecorder] = []
        self._faults: dict[str, dict[str, Any]] = {}
        self._hot_pixels: tuple[np.ndarray, np.ndarray, float | None] | None = None
        self._focus_offset_um = 0.0
        self._runner_hooked = False
        #: keep per-frame truth rows in memory for :meth:`write_truth` (72 bytes
        #: per cell in view per frame); long runs can turn this off and stream with
        #: :meth:`record_truth` instead.
        self.keep_history = True
        # reusable buffers for the hot path
        self._density: np.ndarray | None = None
        self._labels: np.ndarray | None = None

    # ------------------------------------------------------------ wiring

    def _register(self, role: Role, device: Any) -> None:
        with self._lock:
            self._devices[role] = device

    def _unregister(self, device: Any) -> None:
        with self._lock:
            for role, dev in list(self._devices.items()):
                if dev is device:
                    del self._devices[role]
            if not self._devices:
                # every device gone: the core was released; a new core that
                # happens to get the same key must get a new simulator
                self._retired = True
                for rec in self._recorders:
                    rec.close()
                self._recorders.clear()

    def _device(self, role: Role) -> Any:
        try:
            return self._devices[role]
        except KeyError:
            raise SimulatorError(
                f"the simulated microscope has no {role!r} device loaded"
            ) from None

    def attach(self, core: CMMCorePlus) -> None:
        """Bind the core: keep its pixel size in step with the objective and
        hook ``core.mda`` for virtual time. Idempotent."""
        if self._core_ref is not None and self._core_ref() is core:
            return
        self._core_ref = weakref.ref(core)
        self._autoshutter = bool(core.getAutoShutter())
        if PIXEL_SIZE_CONFIG not in core.getAvailablePixelSizeConfigs():
            core.definePixelSizeConfig(PIXEL_SIZE_CONFIG)
        self._update_core_pixel_size()
        self._runner_hooked = False
        self._apply_time_mode_hook()

    @property
    def core(self) -> CMMCorePlus | None:
        """The attached core, if any."""
        return self._core_ref() if self._core_ref is not None else None

    def _auto_shutter(self) -> bool:
        """The core's auto-shutter: followed through its signal (psygnal), or
        asked of the attached core (Qt signals: a Qt connection to the
        simulator could outlive either object at garbage collection)."""
        if not self._autoshutter_linked:
            core = self.core
            if core is not None:
                with contextlib.suppress(Exception):
                    return bool(core.getAutoShutter())
        return self._autoshutter

    def _on_autoshutter(self, state: bool) -> None:
        with self._lock:
            self._sync()
            self._autoshutter = bool(state)

    def pixel_size_um(self, objective: str | None = None) -> float:
        """The camera's pixel at the sample, µm (binning included), with the
        objective labelled ``objective`` (None: the one in place).

        Raises
        ------
        KeyError
            If there is no simulated objective of that label (naming the known).
        SimulatorError
            If the simulator has no camera or no objective.
        """
        cam, obj = self._device("camera"), self._device("objective")
        spec = obj.spec if objective is None else objective_spec(objective)
        return float(cam.pixel_pitch_um * cam.binning / spec.magnification)

    def _update_core_pixel_size(self) -> None:
        core = self.core
        if (
            core is None
            or "objective" not in self._devices
            or "camera" not in self._devices
        ):
            return
        obj = self._devices["objective"]
        cam = self._devices["camera"]
        core.setPixelSizeUm(PIXEL_SIZE_CONFIG, cam.pixel_pitch_um / obj.magnification)

    def _apply_time_mode_hook(self) -> None:
        core = self.core
        if core is None:
            return
        if self.clock.mode == "virtual" and not self._runner_hooked:
            virtual_time.install(core.mda, self.clock, advance=self.advance)
            self._runner_hooked = True
        elif self.clock.mode == "realtime" and self._runner_hooked:
            virtual_time.uninstall(core.mda)
            self._runner_hooked = False

    # ------------------------------------------------------- scene & time

    @property
    def scene(self) -> Scene:
        """The sample (created on first use from the preset and seed)."""
        with self._lock:
            if self._scene is None:
                self._scene = Scene(self._preset, self._seed)
                self._scene.advance_to(self.clock.now())
            return self._scene

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def preset_name(self) -> str:
        """The scene preset's name (or path) as it was loaded ("<custom>" for
        a ``ScenePreset`` object)."""
        return self._preset_name

    @property
    def preset(self) -> ScenePreset:
        return self._preset

    def reset(
        self, *, seed: int | None = None, preset: str | ScenePreset | None = None
    ) -> None:
        """Start a new sample: new scene, clock at 0, no dose, no faults."""
        with self._lock:
            if seed is not None:
                self._seed = int(seed)
            if isinstance(preset, ScenePreset):
                self._preset, self._preset_name = preset, "<custom>"
            elif preset is not None:
                self._preset, self._preset_name = resolve_scene_preset(preset), preset
            self.clock.reset()
            self._scene = None
            self._noise_rng = np.random.default_rng([self._seed, 1])
            self._t_sync = 0.0
            self._dose_mj = 0.0
            self._frame_index = -1
            self._last_truth = None
            self._history.clear()
            self._faults.clear()
            self._hot_pixels = None
            self._focus_offset_um = 0.0

    @property
    def time_mode(self) -> TimeMode:
        """ "realtime" (waits take real time) or "virtual" (the sample clock
        advances by exposures, stage moves and time-plan waits without sleeping)."""
        return self.clock.mode

    @time_mode.setter
    def time_mode(self, mode: TimeMode) -> None:
        with self._lock:
            self._sync()
            self.clock.set_mode(mode)
            self._t_sync = self.clock.now()
            self._apply_time_mode_hook()

    @property
    def clock_s(self) -> float:
        """Sample clock, seconds since the sample was created or reset."""
        return self.clock.now()

    def advance(self, dt_s: float) -> None:
        """Let the sample live ``dt_s`` seconds (sleeps in realtime mode)."""
        self.clock.advance(dt_s)
        with self._lock:
            self._sync()

    # -------------------------------------------------------------- light

    def _view_center_um(self) -> tuple[float, float]:
        """The sample point at the image centre, in the scene's coordinates
        (physical stage position plus the objective's offset)."""
        x, y = self._devices["xy"].physical_position_um()
        obj = self._devices.get("objective")
        if obj is None:
            return x, y
        ox, oy = obj.offset_um
        return x + ox, y + oy

    def _field_um(self) -> tuple[float, float, float, float]:
        """Illuminated box (x0, x1, y0, y1) in the scene's µm: the full
        sensor's field, around the objective's optical axis."""
        cam, obj = self._devices["camera"], self._devices["objective"]
        w_um = cam.sensor_width_px * cam.pixel_pitch_um / obj.magnification
        h_um = cam.sensor_height_px * cam.pixel_pitch_um / obj.magnification
        x, y = self._view_center_um()
        return (x - w_um / 2, x + w_um / 2, y - h_um / 2, y + h_um / 2)

    def _lit(self) -> bool:
        shutter = self._devices.get("shutter")
        laser = self._devices.get("laser")
        if shutter is None or laser is None or laser.power_mw <= 0:
            return False
        return bool(shutter.is_open or (self._exposing and self._auto_shutter()))

    def _sync(self) -> None:
        """Account the light delivered since the last sync (call before any change
        of shutter, power, position, objective, or exposure state)."""
        t = self.clock.now()
        dt = t - self._t_sync
        self._t_sync = t
        if dt <= 0 or not self._lit():
            return
        p_mw = self._devices["laser"].power_mw
        self._dose_mj += p_mw * dt
        if {"camera", "objective", "xy"} <= self._devices.keys():
            x0, x1, y0, y1 = self._field_um()
            area_cm2 = (x1 - x0) * (y1 - y0) * 1e-8
            scene = self.scene
            scene.advance_to(t)
            scene.add_fluence(x0, x1, y0, y1, p_mw * 1e-3 / area_cm2 * dt)

    @property
    def light_dose_mj(self) -> float:
        """Illumination energy delivered to the sample so far (open-shutter time
        only), mJ = mW · s."""
        with self._lock:
            self._sync()
            return self._dose_mj

    @property
    def irradiance_w_cm2(self) -> float:
        """Irradiance at the sample when the light is on at the current power."""
        with self._lock:
            x0, x1, y0, y1 = self._field_um()
            return (
                self._devices["laser"].power_mw * 1e-3 / ((x1 - x0) * (y1 - y0) * 1e-8)
            )

    # -------------------------------------------------------------- focus

    def focus_z_um(self, x_um: float | None = None, y_um: float | None = None) -> float:
        """Z stage position that is in focus at stage (x, y) (default: here), now,
        with the current objective (its XY offset and ``parfocal_z_um``
        included: see ``smartscope.sim.turrets.ObjectiveSpec``).

        Stage coordinates, as the core reads and sets them (origins included).
        """
        with self._lock:
            xy, zdev = self._devices["xy"], self._devices["z"]
            if x_um is None or y_um is None:
                x_um, y_um = xy.physical_position_um()
            else:
                x_um, y_um = x_um + xy.origin_um[0], y_um + xy.origin_um[1]
            obj = self._devices.get("objective")
            parfocal = 0.0
            if obj is not None:
                ox, oy = obj.offset_um
                x_um, y_um, parfocal = x_um + ox, y_um + oy, obj.parfocal_z_um
            z = self.scene.focus_z_um(x_um, y_um, self.clock.now())
            z_origin = zdev.position_um - zdev.get_position_um()
            return z + parfocal + self._focus_offset_um - z_origin

    # -------------------------------------------------------------- faults

    def inject(self, fault: str, **params: Any) -> None:
        """Inject a device fault.

        - ``camera_timeout(count=1, timeout_s=1.0)``: the next ``count`` snaps
          wait ``timeout_s`` of sample time, then raise ``SimulatedDeviceError``
          (a RuntimeError) from the core call, like a camera that never triggers.
        - ``stage_error(count=1, device="XY")``: the next ``count`` moves of
          ``"XY"`` or ``"Z"`` raise ``SimulatedDeviceError`` and do not move.
        - ``hot_pixels(n=25, value_adu=None, seed=0)``: ``n`` sensor pixels stick
          at ``value_adu`` (default: the top of the bit depth) in every frame
          from now on; ``truth().meta["hot_pixels"]`` lists them, and
          ``expected_adu`` stays clean.
        - ``focus_jump(dz_um=5.0)``: the focal plane jumps by ``dz_um`` now.
        """
        # refuse bad input before any of it takes effect
        if fault not in _FAULT_PARAMS:
            raise SimulatorError(f"unknown fault {fault!r}; expected one of {FAULTS}")
        unknown = set(params) - _FAULT_PARAMS[fault]
        if unknown:
            raise SimulatorError(
                f"unknown parameters for fault {fault!r}: {sorted(unknown)}; expected "
                f"some of {sorted(_FAULT_PARAMS[fault])}"
            )
        with self._lock:
            if fault == "camera_timeout":
                self._faults[fault] = {
                    "count": int(params.pop("count", 1)),
                    "timeout_s": float(params.pop("timeout_s", 1.0)),
                }
            elif fault == "stage_error":
                device = str(params.pop("device", "XY"))
                if device not in ("XY", "Z"):
                    raise SimulatorError(
                        f"stage_error device must be 'XY' or 'Z', got {device!r}"
                    )
                self._faults[f"stage_error:{device}"] = {
                    "count": int(params.pop("count", 1))
                }
            elif fault == "hot_pixels":
                n = int(params.pop("n", 25))
                value = params.pop("value_adu", None)
                rng = np.random.default_rng(int(params.pop("seed", 0)))
                cam = self._device("camera")
                rows = rng.integers(0, cam.sensor_height_px, n)
                cols = rng.integers(0, cam.sensor_width_px, n)
                self._hot_pixels = (rows, cols, None if value is None else float(value))
            elif fault == "focus_jump":
                self._focus_offset_um += float(params.pop("dz_um", 5.0))

    def clear_faults(self) -> None:
        """Remove pending faults and hot pixels (a focus jump stays where it went)."""
        with self._lock:
            self._faults.clear()
            self._hot_pixels = None

    def _take_fault(self, key: str) -> dict[str, Any] | None:
        f = self._faults.get(key)
        if f is None:
            return None
        f["count"] -= 1
        if f["count"] <= 0:
            del self._faults[key]
        return f

    def _check_stage_fault(self, device: str) -> None:
        with self._lock:
            if self._take_fault(f"stage_error:{device}") is not None:
                raise SimulatedDeviceError(
                    f"{device}: stage reported a motion error (simulated fault); "
                    "the stage did not move"
                )

    # --------------------------------------------------------------- truth

    def truth(self) -> FrameTruth:
        """Ground truth of the most recent image."""
        if self._last_truth is None:
            raise SimulatorError("no image has been acquired yet: snap one first")
        return self._last_truth

    def cells(self) -> tuple[CellTruth, ...]:
        """All nuclei of the sample now (not only those in view)."""
        with self._lock:
            self._sync()  # light delivered up to now counts in each cell's dose
            scene = self.scene
            scene.advance_to(self.clock.now())
            return self._cell_truths(np.arange(scene.n))

    def _cell_truths(
        self, idx: np.ndarray, radius_um: np.ndarray | None = None
    ) -> tuple[CellTruth, ...]:
        """Truth of the cells ``idx``; ``radius_um`` (N,) if already computed."""
        s = self.scene
        r = s.radius_um() if radius_um is None else radius_um
        ox, oy = self._devices["xy"].origin_um if "xy" in self._devices else (0.0, 0.0)
        return tuple(
            CellTruth(
                id=int(s.id[i]),
                x_um=float(s.x[i] - ox),
                y_um=float(s.y[i] - oy),
                radius_um=float(r[i]),
                state=STATE_NAMES[s.state[i]],
                dose=float(s.dose[i]),
                parent_id=int(s.parent[i]),
                target=bool(s.target[i]),
            )
            for i in idx
        )

    def record_truth(self, path: str | Path) -> TruthRecorder:
        """Stream ``cells.csv`` rows for every frame from now on (flushed per
        frame). Close the returned recorder to stop."""
        rec = TruthRecorder(path)
        with self._lock:
            self._recorders = [r for r in self._recorders if not r.closed]
            self._recorders.append(rec)
        return rec

    def write_truth(self, path: str | Path) -> Path:
        """Write ``cells.csv`` (frame, t_s, cell id, parent id, x_um, y_um,
        radius_um, state, dose, target) for every frame since the last reset."""
        import csv

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(CELLS_CSV_HEADER)
            for block in self._history:
                for row in block:
                    w.writerow(
                        (
                            int(row[0]),
                            f"{row[1]:.3f}",
                            int(row[2]),
                            int(row[3]),
                            f"{row[4]:.3f}",
                            f"{row[5]:.3f}",
                            f"{row[6]:.3f}",
                            STATE_NAMES[int(row[7])],
                            f"{row[8]:.4f}",
                            int(row[9]),
                        )
                    )
        return path

    # ------------------------------------------------------------ imaging

    def _acquire(self, cam: Any, buf: np.ndarray) -> dict[str, Any]:
        """Expose and read out one frame into ``buf`` ((H, W) uint16)."""
        exposure_s = cam.exposure_ms / 1000.0
        with self._lock:
            fault = self._take_fault("camera_timeout")
        if fault is not None:
            self.clock.advance(fault["timeout_s"])
            with self._lock:
                self._sync()
            raise SimulatedDeviceError(
                f"{cam.get_label() or 'Camera'}: timed out waiting for the image "
                f"after {fault['timeout_s']:.1f} s (simulated fault)"
            )
        with self._lock:
            self._sync()
            t_start = self.clock.now()
            truth = self._render(cam, buf, exposure_s, t_start)
            self._exposing = True
        left = exposure_s
        if self.clock.mode == "realtime":
            # the sensor collects light from t_start on while the frame is
            # computed: rendering is the simulator's work, not the camera's,
            # so a snap takes its exposure (or the render, if longer), not both
            left -= self.clock.now() - t_start
        try:
            self.clock.advance(left)
        finally:
            with self._lock:
                self._sync()
                self._exposing = False
        return {"sim_t_s": f"{t_start:.6f}", "sim_frame": str(truth.frame_index)}

    def _render(
        self, cam: Any, buf: np.ndarray, exposure_s: float, t_start: float
    ) -> FrameTruth:
        scene = self.scene
        scene.advance_to(t_start)
        obj, xy, z = self._device("objective"), self._device("xy"), self._device("z")
        filt, laser = self._device("filter"), self._device("laser")
        binning = cam.binning
        pixel_um = cam.pixel_pitch_um * binning / obj.magnification
        sx, sy = xy.physical_position_um()
        # the objective's optical axis is off the reference's: the image
        # centre shows the sample at the stage position plus its offset
        cx, cy = self._view_center_um()
        view = View(
            cx,
            cy,
            pixel_um,
            cam.sensor_width_px // binning,
            cam.sensor_height_px // binning,
            cam.roi,
        )
        dye_name = filt.dye
        dye = self._preset.channels.get(dye_name)
        if dye is None:
            raise SimulatorError(
                f"filter {dye_name!r} has no dye in scene preset; known: "
                f"{sorted(self._preset.channels)}"
            )
        focus = (
            scene.focus_z_um(cx, cy, t_start)
            + obj.parfocal_z_um
            + self._focus_offset_um
        )
        z_um = z.position_um
        sigma = blur_sigma_px(
            emission_nm=dye.emission_nm,
            na=obj.na,
            defocus_um=z_um - focus,
            pixel_um=pixel_um,
            immersion_n=obj.immersion_n,
        )
        a, b = scene.axes_um()
        h, w = buf.shape
        # Render a margin beyond the ROI and crop after the blur, so that pixels
        # near the edge get the light of nuclei just outside it: an ROI reads the
        # same values the full frame has there. Far out of focus the margin is
        # capped at one image size (light from further away is a faint haze).
        pad = min(int(np.ceil(3.0 * sigma)) + 1, max(h, w))
        margin = float(a.max(initial=0.0)) + (pad + 1) * pixel_um
        idx = scene.in_box(*view.bounds_um(margin))
        rx, ry, rw, rh = view.roi
        padded = View(
            cx,
            cy,
            pixel_um,
            view.full_w,
            view.full_h,
            (rx - pad, ry - pad, rw + 2 * pad, rh + 2 * pad),
        )
        if self._density is None or self._density.shape != (h + 2 * pad, w + 2 * pad):
            self._density = np.empty((h + 2 * pad, w + 2 * pad), np.float32)
            self._labels = np.empty((h + 2 * pad, w + 2 * pad), np.int32)
        density, labels, _ = render_nuclei(
            padded,
            x_um=scene.x[idx],
            y_um=scene.y[idx],
            a_um=a[idx],
            b_um=b[idx],
            theta=scene.theta[idx],
            brightness=scene.brightness(dye_name)[idx],
            ids=scene.id[idx],
            phase1=scene.phase1[idx],
            phase2=scene.phase2[idx],
            texture=self._preset.texture,
            out=self._density,
            labels=self._labels,
        )
        density = blur(density, sigma)[pad : pad + h, pad : pad + w]
        labels = labels[pad : pad + h, pad : pad + w]
        # the nuclei with at least one labelled pixel in the ROI
        ids_in_view = scene.id[idx]
        n_px = np.bincount(
            labels.ravel(), minlength=int(ids_in_view.max(initial=0)) + 1
        )
        drawn = n_px[ids_in_view] > 0
        lit = self._lit() or (
            self._auto_shutter() and laser.power_mw > 0 and "shutter" in self._devices
        )
        if lit:
            x0, x1, y0, y1 = self._field_um()
            irr = laser.power_mw * 1e-3 / ((x1 - x0) * (y1 - y0) * 1e-8)
            exc = 1.0 if abs(laser.wavelength_nm - dye.excitation_nm) < 20 else 0.02
            photons_per_unit = (
                self._preset.photon_yield
                * irr
                * exposure_s
                * pixel_um**2
                * (obj.na / 0.3) ** 2
                * exc
            )
        else:
            photons_per_unit = 0.0
        gain, offset = cam.gain_e_per_adu, cam.offset_adu
        e_per_unit = photons_per_unit * cam.qe
        # expected electrons: signal + medium background
        background_e = e_per_unit * dye.background
        expected_e = density * np.float32(e_per_unit) + np.float32(background_e)
        np.minimum(expected_e, np.float32(cam.full_well_e), out=expected_e)
        expected_adu = expected_e / np.float32(gain) + np.float32(offset)
        # noise: Poisson shot noise on electrons, Gaussian read noise
        rng = self._noise_rng
        electrons = self._shot_noise.draw(
            rng, expected_e, background_e, cam.full_well_e
        )
        np.minimum(electrons, np.float32(cam.full_well_e), out=electrons)
        noise = rng.standard_normal((h, w), dtype=np.float32)
        noise *= np.float32(cam.read_noise_e)
        electrons += noise
        electrons *= np.float32(1.0 / gain)
        electrons += np.float32(offset + 0.5)  # +0.5: round to nearest on truncation
        np.clip(electrons, 0, cam.max_adu, out=electrons)
        buf[...] = electrons  # float -> uint16 truncation
        meta: dict[str, Any] = {}
        if self._hot_pixels is not None:
            rows, cols, value = self._hot_pixels
            rx, ry, rw, rh = cam.roi
            r, c = rows // binning - ry, cols // binning - rx
            ok = (r >= 0) & (r < rh) & (c >= 0) & (c < rw)
            buf[r[ok], c[ok]] = int(
                cam.max_adu if value is None else min(value, cam.max_adu)
            )
            meta["hot_pixels"] = np.stack([r[ok], c[ok]], axis=1)
        self._frame_index += 1
        ox, oy = xy.origin_um
        truth = FrameTruth(
            expected_adu=expected_adu,
            labels=labels.copy(),
            cells=self._cell_truths(idx[drawn], np.sqrt(a * b)),
            t_s=t_start,
            frame_index=self._frame_index,
            stage_x_um=sx - ox,
            stage_y_um=sy - oy,
            center_x_um=cx - ox,
            center_y_um=cy - oy,
            z_um=z.get_position_um(),  # stage coordinates, as the core reads Z
            focus_z_um=focus - (z_um - z.get_position_um()),
            pixel_size_um=pixel_um,
            objective=obj.spec.label,
            exposure_ms=exposure_s * 1000.0,
            channel=dye_name,
            laser_mw=laser.power_mw,
            illuminated=lit,
            meta=meta,
        )
        self._last_truth = truth
        if self.keep_history:
            sel = idx[drawn]
            block = np.empty((sel.size, 10))
            block[:, 0] = truth.frame_index
            block[:, 1] = t_start
            block[:, 2] = scene.id[sel]
            block[:, 3] = scene.parent[sel]
            block[:, 4] = scene.x[sel] - ox
            block[:, 5] = scene.y[sel] - oy
            block[:, 6] = np.sqrt(a[sel] * b[sel])
            block[:, 7] = scene.state[sel]
            block[:, 8] = scene.dose[sel]
            block[:, 9] = scene.target[sel]
            self._history.append(block)
        for rec in self._recorders:
            rec.write(truth)
        return truth
