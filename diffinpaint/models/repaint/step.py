"""Training the unconditional DDPM that RePaint samples (Ho et al. 2020; recipe of the diffusers unconditional
example, examples/unconditional_image_generation/train_unconditional.py).

RePaint itself trains nothing ("We do not train or finetune the diffusion model but condition pre-trained
models"); this is the small in-domain prior it needs. One step, the DDPM paper's Algorithm 1:
    x0 ~ data (in [−1, 1]), t ~ U{0, …, T−1}, ε ~ N(0, I)
    x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε                     (DDPMScheduler.add_noise)
    loss = ‖ε − ε_θ(x_t, t)‖²  (mean over pixels)   (the paper's simple loss)
AdamW (lr 1e-4, betas (0.95, 0.999), weight decay 1e-6, eps 1e-8) and gradient clipping at norm 1.0, as the
diffusers example; the trainer keeps an EMA copy (decay 0.9999, saved as unet_ema) that inference samples from.
No holes: the model is unconditional (--holes none).

Differences from the diffusers example: the learning rate is constant (the shared trainer's schedule with
--decay-start 1.0) where the example warms up for 500 steps and decays with a cosine; noise and timesteps are
drawn on the CPU from torch's global RNG (the trainer seeds it per step), so a run draws the same on any device.

    diffinpaint train repaint --data DATA --out runs/repaint                       # 64 px, 25.3M UNet
    diffinpaint train repaint --data DATA --out runs/repaint256 --size 256 --block-channels 64,64,128,128,256,256
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..trainable import Batch, TrainableModel
from ...util.errors import UserError
from ...util.options import option
from .infer import RePaintSettings, make_scheduler, unet_evaluations
from .nets import (BETA_SCHEDULES, attention_resolution, build_network, check_network_config, parse_channels,
                   scheduler_kwargs)

# respaced DDPM steps for the sample grid: cheap (50 UNet calls per grid), good enough to watch progress
SAMPLE_STEPS = 50


@dataclass
class RePaintOptions:
    # UNet widths per level, comma-separated; 64,128,256,256 = 25.3M parameters, the research notes' choice at 64 px
    # (use 64,64,128,128,256,256 at 256 px so the attention stays at 16 px)
    block_channels: str = option("64,128,256,256", "UNet widths per level, comma-separated (at 256 px use "
                                 "64,64,128,128,256,256)")
    # diffusers example, DDPM paper: 2
    layers_per_block: int = option(2, "ResNet blocks per UNet level", minimum=1)
    # diffusers and DDPM: 32
    norm_groups: int = option(32, "GroupNorm groups, dividing every width", minimum=1)
    # DDPM paper, RePaint's models: 1000
    train_timesteps: int = option(1000, "diffusion steps T", minimum=2)
    # β from 1e-4 to 0.02 (DDPM paper, RePaint's CelebA-HQ model: linear)
    beta_schedule: str = option("linear", "noise schedule", choices=BETA_SCHEDULES)


def epsilon_loss(unet: nn.Module, noise_scheduler, x0: torch.Tensor, noise: torch.Tensor,
                 timesteps: torch.Tensor) -> torch.Tensor:
    """The DDPM simple loss for given draws: MSE between ε and the UNet's prediction from x_t (fp32)."""
    noisy = noise_scheduler.add_noise(x0, noise, timesteps)
    noise_pred = unet(noisy, timesteps).sample
    return F.mse_loss(noise_pred.float(), noise.float())


class RePaintTraining(TrainableModel):
    name = "repaint"
    Options = RePaintOptions
    # 64 px as the research notes advise for a few thousand images; batch 16 and lr 1e-4 as the diffusers example;
    # 20,000 steps ≈ 100 epochs (the example's length) of 3,200 images at batch 16; constant LR (see the docstring)
    defaults = {"size": 64, "steps": 250_000, "batch_size": 16, "lr": 1e-4, "decay_start": 1.0, "holes": "none"}
    paper_note = ("diffusers' train_unconditional: batch 16, lr 1e-4, EMA 0.9999; 250,000 steps = the length of "
                  "RePaint's CelebA-HQ DDPM (trained at 256 px on 4 GPUs; here 64 px by default)")
    presets = {"quick": {"size": 32, "block_channels": "32,64", "norm_groups": 8, "batch_size": 8, "lr": 0.0005,
                         "steps": 150, "sample_every": 150, "checkpoint_every": 150}}
    hole_choices = ("none",)
    ema = {"unet": 0.9999}  # DDPM and RePaint's CelebA-HQ model: EMA 0.9999
    tiny = {"size": 32, "block_channels": "8,16", "layers_per_block": 1, "norm_groups": 4, "batch_size": 2}

    def network_config(self) -> dict:
        """The flat config build_network and the schedulers read (config.json's, with the model's name)."""
        return {**super().network_config(), "model": self.name}

    def check(self) -> None:
        config = self.network_config()
        check_network_config(config)
        scheduler_kwargs(config)  # UserError for an unknown β schedule
        if self.opts.train_timesteps < 2:
            raise UserError(f"--train-timesteps {self.opts.train_timesteps} must be at least 2 (the DDPM uses 1000)")

    def build_networks(self) -> dict[str, nn.Module]:
        # diffusers' own initialisation (PyTorch's defaults), as the diffusers example trains it
        return {"unet": build_network(self.network_config(), "unet")}

    def build_optimizers(self, nets: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        return {"optimizer": torch.optim.AdamW(nets["unet"].parameters(), lr=self.cfg.lr, betas=(0.95, 0.999),
                                               weight_decay=1e-6, eps=1e-8)}

    def describe(self) -> list[str]:
        config = self.network_config()
        channels = parse_channels(self.opts.block_channels)
        at = attention_resolution(config)
        settings = RePaintSettings()
        calls = unet_evaluations(make_scheduler(config, settings).timesteps.tolist())
        return [f"unet: UNet2DModel, widths {'-'.join(map(str, channels))}, {self.opts.layers_per_block} ResNet "
                f"blocks per level, attention at {at}x{at} px; predicts the noise (epsilon)",
                f"diffusion: {self.opts.train_timesteps} timesteps, {self.opts.beta_schedule} beta schedule; AdamW "
                "(0.95, 0.999, wd 1e-6), gradient clipping 1.0, EMA 0.9999 (unet_ema)",
                f"inference (RePaint {settings.repaint_steps}/{settings.jump_length}/{settings.jump_n_sample}): "
                f"{calls:,} UNet evaluations per image"]

    # ------------------------------------------------------------------ the DDPM's step

    def noise_scheduler(self):
        if getattr(self, "_noise_scheduler", None) is None:
            from diffusers import DDPMScheduler

            self._noise_scheduler = DDPMScheduler(**scheduler_kwargs(self.network_config()))
        return self._noise_scheduler

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        unet, optimizer = self.nets["unet"], self.optimizers["optimizer"]
        x0 = batch.images * 2.0 - 1.0  # the DDPM works in [−1, 1]
        n, device = x0.shape[0], x0.device
        # Algorithm 1: ε ~ N(0, I) and t ~ U{0, …, T−1} per image, from torch's global RNG (seeded by the trainer)
        noise = torch.randn(x0.shape).to(device=device, dtype=x0.dtype)
        timesteps = torch.randint(0, self.opts.train_timesteps, (n,)).to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = epsilon_loss(unet, self.noise_scheduler(), x0, noise, timesteps)
        self.accelerator.backward(loss)
        if self.accelerator.sync_gradients:
            self.accelerator.clip_grad_norm_(unet.parameters(), 1.0)  # diffusers example
        optimizer.step()
        return {"loss": loss.detach()}

    @torch.no_grad()
    def sample(self, batch: Batch) -> torch.Tensor:
        """Unconditional samples (the batch only sets their number): DDPM ancestral sampling respaced to
        SAMPLE_STEPS steps, noise from torch's global RNG (seeded by the trainer)."""
        from diffusers import DDPMScheduler

        unet = self.accelerator.unwrap_model(self.nets["unet"])
        dtype = next(unet.parameters()).dtype
        scheduler = DDPMScheduler(**scheduler_kwargs(self.network_config()))
        scheduler.set_timesteps(min(SAMPLE_STEPS, self.opts.train_timesteps))
        x = torch.randn(batch.images.shape).to(batch.images.device)
        for t in scheduler.timesteps:
            eps = unet(x.to(dtype), t).sample.float()
            x = scheduler.step(eps, t, x).prev_sample
        return ((x + 1.0) / 2.0).clamp(0.0, 1.0)
