"""LPIPS for holes: box crops for rectangular holes, the spatial LPIPS map over hole pixels for free-form masks,
small inputs enlarged uniformly; checked against torchmetrics and the LPIPS formula written out by hand, on
random AlexNet weights (no pretrained weights in tests)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image

from diffinpaint.cli import main
from diffinpaint.data import load_dataset
from diffinpaint.data.masks import irregular_mask
from diffinpaint.evaluation.lpips import LPIPS



def rand_pair(n, h, w, seed):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(n, 3, h, w, generator=g)
    return (target + 0.3 * torch.rand(n, 3, h, w, generator=g)).clamp(0, 1), target


def torchmetrics_net(mine: LPIPS, spatial: bool):
    """torchmetrics' own `_LPIPS` (spatial=True: the LPIPS paper's per-pixel map) with the same weights."""
    from torchmetrics.functional.image.lpips import _LPIPS

    net = _LPIPS(pretrained=True, net="alex", spatial=spatial, pnet_rand=True)
    net.load_state_dict(mine.net.state_dict())
    return net.eval()


def hand_spatial_map(weights_path, preds, target, out_hw):
    """The LPIPS formula written out: torchvision AlexNet's five ReLU outputs of both images (inputs in [-1, 1],
    LPIPS' shift/scale), unit-normalised over channels, squared difference weighted by the linear layer's
    non-negative weights, summed over channels, upsampled bilinearly to out_hw and summed over layers."""
    from torchmetrics.functional.image.lpips import _LPIPS

    alexnet = torchvision.models.alexnet(weights=None)
    alexnet.load_state_dict(torch.load(weights_path, weights_only=True))
    lins = _LPIPS(pretrained=True, net="alex", pnet_rand=True).lins  # torchmetrics ships LPIPS' linear weights
    shift = torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None]
    scale = torch.tensor([0.458, 0.448, 0.450])[None, :, None, None]

    def relus(x):
        x, out = ((2 * x - 1) - shift) / scale, []
        for i, layer in enumerate(alexnet.features[:12]):
            x = layer(x)
            if i in (1, 4, 7, 9, 11):
                out.append(x)
        return out

    total = 0
    with torch.no_grad():
        for fp, ft, lin in zip(relus(preds), relus(target), lins):
            unit = lambda f: f / torch.sqrt(1e-8 + (f**2).sum(dim=1, keepdim=True))  # noqa: E731
            weight = lin.model[-1].weight.view(1, -1, 1, 1)
            layer = (weight * (unit(fp) - unit(ft)) ** 2).sum(dim=1, keepdim=True)
            total = total + F.interpolate(layer, size=out_hw, mode="bilinear", align_corners=False)
    return total[:, 0].double()


def test_free_form_lpips_is_the_spatial_map_averaged_over_hole_pixels(alexnet_file):
    mine = LPIPS(alexnet_file, batch_size=2)
    preds, target = rand_pair(3, 70, 45, seed=1)
    mask = torch.zeros(3, 1, 70, 45, dtype=torch.bool)
    mask[0, 0, 10:40, 5:20] = True
    mask[0, 0, 60:, 40:] = True  # two pieces: the bounding box would span most of the image
    mask[1] = torch.rand(1, 70, 45, generator=torch.Generator().manual_seed(2)) > 0.8  # scattered pixels
    mask[2, 0, 0, 0] = True  # one corner pixel
    full, hole = mine.spatial(preds, target, mask)
    with torch.no_grad():
        reference_map = torchmetrics_net(mine, spatial=True)(preds, target, normalize=True)[:, 0].double()
        reference_full = torchmetrics_net(mine, spatial=False)(preds, target, normalize=True).reshape(-1).double()
    by_hand = hand_spatial_map(alexnet_file, preds, target, (70, 45))
    assert (by_hand - reference_map).abs().max() <= 1e-6
    for i in range(3):
        expected = reference_map[i][mask[i, 0]].mean().item()
        assert hole[i].item() == pytest.approx(expected, abs=1e-7)
        assert hole[i].item() == pytest.approx(by_hand[i][mask[i, 0]].mean().item(), abs=1e-6)
    # lpips_full comes from the same pass and is torchmetrics' number, bit for bit the plain call's
    assert torch.equal(full, mine(preds, target)) and (full - reference_full).abs().max() <= 1e-7
    # the hole average is not the whole-image number: the map differs across the image
    assert abs(hole[0].item() - full[0].item()) > 1e-4
    # any batch size gives the same values; no hole pixels -> NaN
    one_by_one = [LPIPS(alexnet_file, batch_size=1).spatial(preds[i:i + 1], target[i:i + 1], mask[i:i + 1])[1]
                  for i in range(3)]
    assert torch.allclose(torch.cat(one_by_one), hole, rtol=0, atol=1e-9)
    assert torch.isnan(mine.spatial(preds[:1], target[:1], torch.zeros(1, 1, 70, 45))[1]).all()


def test_small_inputs_are_enlarged_uniformly_keeping_the_aspect(alexnet_file):
    mine = LPIPS(alexnet_file)
    reference = torchmetrics_net(mine, spatial=False)
    preds, target = rand_pair(1, 12, 40, seed=3)  # 12 high, 40 wide -> 32×107 (was stretched to 32×40)
    up = lambda x, size: F.interpolate(x, size=size, mode="bilinear", align_corners=False)  # noqa: E731
    with torch.no_grad():
        expected = reference(up(preds, (32, 107)), up(target, (32, 107)), normalize=True).item()
        stretched = reference(up(preds, (32, 40)), up(target, (32, 40)), normalize=True).item()
    assert mine(preds, target).item() == pytest.approx(expected, abs=1e-7)
    assert abs(expected - stretched) > 1e-4  # the rule matters
    # a square is enlarged exactly as the earlier one-axis rule did (16×16 -> 32×32): box numbers unchanged
    preds, target = rand_pair(2, 16, 16, seed=4)
    with torch.no_grad():
        old = reference(up(preds, (32, 32)), up(target, (32, 32)), normalize=True).reshape(-1).double()
    assert torch.equal(mine(preds, target), old)
    # the spatial map of a small image: computed on the enlarged image, resampled to the image's own pixels
    preds, target = rand_pair(1, 20, 50, seed=5)
    mask = torch.zeros(1, 1, 20, 50, dtype=torch.bool)
    mask[0, 0, 5:15, 10:30] = True
    _, hole = mine.spatial(preds, target, mask)
    by_hand = hand_spatial_map(alexnet_file, up(preds, (32, 80)), up(target, (32, 80)), (20, 50))
    assert hole.item() == pytest.approx(by_hand[0][mask[0, 0]].mean().item(), abs=1e-6)


# ---------------------------------------------------------------------------------------------- in eval


def eval_cli(*args, out, data):
    return main(["eval", "--data", str(data), "--out", str(out), "--no-progress", "--no-fid", "--no-text", *map(str, args)])


@pytest.fixture(scope="module")
def free_form(tmp_path_factory, demo_small):
    """demo_small's images with LaMa 'thick' masks as masks/*.png (free-form)."""
    root = tmp_path_factory.mktemp("free_form") / "data"
    shutil.copytree(demo_small / "images", root / "images")
    for sample in load_dataset(demo_small).samples:
        rng = np.random.default_rng(len(sample.image_id))
        mask = irregular_mask(sample.height, sample.width, "thick", rng)
        path = root / "masks" / sample.output_relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask.astype(np.uint8) * 255).save(path)
    return root


def outputs(out, model, data):
    for sample in load_dataset(data).samples:
        gt = torch.from_numpy(sample.load_image().copy()).permute(2, 0, 1)[None]
        pred = torch.from_numpy(np.array(Image.open(out / "runs" / model / "images" / sample.output_relpath)))
        yield sample, pred.permute(2, 0, 1)[None], gt


def test_eval_scores_free_form_holes_on_hole_pixels(free_form, alexnet_file, tmp_path):
    out = tmp_path / "ev"
    assert eval_cli("--models", "telea", "--lpips-weights", alexnet_file, out=out, data=free_form) == 0
    per_image = pd.read_csv(out / "per_image.csv").set_index("image")
    mine = LPIPS(alexnet_file)
    for sample, pred, gt in outputs(out, "telea", free_form):
        mask = torch.from_numpy(sample.load_mask())[None, None]
        with torch.no_grad():
            smap = torchmetrics_net(mine, spatial=True)(pred.float() / 255, gt.float() / 255, normalize=True)
        row = per_image.loc[sample.image_id]
        assert row["lpips"] == pytest.approx(smap[0, 0].double()[mask[0, 0]].mean().item(), abs=1e-6)
        assert row["lpips_full"] == pytest.approx(mine(pred, gt).item(), abs=1e-7)  # batched in eval
        assert np.isnan(row["ssim_crop"])  # no crop of a free-form hole: its bounding box is not the hole
    summary = json.loads((out / "summary.json").read_text())[0]
    assert summary["ssim_crop"] is None and np.isfinite(summary["lpips"]) and np.isfinite(summary["ssim"])
    page = (out / "report.html").read_text()
    assert "ssim_crop missing: SSIM of the hole crop is defined for rectangular holes" in page


def test_eval_box_hole_numbers_are_the_crop_numbers_as_before(demo_small, alexnet_file, tmp_path):
    """Rectangular holes: lpips is LPIPS of each hole crop (16 px squares enlarged to 32, as before), lpips_full of
    the whole image, ssim_crop of the crop; nothing moved to the spatial map."""
    from diffinpaint.evaluation.metrics import box_ssim

    out = tmp_path / "ev"
    assert eval_cli("--models", "telea", "--lpips-weights", alexnet_file, "--no-report", out=out, data=demo_small) == 0
    per_image = pd.read_csv(out / "per_image.csv").set_index("image")
    mine = LPIPS(alexnet_file)
    reference = torchmetrics_net(mine, spatial=False)
    for sample, pred, gt in outputs(out, "telea", demo_small):
        row = per_image.loc[sample.image_id]
        crops = []
        for x, y, w, h in sample.boxes:
            crop = lambda a: F.interpolate(a[..., y:y + h, x:x + w].float() / 255, size=(32, 32),  # noqa: E731
                                           mode="bilinear", align_corners=False)
            with torch.no_grad():
                crops.append(reference(crop(pred), crop(gt), normalize=True).item())
        assert row["lpips"] == pytest.approx(np.mean(crops), abs=1e-7)
        assert row["ssim_crop"] == pytest.approx(np.mean(box_ssim(pred, gt, [sample.boxes])[0]), abs=1e-12)
        assert row["lpips_full"] == pytest.approx(mine(pred, gt).item(), abs=1e-7)
    summary = json.loads((out / "summary.json").read_text())[0]
    assert summary["n_psnr_capped"] == 0 and np.isfinite(summary["ssim_crop"])
