"""The controller: acquire, analyse every frame while acquiring, react, record.

Split as pymmcore-plus splits its runner and engine, one concept a module:

- :mod:`~smartscope.controller.plan`: what to acquire (useq events from the
  protocol's sequence, with what the run changed);
- :mod:`~smartscope.controller.engine`: pymmcore-plus's MDA engine plus the
  protocol's device-error policy;
- :mod:`~smartscope.controller.executor`: the only code that applies an
  action (meaning → limits → core or plan), owner of the device roles and the
  light-dose ledger;
- :mod:`~smartscope.controller.autofocus`: software autofocus sweeps, run as MDA
  events;
- :mod:`~smartscope.controller.records` / :mod:`~smartscope.controller.recorder`:
  the typed run records and the run folder, written from signals;
- :mod:`~smartscope.controller.controller`: :class:`Controller`, which wires
  them and is the only piece that knows the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Controller", "RunError"]

if TYPE_CHECKING:
    from smartscope.controller.controller import Controller, RunError


def __getattr__(name: str) -> Any:
    # lazy: the protocol module imports the plan's checks from this package
    if name in __all__:
        from smartscope.controller import controller

        return getattr(controller, name)
    raise AttributeError(f"module 'smartscope.controller' has no attribute {name!r}")
