"""The core smartscope loads: pymmcore-plus's ``UniMMCore`` (C++ and Python
device adapters side by side), made to behave towards GUIs as a core of C++
adapters does."""

from __future__ import annotations

import math
import time
from typing import Any

from pymmcore_plus import CMMCorePlus
from pymmcore_plus.experimental.unicore import UniMMCore

__all__ = ["SmartscopeCore"]

#: how often a busy Python device that cannot say when it will be idle is
#: asked again, s (pymmcore-plus asks every 10 ms)
POLL_S = 0.001

#: the longest sleep on a device's own estimate before asking it again, s (a
#: move stopped from another thread is seen within this)
MAX_SLEEP_S = 0.05


def _seconds(left: Any) -> float:
    """A device's ``seconds_until_idle()``; a value that is not a finite
    number, or a call that raises, counts as "ask again soon"."""
    try:
        s = float(left())
    except Exception:
        return POLL_S
    return s if math.isfinite(s) else POLL_S


#: "Core" role properties and the setters that accept Python devices (the
#: C++ core refuses a Python device's label as their value)
_CORE_ROLES = {
    "Camera": "setCameraDevice",
    "XYStage": "setXYStageDevice",
    "Focus": "setFocusDevice",
    "Shutter": "setShutterDevice",
    "AutoFocus": "setAutoFocusDevice",
    "SLM": "setSLMDevice",
    "Galvo": "setGalvoDevice",
}


class SmartscopeCore(UniMMCore):
    """``UniMMCore`` whose Python devices behave towards GUIs (pymmcore-widgets,
    napari-micromanager) as C++ adapters do:

    - ``propertyChanged`` is emitted after the core's property cache holds the
      new value (a preset table reads the cache when it hears the signal);
    - a Python device can be chosen for a role through the ``Core`` device's
      properties (``Core.XYStage = XY``), as the stage widgets' "set as
      default" button does;
    - waiting for Python devices (``waitForSystem``, ``waitForDeviceType``,
      ``waitForDevice``: every MDA event's setup) happens on the calling
      thread, one device after the other (they move at once, so the wait is
      the longest of theirs), and ends when the device is idle: a device with
      ``seconds_until_idle()`` (the simulator's stages) is slept on for that
      long, any other is asked every :data:`POLL_S`. pymmcore-plus starts a
      thread pool for every such wait and asks every 10 ms (in a profiled
      realtime run on two busy cores, starting those threads took 6 ms a
      frame, and a move's end was seen up to 10 ms late).
    """

    def waitForDevice(self, label: str) -> None:
        if label not in self._pydevices:
            super().waitForDevice(label)
            return
        self._wait_idle(label, time.perf_counter() + self.getTimeoutMs() / 1000)

    def waitForDeviceType(self, devType: int) -> None:
        # the C++ devices, as CMMCore waits for them; then the Python ones
        CMMCorePlus.waitForDeviceType(self, devType)
        deadline = time.perf_counter() + self.getTimeoutMs() / 1000
        for label in self._pydevices.get_labels_of_type(devType):
            self._wait_idle(label, deadline)

    def _wait_idle(self, label: str, deadline: float) -> None:
        """Return when Python device ``label`` is not busy; TimeoutError
        after ``deadline`` (perf_counter s), naming the device."""
        device = self._pydevices[label]
        left = getattr(device, "seconds_until_idle", None)
        while True:
            with device:
                if not device.busy():
                    return
                wait = _seconds(left) if left is not None else POLL_S
            now = time.perf_counter()
            if now >= deadline:
                raise TimeoutError(
                    f"Wait for device {label!r} timed out after "
                    f"{self.getTimeoutMs():g} ms"
                )
            time.sleep(min(max(wait, POLL_S), MAX_SLEEP_S, deadline - now))

    def setShutterOpen(self, *args: Any) -> None:
        """Open or close a shutter; with one argument, the current shutter.

        pymmcore-plus resolves the current shutter through the C++ core, which
        does not know a Python shutter, so its ``propertyChanged`` named the
        device ``""``; pymmcore-widgets' preset table then asks the core for
        device ``""`` from a Qt slot, which aborts a Qt application."""
        if len(args) == 1:
            args = (self.getShutterDevice(), args[0])
        super().setShutterOpen(*args)

    def setProperty(
        self, label: str, propName: str, propValue: bool | float | int | str
    ) -> None:
        setter = _CORE_ROLES.get(propName) if label == "Core" else None
        if setter is not None and self.isPyDevice(str(propValue)):
            getattr(self, setter)(str(propValue))
            self.events.propertyChanged.emit(label, propName, str(propValue))
            return
        super().setProperty(label, propName, propValue)
        if self.isPyDevice(label):
            value = self.getPropertyFromCache(label, propName)
            self.events.propertyChanged.emit(label, propName, str(value))
