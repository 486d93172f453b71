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

__all__ = [
    "REGISTRY",
    "AdaptiveExposure",
    "CenterOn",
    "KeepFocus",
    "Reaction",
    "ReactionParams",
    "RunView",
    "create_reaction",
    "reaction_class",
    "register",
]
