"""Pix2Pix inference at the trained size (models/trained.py resizes in and out and loads the checkpoint).

    diffinpaint run --model pix2pix --checkpoint runs/p2p --data DATA --out RUN
    diffinpaint eval --models pix2pix,telea --pix2pix-checkpoint runs/p2p --data DATA --out EVAL

The generator input is built exactly as in training (holes set to mid-grey, + mask channel).

Eval mode, unlike the paper: the paper keeps dropout active at test time (its only noise source) and uses batch
statistics. Here dropout is off and batch norm uses the running statistics, so an image's fill is deterministic
and does not depend on the other images in its batch; the per-image seeds are therefore not used.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from ..predictor import Predictor
from .nets import generator_input


class Pix2PixPredictor(Predictor):
    networks = ("generator",)

    def predict(self, images: torch.Tensor, masks: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        fake = self.nets["generator"](generator_input(images, masks)).float()
        return ((fake + 1.0) / 2.0).clamp(0.0, 1.0)

    def output_settings(self) -> dict[str, Any]:
        return {"ngf": self.config["ngf"], "mode": "eval"}
