"""Training the conditional TransGAN (nets.py): TransGAN's WGAN-GP recipe (VITA-Group/TransGAN functions.py, loss
'wgangp-eps', exps/cifar_train.py) plus pix2pix's L1 term, since here the generator completes a given image.

One step:
    fake = G([x·(1−m), m]),  composite = fake·m + x·(1−m)          (the critic judges completed images)
    D (n_critic times): −E[D(x, m)] + E[D(composite, m)] + λ_gp·E[(‖∇_x̂ D(x̂, m)‖₂ − 1)²] + drift·(E[D(x, m)])²
          x̂ = ε·x + (1−ε)·composite, ε ~ U[0, 1] per image (WGAN-GP, λ_gp = 10, reference phi 1);
          drift 1e-3 on the square of the mean real score, as the reference's code writes it (ProGAN's original
          is the mean of the squares)
    G: −E[D(composite, m)] + λ_L1·mean|fake − x|                       (λ_L1 = 100, pix2pix's weight)
Adam(1e-4, β = (0, 0.99)) for both; gradients clipped to norm 5 (reference); the trainer keeps an EMA copy of the
generator (decay 0.999), saved as generator_ema, which inference uses.

Choices and differences from the reference (an unconditional generator trained for 500k iterations on 8 GPUs):
  - the generator sees the masked image, not z, so an L1 term ties it to the target: pix2pix's λ = 100 on the
    whole image (the known pixels are easy and keep the output anchored; the holes carry the task);
  - the critic is conditional on the mask and sees composites (holes filled, context real): real and fake then
    differ only in the holes, which is where its gradient matters; the penalty differentiates with respect to the
    image channels only (the mask is a condition, not a sample);
  - n_critic 1 by default (reference 4): the L1 term already steers G, and a step costs less than half (188 vs
    413 ms below). With --n-critic k > 1 the k critic updates of a step use the same batch and the same fake (G
    does not change between them; each draws a new ε), then G takes one step. On a tiny test configuration the
    critic separated real from completed images within 30 steps from 4 of 5 initialisations with 1, from 8 of 8
    with 4 (tests/test_transgan.py): try 4 if the critic's D_real − D_fake stays near 0;
  - EMA 0.999 (reference 0.9999 over 500k iterations: too slow for runs of 10⁴ steps);
  - no DiffAugment (the reference's translation, cutout, colour augmentations of the critic's input): not
    implemented; worth adding if the critic overfits a small training set;
  - Adam, not AdamW: the reference's --wd 1e-3 only applies to its AdamW option, and cifar_train uses adam.

Cost on one H100 (batch 64, 32 px, default networks): 176 ms per step with --mixed-precision bf16 (9.7 GiB),
188 ms in fp32 with TF32 matmuls (12.3 GiB), 413 ms with --n-critic 4; 20k steps ≈ 1 h. At 64 px the token grids
are 4× larger: batch 16 takes 296 ms and 24 GiB (bf16), so the default batch of 64 does not fit 80 GB; pass
--batch-size 16, or --dim 512 (batch 32: 446 ms, 45 GiB).

    diffinpaint train transgan --data DATA --out runs/transgan                          # 32 px, 66.5M-param G
    diffinpaint train transgan --data DATA --out runs/tg64 --size 64 --batch-size 16
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..trainable import Batch, TrainableModel
from ...util.errors import UserError
from ...util.options import option
from .nets import D_PATCH, G_PATCH, SIZES, build_network, count_parameters, generator_input, init_weights, parse_depth


@dataclass
class TransGANOptions:
    # reference gf_dim
    dim: int = option(1024, "generator width of stage 1; stages 2, 3 use dim/4, dim/16", minimum=1)
    depth: str = option("5,4,2", "transformer blocks per generator stage (reference g_depth)")
    # 3/4 of it at the fine scale, all at the coarse one
    d_dim: int = option(384, "discriminator width (reference df_dim)", minimum=1)
    # plus one cls-token block
    d_depth: int = option(3, "discriminator blocks per scale (reference d_depth)", minimum=1)
    heads: int = option(4, "attention heads in every block (reference: 4 in G and D)", minimum=1)
    # pix2pix's λ; not in TransGAN
    lambda_l1: float = option(100.0, "weight of the L1 reconstruction term", minimum=0)
    # WGAN-GP, reference 10/φ² with φ = 1
    lambda_gp: float = option(10.0, "gradient-penalty weight", minimum=0)
    # keeps the critic's scores near 0 (reference 'wgangp-eps')
    drift: float = option(1e-3, "weight of the squared mean real score (0 = off)", minimum=0)
    # reference 4, on new batches
    n_critic: int = option(1, "critic updates per generator update, on the same batch (reference 4)", minimum=1)
    grad_clip: float = option(5.0, "gradient-norm clipping of G and D (reference 5; 0 = off)", minimum=0)
    beta1: float = option(0.0, "Adam beta1 (reference 0)", minimum=0, maximum=0.999)
    beta2: float = option(0.99, "Adam beta2 (reference 0.99)", minimum=0, maximum=0.999)


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor,
                     fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP: E[(‖∇_x̂ critic(x̂)‖₂ − 1)²] at x̂ = ε·real + (1−ε)·fake, ε ~ U[0, 1] per sample from torch's global
    RNG (drawn on the CPU, so every device draws the same). The graph is kept (create_graph) so the penalty
    trains the critic."""
    eps = torch.rand(real.shape[0], 1, 1, 1).to(real.device, real.dtype)
    mixed = (eps * real + (1.0 - eps) * fake).detach().requires_grad_(True)
    scores = critic(mixed)
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    return ((grad.float().flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()


class TransGANTraining(TrainableModel):
    name = "transgan"
    Options = TransGANOptions
    # 32 px (the reference's CIFAR configuration); batch 64 = the reference's critic batch; 20k steps ≈ 1.3M images
    # (the reference runs 500k iterations from scratch, without an L1 anchor); LR constant as in the reference
    defaults = {"size": 32, "steps": 500_000, "batch_size": 64, "lr": 1e-4, "decay_start": 1.0, "holes": "box"}
    paper_note = ("the TransGAN reference's CIFAR-10 run: Adam 1e-4 (0, 0.99), D batch 64, 500,000 iterations at "
                  "32 px (its G batch of 128 and 4 critic steps on new batches are not reproduced)")
    presets = {"quick": {"size": 32, "dim": 64, "depth": "1,1,1", "d_dim": 64, "d_depth": 1, "batch_size": 8,
                         "holes": "box", "steps": 150, "sample_every": 150, "checkpoint_every": 150}}
    hole_choices = ("dataset", "box", "thin", "medium", "thick")
    ema = {"generator": 0.999}
    tiny = {"size": 32, "dim": 64, "depth": "1,1,1", "d_dim": 64, "d_depth": 1, "batch_size": 2}

    def check(self) -> None:
        o, size = self.opts, self.cfg.size
        if size not in SIZES:
            raise UserError(f"--size {size} does not fit transgan; pass 32 (the reference's) or 64")
        try:
            depth = parse_depth(o.depth)
        except ValueError:
            depth = []
        if len(depth) != 3 or min(depth) < 1:
            raise UserError(f"--depth {o.depth!r} must be three positive block counts, e.g. 5,4,2")
        if o.dim < 16 * o.heads or o.dim % (16 * o.heads):
            raise UserError(f"--dim {o.dim} must be a multiple of 16 x --heads = {16 * o.heads} (stage widths dim, "
                            "dim/4, dim/16 must split into the heads), e.g. 1024 or 512")
        if o.d_dim < 4 * o.heads or o.d_dim % (4 * o.heads):
            raise UserError(f"--d-dim {o.d_dim} must be a multiple of 4 x --heads = {4 * o.heads} (its 3/4 and 1/4 "
                            "scales), e.g. 384")

    def build_networks(self) -> dict[str, nn.Module]:
        return {"generator": init_weights(build_network(self.network_config(), "generator"), linear_std=None),
                "discriminator": init_weights(build_network(self.network_config(), "discriminator"), linear_std=0.02)}

    def build_optimizers(self, nets):
        betas = (self.opts.beta1, self.opts.beta2)
        return {"optimizer_G": torch.optim.Adam(nets["generator"].parameters(), lr=self.cfg.lr, betas=betas),
                "optimizer_D": torch.optim.Adam(nets["discriminator"].parameters(), lr=self.cfg.lr, betas=betas)}

    def describe(self) -> list[str]:
        o, size = self.opts, self.cfg.size
        g, d = count_parameters(size, o.dim, o.depth, o.d_dim, o.d_depth, o.heads)
        depth, side = parse_depth(o.depth), size // G_PATCH
        stages = ", ".join(f"{side * 2 ** i}x{side * 2 ** i}x{o.dim // 4 ** i} x{n}" for i, n in enumerate(depth))
        fine, coarse = size // D_PATCH, size // (2 * D_PATCH)
        return [f"generator: patch embedding k=s={G_PATCH} of [masked image, mask], stages {stages}, 1x1 conv -> "
                f"RGB: {g:,} parameters",
                f"discriminator: {fine}x{fine}x{o.d_dim // 4 * 3} x{o.d_depth}, {coarse}x{coarse}x{o.d_dim} "
                f"x{o.d_depth}, cls block, on [composite, mask]: {d:,} parameters",
                f"loss: WGAN-GP (gp {o.lambda_gp:g}, drift {o.drift:g}, n_critic {o.n_critic}) + {o.lambda_l1:g} x L1; "
                f"inference uses the EMA generator (decay {self.ema['generator']})"]

    # ------------------------------------------------------------------ the step

    def set_input(self, batch: Batch) -> None:
        self.netG, self.netD = self.nets["generator"], self.nets["discriminator"]
        self.mask = batch.masks
        self.real = batch.images * 2.0 - 1.0
        self.input = generator_input(batch.images, batch.masks)

    def forward(self) -> None:
        self.fake = self.netG(self.input)
        self.composite = self.fake * self.mask + self.real * (1.0 - self.mask)  # the fill in its context

    def critic(self, images: torch.Tensor) -> torch.Tensor:
        """D's score of completed images given the hole mask (N values, fp32)."""
        return self.netD(torch.cat([images, self.mask.to(images.dtype)], 1)).float().flatten()

    def backward_D(self) -> None:
        fake = self.composite.detach()  # no gradient into G
        score_real = self.critic(self.real).mean()
        self.score_real, self.score_fake = score_real, self.critic(fake).mean()
        self.loss_gp = gradient_penalty(self.critic, self.real, fake)
        # the critic's Wasserstein estimate E[D(real)] − E[D(fake)] goes up; gradients stay near norm 1
        self.loss_D = (self.score_fake - score_real + self.opts.lambda_gp * self.loss_gp
                       + self.opts.drift * score_real ** 2)
        self.accelerator.backward(self.loss_D)

    def backward_G(self) -> None:
        # G should raise the critic's score of its completions ...
        with self.accelerator.no_sync(self.netD):  # D's parameters take no gradient here: no all-reduce for D
            self.loss_G_adv = -self.critic(self.composite).mean()
        # ... and reproduce the image in L1
        self.loss_G_L1 = F.l1_loss(self.fake.float(), self.real.float()) * self.opts.lambda_l1
        self.accelerator.backward(self.loss_G_adv + self.loss_G_L1)

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.set_input(batch)
        self.forward()
        for _ in range(self.opts.n_critic):  # the critic's updates reuse this batch (each draws a new ε)
            self.update_D(clip=self.opts.grad_clip)
        self.update_G(clip=self.opts.grad_clip)
        with torch.no_grad():  # a monitor, not a loss: L1 over the hole pixels only, in [−1, 1]
            hole = self.mask.expand_as(self.real)
            l1_hole = ((self.fake.float() - self.real).abs() * hole).sum() / hole.sum().clamp(min=1.0)
        return {"D_real": self.score_real.detach(), "D_fake": self.score_fake.detach(), "GP": self.loss_gp.detach(),
                "G_adv": self.loss_G_adv.detach(), "G_L1": self.loss_G_L1.detach(), "L1_hole": l1_hole.detach()}

    @torch.no_grad()
    def sample(self, batch: Batch) -> torch.Tensor:
        """The raw (not EMA) generator's output, clamped as at inference."""
        netG = self.accelerator.unwrap_model(self.nets["generator"])
        dtype = next(netG.parameters()).dtype
        fake = netG(generator_input(batch.images, batch.masks).to(dtype)).float()
        return ((fake.clamp(-1.0, 1.0) + 1.0) / 2.0)
