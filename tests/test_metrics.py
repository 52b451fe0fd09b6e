"""Pixel metrics and LPIPS against independent references: numpy, skimage, torchmetrics."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from diffinpaint.data import load_dataset
from diffinpaint.evaluation.columns import PSNR_CAP_DB
from diffinpaint.models import MODELS
from diffinpaint.models.classical import TeleaModel
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


# ---------------------------------------------------------------------------------------------- DESIGN's ssim


def skimage_full_map(gt, out):
    _, full = structural_similarity(gt / 255.0, out / 255.0, full=True, **SK)
    return full


@pytest.mark.parametrize("source", ["random", "photos"])
def test_box_hole_ssim_is_skimages_full_map_averaged_over_each_hole(source, demo_small):
    if source == "random":
        gt, out = random_pair(5, 90, 84, seed=11)
        # holes in the middle, touching each border and corner, overlapping, 1 px wide, the whole image (which
        # takes the shifted-adds filter for sides over 64 px)
        boxes = [[(0, 0, 20, 20), (64, 70, 20, 20)], [(30, 0, 11, 90), (0, 30, 84, 1)], [(0, 0, 84, 90)],
                 [(10, 10, 30, 30), (20, 20, 30, 30)], [(83, 89, 1, 1), (5, 80, 12, 10)]]
    else:
        dataset = load_dataset(demo_small)
        gt = np.stack([s.load_image() for s in dataset.samples])
        out = np.roll(gt, 3, axis=2)
        boxes = [s.boxes for s in dataset.samples]
    from diffinpaint.evaluation.metrics import box_hole_ssim

    mine = box_hole_ssim(to_tensor(out), to_tensor(gt), boxes)
    worst = 0.0
    for i, image_boxes in enumerate(boxes):
        full = skimage_full_map(gt[i], out[i])
        for j, (x, y, w, h) in enumerate(image_boxes):
            worst = max(worst, abs(mine[i][j] - full[y:y + h, x:x + w].mean()))
    assert worst <= 1e-4
    if source == "photos":  # the hole ssim sees the seam: it differs from the crop-only number
        crop = box_ssim(to_tensor(out), to_tensor(gt), boxes)
        assert max(abs(a - b) for x, y in zip(mine, crop) for a, b in zip(x, y)) > 1e-3


def test_free_form_ssim_near_the_borders_matches_the_full_map():
    """masked_ssim filters only the hole's grown bounding box: holes on the image border must still match."""
    gt, out = random_pair(3, 50, 41, seed=12)
    mask = np.zeros((3, 1, 50, 41), bool)
    mask[0, 0, :3, :] = True  # a strip along the top edge
    mask[1, 0, 20:23, 38:] = True  # touching the right edge
    mask[2, 0, 49, 0] = True  # a single corner pixel
    mine = masked_ssim(to_tensor(out), to_tensor(gt), torch.from_numpy(mask))
    for i in range(3):
        expected = skimage_full_map(gt[i], out[i]).mean(axis=-1)[mask[i, 0]].mean()
        assert abs(mine[i].item() - expected) <= 1e-4


def test_free_form_ssim_crop_is_the_bounding_box_crop():
    from diffinpaint.evaluation.metrics import masked_ssim_crop

    gt, out = random_pair(2, 48, 48, seed=13)
    mask = np.zeros((2, 1, 48, 48), bool)
    mask[0, 0, 5:30, 8:20] = True
    mask[0, 0, 40, 40] = True  # the bounding box spans both pieces
    mask[1, 0, 5:10, 5:10] = True  # 5x5: under the 11x11 window, so no crop SSIM
    mine = masked_ssim_crop(to_tensor(out), to_tensor(gt), torch.from_numpy(mask))
    expected = structural_similarity(gt[0][5:41, 8:41] / 255.0, out[0][5:41, 8:41] / 255.0, **SK)
    assert abs(mine[0].item() - expected) <= 1e-4 and np.isnan(mine[1].item())


def test_whole_image_ssim_and_psnr_match_skimage(demo_small):
    from skimage.metrics import peak_signal_noise_ratio

    from diffinpaint.evaluation.metrics import image_psnr, image_ssim

    dataset = load_dataset(demo_small)
    gt = np.stack([s.load_image() for s in dataset.samples])
    out = gt.copy()
    out[:, 10:40, 10:40] = np.roll(gt, 5, axis=1)[:, 10:40, 10:40]
    for p, t in [(to_tensor(out), to_tensor(gt)), (torch.from_numpy(out).permute(0, 3, 1, 2),
                                                   torch.from_numpy(gt).permute(0, 3, 1, 2))]:  # float and uint8
        ssim = image_ssim(p, t)
        psnr = image_psnr(p, t)
        for i in range(len(gt)):
            assert abs(ssim[i].item() - structural_similarity(gt[i] / 255.0, out[i] / 255.0, **SK)) <= 1e-4
            assert psnr[i].item() == pytest.approx(peak_signal_noise_ratio(gt[i], out[i]), abs=1e-5)
    # an exact copy (MSE 0, inf in skimage) and anything closer than half a grey level score exactly the cap
    assert PSNR_CAP_DB == pytest.approx(20 * np.log10(255 / 0.5)) and round(PSNR_CAP_DB, 2) == 54.15
    near = gt[:1].copy()
    near[0, 0, 0, 0] ^= 1  # one value off by one: MSE (1/255)² / (64·64·3), about 101 dB uncapped
    for p, t in [(gt[:1], gt[:1]), (near, gt[:1])]:
        assert image_psnr(to_tensor(p), to_tensor(t))[0].item() == PSNR_CAP_DB  # float
        assert image_psnr(torch.from_numpy(p).permute(0, 3, 1, 2),
                          torch.from_numpy(t).permute(0, 3, 1, 2))[0].item() == PSNR_CAP_DB  # uint8
    half = np.full((1, 8, 8, 3), 100, np.uint8)  # MSE just above (0.5/255)²: under the cap, as skimage says
    off = half.copy()
    off[0, :, :5] += 1  # 5/8 of the values off by one grey level: MSE (1/255)²·5/8 > (0.5/255)²
    value = image_psnr(torch.from_numpy(off).permute(0, 3, 1, 2), torch.from_numpy(half).permute(0, 3, 1, 2))
    assert value[0].item() == pytest.approx(peak_signal_noise_ratio(half, off), abs=1e-9)
    assert value[0].item() < PSNR_CAP_DB
    gt, out = random_pair(3, 97, 130, seed=15)  # over 64 px: the shifted-adds filter
    ssim = image_ssim(to_tensor(out), to_tensor(gt))
    for i in range(3):
        assert abs(ssim[i].item() - structural_similarity(gt[i] / 255.0, out[i] / 255.0, **SK)) <= 1e-4


# ---------------------------------------------------------------------------------------------- LPIPS



def torchmetrics_lpips(weights_path):
    """torchmetrics' own LPIPS metric with its backbone filled from the same AlexNet file."""
    from unittest import mock

    import torchvision
    from torchmetrics.functional.image import lpips as tm_lpips
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    def features(net, pretrained=False):
        alexnet = torchvision.models.alexnet(weights=None)
        alexnet.load_state_dict(torch.load(weights_path, weights_only=True))
        return alexnet.features

    with mock.patch.object(tm_lpips, "_get_tv_model_features", features):
        return LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True)


def test_lpips_matches_torchmetrics_on_the_same_weights(alexnet_file):
    from diffinpaint.evaluation.lpips import LPIPS

    mine = LPIPS(alexnet_file, batch_size=2)
    reference = torchmetrics_lpips(alexnet_file)
    gt, out = random_pair(4, 70, 45, seed=14, noise=30)
    values = mine(torch.from_numpy(out).permute(0, 3, 1, 2), torch.from_numpy(gt).permute(0, 3, 1, 2))  # uint8 in
    worst = 0.0
    for i in range(4):
        reference.reset()
        reference.update(to_tensor(out[i : i + 1]), to_tensor(gt[i : i + 1]))
        worst = max(worst, abs(values[i].item() - reference.compute().item()))
    assert worst <= 1e-5 and values.min() > 0
    # crops of several sizes in one call, each the same as alone; a 12×33 crop is enlarged uniformly (aspect
    # kept) until its shorter side is 32: 32×88
    boxes = [[(0, 0, 40, 40), (5, 10, 12, 33)], [(5, 20, 40, 40)]]
    crops = mine.crops(torch.from_numpy(out).permute(0, 3, 1, 2), torch.from_numpy(gt).permute(0, 3, 1, 2), boxes)
    x, y, w, h = boxes[0][1]
    stretch = lambda a: torch.nn.functional.interpolate(to_tensor(a[None, y:y + h, x:x + w]), size=(88, 32),  # noqa
                                                         mode="bilinear", align_corners=False)
    reference.reset()
    reference.update(stretch(out[0]), stretch(gt[0]))
    assert abs(crops[0][1] - reference.compute().item()) <= 1e-5
    x, y, w, h = boxes[1][0]
    alone = mine(to_tensor(out[1:2, y:y + h, x:x + w]), to_tensor(gt[1:2, y:y + h, x:x + w]))
    assert abs(crops[1][0] - alone.item()) <= 1e-6


def test_lpips_weights_missing_or_wrong(tmp_path, monkeypatch):
    from diffinpaint.evaluation.lpips import LPIPS, LPIPSUnavailable

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(LPIPSUnavailable, match="offline"):
        LPIPS()  # no file, nothing cached, offline (conftest): unavailable, not an error
    with pytest.raises(ValueError, match="no such file"):
        LPIPS(tmp_path / "nope.pth")
    wrong = tmp_path / "wrong.pth"
    torch.save({f"features.{i}.{p}": torch.zeros(2) for i in (0, 3, 6, 8, 10) for p in ("weight", "bias")}, wrong)
    with pytest.raises(ValueError, match="not torchvision's AlexNet weights"):
        LPIPS(wrong)


def test_lpips_weights_are_found_in_the_torch_hub_cache(tmp_path, monkeypatch, alexnet_file):
    from diffinpaint.evaluation.lpips import LPIPS

    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    shutil.copy(alexnet_file, tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    assert LPIPS().weights_sha256 == LPIPS(alexnet_file).weights_sha256


def test_ssims_do_not_depend_on_what_else_is_in_the_batch():
    """Bit for bit: an image scored alone or among others (different crop batches) gives the same numbers, so
    one process or several give the same per_image.csv."""
    from diffinpaint.evaluation.metrics import box_hole_ssim, image_ssim

    gt, out = random_pair(5, 80, 90, seed=16)
    boxes = random_boxes(5, 80, 90, np.random.default_rng(17), sizes=((20, 20), (11, 30), (40, 40)))
    p, t = to_tensor(out), to_tensor(gt)
    together = (box_ssim(p, t, boxes), box_hole_ssim(p, t, boxes), image_ssim(p, t).tolist())
    for i in range(5):
        alone = (box_ssim(p[i:i + 1], t[i:i + 1], boxes[i:i + 1]), box_hole_ssim(p[i:i + 1], t[i:i + 1], boxes[i:i + 1]),
                 image_ssim(p[i:i + 1], t[i:i + 1]).tolist())
        assert alone[0][0] == together[0][i] and alone[1][0] == together[1][i] and alone[2][0] == together[2][i]


# ---------------------------------------------------------------------------------------------- PSNR cap in eval


class CopyOrNoise(TeleaModel):
    """The original itself for images of one label (exact copies, psnr_full infinite uncapped), seeded noise in
    the other holes; seeded, so eval runs it once per seed."""

    name = "copy_or_noise"
    deterministic = False
    copy_label: str | None = None

    def inpaint(self, images, masks, *, seeds, labels):
        noise = torch.stack([torch.rand(image.shape, generator=torch.Generator().manual_seed(seed))
                             for image, seed in zip(images, seeds)])
        copy = torch.tensor([label == CopyOrNoise.copy_label for label in labels]).view(-1, 1, 1, 1)
        return torch.where(copy, images, noise)


MODELS.update({"copy_or_noise": "test_metrics:CopyOrNoise"})


def test_exact_copies_get_the_capped_psnr_and_are_counted_in_every_seed(demo_small, tmp_path):
    import json

    import pandas as pd

    from diffinpaint.cli import main

    dataset = load_dataset(demo_small)
    CopyOrNoise.copy_label = sorted({s.label for s in dataset.samples})[0]
    copies = sum(s.label == CopyOrNoise.copy_label for s in dataset.samples)
    assert 0 < copies < len(dataset.samples)
    out = tmp_path / "ev"
    assert main(["eval", "--data", str(demo_small), "--out", str(out), "--no-progress", "--no-fid", "--no-text", "--models",
                 "copy_or_noise", "--seeds", "0,1"]) == 0
    per_image = pd.read_csv(out / "per_image.csv")
    copied = per_image["label"] == CopyOrNoise.copy_label
    assert (per_image.loc[copied, "psnr_full"] == PSNR_CAP_DB).all()  # exact, through the CSV
    assert (per_image.loc[~copied, "psnr_full"] < PSNR_CAP_DB).all()
    summary = json.loads((out / "summary.json").read_text())[0]
    assert summary["n_psnr_capped"] == 2 * copies  # both seeds' copies
    # both seeds count (neither drops out as inf did): the mean over seeds of each seed's mean over images
    per_seed = [per_image[per_image["seed"] == s]["psnr_full"].mean() for s in (0, 1)]
    assert summary["psnr_full"] == pytest.approx(np.mean(per_seed), rel=1e-12)
    assert summary["psnr_full_seed_sd"] == pytest.approx(np.std(per_seed, ddof=1), rel=1e-9)
    csv_row = pd.read_csv(out / "summary.csv").iloc[0]
    assert csv_row["n_psnr_capped"] == 2 * copies and csv_row["psnr_full"] == pytest.approx(summary["psnr_full"])
    # the report shows the same value (its interval from the same capped per-image values) and the same count
    from diffinpaint.evaluation.report import model_stats, read_eval_folder

    page = (out / "report.html").read_text()
    assert f"{summary['psnr_full']:.2f} " in page and f">{2 * copies} capped</span>" in page
    assert model_stats(read_eval_folder(out), "copy_or_noise").values["psnr_full"] == pytest.approx(summary["psnr_full"])
