"""Pix2Pix inpainting with a generator trained by `diffinpaint train pix2pix`.

    diffinpaint run --model pix2pix --checkpoint runs/p2p --data DATA --out RUN
    diffinpaint eval --models pix2pix,telea --pix2pix-checkpoint runs/p2p --data DATA --out EVAL

The checkpoint is the training --out folder (its newest checkpoint is used) or one checkpoint folder
(runs/p2p/checkpoints/step_002000). Only safetensors and JSON are read.

Per batch: 1. resize image and mask to the trained size (bicubic with antialiasing; a resized pixel touching a
hole is a hole); 2. build the generator input exactly as in training (holes set to mid-grey, + mask channel);
3. run the generator in eval mode; 4. resize the prediction back to the input size (bicubic, antialiased) and map
it to [0, 1]. The runner composites, so known pixels are untouched.

Eval mode, unlike the paper: the paper keeps dropout active at test time (its only noise source) and uses batch
statistics. Here dropout is off and batch norm uses the running statistics, so an image's fill is deterministic
and does not depend on the other images in its batch; the per-image seeds are therefore not used.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .base import InpaintModel


@dataclass
class Pix2PixSettings:
    # training --out folder (its newest checkpoint) or one OUT/checkpoints/step_N folder; required
    checkpoint: str | None = None


class Pix2PixModel(InpaintModel):
    name = "pix2pix"
    Settings = Pix2PixSettings

    def __init__(self, settings: Pix2PixSettings | None = None, device: str = "cpu"):
        from ..train import load_generator

        self.settings = settings or Pix2PixSettings()
        if not self.settings.checkpoint:
            raise ValueError("pix2pix needs a trained generator: pass --pix2pix-checkpoint DIR, the --out folder of "
                             "`diffinpaint train pix2pix`")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.generator, self.info = load_generator(self.settings.checkpoint, self.device)
        self.size = self.info["config"].size

    @staticmethod
    def add_arguments(parser) -> None:
        parser.add_argument("--pix2pix-checkpoint", "--checkpoint", dest="checkpoint", default=None,
                            help="pix2pix: the --out folder of `diffinpaint train pix2pix` (newest checkpoint used) "
                                 "or one of its checkpoints/step_N folders")

    @torch.no_grad()
    def inpaint(self, images: torch.Tensor, masks: torch.Tensor, *, seeds: Sequence[int],
                labels: Sequence[str | None]) -> torch.Tensor:
        from ..imageops import resize_images, resize_masks
        from ..pix2pix_nets import generator_input

        # 1. Check inputs
        if images.ndim != 4 or images.shape[1] != 3 or masks.shape != (images.shape[0], 1, *images.shape[2:]):
            raise ValueError(f"pix2pix expects images N×3×H×W and masks N×1×H×W, got {tuple(images.shape)} and "
                             f"{tuple(masks.shape)}")
        height, width = images.shape[-2:]
        trained = (self.size, self.size)
        # 2. Resize to the trained size and build the generator input as in training
        x = images.to(self.device, torch.float32)
        m = masks.to(self.device, torch.float32)
        x, m = resize_images(x, trained), resize_masks(m, trained)
        # 3. Generator (eval mode: deterministic)
        fake = self.generator(generator_input(x, m)).float()
        # 4. Back to [0, 1] at the input size
        out = resize_images((fake + 1.0) / 2.0, (height, width))
        return out.clamp(0.0, 1.0).to(images.device)

    def output_settings(self) -> dict[str, Any]:
        return {"checkpoint": self.info["checkpoint"], "step": self.info["step"],
                "generator_sha256": self.info["generator_sha256"], "size": self.size,
                "ngf": self.info["config"].ngf, "mode": "eval"}
