"""What a model writes to be trained by the one trainer (training/trainer.py).

A trainable model is a package `diffinpaint/models/<name>/` with
    nets.py      its networks, and `build_network(config, name) -> nn.Module` (no initialisation needed there)
    __init__.py  imports nothing heavy; exposes `build_network` and `Predictor` (inference, see models/trained.py)
    step.py      a `TrainableModel` subclass: options, networks + init, optimisers, ONE training step
                 (`backward_D`, `backward_G` reading like the paper). Only training code imports step.py.

The trainer owns everything else, once, for every model: accelerate (processes, mixed precision), the RNG as a
function of (seed, step, rank), data order, flips, generated holes (a model may supply its own, `make_holes`) and
image augmentation (a model may supply one, `augmentation`), the LR schedule, EMA copies, the NaN/inf
stop, log.jsonl, sample grids, checkpoints (safetensors + JSON), --resume, --dry-run, --stop-at, trackers.

Randomness inside `train_step` (latent codes, diffusion noise and timesteps, dropout, gradient-penalty mixing)
must come from torch's global RNG: the trainer re-seeds it from (seed, step, rank) before every step, so a
resumed run draws exactly what the uninterrupted run would have drawn.

`train_step` returns its losses as detached 0-dim tensors on the device (not Python floats): the trainer keeps
them there and reads a block of steps at once, every --log-every steps.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from torch import nn

from .losses import set_requires_grad


@dataclass
class Batch:
    """One step's examples on the training device.

    images: N×3×S×S float in [0, 1] (the targets)
    masks:  N×1×S×S float in {0, 1}, 1 = hole to fill (all zeros for unconditional models, holes == "none")
    """

    images: torch.Tensor
    masks: torch.Tensor


def flat_config(cfg, opts) -> dict[str, Any]:
    """config.json: one flat mapping of the shared TrainConfig then the model's own options (what each model's
    build_network reads, and what the trainer writes and compares on --resume)."""
    return {**dataclasses.asdict(cfg), **dataclasses.asdict(opts)}


class TrainableModel:
    """Base class of every model's training side. Subclasses set the class attributes and implement the methods
    marked 'required'.

    Attributes set by the trainer before `build_networks`:
        self.cfg          the shared TrainConfig (size, lr, steps, batch_size, seed, holes, ...)
        self.opts         an instance of `Options` (the model's own settings)
    and before the first `train_step`:
        self.accelerator  accelerate's Accelerator (through a thin wrapper whose backward is loss.backward() where
                          accelerate's would only divide by 1): use `self.accelerator.backward(loss)`, `.no_sync(net)`
        self.nets         dict name -> network, prepared by accelerate (DDP-wrapped under several processes)
        self.optimizers   dict name -> optimiser (accelerate's wrapper only with a gradient scaler, i.e. fp16)
        self.step         the number of optimiser steps done before this one (0 for the first)
    """

    name: ClassVar[str] = ""
    # the model's own options: a dataclass of util.options `option(...)` fields (flag, help, range, whether it
    # shapes the weights), declared once; flags, validation, config.json and --resume's comparison come from it
    Options: ClassVar[type] = type(None)
    # the paper's / reference's configuration for the shared options (size, lr, steps, batch_size, holes,
    # decay_start): what `train NAME` trains with no options; say in paper_note what the step count corresponds to
    defaults: ClassVar[dict[str, Any]] = {}
    paper_note: ClassVar[str] = ""
    # other configurations, shared and own options (--preset NAME); "quick" = the small CPU one `make demo` uses
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    # accepted --holes values. "dataset" = the dataset's own masks; "box", "thin", "medium", "thick" = the
    # toolkit's generators; "none" = no holes (unconditional models); any other name = the model's own
    # generator, drawn by `make_holes`
    hole_choices: ClassVar[tuple[str, ...]] = ("dataset", "box", "thin", "medium", "thick")
    # EMA copies the trainer keeps (diffusers' EMAModel average, fused foreach updates, every --ema-every steps):
    # network name -> decay; saved as <name>_ema
    ema: ClassVar[dict[str, float]] = {}
    # options (shared and own) of a tiny configuration that trains in seconds on a CPU: the registry's contract
    # test and `eval/bench_train.py --quick` use it, so a registered model is tested without further code
    tiny: ClassVar[dict[str, Any]] = {}

    def check(self) -> None:
        """Raise UserError (one line: what and the fix) for options this model cannot train with, e.g. a --size
        below the networks' minimum (types and ranges are checked from the declarations before). Called before
        any work."""

    def build_networks(self) -> dict[str, nn.Module]:
        """Required. Every network, initialised as the paper does. The trainer seeds torch with cfg.seed first,
        so the same seed gives the same initial weights. Network names are checkpoint file names."""
        raise NotImplementedError

    def build_optimizers(self, nets: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        """Required. name -> optimiser (names like 'optimizer_G'); the trainer's LR schedule scales each one's
        learning rate by the same factor over the steps."""
        raise NotImplementedError

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Required. One optimisation step (all its networks); returns the losses to log as 0-dim tensors, detached
        and left on the device (`loss.detach()`, never `.item()` or `float(...)`): the trainer reads them once per
        --log-every steps, so on a GPU the host never waits for the device inside the loop. Nothing else in the step
        should read a value back to the host either (`.item()`, `.tolist()`, `.cpu()`, `if tensor:`)."""
        raise NotImplementedError

    def make_holes(self, size: int, rng: np.random.Generator) -> np.ndarray:
        """The model's own hole generator (when its name is in hole_choices): bool size×size, True = hole. Draw
        only from `rng` (it is made from the seed and the example's position; the trainer may call this from a
        background thread, so torch's global RNG is not this function's to use)."""
        raise NotImplementedError

    def augmentation(self) -> Callable[[np.ndarray, np.random.Generator], np.ndarray] | None:
        """The model's per-example image augmentation with its options in force, or None (the default: the trainer's
        resize to --size and --flip only, nothing drawn for it). The trainer calls the returned `augment(image, rng)`
        for every training example (not the sample grid's): `image` is the cached example, 3×S×S float32 in [0, 1],
        to read and never write; it returns a new 3×S×S float32 array in [0, 1]. The image only: holes are drawn
        independently of it, and the trainer's --flip of image and mask comes after it (a model whose reference
        flips leaves that to --flip). Draw only from `rng` (made from (seed, position), as make_holes'; the call runs
        between steps on a CPU, in the batch thread on a GPU, or in a DataLoader worker), and make it picklable
        (workers receive a copy)."""
        return None

    def network_config(self) -> dict[str, Any]:
        """The flat config build_network reads: config.json's mapping (flat_config) with the options in force."""
        return flat_config(self.cfg, self.opts)

    @torch.no_grad()
    def sample(self, batch: Batch) -> torch.Tensor:
        """Required. Outputs for the sample grid, N×3×S×S in [0, 1], with the networks in eval mode as at
        inference (the trainer switches them back to train mode afterwards). Unconditional models may ignore
        the batch and return their own samples (drawn from torch's RNG, seeded by the trainer)."""
        raise NotImplementedError

    def describe(self) -> list[str]:
        """Extra lines for --dry-run (the trainer already prints each network's parameter count)."""
        return []

    # -------------------------------------------------- the two halves of a GAN step (pix2pix's optimize_parameters)
    # For models that set self.netD and write backward_D / backward_G, with optimisers named optimizer_D/optimizer_G.

    def update_D(self, clip: float = 0.0) -> None:
        """One discriminator update: D unfrozen, backward_D, (gradient-norm clipping), step."""
        set_requires_grad(self.netD, True)
        optimizer = self.optimizers["optimizer_D"]
        optimizer.zero_grad()
        self.backward_D()
        if clip > 0:
            self.accelerator.clip_grad_norm_(self.netD.parameters(), clip)
        optimizer.step()

    def update_G(self, clip: float = 0.0) -> None:
        """One generator update with D frozen (D's parameters need no gradient while G is optimised)."""
        set_requires_grad(self.netD, False)
        optimizer = self.optimizers["optimizer_G"]
        optimizer.zero_grad()
        self.backward_G()
        if clip > 0:
            self.accelerator.clip_grad_norm_(self.netG.parameters(), clip)
        optimizer.step()
