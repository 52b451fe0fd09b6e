"""GAN losses shared by several models (each written once, here); a model's own losses live in its step.py."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def set_requires_grad(net: nn.Module, requires_grad: bool) -> None:
    """Freeze D while G is optimised (saves the gradient work), unfreeze it for D's own step."""
    for p in net.parameters():
        p.requires_grad_(requires_grad)


class GANLoss(nn.Module):
    """pix2pix's GANLoss: 'vanilla' = BCE on logits, 'lsgan' = MSE, against a map of 1s (real) or 0s (fake).
    DCGAN's BCE is the vanilla mode."""

    def __init__(self, gan_mode: str = "vanilla"):
        super().__init__()
        if gan_mode not in ("vanilla", "lsgan"):
            raise ValueError(f"gan_mode {gan_mode!r}; choose vanilla or lsgan")
        self.loss = nn.BCEWithLogitsLoss() if gan_mode == "vanilla" else nn.MSELoss()

    def forward(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        prediction = prediction.float()  # losses in fp32 under mixed precision
        return self.loss(prediction, torch.full_like(prediction, 1.0 if target_is_real else 0.0))


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """SN-PatchGAN's discriminator hinge loss (neuralgym gan_hinge_loss): 0.5·E[relu(1−D(x))] + 0.5·E[relu(1+D(G))]."""
    return 0.5 * F.relu(1.0 - real_logits.float()).mean() + 0.5 * F.relu(1.0 + fake_logits.float()).mean()


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The generator's side of the hinge loss: −E[D(G(z))]."""
    return -fake_logits.float().mean()
