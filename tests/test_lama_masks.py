"""The thin / medium / thick protocols against LaMa's own generator.

LAMA holds what LaMa's code gives (bin/gen_mask_dataset.py run unmodified with configs/data_gen/random_*_{256,512}
on 2,000 square images per protocol and size; README, "Mask protocols"). Our masks come from the seeds `data masks`
would use, so the numbers are fixed for these seeds.
"""
from __future__ import annotations

import numpy as np
import pytest

from diffinpaint.data.masks import (BoxParams, StrokeParams, derive_seed, draw_boxes, draw_strokes, irregular_mask,
                                    lama_config_size, resize_hole_mask)

# mean hole fraction of the masks LaMa's gen_mask_dataset keeps (none of them over half the image)
LAMA = {
    (256, "thin"): 0.291, (256, "medium"): 0.238, (256, "thick"): 0.263,
    (512, "thin"): 0.286, (512, "medium"): 0.270, (512, "thick"): 0.274,
}
TOLERANCE = 0.03


def _fractions(size: int, protocol: str, n: int, height: int | None = None) -> np.ndarray:
    return np.array([irregular_mask(height or size, size, protocol,
                                    np.random.default_rng(derive_seed(0, f"{i:05d}.png"))).mean()
                     for i in range(n)])


@pytest.mark.parametrize("size,protocol", list(LAMA))
def test_hole_area_matches_lama(size, protocol):
    fractions = _fractions(size, protocol, 400)  # standard error about 0.0065: the tolerance is > 4 of them
    assert abs(fractions.mean() - LAMA[size, protocol]) < TOLERANCE, fractions.mean()
    assert fractions.max() <= 0.5 and fractions.min() > 0  # LaMa's max_tamper_area; never an empty mask


@pytest.mark.slow
@pytest.mark.parametrize("size,protocol", list(LAMA))
def test_hole_area_matches_lama_on_2000_masks(size, protocol):
    fractions = _fractions(size, protocol, 2000)
    assert abs(fractions.mean() - LAMA[size, protocol]) < TOLERANCE, fractions.mean()
    assert fractions.max() <= 0.5 and fractions.min() > 0


def test_masks_are_a_function_of_the_rng_state():
    for protocol in ("thin", "medium", "thick"):
        a = irregular_mask(256, 256, protocol, np.random.default_rng(7))
        assert np.array_equal(a, irregular_mask(256, 256, protocol, np.random.default_rng(7)))
        assert not np.array_equal(a, irregular_mask(256, 256, protocol, np.random.default_rng(8)))


def test_other_sizes_use_the_nearer_config_scaled_to_the_image():
    assert [lama_config_size(s, s) for s in (32, 256, 384, 385, 512, 2048)] == [256, 256, 256, 512, 512, 512]
    assert lama_config_size(1000, 300) == 256  # the shorter side decides
    # drawn at the config's size and resized: the hole fraction stays LaMa's, within the test's tolerance
    for size, config, height in ((64, 256, None), (128, 256, 96), (1024, 512, None)):
        fractions = _fractions(size, "thick", 150, height)
        assert fractions.shape == (150,)
        assert abs(fractions.mean() - LAMA[config, "thick"]) < TOLERANCE + 0.01, (size, fractions.mean())
        assert fractions.max() <= 0.5 and fractions.min() > 0
    tiny = [irregular_mask(8, 8, "thin", np.random.default_rng(i)) for i in range(50)]
    assert all(m.shape == (8, 8) and m.any() and m.mean() <= 0.5 for m in tiny)


def test_the_public_primitives_are_the_protocols_building_blocks():
    """draw_strokes / draw_boxes / resize_hole_mask (what a model's own generator, e.g. LaMa's training masks, is
    made of) draw exactly what the protocols draw: `thin` at 256 px is one call of draw_strokes with LaMa's
    random_thin_256 irregular_kwargs (no box draw; the first variant is kept unless it covers over half)."""
    thin_256 = StrokeParams(min_times=4, max_times=50, max_width=10, max_len=40)
    for seed in range(20):
        canvas = np.zeros((256, 256), np.uint8)
        draw_strokes(canvas, thin_256, np.random.default_rng(seed))
        if canvas.mean() <= 0.5:
            assert np.array_equal(canvas.astype(bool), irregular_mask(256, 256, "thin", np.random.default_rng(seed)))
    # boxes: inside the margin, sides within the bounds, a function of the generator state
    params = BoxParams(margin=10, min_size=30, max_size=150, min_times=1, max_times=4)
    for seed in range(20):
        a, b = np.zeros((256, 256), np.uint8), np.zeros((256, 256), np.uint8)
        draw_boxes(a, params, np.random.default_rng(seed))
        draw_boxes(b, params, np.random.default_rng(seed))
        assert np.array_equal(a, b) and a.any() and set(np.unique(a)) <= {0, 1}
        assert not a[:10].any() and not a[-10:].any() and not a[:, :10].any() and not a[:, -10:].any()
    # resizing keeps the hole fraction (shrinking) and never empties a mask
    canvas = np.zeros((256, 256), np.uint8)
    draw_strokes(canvas, StrokeParams(min_times=1, max_times=5, max_width=100, max_len=200), np.random.default_rng(3))
    for height, width in ((64, 64), (32, 48), (512, 512)):
        small = resize_hole_mask(canvas, height, width)
        assert small.shape == (height, width) and small.dtype == bool
        assert abs(small.mean() - canvas.mean()) < 0.02
    tiny = np.zeros((256, 256), np.uint8)
    tiny[100, 100] = 1
    assert resize_hole_mask(tiny, 8, 8).sum() == 1
