"""Model registry: the one place a model name (as in `--models sd,pix2pix`) maps to its code.

MODELS: models used as they are (classical, Stable Diffusion): each a class with a `Settings` dataclass and a
constructor `Model(settings, device)`. TRAINED: models the toolkit trains: name -> the training class in the model's
package (step.py); their inference class is models/trained.py's, one for all. Imports are lazy, so
`diffinpaint eval --models telea` never imports diffusers, and inference never imports training code.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Mapping

from ..util.errors import UserError
from .base import InpaintModel

MODELS: dict[str, str] = {
    "telea": "diffinpaint.models.classical:TeleaModel",
    "ns": "diffinpaint.models.classical:NavierStokesModel",
    "sd": "diffinpaint.models.sd.pipeline:StableDiffusionModel",
}
TRAINED: dict[str, str] = {
    "pix2pix": "diffinpaint.models.pix2pix.step:Pix2PixTraining",
    "deepfill": "diffinpaint.models.deepfill.step:DeepFillTraining",
    "dmfn": "diffinpaint.models.dmfn.step:DMFNTraining",
    "dcgan": "diffinpaint.models.dcgan.step:DCGANTraining",
    "transgan": "diffinpaint.models.transgan.step:TransGANTraining",
    "repaint": "diffinpaint.models.repaint.step:RePaintTraining",
}


def _import(target: str):
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def model_class(name: str) -> type[InpaintModel]:
    if name in TRAINED:
        from .trained import trained_model_class

        return trained_model_class(name)
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; choose from {', '.join([*MODELS, *TRAINED])}")
    return _import(MODELS[name])


def trainable_class(name: str):
    """The training side of a trained model (imports diffinpaint.training: for `train` only)."""
    if name not in TRAINED:
        raise UserError(f"{name!r} is not trained by the toolkit; trainable models: {', '.join(TRAINED)}")
    return _import(TRAINED[name])


def settings_for(name: str, options: Mapping[str, Any]):
    """Build the model's Settings from a flat option mapping (the CLI's namespace); unknown keys are ignored,
    None means 'keep the default'."""
    cls = model_class(name).Settings
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in options.items() if k in fields and v is not None})


def build_model(name: str, options: Mapping[str, Any], device: str = "cpu") -> InpaintModel:
    return model_class(name)(settings_for(name, options), device=device)


__all__ = ["InpaintModel", "MODELS", "TRAINED", "model_class", "trainable_class", "settings_for",
           "build_model"]
