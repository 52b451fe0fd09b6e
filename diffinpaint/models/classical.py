"""Classical baselines: OpenCV's Telea (fast marching) and Navier-Stokes inpainting (`cv2.inpaint`).

Deterministic, seed-free, CPU-only. They see the masked image and fill from the hole's border inwards.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .base import InpaintModel


@dataclass
class ClassicalSettings:
    # neighbourhood radius (pixels) considered around each filled point; 3 is OpenCV's documented example
    radius: int = 3


class _OpenCVInpaint(InpaintModel):
    Settings = ClassicalSettings
    deterministic = True  # seed-free: eval --seeds runs it once
    flag: int

    @staticmethod
    def add_arguments(parser) -> None:
        parser.add_argument("--radius", type=int, default=None,
                            help="telea/ns: neighbourhood radius in pixels (default 3)")

    def __init__(self, settings: ClassicalSettings | None = None, device: str = "cpu"):
        self.settings = settings or ClassicalSettings()

    def inpaint(self, images, masks, *, seeds, labels):
        out = []
        for image, mask in zip(images, masks):
            # cv2 works on uint8 HxWx3; quantising is harmless: the runner composites in uint8 anyway
            rgb = (image.permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
            hole = (mask[0].numpy() > 0.5).astype(np.uint8)
            filled = cv2.inpaint(rgb, hole, self.settings.radius, self.flag)
            out.append(torch.from_numpy(filled).permute(2, 0, 1).float() / 255.0)
        return torch.stack(out)

    def output_settings(self):
        return {"radius": self.settings.radius}


class TeleaModel(_OpenCVInpaint):
    name = "telea"
    flag = cv2.INPAINT_TELEA


class NavierStokesModel(_OpenCVInpaint):
    name = "ns"
    flag = cv2.INPAINT_NS
