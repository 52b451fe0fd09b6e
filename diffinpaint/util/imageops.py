"""Resizing shared by every model that works at a fixed resolution (SD at 512/1024, Pix2Pix at --size)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """N×3×H×W in [0, 1] -> N×3×size, bicubic with antialiasing (which matters when shrinking), clamped."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images.clone()
    return F.interpolate(images, size=size, mode="bicubic", antialias=True, align_corners=False).clamp_(0.0, 1.0)


def resize_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """N×1×H×W {0, 1} -> N×1×size {0, 1}, max-pool style: an output pixel is a hole if ANY input pixel under it is.

    Area interpolation averages each output pixel's footprint; `> 0` then marks it as hole when one input pixel
    is, so holes never shrink or disappear (they may grow by under one output pixel).
    """
    if tuple(masks.shape[-2:]) == tuple(size):
        return (masks > 0.5).to(torch.float32)
    return (F.interpolate(masks.float(), size=size, mode="area") > 0).to(torch.float32)
