"""pymmcore-plus's MDA engine plus the protocol's device-error policy.

The runner and the engine are pymmcore-plus's own; this subclass only wraps
the stage moves and the snap in the protocol's retry policy and reports each
failure through ``on_device_error`` (an interface, so the engine never knows
the controller). Only device errors are caught (the exceptions a core call
raises for a device: ``RuntimeError``, ``OSError``, ``ValueError``); anything
else is a bug and ends the run with its traceback in the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import useq
from pymmcore_plus.mda import MDAEngine
from pymmcore_plus.mda._runner import SkipEvent

from smartscope.protocol import ErrorPolicy, FaultPolicy

if TYPE_CHECKING:
    from pymmcore_plus import CMMCorePlus
    from pymmcore_plus.mda import PImagePayload

__all__ = [
    "DEVICE_ERRORS",
    "IMAGE_META_KEY",
    "LASER_META_KEY",
    "LATE_META_KEY",
    "RECEIVED_META_KEY",
    "ControllerEngine",
    "DeviceFailure",
]

#: what a core call raises when a device fails (pymmcore's CMMError is a
#: RuntimeError; a property value a device refuses is a ValueError)
DEVICE_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, OSError, ValueError)


logger = logging.getLogger("smartscope.controller")

#: frame-metadata key of the light power (mW) the ledger counted for the frame
LASER_META_KEY = "smartscope_laser_mw"
#: frame-metadata key of where the frame was stored (series, t, c, z)
IMAGE_META_KEY = "smartscope_image"
#: frame-metadata key of how late the frame's event began for its time plan,
#: ms (the event clock when its setup began minus its ``min_start_time``)
LATE_META_KEY = "smartscope_late_ms"
#: frame-metadata key of when the frame was in hand (``time.perf_counter()``
#: s, just after ``core.getImage()``, before it is stored): the "frame" of
#: frame→result and frame→action, so that they count the frame's write too
RECEIVED_META_KEY = "smartscope_t_received"


def late_ms(core: CMMCorePlus, event: useq.MDAEvent) -> float | None:
    """How long after its planned start (``min_start_time``, on the runner's
    event clock: the sample clock in virtual time) ``event`` begins, ms; None
    for an event without one (no time plan, an autofocus plane)."""
    if event.min_start_time is None:
        return None
    try:
        now = float(core.mda.event_seconds_elapsed())
    except Exception:
        return None
    return max(0.0, now - float(event.min_start_time)) * 1000.0


@dataclass(frozen=True)
class DeviceFailure:
    """One failed device call, as the engine reports it."""

    device: str
    event: useq.MDAEvent
    error: BaseException
    attempt: int
    final: bool
    then: str

    @property
    def outcome(self) -> str:
        if not self.final:
            return "retrying"
        return "frame skipped" if self.then == "skip" else "run stopped"


class ControllerEngine(MDAEngine):
    """The MDA engine with retries; no hardware sequencing (every event passes
    the controller's generator, so actions land between frames) and no restore
    of the initial state (the stage stays with the sample)."""

    def __init__(
        self,
        core: CMMCorePlus,
        *,
        policy: ErrorPolicy,
        on_device_error: Callable[[DeviceFailure], None],
        on_exposed: Callable[[float], float] | None = None,
        on_image: Callable[[np.ndarray, useq.MDAEvent, dict], dict] | None = None,
        on_frame: Callable[[np.ndarray, useq.MDAEvent, dict], None] | None = None,
    ) -> None:
        super().__init__(
            core, use_hardware_sequencing=False, restore_initial_state=False
        )
        self._policy = policy
        self._report = on_device_error
        #: called with the exposure (ms) once a snap has lit the sample; returns
        #: the light power it had (the dose ledger counts the light here, so a
        #: frame lit but never written, e.g. on a full disk, is counted too)
        self._on_exposed = on_exposed
        #: called with each frame before the runner announces it: stores it and
        #: returns where (a failure, e.g. a full disk, fails the run as a
        #: writer's would)
        self._on_image = on_image
        #: called with each stored frame on the runner thread, before the
        #: runner announces it: the controller's frame handling does not ride
        #: on core.mda.events.frameReady, which under Qt signals is delivered
        #: on the GUI thread (blocked while Controller.run() waits there)
        self._on_frame = on_frame
        #: how late the event being set up began for its time plan, ms
        self._late_ms: float | None = None

    def _retry(
        self,
        device: str,
        policy: FaultPolicy,
        event: useq.MDAEvent,
        fn: Callable[[], object],
    ) -> bool:
        for attempt in range(policy.retries + 1):
            try:
                fn()
                return True
            except DEVICE_ERRORS as e:
                final = attempt == policy.retries
                self._report(
                    DeviceFailure(device, event, e, attempt + 1, final, policy.then)
                )
        return False

    def setup_single_event(self, event: useq.MDAEvent) -> None:
        core, pol = self.mmcore, self._policy.stage
        # the runner has waited for the event's time: this is when it begins
        self._late_ms = late_ms(core, event)
        if event.x_pos is not None and event.y_pos is not None:
            x, y = event.x_pos, event.y_pos

            def move_xy() -> None:
                # a move started ahead of this frame (Executor._premove) may
                # still be under way: let it end before the next command
                # (some stage controllers refuse one while they move)
                label = core.getXYStageDevice()
                if label and core.deviceBusy(label):
                    core.waitForDevice(label)
                core.setXYPosition(x, y)

            if not self._retry("stage", pol, event, move_xy):
                raise SkipEvent(num_frames=0, reason="XY stage error")
        if event.z_pos is not None:
            z = event.z_pos + self._z_correction.get(event.index.get("p"), 0.0)
            if not self._retry("stage", pol, event, lambda: core.setZPosition(z)):
                raise SkipEvent(num_frames=0, reason="Z stage error")
        # the rest (channel, exposure, properties) is pymmcore-plus's
        super().setup_single_event(
            event.model_copy(update={"x_pos": None, "y_pos": None, "z_pos": None})
        )

    def exec_single_event(self, event: useq.MDAEvent) -> Iterator[PImagePayload]:
        core = self.mmcore
        if not self._retry("camera", self._policy.camera, event, core.snapImage):
            return
        t0 = event.metadata.get("runner_t0") or time.perf_counter()
        meta = self.get_frame_metadata(
            event,
            runner_time_ms=(time.perf_counter() - t0) * 1000,
            camera_device=core.getCameraDevice(),
            include_position=True,
        )
        if self._late_ms is not None:
            meta[LATE_META_KEY] = self._late_ms
        if self._on_exposed is not None:
            exposure = float(meta.get("exposure_ms", event.exposure or 0.0))
            meta[LASER_META_KEY] = self._on_exposed(exposure)
        img = core.getImage()
        meta[RECEIVED_META_KEY] = time.perf_counter()
        if self._on_image is not None:
            meta[IMAGE_META_KEY] = self._on_image(img, event, meta)
        if self._on_frame is not None:
            try:
                self._on_frame(img, event, meta)
            except Exception:  # as the runner treats a frameReady handler
                logger.exception("handling frame %s raised", dict(event.index))
        yield (img, event, meta)  # type: ignore[misc]
