"""Model registry: the one place a model name (as in `--models sd,pix2pix`) maps to its class.

Each model module defines a class with a `Settings` dataclass and a constructor
`Model(settings, device)`. Imports are lazy so `diffinpaint eval --models telea` never imports diffusers.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Mapping

from .base import InpaintModel

MODELS: dict[str, str] = {
    "telea": "diffinpaint.models.classical:TeleaModel",
    "ns": "diffinpaint.models.classical:NavierStokesModel",
    "sd": "diffinpaint.models.sd:StableDiffusionModel",
    "pix2pix": "diffinpaint.models.pix2pix:Pix2PixModel",
}


def model_class(name: str) -> type[InpaintModel]:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    module_name, class_name = MODELS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def settings_for(name: str, options: Mapping[str, Any]):
    """Build the model's Settings from a flat option mapping (the CLI's namespace); unknown keys are ignored,
    None means 'keep the default'."""
    cls = model_class(name).Settings
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in options.items() if k in fields and v is not None})


def build_model(name: str, options: Mapping[str, Any], device: str = "cpu") -> InpaintModel:
    return model_class(name)(settings_for(name, options), device=device)


__all__ = ["InpaintModel", "MODELS", "model_class", "settings_for", "build_model"]
