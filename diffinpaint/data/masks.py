"""Mask generators: rectangular boxes and LaMa-style irregular strokes.

The irregular protocols follow LaMa (Suvorov et al. 2022, configs random_{thin,medium,thick}_256): random
polylines of thick brush strokes, plus (medium, thick) a chance of random rectangles instead. Their pixel
parameters are defined at 256 px and scaled linearly with the image's shorter side. Re-stated by hand because
LaMa ships no installable package.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..util.seeds import derive_seed  # noqa: F401  (re-exported: masks are seeded per image)
from ..util.errors import UserError

PROTOCOLS = ("box", "thin", "medium", "thick")




def box_holes(height: int, width: int, n_holes: int, hole_size: int, rng: np.random.Generator
              ) -> list[tuple[int, int, int, int]]:
    """`n_holes` square holes (x, y, w, h) of side `hole_size`, uniformly placed inside the image (may overlap)."""
    if hole_size > min(height, width):
        raise UserError(f"hole size {hole_size} does not fit a {width}x{height} image; pass a smaller --hole-size")
    return [(int(rng.integers(0, width - hole_size + 1)), int(rng.integers(0, height - hole_size + 1)),
             hole_size, hole_size) for _ in range(n_holes)]


def boxes_to_mask(height: int, width: int, boxes) -> np.ndarray:
    """bool H×W, True inside any of the (x, y, w, h) boxes (an overlapped pixel is simply a hole)."""
    mask = np.zeros((height, width), dtype=bool)
    for x, y, w, h in boxes:
        mask[y : y + h, x : x + w] = True
    return mask


def box_mask(height: int, width: int, n_holes: int, hole_size: int, rng: np.random.Generator) -> np.ndarray:
    return boxes_to_mask(height, width, box_holes(height, width, n_holes, hole_size, rng))


@dataclass(frozen=True)
class _Strokes:
    min_times: int
    max_times: int
    max_width: int
    max_len: int
    max_angle: int = 4


@dataclass(frozen=True)
class _Boxes:
    margin: int
    min_size: int
    max_size: int
    min_times: int
    max_times: int


# (strokes, boxes or None, probability of choosing boxes over strokes), parameters at 256 px
_LAMA = {
    "thin": (_Strokes(min_times=4, max_times=50, max_width=10, max_len=40), None, 0.0),
    "medium": (_Strokes(min_times=4, max_times=5, max_width=50, max_len=100),
               _Boxes(margin=0, min_size=10, max_size=50, min_times=1, max_times=5), 0.3 / 1.3),
    "thick": (_Strokes(min_times=1, max_times=5, max_width=100, max_len=200),
              _Boxes(margin=10, min_size=30, max_size=150, min_times=1, max_times=3), 0.3 / 1.3),
}


def _strokes(mask: np.ndarray, p: _Strokes, scale: float, rng: np.random.Generator) -> None:
    height, width = mask.shape
    for i in range(int(rng.integers(p.min_times, p.max_times + 1))):
        x, y = int(rng.integers(width)), int(rng.integers(height))
        for _ in range(1 + int(rng.integers(5))):
            angle = 0.01 + int(rng.integers(p.max_angle))
            if i % 2 == 0:
                angle = 2 * np.pi - angle
            length = (10 + int(rng.integers(p.max_len))) * scale
            brush = max(1, int(round((5 + int(rng.integers(p.max_width))) * scale)))
            end_x = int(np.clip(x + length * np.sin(angle), 0, width - 1))
            end_y = int(np.clip(y + length * np.cos(angle), 0, height - 1))
            cv2.line(mask, (x, y), (end_x, end_y), 1, brush)
            x, y = end_x, end_y


def _boxes(mask: np.ndarray, p: _Boxes, scale: float, rng: np.random.Generator) -> None:
    height, width = mask.shape
    margin = int(p.margin * scale)
    lo, hi = max(1, int(p.min_size * scale)), max(2, int(p.max_size * scale))
    for _ in range(int(rng.integers(p.min_times, p.max_times + 1))):
        bw = int(rng.integers(lo, min(hi, width - 2 * margin)))
        bh = int(rng.integers(lo, min(hi, height - 2 * margin)))
        x = int(rng.integers(margin, width - margin - bw + 1))
        y = int(rng.integers(margin, height - margin - bh + 1))
        mask[y : y + bh, x : x + bw] = 1


def irregular_mask(height: int, width: int, protocol: str, rng: np.random.Generator) -> np.ndarray:
    """A LaMa-style free-form mask (bool H×W, True = hole); never empty."""
    if protocol not in _LAMA:
        raise UserError(f"unknown mask protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    strokes, boxes, p_boxes = _LAMA[protocol]
    scale = min(height, width) / 256.0
    mask = np.zeros((height, width), dtype=np.uint8)
    while not mask.any():
        if boxes is not None and rng.random() < p_boxes:
            _boxes(mask, boxes, scale, rng)
        else:
            _strokes(mask, strokes, scale, rng)
    return mask.astype(bool)

