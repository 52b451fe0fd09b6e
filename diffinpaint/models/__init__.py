"""Model registry: the one place a model name (as in `--models sd,pix2pix`) maps to its code.

MODELS: models used as they are (classical, the floors, Stable Diffusion): each a class with a `Settings` dataclass
and a constructor `Model(settings, device)`. TRAINED: models the toolkit trains: name -> the training class in the
model's package (step.py); their inference class is models/trained.py's, one for all. Imports are lazy, so
`diffinpaint eval --models telea` never imports diffusers, and inference never imports training code.

Inference options are declared once, as fields of each model's Settings (util/options.py). Their flags live in one
parser for `run` and `eval` (so `--help` shows every model's, grouped), each under a dest of its own model; `flag
owners` below turns a flag of another model into a one-line refusal that names its owner and the equivalent flag.
"""
from __future__ import annotations

import importlib
from typing import Any, Mapping

from ..util import options as opt
from ..util.errors import UserError

MODELS: dict[str, str] = {
    "telea": "diffinpaint.models.classical:TeleaModel",
    "ns": "diffinpaint.models.classical:NavierStokesModel",
    "grey": "diffinpaint.models.classical:GreyFloor",
    "ring_mean": "diffinpaint.models.classical:RingMeanFloor",
    "exemplar": "diffinpaint.models.patch:ExemplarModel",
    "patchmatch": "diffinpaint.models.patch:PatchMatchModel",
    "sd": "diffinpaint.models.sd.pipeline:StableDiffusionModel",
}
TRAINED: dict[str, str] = {
    "pix2pix": "diffinpaint.models.pix2pix.step:Pix2PixTraining",
    "deepfill": "diffinpaint.models.deepfill.step:DeepFillTraining",
    "dmfn": "diffinpaint.models.dmfn.step:DMFNTraining",
    "dcgan": "diffinpaint.models.dcgan.step:DCGANTraining",
    "transgan": "diffinpaint.models.transgan.step:TransGANTraining",
    "repaint": "diffinpaint.models.repaint.step:RePaintTraining",
    "lama": "diffinpaint.models.lama.step:LaMaTraining",
}


def all_names() -> list[str]:
    """Every registered model (read at call time: tests register their own models)."""
    return [*MODELS, *TRAINED]

# one line per trained model for `diffinpaint train --help` (without importing its training code)
TRAINED_HELP = {
    "pix2pix": "Pix2Pix (Isola et al. 2017): U-Net + PatchGAN, GAN + L1",
    "deepfill": "DeepFill v2 (Yu et al. 2019): gated convolutions, contextual attention, SN-PatchGAN",
    "dmfn": "DMFN (Hui et al. 2020): dense multi-scale fusion blocks, RaGAN, feature and alignment losses",
    "dcgan": "DCGAN (Radford et al. 2016) + semantic inpainting by latent search (Yeh et al. 2017)",
    "transgan": "conditional TransGAN (Jiang et al. 2021): transformer generator and critic, WGAN-GP + L1",
    "repaint": "DDPM (Ho et al. 2020) sampled with RePaint (Lugmayr et al. 2022)",
    "lama": "LaMa (Suvorov et al. 2022): Fourier-convolution ResNet, R1 non-saturating GAN, HRF perceptual loss; "
            "also runs published weights (--lama-weights)",
}


def _import(target: str):
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def model_class(name: str):
    if name in TRAINED:
        from .trained import trained_model_class

        return trained_model_class(name)
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; choose from {', '.join(all_names())}")
    return _import(MODELS[name])


def trainable_class(name: str):
    """The training side of a trained model (its step.py): for `train` only."""
    if name not in TRAINED:
        raise UserError(f"{name!r} is not trained by the toolkit; trainable models: {', '.join(TRAINED)}")
    return _import(TRAINED[name])


def settings_for(name: str, values: Mapping[str, Any] | None = None, *, where: str = ""):
    """The model's Settings from option values (field name -> value); unknown names and bad values refused."""
    return opt.build(model_class(name).Settings, dict(values or {}), where=where)


def build_model(name: str, values: Mapping[str, Any] | None = None, device: str = "cpu"):
    return model_class(name)(settings_for(name, values), device=device)


# ------------------------------------------------------------------------------------------------ flags


def dest_prefix(name: str) -> str:
    """Where a model's options land in the argparse namespace: `opt.sd.steps`, `opt.repaint.repaint_steps`."""
    return f"opt.{name}."


def settings_owners(names: list[str]) -> dict[type, list[str]]:
    """Each distinct Settings class and the models that use it (telea and ns share one)."""
    owners: dict[type, list[str]] = {}
    for name in names:
        owners.setdefault(model_class(name).Settings, []).append(name)
    return owners


def add_model_flags(parser, names: list[str] | None = None) -> None:
    """Every model's inference flags, one argument group per model (shared Settings: one group, one flag)."""
    for cls, owners in settings_owners(names or all_names()).items():
        if opt.declared(cls):
            group = parser.add_argument_group(f"{'/'.join(owners)} options")
            opt.add_flags(group, cls, dest_prefix(owners[0]))


def _core(flag: str, owner: str) -> str:
    """--repaint-steps -> steps, --steps -> steps, --dcgan-iterations -> iterations: the word a flag is about."""
    word = flag.lstrip("-")
    for prefix in (owner.replace("_", "-") + "-", "no-"):
        word = word.removeprefix(prefix)
    return word


def given_options(namespace, chosen: list[str]) -> dict[str, dict[str, Any]]:
    """model -> the option values the user typed for it. A flag of a model that is not chosen is refused, naming
    the model it belongs to and the flag that does the same for the chosen model, when there is one."""
    owners = settings_owners(all_names())
    per_model = {name: {} for name in chosen}
    for cls, names in owners.items():
        typed = opt.given(namespace, dest_prefix(names[0]))
        if not typed:
            continue
        users = [n for n in names if n in chosen]
        if users:
            for n in users:
                per_model[n] = typed
            continue
        flags = {o.name: o.flag for o in opt.declared(cls)}
        flag = flags[next(iter(typed))]
        hints = []
        for target in chosen:
            same = [o.flag for o in opt.declared(model_class(target).Settings)
                    if _core(o.flag, target) == _core(flag, names[0])]
            if same:
                hints.append(f"for {target} use {same[0]}")
        hint = "; ".join(hints) or f"{'/'.join(chosen)} {'has' if len(chosen) == 1 else 'have'} no such option"
        raise UserError(f"{flag} is {'/'.join(names)}'s; {hint} (see `diffinpaint run --help`)")
    return per_model


__all__ = ["MODELS", "TRAINED", "all_names", "model_class", "trainable_class", "settings_for", "build_model",
           "add_model_flags", "given_options", "dest_prefix"]
