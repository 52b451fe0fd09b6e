"""Masked metrics against independent references: numpy, skimage, scipy, torch-fidelity."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from diffinpaint.data import load_dataset
from diffinpaint.evaluation.metrics import (BoxSSIM, MaskedRMSE, MaskedSSIM, box_squared_error, box_ssim, masked_rmse,
                                 masked_squared_error, masked_ssim)

SK = dict(channel_axis=-1, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)


def to_tensor(images_u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images_u8).permute(0, 3, 1, 2).float() / 255.0


def random_pair(n, h, w, seed=0, noise=40):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, 256, (n, h, w, 3)).astype(np.uint8)
    out = np.clip(gt.astype(int) + rng.integers(-noise, noise + 1, gt.shape), 0, 255).astype(np.uint8)
    return gt, out


def random_boxes(n, h, w, rng, sizes=((75, 75), (11, 11), (40, 23), (12, 60))):
    boxes = []
    for _ in range(n):
        image_boxes = []
        for bh, bw in sizes[: rng.integers(1, len(sizes) + 1)]:
            image_boxes.append((int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1)), bw, bh))
        boxes.append(image_boxes)
    return boxes


def skimage_box_ssim(gt, out, boxes):
    return [[structural_similarity(gt[i][y : y + h, x : x + w] / 255.0, out[i][y : y + h, x : x + w] / 255.0, **SK)
             for x, y, w, h in image_boxes] for i, image_boxes in enumerate(boxes)]


def test_box_ssim_matches_skimage_on_random_crops_of_many_shapes():
    gt, out = random_pair(6, 128, 120, seed=1)
    boxes = random_boxes(6, 128, 120, np.random.default_rng(2))
    mine = box_ssim(to_tensor(out), to_tensor(gt), boxes)
    reference = skimage_box_ssim(gt, out, boxes)
    assert [len(b) for b in mine] == [len(b) for b in reference]
    diff = max(abs(a - b) for ma, ra in zip(mine, reference) for a, b in zip(ma, ra))
    assert diff <= 1e-4


def test_box_ssim_matches_skimage_on_real_photo_crops(demo_small):
    dataset = load_dataset(demo_small)
    gt = np.stack([s.load_image() for s in dataset.samples])
    # a plausible "fill": the photo blurred and shifted, so SSIM spans a realistic range
    out = np.roll(gt, 3, axis=2)
    boxes = [s.boxes for s in dataset.samples]
    mine = box_ssim(to_tensor(out), to_tensor(gt), boxes)
    reference = skimage_box_ssim(gt, out, boxes)
    values = np.array(reference).ravel()
    assert values.min() < 0.9  # the comparison is not between near-identical crops
    assert np.abs(np.array(mine).ravel() - values).max() <= 1e-4


def test_identical_crops_score_one_and_order_is_per_hole():
    gt, out = random_pair(2, 40, 40, seed=3)
    boxes = [[(0, 0, 20, 20), (10, 10, 30, 30)], [(5, 5, 11, 11)]]
    same = box_ssim(to_tensor(gt), to_tensor(gt), boxes)
    assert np.allclose([v for b in same for v in b], 1.0, atol=1e-6)
    different = box_ssim(to_tensor(out), to_tensor(gt), boxes)
    assert all(v < 0.99 for b in different for v in b)


def test_masked_ssim_matches_skimage_full_map_over_hole_pixels():
    gt, out = random_pair(2, 64, 48, seed=4)
    rng = np.random.default_rng(5)
    mask = rng.random((2, 1, 64, 48)) < 0.3
    mine = masked_ssim(to_tensor(out), to_tensor(gt), torch.from_numpy(mask).float())
    for i in range(2):
        _, full = structural_similarity(gt[i] / 255.0, out[i] / 255.0, full=True, **SK)
        expected = full.mean(axis=-1)[mask[i, 0]].mean()
        assert abs(mine[i].item() - expected) <= 1e-4


def test_ssim_refuses_crops_smaller_than_the_window():
    gt, out = random_pair(1, 32, 32)
    with pytest.raises(ValueError, match="at least 11x11"):
        box_ssim(to_tensor(out), to_tensor(gt), [[(0, 0, 10, 10)]])


def test_masked_rmse_matches_numpy_pooled_over_hole_pixels():
    gt, out = random_pair(3, 50, 60, seed=6)
    rng = np.random.default_rng(7)
    mask = rng.random((3, 50, 60)) < 0.2
    diff = (out.astype(np.float64) - gt.astype(np.float64)) / 255.0
    expected = np.sqrt(np.mean(diff[mask] ** 2))  # hole pixels × 3 channels, pooled over images
    got = masked_rmse(to_tensor(out), to_tensor(gt), torch.from_numpy(mask[:, None]).float())
    assert abs(got.item() - expected) < 1e-7  # inputs are float32 (uint8 / 255)


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_metric_objects_do_not_depend_on_batch_size(batch_size):
    gt, out = random_pair(5, 48, 48, seed=8)
    rng = np.random.default_rng(9)
    mask = torch.from_numpy(rng.random((5, 1, 48, 48)) < 0.25).float()
    boxes = random_boxes(5, 48, 48, rng, sizes=((20, 20), (11, 30)))
    p, t = to_tensor(out), to_tensor(gt)
    rmse, box, masked = MaskedRMSE(), BoxSSIM(), MaskedSSIM()
    for start in range(0, 5, batch_size):
        sl = slice(start, start + batch_size)
        rmse.update(p[sl], t[sl], mask[sl])
        box.update(p[sl], t[sl], boxes[sl])
        masked.update(p[sl], t[sl], mask[sl])
    assert rmse.compute().item() == pytest.approx(masked_rmse(p, t, mask).item(), abs=1e-12)
    all_holes = [v for b in box_ssim(p, t, boxes) for v in b]
    assert box.compute().item() == pytest.approx(np.mean(all_holes), abs=1e-6)
    assert masked.compute().item() == pytest.approx(masked_ssim(p, t, mask).mean().item(), abs=1e-6)


@pytest.mark.parametrize("dtype", ["uint8", "float"])
def test_box_squared_error_equals_the_mask_path_with_overlapping_holes_counted_once(dtype):
    gt, out = random_pair(4, 60, 70, seed=10)
    boxes = [[(0, 0, 20, 20), (10, 10, 20, 20)], [(5, 5, 11, 30), (40, 20, 25, 25)], [(0, 0, 70, 60)],
             [(0, 0, 30, 30), (10, 10, 30, 30), (20, 20, 30, 30)]]  # a pixel in three holes: the mask path
    mask = np.zeros((4, 1, 60, 70), bool)
    for i, image_boxes in enumerate(boxes):
        for x, y, w, h in image_boxes:
            mask[i, 0, y : y + h, x : x + w] = True
    p, t = torch.from_numpy(out).permute(0, 3, 1, 2), torch.from_numpy(gt).permute(0, 3, 1, 2)
    if dtype == "float":
        p, t = p.float() / 255, t.float() / 255
    sse_box, count_box = box_squared_error(p, t, boxes)
    sse_mask, count_mask = masked_squared_error(p, t, torch.from_numpy(mask))
    assert torch.equal(count_box, count_mask) and count_box[0].item() == (400 + 400 - 100) * 3
    assert torch.allclose(sse_box, sse_mask, rtol=1e-12, atol=1e-9)
