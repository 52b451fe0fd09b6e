"""Conditional TransGAN inference at the trained size (models/trained.py resizes in and out and loads the EMA
generator, generator_ema, into build_network(config, "generator")).

    diffinpaint run --model transgan --checkpoint runs/transgan --data DATA --out RUN

One forward pass: the generator input is built exactly as in training ([image·(1−m) in [−1, 1], m]); the output,
which has no tanh (as the reference), is clamped to [−1, 1] and mapped to [0, 1]. No randomness (the per-image seeds
are not used) and nothing mixes images (LayerNorm and attention act within an image), so each result is
deterministic and, mathematically, independent of its batch. Numerically, GPU matrix kernels chosen for another
batch size differ in the last bits, and 11 transformer blocks grow that to 1.7e-4 (measured on an H100); so the
generator always runs on CHUNK images (the last chunk padded with blank ones), and an image's result is bitwise
the same in any batch.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from ..predictor import Predictor
from .nets import generator_input


CHUNK = 16  # images per generator call: a fixed shape, see above


class TransGANPredictor(Predictor):
    networks = ("generator_ema",)

    def predict(self, images: torch.Tensor, masks: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        generator = self.nets["generator_ema"]
        dtype = next(generator.parameters()).dtype
        inputs = generator_input(images.float(), masks.float()).to(dtype)
        outputs = []
        for first in range(0, inputs.shape[0], CHUNK):
            chunk = inputs[first:first + CHUNK]
            padded = torch.cat([chunk, chunk.new_zeros(CHUNK - chunk.shape[0], *chunk.shape[1:])])
            outputs.append(generator(padded)[:chunk.shape[0]].float())
        return (torch.cat(outputs).clamp(-1.0, 1.0) + 1.0) / 2.0

    def resolved_outputs(self) -> dict[str, Any]:
        return {"weights": "generator_ema"}
