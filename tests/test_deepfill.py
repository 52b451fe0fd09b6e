"""DeepFill v2: networks (counts, gated convs, contextual and self-attention), losses, training, holes, inference.

Everything runs on tiny configurations (cnum 8, 16-64 px) built in-process; no downloads.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, fields

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator

from diffinpaint.models.deepfill import Predictor, build_network
from diffinpaint.models.deepfill import holes
from diffinpaint.models.deepfill.nets import (DeepFillGenerator, GatedConv2d, MaskedSelfAttention, SNPatchGAN,
                                              contextual_attention, count_parameters, generator_input)
from diffinpaint.models.deepfill.step import DeepFillOptions, DeepFillTraining
from diffinpaint.training.config import TrainConfig
from diffinpaint.models.trainable import Batch
from diffinpaint.training import trainer as tr
from diffinpaint.training.setup import make_model, prepare_model
from diffinpaint.util.errors import UserError


def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Smooth, distinct test images in [0, 1] (gradients and waves: something an inpainter can continue)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    out = []
    for _ in range(n):
        a, b, c = torch.rand(3, generator=g) * 6
        out.append(torch.stack([0.5 + 0.4 * torch.sin(a * xx + b * yy), xx * (1 - c / 12) + 0.1 * yy,
                                0.5 + 0.4 * torch.cos(c * yy - a * xx)]))
    return torch.stack(out).clamp(0, 1)


def _box_masks(n: int, size: int) -> torch.Tensor:
    masks = torch.zeros(n, 1, size, size)
    for i in range(n):
        top, left = size // 4 + i % 3, size // 4 + (2 * i) % 5
        masks[i, :, top: top + size // 3, left: left + size // 3] = 1
    return masks


def _model(**kw) -> DeepFillTraining:
    opts = DeepFillOptions(cnum=kw.pop("cnum", 8), attention=kw.pop("attention", "contextual"))
    cfg = TrainConfig(model="deepfill", size=kw.pop("size", 32), batch_size=2, lr=kw.pop("lr", 1e-4),
                      holes="deepfill", seed=0, **kw)
    model = make_model(DeepFillTraining, cfg, opts)
    model.check()
    return model


# ------------------------------------------------------------------------------------------------ networks


def test_default_parameter_counts_without_allocating():
    counts = count_parameters()  # built on the meta device
    assert counts == {"generator": 4_052_478, "stage1": 1_631_151, "stage2": 2_421_327, "discriminator": 5_946_816}
    # the self-attention block: q, k 96->12, v 96->48, o 48->96 (no biases) + γ
    assert count_parameters(attention="self")["generator"] == 4_052_478 + 2 * 96 * 12 + 2 * 96 * 48 + 1
    # what `train deepfill --dry-run` prints at the defaults
    model = make_model(DeepFillTraining, TrainConfig(model="deepfill", **DeepFillTraining.defaults))
    model.check()
    text = "\n".join(model.describe())
    assert "4,052,478" in text and "5,946,816" in text
    with torch.device("meta"):
        nets = model.build_networks()
    assert {k: sum(p.numel() for p in v.parameters()) for k, v in nets.items()} == {
        "generator": 4_052_478, "discriminator": 5_946_816}


def test_gated_conv_is_elu_times_sigmoid_and_output_layer_is_plain():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 9, 9)
    for activation, act in (("elu", F.elu), ("relu", F.relu)):
        layer = GatedConv2d(5, 6, 3, stride=2, dilation=1, activation=activation)
        assert layer.conv.out_channels == 12  # one conv to 2× the width, split into features and gates
        w, b = layer.conv.weight, layer.conv.bias
        features = F.conv2d(x, w[:6], b[:6], stride=2, padding=1)
        gates = F.conv2d(x, w[6:], b[6:], stride=2, padding=1)
        torch.testing.assert_close(layer(x), act(features) * torch.sigmoid(gates))
    dilated = GatedConv2d(5, 4, 3, dilation=4)
    assert dilated(x).shape == (2, 4, 9, 9)  # 'SAME' size at any dilation
    out_layer = GatedConv2d(5, 3, 3, activation=None)
    assert out_layer.conv.out_channels == 3
    torch.testing.assert_close(out_layer(x), F.conv2d(x, out_layer.conv.weight, out_layer.conv.bias, padding=1))
    assert torch.all(layer.conv.bias == 0)  # TF's zero bias init


def test_generator_shapes_ranges_and_stage2_input():
    torch.manual_seed(0)
    g = DeepFillGenerator(cnum=8)
    images, masks = _images(2, 32), _box_masks(2, 32)
    masked, mask = generator_input(images, masks)
    assert torch.all(masked[mask.expand_as(masked) > 0] == 0)  # the hole is 0 in [-1, 1]
    seen = {}
    g.coarse.register_forward_hook(lambda m, i, o: seen.update(coarse_in=i[0], x1=o))
    g.refine.register_forward_hook(lambda m, i, o: seen.update(refine_in=i[0]))
    x1, x2 = g(masked, mask)
    assert x1.shape == x2.shape == (2, 3, 32, 32)
    assert x1.abs().max() <= 1 and x2.abs().max() <= 1
    # 5-channel input: masked image, ones, mask
    torch.testing.assert_close(seen["coarse_in"], torch.cat([masked, torch.ones_like(mask), mask], 1))
    # stage 2 starts from x1 in the hole, the known pixels elsewhere
    x = images * 2 - 1
    torch.testing.assert_close(seen["refine_in"], x1 * mask + x * (1 - mask))


def test_spectral_norm_state_is_saved_and_restored_bit_exactly(tmp_path):
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    d = SNPatchGAN().train()
    x = torch.randn(2, 4, 32, 32)
    d(x)  # one power iteration moves u and v away from their initial values
    state = d.state_dict()
    assert sum(k.endswith("._u") for k in state) == 6 and sum(k.endswith("._v") for k in state) == 6
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "d.safetensors"))
    torch.manual_seed(1)  # a different initial u, v, weights: everything must come from the file
    resumed = build_network({}, "discriminator").train()
    resumed.load_state_dict(load_file(str(tmp_path / "d.safetensors")))
    assert torch.equal(d(x), resumed(x))  # the next training-mode pass (another power iteration) is identical
    assert torch.equal(d.state_dict()["layers.0.parametrizations.weight.0._u"],
                       resumed.state_dict()["layers.0.parametrizations.weight.0._u"])
    with torch.device("meta"):
        assert SNPatchGAN().eval()(torch.empty(1, 4, 256, 256)).shape == (1, 4096)  # 16×16×256 logits at 256 px


# ------------------------------------------------------------------------------------------ contextual attention


def _reference_contextual_attention(f, b, mask, scale=10.0):
    """A literal per-image transcription of inpaint_ops.py's contextual_attention (rate 2, ksize 3, fuse): conv
    against normalised patches, the 3×3 identity fuse convolution on the score matrix viewed as an image, the
    transposed convolution with the raw 4×4 patches. Only the hole cells are taken as in nets.py (max-pooled)."""
    n, c, h, w = b.shape
    h2, w2 = h // 2, w // 2
    eye = torch.eye(3).view(1, 1, 3, 3)
    out = []
    for i in range(n):
        fi, bi = f[i: i + 1, :, ::2, ::2], b[i: i + 1, :, ::2, ::2]
        raw = F.unfold(b[i: i + 1], 4, stride=2, padding=1).view(c, 4, 4, -1).permute(3, 0, 1, 2)  # L×C×4×4
        wi = F.unfold(bi, 3, padding=1).view(c, 3, 3, -1).permute(3, 0, 1, 2)  # L×C×3×3
        wi = wi / wi.pow(2).sum(dim=(1, 2, 3), keepdim=True).sqrt().clamp_min(1e-4)
        yi = F.conv2d(fi, wi, padding=1)  # 1×Lb×h2×w2
        yi = yi.view(1, 1, h2 * w2, h2 * w2)  # rows: background, columns: foreground (eye is symmetric)
        yi = F.conv2d(yi, eye, padding=1).view(1, h2, w2, h2, w2).permute(0, 2, 1, 4, 3)
        yi = F.conv2d(yi.reshape(1, 1, h2 * w2, h2 * w2), eye, padding=1)
        yi = yi.view(1, w2, h2, w2, h2).permute(0, 2, 1, 4, 3).reshape(1, h2 * w2, h2, w2)
        cells = F.max_pool2d(mask[i: i + 1], mask.shape[-1] // w2)
        mm = (F.avg_pool2d(cells, 3, stride=1, padding=1, count_include_pad=True) == 0).float().view(1, -1, 1, 1)
        yi = F.softmax(yi * mm * scale, dim=1) * mm
        out.append(F.conv_transpose2d(yi, raw, stride=2, padding=1) / 4.0)
    return torch.cat(out)


def test_contextual_attention_matches_the_reference_transcription():
    torch.manual_seed(0)
    f, b = torch.randn(3, 6, 16, 12), torch.randn(3, 6, 16, 12)
    masks = torch.zeros(3, 1, 64, 48)
    masks[0, :, 20:40, 8:30] = 1
    masks[1, :, 3:9, 30:47] = 1  # not aligned to the 8-px cells
    torch.testing.assert_close(contextual_attention(f, b, masks), _reference_contextual_attention(f, b, masks),
                               atol=1e-5, rtol=1e-5)
    # the generator's use: f = b
    torch.testing.assert_close(contextual_attention(b, b, masks), _reference_contextual_attention(b, b, masks),
                               atol=1e-5, rtol=1e-5)


def _hole_setup():
    """Background features 24×24 (an image of 96 px), a hole box, and a query map whose hole is a copy of a known
    region 12 feature pixels to the left (6 cells at the matching resolution)."""
    torch.manual_seed(0)
    b = torch.randn(1, 16, 24, 24)
    mask = torch.zeros(1, 1, 96, 96)
    mask[:, :, 32:64, 64:88] = 1  # feature rows 8..15, cols 16..21: cells 4..7 × 8..10
    f = b.clone()
    f[:, :, 8:16, 16:22] = b[:, :, 8:16, 4:10]
    return f, b, mask


def test_contextual_attention_copies_the_matching_known_patch_into_the_hole():
    f, b, mask = _hole_setup()
    b_hole_noise = b.clone()
    b_hole_noise[:, :, 8:16, 16:22] = torch.randn(1, 16, 8, 6) * 5  # whatever the background holds in the hole
    out, attention = contextual_attention(f, b_hole_noise, mask, return_attention=True)
    # hole queries at cells (r, c) pick background cell (r, c − 6): one-hot weights (fused cosine ≫ the rest)
    cells = [(r, c) for r in range(5, 7) for c in range(9, 10)]  # cells inside the hole, away from its border
    for r, c in cells:
        row = attention[0, r * 12 + c]
        assert row.argmax().item() == r * 12 + c - 6 and row.max() > 0.999
    # so the hole's output there is the known features 12 px to the left, rebuilt from raw 4×4 patches
    torch.testing.assert_close(out[:, :, 10:14, 18:20], b[:, :, 10:14, 6:8], atol=1e-3, rtol=1e-3)


def test_contextual_attention_never_reads_from_the_hole():
    f, b, mask = _hole_setup()
    hole_features = F.max_pool2d(mask, 4).expand_as(b) > 0  # feature pixels whose 4×4 image cell holds a hole
    b2 = torch.where(hole_features, torch.randn_like(b) * 10, b)
    for fuse in (False, True):
        out, attention = contextual_attention(f, b, mask, fuse=fuse, return_attention=True)
        out2, attention2 = contextual_attention(f, b2, mask, fuse=fuse, return_attention=True)
        # no weight on any patch touching the hole; weights are ≥ 0 and sum to at most 1 (sub-convex)
        cells = F.max_pool2d(F.max_pool2d(mask, 8), 3, stride=1, padding=1).flatten(1)[0] > 0
        assert cells.any() and torch.all(attention[0][:, cells] == 0) and torch.all(attention2[0][:, cells] == 0)
        assert torch.all(attention >= 0) and torch.all(attention.sum(-1) <= 1 + 1e-5)
        # the copied values: the same weights applied to the background with its hole wiped give the same output
        wiped = contextual_attention(f, b.masked_fill(hole_features, 0), mask, fuse=fuse)
        if not fuse:
            # without the fuse step the scores of usable patches never look at the hole: exactly the same output
            assert torch.equal(out, out2)
            torch.testing.assert_close(out, wiped)
        else:
            # with it (as the reference) a usable patch's fused score adds its neighbours' scores, which may
            # overlap the hole: the weights may move, but what is pasted is still known content only
            pasted = F.fold(F.unfold(b.masked_fill(hole_features, 0), 4, stride=2, padding=1)
                            @ attention2.transpose(1, 2), (24, 24), 4, stride=2, padding=1) / 4
            torch.testing.assert_close(out2, pasted)


def test_contextual_attention_is_batch_independent():
    torch.manual_seed(0)
    x = torch.randn(3, 8, 16, 16)
    masks = _box_masks(3, 64)
    together = contextual_attention(x, x, masks)
    for i in range(3):
        alone = contextual_attention(x[i: i + 1], x[i: i + 1], masks[i: i + 1])
        torch.testing.assert_close(alone, together[i: i + 1], atol=1e-5, rtol=0)


def test_self_attention_masks_hole_keys_and_starts_as_identity():
    torch.manual_seed(0)
    block = MaskedSelfAttention(32)
    x = torch.randn(2, 32, 16, 16)
    mask = torch.zeros(2, 1, 64, 64)
    mask[0, :, 10:30, 20:50] = 1  # not aligned to the 8-px key cells
    mask[1] = 1  # everything is hole: no usable key
    assert torch.equal(block(x, mask), x)  # γ = 0 at init
    with torch.no_grad():
        block.gamma.fill_(1.0)
    out, attention = block(x, mask, return_attention=True)
    hole_keys = F.max_pool2d(mask, 8).flatten(1) > 0
    assert torch.all(attention[0][:, hole_keys[0]] == 0)
    torch.testing.assert_close(attention[0].sum(-1), torch.ones(256))  # a proper softmax over the known keys
    torch.testing.assert_close(out[1], x[1])  # no known key: the block adds nothing
    # change the features in the hole: nothing changes at the known positions
    hole_features = F.max_pool2d(mask, 4).expand_as(x) > 0
    x2 = torch.where(hole_features, torch.randn_like(x) * 10, x)
    out2 = block(x2, mask)
    known = ~hole_features[0]
    assert torch.equal(out[0][known], out2[0][known])
    g = DeepFillGenerator(cnum=8, attention="self")
    assert isinstance(g.refine.attention, MaskedSelfAttention) and g.refine.attention.query.in_channels == 16


# ------------------------------------------------------------------------------------------------ training


def test_losses_by_hand_on_a_two_image_batch():
    model = _model()
    prepare_model(model, Accelerator(cpu=True))
    config = model.network_config()
    g0, d0 = build_network(config, "generator"), build_network(config, "discriminator").train()
    g0.load_state_dict(model.nets["generator"].state_dict())
    d0.load_state_dict(model.nets["discriminator"].state_dict())
    images, masks = _images(2, 32), _box_masks(2, 32)
    logs = model.train_step(Batch(images, masks))

    with torch.no_grad():
        x = images * 2 - 1
        x1, x2 = g0(x * (1 - masks), masks)
        completed = x2 * masks + x * (1 - masks)
        logits = d0(torch.cat([torch.cat([x, masks], 1), torch.cat([completed, masks], 1)]))  # same power step
        real, fake = logits[:2], logits[2:]
        d_loss = 0.5 * torch.clamp(1 - real, min=0).mean() + 0.5 * torch.clamp(1 + fake, min=0).mean()
        # G's step saw D after its update; in eval mode D uses the u, v that pass computed, without a new step
        d1 = model.nets["discriminator"].eval()
        g_gan = -d1(torch.cat([completed, masks], 1)).mean()
        l1_coarse, l1_fine = (x - x1).abs().mean(), (x - x2).abs().mean()
    assert logs["D"] == pytest.approx(d_loss.item(), abs=1e-5)
    assert logs["G_gan"] == pytest.approx(g_gan.item(), abs=1e-5)
    assert logs["L1_coarse"] == pytest.approx(l1_coarse.item(), abs=1e-6)
    assert logs["L1_fine"] == pytest.approx(l1_fine.item(), abs=1e-6)
    assert logs["G"] == pytest.approx((g_gan + l1_coarse + l1_fine).item(), abs=1e-5)
    assert fake.shape == (2, 256)  # flattened 1×1×256 logits at 32 px (4096 at 256)


def _hole_l1(predictor, images, masks) -> float:
    out = predictor.predict(images, masks, [0] * len(images))
    return ((out - images).abs() * masks).sum().item() / (masks.sum().item() * 3)


def test_it_learns_a_fixed_batch():
    model = _model(lr=2e-3)  # 20× the paper's rate: a few dozen steps must show it
    prepare_model(model, Accelerator(cpu=True))
    images = _images(2, 32, seed=3)
    rng = np.random.default_rng(0)
    masks = torch.from_numpy(np.stack([model.make_holes(32, rng) for _ in range(2)])[:, None].astype(np.float32))
    predictor = Predictor({"cnum": 8}, {"generator": model.nets["generator"]}, None, torch.device("cpu"))
    before = _hole_l1(predictor, images, masks)
    logs = [model.train_step(Batch(images, masks)) for _ in range(40)]
    after = _hole_l1(predictor, images, masks)
    assert all(np.isfinite(v) for log in logs for v in log.values())
    assert after < 0.5 * before, (before, after)  # measured 0.231 -> 0.094
    assert logs[-1]["L1_fine"] < 0.5 * logs[0]["L1_fine"]
    sample = model.sample(Batch(images, masks))
    assert sample.shape == (2, 3, 32, 32) and 0 <= sample.min() and sample.max() <= 1
    assert torch.equal(sample * (1 - masks), images * (1 - masks))  # known pixels pasted back


def test_self_attention_variant_trains():
    model = _model(attention="self", lr=1e-3)
    prepare_model(model, Accelerator(cpu=True))
    images, masks = _images(2, 32), _box_masks(2, 32)
    logs = [model.train_step(Batch(images, masks)) for _ in range(3)]
    assert all(np.isfinite(v) for log in logs for v in log.values())
    assert model.nets["generator"].refine.attention.gamma.item() != 0  # the block is switched on by training


def test_bad_options_raise_one_line_user_errors():
    for kw, words in (({"size": 100}, ["multiple of 8", "--size 104"]), ({"size": 4}, ["--size 8"]),
                      ({"cnum": 6}, ["multiple of 4", "--cnum 48"]), ({"attention": "cross"}, ["contextual"])):
        opts = DeepFillOptions(**{k: v for k, v in kw.items() if k != "size"})
        model = make_model(DeepFillTraining, TrainConfig(model="deepfill", size=kw.get("size", 32)), opts)
        with pytest.raises(UserError) as err:
            tr.check_config(model.cfg, model)
        message = str(err.value)
        assert "\n" not in message and all(w in message for w in words), message


def test_options_flags_and_defaults():
    parser = argparse.ArgumentParser()
    tr.add_arguments(parser, DeepFillTraining)
    base = ["--data", "d", "--out", "o"]
    cfg, opts = tr.configs_from_options(DeepFillTraining, vars(parser.parse_args(base)))
    assert opts == DeepFillOptions()  # every option has its flag; nothing typed = the declared defaults
    typed = vars(parser.parse_args([*base, "--attention", "self", "--cnum", "16"]))
    assert tr.configs_from_options(DeepFillTraining, typed)[1] == DeepFillOptions(cnum=16, attention="self")
    d = DeepFillTraining.defaults
    assert (d["size"], d["lr"], d["holes"], d["decay_start"]) == (256, 1e-4, "deepfill", 1.0)
    assert (cfg.batch_size, cfg.lr, cfg.steps) == (16, 1e-4, 100_000)  # the reference's inpaint.yml
    quick = tr.configs_from_options(DeepFillTraining, {"preset": "quick"})
    assert (quick[0].batch_size, quick[0].size, quick[1].cnum) == (4, 64, 24)
    assert DeepFillTraining.hole_choices == ("deepfill", "dataset", "box", "thin", "medium", "thick")
    assert d["holes"] in DeepFillTraining.hole_choices


# ------------------------------------------------------------------------------------------------ holes


def test_training_holes_cover_about_thirty_percent():
    rng = np.random.default_rng(0)
    masks = [holes.make_holes(256, rng) for _ in range(300)]
    assert all(m.dtype == bool and m.shape == (256, 256) for m in masks)
    fractions = np.array([m.mean() for m in masks])
    assert 0.28 < fractions.mean() < 0.34 and 0.27 < np.median(fractions) < 0.33  # reference: 0.308 / 0.302
    boxes = np.array([holes.box_mask(256, rng).mean() for _ in range(100)])
    assert boxes.min() >= (96 / 256) ** 2 and boxes.max() <= 0.25  # 128 px minus 0..16 per side
    # the same generator state gives the same mask; sizes scale
    same = [holes.make_holes(64, np.random.default_rng(5)) for _ in range(2)]
    assert np.array_equal(*same)
    small = np.array([holes.make_holes(64, rng).mean() for _ in range(100)])
    assert 0.25 < small.mean() < 0.36


# ------------------------------------------------------------------------------------------------ inference


def test_predictor_shape_range_determinism_and_batch_independence():
    torch.manual_seed(0)
    config = {"size": 32, "cnum": 8, "attention": "contextual"}
    for attention in ("contextual", "self"):
        config["attention"] = attention
        g = build_network(config, "generator").eval()
        if attention == "self":
            with torch.no_grad():
                g.refine.attention.gamma.fill_(0.5)  # make the block matter
        predictor = Predictor(config, {"generator": g}, None, torch.device("cpu"))
        images, masks = _images(3, 32, seed=1), _box_masks(3, 32)
        with torch.inference_mode():
            out = predictor.predict(images, masks, [1, 2, 3])
            again = predictor.predict(images, masks, [7, 8, 9])
            alone = [predictor.predict(images[i: i + 1], masks[i: i + 1], [i]) for i in range(3)]
        assert out.shape == (3, 3, 32, 32) and out.min() >= 0 and out.max() <= 1
        assert torch.equal(out, again)  # deterministic; seeds unused
        for i in range(3):
            torch.testing.assert_close(alone[i], out[i: i + 1], atol=1e-5, rtol=0)
    assert Predictor.networks == ("generator",) and not Predictor.needs_grad
