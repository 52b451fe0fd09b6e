"""Test-only models, registered into the registry by the test that needs them (never by the product)."""
from __future__ import annotations

import time

import torch

from diffinpaint.models.classical import TeleaModel


class SlowTelea(TeleaModel):
    """Telea with a pause per image, so a test can kill a run in the middle of it."""

    name = "slow_telea"

    def inpaint(self, images, masks, *, seeds, labels):
        time.sleep(0.15 * len(images))
        return super().inpaint(images, masks, seeds=seeds, labels=labels)


class SeededNoise(TeleaModel):
    """Fills holes with noise drawn from each image's seed: exposes any seed that depends on batch position."""

    name = "seeded_noise"
    deterministic = False  # unlike the Telea it inherits from, its fill comes from the seed

    def inpaint(self, images, masks, *, seeds, labels):
        out = []
        for image, seed in zip(images, seeds):
            generator = torch.Generator().manual_seed(seed)
            out.append(torch.rand(image.shape, generator=generator))
        return torch.stack(out)


class OutOfMemoryAbove2(SeededNoise):
    """Pretends the GPU runs out of memory for batches larger than 2."""

    name = "oom_above_2"
    calls: list[int] = []

    def inpaint(self, images, masks, *, seeds, labels):
        OutOfMemoryAbove2.calls.append(len(images))
        if len(images) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return super().inpaint(images, masks, seeds=seeds, labels=labels)


def register() -> None:
    from diffinpaint.models import MODELS

    MODELS["slow_telea"] = "slow_models:SlowTelea"
    MODELS["seeded_noise"] = "slow_models:SeededNoise"
    MODELS["oom_above_2"] = "slow_models:OutOfMemoryAbove2"


if __name__ == "__main__":  # `python tests/slow_models.py run --model slow_telea ...` = the CLI with these models
    import sys

    register()
    from diffinpaint.cli import main

    sys.exit(main(sys.argv[1:]))
