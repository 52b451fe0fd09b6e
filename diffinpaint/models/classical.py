"""Classical baselines and floors.

telea / ns: OpenCV's Telea (fast marching) and Navier-Stokes inpainting (`cv2.inpaint`); they see the masked image
and fill from the hole's border inwards.
grey / ring_mean: floors, not methods. `grey` fills every hole with mid-grey; `ring_mean` fills each hole (each
connected component of the mask) with the mean colour of a ring of --ring-width pixels around it. A model that does
not beat ring_mean on a metric has learnt nothing that metric can see (on the demo split ring_mean's RMSE beats
several trained GANs: RMSE rewards blur).

All four are deterministic, seed-free and CPU-only.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ..util.options import option
from .base import InpaintModel


def _uint8(image: torch.Tensor) -> np.ndarray:
    return (image.permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)


@dataclass
class ClassicalSettings:
    # 3 is OpenCV's documented example
    radius: int = option(3, "telea/ns: neighbourhood radius in pixels considered around each filled point",
                         minimum=1)


class _OpenCVInpaint(InpaintModel):
    Settings = ClassicalSettings
    deterministic = True  # seed-free: eval --seeds runs it once
    flag: int

    def __init__(self, settings: ClassicalSettings | None = None, device: str = "cpu"):
        self.settings = settings or ClassicalSettings()

    def inpaint(self, images, masks, *, seeds, labels):
        out = []
        for image, mask in zip(images, masks):
            # cv2 works on uint8 HxWx3; quantising is harmless: the runner composites in uint8 anyway
            hole = (mask[0].numpy() > 0.5).astype(np.uint8)
            filled = cv2.inpaint(_uint8(image), hole, self.settings.radius, self.flag)
            out.append(torch.from_numpy(filled).permute(2, 0, 1).float() / 255.0)
        return torch.stack(out)


class TeleaModel(_OpenCVInpaint):
    name = "telea"
    flag = cv2.INPAINT_TELEA


class NavierStokesModel(_OpenCVInpaint):
    name = "ns"
    flag = cv2.INPAINT_NS


class _Floor(InpaintModel):
    """A floor: not a method, what a fill that learnt nothing about the image scores (the report marks it)."""

    floor = True
    deterministic = True

    def __init__(self, settings=None, device: str = "cpu"):
        self.settings = settings or self.Settings()


@dataclass
class GreySettings:
    pass


class GreyFloor(_Floor):
    """Every hole pixel mid-grey (0.5)."""

    name = "grey"
    Settings = GreySettings

    def inpaint(self, images, masks, *, seeds, labels):
        return torch.full_like(images, 0.5)


@dataclass
class RingMeanSettings:
    ring_width: int = option(3, "ring_mean: width in pixels of the ring around each hole whose mean colour fills it",
                             minimum=1)


class RingMeanFloor(_Floor):
    """Each connected hole filled flat with the mean colour of the known pixels within `ring_width` of it (the
    whole image's known mean when a hole has no known pixel near it)."""

    name = "ring_mean"
    Settings = RingMeanSettings

    def inpaint(self, images, masks, *, seeds, labels):
        width = self.settings.ring_width
        kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)  # square ring: Chebyshev distance <= width
        out = []
        for image, mask in zip(images, masks):
            rgb = image.permute(1, 2, 0).numpy().astype(np.float64)
            hole = (mask[0].numpy() > 0.5).astype(np.uint8)
            known = hole == 0
            filled = rgb.copy()
            count, components = cv2.connectedComponents(hole, connectivity=8)
            fallback = rgb[known].mean(axis=0) if known.any() else np.full(3, 0.5)
            for k in range(1, count):
                component = (components == k).astype(np.uint8)
                ring = (cv2.dilate(component, kernel) > 0) & known
                filled[component > 0] = rgb[ring].mean(axis=0) if ring.any() else fallback
            out.append(torch.from_numpy(filled).permute(2, 0, 1).float())
        return torch.stack(out)
