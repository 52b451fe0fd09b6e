"""Mask generators: rectangular boxes and LaMa's irregular `thin`, `medium`, `thick` protocols.

The irregular protocols are LaMa's test-mask generator (Suvorov et al. 2022: `bin/gen_mask_dataset.py` with
`configs/data_gen/random_{thin,medium,thick}_{256,512}.yaml` and `saicinpainting/training/data/masks.py`),
re-stated here in our own words because LaMa ships no installable package:

* random polylines of thick brush strokes or, for `medium` and `thick`, with weight 0.3 against the strokes'
  1 (probability 0.3/1.3), a handful of random rectangles instead;
* the counts as LaMa's generator classes actually produce them with no ramp: one stroke more than the config's
  `max_times`, and box sides up to `bbox_max_size` inclusive;
* separate pixel parameters at 256 and 512 px (the 512 configs are not a linear scaling of the 256 ones);
* LaMa draws 5 variants per image and drops those covering more than half of it (`max_tamper_area` 0.5).

Measured with LaMa's own code (2,000 images each) and with this module: see README, "Mask protocols".

The building blocks are public, for models whose own hole generators are LaMa's primitives with other settings
(models/lama/step.py: LaMa's training masks):
    StrokeParams, draw_strokes(mask, params, rng)   polylines of brush strokes (LaMa's irregular_kwargs)
    BoxParams, draw_boxes(mask, params, rng)        rectangles kept inside a margin (LaMa's box_kwargs)
    resize_hole_mask(mask, height, width)           a mask drawn at a config's size brought to another size
                                                    with the same hole fraction
Each draw function paints 1 into a uint8 H×W canvas in place and draws only from `rng`, in a fixed order: the
same generator state gives the same mask, bit for bit (tests/test_lama_masks.py, tests/test_lama.py).
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
class StrokeParams:
    """LaMa's `irregular_kwargs` (pixels at the size the mask is drawn at): polylines of `min_times`..`max_times` + 1
    strokes (one more than the config reads, as LaMa's generator class draws them), each of 1-5 segments of length
    10..`max_len` + 9 and brush width 5..`max_width` + 4, at angles of 0.01 plus a whole number of radians below
    `max_angle`."""
    min_times: int
    max_times: int
    max_width: int
    max_len: int
    max_angle: int = 4


@dataclass(frozen=True)
class BoxParams:
    """LaMa's `box_kwargs` (`bbox_min_size` / `bbox_max_size` here `min_size` / `max_size`): `min_times`..`max_times`
    rectangles, sides `min_size`..`max_size` inclusive, kept `margin` pixels from the border."""
    margin: int
    min_size: int
    max_size: int
    min_times: int
    max_times: int


@dataclass(frozen=True)
class _Protocol:
    strokes: StrokeParams
    boxes: BoxParams | None  # None: strokes only (LaMa's box_proba 0)
    box_weight: float = 0.0  # LaMa's box_proba, against irregular_proba 1


# configs/data_gen/random_<protocol>_<size>.yaml, value for value
_LAMA: dict[int, dict[str, _Protocol]] = {
    256: {
        "thin": _Protocol(StrokeParams(min_times=4, max_times=50, max_width=10, max_len=40), None),
        "medium": _Protocol(StrokeParams(min_times=4, max_times=5, max_width=50, max_len=100),
                            BoxParams(margin=0, min_size=10, max_size=50, min_times=1, max_times=5), 0.3),
        "thick": _Protocol(StrokeParams(min_times=1, max_times=5, max_width=100, max_len=200),
                           BoxParams(margin=10, min_size=30, max_size=150, min_times=1, max_times=3), 0.3),
    },
    512: {
        "thin": _Protocol(StrokeParams(min_times=4, max_times=70, max_width=20, max_len=100), None),
        "medium": _Protocol(StrokeParams(min_times=4, max_times=10, max_width=100, max_len=200),
                            BoxParams(margin=0, min_size=30, max_size=150, min_times=1, max_times=5), 0.3),
        "thick": _Protocol(StrokeParams(min_times=1, max_times=5, max_width=250, max_len=450),
                           BoxParams(margin=10, min_size=30, max_size=300, min_times=1, max_times=4), 0.3),
    },
}
MAX_HOLE_AREA = 0.5  # LaMa's max_tamper_area: a variant covering more of the image is dropped
_LAMA_PI = 3.1415926  # the constant LaMa's stroke angles use; kept so end points truncate as theirs do


def lama_config_size(height: int, width: int) -> int:
    """The LaMa config (256 or 512) an image is masked with: the one nearer its shorter side (up to 384 px: 256)."""
    return 256 if min(height, width) <= 384 else 512


def draw_strokes(mask: np.ndarray, p: StrokeParams, rng: np.random.Generator) -> None:
    """Paint LaMa's brush-stroke polylines (value 1) into `mask` (uint8 H×W) in place, drawing only from `rng`:
    LaMa's make_random_irregular_mask, draw for draw."""
    height, width = mask.shape
    # LaMa's generator class turns max_times into min_times + 1 + (max_times - min_times) * ramp, and without a
    # ramp (test masks) that coefficient is 1: the draw is inclusive of max_times + 1, one stroke more than the
    # config reads
    for i in range(int(rng.integers(p.min_times, p.max_times + 2))):
        # each stroke starts anywhere on the image and is a polyline of 1 to 5 segments
        x, y = int(rng.integers(width)), int(rng.integers(height))
        for _ in range(1 + int(rng.integers(5))):
            # the angle is a whole number of radians (0..max_angle-1) plus 0.01; every other stroke mirrors it,
            # so strokes do not all drift the same way
            angle = 0.01 + int(rng.integers(p.max_angle))
            if i % 2 == 0:
                angle = 2 * _LAMA_PI - angle
            length = 10 + int(rng.integers(p.max_len))
            brush = 5 + int(rng.integers(p.max_width))
            # the end point is truncated toward zero and clamped to [0, size] (one past the last pixel, as LaMa;
            # cv2 clips the line at the border)
            end_x = min(max(int(x + length * np.sin(angle)), 0), width)
            end_y = min(max(int(y + length * np.cos(angle)), 0), height)
            cv2.line(mask, (x, y), (end_x, end_y), 1, brush)
            # the next segment continues from where this one ended
            x, y = end_x, end_y


def draw_boxes(mask: np.ndarray, p: BoxParams, rng: np.random.Generator) -> None:
    """Paint LaMa's random rectangles (value 1) into `mask` (uint8 H×W) in place, drawing only from `rng`: LaMa's
    make_random_rectangle_mask, draw for draw."""
    height, width = mask.shape
    # without a ramp LaMa's box generator passes max_size + 1 as an exclusive bound, so sides run min..max
    # inclusive; a box must also fit between the margins
    side_end = min(p.max_size + 1, height - 2 * p.margin, width - 2 * p.margin)
    # the count is min_times..max_times inclusive (the ramp adds nothing here)
    for _ in range(int(rng.integers(p.min_times, p.max_times + 1))):
        box_w, box_h = int(rng.integers(p.min_size, side_end)), int(rng.integers(p.min_size, side_end))
        # placed uniformly so that it lies wholly inside the margins
        x = int(rng.integers(p.margin, width - p.margin - box_w + 1))
        y = int(rng.integers(p.margin, height - p.margin - box_h + 1))
        mask[y : y + box_h, x : x + box_w] = 1


def _variant(height: int, width: int, protocol: _Protocol, rng: np.random.Generator) -> np.ndarray:
    """One draw of LaMa's mixed generator on an image of this size (uint8 H×W, 1 = hole)."""
    mask = np.zeros((height, width), dtype=np.uint8)
    # the mixed generator picks one kind per mask: rectangles with weight box_weight against strokes' 1
    if protocol.boxes is not None and rng.random() < protocol.box_weight / (1.0 + protocol.box_weight):
        draw_boxes(mask, protocol.boxes, rng)
    else:
        draw_strokes(mask, protocol.strokes, rng)
    return mask


def resize_hole_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """A hole mask (H×W, nonzero = hole) drawn at a config's size brought to height×width with the same hole
    fraction (bool height×width; never empty when `mask` is not). Deterministic: no random draws."""
    if height * width > mask.size:
        # enlarging: each pixel takes the hole's value interpolated at its place; strokes only get wider in pixels,
        # so the 0.5 cut keeps the drawn fraction
        return cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR) >= 0.5
    # shrinking: how much of each image pixel the hole covers
    cover = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
    # the best-covered pixels become the hole, as many as keep the drawn fraction: a 0.5 cut would lose strokes
    # thinner than a pixel on a small image; at least one pixel keeps the mask non-empty
    keep = max(1, int(round(np.count_nonzero(mask) / mask.size * height * width)))
    # the keep-th largest coverage; a full sort, because np.partition's introselect slows ~20x on the many equal
    # values (0 and 1) a coverage map holds (250 µs against 14 µs for a 64 px map)
    threshold = np.sort(cover, axis=None)[-keep]
    return cover >= max(threshold, np.float32(1e-6))


def irregular_mask(height: int, width: int, protocol: str, rng: np.random.Generator) -> np.ndarray:
    """A LaMa mask (bool H×W, True = hole): never empty, never more than half the image.

    At 256 and 512 px (shorter side) the masks follow LaMa's config of that size exactly. Any other size uses the
    nearer config (shorter side up to 384 px: 256, above: 512) the way LaMa's gen_mask_dataset treats an image of
    another size: the mask is drawn on the image scaled so its shorter side is the config's size (aspect kept), then
    resized to the image keeping its hole fraction, so fractions match LaMa's at every size; the half-image limit is
    checked on the final mask. Deterministic for a given `rng` state.
    """
    if protocol not in _LAMA[256]:
        raise UserError(f"unknown mask protocol {protocol!r}; choose from {', '.join(_LAMA[256])}")
    size = lama_config_size(height, width)
    config = _LAMA[size][protocol]
    # the canvas LaMa draws on: the image resized so its shorter side is the config's size, rounded as LaMa does
    factor = size / min(height, width)
    canvas_h, canvas_w = int(round(height * factor)), int(round(width * factor))
    # LaMa draws 5 variants, drops those over half the image and keeps one of the rest at random; when all 5 are
    # dropped the image gets no mask. The variants are independent, so the mask it keeps is distributed exactly as
    # one variant conditioned on covering at most half: drawing until one does gives that same distribution, with
    # no image left without a mask (and fewer draws). Every protocol's variant fits more often than not.
    while True:
        mask = _variant(canvas_h, canvas_w, config, rng)
        hole = mask.astype(bool) if (canvas_h, canvas_w) == (height, width) else resize_hole_mask(mask, height, width)
        if hole.any() and hole.mean() <= MAX_HOLE_AREA:
            return hole
