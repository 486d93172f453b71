"""Getting a ready Micro-Manager core: the one entry point to hardware.

``load_core(None)`` loads the simulated demo microscope
(``simulators/demo.cfg``); a path loads that Micro-Manager configuration, with
Python devices (``#py`` lines) and C++ adapters alike. The file is checked line
by line before any device is loaded, so a malformed file is refused with its
path, line number and what was expected, and no hardware moves.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import re
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from smartscope.errors import ConfigError

if TYPE_CHECKING:
    from pymmcore_plus.experimental.unicore import UniMMCore

    from smartscope.sim.clock import TimeMode

__all__ = [
    "default_config",
    "load_core",
    "open_core",
    "release_core",
    "validate_config",
]

_PY_PREFIX = "#py "
# C0 controls but tab and CR (LF ends a line), DEL and C1: never part of a config
_CONTROL = re.compile("[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f-\x9f]")

# Micro-Manager config commands and how many comma-separated arguments each takes
_ARITY: dict[str, tuple[int, ...]] = {
    "Device": (3,),
    "pyDevice": (3,),
    "Property": (2, 3),
    "Delay": (2,),
    "FocusDirection": (2,),
    "Label": (3,),
    "Config": (4, 5),
    "ConfigGroup": (1, 4, 5),
    "ConfigPixelSize": (4,),
    "PixelSize_um": (2,),
    "PixelSizeAffine": (7,),
    "PixelSize_dxdz": (2,),
    "PixelSize_dydz": (2,),
    "PixelSize_OptimalZUm": (2,),
    "Parent": (2,),
    "Equipment": (),
    "ImageSynchro": (),
    "Configuration": (),
}


# Cores we created. A config-loaded UniMMCore destroyed during interpreter
# shutdown can abort the process ("FATAL: exception not rethrown") when its C++
# side calls back into a half-finalised Python callback; detaching the callback
# at exit prevents that.
_LIVE_CORES: weakref.WeakSet[UniMMCore] = weakref.WeakSet()


def _detach_callback(core: UniMMCore) -> None:
    from pymmcore_plus import CMMCorePlus

    with contextlib.suppress(Exception):
        super(CMMCorePlus, core).registerCallback(None)  # type: ignore[misc]


@atexit.register
def _detach_all_at_exit() -> None:
    for core in list(_LIVE_CORES):
        _detach_callback(core)


def default_config() -> Path:
    """Path of the simulated demo microscope's configuration."""
    from smartscope._data import data_dir

    return data_dir("simulators") / "demo.cfg"


def validate_config(path: str | Path) -> list[tuple[int, list[str]]]:
    """Check a Micro-Manager configuration file without loading anything.

    Returns the commands as ``(line_number, fields)``. Raises
    :class:`~smartscope.errors.ConfigError` naming the file and line.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError("configuration file not found", path=path)
    if not path.is_file():
        raise ConfigError(
            "expected a Micro-Manager .cfg file, got a directory", path=path
        )
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"not a text file ({e.reason} at byte {e.start}: save it as UTF-8 "
            "or ASCII)",
            path=path,
            line=raw.count(b"\n", 0, e.start) + 1,
        ) from e
    commands: list[tuple[int, list[str]]] = []
    for n, raw in enumerate(text.split("\n"), start=1):
        bad = _CONTROL.search(raw)
        if bad is not None:
            raise ConfigError(
                f"control character U+{ord(bad.group()):04X} at column "
                f"{bad.start() + 1}; a configuration is plain text",
                path=path,
                line=n,
            )
        line = raw.rstrip("\r").strip()
        if line.startswith(_PY_PREFIX):
            line = line[len(_PY_PREFIX) :].strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(",")
        cmd = fields[0]
        if cmd not in _ARITY:
            raise ConfigError(
                f"unknown command {cmd!r} in {raw.strip()!r}; expected one of "
                f"{', '.join(sorted(c for c, a in _ARITY.items() if a))}",
                path=path,
                line=n,
            )
        arity = _ARITY[cmd]
        if not arity:
            raise ConfigError(
                f"command {cmd!r} is obsolete and no longer supported",
                path=path,
                line=n,
            )
        nargs = len(fields) - 1
        if nargs not in arity:
            want = " or ".join(str(a) for a in arity)
            raise ConfigError(
                f"{cmd!r} takes {want} comma-separated values after the command, "
                f"got {nargs}: {raw.strip()!r}",
                path=path,
                line=n,
            )
        if any(not f.strip() for f in fields[1:3]):
            raise ConfigError(
                f"empty device or property name in {raw.strip()!r}", path=path, line=n
            )
        if cmd == "pyDevice" and not re.fullmatch(r"[A-Za-z_][\w.]*", fields[2]):
            raise ConfigError(
                f"pyDevice module must be an importable dotted name, got {fields[2]!r}",
                path=path,
                line=n,
            )
        commands.append((n, fields))
    if not commands:
        raise ConfigError("no configuration commands found (empty file?)", path=path)
    _check_device_labels(commands, path)
    return commands


def _check_device_labels(commands: list[tuple[int, list[str]]], path: Path) -> None:
    """Every device a line names is defined by a ``Device``/``pyDevice`` line,
    once. Micro-Manager itself accepts a preset naming a missing device and
    fails only when the preset is applied, mid-run."""
    defined: dict[str, int] = {}
    for n, fields in commands:
        if fields[0] in ("Device", "pyDevice"):
            label = fields[1]
            if label in defined or label == "Core":
                first = f" (first at line {defined[label]})" if label in defined else ""
                raise ConfigError(
                    f"device label {label!r} is defined twice{first}; labels "
                    "must be unique",
                    path=path,
                    line=n,
                )
            defined[label] = n
    for n, fields in commands:
        for what, label in _device_references(fields):
            if label and label != "Core" and label not in defined:
                raise ConfigError(
                    f"{what} names device {label!r}, which no Device or pyDevice "
                    f"line defines (devices: {', '.join(defined) or 'none'})",
                    path=path,
                    line=n,
                )


# Core properties whose value is a device label
_CORE_ROLES = frozenset(
    {"Camera", "Shutter", "Focus", "XYStage", "AutoFocus", "SLM", "Galvo"}
)


def _device_references(fields: list[str]) -> list[tuple[str, str]]:
    """(what, device label) for every device a config command refers to."""
    cmd, args = fields[0], [f.strip() for f in fields[1:]]
    if cmd == "Property":
        refs = [("a property setting", args[0])]
        if args[0] == "Core" and len(args) == 3 and args[1] in _CORE_ROLES:
            refs.append((f"the Core {args[1]} role", args[2]))
        return refs
    if cmd in ("Label", "Delay", "FocusDirection"):
        return [(f"a {cmd} line", args[0])]
    if cmd == "Parent":
        return [("a Parent line", args[0]), ("a Parent line's hub", args[1])]
    if cmd == "ConfigGroup" and len(args) >= 4:
        refs = [(f"preset {args[0]}/{args[1]}", args[2])]
        if args[2] == "Core" and len(args) == 5 and args[3] in _CORE_ROLES:
            refs.append((f"preset {args[0]}/{args[1]}", args[4]))
        return refs
    if cmd == "Config":
        return [(f"preset {args[0]}", args[1])]
    if cmd == "ConfigPixelSize":
        return [(f"pixel size preset {args[0]}", args[1])]
    return []


def _new_core() -> UniMMCore:
    from smartscope.core import SmartscopeCore

    # Silence the search for a Micro-Manager installation (it logs an error
    # when there is none): a pure-Python configuration does not need one, and
    # for C++ adapters load_core says what is missing in its own error.
    log = logging.getLogger("pymmcore-plus")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        return SmartscopeCore()
    finally:
        log.setLevel(level)


def load_core(
    config: str | Path | None = None,
    *,
    time_mode: TimeMode | None = None,
    seed: int | None = None,
    scene: str | None = None,
) -> UniMMCore:
    """Return a ready pymmcore-plus core loaded from a Micro-Manager configuration.

    Parameters
    ----------
    config : str | Path | None
        A ``.cfg`` file; ``None`` loads the simulated demo microscope.
    time_mode : "virtual" | "realtime" | None
        For a simulator: override the configuration's time mode.
    seed : int | None
        For a simulator: override the configuration's sample seed.
    scene : str | None
        For a simulator: override the configuration's scene preset (a name
        from ``simulators/scenes/`` or a YAML path).
    """
    path = Path(config) if config is not None else default_config()
    commands = validate_config(path)
    cxx_devices = [(n, f) for n, f in commands if f[0] == "Device"]
    core = _new_core()
    _LIVE_CORES.add(core)
    if cxx_devices:
        known = set(core.getDeviceAdapterNames())
        for n, fields in cxx_devices:
            if fields[2] not in known:
                raise ConfigError(
                    f"device {fields[1]!r} needs the Micro-Manager adapter "
                    f"{fields[2]!r}, which is not installed (adapters found: "
                    f"{len(known)}); install Micro-Manager (`mmcore install`) or use "
                    "the simulator (load_core() with no config)",
                    path=path,
                    line=n,
                )
    try:
        core.loadSystemConfiguration(str(path))
    except Exception as e:
        msg = str(e)
        m = re.search(r"at line (\d+)", msg)
        line = int(m.group(1)) if m else None
        detail = msg.split("\n", 1)[1] if "\n" in msg else msg
        cause = e.__cause__
        if cause is not None and str(cause) and str(cause) not in detail:
            detail += f" ({cause})"
        with contextlib.suppress(Exception):
            release_core(core)
        raise ConfigError(
            f"could not load configuration: {detail}", path=path, line=line
        ) from e
    from smartscope.sim.simulator import get_simulator, has_simulator

    if has_simulator(core):
        sim = get_simulator(core)
        if seed is not None or scene is not None:
            sim.reset(seed=seed, preset=scene)
        if time_mode is not None:
            sim.time_mode = time_mode
    return core


def release_core(core: UniMMCore) -> None:
    """Stop any acquisition, unload every device and detach the core's C++
    callback. The core emits no more device events afterwards; drop it."""
    with contextlib.suppress(Exception):
        if core.mda.is_running():
            core.mda.cancel()
            import time

            for _ in range(200):
                if not core.mda.is_running():
                    break
                time.sleep(0.01)
    with contextlib.suppress(Exception):
        if core.isSequenceRunning():
            core.stopSequenceAcquisition()
    with contextlib.suppress(Exception):
        core.unloadAllDevices()
    _detach_callback(core)


@contextlib.contextmanager
def open_core(
    config: str | Path | None = None,
    *,
    time_mode: TimeMode | None = None,
    seed: int | None = None,
) -> Iterator[UniMMCore]:
    """``with open_core() as core:`` — load a core and release it on exit."""
    core = load_core(config, time_mode=time_mode, seed=seed)
    try:
        yield core
    finally:
        release_core(core)
