"""DMFN inference at the trained size (models/trained.py loads the checkpoint and resizes in and out).

    diffinpaint run --model dmfn --checkpoint runs/dmfn --data DATA --out RUN

The generator input is built exactly as in training ([x·(1−m) in [−1, 1], m]); the generator's output is returned
in [0, 1] over the whole image (the runner composites the known pixels back). The generator has only instance
norm (per image, no running statistics) and no noise, so the fill is deterministic, does not depend on the other
images in the batch, and does not use the per-image seeds.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from ..predictor import Predictor
from .nets import generator_input


class DMFNPredictor(Predictor):
    networks = ("generator",)

    def predict(self, images: torch.Tensor, masks: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        generator = self.nets["generator"]
        dtype = next(generator.parameters()).dtype
        generated = generator(generator_input(images.float(), masks.float()).to(dtype=dtype)).float()
        return ((generated + 1.0) / 2.0).clamp(0.0, 1.0)

    def resolved_outputs(self) -> dict[str, Any]:
        return {"dmfb": self.config.get("dmfb", "released"), "nf": self.config.get("nf", 64),
                "n_blocks": self.config.get("n_blocks", 8)}
