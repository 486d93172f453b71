"""The core smartscope loads: pymmcore-plus's ``UniMMCore`` (C++ and Python
device adapters side by side), made to behave towards GUIs as a core of C++
adapters does."""

from __future__ import annotations

from typing import Any

from pymmcore_plus.experimental.unicore import UniMMCore

__all__ = ["SmartscopeCore"]

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
      default" button does.
    """

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
