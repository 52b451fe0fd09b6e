"""DeepFill v2 training as the one trainer runs it: the reference's step (JiahuiYu/generative_inpainting v2.0.0,
inpaint_model.py `build_graph_with_losses`, inpaint.yml, train.py).

x = the image in [-1, 1], m = the hole mask (1 = hole), (x1, x2) = G(x·(1−m), m).
The SN-PatchGAN sees [image, mask]: real [x, m] and fake [x2·m + x·(1−m), m] (the composited output).
    D loss = hinge:  0.5·E[relu(1 − D(real))] + 0.5·E[relu(1 + D(fake))]
    G loss = −E[D(fake)] + mean|x − x1| + mean|x − x2|   (L1 over the whole image, both stages, weights 1)
Adam lr 1e-4, β = (0.5, 0.999) for both; one D step per G step; LR constant (the reference never decays it).
Holes: by default the reference's own training masks (holes.py: a box ∪ brush strokes, one per image).

    diffinpaint train deepfill --data DATA --out runs/deepfill --batch-size 16

Differences from the reference, on purpose: the D step and the G step share one batch (TF dequeues a new batch
and mask for the D step); each image has its own mask (TF: one per batch); see nets.py for the network details.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..losses import hinge_d_loss, hinge_g_loss
from ..trainable import Batch, TrainableModel
from ...util.errors import UserError
from ...util.options import option
from . import holes
from .nets import ATTENTION_CHOICES, SIZE_MULTIPLE, build_network, count_parameters, generator_input


@dataclass
class DeepFillOptions:
    # the first conv before gating; widths after gating 24-96
    cnum: int = option(48, "generator width, a multiple of 4 (the reference's cnum)", minimum=4)
    # "self" = a masked SAGAN-style self-attention block in the same place, γ = 0 at init
    attention: str = option("contextual", "attention branch of the refinement stage: contextual (paper) or self "
                            "(masked self-attention)", choices=ATTENTION_CHOICES)
    beta1: float = option(0.5, "Adam beta1 for G and D (reference: 0.5)", minimum=0, maximum=0.999)
    gan_weight: float = option(1.0, "weight of the hinge GAN term in G's loss (inpaint.yml gan_loss_alpha)",
                               minimum=0)
    l1_weight: float = option(1.0, "weight of each stage's whole-image L1 (inpaint.yml l1_loss_alpha)", minimum=0)


def _size_error(size: int) -> str | None:
    if size >= SIZE_MULTIPLE and size % SIZE_MULTIPLE == 0:
        return None
    above = max(SIZE_MULTIPLE, -(-size // SIZE_MULTIPLE) * SIZE_MULTIPLE)
    return (f"--size {size} does not fit deepfill: it must be a multiple of {SIZE_MULTIPLE} (two stride-2 convs, "
            f"then contextual attention at half that); try --size {above}")


class DeepFillTraining(TrainableModel):
    name = "deepfill"
    Options = DeepFillOptions
    # batch 1 per process: neither network has batch statistics (no normalisation; spectral norm is per weight), so
    # the batch size only trades speed for memory; the reference used 16 on one GPU: pass --batch-size 16 there.
    # 2000 steps is a first look, not the paper's hundreds of thousands; the LR stays constant as in the reference.
    defaults = {"size": 256, "steps": 100_000, "batch_size": 16, "lr": 1e-4, "decay_start": 1.0, "holes": "deepfill"}
    paper_note = ("inpaint.yml: batch 16, Adam 1e-4 (0.5, 0.999) for G and D, constant LR; 100,000 steps = "
                  "mmagic's Places365 reproduction length (the TF reference trains until stopped)")
    presets = {"quick": {"size": 64, "cnum": 24, "batch_size": 4, "holes": "box", "lr": 5e-4, "steps": 150,
                         "sample_every": 150, "checkpoint_every": 150}}
    hole_choices = ("deepfill", "dataset", "box", "thin", "medium", "thick")
    tiny = {"size": 32, "cnum": 8, "batch_size": 2}

    def check(self) -> None:
        o = self.opts
        message = _size_error(self.cfg.size)
        if message:
            raise UserError(message)
        if o.cnum < 4 or o.cnum % 4:
            raise UserError(f"--cnum {o.cnum} does not fit deepfill: it must be a multiple of 4 (every layer splits "
                            "its channels into features and gates, the last one cnum/2); try --cnum 48")

    def build_networks(self) -> dict[str, nn.Module]:
        # the constructors initialise as the reference (Glorot-uniform, zero bias)
        config = self.network_config()
        return {"generator": build_network(config, "generator"),
                "discriminator": build_network(config, "discriminator")}

    def build_optimizers(self, nets):
        betas = (self.opts.beta1, 0.999)
        return {"optimizer_G": torch.optim.Adam(nets["generator"].parameters(), lr=self.cfg.lr, betas=betas),
                "optimizer_D": torch.optim.Adam(nets["discriminator"].parameters(), lr=self.cfg.lr, betas=betas)}

    def make_holes(self, size: int, rng: np.random.Generator) -> np.ndarray:
        return holes.make_holes(size, rng)

    def describe(self) -> list[str]:
        counts = count_parameters(self.opts.cnum, self.opts.attention)
        attention = ("contextual attention (3×3 patches matched at rate 2, softmax scale 10)"
                     if self.opts.attention == "contextual" else "masked self-attention (γ = 0 at init)")
        return [f"generator: gated convs, cnum {self.opts.cnum}, {counts['generator']:,} parameters "
                f"(stage 1 {counts['stage1']:,}, stage 2 {counts['stage2']:,}); refinement uses {attention}",
                f"discriminator: SN-PatchGAN on image + mask, {counts['discriminator']:,} parameters; hinge loss",
                f"losses: G = {self.opts.gan_weight:g}·hinge + {self.opts.l1_weight:g}·(L1 stage 1 + L1 stage 2)"]

    # ------------------------------------------------------------------ the paper's step

    def set_input(self, batch: Batch) -> None:
        self.netG, self.netD = self.nets["generator"], self.nets["discriminator"]
        self.x = batch.images * 2.0 - 1.0  # the target in [-1, 1]
        self.masked, self.mask = generator_input(batch.images, batch.masks)

    def forward(self) -> None:
        self.x1, self.x2 = self.netG(self.masked, self.mask)
        # what D judges: the refined output pasted into the known pixels
        self.completed = self.x2 * self.mask + self.x * (1.0 - self.mask)

    def backward_D(self) -> None:
        real = torch.cat([self.x, self.mask], dim=1)
        fake = torch.cat([self.completed.detach(), self.mask], dim=1)  # no gradient into G
        # one pass over real and fake together, as the reference (one spectral-norm power iteration)
        logits_real, logits_fake = self.netD(torch.cat([real, fake], dim=0)).chunk(2, dim=0)
        self.loss_D = hinge_d_loss(logits_real, logits_fake)
        self.accelerator.backward(self.loss_D)

    def backward_G(self) -> None:
        # G should fool D ...
        with self.accelerator.no_sync(self.netD):  # D's parameters take no gradient here: no all-reduce for D
            logits_fake = self.netD(torch.cat([self.completed, self.mask], dim=1))
        self.loss_G_gan = hinge_g_loss(logits_fake)
        # ... and reconstruct the whole image at both stages
        self.loss_L1_coarse = (self.x1.float() - self.x).abs().mean()
        self.loss_L1_fine = (self.x2.float() - self.x).abs().mean()
        self.loss_G = (self.opts.gan_weight * self.loss_G_gan
                       + self.opts.l1_weight * (self.loss_L1_coarse + self.loss_L1_fine))
        self.accelerator.backward(self.loss_G)

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.set_input(batch)
        self.forward()
        self.update_D()
        self.update_G()
        return {"D": self.loss_D.detach(), "G_gan": self.loss_G_gan.detach(), "L1_coarse": self.loss_L1_coarse.detach(),
                "L1_fine": self.loss_L1_fine.detach(), "G": self.loss_G.detach()}

    @torch.no_grad()
    def sample(self, batch: Batch) -> torch.Tensor:
        """The refined output pasted into the known pixels, as the runner will show it."""
        netG = self.accelerator.unwrap_model(self.nets["generator"])
        dtype = next(netG.parameters()).dtype
        masked, mask = generator_input(batch.images.to(dtype), batch.masks.to(dtype))
        _, x2 = netG(masked, mask)
        out = ((x2.float() + 1.0) / 2.0).clamp(0.0, 1.0)
        return out * mask + batch.images.float() * (1.0 - mask)
