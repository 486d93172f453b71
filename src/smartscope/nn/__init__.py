"""Deep-learning models: U-Net, training, prediction, model cards, export.

Lazy: importing ``smartscope.nn`` does not import torch; the names below load
their module (and torch) on first use.

``load_model(name_or_path).predict(image, diameter_px=None)`` is the one
prediction API: shipped models are ``"denoise-care"``, ``"denoise-n2v"`` and
``"nuclei-seg"``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "DenoiseModel",
    "Model",
    "ModelCard",
    "ModelError",
    "Predictor",
    "SegmentModel",
    "TrainConfig",
    "UNet",
    "UNetConfig",
    "available_models",
    "export_model",
    "load_model",
    "train",
]

_WHERE = {
    "DenoiseModel": "smartscope.nn.model",
    "Model": "smartscope.nn.model",
    "SegmentModel": "smartscope.nn.model",
    "available_models": "smartscope.nn.model",
    "load_model": "smartscope.nn.model",
    "ModelCard": "smartscope.nn.card",
    "ModelError": "smartscope.nn.errors",
    "Predictor": "smartscope.nn.predictor",
    "TrainConfig": "smartscope.nn.train",
    "train": "smartscope.nn.train",
    "UNet": "smartscope.nn.unet",
    "UNetConfig": "smartscope.nn.unet",
    "export_model": "smartscope.nn.export",
}

if TYPE_CHECKING:
    from smartscope.nn.card import ModelCard
    from smartscope.nn.errors import ModelError
    from smartscope.nn.export import export_model
    from smartscope.nn.model import (
        DenoiseModel,
        Model,
        SegmentModel,
        available_models,
        load_model,
    )
    from smartscope.nn.predictor import Predictor
    from smartscope.nn.train import TrainConfig, train
    from smartscope.nn.unet import UNet, UNetConfig


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'smartscope.nn' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
