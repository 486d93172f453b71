"""The Reaction interface and registry.

A reaction is a policy: it gets each ``FrameResult`` and a read-only view of
the run, and returns ``Action`` values. It never touches hardware; the
controller applies actions through the safety limits.

Built-in reactions register themselves with :func:`register`. Third-party
reactions are installed on purpose, as Python packages exposing an entry point
in the ``smartscope.reactions`` group (name → Reaction subclass); protocol
files only name them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict

from smartscope.actions import Action
from smartscope.analysis.result import ALL_IMAGES, FrameResult
from smartscope.limits import HardwareState

__all__ = [
    "REGISTRY",
    "Reaction",
    "ReactionParams",
    "RunView",
    "create_reaction",
    "register",
]


class ReactionParams(BaseModel):
    """Base of every reaction's parameters: frozen, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass(frozen=True)
class RunView:
    """What a reaction may know about the run (read-only)."""

    state: HardwareState
    #: position name -> (x_um, y_um, z_um or None)
    positions: dict[str, tuple[float, float, float | None]]
    #: field of view at the sample (width_um, height_um)
    fov_um: tuple[float, float]
    frames_acquired: int
    t_s: float
    #: position name -> its own interval, s (positions that have one; the
    #: others follow ``state.interval_s``)
    position_intervals: Mapping[str, float] = field(default_factory=dict)


P = TypeVar("P", bound=ReactionParams)


class Reaction(ABC):
    """Base class: subclasses set ``name`` and ``Params`` and implement ``react``."""

    name: ClassVar[str]
    Params: ClassVar[type[ReactionParams]] = ReactionParams
    #: the images of a :class:`FrameResult` it reads (``"labels"``,
    #: ``"denoised"``). A run keeps in its results only what it saves or
    #: some reaction reads: on a GPU an image not kept is never copied back
    #: (16 MB a 2048² frame). Both by default, so a reaction that does not
    #: say gets them; one that reads neither says ``frozenset()``.
    reads_images: ClassVar[frozenset[str]] = ALL_IMAGES

    def __init__(self, params: ReactionParams | None = None, **kwargs: Any) -> None:
        if params is None:
            params = self.Params(**kwargs)
        elif kwargs:
            raise TypeError("give either params or keyword arguments, not both")
        self.params = params

    @abstractmethod
    def react(self, result: FrameResult, run: RunView) -> Sequence[Action]:
        """Return the actions this frame calls for (may be empty)."""

    def reset(self) -> None:  # noqa: B027 - optional hook
        """Forget any state (called when a run starts)."""


REGISTRY: dict[str, type[Reaction]] = {}

R = TypeVar("R", bound=type[Reaction])


def register(cls: R) -> R:
    """Class decorator: make a reaction available to protocols by its ``name``."""
    REGISTRY[cls.name] = cls
    return cls


def _load_entry_points() -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group="smartscope.reactions"):
        if ep.name not in REGISTRY:
            cls = ep.load()
            if isinstance(cls, type) and issubclass(cls, Reaction):
                REGISTRY[ep.name] = cls


def reaction_class(name: str) -> type[Reaction]:
    """The reaction class registered under ``name`` (KeyError with choices)."""
    if name not in REGISTRY:
        import smartscope.reactions  # noqa: F401 - registers the built-ins

        _load_entry_points()
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown reaction {name!r}; available: {sorted(REGISTRY)}"
        ) from None


def create_reaction(name: str, params: dict[str, Any] | None = None) -> Reaction:
    """Build a reaction from its registered name and a parameter dict."""
    cls = reaction_class(name)
    return cls(cls.Params.model_validate(params or {}))
