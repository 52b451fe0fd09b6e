"""DMFN training ("Image Fine-grained Inpainting", Hui et al., arXiv 2002.02609) as the one trainer runs it,
after the authors' InpaintingModel (Zheng222/DMFN: models/inpainting_model.py, models/loss.py, utils.py and the
configs' weights).

One step, in the reference's order:
  output = m·G([x·(1−m), m]) + (1−m)·x                      (composited before every loss)
  G:  L1(output, x) × 1
    + VGG19 feature loss × 25: Σ_l 1e3/C_l² · L1 on relu1_1..relu5_1, the first two weighted by the self-guided
      map 1 + E (E = per-pixel squared error of the detached output, channel mean, divided by its per-image max;
      2×2 average-pooled for relu2_1)
    + geometrical alignment × 1: MSE between the per-channel spatial centroids of relu4_1 (maps as
      distributions fea/Σfea, coordinates in [−1, 1])
    + local-discriminator feature matching × 5: Σ_l 1e3/C_l² · L1 between the local branch's five feature maps on
      the output's and the target's crops
    + RaGAN × 0.003: ½[BCE(D(x) − E D(out), 0) + BCE(D(out) − E D(x), 1)]
  D:  ½[BCE(D(x) − E D(out), 1) + BCE(D(out) − E D(x), 0)]
Adam 2e-4, β = (0.5, 0.999), for G and D. --no-perceptual drops the VGG and alignment terms (no weights needed).

The local discriminator sees the size/2 × size/2 window centred on the bounding-box centre of each image's hole,
shifted to lie inside the image (the reference crops the 128×128 box the hole was cut from; for its irregular
masks it crops a random box instead). For the "dmfn" holes that window is the box the hole was cut from.

    diffinpaint train dmfn --data DATA --out runs/dmfn --vgg-weights vgg19-dcbb9e9d.pth
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..losses import GANLoss
from ..trainable import Batch, TrainableModel
from ...util.errors import UserError
from ...util.options import option
from .nets import (DMFB_VARIANTS, GLOBAL_LAYERS, LOCAL_LAYERS, MIN_SIZE, build_network, composite, count_parameters,
                   generator_input, halved, init_weights, local_crop_size)
from .vgg import VGGFeatures, default_vgg_path, resolve_vgg_path

# loss weights of the authors' configs (celeba-hq-regular_list.yaml, ffhq_list.yaml)
PIXEL_WEIGHT = 1.0  # pixel_weight
FEATURE_WEIGHT = 25.0  # feature_weight
ALIGN_WEIGHT = 1.0  # center_weight
DIS_FEATURE_WEIGHT = 5.0  # dis_feature_weight
GAN_WEIGHT = 0.003  # gan_weight
# per-layer weights 1e3/C² with the reference's channel counts (VGG19's, and the local branch's at ndf 64); kept
# fixed when --ndf changes so a narrow test discriminator does not inflate its feature-matching term
VGG_LAYER_WEIGHTS = tuple(1e3 / c ** 2 for c in (64, 128, 256, 512, 512))
DIS_LAYER_WEIGHTS = tuple(1e3 / c ** 2 for c in (64, 128, 256, 512, 512))
CENTROID_EPS = 1e-7  # added to the feature maps before they are normalised to distributions (utils.py)


@dataclass
class DMFNOptions:
    # "released": the DMFB as the authors' code has it (3×3 fusion, no K_i; 885,312 parameters per block);
    # "paper": as the paper's Fig. 2 describes it (K_i 3×3 convs, 1×1 fusion; 471,808)
    dmfb: str = option("released", "dense multi-scale fusion block: released = as in the authors' code, paper = as "
                       "the paper's Fig. 2 (K_i convs, 1x1 fusion)", choices=DMFB_VARIANTS)
    # the blocks work at 4·nf = 256 channels
    nf: int = option(64, "generator base width (paper: 64)", minimum=1)
    # widths ndf..8·ndf, Linear hidden 8·ndf
    ndf: int = option(64, "discriminator base width (paper: 64)", minimum=1)
    n_blocks: int = option(8, "DMFBs in the generator (paper: 8)", minimum=1)
    perceptual: bool = option(True, "train without the VGG19 feature and alignment losses (no VGG weights needed)")
    # where the frozen VGG19 is read from, not what is trained: free to change on --resume
    vgg_weights: str = option("", "torchvision's vgg19-dcbb9e9d.pth (default: the torch hub cache)", metavar="FILE",
                              outputs=False)


# ------------------------------------------------------------------------------------------------- the losses

_BCE = GANLoss("vanilla")  # BCE on logits against all-1 or all-0 targets


def ragan_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Relativistic average GAN, D's side: real should look more real than the average fake, and vice versa."""
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    return 0.5 * (_BCE(real_logits - fake_logits.mean(), True) + _BCE(fake_logits - real_logits.mean(), False))


def ragan_g_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Relativistic average GAN, G's side: the labels swapped (real_logits are detached by the caller)."""
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    return 0.5 * (_BCE(real_logits - fake_logits.mean(), False) + _BCE(fake_logits - real_logits.mean(), True))


def self_guided_map(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The self-guided regression weights 1 + E, N×1×H×W: E is the channel mean of the squared error of the
    (detached) output, divided by its per-image maximum, so the worst pixels of each image weigh 2 and exact
    ones 1. (An exact image, E ≡ 0, gets weight 1 everywhere; the reference would divide by zero there.)"""
    error = (output.detach().float() - target.float()).pow(2).mean(1, keepdim=True)
    peak = error.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)
    return 1.0 + error / peak


def feature_loss(output_features: list[torch.Tensor], target_features: list[torch.Tensor],
                 guidance: torch.Tensor) -> torch.Tensor:
    """Σ_l 1e3/C_l² · mean |φ_l(out) − φ_l(gt)|, weighted by the guidance map on relu1_1 (full size) and by its
    2×2 average pool on relu2_1 (half size); plain on relu3_1..relu5_1."""
    total = output_features[0].new_zeros((), dtype=torch.float32)
    for layer, (out, gt) in enumerate(zip(output_features, target_features)):
        diff = (out.float() - gt.float()).abs()
        if layer == 0:
            diff = diff * guidance
        elif layer == 1:
            diff = diff * F.avg_pool2d(guidance, kernel_size=2, stride=2)
        total = total + VGG_LAYER_WEIGHTS[layer] * diff.mean()
    return total


def feature_centroids(features: torch.Tensor, eps: float = CENTROID_EPS) -> torch.Tensor:
    """N×C×H×W non-negative maps -> N×C×2 centroids (x along the width, y along the height), each map taken as a
    distribution (fea + eps)/Σ(fea + eps) over pixel coordinates spaced evenly in [−1, 1]."""
    n, c, h, w = features.shape
    weights = features.float() + eps
    weights = weights / weights.sum(dim=(2, 3), keepdim=True)
    xs = torch.linspace(-1.0, 1.0, w, device=features.device)
    ys = torch.linspace(-1.0, 1.0, h, device=features.device)
    cx = (weights.sum(dim=2) * xs).sum(dim=-1)  # marginal over the rows, then E[x]
    cy = (weights.sum(dim=3) * ys).sum(dim=-1)
    return torch.stack([cx, cy], dim=-1)


def alignment_loss(output_features: torch.Tensor, target_features: torch.Tensor) -> torch.Tensor:
    """Geometrical alignment: MSE between the feature maps' centroids (over N, C and the two coordinates)."""
    return F.mse_loss(feature_centroids(output_features), feature_centroids(target_features))


def dis_feature_loss(fake_features: list[torch.Tensor], real_features: list[torch.Tensor]) -> torch.Tensor:
    """Local-discriminator feature matching: Σ_l w_l · mean |D_l(out crop) − D_l(gt crop)| (targets fixed),
    w_l = 1e3/C_l² for the reference's widths 64, 128, 256, 512, 512."""
    total = fake_features[0].new_zeros((), dtype=torch.float32)
    for weight, fake, real in zip(DIS_LAYER_WEIGHTS, fake_features, real_features):
        total = total + weight * F.l1_loss(fake.float(), real.detach().float())
    return total


# ------------------------------------------------------------------------------------------- local crops

def hole_crop_corners(masks: torch.Tensor, crop: int) -> torch.Tensor:
    """(top, left) of each image's crop×crop window (N×2, int64, on the masks' device): centred on the bounding box
    of its hole (the image's centre when it has none), shifted to lie inside the image. Computed on the device with
    no value read back to the host, so a CUDA step never waits on it."""
    size_h, size_w = masks.shape[-2:]
    holes = masks[:, 0] > 0.5

    def window_start(hit: torch.Tensor, length: int) -> torch.Tensor:
        """hit: N×L, the rows (or columns) each image's hole touches -> the window's first index along them."""
        found = hit.any(dim=1)
        first = hit.int().argmax(dim=1)  # argmax returns the first maximum: the hole's first row
        end = length - hit.flip(1).int().argmax(dim=1)  # one past its last
        # no hole: the span is the whole axis, so the window is centred
        first, end = torch.where(found, first, 0), torch.where(found, end, length)
        return ((first + end - crop) // 2).clamp(0, length - crop)

    return torch.stack([window_start(holes.any(dim=2), size_h), window_start(holes.any(dim=1), size_w)], dim=1)


def crop_patches(images: torch.Tensor, corners: torch.Tensor, crop: int) -> torch.Tensor:
    """Each image's crop×crop window at its (top, left) corner, by indexing (differentiable; no host sync)."""
    offsets = torch.arange(crop, device=images.device)
    rows = (corners[:, 0, None] + offsets)[:, None, :, None]  # N×1×crop×1
    cols = (corners[:, 1, None] + offsets)[:, None, None, :]  # N×1×1×crop
    batch = torch.arange(images.shape[0], device=images.device)[:, None, None, None]
    channels = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    return images[batch, channels, rows, cols]


# ------------------------------------------------------------------------------------------- the model

class DMFNTraining(TrainableModel):
    name = "dmfn"
    Options = DMFNOptions
    # the paper's 256 px and Adam 2e-4 at a constant rate (the reference halves it only after its 100k steps);
    # its own box holes (one 128×128 box, shrunk by up to 32, at a random place)
    defaults = {"size": 256, "steps": 100_000, "batch_size": 16, "lr": 2e-4, "holes": "dmfn", "decay_start": 1.0}
    paper_note = ("the reference's CelebA-HQ config: batch 16, Adam 2e-4 (0.5, 0.999), n_iter 100,000 steps (its "
                  "x0.5 LR step at 100k is never reached)")
    presets = {"quick": {"size": 64, "nf": 16, "ndf": 16, "n_blocks": 4, "batch_size": 4, "holes": "box",
                         "steps": 150, "sample_every": 150, "checkpoint_every": 150}}
    hole_choices = ("dmfn", "dataset", "box", "thin", "medium", "thick")
    tiny = {"size": 64, "nf": 8, "ndf": 8, "n_blocks": 2, "perceptual": False, "batch_size": 2}

    vgg: VGGFeatures | None = None  # frozen, so not one of self.nets (nets are what is trained and checkpointed)

    def check(self) -> None:
        o, size = self.opts, self.cfg.size
        if size < MIN_SIZE:
            raise UserError(f"--size {size} is too small for dmfn; the minimum is {MIN_SIZE} (the discriminator's "
                            f"global branch halves the image {GLOBAL_LAYERS} times)")
        if size % 4:
            raise UserError(f"--size {size} does not suit dmfn: pass a multiple of 4 (the generator halves the image "
                            "twice and doubles it back)")
        # BatchNorm in training mode needs more than one value per channel on D's smallest map
        side = min(halved(size, GLOBAL_LAYERS), halved(local_crop_size(size), LOCAL_LAYERS))
        if self.cfg.batch_size * side * side < 2:
            raise UserError(f"--batch-size {self.cfg.batch_size} at --size {size} leaves the discriminator's last "
                            "BatchNorm one value per channel; use --batch-size 2 or more (the paper: 16) or "
                            f"--size {2 * MIN_SIZE} or more")
        if self.cfg.batch_size < 8:
            print(f"warning: dmfn at --batch-size {self.cfg.batch_size}: its BatchNorm discriminator and RaGAN's "
                  "averages over the batch compute something else than at the paper's 16 (use 8 or more)",
                  file=sys.stderr)
        if o.perceptual and self.vgg is None:
            self.vgg = VGGFeatures.from_file(resolve_vgg_path(o.vgg_weights))  # UserError: missing or wrong file

    def build_networks(self) -> dict[str, nn.Module]:
        config = self.network_config()
        nets = {name: init_weights(build_network(config, name)) for name in ("generator", "discriminator")}
        if self.opts.perceptual and self.vgg is None:
            # loaded from a file: draws nothing from the RNG, so the initial weights do not depend on it
            self.vgg = VGGFeatures.from_file(resolve_vgg_path(self.opts.vgg_weights))
        return nets

    def build_optimizers(self, nets: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        betas = (0.5, 0.999)  # the reference's Adam
        return {"optimizer_G": torch.optim.Adam(nets["generator"].parameters(), lr=self.cfg.lr, betas=betas),
                "optimizer_D": torch.optim.Adam(nets["discriminator"].parameters(), lr=self.cfg.lr, betas=betas)}

    def make_holes(self, size: int, rng: np.random.Generator) -> np.ndarray:
        """The reference's training box (data/util.py bbox + bbox2mask, mask_pos 'random'): a size/2 box at a
        random place, its height and width each reduced by a random 0..size/8 px (128 and up to 32 at 256), the
        hole kept centred in the box."""
        box, max_shrink = size // 2, size // 8
        top, left = int(rng.integers(0, size - box + 1)), int(rng.integers(0, size - box + 1))
        shrink_h, shrink_w = int(rng.integers(0, max_shrink + 1)), int(rng.integers(0, max_shrink + 1))
        hole = np.zeros((size, size), dtype=bool)
        t, l = top + shrink_h // 2, left + shrink_w // 2
        hole[t:t + box - shrink_h, l:l + box - shrink_w] = True
        return hole

    def describe(self) -> list[str]:
        o = self.opts
        counts = count_parameters(self.network_config())
        crop = local_crop_size(self.cfg.size)
        kind = "as in the authors' code" if o.dmfb == "released" else "as in the paper, K_i convs + 1x1 fusion"
        lines = [f"generator: {o.n_blocks} DMFBs ({o.dmfb}: {kind}), {counts['dmfb']:,} parameters each; "
                 f"generator {counts['generator']:,} parameters",
                 f"discriminator: global + local ({crop}x{crop} crop around the hole), "
                 f"{counts['discriminator']:,} parameters"]
        if o.perceptual:
            lines.append("losses: L1 x1, VGG19 features x25 (self-guided on relu1_1, relu2_1), alignment x1 "
                         "(relu4_1), local-D feature matching x5, RaGAN x0.003")
            lines.append(f"VGG19 weights: {o.vgg_weights or default_vgg_path()}")
        else:
            lines.append("losses: L1 x1, local-D feature matching x5, RaGAN x0.003 (--no-perceptual: no VGG19 "
                         "feature or alignment loss)")
        return lines

    # ------------------------------------------------------------------ the paper's step

    def set_input(self, batch: Batch) -> None:
        self.netG, self.netD = self.nets["generator"], self.nets["discriminator"]
        self.masks = batch.masks.float()
        self.gen_input = generator_input(batch.images.float(), self.masks)
        self.real = batch.images.float() * 2.0 - 1.0  # [−1, 1], as the networks work
        self.crop = local_crop_size(self.real.shape[-1])
        self.corners = hole_crop_corners(self.masks, self.crop)
        if self.vgg is not None:
            self.vgg.to(self.real.device)  # a no-op after the first step

    def forward(self) -> None:
        # composited before the losses, as the reference does: known pixels are the input's
        self.fake = composite(self.netG(self.gen_input).float(), self.real, self.masks)

    def local(self, images: torch.Tensor) -> torch.Tensor:
        return crop_patches(images, self.corners, self.crop)

    def backward_G(self) -> None:
        # reconstruction in pixels ...
        self.loss_G_pixel = PIXEL_WEIGHT * F.l1_loss(self.fake, self.real)
        self.loss_G = self.loss_G_pixel
        # ... in VGG19 features, with the self-guided weights on the two shallow layers, and their centroids
        if self.vgg is not None:
            fake_features = self.vgg(self.fake)
            with torch.no_grad():
                real_features = self.vgg(self.real)
            guidance = self_guided_map(self.fake, self.real)
            self.loss_G_feature = FEATURE_WEIGHT * feature_loss(fake_features, real_features, guidance)
            self.loss_G_align = ALIGN_WEIGHT * alignment_loss(fake_features[3], real_features[3])
            self.loss_G = self.loss_G + self.loss_G_feature + self.loss_G_align
        # ... in the local discriminator's features, and fooling D relative to the real images
        with self.accelerator.no_sync(self.netD):  # D's parameters take no gradient here: no all-reduce for D
            fake_logits, fake_dfeatures = self.netD(self.fake, self.local(self.fake))
            with torch.no_grad():
                real_logits, real_dfeatures = self.netD(self.real, self.local(self.real))
        self.loss_G_dis_feature = DIS_FEATURE_WEIGHT * dis_feature_loss(fake_dfeatures, real_dfeatures)
        self.loss_G_gan = GAN_WEIGHT * ragan_g_loss(real_logits, fake_logits)
        self.loss_G = self.loss_G + self.loss_G_dis_feature + self.loss_G_gan
        self.accelerator.backward(self.loss_G)

    def backward_D(self) -> None:
        # real and fake in separate calls, as the reference does (each batch gets its own BatchNorm statistics)
        real_logits, _ = self.netD(self.real, self.local(self.real))
        fake = self.fake.detach()  # stop the gradient into G
        fake_logits, _ = self.netD(fake, self.local(fake))
        self.loss_D = ragan_d_loss(real_logits, fake_logits)
        self.D_real, self.D_fake = real_logits.detach().float().mean(), fake_logits.detach().float().mean()
        self.accelerator.backward(self.loss_D)

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.set_input(batch)
        self.forward()
        self.update_G()  # G first, then D on the same output (the reference's order)
        self.update_D()
        logs = {"G_pixel": self.loss_G_pixel, "G_dis_feature": self.loss_G_dis_feature, "G_gan": self.loss_G_gan,
                "G_total": self.loss_G, "D": self.loss_D, "D_real_logit": self.D_real, "D_fake_logit": self.D_fake}
        if self.vgg is not None:
            logs.update(G_feature=self.loss_G_feature, G_align=self.loss_G_align)
        return {key: value.detach() for key, value in logs.items()}

    @torch.no_grad()
    def sample(self, batch: Batch) -> torch.Tensor:
        netG = self.accelerator.unwrap_model(self.nets["generator"])
        dtype = next(netG.parameters()).dtype
        generated = netG(generator_input(batch.images, batch.masks).to(dtype=dtype)).float()
        out = composite(generated, batch.images.float() * 2.0 - 1.0, batch.masks.float())
        return ((out + 1.0) / 2.0).clamp(0.0, 1.0)
