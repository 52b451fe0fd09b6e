"""Pix2Pix inference at the trained size (models/trained.py resizes in and out and loads the checkpoint).

    diffinpaint run --model pix2pix --checkpoint runs/p2p --data DATA --out RUN
    diffinpaint eval --models pix2pix,telea --pix2pix-checkpoint runs/p2p --data DATA --out EVAL

The generator input is built exactly as in training (holes set to mid-grey, + mask channel).

Normalisation (--pix2pix-norm):
  running  (default) batch norm uses the running statistics gathered in training (PyTorch's eval mode);
  instance each image is normalised with its own statistics, as the reference's test script does (it runs the
           networks in train mode at batch size 1, which is instance normalisation). Images go through one at a
           time, so a fill never depends on the other images of its batch, and the running statistics are not
           touched.
Dropout is off in both: the paper keeps it at test time as its only noise source; here a fill is deterministic,
so the per-image seeds are not used.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from ...util.options import option
from ..predictor import Predictor
from .nets import generator_input


@dataclass
class Pix2PixSettings:
    pix2pix_norm: str = option("running", "pix2pix: batch-norm statistics at inference: running (training's) or "
                               "instance (each image's own, as the reference's test script)",
                               choices=("running", "instance"))


@contextlib.contextmanager
def per_image_batch_norm(net: nn.Module):
    """Batch norm from the current batch's statistics, running buffers left as they are (restored afterwards)."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.training, m.track_running_stats) for m in norms]
    for m in norms:
        m.train(True)
        m.track_running_stats = False  # train mode without buffers: normalise by the batch, update nothing
    try:
        yield
    finally:
        for m, (training, track) in zip(norms, saved):
            m.train(training)
            m.track_running_stats = track


class Pix2PixPredictor(Predictor):
    networks = ("generator",)
    Settings = Pix2PixSettings

    def predict(self, images: torch.Tensor, masks: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        generator = self.nets["generator"]
        inputs = generator_input(images, masks)
        if self.settings.pix2pix_norm == "instance":
            with per_image_batch_norm(generator):
                fake = torch.cat([generator(x[None]) for x in inputs]).float()
        else:
            fake = generator(inputs).float()
        return ((fake + 1.0) / 2.0).clamp(0.0, 1.0)

    def resolved_outputs(self) -> dict[str, Any]:
        return {"ngf": self.config["ngf"], "mode": "eval"}
