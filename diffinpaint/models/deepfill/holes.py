"""DeepFill v2's own training holes: a box united with free-form brush strokes.

Re-stated from the reference (JiahuiYu/generative_inpainting v2.0.0, inpaint_ops.py: `random_bbox`, `bbox2mask`,
`brush_stroke_mask`, with inpaint.yml's height/width 128, max_delta 32, margins 0). Every length is given for
256 px and scaled by size/256, so at 256 the parameters are the reference's exactly. The mean hole fraction at 256
is about 0.31 (box about 0.19, strokes about 0.15).

Differences from the reference, on purpose:
- one mask per image (drawn from the trainer's per-example numpy Generator); TF draws one per batch and tiles it;
- the strokes' random left-right / top-bottom flips are applied: the reference calls `mask.transpose(...)` without
  keeping the result, so its flips do nothing. The same two normals are drawn, so only the flips change.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

REFERENCE_SIZE = 256  # every pixel length below is for this size
BOX = 128  # box side at 256 px (inpaint.yml height/width)
MAX_DELTA = 32  # inpaint.yml max_delta_height/width: each side shrinks by randint(0, MAX_DELTA // 2)
STROKES = (1, 4)  # number of strokes ~ randint(1, 4): 1 to 3
VERTICES = (4, 12)  # vertices per stroke ~ randint(4, 12): 4 to 11
MEAN_ANGLE = 2 * math.pi / 5
ANGLE_RANGE = 2 * math.pi / 15
WIDTH = (12, 40)  # stroke width ~ int(U(12, 40)) at 256 px


def box_mask(size: int, rng: np.random.Generator) -> np.ndarray:
    """A size/2 square at a uniform position (no margins), each side pulled in by 0 to size/16 px."""
    scale = size / REFERENCE_SIZE
    box = max(1, round(BOX * scale))
    max_shrink = round(MAX_DELTA // 2 * scale)
    top = int(rng.integers(0, size - box)) if size > box else 0
    left = int(rng.integers(0, size - box)) if size > box else 0
    # the reference pulls top and bottom in by the same amount h, left and right by the same w
    h = int(rng.integers(0, max_shrink + 1))
    w = int(rng.integers(0, max_shrink + 1))
    mask = np.zeros((size, size), bool)
    mask[top + h: top + box - h, left + w: left + box - w] = True
    return mask


def stroke_mask(size: int, rng: np.random.Generator) -> np.ndarray:
    """1 to 3 brush strokes: zig-zag polylines of 4 to 11 segments, drawn as PIL lines with round joints."""
    scale = size / REFERENCE_SIZE
    average_radius = math.sqrt(2 * size * size) / 8  # 45.25 at 256: already proportional to the size
    image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(*STROKES))):
        num_vertex = int(rng.integers(*VERTICES))
        angle_min = MEAN_ANGLE - rng.uniform(0, ANGLE_RANGE)
        angle_max = MEAN_ANGLE + rng.uniform(0, ANGLE_RANGE)
        # alternate the turning direction so the stroke zig-zags instead of curling up
        angles = [2 * math.pi - rng.uniform(angle_min, angle_max) if i % 2 == 0 else rng.uniform(angle_min, angle_max)
                  for i in range(num_vertex)]
        vertices = [(int(rng.integers(0, size)), int(rng.integers(0, size)))]
        for angle in angles:
            # segment length ~ N(r, r // 2) clipped to [0, 2r] (the reference floors the spread, as here)
            r = np.clip(rng.normal(average_radius, average_radius // 2), 0, 2 * average_radius)
            x = np.clip(vertices[-1][0] + r * math.cos(angle), 0, size)
            y = np.clip(vertices[-1][1] + r * math.sin(angle), 0, size)
            vertices.append((int(x), int(y)))
        width = max(1, int(rng.uniform(WIDTH[0] * scale, WIDTH[1] * scale)))
        draw.line(vertices, fill=1, width=width)
        for x, y in vertices:  # round caps and joints
            draw.ellipse((x - width // 2, y - width // 2, x + width // 2, y + width // 2), fill=1)
    mask = np.asarray(image, bool)
    if rng.normal() > 0:
        mask = mask[:, ::-1]
    if rng.normal() > 0:
        mask = mask[::-1, :]
    return np.ascontiguousarray(mask)


def make_holes(size: int, rng: np.random.Generator) -> np.ndarray:
    """DeepFill v2's training mask: box ∪ strokes, bool size×size, True = hole."""
    return box_mask(size, rng) | stroke_mask(size, rng)
