"""Training the unconditional DCGAN (Radford et al. 2016) that semantic inpainting (Yeh et al. 2017) searches.

One step, the DCGAN paper's (and pytorch/examples dcgan/main.py's) alternating update:
    z ~ U[−1, 1]^100, fake = G(z)
    D: BCE(D(x), 1) + BCE(D(fake), 0)         (real and fake in separate batches, as the reference: separate
                                               batch-norm statistics)
    G: BCE(D(fake), 1)                         (the non-saturating generator loss)
Adam(2e-4, β1 0.5) for both, batch 64 (DCGAN paper, bamos train-dcgan.py). The GAN never sees a mask (--holes none):
the inpainting happens at test time, by searching z (infer.py).

Differences from bamos' model.py: one G step per D step (the paper; bamos runs G twice, "different from paper"),
widths 512-256-128-64 at 64 px (bamos starts with a 512 -> 512 layer), PyTorch's symmetric padding.

Cost on one H100 at the defaults (64 px, batch 64, fp32): 18.5 ms per step, so 20k steps take about 6 minutes;
the test-time search is the expensive part (infer.py: 32 images × 4 codes × 1500 steps ≈ 20 s).

    diffinpaint train dcgan --data DATA --out runs/dcgan                # 64 px, 20k steps at batch 64
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..losses import GANLoss
from ..trainable import Batch, TrainableModel
from ...util.errors import UserError
from ...util.options import option
from .nets import MAX_SIZE, MIN_SIZE, build_network, count_parameters, init_weights, num_layers


@dataclass
class DCGANOptions:
    # z ~ U[−1, 1]^z_dim (DCGAN paper, bamos, Yeh et al.)
    z_dim: int = option(100, "latent size", minimum=1)
    # gf_dim: 512-256-128-64 at 64 px
    gf: int = option(64, "generator width next to the image", minimum=1)
    # df_dim: 64-128-256-512 at 64 px
    df: int = option(64, "discriminator width next to the image", minimum=1)
    # DCGAN paper: 0.9 oscillated, 0.5 stabilised training
    beta1: float = option(0.5, "Adam beta1", minimum=0, maximum=0.999)


def latent_codes(n: int, z_dim: int, device) -> torch.Tensor:
    """z ~ U[−1, 1], from torch's global RNG (the trainer seeds it per step)."""
    return (torch.rand(n, z_dim) * 2.0 - 1.0).to(device)


class DCGANTraining(TrainableModel):
    name = "dcgan"
    Options = DCGANOptions
    # batch 64: DCGAN paper and bamos (batch norm statistics over 64 images); 20k steps = 1.3M images shown, a
    # usable 64-px face prior (bamos' released model: 20 CelebA epochs ≈ 60k steps); constant LR as the paper
    defaults = {"size": 64, "steps": 79_150, "batch_size": 64, "lr": 2e-4, "decay_start": 1.0, "holes": "none"}
    paper_note = ("DCGAN / bamos: batch 64, Adam 2e-4 (0.5), 64 px; 79,150 steps = 25 epochs of CelebA's 202,599 "
                  "faces, the default of the TensorFlow DCGAN code Yeh et al. build on")
    presets = {"quick": {"size": 32, "gf": 32, "df": 32, "batch_size": 16, "steps": 150, "sample_every": 150,
                         "checkpoint_every": 150}}
    hole_choices = ("none",)
    tiny = {"size": 32, "gf": 8, "df": 8, "batch_size": 4}

    def check(self) -> None:
        size = self.cfg.size
        if size < MIN_SIZE or size > MAX_SIZE or size & (size - 1):
            raise UserError(f"--size {size} does not fit dcgan; pass a power of two from {MIN_SIZE} to {MAX_SIZE} "
                            "(the paper's is 64)")

    def build_networks(self) -> dict[str, nn.Module]:
        return {"generator": init_weights(build_network(self.network_config(), "generator")),
                "discriminator": init_weights(build_network(self.network_config(), "discriminator"))}

    def build_optimizers(self, nets):
        betas = (self.opts.beta1, 0.999)
        return {"optimizer_G": torch.optim.Adam(nets["generator"].parameters(), lr=self.cfg.lr, betas=betas),
                "optimizer_D": torch.optim.Adam(nets["discriminator"].parameters(), lr=self.cfg.lr, betas=betas)}

    def describe(self) -> list[str]:
        o, n = self.opts, num_layers(self.cfg.size)
        g, d = count_parameters(self.cfg.size, o.z_dim, o.gf, o.df)
        g_widths = "-".join(str(o.gf * 2 ** i) for i in reversed(range(n)))
        d_widths = "-".join(str(o.df * 2 ** i) for i in range(n))
        return [f"generator: Linear {o.z_dim} -> 4x4x{o.gf * 2 ** (n - 1)}, {n} transposed 5x5 convs "
                f"({g_widths}-3), tanh: {g:,} parameters",
                f"discriminator: {n} strided 5x5 convs ({d_widths}), Linear -> 1 logit: {d:,} parameters",
                "inpainting happens at test time (latent search, --dcgan-iterations / --dcgan-restarts)"]

    # ------------------------------------------------------------------ the paper's step

    def set_input(self, batch: Batch) -> None:
        self.netG, self.netD = self.nets["generator"], self.nets["discriminator"]
        self.criterionGAN = GANLoss("vanilla")  # BCE on logits
        self.real = batch.images * 2.0 - 1.0
        self.z = latent_codes(self.real.shape[0], self.opts.z_dim, self.real.device)

    def forward(self) -> None:
        self.fake = self.netG(self.z)

    def backward_D(self) -> None:
        # D: real images -> 1, generated ones -> 0 (the fake is detached: no gradient into G)
        self.loss_D_real = self.criterionGAN(self.netD(self.real), True)
        self.loss_D_fake = self.criterionGAN(self.netD(self.fake.detach()), False)
        self.loss_D = self.loss_D_real + self.loss_D_fake
        self.accelerator.backward(self.loss_D)

    def backward_G(self) -> None:
        # G: make D call its images real (non-saturating: maximise log D(G(z)))
        with self.accelerator.no_sync(self.netD):  # D's parameters take no gradient here: no all-reduce for D
            pred_fake = self.netD(self.fake)
        self.loss_G = self.criterionGAN(pred_fake, True)
        self.accelerator.backward(self.loss_G)

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.set_input(batch)
        self.forward()
        self.update_D()
        self.update_G()
        return {"D_real": self.loss_D_real.detach(), "D_fake": self.loss_D_fake.detach(), "G": self.loss_G.detach()}

    @torch.no_grad()
    def sample(self, batch: Batch) -> torch.Tensor:
        """Unconditional samples (one per batch image; the batch itself is not used): the prior being learnt."""
        netG = self.accelerator.unwrap_model(self.nets["generator"])
        dtype = next(netG.parameters()).dtype
        z = latent_codes(batch.images.shape[0], self.opts.z_dim, batch.images.device).to(dtype)
        return ((netG(z).float() + 1.0) / 2.0).clamp(0.0, 1.0)
