"""RePaint inference (Lugmayr et al., CVPR 2022) on the unconditional DDPM that `diffinpaint train repaint` trains.

    diffinpaint run --model repaint --checkpoint runs/repaint --data DATA --out RUN

Every reverse step (diffusers' RePaintScheduler.step, after the paper's Algorithm 1):
  - the known pixels are the original image noised to the step's level: √ᾱ_{t−1}·x0 + √(1−ᾱ_{t−1})·ε;
  - the hole pixels come from the UNet's reverse step (the DDIM form; --repaint-eta 1 = DDPM-like, the paper's
    ancestral sampling, 0 = deterministic DDIM);
  - the two are merged with the mask.
Resampling: every --jump-length steps the sample is noised forward again by --jump-length steps (undo_step, no
UNet call) and denoised again, --jump-n-sample − 1 extra times, so the hole and the known region harmonise.
At the paper's 250 / 10 / 10 that is 2,410 UNet evaluations per image (plus 2,160 noise-only undo steps); the
progress bar counts the UNet evaluations.

Differences from the paper's code (andreas128/RePaint), all from using diffusers: the model predicts ε only (the
paper's guided-diffusion UNet also learns the variance; here eta 1 uses the DDPM posterior variance instead), the
known region and the reverse step draw the same noise (diffusers reuses it; "no impact on quality observed").

Seeds and batches: each image draws its initial noise and every step's noise from its own CPU
`torch.Generator().manual_seed(seed)`; the scheduler's step and undo_step accept a list of generators (they pass
it to diffusers' randn_tensor, which draws each batch item from its own generator), so a batch runs together and
image i's result does not depend on the other images in the batch.

Mask convention: ours is 1 = hole; diffusers' RePaint takes 1 = keep. `known_region` converts at this edge.

diffusers 0.32.x is broken for RePaint (it noises the known region with (1−ᾱ)·ε instead of √(1−ᾱ)·ε; PR #10185,
reverted by #10644): `check` refuses diffusers older than 0.33.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ...util.errors import UserError
from ...util.options import option
from ..predictor import Predictor
from .nets import scheduler_kwargs

# first release with the known-region noise fixed again (0.32.0 and 0.32.2 use (1−ᾱ)·ε)
MIN_DIFFUSERS = "0.33.0"


@dataclass
class RePaintSettings:
    # respaced from the training timesteps (paper: t_T 250)
    repaint_steps: int = option(250, "repaint: reverse diffusion steps (the paper's 250)", minimum=1)
    jump_length: int = option(10, "repaint: steps noised forward per resampling jump (paper: 10)",
                              flag="--repaint-jump-length", minimum=1)
    jump_n_sample: int = option(10, "repaint: visits of each jump point, 1 = no resampling (paper: 10)",
                                flag="--repaint-jump-n-sample", minimum=1)
    # 0 makes the sampler deterministic (DDIM)
    eta: float = option(1.0, "repaint: reverse-step noise, 1 = DDPM-like as the paper samples, 0 = DDIM",
                        flag="--repaint-eta", minimum=0, maximum=1)


def check_diffusers_version(version: str) -> None:
    """UserError unless `version` (a diffusers version string) has the correct RePaint known-region noise."""
    from packaging.version import InvalidVersion, Version

    try:
        parsed = Version(version)
    except InvalidVersion:
        raise UserError(f"cannot read the diffusers version {version!r}; run pip install 'diffusers>=0.33'") from None
    # dev builds of 0.33.0 compare below 0.33.0 and are refused too: some predate the fix
    if parsed < Version(MIN_DIFFUSERS):
        raise UserError(f"RePaint needs diffusers >= 0.33 (diffusers {version} noises the known region wrongly in "
                        "RePaintScheduler); run pip install 'diffusers>=0.33'")


def known_region(holes: torch.Tensor) -> torch.Tensor:
    """Our masks (1 = hole) -> the mask diffusers' RePaintScheduler takes (1 = keep the original pixel)."""
    return (holes < 0.5).to(torch.float32)


def make_scheduler(config, settings: RePaintSettings):
    """RePaintScheduler with the training noise schedule, its timesteps set (jumps included)."""
    from diffusers import RePaintScheduler

    scheduler = RePaintScheduler(**scheduler_kwargs(config), eta=settings.eta)
    scheduler.set_timesteps(settings.repaint_steps, settings.jump_length, settings.jump_n_sample)
    return scheduler


def unet_evaluations(timesteps: Sequence[int]) -> int:
    """UNet calls of the sampling loop: one per step that goes down in time (going up is a noise-only undo)."""
    calls, last = 0, None
    for t in timesteps:
        if last is None or t < last:
            calls += 1
        last = t
    return calls


def repaint_step(scheduler, eps: torch.Tensor, t: int, sample: torch.Tensor, original: torch.Tensor,
                 holes: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
    """x_t -> x_{t−1}: the known region re-noised from `original` (in [−1, 1]), the holes from the UNet's ε."""
    return scheduler.step(eps, t, sample, original, known_region(holes).to(sample.device), generator=generators
                          ).prev_sample


@torch.no_grad()
def repaint(unet: Callable[[torch.Tensor, int], torch.Tensor], scheduler, original: torch.Tensor,
            holes: torch.Tensor, generators: list[torch.Generator], progress=None) -> torch.Tensor:
    """The RePaint loop (as diffusers' RePaintPipeline.__call__, with one generator per image).

    unet(x, t) -> ε; original N×3×S×S in [−1, 1]; holes N×1×S×S (1 = hole). Returns x_0 in [−1, 1]."""
    if len(generators) != original.shape[0]:
        raise ValueError(f"{len(generators)} generators for {original.shape[0]} images")
    # x_T: pure noise, each image from its own generator (drawn on the CPU: the same on every device)
    sample = torch.cat([torch.randn((1, *original.shape[1:]), generator=g) for g in generators])
    sample = sample.to(original.device)
    timesteps = [int(t) for t in scheduler.timesteps]
    t_last = timesteps[0] + 1
    for t in timesteps:
        if t < t_last:  # reverse step: denoise the holes, re-noise the known region
            eps = unet(sample, t)
            sample = repaint_step(scheduler, eps, t, sample, original, holes, generators)
            if progress is not None:
                progress.update(1)
        else:  # resampling jump: noise forward from t_last to t (no UNet call)
            sample = scheduler.undo_step(sample, t_last, generator=generators)
        t_last = t
    return sample


class RePaintPredictor(Predictor):
    networks = ("unet_ema",)  # the EMA weights (decay 0.9999), as DDPM and RePaint sample from
    Settings = RePaintSettings
    deterministic = False  # x_T and every step's noise come from each image's seed
    tiny = {"repaint_steps": 10, "jump_length": 2, "jump_n_sample": 2}

    def check(self) -> None:
        import diffusers

        check_diffusers_version(diffusers.__version__)
        s, train_timesteps = self.settings, int(self.config["train_timesteps"])
        if s.repaint_steps > train_timesteps:
            raise UserError(f"--repaint-steps {s.repaint_steps} exceeds the {train_timesteps} timesteps this "
                            f"checkpoint was trained with; pass --repaint-steps {min(250, train_timesteps)} or fewer")

    def predict(self, images: torch.Tensor, masks: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        from tqdm.auto import tqdm

        net: nn.Module = self.nets["unet_ema"]
        dtype = next(net.parameters()).dtype

        def unet(x: torch.Tensor, t: int) -> torch.Tensor:
            return net(x.to(dtype), t).sample.float()

        scheduler = make_scheduler(self.config, self.settings)
        original = images.to(self.device, torch.float32) * 2.0 - 1.0  # the DDPM works in [−1, 1]
        holes = masks.to(self.device, torch.float32)
        generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
        n = images.shape[0]
        with tqdm(total=unet_evaluations(scheduler.timesteps.tolist()), unit="eval", leave=False,
                  dynamic_ncols=True, desc=f"RePaint, {n} image{'s' if n != 1 else ''}") as progress:
            x0 = repaint(unet, scheduler, original, holes, generators, progress)
        return ((x0 + 1.0) / 2.0).clamp(0.0, 1.0)

    def resolved_outputs(self) -> dict[str, Any]:
        return {"network": "unet_ema"}

