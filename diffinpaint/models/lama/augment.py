"""LaMa's training augmentation, `transform_variant: distortions` (the variant of its training data config
configs/training/data/abl-04-256-mh-dist.yaml, which lama-fourier.yaml and big-lama.yaml both train with).

The reference (saicinpainting/training/data/datasets.py, get_transforms, the 'distortions' branch, lines 113-127)
is an albumentations 0.5.2 pipeline (the version LaMa's requirements.txt pins) run on each training photo as read;
with 0.5.2's defaults and those of LaMa's IAA wrappers (saicinpainting/training/data/aug.py) written out:
    IAAPerspective2(scale=(0.0, 0.06))       imgaug's PerspectiveTransform: keep_size, mode 'replicate'; p 0.5
    IAAAffine2(scale=(0.7, 1.3), rotate=(-40, 40), shear=(-0.1, 0.1))
                                             imgaug's Affine: x and y scaled independently, shear in degrees, no
                                             translation, bilinear, mode 'reflect' (cv2's reflect-101); p 0.5
    PadIfNeeded(out_size, out_size)          border reflect-101; p 1
    OpticalDistortion()                      distort_limit ±0.05, shift_limit ±0.05 (rounded to whole pixels:
                                             always 0), bilinear, border reflect-101; p 0.5
    RandomCrop(out_size, out_size)           p 1
    HorizontalFlip()                         p 0.5
    CLAHE()                                  clip limit 1..4, 8x8 tiles; p 0.5
    RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2)            by max; p 0.5
    HueSaturationValue(hue_shift_limit=5, sat_shift_limit=30, val_shift_limit=5)  p 0.5
    ToFloat()                                uint8 / 255

Here the same list in albumentations 2.x, whose Perspective and Affine are imgaug's transforms ported (imgaug and
the IAA wrappers are gone from albumentations), with every default that changed since 0.5.2 set back to 0.5.2's
(border modes). Two things differ by design:
  * HorizontalFlip is left out, so no example is flipped twice: the trainer's --flip (probability 0.5, drawn per
    example from (seed, position), image and mask together) is that flip, applied after this pipeline instead of
    after RandomCrop. The transforms in between act on each pixel alone (brightness, contrast, hue, saturation),
    which a flip commutes with, except CLAHE, whose 8x8 tile grid then sees the image unmirrored: the examples are
    distributed as LaMa's up to that. --no-flip trains without LaMa's flip, as for every model.
  * It runs on the trainer's cached image, already resized to --size (the one trainer's data path), so PadIfNeeded
    and RandomCrop at --size leave it whole: LaMa reads Places' 512-px photos and crops 256 px out of them, so its
    crops show about half the photo's shorter side; here each example shows the whole resized photo.
Smaller differences of the port: the perspective warp and LaMa's resize back to the image size are one bilinear warp
(imgaug warps, then resizes bicubic); the corner jitter is taken modulo 0.32 instead of 1 (the same for
scale ≤ 0.06: a 5-sigma event).

Determinism: the pipeline draws only from the numpy Generator it is given (the trainer makes one per example from
(seed, position)) and a Python Random seeded from it, so an example depends on (seed, position) alone and --resume
stays bit-exact. Not from albumentations' own seeding: `Compose(seed=...)` / `set_random_seed` give every transform
its own generator started from the same seed, so all the p = 0.5 transforms would fire together or not at all;
`set_random_state` shares one stream among them, as 0.5.2's global `random` did.
"""
from __future__ import annotations

import os
import random
import threading

import numpy as np

from ...util.errors import UserError

AUGMENT_CHOICES = ("distortions", "none")


def import_albumentations():
    """albumentations, imported on first use (seconds: pydantic, scipy) and without its update check: it asks PyPI for
    the newest version on import unless told not to, and the toolkit does not reach the network unasked."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    try:
        import albumentations
    except ImportError as err:  # a dependency of the package: only a broken install gets here
        raise UserError(f"--augment distortions needs albumentations ({err}); pip install 'albumentations>=2.0,<3' "
                        "or pass --augment none") from err
    return albumentations


def distortions(size: int):
    """LaMa's 'distortions' pipeline at out_size = `size`, less its HorizontalFlip (the trainer's --flip): uint8
    H×W×3 in, float32 H×W×3 in [0, 1] out (the module docstring maps each transform to the reference's)."""
    import cv2

    A = import_albumentations()
    return A.Compose([
        A.Perspective(scale=(0.0, 0.06), keep_size=True, interpolation=cv2.INTER_LINEAR,
                      border_mode=cv2.BORDER_REPLICATE, p=0.5),
        A.Affine(scale={"x": (0.7, 1.3), "y": (0.7, 1.3)}, rotate=(-40, 40), shear={"x": (-0.1, 0.1), "y": (-0.1, 0.1)},
                 interpolation=cv2.INTER_LINEAR, border_mode=cv2.BORDER_REFLECT_101, p=0.5),
        A.PadIfNeeded(min_height=size, min_width=size, border_mode=cv2.BORDER_REFLECT_101, p=1.0),
        A.OpticalDistortion(distort_limit=0.05, interpolation=cv2.INTER_LINEAR, border_mode=cv2.BORDER_REFLECT_101,
                            p=0.5),
        A.RandomCrop(height=size, width=size, p=1.0),
        # the reference's HorizontalFlip(p=0.5) comes here: the trainer's --flip plays it
        A.CLAHE(clip_limit=(1, 4), tile_grid_size=(8, 8), p=0.5),
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, brightness_by_max=True, p=0.5),
        A.HueSaturationValue(hue_shift_limit=5, sat_shift_limit=30, val_shift_limit=5, p=0.5),
        A.ToFloat(max_value=255),
    ])


class LaMaAugment:
    """The trainer's per-example hook (TrainableModel.augmentation): `augment(image, rng)` with image a 3×S×S
    float32 array in [0, 1] (the cached example: read, never written) returns a new 3×S×S float32 array in [0, 1].

    The image goes through the pipeline as uint8 (rounded), as LaMa's photos do (CLAHE and the colour shifts are
    uint8 operations there). Picklable (DataLoader workers rebuild the pipeline); each thread builds its own, since
    a pipeline holds the random state of the example it is working on."""

    def __init__(self, size: int, variant: str = "distortions"):
        if variant not in AUGMENT_CHOICES or variant == "none":
            raise ValueError(f"no augmentation pipeline {variant!r}")
        self.size, self.variant = size, variant
        self._local = threading.local()

    def __getstate__(self) -> dict:
        return {"size": self.size, "variant": self.variant}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["size"], state["variant"])

    def pipeline(self):
        pipeline = getattr(self._local, "pipeline", None)
        if pipeline is None:
            pipeline = self._local.pipeline = distortions(self.size)
        return pipeline

    def run(self, pixels: np.ndarray, rng: np.random.Generator, pipeline=None) -> dict:
        """The pipeline's result dict for uint8 H×W×3 `pixels`, every draw from `rng` (a pipeline may be passed)."""
        pipeline = pipeline if pipeline is not None else self.pipeline()
        # one stream shared by every transform: numpy's draws from `rng` itself, Python's from a Random seeded by it
        pipeline.set_random_state(rng, random.Random(int(rng.integers(1 << 63))))
        return pipeline(image=pixels)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        pixels = np.clip(image.transpose(1, 2, 0) * 255.0 + 0.5, 0, 255).astype(np.uint8)  # H×W×3, rounded
        out = self.run(pixels, rng)["image"]
        return np.ascontiguousarray(out.transpose(2, 0, 1), dtype=np.float32)
