"""Reactions: policies that turn frame results into actions."""

from smartscope.reactions.adaptive_exposure import AdaptiveExposure
from smartscope.reactions.autofocus import KeepFocus
from smartscope.reactions.base import (
    REGISTRY,
    Reaction,
    ReactionParams,
    RunView,
    create_reaction,
    reaction_class,
    register,
)
from smartscope.reactions.center_on import CenterOn
from smartscope.reactions.dose_budget import DoseBudget
from smartscope.reactions.event_rate import EventRate
from smartscope.reactions.scan_then_zoom import ScanThenZoom

__all__ = [
    "REGISTRY",
    "AdaptiveExposure",
    "CenterOn",
    "DoseBudget",
    "EventRate",
    "KeepFocus",
    "Reaction",
    "ReactionParams",
    "RunView",
    "ScanThenZoom",
    "create_reaction",
    "reaction_class",
    "register",
]
