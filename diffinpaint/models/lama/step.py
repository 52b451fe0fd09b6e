"""LaMa training as the one trainer runs it, after advimman/lama: saicinpainting/training/trainers/default.py and
base.py (the step), losses/adversarial.py, feature_matching.py, perceptual.py (the losses), and the weights of
configs/training/lama-fourier.yaml / big-lama.yaml, optimizers/default_optimizers.yaml and
trainer/any_gpu_large_ssim_ddp_final.yaml.

One step, in the order of LaMa's Lightning module (two optimisers: training_step runs once per optimiser, each time
with its own forward):
  pred = G([x·(1−m), m])                                   (the raw prediction: D judges it, not a composite)
  G step (D frozen):
      L1 on the known pixels only:     mean((10·(1−m) + 0·m) · |pred − x|)
    + adversarial, non-saturating:     10 · mean(softplus(−D(pred)))        (over the whole score map)
    + discriminator feature matching:  100 · mean over D's 5 activations of MSE(D_l(pred), D_l(x))
    + high-receptive-field perceptual: 30 · Σ_l MSE(φ_l(pred), φ_l(x)), φ = ADE20k ResNet-50 (hrf.py)
  D step (LaMa runs the forward again, with the generator just updated; no gradient into it):
      mean( softplus(−D(x)) + 0.001 · R1 + m↓·softplus(D(pred)) + (1−m↓)·softplus(−D(pred)) )
      R1 = mean over images of ‖∂ΣD(x)/∂x‖²; m↓ = the mask resized to D's score map (nearest): D is taught that
      the hole is fake and the known region of the prediction is real ("mask_as_fake_target")
  Adam G 1e-3, D 1e-4 (betas 0.9, 0.999); each network's gradient norm clipped to 1 (gradient_clip_val: 1).
--no-perceptual drops the HRF term (no ADE20k weights needed) and is recorded in config.json.
The training images get LaMa's `distortions` augmentation (augment.py; --augment none: resize and flip only).

    diffinpaint train lama --data DATA --out runs/lama --perceptual-weights encoder_epoch_20.pth
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...data.masks import BoxParams, StrokeParams, draw_boxes, draw_strokes, resize_hole_mask
from ...util.errors import UserError
from ...util.options import option
from ..trainable import Batch, TrainableModel
from .augment import AUGMENT_CHOICES, LaMaAugment, import_albumentations
from .hrf import HRFPerceptualLoss, default_hrf_path, resolve_hrf_path
from .nets import GENERATORS, MIN_SIDE, MULTIPLE, build_network, composite, count_parameters, generator_input, n_blocks

# configs/training/lama-fourier.yaml (big-lama.yaml sets the same), losses:
L1_KNOWN, L1_MISSING = 10.0, 0.0  # l1: weight_known, weight_missing
ADV_WEIGHT = 10.0  # adversarial: weight (the generator's term only; the discriminator's loss is not scaled)
R1_GAMMA = 0.001  # adversarial: gp_coef
FM_WEIGHT = 100.0  # feature_matching: weight
HRF_WEIGHT = 30.0  # resnet_pl: weight (perceptual, the VGG loss, has weight 0)
GRAD_CLIP = 1.0  # trainer kwargs gradient_clip_val (per optimiser)
D_LR_RATIO = 0.1  # default_optimizers.yaml: generator 1e-3, discriminator 1e-4

# the training masks of data/abl-04-256-mh-dist.yaml (mask_gen_kwargs), pixels at 256: LaMa's MixedMaskGenerator
# with irregular_proba 1 and box_proba 1 (normalised: one or the other, half the time each), no ramp
TRAIN_MASK_SIZE = 256
TRAIN_STROKES = StrokeParams(min_times=1, max_times=5, max_width=100, max_len=200, max_angle=4)
TRAIN_BOXES = BoxParams(margin=10, min_size=30, max_size=150, min_times=1, max_times=4)


def lama_training_holes(size: int, rng: np.random.Generator) -> np.ndarray:
    """One training mask of LaMa's config (bool size×size, True = hole): with probability ½ 1–6 brush-stroke
    polylines (widths 5–104, segments 10–209 px), else 1–4 boxes of sides 30–150 kept 10 px from the border — the
    counts and bounds LaMa's generator classes really draw. No area limit and never empty (the training generator
    has neither). Drawn at 256 px and, at other --size, resized keeping its hole fraction (data/masks.py), as the
    toolkit's other generators scale with --size."""
    canvas = np.zeros((TRAIN_MASK_SIZE, TRAIN_MASK_SIZE), dtype=np.uint8)
    if rng.random() < 0.5:
        draw_strokes(canvas, TRAIN_STROKES, rng)
    else:
        draw_boxes(canvas, TRAIN_BOXES, rng)
    return canvas.astype(bool) if size == TRAIN_MASK_SIZE else resize_hole_mask(canvas, size, size)


@dataclass
class LaMaOptions:
    generator: str = option("fourier", "fourier = LaMa-Fourier (9 FFC blocks), big = big-lama (18)",
                            choices=tuple(GENERATORS))
    n_blocks: int = option(0, "FFC residual blocks (0 = the --generator's: fourier 9, big 18)", minimum=0)
    ngf: int = option(64, "generator base width (LaMa: 64; 8x at the FFC blocks)", minimum=4)
    ndf: int = option(64, "discriminator base width (pix2pixhd_nlayer: 64)", minimum=1)
    # default_optimizers.yaml: G 1e-3, D 1e-4; --lr stays "every optimiser" and D follows it at this ratio
    d_lr_ratio: float = option(D_LR_RATIO, "discriminator learning rate as a fraction of --lr (LaMa: 1e-4 / 1e-3)",
                               above=0)
    # data/abl-04-256-mh-dist.yaml: transform_variant distortions (augment.py); its flip is the trainer's --flip
    augment: str = option("distortions", "training image augmentation: distortions = LaMa's (perspective, affine "
                          "scale 0.7-1.3 / rotation +-40 deg, optical distortion, CLAHE, brightness/contrast, "
                          "hue/saturation; its horizontal flip is --flip), none = resize and --flip only",
                          choices=AUGMENT_CHOICES, absent="none")  # LaMa runs saved before it: no augmentation
    perceptual: bool = option(True, "train without the high-receptive-field perceptual loss (no ADE20k ResNet-50 "
                              "weights needed)")
    # where the frozen ResNet-50 is read from, not what is trained: free to change on --resume
    perceptual_weights: str = option("", "CSAIL's ADE20k encoder_epoch_20.pth (ade20k-resnet50dilated-ppm_deepsup; "
                                     "default: $TORCH_HOME/ade20k/..., where LaMa looks)", metavar="FILE",
                                     outputs=False)


# ------------------------------------------------------------------------------------------------- the losses


def masked_l1(pred: torch.Tensor, target: torch.Tensor, masks: torch.Tensor, weight_known: float = L1_KNOWN,
              weight_missing: float = L1_MISSING) -> torch.Tensor:
    """LaMa's masked_l1_loss: per-pixel |pred − target| weighted weight_missing in the hole and weight_known outside,
    averaged over every pixel and channel."""
    weights = masks * weight_missing + (1.0 - masks) * weight_known
    return (weights * (pred.float() - target.float()).abs()).mean()


def r1_penalty(real_scores: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean over images of the squared L2 norm of ∂ΣD(x)/∂x (make_r1_gp); differentiable (create_graph)."""
    grad, = torch.autograd.grad(real_scores.float().sum(), real, create_graph=True)
    return grad.flatten(1).norm(2, dim=1).pow(2).mean()


def score_mask(masks: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """The mask at the score map's size, nearest neighbour (interpolate_mask with allow_scale_mask, mode 'nearest')."""
    return F.interpolate(masks.float(), size=scores.shape[-2:], mode="nearest")


def discriminator_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor, masks: torch.Tensor,
                       r1: torch.Tensor) -> torch.Tensor:
    """NonSaturatingWithR1.discriminator_loss with mask_as_fake_target: reals real everywhere, the prediction fake in
    the hole and real outside it, plus gp_coef·R1."""
    real_scores, fake_scores = real_scores.float(), fake_scores.float()
    m = score_mask(masks, fake_scores)
    fake_loss = m * F.softplus(fake_scores) + (1.0 - m) * F.softplus(-fake_scores)
    return (F.softplus(-real_scores) + R1_GAMMA * r1 + fake_loss).mean()


def generator_adversarial_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """NonSaturatingWithR1.generator_loss (extra_mask_weight_for_gen 0): weight · mean softplus(−D(pred))."""
    return ADV_WEIGHT * F.softplus(-fake_scores.float()).mean()


def feature_matching_loss(fake_features: list[torch.Tensor], real_features: list[torch.Tensor]) -> torch.Tensor:
    """feature_matching_loss without a mask: the mean over D's activations of their MSE."""
    return torch.stack([F.mse_loss(f.float(), r.float()) for f, r in zip(fake_features, real_features)]).mean()


# ------------------------------------------------------------------------------------------------- the model


class LaMaTraining(TrainableModel):
    name = "lama"
    Options = LaMaOptions
    # lama-fourier.yaml + abl-04-256-mh-dist (256 px crops, batch 10 per GPU) + any_gpu_large_ssim_ddp_final
    # (40 epochs of 25,000 batches) + default_optimizers (G 1e-3; D at d_lr_ratio), no LR schedule
    defaults = {"size": 256, "steps": 1_000_000, "batch_size": 10, "lr": 1e-3, "holes": "lama", "decay_start": 1.0}
    paper_note = ("LaMa's lama-fourier.yaml / big-lama.yaml: 256 px crops, batch 10 per GPU, Adam G 1e-3 / D 1e-4, "
                  "gradient norms clipped to 1, 40 epochs x 25,000 batches = 1,000,000 steps, constant LR; its "
                  "training masks (--holes lama) and its 'distortions' image augmentation (--augment)")
    presets = {"quick": {"size": 64, "ngf": 16, "n_blocks": 3, "ndf": 16, "batch_size": 4, "steps": 150,
                         "sample_every": 150, "checkpoint_every": 150}}
    hole_choices = ("lama", "dataset", "box", "thin", "medium", "thick")
    tiny = {"size": 32, "ngf": 4, "n_blocks": 1, "ndf": 8, "perceptual": False, "batch_size": 2}

    hrf: HRFPerceptualLoss | None = None  # frozen, so not one of self.nets (nets are what is trained and saved)

    def check(self) -> None:
        size = self.cfg.size
        if size < MIN_SIDE or size % MULTIPLE:
            raise UserError(f"--size {size} does not suit lama: pass a multiple of {MULTIPLE} of at least {MIN_SIDE} "
                            "(the generator works at 1/8 of the image; LaMa trains at 256)")
        if self.cfg.mixed_precision == "fp16":
            raise UserError("lama trains in fp32 or --mixed-precision bf16: fp16's loss scaling does not reach the "
                            "R1 gradient penalty (taken with autograd.grad), and the FFT layers overflow in fp16")
        if self.opts.perceptual and self.hrf is None:  # UserError for a missing or wrong file, before any work
            self.hrf = HRFPerceptualLoss.from_file(resolve_hrf_path(self.opts.perceptual_weights))
        if self.opts.augment != "none":
            import_albumentations()  # UserError for a broken install, before any work

    def build_networks(self) -> dict[str, nn.Module]:
        config = self.network_config()
        if self.opts.perceptual and self.hrf is None:  # loaded from a file: draws nothing from the RNG
            self.hrf = HRFPerceptualLoss.from_file(resolve_hrf_path(self.opts.perceptual_weights))
        # PyTorch's default initialisation, as LaMa (neither network gets a custom init there)
        return {name: build_network(config, name) for name in ("generator", "discriminator")}

    def build_optimizers(self, nets: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        lr = self.cfg.lr
        return {"optimizer_G": torch.optim.Adam(nets["generator"].parameters(), lr=lr),
                "optimizer_D": torch.optim.Adam(nets["discriminator"].parameters(), lr=lr * self.opts.d_lr_ratio)}

    def make_holes(self, size: int, rng: np.random.Generator) -> np.ndarray:
        return lama_training_holes(size, rng)

    def augmentation(self) -> LaMaAugment | None:
        """LaMa's 'distortions' on each training image at --size (augment.py), or none."""
        return None if self.opts.augment == "none" else LaMaAugment(self.cfg.size, self.opts.augment)

    def describe(self) -> list[str]:
        o, config = self.opts, self.network_config()
        counts = count_parameters(config)
        blocks = n_blocks(config)
        kind = {9: "LaMa-Fourier", 18: "big-lama"}.get(blocks, "custom") if o.ngf == 64 else "custom width"
        lines = [f"generator: FFC ResNet ({kind}), {blocks} blocks, ngf {o.ngf}, {counts['generator']:,} parameters "
                 "(spandrel's FFCResNetGenerator)",
                 f"discriminator: pix2pixHD N-layer (4 layers, ndf {o.ndf}), {counts['discriminator']:,} parameters",
                 f"optimisers: Adam G lr {self.cfg.lr:g}, D lr {self.cfg.lr * o.d_lr_ratio:g}; gradient norms "
                 f"clipped to {GRAD_CLIP:g}"]
        losses = (f"losses: L1 known x{L1_KNOWN:g} (hole x{L1_MISSING:g}), non-saturating adversarial x{ADV_WEIGHT:g} "
                  f"(D: hole fake, rest real, R1 x{R1_GAMMA:g}), feature matching x{FM_WEIGHT:g}")
        if o.perceptual:
            lines.append(losses + f", HRF perceptual x{HRF_WEIGHT:g} (ADE20k ResNet-50)")
            lines.append(f"ADE20k ResNet-50 weights: {o.perceptual_weights or default_hrf_path()}")
        else:
            lines.append(losses + " (--no-perceptual: no HRF perceptual loss)")
        if o.augment == "distortions":
            flip = "the trainer's --flip (p 0.5)" if self.cfg.flip else "none (--no-flip)"
            lines.append(f"augmentation: LaMa's distortions at {self.cfg.size} px (perspective, affine, optical "
                         f"distortion, CLAHE, brightness/contrast, hue/saturation; albumentations); its flip: {flip}")
        else:
            lines.append("augmentation: none (--augment none: resize and --flip only)")
        return lines

    # ------------------------------------------------------------------ LaMa's step

    def set_input(self, batch: Batch) -> None:
        self.netG, self.netD = self.nets["generator"], self.nets["discriminator"]
        self.real = batch.images.float()  # [0, 1], as LaMa's networks and losses work
        self.masks = (batch.masks > 0.5).float()
        if self.hrf is not None:
            self.hrf.to(self.real.device)  # a no-op after the first step

    def forward(self) -> None:
        self.pred = self.netG(generator_input(self.real, self.masks)).float()

    def backward_G(self) -> None:
        self.loss_G_l1 = masked_l1(self.pred, self.real, self.masks)
        # D frozen (update_G); no gradient reaches its parameters, so no all-reduce for D either
        with self.accelerator.no_sync(self.netD):
            with torch.no_grad():  # the reals' activations are targets only
                _, real_features = self.netD(self.real)
            fake_scores, fake_features = self.netD(self.pred)
        self.loss_G_adv = generator_adversarial_loss(fake_scores)
        self.loss_G_fm = FM_WEIGHT * feature_matching_loss(fake_features, real_features)
        self.loss_G = self.loss_G_l1 + self.loss_G_adv + self.loss_G_fm
        if self.hrf is not None:
            self.loss_G_hrf = HRF_WEIGHT * self.hrf(self.pred, self.real)
            self.loss_G = self.loss_G + self.loss_G_hrf
        self.accelerator.backward(self.loss_G)

    def backward_D(self) -> None:
        real = self.real.detach().requires_grad_(True)  # R1 differentiates D's score of the reals w.r.t. them
        real_scores, _ = self.netD(real)
        fake = self.pred.detach()
        fake_scores, _ = self.netD(fake)
        self.loss_D_r1 = r1_penalty(real_scores, real)
        self.loss_D = discriminator_loss(real_scores, fake_scores, self.masks, self.loss_D_r1)
        self.D_real, self.D_fake = real_scores.detach().float().mean(), fake_scores.detach().float().mean()
        self.accelerator.backward(self.loss_D)

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.set_input(batch)
        self.forward()
        self.update_G(clip=GRAD_CLIP)  # optimiser 0
        with torch.no_grad():
            self.forward()  # optimiser 1's own forward: D judges the updated generator's prediction
        self.update_D(clip=GRAD_CLIP)
        logs = {"G_l1": self.loss_G_l1, "G_adv": self.loss_G_adv, "G_fm": self.loss_G_fm, "G_total": self.loss_G,
                "D": self.loss_D, "D_r1": self.loss_D_r1, "D_real_logit": self.D_real, "D_fake_logit": self.D_fake}
        if self.hrf is not None:
            logs["G_hrf"] = self.loss_G_hrf
        return {key: value.detach() for key, value in logs.items()}  # left on the device: the trainer reads them

    @torch.no_grad()
    def sample(self, batch: Batch) -> torch.Tensor:
        netG = self.accelerator.unwrap_model(self.nets["generator"])
        masks = (batch.masks > 0.5).float()
        pred = netG(generator_input(batch.images.float(), masks)).float()
        return composite(pred, batch.images.float(), masks).clamp(0.0, 1.0)
