"""Pix2Pix training for inpainting (Isola et al. 2017), through Hugging Face accelerate.

The generator sees the masked image + mask and predicts the whole image; the conditional PatchGAN judges
(input, image) pairs. Loss = GAN (vanilla or lsgan) + lambda * L1 (lambda = 100), Adam(2e-4, beta1 0.5), the
learning rate constant for the first --decay-start fraction of --steps, then decaying linearly.

One process (CPU or one GPU):
    diffinpaint train pix2pix --data DATA --out runs/p2p --steps 2000
Several GPUs (one process each; --batch-size is per process):
    accelerate launch --multi_gpu --num_processes 4 -m diffinpaint train pix2pix --data DATA --out runs/p2p
Continue an interrupted run (or extend it to more steps):
    diffinpaint train pix2pix --data DATA --out runs/p2p --steps 4000 --resume

Reproducibility: every random choice is a function of (seed, step, rank): the images of step s are the sample
positions s*B*P + rank*B + i of a per-epoch permutation, flips and generated holes come from (seed, position),
and torch's RNG (dropout) is re-seeded from (seed, step, rank) before each step. A resumed run therefore draws
exactly what the uninterrupted run would have drawn, without any RNG state in the checkpoint.

Checkpoint layout (safetensors + JSON only, never pickles; each folder appears complete via rename):
    OUT/checkpoints/step_000500/config.json                the TrainConfig the weights were trained with
                               /generator.safetensors      G weights + batch-norm running statistics (fp32)
                               /discriminator.safetensors
                               /optimizer_G.safetensors    Adam moments and step count per parameter
                               /optimizer_D.safetensors
                               /state.json                 step, optimiser param groups, LR schedulers, grad scaler
    OUT/samples/step_000500.png                            rows of masked input | output | target
    OUT/log.jsonl                                          losses and learning rate per step
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import shutil
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .fid import sha256_file
from .imageops import resize_images, resize_masks
from .runner import atomic_write_bytes, atomic_write_text, png_bytes
from .pix2pix_nets import (build_discriminator, build_generator, count_parameters, generator_input, init_weights,
                           unet_depth)

HOLE_CHOICES = ("dataset", "box", "thin", "medium", "thick")
CHECKPOINT_FILES = ("config.json", "generator.safetensors", "discriminator.safetensors", "optimizer_G.safetensors",
                    "optimizer_D.safetensors", "state.json")
FORMAT = "diffinpaint-pix2pix"
FORMAT_VERSION = 1


@dataclass
class TrainConfig:
    data: str = ""  # dataset folder (DESIGN.md contract); its images are the training targets
    out: str = ""  # training folder: checkpoints/, samples/, log.jsonl
    size: int = 256  # training resolution (square); the U-Net has log2(size) levels (unet_256 as in the paper)
    ngf: int = 64  # generator width (paper: 64)
    ndf: int = 64  # discriminator width (paper: 64)
    n_layers_d: int = 3  # strided discriminator layers: 3 = 70x70 PatchGAN (paper)
    dropout: bool = True  # dropout 0.5 in the innermost decoder blocks (paper's noise source)
    steps: int = 2000  # total optimiser steps; ~8 epochs of a 250-image set at batch 1: a usable first model
    batch_size: int = 1  # per process; 1 as in the paper's reference runs
    lr: float = 2e-4  # Adam learning rate (paper)
    beta1: float = 0.5  # Adam beta1 (paper)
    gan_mode: str = "vanilla"  # "vanilla" (BCE on logits, paper) or "lsgan" (least squares)
    lambda_l1: float = 100.0  # weight of the L1 term (paper)
    hole_weight: float = 1.0  # L1 weight of hole pixels relative to known pixels (1 = the paper's plain L1)
    decay_start: float = 0.5  # fraction of --steps after which the LR decays linearly (reference: 100 + 100 epochs)
    holes: str = "dataset"  # hole source: the dataset's own masks, or generated per sample (box/thin/medium/thick)
    flip: bool = True  # random horizontal flip (paper)
    sample_every: int = 500  # steps between sample grids (and one at the end)
    checkpoint_every: int = 500  # steps between checkpoints (and one at the end)
    keep_checkpoints: int = 2  # newest checkpoints kept; older ones are deleted (0 = keep all)
    seed: int = 0  # seeds init, data order, flips, holes and dropout
    workers: int = 0  # DataLoader worker processes (0 = load in the training process)
    device: str = "auto"  # auto (cuda when available), cpu or cuda
    mixed_precision: str = "no"  # no, bf16 or fp16 (autocast through accelerate; weights stay fp32)
    stop_at: int | None = None  # end this invocation after this step (with a checkpoint); the schedule keeps --steps
    resume: bool = False  # continue from the newest checkpoint in --out
    dry_run: bool = False  # print the configuration and parameter counts, then exit


# options that must be the same when resuming: they shape the weights or the random stream (--steps may change)
RESUME_MUST_MATCH = ("size", "ngf", "ndf", "n_layers_d", "dropout", "batch_size", "lr", "beta1", "gan_mode",
                     "lambda_l1", "hole_weight", "decay_start", "holes", "flip", "seed")


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


# ---------------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    parser.add_argument("--data", required=True, help="dataset folder (images/ + masks.csv or masks/)")
    parser.add_argument("--out", required=True, help="training folder for checkpoints, samples and the log")
    parser.add_argument("--size", type=int, default=d.size, help=f"training resolution, a power of two (default {d.size})")
    parser.add_argument("--ngf", type=int, default=d.ngf, help=f"generator width (default {d.ngf})")
    parser.add_argument("--ndf", type=int, default=d.ndf, help=f"discriminator width (default {d.ndf})")
    parser.add_argument("--no-dropout", dest="dropout", action="store_false", help="no dropout in the generator")
    parser.add_argument("--steps", type=int, default=d.steps, help=f"total optimiser steps (default {d.steps})")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help=f"per process (default {d.batch_size})")
    parser.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate (default {d.lr})")
    parser.add_argument("--beta1", type=float, default=d.beta1, help=f"Adam beta1 (default {d.beta1})")
    parser.add_argument("--gan-mode", choices=("vanilla", "lsgan"), default=d.gan_mode)
    parser.add_argument("--lambda-l1", type=float, default=d.lambda_l1, help=f"L1 weight (default {d.lambda_l1:g})")
    parser.add_argument("--hole-weight", type=float, default=d.hole_weight,
                        help="L1 weight of hole pixels relative to the rest (default 1 = plain L1)")
    parser.add_argument("--decay-start", type=float, default=d.decay_start,
                        help=f"fraction of --steps before the LR starts its linear decay (default {d.decay_start})")
    parser.add_argument("--holes", choices=HOLE_CHOICES, default=d.holes,
                        help="holes from the dataset's masks or generated per sample (box = two 75x75 at 256 px)")
    parser.add_argument("--no-flip", dest="flip", action="store_false", help="no random horizontal flips")
    parser.add_argument("--sample-every", type=int, default=d.sample_every, help="steps between sample grids")
    parser.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="steps between checkpoints")
    parser.add_argument("--keep-checkpoints", type=int, default=d.keep_checkpoints,
                        help=f"newest checkpoints to keep (default {d.keep_checkpoints}; 0 = all)")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--workers", type=int, default=d.workers, help="DataLoader worker processes (default 0)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=d.device)
    parser.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"), default=d.mixed_precision)
    parser.add_argument("--stop-at", type=int, default=None,
                        help="end this invocation after this step, writing a checkpoint (continue with --resume)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    parser.add_argument("--dry-run", action="store_true", help="print the configuration and parameter counts, exit")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in names and v is not None})
    check_config(cfg)
    return cfg


def check_config(cfg: TrainConfig) -> None:
    unet_depth(cfg.size)  # raises for unsupported sizes
    positive = {"--ngf": cfg.ngf, "--ndf": cfg.ndf, "--steps": cfg.steps, "--batch-size": cfg.batch_size,
                "--sample-every": cfg.sample_every, "--checkpoint-every": cfg.checkpoint_every}
    for flag, value in positive.items():
        if value < 1:
            raise ValueError(f"{flag} {value} must be at least 1")
    if cfg.lr <= 0 or cfg.lambda_l1 < 0 or cfg.hole_weight <= 0:
        raise ValueError("--lr and --hole-weight must be positive and --lambda-l1 non-negative")
    if not 0.0 <= cfg.decay_start <= 1.0:
        raise ValueError(f"--decay-start {cfg.decay_start} must be a fraction between 0 and 1")
    if cfg.stop_at is not None and cfg.stop_at < 1:
        raise ValueError(f"--stop-at {cfg.stop_at} must be at least 1")
    if cfg.workers < 0 or cfg.keep_checkpoints < 0:
        raise ValueError("--workers and --keep-checkpoints must be >= 0")
    if cfg.holes not in HOLE_CHOICES:
        raise ValueError(f"--holes {cfg.holes!r}; choose from {', '.join(HOLE_CHOICES)}")
    if cfg.gan_mode not in ("vanilla", "lsgan"):
        raise ValueError(f"--gan-mode {cfg.gan_mode!r}; choose vanilla or lsgan")


def main(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if cfg.dry_run:
        from .data import load_dataset

        dataset = load_dataset(cfg.data)
        _check_dataset_size(len(dataset.samples), cfg, processes=1)
        print(describe(cfg, len(dataset.samples)))
        return 0
    try:
        train(cfg)
    except TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def describe(cfg: TrainConfig, n_images: int, processes: int = 1) -> str:
    n_g, n_d = count_parameters(cfg.size, cfg.ngf, cfg.ndf, cfg.n_layers_d)
    lines = [f"pix2pix training on {n_images} images from {cfg.data} -> {cfg.out}"]
    lines += [f"  {f.name}: {getattr(cfg, f.name)}" for f in dataclasses.fields(cfg) if f.name not in ("data", "out")]
    lines += [f"  generator: unet_{cfg.size} ({unet_depth(cfg.size)} levels), {n_g:,} parameters ({n_g / 1e6:.1f} M)",
              f"  discriminator: {cfg.n_layers_d}-layer PatchGAN, {n_d:,} parameters ({n_d / 1e6:.2f} M)",
              f"  processes: {processes}, images per step: {cfg.batch_size * processes}"]
    return "\n".join(lines)


def _check_dataset_size(n_images: int, cfg: TrainConfig, processes: int) -> None:
    if n_images < cfg.batch_size * processes:
        raise ValueError(f"{cfg.data} has {n_images} usable images, fewer than one batch "
                         f"({cfg.batch_size} x {processes} processes); add images or lower --batch-size")


# ---------------------------------------------------------------------------------------------------- model


class GANLoss(nn.Module):
    """The reference's GANLoss: 'vanilla' = BCE on logits, 'lsgan' = MSE, against a map of 1s (real) or 0s."""

    def __init__(self, gan_mode: str):
        super().__init__()
        self.loss = nn.BCEWithLogitsLoss() if gan_mode == "vanilla" else nn.MSELoss()

    def forward(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        prediction = prediction.float()  # losses in fp32 under mixed precision
        return self.loss(prediction, torch.full_like(prediction, 1.0 if target_is_real else 0.0))


def set_requires_grad(net: nn.Module, requires_grad: bool) -> None:
    for p in net.parameters():
        p.requires_grad_(requires_grad)


class Pix2Pix:
    """The paper's training step, after the reference's Pix2PixModel; `accelerator` does backward and steps.

    real_A = masked image + mask (the condition), real_B = the full image, fake_B = G(real_A).
    """

    def __init__(self, netG, netD, optimizer_G, optimizer_D, cfg: TrainConfig, accelerator, channels_last=False):
        self.netG, self.netD = netG, netD
        self.optimizer_G, self.optimizer_D = optimizer_G, optimizer_D
        self.accelerator = accelerator
        self.criterionGAN = GANLoss(cfg.gan_mode)
        self.lambda_L1 = cfg.lambda_l1
        self.hole_weight = cfg.hole_weight
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def set_input(self, images: torch.Tensor, masks: torch.Tensor) -> None:
        device = self.accelerator.device
        images, masks = images.to(device), masks.to(device)
        self.mask = masks
        self.real_A = generator_input(images, masks).contiguous(memory_format=self.memory_format)
        self.real_B = (images * 2.0 - 1.0).contiguous(memory_format=self.memory_format)

    def forward(self) -> None:
        self.fake_B = self.netG(self.real_A)

    def criterionL1(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        if self.hole_weight == 1.0:
            return F.l1_loss(fake.float(), real)  # the paper's L1
        weight = 1.0 + (self.hole_weight - 1.0) * self.mask
        return (weight * (fake.float() - real).abs()).mean()

    def backward_D(self) -> None:
        # fake: stop the gradient into G by detaching fake_B
        fake_AB = torch.cat((self.real_A, self.fake_B), 1)
        pred_fake = self.netD(fake_AB.detach())
        self.loss_D_fake = self.criterionGAN(pred_fake, False)
        # real
        real_AB = torch.cat((self.real_A, self.real_B), 1)
        pred_real = self.netD(real_AB)
        self.loss_D_real = self.criterionGAN(pred_real, True)
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
        self.loss_G_L1 = self.criterionL1(self.fake_B, self.real_B) * self.lambda_L1
        self.loss_G = self.loss_G_GAN + self.loss_G_L1
        self.accelerator.backward(self.loss_G)

    def optimize_parameters(self) -> dict[str, float]:
        self.forward()
        set_requires_grad(self.netD, True)
        self.optimizer_D.zero_grad()
        self.backward_D()
        self.optimizer_D.step()
        set_requires_grad(self.netD, False)  # D needs no gradients while G is optimised
        self.optimizer_G.zero_grad()
        self.backward_G()
        self.optimizer_G.step()
        return {"D_real": self.loss_D_real.item(), "D_fake": self.loss_D_fake.item(),
                "G_GAN": self.loss_G_GAN.item(), "G_L1": self.loss_G_L1.item()}


def lr_factor(step: int, steps: int, decay_start: float) -> float:
    """Constant, then linear decay (the reference's 'linear' policy counted in steps instead of epochs)."""
    start = int(round(decay_start * steps))
    return 1.0 - max(0, step - start) / float(steps - start + 1)


# ---------------------------------------------------------------------------------------------------- data


def _step_seed(seed: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, 2, step, rank]).generate_state(1)[0])


class TrainingImages(torch.utils.data.Dataset):
    """Index = global sample position; the example at a position depends only on (seed, position)."""

    def __init__(self, samples, cfg: TrainConfig):
        self.samples = samples
        self.size = cfg.size
        self.holes = cfg.holes
        self.flip = cfg.flip
        self.seed = cfg.seed

    def __len__(self) -> int:
        return len(self.samples)

    @lru_cache(maxsize=4)
    def order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, 0, epoch]).permutation(len(self.samples))

    def __getitem__(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, offset = divmod(int(position), len(self.samples))
        index = int(self.order(epoch)[offset])
        flip = self.flip and np.random.default_rng([self.seed, 1, position]).random() < 0.5
        return self.example(index, np.random.default_rng([self.seed, 3, position]), flip)

    def example(self, index: int, rng: np.random.Generator, flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """3×S×S image in [0, 1] and 1×S×S mask (1 = hole) for sample `index`."""
        sample = self.samples[index]
        shape = (self.size, self.size)
        image = torch.tensor(sample.load_image()).permute(2, 0, 1)[None].float() / 255.0  # copies the read-only array
        image = resize_images(image, shape)[0]
        if self.holes == "dataset":
            mask = resize_masks(torch.tensor(sample.load_mask())[None, None], shape)[0]
        else:
            mask = torch.from_numpy(_generated_holes(self.size, self.holes, rng))[None].float()
        if flip:
            image, mask = image.flip(-1), mask.flip(-1)
        return image.contiguous(), mask.contiguous()


def _generated_holes(size: int, protocol: str, rng: np.random.Generator) -> np.ndarray:
    from .masks import box_mask, irregular_mask

    if protocol == "box":  # the box protocol: two 75x75 holes at 256 px, scaled with the image
        return box_mask(size, size, 2, max(1, int(round(75 * size / 256))), rng)
    return irregular_mask(size, size, protocol, rng)


class StepBatches(torch.utils.data.Sampler):
    """The positions of each step's batch on this process, for steps [start, stop)."""

    def __init__(self, start: int, stop: int, batch_size: int, rank: int, processes: int):
        self.start, self.stop, self.batch_size, self.rank, self.processes = start, stop, batch_size, rank, processes

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self):
        for step in range(self.start, self.stop):
            first = (step * self.processes + self.rank) * self.batch_size
            yield list(range(first, first + self.batch_size))


# ---------------------------------------------------------------------------------------------------- checkpoints


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise ValueError(f"{path} is missing; the checkpoint is incomplete: delete its folder (an older one is then "
                         "used) or start a new --out")
    try:
        return load_file(str(path))
    except Exception as err:  # SafetensorError, or OSError for unreadable files
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"{path} is not a readable safetensors file ({reason}); checkpoints are read from "
                         "safetensors only: pass a folder written by `diffinpaint train pix2pix`") from None


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise ValueError(f"{path} is missing; the checkpoint is incomplete: delete its folder (an older one is then "
                         "used) or start a new --out")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); the checkpoint is damaged: delete its folder") from None


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def optimizer_to_safetensors(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimiser state_dict into tensors ('state.<param>.<key>') and a JSON-able rest."""
    tensors, scalars = {}, {}
    for index, state in state_dict["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"state.{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state_dict["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_from_safetensors(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    for name, value in meta["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def checkpoint_dirs(out: Path) -> list[tuple[int, Path]]:
    """Complete checkpoint folders in OUT/checkpoints, oldest first."""
    found = []
    root = Path(out) / "checkpoints"
    if root.is_dir():
        for path in root.iterdir():
            match = re.fullmatch(r"step_(\d{6,})", path.name)
            if match and path.is_dir():
                found.append((int(match.group(1)), path))
    return sorted(found)


def resolve_checkpoint(path: str | Path) -> Path:
    """A training --out folder (-> its newest checkpoint), a checkpoint folder, or a file inside one."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"pix2pix checkpoint {path} does not exist; pass the --out folder of `diffinpaint train "
                         "pix2pix`")
    if path.is_file():
        if path.suffix != ".safetensors" or not (path.parent / "config.json").is_file():
            raise ValueError(f"{path} is not a pix2pix checkpoint (safetensors only, never pickles); pass the --out "
                             "folder of `diffinpaint train pix2pix`")
        return path.parent
    if (path / "generator.safetensors").exists() or (path / "config.json").exists():
        return path
    found = checkpoint_dirs(path)
    if not found:
        raise ValueError(f"{path} holds no pix2pix checkpoint (checkpoints/step_*/); train one with "
                         f"`diffinpaint train pix2pix --data DATA --out {path}`")
    return found[-1][1]


def _config_from_json(raw: dict, where: Path) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    try:
        return TrainConfig(**{k: v for k, v in raw.items() if k in names})
    except TypeError as err:
        raise ValueError(f"{where} is not a pix2pix training config ({err}); pass a folder written by "
                         "`diffinpaint train pix2pix`") from None


def _load_weights(net: nn.Module, path: Path, cfg: TrainConfig) -> None:
    tensors = _load_tensors(path)
    try:
        net.load_state_dict(tensors, strict=True)
    except RuntimeError:
        raise ValueError(f"{path} does not fit the configuration in its config.json (size {cfg.size}, ngf {cfg.ngf}, "
                         f"ndf {cfg.ndf}); the folder mixes files of different runs: retrain or restore it") from None


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Generator in eval mode + {checkpoint, step, config, generator_sha256}; reads safetensors and JSON only."""
    folder = resolve_checkpoint(path)
    cfg = _config_from_json(_read_json(folder / "config.json"), folder / "config.json")
    state = _read_json(folder / "state.json")
    weights = folder / "generator.safetensors"
    generator = build_generator(cfg.size, cfg.ngf, cfg.dropout)
    _load_weights(generator, weights, cfg)
    generator.to(device).eval()
    info = {"checkpoint": str(folder.resolve()), "step": int(state.get("step", -1)), "config": cfg,
            "generator_sha256": sha256_file(weights)}
    return generator, info


def save_checkpoint(out: Path, step: int, cfg: TrainConfig, netG, netD, optimizer_G, optimizer_D,
                    schedulers: dict, scaler, processes: int) -> Path:
    """Write OUT/checkpoints/step_N atomically: into a temporary folder, fsync'd, then renamed into place."""
    root = Path(out) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:06d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    _save_tensors(netG.state_dict(), tmp / "generator.safetensors")
    _save_tensors(netD.state_dict(), tmp / "discriminator.safetensors")
    optim_meta = {}
    for name, optimizer in (("optimizer_G", optimizer_G), ("optimizer_D", optimizer_D)):
        tensors, optim_meta[name] = optimizer_to_safetensors(optimizer.state_dict())
        _save_tensors(tensors, tmp / f"{name}.safetensors")
    _write_json(tmp / "config.json", dataclasses.asdict(cfg))
    _write_json(tmp / "state.json", {
        "format": FORMAT, "version": FORMAT_VERSION, "step": step, "processes": processes,
        "optimizers": optim_meta,
        "schedulers": {k: s.state_dict() for k, s in schedulers.items()},
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": "derived from (seed, step, rank) at every step; nothing to restore",
        "sha256": {name: sha256_file(tmp / name) for name in CHECKPOINT_FILES if name.endswith(".safetensors")},
    })
    for name in CHECKPOINT_FILES:
        with open(tmp / name, "rb") as f:
            os.fsync(f.fileno())
    if final.exists():  # the same step written again (e.g. --stop-at then an identical rerun): replace it whole
        trash = root / f".old-{final.name}-{os.getpid()}"
        final.rename(trash)
        tmp.rename(final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        tmp.rename(final)
    return final


def prune_checkpoints(out: Path, keep: int) -> None:
    """Delete all but the newest `keep`; each is first renamed away, so no half-deleted step_N is ever seen."""
    if keep <= 0:
        return
    for _, path in checkpoint_dirs(out)[:-keep]:
        trash = path.with_name(f".old-{path.name}-{os.getpid()}")
        path.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)


def remove_leftovers(out: Path) -> None:
    """Temporary folders left by a run that was killed while writing or deleting a checkpoint."""
    root = Path(out) / "checkpoints"
    if root.is_dir():
        for path in root.iterdir():
            if path.name.startswith((".tmp-", ".old-")):
                shutil.rmtree(path, ignore_errors=True)


def load_training_state(folder: Path, cfg: TrainConfig, processes: int) -> tuple[dict, dict]:
    """Read and check a checkpoint for --resume; returns (state.json, tensors by file)."""
    for name in CHECKPOINT_FILES:
        if not (folder / name).is_file():
            raise ValueError(f"{folder / name} is missing; the checkpoint is incomplete: delete {folder} (an older "
                             "one is then used) or start a new --out")
    saved = _config_from_json(_read_json(folder / "config.json"), folder / "config.json")
    for name in RESUME_MUST_MATCH:
        if getattr(saved, name) != getattr(cfg, name):
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{folder} was trained with {name}={getattr(saved, name)!r} but this run has "
                             f"{getattr(cfg, name)!r}; pass {flag} {getattr(saved, name)} to resume, or a new --out")
    state = _read_json(folder / "state.json")
    if state.get("format") != FORMAT:
        raise ValueError(f"{folder / 'state.json'} is not a {FORMAT} state file; pass a folder written by "
                         "`diffinpaint train pix2pix`")
    if state.get("processes", 1) != processes:
        raise ValueError(f"{folder} was trained with {state.get('processes')} processes but this run has "
                         f"{processes}; resume with the same number (the data order depends on it)")
    tensors = {name: _load_tensors(folder / name) for name in CHECKPOINT_FILES if name.endswith(".safetensors")}
    return state, tensors


# ---------------------------------------------------------------------------------------------------- training


def _make_accelerator(cfg: TrainConfig):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda but no CUDA device is visible; use --device cpu or auto")
    cpu = cfg.device == "cpu" or not torch.cuda.is_available()
    if cfg.mixed_precision == "fp16" and cpu:
        raise ValueError("--mixed-precision fp16 needs a GPU; use bf16 or no on CPU")
    # broadcast_buffers=False: D runs twice per step; re-broadcasting its batch-norm buffers in between is the
    # classic in-place error of GANs under DDP. Each process keeps its own running statistics; rank 0's are saved.
    return Accelerator(cpu=cpu, mixed_precision=cfg.mixed_precision,
                       kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)])


def _tensor_to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


@torch.no_grad()
def write_sample_grid(path: Path, netG: nn.Module, images: torch.Tensor, masks: torch.Tensor, device) -> None:
    """Rows of masked input | output | target, with G in eval mode (as at inference)."""
    was_training = netG.training
    netG.eval()
    params = next(netG.parameters())
    fake = netG(generator_input(images, masks).to(device=device, dtype=params.dtype)).float().cpu()
    netG.train(was_training)
    output = (fake + 1.0) / 2.0
    masked = images * (1.0 - masks) + 0.5 * masks
    rows = [torch.cat([m, o, t], dim=2) for m, o, t in zip(masked, output, images)]
    grid = _tensor_to_uint8(torch.cat(rows, dim=1))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, png_bytes(grid))


def _rewrite_log(path: Path, keep_until: int) -> None:
    """Drop log lines after the resumed step, so the log reads as one uninterrupted run."""
    if not path.exists():
        return
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
        if isinstance(row, dict) and row.get("step", 0) <= keep_until:
            lines.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def train(cfg: TrainConfig) -> Path:
    """Train (or continue) and return the last checkpoint folder. Raises ValueError on bad input, TrainingDiverged
    when a loss stops being finite."""
    from tqdm.auto import tqdm

    from .data import load_dataset

    # 1. Check inputs before any work
    check_config(cfg)
    out = Path(cfg.out)
    dataset = load_dataset(cfg.data)
    accelerator = _make_accelerator(cfg)
    rank, processes = accelerator.process_index, accelerator.num_processes
    _check_dataset_size(len(dataset.samples), cfg, processes)
    existing = checkpoint_dirs(out)
    if cfg.resume and not existing:
        raise ValueError(f"--resume but {out} holds no checkpoint (checkpoints/step_*/); drop --resume to start fresh")
    if not cfg.resume and existing:
        raise ValueError(f"{out} already holds checkpoints (newest: step {existing[-1][0]}); pass --resume to "
                         "continue, or choose another --out")
    resume_from = existing[-1][1] if cfg.resume else None
    saved_state, saved_tensors = (load_training_state(resume_from, cfg, processes) if resume_from
                                  else (None, None))
    start = saved_state["step"] if saved_state else 0
    stop = min(cfg.steps, cfg.stop_at) if cfg.stop_at else cfg.steps
    if accelerator.is_main_process:
        print(describe(cfg, len(dataset.samples), processes))
        if resume_from:
            print(f"  resuming from {resume_from} (step {start})")
    if start >= stop:
        if accelerator.is_main_process:
            print(f"nothing to do: the checkpoint is at step {start}, this run stops at step {stop}")
        return resume_from

    # 2. Networks, optimisers, schedulers (same init on every process: seeded before building)
    torch.manual_seed(cfg.seed)
    netG = init_weights(build_generator(cfg.size, cfg.ngf, cfg.dropout))
    netD = init_weights(build_discriminator(cfg.ndf, cfg.n_layers_d))
    if saved_tensors:
        netG.load_state_dict(saved_tensors["generator.safetensors"])
        netD.load_state_dict(saved_tensors["discriminator.safetensors"])
    channels_last = accelerator.device.type == "cuda"  # faster convolutions with cuDNN
    if channels_last:
        netG.to(memory_format=torch.channels_last)
        netD.to(memory_format=torch.channels_last)
    netG.train()
    netD.train()
    optimizer_G = torch.optim.Adam(netG.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    optimizer_D = torch.optim.Adam(netD.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    netG, netD, optimizer_G, optimizer_D = accelerator.prepare(netG, netD, optimizer_G, optimizer_D)
    if saved_state:
        for name, optimizer in (("optimizer_G", optimizer_G), ("optimizer_D", optimizer_D)):
            optimizer.load_state_dict(optimizer_from_safetensors(saved_tensors[f"{name}.safetensors"],
                                                                 saved_state["optimizers"][name]))
    # plain LambdaLR, deliberately not prepared: accelerate would step it once per process
    schedule = lambda step: lr_factor(step, cfg.steps, cfg.decay_start)  # noqa: E731
    schedulers = {"G": torch.optim.lr_scheduler.LambdaLR(optimizer_G.optimizer, schedule),
                  "D": torch.optim.lr_scheduler.LambdaLR(optimizer_D.optimizer, schedule)}
    if saved_state:
        for key, scheduler in schedulers.items():
            scheduler.load_state_dict(saved_state["schedulers"][key])
            for group, lr in zip(scheduler.optimizer.param_groups, scheduler.get_last_lr()):
                group["lr"] = lr
        scaler = accelerator.scaler
        if scaler is not None and saved_state.get("scaler"):
            scaler.load_state_dict(saved_state["scaler"])
    model = Pix2Pix(netG, netD, optimizer_G, optimizer_D, cfg, accelerator, channels_last=channels_last)

    # 3. Data: each step's batch is a function of (seed, step, rank)
    images = TrainingImages(dataset.samples, cfg)
    loader = torch.utils.data.DataLoader(images, batch_sampler=StepBatches(start, stop, cfg.batch_size, rank,
                                                                           processes),
                                         num_workers=cfg.workers, persistent_workers=False)
    n_grid = min(4, len(dataset.samples))
    grid = [images.example(i, np.random.default_rng([cfg.seed, 4, i]), False) for i in range(n_grid)]
    grid_images, grid_masks = torch.stack([g[0] for g in grid]), torch.stack([g[1] for g in grid])
    log_path = out / "log.jsonl"
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        remove_leftovers(out)
        _rewrite_log(log_path, start)

    # 4. Train
    last_good = resume_from
    progress = tqdm(total=stop, initial=start, desc="pix2pix", disable=not accelerator.is_local_main_process,
                    dynamic_ncols=True)
    step = start
    for batch_images, batch_masks in loader:
        torch.manual_seed(_step_seed(cfg.seed, step, rank))  # dropout noise as a function of (seed, step, rank)
        model.set_input(batch_images, batch_masks)
        losses = model.optimize_parameters()
        lr = optimizer_G.param_groups[0]["lr"]
        for scheduler in schedulers.values():
            scheduler.step()
        step += 1
        bad = torch.tensor(0.0 if all(math.isfinite(v) for v in losses.values()) else 1.0, device=accelerator.device)
        if processes > 1:
            bad = accelerator.reduce(bad, reduction="sum")
        if bad.item() > 0:
            progress.close()
            shown = ", ".join(f"{k}={v:.4g}" for k, v in losses.items())
            kept = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written yet"
            raise TrainingDiverged(f"a loss is not finite at step {step} ({shown}); training stopped and {kept} "
                                   "(resume with --resume, perhaps with a lower --lr or --mixed-precision no)")
        progress.update(1)
        progress.set_postfix({k: f"{v:.3f}" for k, v in losses.items()})
        if accelerator.is_main_process:
            with open(log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": step, "lr": lr, **losses}) + "\n")
            if step % cfg.sample_every == 0 or step == stop:
                write_sample_grid(out / "samples" / f"step_{step:06d}.png", accelerator.unwrap_model(netG),
                                  grid_images, grid_masks, accelerator.device)
        if step % cfg.checkpoint_every == 0 or step == stop:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                last_good = save_checkpoint(out, step, cfg, accelerator.unwrap_model(netG),
                                            accelerator.unwrap_model(netD), optimizer_G, optimizer_D, schedulers,
                                            accelerator.scaler, processes)
                prune_checkpoints(out, cfg.keep_checkpoints)
            else:
                last_good = out / "checkpoints" / f"step_{step:06d}"
            accelerator.wait_for_everyone()
    progress.close()
    return last_good
