"""Builds a TrainableModel's networks and optimisers exactly as the trainer does (also used by tests)."""
from __future__ import annotations

import torch

from ..models.trainable import TrainableModel


def prepare_model(model: TrainableModel, accelerator) -> None:
    """Seeded init, optimisers, accelerate.prepare; sets model.nets, model.optimizers, model.accelerator."""
    torch.manual_seed(model.cfg.seed)  # same initial weights on every process and every run
    nets = model.build_networks()
    for net in nets.values():
        net.train()
    optimizers = model.build_optimizers(nets)
    names_n, names_o = list(nets), list(optimizers)
    prepared = accelerator.prepare(*nets.values(), *optimizers.values())
    if len(names_n) + len(names_o) == 1:
        prepared = (prepared,)
    model.nets = dict(zip(names_n, prepared[: len(names_n)]))
    model.optimizers = dict(zip(names_o, prepared[len(names_n):]))
    model.accelerator = accelerator
    model.step = 0


def make_model(model_cls: type[TrainableModel], cfg, opts=None) -> TrainableModel:
    """An instance with cfg/opts set (opts default to the model's Options())."""
    model = model_cls()
    model.cfg = cfg
    model.opts = opts if opts is not None else model_cls.Options()
    return model
