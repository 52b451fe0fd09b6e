"""Pix2Pix training (Isola et al. 2017) as the one trainer runs it: the paper's step, after the reference's
Pix2PixModel (junyanz/pytorch-CycleGAN-and-pix2pix, models/pix2pix_model.py).

real_A = masked image + mask (the condition), real_B = the full image, fake_B = G(real_A).
Loss = GAN (vanilla BCE or lsgan) + λ·L1 (λ = 100), Adam(2e-4, β1 0.5); the conditional PatchGAN judges
(real_A, image) pairs. The learning rate is constant for the first --decay-start fraction of --steps, then
decays linearly (the reference's 100 + 100 epochs, counted in steps).

    diffinpaint train pix2pix --data DATA --out runs/p2p --steps 2000
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..losses import GANLoss
from ..trainable import Batch, TrainableModel
from ...util.options import option
from .nets import build_discriminator, build_generator, generator_input, init_weights, unet_depth


@dataclass
class Pix2PixOptions:
    ngf: int = option(64, "generator width (paper: 64)", minimum=1)
    ndf: int = option(64, "discriminator width (paper: 64)", minimum=1)
    n_layers_d: int = option(3, "strided discriminator layers: 3 = the paper's 70x70 PatchGAN", minimum=1)
    dropout: bool = option(True, "no dropout in the generator (the paper's 0.5 in the innermost decoder blocks is "
                           "its noise source)")
    beta1: float = option(0.5, "Adam beta1 (paper: 0.5)", minimum=0, maximum=0.999)
    gan_mode: str = option("vanilla", "vanilla (BCE on logits, the paper's) or lsgan (least squares)",
                           choices=("vanilla", "lsgan"))
    lambda_l1: float = option(100.0, "weight of the L1 term (paper: 100)", minimum=0)
    # normalised to mean 1, so --lambda-l1 keeps its meaning whatever --hole-weight is
    hole_weight: float = option(1.0, "L1 weight of hole pixels relative to the rest, normalised to mean 1 (1 = the "
                                "paper's plain L1)", above=0)


def dropout_layers(size: int) -> int:
    """Dropout layers of unet_<size>: the reference puts them in the (num_downs - 5) intermediate blocks, at
    most 3, so 64 px has one and 32 px none."""
    return min(3, unet_depth(size) - 5)


class Pix2PixTraining(TrainableModel):
    name = "pix2pix"
    Options = Pix2PixOptions
    defaults = {"size": 256, "steps": 80_000, "batch_size": 1, "lr": 2e-4, "decay_start": 0.5, "holes": "dataset"}
    paper_note = ("the reference's train.py: batch 1, Adam 2e-4, 100 epochs constant + 100 decaying linearly; "
                  "80,000 steps = those 200 epochs of its 400-image facades set")
    presets = {"quick": {"size": 128, "ngf": 32, "ndf": 32, "batch_size": 4, "holes": "box", "steps": 150,
                         "sample_every": 150, "checkpoint_every": 150}}
    hole_choices = ("dataset", "box", "thin", "medium", "thick")
    tiny = {"size": 32, "ngf": 8, "ndf": 8, "batch_size": 2}

    def check(self) -> None:
        o = self.opts
        unet_depth(self.cfg.size)  # UserError for sizes that are not a power of two >= 32
        if o.dropout and dropout_layers(self.cfg.size) < 3:
            print(f"warning: pix2pix at --size {self.cfg.size} has {dropout_layers(self.cfg.size)} dropout layer(s) "
                  "(the reference's unet_256 has 3): its generator sees less noise", file=sys.stderr)

    def build_networks(self) -> dict[str, nn.Module]:
        o = self.opts
        return {"generator": init_weights(build_generator(self.cfg.size, o.ngf, o.dropout)),
                "discriminator": init_weights(build_discriminator(o.ndf, o.n_layers_d))}

    def build_optimizers(self, nets):
        betas = (self.opts.beta1, 0.999)
        return {"optimizer_G": torch.optim.Adam(nets["generator"].parameters(), lr=self.cfg.lr, betas=betas),
                "optimizer_D": torch.optim.Adam(nets["discriminator"].parameters(), lr=self.cfg.lr, betas=betas)}

    def describe(self) -> list[str]:
        return [f"generator: unet_{self.cfg.size} ({unet_depth(self.cfg.size)} levels, "
                f"{dropout_layers(self.cfg.size) if self.opts.dropout else 0} dropout layers); discriminator: "
                f"{self.opts.n_layers_d}-layer PatchGAN"]

    # ------------------------------------------------------------------ the paper's step

    def set_input(self, batch: Batch) -> None:
        fmt = torch.channels_last if batch.images.device.type == "cuda" else torch.contiguous_format
        self.netG, self.netD = self.nets["generator"], self.nets["discriminator"]
        self.criterionGAN = GANLoss(self.opts.gan_mode)
        self.mask = batch.masks
        self.real_A = generator_input(batch.images, batch.masks).contiguous(memory_format=fmt)
        self.real_B = (batch.images * 2.0 - 1.0).contiguous(memory_format=fmt)

    def forward(self) -> None:
        self.fake_B = self.netG(self.real_A)

    def criterionL1(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        if self.opts.hole_weight == 1.0:
            return F.l1_loss(fake.float(), real)  # the paper's L1
        weight = (1.0 + (self.opts.hole_weight - 1.0) * self.mask).expand_as(real)
        return (weight * (fake.float() - real).abs()).sum() / weight.sum()

    def backward_D(self) -> None:
        # fake: stop the gradient into G by detaching fake_B
        fake_AB = torch.cat((self.real_A, self.fake_B), 1)
        self.loss_D_fake = self.criterionGAN(self.netD(fake_AB.detach()), False)
        real_AB = torch.cat((self.real_A, self.real_B), 1)
        self.loss_D_real = self.criterionGAN(self.netD(real_AB), True)
        # halve D's objective, which slows D relative to G (paper, section 3.3)
        self.loss_D = (self.loss_D_fake + self.loss_D_real) * 0.5
        self.accelerator.backward(self.loss_D)

    def backward_G(self) -> None:
        # G should fool D ...
        fake_AB = torch.cat((self.real_A, self.fake_B), 1)
        with self.accelerator.no_sync(self.netD):  # D's parameters take no gradient here: no all-reduce for D
            pred_fake = self.netD(fake_AB)
        self.loss_G_GAN = self.criterionGAN(pred_fake, True)
        # ... and stay close to the target in L1
        self.loss_G_L1 = self.criterionL1(self.fake_B, self.real_B) * self.opts.lambda_l1
        self.loss_G = self.loss_G_GAN + self.loss_G_L1
        self.accelerator.backward(self.loss_G)

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.set_input(batch)
        self.forward()
        self.update_D()
        self.update_G()
        return {"D_real": self.loss_D_real.detach(), "D_fake": self.loss_D_fake.detach(),
                "G_GAN": self.loss_G_GAN.detach(), "G_L1": self.loss_G_L1.detach()}

    @torch.no_grad()
    def sample(self, batch: Batch) -> torch.Tensor:
        netG = self.accelerator.unwrap_model(self.nets["generator"])
        dtype = next(netG.parameters()).dtype
        fake = netG(generator_input(batch.images, batch.masks).to(dtype=dtype)).float()
        return (fake + 1.0) / 2.0
