"""DMFN: networks (parameter counts of both DMFB variants), every loss term against a hand computation, local
crops and holes, VGG19 weight loading and its refusals, option checks, a tiny configuration that learns, and
inference (deterministic, batch-independent).

Everything runs on tiny configurations (nf 8, ndf 8, 2 blocks, 64 px) built in-process; no downloads. The VGG19
of the perceptual losses is a randomly initialised one written to a temporary .pth file.
"""
from __future__ import annotations

import argparse
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator

from diffinpaint.models.dmfn import Predictor, build_network
from diffinpaint.models.dmfn.infer import DMFNPredictor
from diffinpaint.models.dmfn.nets import (DMFBPaper, DMFBReleased, Discriminator, Generator, composite,
                                          count_parameters, generator_input, init_weights)
from diffinpaint.models.dmfn.step import (DIS_LAYER_WEIGHTS, VGG_LAYER_WEIGHTS, DMFNOptions, DMFNTraining,
                                          alignment_loss, crop_patches, dis_feature_loss, feature_centroids,
                                          feature_loss, hole_crop_corners, ragan_d_loss, ragan_g_loss,
                                          self_guided_map)
from diffinpaint.models.dmfn.vgg import VGG_URL, VGGFeatures, read_vgg_state, resolve_vgg_path
from diffinpaint.training.config import TrainConfig
from diffinpaint.models.trainable import Batch
from diffinpaint.training import trainer as tr
from diffinpaint.training.setup import make_model, prepare_model
from diffinpaint.util.errors import UserError

S = 64  # the smallest size DMFN trains at
TINY = dict(nf=8, ndf=8, n_blocks=2)


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    """A randomly initialised VGG19 `features` state dict, as torch.save(vgg19().features.state_dict()) writes it
    (make_layers(cfgs['E']) is exactly vgg19().features, without building the 120M-parameter classifier)."""
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vgg") / "vgg19_random.pth"
    torch.save(make_layers(cfgs["E"]).state_dict(), path)
    return path


def _images() -> torch.Tensor:
    """Two smooth 64 px images (gradients and a sine): a fill learnable in a few dozen steps."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, S), torch.linspace(0, 1, S), indexing="ij")
    return torch.stack([torch.stack([xx, yy, 0.5 + 0.4 * torch.sin(6 * xx)]),
                        torch.stack([1 - yy, 0.3 + 0.5 * xx * yy, 0.6 * torch.ones_like(xx)])])


def _masks(model: DMFNTraining, n: int = 2, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    holes = np.stack([model.make_holes(S, rng) for _ in range(n)])[:, None]
    return torch.from_numpy(holes.astype(np.float32))


def _model(**opts) -> DMFNTraining:
    lr = opts.pop("lr", 2e-4)
    cfg = TrainConfig(model="dmfn", size=S, batch_size=2, lr=lr, holes="dmfn", seed=0)
    model = make_model(DMFNTraining, cfg, DMFNOptions(**{**TINY, **opts}))
    model.check()
    prepare_model(model, Accelerator(cpu=True))
    return model


# ----------------------------------------------------------------------------------------------- networks

def test_parameter_counts_match_the_reference():
    # the authors' code at 256: InpaintingGenerator(4, 3, 64, 8) and Discriminator(3, 64) (research notes §2)
    counts = count_parameters({"size": 256})
    assert counts == {"generator": 9_037_443, "discriminator": 36_673_025, "dmfb": 885_312}
    paper = count_parameters({"size": 256, "dmfb": "paper"})
    assert paper["dmfb"] == 471_808  # 3×3 reduce, 4 dilated, 3 K_i, 1×1 fusion
    assert paper["generator"] == 9_037_443 - 8 * (885_312 - 471_808)
    assert paper["discriminator"] == 36_673_025
    # build_network from a config.json-like dict, on the meta device, gives the same numbers
    with torch.device("meta"):
        g = build_network({"size": 256, "nf": 64, "n_blocks": 8, "dmfb": "released"}, "generator")
        d = build_network({"size": 256, "ndf": 64}, "discriminator")
    assert sum(p.numel() for p in g.parameters()) == 9_037_443
    assert sum(p.numel() for p in d.parameters()) == 36_673_025
    assert d.global_linear.in_features == 8192 and d.local_linear.in_features == 8192  # 512·4·4
    # what --dry-run prints for the defaults
    model = make_model(DMFNTraining, TrainConfig(model="dmfn", size=256), DMFNOptions())
    text = "\n".join(model.describe())
    assert "9,037,443" in text and "36,673,025" in text and "885,312" in text
    with pytest.raises(ValueError, match="generator and discriminator"):
        build_network({}, "vgg")


def test_linear_sizes_follow_the_size():
    for size, side in ((64, 1), (128, 2), (512, 8)):
        with torch.device("meta"):
            d = Discriminator(size, 64)
        assert d.global_linear.in_features == d.local_linear.in_features == 512 * side * side


@pytest.mark.parametrize("dmfb", ["released", "paper"])
def test_shapes_and_ranges(dmfb):
    torch.manual_seed(0)
    g = init_weights(Generator(nf=8, n_blocks=2, dmfb=dmfb))
    d = init_weights(Discriminator(96, ndf=8))  # a size that is not a power of two
    x = torch.rand(2, 3, 96, 96)
    m = torch.zeros(2, 1, 96, 96)
    m[:, :, 20:60, 30:70] = 1
    out = g(generator_input(x, m))
    assert out.shape == (2, 3, 96, 96) and out.abs().max() <= 1.0
    logits, features = d(x * 2 - 1, x[:, :, :48, :48] * 2 - 1)
    assert logits.shape == (2, 1)
    assert [tuple(f.shape[1:]) for f in features] == [(8, 24, 24), (16, 12, 12), (32, 6, 6), (64, 3, 3),
                                                      (64, 2, 2)]


def test_generator_input_and_composite():
    x = torch.rand(1, 3, 8, 8)
    m = torch.zeros(1, 1, 8, 8)
    m[..., 2:5, 3:6] = 1
    inp = generator_input(x, m)
    assert inp.shape == (1, 4, 8, 8)
    assert torch.equal(inp[:, 3:], m)
    assert torch.all(inp[:, :3][m.expand(1, 3, 8, 8) > 0] == 0)  # holes are 0 in [−1, 1]
    assert torch.allclose(inp[:, :3][m.expand(1, 3, 8, 8) == 0], (x * 2 - 1)[m.expand(1, 3, 8, 8) == 0])
    g = torch.full_like(x, 0.25)
    c = composite(g, x, m)
    assert torch.equal(c[m.expand_as(c) > 0], g[m.expand_as(c) > 0])
    assert torch.equal(c[m.expand_as(c) == 0], x[m.expand_as(c) == 0])


def _conv(module, x):
    return F.conv2d(x, module.weight, module.bias, padding=module.padding, dilation=module.dilation)


def _in(x):
    return F.instance_norm(x)


def test_dmfb_forward_by_hand():
    """Both block variants against their formulas written out with functional ops."""
    torch.manual_seed(1)
    x = torch.randn(2, 16, 12, 12)
    released = init_weights(DMFBReleased(16))
    h = F.relu(_in(_conv(released.reduce, x)))
    d = [_conv(c, h) for c in released.dilated]
    sums = [d[0], d[0] + d[1], d[0] + d[1] + d[2], d[0] + d[1] + d[2] + d[3]]
    want = x + _in(_conv(released.fuse, F.relu(_in(torch.cat(sums, 1)))))
    assert released.fuse.kernel_size == (3, 3)
    torch.testing.assert_close(released(x), want)

    paper = init_weights(DMFBPaper(16))
    h = F.relu(_in(_conv(paper.reduce, x)))
    xs = [_conv(c, h) for c in paper.dilated]
    y1 = xs[0]
    y2 = F.relu(_in(_conv(paper.combine[0], xs[1] + y1)))
    y3 = F.relu(_in(_conv(paper.combine[1], xs[2] + y2)))
    y4 = F.relu(_in(_conv(paper.combine[2], xs[3] + y3)))
    want = x + _in(_conv(paper.fuse, F.relu(_in(torch.cat([y1, y2, y3, y4], 1)))))
    assert paper.fuse.kernel_size == (1, 1)
    torch.testing.assert_close(paper(x), want)


def test_init_follows_the_reference():
    torch.manual_seed(0)
    d = init_weights(Discriminator(64, ndf=64))
    w = d.global_branch[1][0].weight.detach()
    assert abs(float(w.std()) - 0.02) < 0.002 and abs(float(w.mean())) < 0.002
    bn = d.global_branch[0][1].requires_grad_(False)
    assert abs(float(bn.weight.mean()) - 1.0) < 0.01 and float(bn.bias.abs().max()) == 0.0
    assert float(d.global_branch[1][0].bias.detach().abs().max()) == 0.0


# ----------------------------------------------------------------------------------------------- losses

def _softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def test_ragan_losses_by_hand():
    real = torch.tensor([[0.7], [-0.2]])
    fake = torch.tensor([[-1.1], [0.4]])
    mr, mf = (0.7 - 0.2) / 2, (-1.1 + 0.4) / 2
    # BCE(z, 1) = softplus(−z), BCE(z, 0) = softplus(z), averaged over the 2 images
    d_want = 0.5 * ((_softplus(-(0.7 - mf)) + _softplus(-(-0.2 - mf))) / 2
                    + (_softplus(-1.1 - mr) + _softplus(0.4 - mr)) / 2)
    g_want = 0.5 * ((_softplus(0.7 - mf) + _softplus(-0.2 - mf)) / 2
                    + (_softplus(-(-1.1 - mr)) + _softplus(-(0.4 - mr))) / 2)
    assert float(ragan_d_loss(real, fake)) == pytest.approx(d_want, rel=1e-6)
    assert float(ragan_g_loss(real, fake)) == pytest.approx(g_want, rel=1e-6)


def test_self_guided_map_by_hand():
    torch.manual_seed(2)
    out, gt = torch.rand(2, 3, 4, 4) * 2 - 1, torch.rand(2, 3, 4, 4) * 2 - 1
    o, t = out.numpy().astype(np.float64), gt.numpy().astype(np.float64)
    want = np.zeros((2, 1, 4, 4))
    for n in range(2):
        err = ((o[n] - t[n]) ** 2).mean(axis=0)
        want[n, 0] = 1.0 + err / err.max()  # per-image max
    guidance = self_guided_map(out.requires_grad_(), gt)
    assert not guidance.requires_grad  # computed on the detached output
    np.testing.assert_allclose(guidance.numpy(), want, rtol=1e-5)
    assert float(guidance.amax()) == pytest.approx(2.0) and float(guidance.amin()) >= 1.0
    # an exact image: weight 1 everywhere (no division by zero)
    assert torch.equal(self_guided_map(gt, gt), torch.ones(2, 1, 4, 4))


def test_feature_loss_by_hand():
    """Guided L1 on relu1_1 (map at full size) and relu2_1 (2×2-average-pooled map), plain L1 on 3..5, each
    × 1e3/C² with VGG19's channels."""
    torch.manual_seed(3)
    shapes = [(64, 8, 8), (128, 4, 4), (256, 2, 2), (512, 1, 1), (512, 1, 1)]
    outs = [torch.rand(2, *s) for s in shapes]
    gts = [torch.rand(2, *s) for s in shapes]
    guidance = 1 + torch.rand(2, 1, 8, 8)
    g = guidance.numpy().astype(np.float64)
    pooled = g.reshape(2, 1, 4, 2, 4, 2).mean(axis=(3, 5))
    want = 0.0
    for layer, (o, t, (c, _, _)) in enumerate(zip(outs, gts, shapes)):
        diff = np.abs(o.numpy().astype(np.float64) - t.numpy().astype(np.float64))
        weight = g if layer == 0 else pooled if layer == 1 else 1.0
        want += 1e3 / c ** 2 * (diff * weight).mean()
    assert VGG_LAYER_WEIGHTS == tuple(1e3 / c ** 2 for c in (64, 128, 256, 512, 512))
    assert float(feature_loss(outs, gts, guidance)) == pytest.approx(want, rel=1e-5)


def test_alignment_centroids_on_toy_maps():
    fea = torch.zeros(2, 3, 5, 5)
    fea[0, 0, 1, 3] = 2.0  # one hot pixel: row 1 (y = −0.5), column 3 (x = 0.5) on linspace(−1, 1, 5)
    fea[0, 1, 4, 0] = 1.0  # bottom-left corner: x = −1, y = 1
    fea[0, 2, 0, 0] = fea[0, 2, 0, 4] = 1.0  # two pixels on the top row: x = 0, y = −1
    fea[1] = 1.0  # uniform maps: the centre
    centres = feature_centroids(fea)
    assert centres.shape == (2, 3, 2)
    want = torch.tensor([[[0.5, -0.5], [-1.0, 1.0], [0.0, -1.0]], [[0.0, 0.0]] * 3])
    torch.testing.assert_close(centres, want, atol=1e-5, rtol=0)
    # the loss is the MSE over images, channels and both coordinates
    other = torch.zeros(2, 3, 5, 5)
    other[:, :, 2, 2] = 1.0  # every centroid at (0, 0)
    want_loss = float((want ** 2).mean())
    assert float(alignment_loss(fea, other)) == pytest.approx(want_loss, abs=1e-5)
    # x follows the width and y the height (the reference's grid makes both follow the width)
    tall = torch.zeros(1, 1, 3, 7)
    tall[0, 0, 2, 1] = 1.0
    torch.testing.assert_close(feature_centroids(tall)[0, 0], torch.tensor([-2 / 3, 1.0]), atol=1e-5, rtol=0)


def test_dis_feature_loss_by_hand():
    torch.manual_seed(4)
    shapes = [(8, 16, 16), (16, 8, 8), (32, 4, 4), (64, 2, 2), (64, 1, 1)]  # a narrow D (ndf 8)
    fakes = [torch.randn(2, *s, requires_grad=True) for s in shapes]
    reals = [torch.randn(2, *s, requires_grad=True) for s in shapes]
    want = sum(1e3 / c ** 2 * np.abs(f.detach().numpy().astype(np.float64) - r.detach().numpy()).mean()
               for c, f, r in zip((64, 128, 256, 512, 512), fakes, reals))
    assert DIS_LAYER_WEIGHTS == tuple(1e3 / c ** 2 for c in (64, 128, 256, 512, 512))
    loss = dis_feature_loss(fakes, reals)
    assert float(loss.detach()) == pytest.approx(want, rel=1e-5)
    loss.backward()
    assert all(r.grad is None for r in reals)  # the real features are targets


# ----------------------------------------------------------------------------------------------- holes and crops

def test_make_holes_is_the_reference_box():
    model = make_model(DMFNTraining, TrainConfig(model="dmfn", size=256), DMFNOptions())
    rng = np.random.default_rng(0)
    fractions = []
    for _ in range(200):
        hole = model.make_holes(256, rng)
        assert hole.dtype == bool and hole.shape == (256, 256)
        rows, cols = np.nonzero(hole.any(1))[0], np.nonzero(hole.any(0))[0]
        h, w = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
        assert 96 <= h <= 128 and 96 <= w <= 128
        assert hole.sum() == h * w  # one solid box
        fractions.append(hole.mean())
        # the local crop (128×128 around the hole's box) holds the whole hole
        (top, left), = hole_crop_corners(torch.from_numpy(hole)[None, None].float(), 128).tolist()
        assert hole[top:top + 128, left:left + 128].sum() == hole.sum()
    assert 0.17 < np.mean(fractions) < 0.21  # (128 − 16)² / 256² ≈ 0.19
    assert DMFNTraining.defaults["holes"] == "dmfn" and DMFNTraining.hole_choices[0] == "dmfn"
    assert set(DMFNTraining.hole_choices) == {"dmfn", "dataset", "box", "thin", "medium", "thick"}


def test_hole_crop_corners():
    masks = torch.zeros(4, 1, 64, 64)
    masks[0, :, 20:30, 10:20] = 1  # centre (25, 15): window 32 px from (9, 0) after clamping left
    masks[1, :, 60:64, 60:64] = 1  # bottom-right corner: clamped to (32, 32)
    masks[2, :, 5:7, 40:42] = 1  # two blobs: bounding box rows 5..50, columns 8..41, centre (28, 25)
    masks[2, :, 49:51, 8:10] = 1
    corners = hole_crop_corners(masks, 32)  # masks[3]: no hole -> the centre
    assert corners.tolist() == [[9, 0], [32, 32], [12, 9], [16, 16]]
    images = torch.arange(4 * 3 * 64 * 64, dtype=torch.float32).view(4, 3, 64, 64)
    patches = crop_patches(images, corners, 32)
    assert patches.shape == (4, 3, 32, 32)
    for patch, image, (top, left) in zip(patches, images, corners.tolist()):
        assert torch.equal(patch, image[:, top:top + 32, left:left + 32])
    # gradients reach exactly the cropped pixels
    images.requires_grad_(True)
    crop_patches(images, corners, 32).sum().backward()
    assert images.grad.sum() == 4 * 3 * 32 * 32 and torch.equal(images.grad[1, :, 32:, 32:], torch.ones(3, 32, 32))


def test_hole_crops_never_read_the_device():
    """The crop windows are found and cut without reading a value back to the host (a CUDA step would wait on
    it): on the meta device any such read (`bool(t)`, `.item()`, `.tolist()`, `.cpu()`) raises."""
    masks = torch.zeros(4, 1, 64, 64, device="meta")
    images = torch.zeros(4, 3, 64, 64, device="meta")
    corners = hole_crop_corners(masks, 32)
    assert corners.shape == (4, 2) and corners.device.type == "meta"
    assert crop_patches(images, corners, 32).shape == (4, 3, 32, 32)
    with pytest.raises((RuntimeError, NotImplementedError)):  # the check can fail: a host read on meta raises
        bool(masks.any())


# ----------------------------------------------------------------------------------------------- VGG19

def test_vgg_loads_both_state_dict_layouts(vgg_file, tmp_path):
    features_only = torch.load(vgg_file, weights_only=True)
    vgg = VGGFeatures.from_file(vgg_file)
    assert all(not p.requires_grad for p in vgg.parameters())
    torch.testing.assert_close(vgg.stages[0][0].weight, features_only["0.weight"])
    # the full torchvision model's layout: 'features.N...' plus the classifier (ignored)
    full = {f"features.{k}": v for k, v in features_only.items()}
    full["classifier.6.bias"] = torch.zeros(1000)
    path = tmp_path / "vgg19-full.pth"
    torch.save(full, path)
    vgg_full = VGGFeatures.from_file(path)
    torch.testing.assert_close(vgg_full.stages[4][-2].weight, features_only["28.weight"])
    # inputs in [−1, 1] are mapped to [0, 1] and normalised with ImageNet's mean and std
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    conv = vgg.stages[0][0]
    want = F.relu(F.conv2d(((x + 1) / 2 - mean) / std, conv.weight, conv.bias, padding=1))
    feats = vgg(x)
    torch.testing.assert_close(feats[0], want)
    assert [f.shape[1:] for f in feats] == [(64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 2, 2), (512, 1, 1)]


def test_vgg_weight_refusals(tmp_path, monkeypatch):
    from torchvision.models.vgg import cfgs, make_layers

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def refused(given) -> str:
        with pytest.raises(UserError) as info:
            read_vgg_state(resolve_vgg_path(given))
        message = str(info.value)
        assert "\n" not in message
        return message

    message = refused(None)  # nothing in the hub cache
    assert VGG_URL in message and str(tmp_path / "hub" / "checkpoints") in message
    assert "--vgg-weights" in message and "--no-perceptual" in message
    assert "does not exist" in refused(str(tmp_path / "nowhere.pth"))
    # a VGG16: same layer names, other layout
    with torch.device("meta"):
        vgg16 = make_layers(cfgs["D"])
    vgg16 = vgg16.to_empty(device="cpu")
    torch.save({f"features.{k}": v for k, v in vgg16.state_dict().items()}, tmp_path / "vgg16.pth")
    message = refused(str(tmp_path / "vgg16.pth"))
    assert "vgg16.pth" in message and "not torchvision's VGG19" in message
    # a ResNet-like state dict
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.bias": torch.zeros(1000)}, tmp_path / "resnet.pth")
    assert "resnet.pth" in refused(str(tmp_path / "resnet.pth"))
    # not a torch file; and a pickle that needs code to load, which is never unpickled
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    assert "junk.pth" in refused(str(tmp_path / "junk.pth"))
    torch.save(argparse.Namespace(a=1), tmp_path / "code.pth")
    assert "code.pth" in refused(str(tmp_path / "code.pth"))


def test_perceptual_needs_weights_or_no_perceptual(tmp_path, monkeypatch, vgg_file):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    cfg = TrainConfig(model="dmfn", size=S, batch_size=2)
    with pytest.raises(UserError, match="--no-perceptual"):
        make_model(DMFNTraining, cfg, DMFNOptions(**TINY)).check()
    make_model(DMFNTraining, cfg, DMFNOptions(**TINY, perceptual=False)).check()  # no weights needed
    # the hub cache is where it looks by default
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth").write_bytes(vgg_file.read_bytes())
    model = make_model(DMFNTraining, cfg, DMFNOptions(**TINY))
    model.check()
    assert isinstance(model.vgg, VGGFeatures)


# ----------------------------------------------------------------------------------------------- options

def test_bad_options_raise_user_error():
    def message(size=S, batch_size=2, **opts) -> str:
        model = make_model(DMFNTraining, TrainConfig(model="dmfn", size=size, batch_size=batch_size),
                           DMFNOptions(**{**TINY, "perceptual": False, **opts}))
        with pytest.raises(UserError) as info:
            tr.check_config(model.cfg, model)
        assert "\n" not in str(info.value)
        return str(info.value)

    assert "--size 32 is too small for dmfn; the minimum is 64" in message(size=32)
    assert "multiple of 4" in message(size=66)
    assert "--batch-size 2" in message(batch_size=1)  # D's 1×1 BatchNorm at 64 px
    assert "choose from released, paper" in message(dmfb="both")
    assert "--dmfb" in message(dmfb="both")
    assert "at least 1" in message(n_blocks=0)
    # batch 1 is fine where D's last maps are 2×2 or more
    model = make_model(DMFNTraining, TrainConfig(size=128, batch_size=1), DMFNOptions(perceptual=False))
    tr.check_config(model.cfg, model)


def test_arguments_fill_the_options():
    parser = argparse.ArgumentParser()
    tr.add_arguments(parser, DMFNTraining)
    base = ["--data", "d", "--out", "o"]
    cfg, opts = tr.configs_from_options(DMFNTraining, vars(parser.parse_args(base)))
    assert opts == DMFNOptions() and (cfg.batch_size, cfg.steps) == (16, 100_000)  # the reference's config
    args = parser.parse_args([*base, "--dmfb", "paper", "--nf", "8", "--ndf", "4", "--n-blocks", "3",
                              "--no-perceptual", "--vgg-weights", "w.pth"])
    assert tr.configs_from_options(DMFNTraining, vars(args))[1] == DMFNOptions("paper", 8, 4, 3, False, "w.pth")
    assert DMFNOptions() == DMFNOptions("released", 64, 64, 8, True, "")  # the paper's defaults
    assert {k: DMFNTraining.defaults[k] for k in ("size", "lr", "holes", "decay_start")} == \
        {"size": 256, "lr": 2e-4, "holes": "dmfn", "decay_start": 1.0}
    with pytest.raises(SystemExit):
        parser.parse_args(["--dmfb", "other"])


# ----------------------------------------------------------------------------------------------- training

def _hole_l1(generator, images, masks) -> float:
    with torch.no_grad():
        out = (generator(generator_input(images, masks)) + 1) / 2
    return float(((out - images).abs() * masks).sum() / (masks.sum() * 3))


@pytest.mark.parametrize("perceptual", [False, True], ids=["no-perceptual", "random-vgg"])
def test_tiny_model_learns_a_fixed_batch(perceptual, vgg_file):
    model = _model(lr=1e-3, perceptual=perceptual, vgg_weights=str(vgg_file))
    assert set(model.nets) == {"generator", "discriminator"}  # the frozen VGG is not a trained network
    assert (model.vgg is not None) == perceptual
    images = _images()
    masks = _masks(model)
    generator = model.nets["generator"]
    before = _hole_l1(generator, images, masks)
    first = None
    for step in range(30):
        model.step = step
        logs = {k: float(v) for k, v in model.train_step(Batch(images, masks)).items()}  # 0-d tensors
        first = first or logs
        assert all(math.isfinite(v) for v in logs.values())
    after = _hole_l1(generator, images, masks)
    assert after < 0.5 * before, (before, after)
    keys = {"G_pixel", "G_dis_feature", "G_gan", "G_total", "D", "D_real_logit", "D_fake_logit"}
    assert set(logs) == keys | ({"G_feature", "G_align"} if perceptual else set())
    parts = sum(v for k, v in first.items() if k.startswith("G_") and k != "G_total")
    assert first["G_total"] == pytest.approx(parts, rel=1e-5)
    # the composite: the known pixels are the input's, exactly
    model.set_input(Batch(images, masks))
    model.forward()
    known = masks.expand_as(images) == 0
    assert torch.equal(model.fake[known], (images * 2 - 1)[known])
    # the grid sample: N×3×S×S in [0, 1], known pixels kept
    sample = model.sample(Batch(images, masks))
    assert sample.shape == images.shape and 0 <= float(sample.min()) and float(sample.max()) <= 1
    torch.testing.assert_close(sample[known], images[known])


def test_training_is_reproducible():
    runs = []
    for _ in range(2):
        model = _model(perceptual=False)
        images, masks = _images(), _masks(model)
        torch.manual_seed(5)
        logs = [model.train_step(Batch(images, masks)) for _ in range(2)]
        runs.append((logs, model.nets["generator"].encoder[0][0].weight.clone()))
    assert runs[0][0] == runs[1][0]
    assert torch.equal(runs[0][1], runs[1][1])


# ----------------------------------------------------------------------------------------------- inference

def _predictor(dmfb: str = "released") -> DMFNPredictor:
    config = {"model": "dmfn", "size": S, "dmfb": dmfb, **TINY}
    torch.manual_seed(0)
    generator = init_weights(build_network(config, "generator")).eval()
    return Predictor(config, {"generator": generator}, None, torch.device("cpu"))


@pytest.mark.parametrize("dmfb", ["released", "paper"])
def test_predictor_is_deterministic_and_batch_independent(dmfb):
    predictor = _predictor(dmfb)
    assert Predictor is DMFNPredictor and predictor.networks == ("generator",) and not predictor.needs_grad
    torch.manual_seed(9)
    images = torch.rand(3, 3, S, S)
    masks = torch.zeros(3, 1, S, S)
    masks[0, :, 10:40, 12:44] = 1
    masks[1, :, 30:60, 0:20] = 1
    masks[2, :, 5:15, 5:60] = 1
    with torch.inference_mode():
        out = predictor.predict(images, masks, seeds=[0, 1, 2])
        again = predictor.predict(images, masks, seeds=[7, 8, 9])
        alone = predictor.predict(images[1:2], masks[1:2], seeds=[1])
    assert out.shape == (3, 3, S, S) and float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.equal(out, again)
    torch.testing.assert_close(alone[0], out[1], atol=1e-5, rtol=0)
    # the generator's output mapped to [0, 1]
    generator = predictor.nets["generator"]
    with torch.no_grad():
        want = (generator(generator_input(images, masks)) + 1) / 2
    torch.testing.assert_close(out, want.clamp(0, 1))
    assert predictor.resolved_outputs() == {"dmfb": dmfb, "nf": 8, "n_blocks": 2}


def test_inference_does_not_import_training():
    code = ("import sys; import diffinpaint.models.dmfn as m; m.Predictor; "
            "bad = [k for k in sys.modules if k.startswith('diffinpaint.training') or k.endswith('dmfn.step') "
            "or k.endswith('dmfn.vgg')]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
