"""SIGINT, SIGTERM and SIGHUP as a request to stop, never as a kill.

``kill``, ``systemd``, ``docker stop`` and job schedulers send SIGTERM; a
terminal sends SIGINT, and SIGHUP when it (or the SSH session) closes. Under :func:`stop_signals` both raise
:class:`Interrupted` (a ``KeyboardInterrupt`` naming the signal) in the main
thread, once: the run then stops after the current frame and finishes its run
folder. Any later signal is ignored (and said so on stderr) until the guard is
left, so that finishing, writing ``summary.json`` and printing the summary are
never cut short. Code that must not be interrupted even by the first signal
(finishing a run that ended by itself) runs under :func:`shielded`.

SIGKILL cannot be caught: ``smartscope recover RUN_DIR`` rebuilds the summary
of a killed run.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = [
    "Interrupted",
    "StopSignals",
    "deferred",
    "interrupt_behind",
    "settle",
    "shielded",
    "signal_name",
    "stop_signals",
]

#: the signals that ask a run to stop: a terminal's Ctrl-C (SIGINT), ``kill``
#: and service managers (SIGTERM), a closed terminal or SSH session (SIGHUP)
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGHUP")
    if hasattr(signal, name)
)


def exit_status(signal_name: str) -> int:
    """The exit status of a process ended by ``signal_name`` (128 + its number,
    as shells report it: SIGINT 130, SIGTERM 143, SIGHUP 129)."""
    try:
        return 128 + int(signal.Signals[signal_name])
    except KeyError:
        return 130


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived; ``signal_name`` says which."""

    def __init__(self, signal_name: str = "SIGINT") -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


def signal_name(exc: BaseException) -> str:
    """The signal behind a KeyboardInterrupt (a plain one is SIGINT)."""
    return exc.signal_name if isinstance(exc, Interrupted) else "SIGINT"


class StopSignals:
    """The installed handlers: the first signal raises, later ones are noted."""

    def __init__(self) -> None:
        #: the first signal received, by name
        self.received: str | None = None
        #: signals received and ignored after the first
        self.ignored: list[str] = []
        self._shield = 0
        self._defer = 0
        #: the first signal received inside a :func:`deferred` block
        self.pending: str | None = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.received is None and not self._shield and self._defer:
            self.received = self.pending = name  # raised when the block ends
            return
        if self.received is None and not self._shield:
            self.received = name
            raise _raising(name)
        self.ignored.append(name)
        first = self.received or name
        if self.received is None:
            self.received = name
        with contextlib.suppress(Exception):
            sys.stderr.write(
                f"smartscope: {name} received while finishing after {first}; "
                "ignored until the run folder and its summary are written "
                "(SIGKILL ends at once; then run `smartscope recover RUN_DIR`)\n"
            )
            sys.stderr.flush()


_active: StopSignals | None = None
#: the last Interrupted a handler raised (what :func:`interrupt_behind` looks for)
_raised: Interrupted | None = None


def _raising(name: str) -> Interrupted:
    global _raised
    _raised = Interrupted(name)
    return _raised


def interrupt_behind(exc: BaseException) -> KeyboardInterrupt | None:
    """The stop signal ``exc`` stands for: ``exc`` itself when it is a
    KeyboardInterrupt, or the :class:`Interrupted` a handler raised inside a
    library that turned it into an error of its own (pydantic-core, when the
    signal lands while it serialises, raises a serialization error that keeps
    only the interrupt's text: "... Interrupted: SIGINT"); None for an error
    that is not an interrupt."""
    if isinstance(exc, KeyboardInterrupt):
        return exc
    raised = _raised
    if raised is None:
        return None
    seen: BaseException | None = exc
    for _ in range(8):  # the interrupt among the error's causes
        if seen is None:
            break
        if seen is raised:
            return raised
        seen = seen.__cause__ or seen.__context__
    if f"{type(raised).__name__}: {raised}" in str(exc):
        return raised
    return None


@contextlib.contextmanager
def stop_signals() -> Iterator[StopSignals]:
    """Turn the STOP_SIGNALS into :class:`Interrupted` within the block (main
    thread only; elsewhere the block runs with the handlers as they are)."""
    global _active
    if _active is not None and threading.current_thread() is threading.main_thread():
        yield _active  # nested (the CLI's guard around a Controller.run)
        return
    guard = StopSignals()
    if threading.current_thread() is not threading.main_thread():
        yield guard
        return
    # a SIGHUP the process was told to ignore (nohup) stays ignored
    hangup = getattr(signal, "SIGHUP", None)
    signals = [
        s
        for s in STOP_SIGNALS
        if not (s == hangup and signal.getsignal(s) == signal.SIG_IGN)
    ]
    previous = {s: signal.getsignal(s) for s in signals}
    outer, _active = _active, guard
    for s in signals:
        signal.signal(s, guard._handle)
    try:
        yield guard
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _active = outer


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within the block a stop signal does not raise; the first one is raised
    as :class:`Interrupted` when the block ends. For code in C++ that calls
    back into Python (TorchScript compiling a model as it loads): an exception
    raised in there by a signal handler cannot unwind through the C++ frames
    and aborts the process. A no-op without the guard."""
    guard = _active
    if guard is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    guard._defer += 1
    try:
        yield
    finally:
        guard._defer -= 1
    if not guard._defer and guard.pending is not None and not guard._shield:
        name, guard.pending = guard.pending, None
        raise _raising(name)


def settle() -> None:
    """The command is over and has said so: from now on every signal is noted
    and ignored (until the guard is left), so that the exit status stays the
    one the run earned."""
    guard = _active
    if guard is not None:
        guard._shield += 1


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Within the block no signal raises (under :func:`stop_signals`); a signal
    that arrives is noted and ignored. A no-op without the guard."""
    guard = _active
    if guard is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    guard._shield += 1
    try:
        yield
    finally:
        guard._shield -= 1
