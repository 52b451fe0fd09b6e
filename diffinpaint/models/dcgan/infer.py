"""Semantic image inpainting (Yeh et al., CVPR 2017) on the unconditional DCGAN that `diffinpaint train dcgan` trains.

    diffinpaint run --model dcgan --checkpoint runs/dcgan --data DATA --out RUN

The generator never sees the image. Each image gets the latent code whose output best matches its known pixels:

    ẑ = argmin_z  ‖W ⊙ (G(z) − y)‖₁  +  λ · log(1 − D(G(z)))        (context loss + prior loss, paper eq. 2-4)

  - W = M ⊙ box₇(1 − M), M = 1 on known pixels: a known pixel weighs the fraction of hole pixels in the 7×7
    window around it, so the pixels next to the hole count most and far ones not at all (moodoki
    extensions/src/tools.py createWeightedMask: the same box filter with symmetric borders);
  - the L1 sum runs over pixels and colour channels, in the [−1, 1] range, per image (moodoki);
  - the prior is the paper's log(1 − D(G(z))) = −softplus(logit), λ = 0.003 (paper). moodoki's code uses the
    DCGAN generator loss instead (the non-saturating −log D(G(z)), averaged over its batch of 64, so its λ acts
    per image as λ/64); both push G(z) towards what D finds real;
  - Adam on z for --dcgan-iterations (1500, paper) steps at lr 0.01 (bamos' Adam; the paper gives no rate),
    z clipped to [−1, 1] after every step (the prior's support, paper);
  - --dcgan-restarts codes per image (moodoki fills its batch with 64 of them), the lowest weighted context loss
    wins;
  - the winner's pixels are Poisson-blended into the hole (paper; moodoki solves the sparse system with pyamg,
    here scipy's SuperLU, `poisson_blend`), so the fill keeps G's gradients but meets the known colours at the
    hole's edge. Not cv2.seamlessClone: it works in 8 bits, keeps the destination's gradients in a 3-px band
    inside its mask (it erodes the mask), takes forward differences from the destination's hole content on the
    top/left edges, and needs the mask's bounding box inside the image; with the border handled by padding, a
    hole touching the border still kept ~35 % of a constant colour offset. The sparse solve treats the image
    border as zero-flux and removes such an offset exactly.

Seeds and batches: each image draws its starting codes from its own torch.Generator().manual_seed(seed); the
networks run in eval mode (batch norm on running statistics) and the objective is a sum of per-image terms, and
Adam updates each coordinate of z from its own gradient, so mathematically an image's result does not depend on
its batch. Numerically it would: 1500 Adam steps amplify the last-bit differences between the convolution
algorithms cuDNN picks for different batch sizes (measured on an H100: codes 0.37 apart after 300 steps, and
TF32 convolutions differ even run to run). So the search always runs on chunks of the same shape (CHUNK_ROWS
codes; the last chunk padded with inert rows of zero weight), with deterministic cuDNN and without TF32: an
image's result is then bitwise the same alone, at any position of any batch, run after run (checked on CPU and
on an H100).
The search runs with gradients enabled even when the caller is inside torch.no_grad() (the runner must not use
inference_mode: needs_grad = True); the networks' parameters are frozen during it and never updated.
"""
from __future__ import annotations

import argparse
import contextlib
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch
import torch.nn.functional as F
from torch import nn

from ...util.errors import UserError
from ...util.options import option
from ..predictor import Predictor

WINDOW = 7  # neighbourhood of the weighted context loss (paper, moodoki tools.py default)
BLENDS = ("poisson", "none")
CHUNK_ROWS = 64  # codes optimised together (moodoki's batch of 64 candidates); a fixed shape, see above


@dataclass
class DCGANSettings:
    # paper: 1500
    iterations: int = option(1500, "dcgan: Adam steps on the latent code per image", flag="--dcgan-iterations",
                             minimum=1)
    # the best weighted context loss wins (moodoki: a batch of 64)
    restarts: int = option(4, "dcgan: starting codes per image, the best context loss wins", flag="--dcgan-restarts",
                           minimum=1)
    prior_weight: float = option(0.003, "dcgan: weight λ of the prior loss (paper: 0.003)", flag="--dcgan-lambda",
                                 minimum=0)
    # bamos' complete.py; the paper gives none
    z_lr: float = option(0.01, "dcgan: Adam learning rate on z", flag="--dcgan-lr", above=0)
    # poisson: blend the fill into the hole (paper); none: the raw G(ẑ) (the runner composites)
    blend: str = option("poisson", "dcgan: Poisson-blend the fill into the hole or not", flag="--dcgan-blend",
                        choices=BLENDS)


# ------------------------------------------------------------------------------------------ the objective


def _pad_symmetric(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Mirror padding that repeats the edge pixel (numpy/scipy 'symmetric': a b c -> b a | a b c | c b)."""
    x = torch.cat([x[..., :pad, :].flip(-2), x, x[..., -pad:, :].flip(-2)], -2)
    return torch.cat([x[..., :pad].flip(-1), x, x[..., -pad:].flip(-1)], -1)


def context_weights(masks: torch.Tensor, window: int = WINDOW) -> torch.Tensor:
    """W = M ⊙ box_window(1 − M) with M = known pixels (masks: N×1×H×W, 1 = hole). Symmetric borders, as
    scipy's convolve2d(..., mode='same', boundary='symm') in moodoki's createWeightedMask."""
    known = 1.0 - masks
    hole_fraction = F.avg_pool2d(_pad_symmetric(masks, window // 2), window, stride=1)
    return known * hole_fraction


def context_loss(fake: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """‖W ⊙ (G(z) − y)‖₁ per image (N values), images in [−1, 1], summed over pixels and channels."""
    return (weights * (fake - target)).abs().flatten(1).sum(1)


def prior_loss(logits: torch.Tensor) -> torch.Tensor:
    """log(1 − D(G(z))) per image, from D's logits: log(1 − σ(l)) = −softplus(l)."""
    return -F.softplus(logits.flatten(1).sum(1))


@contextlib.contextmanager
def frozen(*nets: nn.Module) -> Iterator[None]:
    """Parameters take no gradient inside (only z is optimised); their previous flags come back afterwards."""
    params = [p for net in nets for p in net.parameters()]
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


@contextlib.contextmanager
def exact_numerics() -> Iterator[None]:
    """Deterministic cuDNN algorithms, no TF32 (a 10-bit mantissa the search would amplify); restored after."""
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
             torch.backends.cuda.matmul.allow_tf32)
    try:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        yield
    finally:
        (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
         torch.backends.cuda.matmul.allow_tf32) = saved


def search_latents(generator: nn.Module, discriminator: nn.Module, target: torch.Tensor, weights: torch.Tensor,
                   z: torch.Tensor, iterations: int, lr: float, prior_weight: float) -> torch.Tensor:
    """Adam on z (one row per candidate; target and weights aligned with it) for `iterations` steps, z clipped to
    [−1, 1] after each; returns the final codes. The loss is a sum over candidates, never a mean, so each row's
    gradient is its own objective's, whatever else is in the batch."""
    with torch.enable_grad(), frozen(generator, discriminator):
        z = z.detach().clone().requires_grad_(True)
        optimizer = torch.optim.Adam([z], lr=lr)
        for _ in range(iterations):
            optimizer.zero_grad(set_to_none=True)
            fake = generator(z)
            loss = context_loss(fake.float(), target, weights) + prior_weight * prior_loss(discriminator(fake).float())
            loss.sum().backward()
            optimizer.step()
            with torch.no_grad():
                z.clamp_(-1.0, 1.0)
    return z.detach()


# ------------------------------------------------------------------------------------------ Poisson blending


def poisson_blend(image: np.ndarray, fill: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Pérez et al.'s Poisson image editing of `fill` into `image` over `hole` (H×W×C float, H×W bool): inside the
    hole the result has the fill's gradients (the guidance field), at the hole's edge it meets the known pixels
    (Dirichlet). For every hole pixel p and each of its 4-neighbours q inside the image:
        Σ_q (f_p − f_q) = Σ_q (fill_p − fill_q),   with f_q = image_q when q is known.
    Neighbours outside the image are left out (a zero-flux, Neumann, condition), so a hole touching the border is
    blended over all its pixels and where it meets the border it simply keeps the fill's shape. The hole pixels of
    `image` are never read. One sparse solve per image (SuperLU), in float64: no 8-bit rounding."""
    if not hole.any():
        return image.copy()
    if hole.all():
        return fill.copy()  # no known pixel to blend towards
    height, width = hole.shape
    ys, xs = np.nonzero(hole)
    n = ys.size
    index = np.full(hole.shape, -1, dtype=np.int64)
    index[ys, xs] = np.arange(n)
    degree = np.zeros(n)
    rhs = np.zeros((n, image.shape[2]))
    rows, cols = [], []
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        qy, qx = ys + dy, xs + dx
        inside = (qy >= 0) & (qy < height) & (qx >= 0) & (qx < width)
        p, qy, qx = np.nonzero(inside)[0], qy[inside], qx[inside]
        degree[p] += 1
        rhs[p] += fill[ys[p], xs[p]] - fill[qy, qx]  # the guidance: the fill's own gradient
        unknown = hole[qy, qx]
        rows.append(p[unknown])
        cols.append(index[qy[unknown], qx[unknown]])
        rhs[p[~unknown]] += image[qy[~unknown], qx[~unknown]]  # a known neighbour's value moves to the right side
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    matrix = scipy.sparse.csc_matrix(
        (np.concatenate([degree, -np.ones(rows.size)]), (np.concatenate([np.arange(n), rows]),
                                                           np.concatenate([np.arange(n), cols]))), shape=(n, n))
    solved = scipy.sparse.linalg.splu(matrix).solve(rhs)
    out = image.copy()
    out[ys, xs] = solved
    return out


# ------------------------------------------------------------------------------------------ the predictor


class DCGANPredictor(Predictor):
    networks = ("generator", "discriminator")
    needs_grad = True  # optimises z at test time
    deterministic = False  # the starting codes come from each image's seed
    Settings = DCGANSettings
    tiny = {"iterations": 5, "restarts": 2}

    @property
    def _settings(self) -> DCGANSettings:
        return self.settings if self.settings is not None else DCGANSettings()

    def start_codes(self, seeds: Sequence[int]) -> torch.Tensor:
        """(N·restarts)×z_dim codes ~ U[−1, 1], image i's rows drawn from its own seed (on the CPU, so any device
        draws the same)."""
        z_dim, restarts = int(self.config["z_dim"]), self._settings.restarts
        codes = [torch.rand(restarts, z_dim, generator=torch.Generator().manual_seed(int(seed))) * 2.0 - 1.0
                 for seed in seeds]
        return torch.cat(codes)

    def predict(self, images: torch.Tensor, masks: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        s = self._settings
        generator, discriminator = self.nets["generator"].eval(), self.nets["discriminator"].eval()
        restarts, z_dim = s.restarts, int(self.config["z_dim"])
        per_chunk = max(1, CHUNK_ROWS // restarts)  # images per chunk; every chunk has per_chunk·restarts rows
        targets, all_weights = images.float() * 2.0 - 1.0, context_weights(masks.float())
        codes = self.start_codes(seeds)
        dtype = next(generator.parameters()).dtype
        fills = []
        with exact_numerics():
            for first in range(0, images.shape[0], per_chunk):
                k = min(per_chunk, images.shape[0] - first)  # real images in this chunk; the rest is padding
                used = slice(0, k * restarts)
                target = targets.new_zeros(per_chunk * restarts, *targets.shape[1:])
                weights = targets.new_zeros(per_chunk * restarts, *all_weights.shape[1:])  # padding weighs 0
                z = torch.zeros(per_chunk * restarts, z_dim)
                target[used] = targets[first:first + k].repeat_interleave(restarts, 0)
                weights[used] = all_weights[first:first + k].repeat_interleave(restarts, 0)
                z[used] = codes[first * restarts:(first + k) * restarts]
                z = search_latents(generator, discriminator, target, weights, z.to(images.device, dtype),
                                   s.iterations, s.z_lr, s.prior_weight)
                with torch.no_grad():
                    fake = generator(z).float()  # the whole chunk: the same shape as in the search
                    best = context_loss(fake[used], target[used], weights[used]).view(k, restarts).argmin(1)
                    fills.append(fake[used].view(k, restarts, *fake.shape[1:])[torch.arange(k), best])
        fill = ((torch.cat(fills) + 1.0) / 2.0).clamp(0.0, 1.0)
        if s.blend == "none":
            return fill
        holes = (masks[:, 0] > 0.5).cpu().numpy()
        as_hwc = lambda t: t.permute(0, 2, 3, 1).cpu().double().numpy()  # noqa: E731
        blended = [poisson_blend(img, f, h) for img, f, h in zip(as_hwc(images.float()), as_hwc(fill), holes)]
        out = torch.from_numpy(np.stack(blended)).permute(0, 3, 1, 2)
        return out.to(images.device, torch.float32).clamp(0.0, 1.0)

    def resolved_outputs(self) -> dict[str, Any]:
        return {"window": WINDOW}
