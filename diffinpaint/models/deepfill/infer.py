"""DeepFill v2 inference at the trained size (models/trained.py resizes in and out and loads the checkpoint).

    diffinpaint run --model deepfill --checkpoint runs/deepfill --data DATA --out RUN

The generator input is built exactly as in training (nets.generator_input); the prediction is the refined stage-2
output mapped to [0, 1] (the runner pastes it into the holes). The network has no randomness and no batch
statistics, so the per-image seeds are not used and each image's fill is independent of its batch.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from ..predictor import Predictor
from .nets import generator_input


class DeepFillPredictor(Predictor):
    networks = ("generator",)

    def predict(self, images: torch.Tensor, masks: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        netG = self.nets["generator"]
        dtype = next(netG.parameters()).dtype
        masked, mask = generator_input(images.to(dtype), masks.to(dtype))
        _, x2 = netG(masked, mask)
        return ((x2.float() + 1.0) / 2.0).clamp(0.0, 1.0)

    def resolved_outputs(self) -> dict[str, Any]:
        return {"cnum": self.config.get("cnum", 48), "attention": self.config.get("attention", "contextual")}


Predictor = DeepFillPredictor
