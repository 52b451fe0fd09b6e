"""LaMa: published weights through `run --model lama --lama-weights` against spandrel's own LaMa forward, the file
formats and their refusals, LaMa's evaluation policy (own size, padding to 8, --lama-max-side), parameter counts of
both generators and the discriminator, every loss term against a hand computation, LaMa's training masks against a
transcription of its generator, a fixed batch that learns, gradient flow through one step, and the ADE20k ResNet-50
of the perceptual loss (layer table, weights file, refusal without it).

No downloads and no pretrained weights: every network has random weights (BatchNorm statistics gathered on real
photos, so the random LaMa's outputs are not saturated and a wrong layer would show).
"""
from __future__ import annotations

import csv
import json
import math
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from diffinpaint.cli import main
from diffinpaint.models import build_model
from diffinpaint.models.lama import nets
from diffinpaint.models.lama.hrf import HRFPerceptualLoss, ResNet50Dilated, read_hrf_state, resolve_hrf_path
from diffinpaint.models.lama.infer import read_lama_weights
from diffinpaint.models.lama.step import (ADV_WEIGHT, FM_WEIGHT, HRF_WEIGHT, R1_GAMMA, TRAIN_BOXES, TRAIN_STROKES,
                                          LaMaTraining, discriminator_loss, feature_matching_loss,
                                          generator_adversarial_loss, lama_training_holes, masked_l1, r1_penalty)
from diffinpaint.models.trainable import Batch
from diffinpaint.util.errors import UserError
from test_gradflow import GAN, StepProbe, _changed, _grads_of, box_masks, smooth_images, tiny_model

FOURIER, BIG, DISCRIMINATOR = 27_048_835, 50_975_875, 6_962_369
# photo sizes of the parity dataset (height, width): two multiples of 8, two not
SIZES = {"astronaut": (64, 80), "rocket": (96, 72), "coffee": (75, 101), "chelsea": (93, 58)}


# ------------------------------------------------------------------------------------------------ helpers


def _photo(name: str, height: int, width: int) -> np.ndarray:
    import skimage

    array = np.asarray(getattr(skimage.data, name)())
    image = Image.fromarray(array).convert("RGB").resize((width, height), Image.BICUBIC)
    return np.array(image)


def _calibrate(generator: torch.nn.Module, photos: list[np.ndarray]) -> torch.nn.Module:
    """Random weights with BatchNorm statistics of real inputs (cumulative averages over a few passes): a random
    network whose activations stay in range, so its outputs are not all 0 or 1."""
    for module in generator.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    generator.train()
    with torch.no_grad():
        for photo in photos:
            x = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255
            x = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
            m = torch.zeros(1, 1, 64, 64)
            m[..., 16:40, 20:48] = 1
            generator(x * (1 - m), m) if generator.__class__.__name__ == "LaMa" else generator(
                nets.generator_input(x, m))
    for module in generator.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 0.1
    return generator.eval()


@pytest.fixture(scope="module")
def photos_dataset(tmp_path_factory):
    """Three photos at their own (odd) sizes, one box hole each, as a dataset folder."""
    root = tmp_path_factory.mktemp("lama_photos") / "data"
    rows = []
    for i, (name, (h, w)) in enumerate(SIZES.items()):
        path = root / "images" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_photo(name, h, w)).save(path)
        rows.append((f"{name}.png", 5 + i, 7 + 2 * i, w // 2, h // 3))
    with open(root / "masks.csv", "w", newline="") as f:
        csv.writer(f).writerows([("image", "x", "y", "width", "height"), *rows])
    return root


@pytest.fixture(scope="module")
def big_lama_file(tmp_path_factory):
    """A random big-lama generator (spandrel's LaMa: 18 blocks) saved as safetensors in big-lama's layout."""
    from safetensors.torch import save_file
    from spandrel.architectures.LaMa import LaMa

    torch.manual_seed(0)
    model = _calibrate(LaMa(in_nc=4, out_nc=3), [_photo(n, 64, 64) for n in ("rocket", "astronaut", "coffee")])
    path = tmp_path_factory.mktemp("lama_weights") / "big-lama.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def small_state():
    """A small random LaMa generator's state dict (ngf 8, 2 blocks), big-lama layout: for the file-format tests."""
    torch.manual_seed(1)
    generator = nets.build_network({"ngf": 8, "n_blocks": 2}, "generator")
    return _calibrate(generator, [_photo("rocket", 64, 64)]).state_dict()


def _load_hole_region(root, name):
    mask = np.zeros(SIZES[name], dtype=bool)
    with open(root / "masks.csv") as f:
        for row in csv.DictReader(f):
            if row["image"] == f"{name}.png":
                x, y, w, h = (int(row[k]) for k in ("x", "y", "width", "height"))
                mask[y:y + h, x:x + w] = True
    return mask


# ------------------------------------------------------------------------------------------ pretrained parity


def test_pretrained_big_lama_fills_holes_as_spandrels_lama(photos_dataset, big_lama_file, tmp_path):
    """`run --model lama --lama-weights big-lama.safetensors` at each photo's own size gives the holes spandrel's own
    LaMa gives on the same inputs, within the runner's rounding to uint8 (mean |Δ| ≤ 1 grey level; measured 0.25):
      - photos whose sides are multiples of 8 (64×80, 96×72): spandrel's model descriptor called on the photo;
      - the others (75×101, 93×58): spandrel's network on the photo padded as LaMa's evaluation pads it (numpy
        'symmetric' to a multiple of 8). spandrel's descriptor pads with 'reflect' instead, which through the
        image-wide FFT layers moves these random-weight fills by 2.8–5.2 grey levels: a padding policy, pinned here
        so a change shows (README, LaMa: what differs)."""
    import spandrel

    out = tmp_path / "run"
    assert main(["run", "--model", "lama", "--lama-weights", str(big_lama_file), "--data", str(photos_dataset),
                 "--out", str(out), "--batch-size", "2"]) == 0
    descriptor = spandrel.ModelLoader().load_from_file(str(big_lama_file))
    assert descriptor.architecture.id == "LaMa"
    network = descriptor.model.eval()
    report = {}
    for name, (h, w) in SIZES.items():
        ours = np.asarray(Image.open(out / "images" / f"{name}.png")).astype(np.float64)
        photo = np.array(Image.open(photos_dataset / "images" / f"{name}.png"))
        hole = _load_hole_region(photos_dataset, name)
        x = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255
        m = torch.from_numpy(hole)[None, None].float()
        with torch.no_grad():
            theirs = descriptor(x, m)[0].permute(1, 2, 0).numpy() * 255
            size = (nets.padded_side(h), nets.padded_side(w))
            padded = network(nets.pad_symmetric(x, *size), nets.pad_symmetric(m, *size))[..., :h, :w]
        lama_padding = padded[0].permute(1, 2, 0).numpy() * 255
        report[name] = (np.abs(ours - theirs)[hole].mean(), np.abs(ours - lama_padding)[hole].mean())
        assert np.array_equal(ours[~hole], photo[~hole].astype(np.float64)), name  # known pixels untouched
        assert np.std(lama_padding[hole]) > 5, "the random LaMa's fill is flat: the test would prove nothing"
    for name, (h, w) in SIZES.items():
        descriptor_delta, lama_padding_delta = report[name]
        assert lama_padding_delta <= 1.0, report
        if h % 8 == 0 and w % 8 == 0:  # no padding at all: spandrel's own call, as is
            assert descriptor_delta <= 1.0, report
        else:  # 'reflect' vs LaMa's 'symmetric' padding: a few grey levels with these random weights
            assert 1.0 < descriptor_delta < 10.0, report


def test_pretrained_file_layouts_give_the_same_fill(small_state, tmp_path):
    """safetensors in big-lama's layout, a Lightning checkpoint (`generator.` keys beside the discriminator's and
    the loss's) and FFCResNetGenerator's own keys, read with weights_only: one generator, one fill."""
    from safetensors.torch import save_file

    safetensors_path = tmp_path / "g.safetensors"
    save_file({k: v.contiguous() for k, v in small_state.items()}, str(safetensors_path))
    lightning = {"state_dict": {**{"generator." + k.removeprefix("model."): v for k, v in small_state.items()},
                                "discriminator.model0.0.weight": torch.zeros(4, 3, 4, 4),
                                "loss_resnet_pl.impl.conv1.weight": torch.zeros(64, 3, 3, 3)},
                 "global_step": 5, "epoch": 1}
    torch.save(lightning, tmp_path / "best.ckpt")
    torch.save({k.removeprefix("model."): v for k, v in small_state.items()}, tmp_path / "bare.pth")
    images = smooth_images(2, 40)[..., :37]
    masks = box_masks(2, 40)[..., :37]
    fills = []
    for path in (safetensors_path, tmp_path / "best.ckpt", tmp_path / "bare.pth"):
        state = read_lama_weights(path)
        assert state.keys() == small_state.keys(), path
        model = build_model("lama", {"lama_weights": str(path)})
        assert model.config["n_blocks"] == 2 and model.config["ngf"] == 8
        with torch.inference_mode():
            fills.append(model.inpaint(images, masks, seeds=[0, 1], labels=[None, None]))
    assert torch.equal(fills[0], fills[1]) and torch.equal(fills[0], fills[2])


class Pickled:
    """Something a pickle can only rebuild by importing this module (code)."""


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script / save: the format users still hold
def test_torchscript_and_code_pickles_are_refused_in_one_line(small_state, tmp_path, capsys, demo_small):
    scripted = torch.jit.script(torch.nn.Conv2d(4, 3, 3))
    torch.jit.save(scripted, str(tmp_path / "big-lama.pt"))
    torch.save({"state_dict": small_state, "hyper_parameters": Pickled()}, tmp_path / "code.ckpt")
    torch.save({"something": torch.zeros(3)}, tmp_path / "other.pth")
    cases = {"big-lama.pt": "TorchScript", "code.ckpt": "needs code to unpickle", "other.pth": "no LaMa generator"}
    for file, words in cases.items():
        argv = ["run", "--model", "lama", "--lama-weights", str(tmp_path / file), "--data", str(demo_small),
                "--out", str(tmp_path / f"out_{file}")]
        assert main(argv) == 2, file
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], (file, err)
        if file != "other.pth":
            assert "safetensors" in err[0] and "save_file" in err[0], err  # says how to get safetensors
        assert not (tmp_path / f"out_{file}").exists()


def test_weights_or_checkpoint_exactly_one(tmp_path, small_state):
    from safetensors.torch import save_file

    path = tmp_path / "g.safetensors"
    save_file({k: v.contiguous() for k, v in small_state.items()}, str(path))
    with pytest.raises(UserError, match="--lama-weights FILE"):
        build_model("lama", {})
    with pytest.raises(UserError, match="not both"):
        build_model("lama", {"lama_weights": str(path), "checkpoint": str(tmp_path)})
    with pytest.raises(UserError, match="no such file"):
        build_model("lama", {"lama_weights": str(tmp_path / "missing.safetensors")})
    model = build_model("lama", {"lama_weights": str(path)})
    outputs = model.output_settings()
    assert outputs["pretrained_sha256"] and outputs["checkpoint"].startswith("none")
    assert outputs["lama_dtype"] == "auto" and outputs["dtype"] == "fp32"  # auto on a CPU
    assert not hasattr(model, "training_set_path")  # eval's leakage check: nothing the toolkit trained


# ------------------------------------------------------------------------------------ the evaluation policy


def test_own_size_padded_to_eight_symmetric_and_cropped(small_state, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "g.safetensors"
    save_file({k: v.contiguous() for k, v in small_state.items()}, str(path))
    model = build_model("lama", {"lama_weights": str(path)})
    seen = []
    model.predictor.nets["generator"].register_forward_hook(lambda mod, inp, out: seen.append(inp[0].clone()))
    images, masks = smooth_images(1, 48)[..., :45, :37], box_masks(1, 48)[..., :45, :37]
    with torch.inference_mode():
        out = model.inpaint(images, masks, seeds=[0], labels=[None])
    assert out.shape == images.shape
    x = seen[0]
    assert x.shape == (1, 4, 48, 40)  # 45×37 -> 48×40
    # numpy's 'symmetric' padding (LaMa's pad_img_to_modulo), the hole zeroed, the mask as the 4th channel
    expected_image = np.pad((images * (1 - masks))[0].numpy(), ((0, 0), (0, 3), (0, 3)), mode="symmetric")
    expected_mask = np.pad(masks[0, 0].numpy(), ((0, 3), (0, 3)), mode="symmetric")
    assert np.array_equal(x[0, :3].numpy(), expected_image) and np.array_equal(x[0, 3].numpy(), expected_mask)
    # tiny images are padded to 16 (the FFC blocks' reflection padding needs 2×2 at 1/8)
    seen.clear()
    with torch.inference_mode():
        assert model.inpaint(images[..., :9, :5], masks[..., :9, :5], seeds=[0], labels=[None]).shape[-2:] == (9, 5)
    assert seen[0].shape[-2:] == (16, 16)


def test_max_side_shrinks_large_photos_and_enlarges_the_prediction(small_state, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "g.safetensors"
    save_file({k: v.contiguous() for k, v in small_state.items()}, str(path))
    model = build_model("lama", {"lama_weights": str(path), "lama_max_side": 32})
    seen = []
    model.predictor.nets["generator"].register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape))
    images, masks = smooth_images(2, 80)[..., :72, :], box_masks(2, 80)[..., :72, :]
    with torch.inference_mode():
        out = model.inpaint(images, masks, seeds=[0, 1], labels=[None, None])
        small = model.inpaint(images[..., :24, :30], masks[..., :24, :30], seeds=[0, 1], labels=[None, None])
    assert out.shape == images.shape and small.shape == (2, 3, 24, 30)
    assert seen[0][-2:] == (32, 32)  # 72×80 -> 29×32 (longer side 32) -> padded to 32×32
    assert seen[1][-2:] == (24, 32)  # under the limit: its own size
    assert model.output_settings()["lama_max_side"] == 32


def test_bf16_autocast_is_close_to_fp32(small_state, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "g.safetensors"
    save_file({k: v.contiguous() for k, v in small_state.items()}, str(path))
    images, masks = smooth_images(1, 32), box_masks(1, 32)
    fills = {}
    for dtype in ("fp32", "bf16"):
        model = build_model("lama", {"lama_weights": str(path), "lama_dtype": dtype})
        assert model.output_settings()["dtype"] == dtype
        with torch.inference_mode():
            fills[dtype] = model.inpaint(images, masks, seeds=[0], labels=[None])
    hole = masks.bool().expand_as(fills["fp32"])
    assert (fills["fp32"] - fills["bf16"])[hole].abs().mean() < 0.03


def test_a_trained_checkpoint_runs_through_the_same_networks(tmp_path, demo_small):
    """The checkpoint's generator.safetensors is a big-lama-layout file: loaded as --lama-weights it fills exactly
    as --lama-checkpoint does (own size, no resizing), and every unmasked pixel is kept by the runner."""
    from diffinpaint.training.trainer import train_from_options

    out = tmp_path / "ckpt"
    train_from_options("lama", {"data": str(demo_small), "out": str(out), "device": "cpu", "steps": 2,
                                "checkpoint_every": 2, "sample_every": 2, **LaMaTraining.tiny})
    step = sorted((out / "checkpoints").iterdir())[-1]
    assert json.loads((step / "config.json").read_text())["perceptual"] is False  # --no-perceptual recorded
    from_checkpoint = build_model("lama", {"checkpoint": str(out)})
    from_weights = build_model("lama", {"lama_weights": str(step / "generator.safetensors")})
    assert type(from_checkpoint.predictor.nets["generator"]) is nets.LaMaGenerator
    assert type(from_weights.predictor.nets["generator"]) is nets.LaMaGenerator
    images, masks = smooth_images(2, 48)[..., :44], box_masks(2, 48)[..., :44]  # not the trained 32 px
    with torch.inference_mode():
        a = from_checkpoint.inpaint(images, masks, seeds=[0, 1], labels=[None, None])
        b = from_weights.inpaint(images, masks, seeds=[0, 1], labels=[None, None])
    assert torch.equal(a, b) and a.shape == images.shape
    assert main(["run", "--model", "lama", "--checkpoint", str(out), "--data", str(demo_small),
                 "--out", str(tmp_path / "run")]) == 0
    from diffinpaint.data import load_dataset

    for sample in load_dataset(demo_small).samples:
        produced = np.asarray(Image.open(tmp_path / "run" / "images" / sample.output_relpath))
        original, hole = sample.load_image(), sample.load_mask()
        assert np.array_equal(produced[~hole], original[~hole])


# -------------------------------------------------------------------------------------------- the networks


def test_parameter_counts_of_both_generators_and_the_discriminator():
    assert nets.count_parameters({"generator": "fourier"}) == {"generator": FOURIER, "discriminator": DISCRIMINATOR}
    assert nets.count_parameters({"generator": "big"})["generator"] == BIG
    # the same network spandrel builds for big-lama: identical keys and shapes (the published layout)
    from spandrel.architectures.LaMa import LaMa

    with torch.device("meta"):
        theirs = LaMa(in_nc=4, out_nc=3).state_dict()
        ours = nets.build_network({"generator": "big"}, "generator").state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}


def test_dry_run_prints_the_counts(demo_small, tmp_path, capsys):
    for extra, count in (([], FOURIER), (["--generator", "big"], BIG)):
        argv = ["train", "lama", "--data", str(demo_small), "--out", str(tmp_path / "never"), "--dry-run",
                "--no-perceptual", "--batch-size", "2", *extra]  # 9 images: fewer than LaMa's batch of 10
        assert main(argv) == 0
        text = capsys.readouterr().out
        assert f"generator: LaMaGenerator, {count:,} parameters" in text, text
        assert f"discriminator: NLayerDiscriminator, {DISCRIMINATOR:,} parameters" in text
        assert "steps: 1000000" in text and "lr: 0.001" in text and "holes: lama" in text
        assert "batch 10 per GPU" in text and "1,000,000 steps" in text  # the paper note says what they are
        assert "augment: distortions" in text and "'distortions' image augmentation" in text
        assert "augmentation: LaMa's distortions at 256 px" in text and "its flip: the trainer's --flip" in text


def test_discriminator_layer_table():
    """pix2pixhd_nlayer (n_layers 4): strides 2, 2, 2, 2, 1, 1, widths 64, 128, 256, 512, 512, 1, BatchNorm after
    all but the first and last conv; 256 px -> a 19×19 score map and five activations."""
    d = nets.NLayerDiscriminator(3, 64, 4)
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.stride[0] for c in convs] == [2, 2, 2, 2, 1, 1]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 512, 1]
    assert all(c.kernel_size == (4, 4) and c.padding == (2, 2) for c in convs)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules()) == 4
    scores, features = d(torch.rand(1, 3, 256, 256))
    assert scores.shape == (1, 1, 19, 19) and [f.shape[1] for f in features] == [64, 128, 256, 512, 512]
    assert [name for name, _ in d.named_children()] == [f"model{i}" for i in range(6)]


def test_hrf_network_layer_table_and_weights_file(tmp_path):
    """CSAIL's resnet50dilated: deep stem, layer3/4 dilated (first block one step less), strides only in the stem,
    layer2's first block; stage outputs at 1/4, 1/8, 1/8, 1/8."""
    encoder = ResNet50Dilated()
    convs = dict(encoder.named_modules())
    assert (convs["conv1"].stride, convs["conv2"].stride, convs["conv3"].out_channels) == ((2, 2), (1, 1), 128)
    assert convs["layer1.0.conv1"].in_channels == 128
    assert convs["layer2.0.conv2"].stride == (2, 2)
    for layer, first, rest in (("layer3", 1, 2), ("layer4", 2, 4)):
        assert convs[f"{layer}.0.conv2"].dilation == (first, first) and convs[f"{layer}.0.conv2"].stride == (1, 1)
        assert convs[f"{layer}.0.downsample.0"].stride == (1, 1)
        assert convs[f"{layer}.1.conv2"].dilation == (rest, rest) and convs[f"{layer}.1.conv2"].padding == (rest, rest)
    features = encoder(torch.rand(1, 3, 64, 64))
    assert [tuple(f.shape[1:]) for f in features] == [(256, 16, 16), (512, 8, 8), (1024, 8, 8), (2048, 8, 8)]
    # CSAIL's file: the encoder's state dict (plus keys it does not use); read without code, checked, loaded
    torch.manual_seed(0)
    path = tmp_path / "encoder_epoch_20.pth"
    torch.save({**encoder.state_dict(), "fc.weight": torch.zeros(2, 2)}, path)
    loss = HRFPerceptualLoss.from_file(path)
    assert not loss.training and not any(p.requires_grad for p in loss.parameters())
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    assert loss(x, x).item() == 0.0 and loss(x, y).item() > 0
    loss.train()
    assert not loss.training
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(UserError, match="not the ADE20k resnet50dilated encoder"):
        read_hrf_state(tmp_path / "wrong.pth")
    with pytest.raises(UserError, match="--no-perceptual"):
        resolve_hrf_path(str(tmp_path / "missing.pth"))


def test_training_without_the_ade20k_weights_stops_before_any_work(demo_small, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    out = tmp_path / "never"
    assert main(["train", "lama", "--data", str(demo_small), "--out", str(out), "--preset", "quick"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "encoder_epoch_20.pth" in err[0] and "--no-perceptual" in err[0], err
    assert str(tmp_path / "torch_home" / "ade20k") in err[0]  # LaMa's own place under TORCH_HOME
    assert not out.exists()


def test_training_with_the_perceptual_loss_records_it(demo_small, tmp_path):
    from diffinpaint.training.trainer import train_from_options

    torch.manual_seed(0)
    weights = tmp_path / "encoder_epoch_20.pth"
    torch.save(ResNet50Dilated().state_dict(), weights)
    out = tmp_path / "ckpt"
    train_from_options("lama", {"data": str(demo_small), "out": str(out), "device": "cpu", "steps": 1,
                                **{**LaMaTraining.tiny, "perceptual": True}, "perceptual_weights": str(weights)})
    config = json.loads(next((out / "checkpoints").iterdir()).joinpath("config.json").read_text())
    assert config["perceptual"] is True
    log = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    assert log["G_hrf"] > 0 and math.isfinite(log["G_total"])


# ---------------------------------------------------------------------------------------------- the losses


def test_r1_penalty_by_hand():
    """D(x) = Σ_c w_c·x_c per pixel (a 1×1 conv): ∂ΣD/∂x = w_c at every pixel, so ‖·‖² = H·W·Σ w_c² per image."""
    conv = torch.nn.Conv2d(3, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([0.5, -1.0, 2.0]).view(1, 3, 1, 1))
    real = torch.rand(2, 3, 5, 7, requires_grad=True)
    value = r1_penalty(conv(real), real)
    assert value.item() == pytest.approx(5 * 7 * (0.25 + 1 + 4))
    assert value.requires_grad  # create_graph: the penalty trains D


def _softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def test_masked_discriminator_loss_by_hand():
    """Reals real everywhere; the prediction fake where the (nearest-resized) mask is 1, real elsewhere; + 0.001·R1,
    averaged over the score map."""
    real = torch.tensor([[[[0.5, -1.0], [2.0, 0.0]]]])
    fake = torch.tensor([[[[1.0, -2.0], [0.3, 3.0]]]])
    masks = torch.zeros(1, 1, 4, 4)
    masks[..., :2, 2:] = 1  # top right quarter -> score cell (0, 1)
    r1 = torch.tensor(7.0)
    expected = 0.0
    for i in range(2):
        for j in range(2):
            hole = (i, j) == (0, 1)
            f = fake[0, 0, i, j].item()
            expected += _softplus(-real[0, 0, i, j].item()) + R1_GAMMA * 7.0 + (_softplus(f) if hole else _softplus(-f))
    assert discriminator_loss(real, fake, masks, r1).item() == pytest.approx(expected / 4, rel=1e-6)


def test_generator_terms_by_hand():
    fake = torch.tensor([[[[1.0, -2.0], [0.3, 3.0]]]])
    expected = ADV_WEIGHT * sum(_softplus(-v) for v in (1.0, -2.0, 0.3, 3.0)) / 4
    assert generator_adversarial_loss(fake).item() == pytest.approx(expected, rel=1e-6)
    # feature matching: the mean over layers of each layer's MSE (LaMa's weight 100 is applied by the step)
    a = [torch.zeros(1, 2, 2, 2), torch.ones(1, 1, 3, 3)]
    b = [torch.full((1, 2, 2, 2), 2.0), torch.zeros(1, 1, 3, 3)]
    assert feature_matching_loss(a, b).item() == pytest.approx((4.0 + 1.0) / 2)
    assert FM_WEIGHT == 100 and HRF_WEIGHT == 30 and ADV_WEIGHT == 10 and R1_GAMMA == 0.001
    # L1 on known pixels only, weight 10, averaged over every pixel and channel
    pred, target = torch.zeros(1, 1, 2, 2), torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    masks = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    assert masked_l1(pred, target, masks).item() == pytest.approx(10 * (2 + 3 + 4) / 4)


# -------------------------------------------------------------------------------------------- the masks


def _lama_training_mask_reference(rs: np.random.RandomState) -> np.ndarray:
    """A transcription of LaMa's MixedMaskGenerator with abl-04-256-mh-dist's mask_gen_kwargs at 256 px (no ramp:
    coef 1): RandomIrregularMaskGenerator / RandomRectangleMaskGenerator and their make_random_* functions."""
    import cv2

    height = width = 256
    mask = np.zeros((height, width), np.float32)
    if rs.choice(2, p=[0.5, 0.5]) == 0:  # irregular: max_angle 4, max_len 200, max_width 100, times 1..5
        min_times, max_times = 1, int(1 + 1 + (5 - 1) * 1)
        for i in range(rs.randint(min_times, max_times + 1)):
            start_x, start_y = rs.randint(width), rs.randint(height)
            for _ in range(1 + rs.randint(5)):
                angle = 0.01 + rs.randint(4)
                if i % 2 == 0:
                    angle = 2 * 3.1415926 - angle
                length, brush_w = 10 + rs.randint(200), 5 + rs.randint(100)
                end_x = np.clip((start_x + length * np.sin(angle)).astype(np.int32), 0, width)
                end_y = np.clip((start_y + length * np.cos(angle)).astype(np.int32), 0, height)
                cv2.line(mask, (int(start_x), int(start_y)), (int(end_x), int(end_y)), 1.0, int(brush_w))
                start_x, start_y = end_x, end_y
    else:  # box: margin 10, sizes 30..150, times 1..4
        margin, min_size = 10, 30
        max_size = min(int(30 + 1 + (150 - 30) * 1), height - 2 * margin, width - 2 * margin)
        for _ in range(rs.randint(1, int(1 + (4 - 1) * 1) + 1)):
            box_w, box_h = rs.randint(min_size, max_size), rs.randint(min_size, max_size)
            x, y = rs.randint(margin, width - margin - box_w + 1), rs.randint(margin, height - margin - box_h + 1)
            mask[y:y + box_h, x:x + box_w] = 1
    return mask > 0


def test_lama_training_masks_match_lamas_generator():
    n = 600
    ours = np.array([lama_training_holes(256, np.random.default_rng([5, i])).mean() for i in range(n)])
    rs = np.random.RandomState(5)
    theirs = np.array([_lama_training_mask_reference(rs).mean() for _ in range(n)])
    # mean hole fraction (about 0.3) within 4 standard errors; the spread and the share over half alike
    se = math.sqrt(ours.var() / n + theirs.var() / n)
    assert abs(ours.mean() - theirs.mean()) < 4 * se, (ours.mean(), theirs.mean())
    assert abs(ours.std() - theirs.std()) < 0.03
    over = (ours > 0.5).mean(), (theirs > 0.5).mean()  # no area limit in training: about a quarter over half
    assert ours.min() > 0 and abs(over[0] - over[1]) < 4 * math.sqrt(2 * 0.25 * 0.75 / n), over
    assert TRAIN_STROKES.max_times == 5 and TRAIN_BOXES.max_times == 4
    # other sizes: drawn at 256 and resized with the same fraction; a function of the rng state
    small = np.array([lama_training_holes(64, np.random.default_rng([5, i])).mean() for i in range(200)])
    assert abs(small.mean() - ours[:200].mean()) < 0.02
    a = lama_training_holes(64, np.random.default_rng(1))
    assert a.shape == (64, 64) and a.dtype == bool and np.array_equal(a, lama_training_holes(64,
                                                                                             np.random.default_rng(1)))
    assert LaMaTraining.defaults["holes"] == "lama" and "lama" in LaMaTraining.hole_choices


# ------------------------------------------------------------------------------------ the augmentation

# LaMa's saicinpainting/training/data/datasets.py, get_transforms('distortions', out_size), lines 113-127, with the
# defaults of albumentations 0.5.2 (requirements.txt) and of saicinpainting/training/data/aug.py written out:
# (class, its arguments, p). shift_limit 0.05 is rounded to whole pixels in 0.5.2 (round(uniform(-0.05, 0.05)) = 0).
REFERENCE_DISTORTIONS = [
    ("IAAPerspective2", {"scale": (0.0, 0.06), "keep_size": True, "mode": "replicate", "order": 1}, 0.5),
    ("IAAAffine2", {"scale": (0.7, 1.3), "rotate": (-40, 40), "shear": (-0.1, 0.1), "translate": None, "order": 1,
                    "mode": "reflect"}, 0.5),
    ("PadIfNeeded", {"min_height": "out_size", "min_width": "out_size", "border_mode": "reflect_101"}, 1.0),
    ("OpticalDistortion", {"distort_limit": (-0.05, 0.05), "shift_limit": (-0.05, 0.05), "interpolation": "linear",
                           "border_mode": "reflect_101"}, 0.5),
    ("RandomCrop", {"height": "out_size", "width": "out_size"}, 1.0),
    ("HorizontalFlip", {}, 0.5),
    ("CLAHE", {"clip_limit": (1, 4), "tile_grid_size": (8, 8)}, 0.5),
    ("RandomBrightnessContrast", {"brightness_limit": (-0.2, 0.2), "contrast_limit": (-0.2, 0.2),
                                  "brightness_by_max": True}, 0.5),
    ("HueSaturationValue", {"hue_shift_limit": (-5, 5), "sat_shift_limit": (-30, 30), "val_shift_limit": (-5, 5)}, 0.5),
    ("ToFloat", {"max_value": 255}, 1.0),  # None = the dtype's maximum: 255 for LaMa's uint8 photos
]


def _albumentations_2x(name: str, args: dict, size: int) -> tuple[str, dict] | None:
    """The albumentations 2.x transform and arguments standing for one reference entry (None: the trainer's)."""
    import cv2

    border = {"replicate": cv2.BORDER_REPLICATE, "reflect": cv2.BORDER_REFLECT_101,  # imgaug's 'reflect' = cv2's 101
              "reflect_101": cv2.BORDER_REFLECT_101}
    sized = {k: size if v == "out_size" else v for k, v in args.items()}
    if name == "IAAPerspective2":  # imgaug's PerspectiveTransform, ported: Perspective
        return "Perspective", {"scale": args["scale"], "keep_size": True, "border_mode": border[args["mode"]],
                               "interpolation": cv2.INTER_LINEAR, "fit_output": False}
    if name == "IAAAffine2":  # imgaug's Affine (scale and shear as x/y dicts, degrees), ported: Affine
        return "Affine", {"scale": {"x": args["scale"], "y": args["scale"]}, "rotate": args["rotate"],
                          "shear": {"x": args["shear"], "y": args["shear"]}, "translate_px": {"x": (0, 0), "y": (0, 0)},
                          "translate_percent": None, "interpolation": cv2.INTER_LINEAR,
                          "border_mode": border[args["mode"]], "fit_output": False, "keep_ratio": False,
                          "balanced_scale": False}
    if name == "HorizontalFlip":
        return None  # the trainer's --flip
    if "border_mode" in sized:
        sized["border_mode"] = border[sized["border_mode"]]
    if name == "OpticalDistortion":  # 2.x has no shift (0.5.2's rounds to 0 px); the same camera-matrix map
        del sized["shift_limit"]
        sized.update(interpolation=cv2.INTER_LINEAR, mode="camera")
    return name, sized


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return isinstance(b, (tuple, list)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _photo_chw(size: int, seed: int = 0) -> np.ndarray:
    """A smooth colour image 3×size×size float32 in [0, 1] with structure everywhere (no flat border)."""
    return smooth_images(1, size, seed)[0].numpy().astype(np.float32)


def test_augmentation_is_lamas_distortions_transform_for_transform():
    from diffinpaint.models.lama.augment import distortions

    for size in (256, 64):
        ours = distortions(size).transforms
        expected = [e for e in (_albumentations_2x(name, args, size) for name, args, _ in REFERENCE_DISTORTIONS) if e]
        assert [type(t).__name__ for t in ours] == [name for name, _ in expected]
        ps = [p for name, _, p in REFERENCE_DISTORTIONS if name != "HorizontalFlip"]
        for t, (name, args), p in zip(ours, expected, ps):
            given = t.get_transform_init_args()
            assert t.p == p, name
            for key, value in args.items():
                assert _same(value, given[key]), (name, key, value, given[key])
    # the variant LaMa-Fourier and big-lama train with is the default; `tiny` keeps it, so the registry's contract
    # test (2 steps + --resume = 4 straight, bit for bit) runs with it
    assert LaMaTraining.Options().augment == "distortions"
    assert "augment" not in LaMaTraining.tiny and "augment" not in LaMaTraining.presets["quick"]


def test_augmentation_draws_are_independent_between_transforms():
    """Every transform draws from one shared stream: with albumentations' own seeding (Compose(seed=...) or
    set_random_seed) each transform would get a generator started from the same seed, and the six p = 0.5
    transforms would fire all together or not at all."""
    from diffinpaint.models.lama.augment import LaMaAugment, distortions

    augment = LaMaAugment(32)
    pipeline = distortions(32)
    pipeline.save_applied_params = True
    pixels = (_photo_chw(32).transpose(1, 2, 0) * 255).astype(np.uint8)
    fired = []
    for position in range(300):
        applied = augment.run(pixels, np.random.default_rng([0, 6, position]), pipeline)["applied_transforms"]
        fired.append({name for name, _ in applied} - {"PadIfNeeded", "RandomCrop", "ToFloat"})
    counts = np.array([len(f) for f in fired])
    assert abs(counts.mean() - 3.0) < 0.3  # six transforms at p 0.5 each
    assert ((counts == 0) | (counts == 6)).mean() < 0.1  # binomial(6, 0.5): 1/32
    both = np.mean([{"Perspective", "CLAHE"} <= f for f in fired])
    assert abs(both - 0.25) < 0.08


def test_augmentation_is_a_function_of_seed_and_position_and_keeps_shape_dtype_range(demo_small):
    from diffinpaint.data import discover_images
    from diffinpaint.models.lama.augment import LaMaAugment
    from diffinpaint.training.data import TrainingImages

    samples = discover_images(demo_small)

    def dataset(augment: bool, seed: int = 3, flip: bool = True) -> TrainingImages:
        return TrainingImages(samples, 32, "lama", flip, seed, lama_training_holes,
                              augment=LaMaAugment(32) if augment else None)

    a, b, plain = dataset(True), dataset(True), dataset(False)
    positions = list(range(0, 27, 2))
    batch_a, masks_a = a.batch(positions)
    batch_b, masks_b = b.batch(positions)
    assert torch.equal(batch_a, batch_b) and torch.equal(masks_a, masks_b)  # built alike: the same examples
    # the DataLoader's path (--workers N: one example at a time, each worker with a pickled copy) gives the same
    import pickle

    copied = pickle.loads(pickle.dumps(a))
    for i, position in enumerate(positions):
        image, mask = copied[position]
        assert torch.equal(image, batch_a[i]) and torch.equal(mask, masks_a[i])
    assert batch_a.dtype == torch.float32 and batch_a.shape == (len(positions), 3, 32, 32)
    assert batch_a.min() >= 0 and batch_a.max() <= 1
    # not a no-op: most examples differ from the resized photo by far more than the uint8 rounding
    batch_plain, masks_plain = plain.batch(positions)
    changed = (batch_a - batch_plain).abs().flatten(1).amax(1)
    assert (changed > 0.1).float().mean() > 0.8, changed
    # the holes are untouched by it: the same masks as without augmentation
    assert torch.equal(masks_a, masks_plain)
    # another position (here: the same image in the next epoch) gets another draw; another seed too
    unflipped = dataset(True, flip=False)
    index = int(a.order(0)[0])
    later = len(samples) + int(np.flatnonzero(a.order(1) == index)[0])
    assert not torch.equal(unflipped[0][0], unflipped[later][0])
    assert torch.equal(dataset(False, flip=False)[0][0], dataset(False, flip=False)[later][0])
    assert not torch.equal(dataset(True, seed=4).batch(positions)[0], batch_a)
    # the one flip is the trainer's, after the augmentation: a flipped example is the unflipped one mirrored
    flips = [np.random.default_rng([3, 1, p]).random() < 0.5 for p in positions]
    assert any(flips) and not all(flips)
    for i, (position, flip) in enumerate(zip(positions, flips)):
        image = unflipped[position][0]
        assert torch.equal(batch_a[i], image.flip(-1) if flip else image)
    # the cache keeps the resized photo, never an augmented one
    assert all(torch.equal(a.cache[k][0], plain.cache[k][0]) for k in plain.cache)


def test_augmentation_of_one_image_is_the_pipeline_on_its_uint8_pixels():
    from diffinpaint.models.lama.augment import LaMaAugment, distortions

    image = _photo_chw(64, seed=1)
    before = image.copy()
    out = LaMaAugment(64)(image, np.random.default_rng([0, 6, 5]))
    assert np.array_equal(image, before)  # the cached image is never written
    pixels = np.clip(image.transpose(1, 2, 0) * 255 + 0.5, 0, 255).astype(np.uint8)
    again = LaMaAugment(64).run(pixels, np.random.default_rng([0, 6, 5]), distortions(64))["image"]
    assert out.dtype == np.float32 and out.shape == (3, 64, 64) and out.flags.c_contiguous
    assert np.array_equal(out, again.transpose(2, 0, 1))
    # every output is a multiple of 1/255 (ToFloat of uint8), as LaMa's photos are
    assert np.allclose(out * 255, np.round(out * 255), atol=1e-4)


def test_augmentation_option_reaches_training_and_resume_refuses_a_change(demo_small, tmp_path, capsys):
    """--augment is recorded in config.json, changes what is trained (the first step's losses), and --resume
    refuses a change of it, naming it; other models have no augmentation (their examples are as before)."""
    from diffinpaint.models import TRAINED, trainable_class
    from diffinpaint.training.trainer import train_from_options

    def train(out, **kw):
        options = {"data": str(demo_small), "out": str(out), "device": "cpu", "steps": 1, "checkpoint_every": 1,
                   "sample_every": 1, **LaMaTraining.tiny, **kw}
        return train_from_options("lama", options)

    on, off = train(tmp_path / "on"), train(tmp_path / "off", augment="none")
    assert json.loads((on / "config.json").read_text())["augment"] == "distortions"
    assert json.loads((off / "config.json").read_text())["augment"] == "none"
    log = [json.loads((p / "log.jsonl").read_text().splitlines()[0]) for p in (tmp_path / "on", tmp_path / "off")]
    assert log[0]["G_l1"] != log[1]["G_l1"]
    with pytest.raises(UserError, match="augment='distortions'.*--augment distortions"):
        train(tmp_path / "on", augment="none", steps=2, resume=True)
    # a run saved before --augment existed was trained without augmentation: resuming it with the new default is
    # refused, with --augment none it resumes
    for config in (tmp_path / "off").rglob("config.json"):
        saved = json.loads(config.read_text())
        del saved["augment"]
        config.write_text(json.dumps(saved))
    with pytest.raises(UserError, match=r"augment='none' \(before the option existed\).*--augment none"):
        train(tmp_path / "off", steps=2, resume=True)
    assert train(tmp_path / "off", augment="none", steps=2, resume=True).name == "step_000002"
    with pytest.raises(SystemExit):  # argparse: one of the choices
        main(["train", "lama", "--data", str(demo_small), "--out", str(tmp_path / "x"), "--augment", "crop"])
    assert "invalid choice: 'crop'" in capsys.readouterr().err
    for name in TRAINED:
        if name != "lama":
            model = trainable_class(name)()
            assert model.augmentation() is None, name


# ---------------------------------------------------------------------------------------- training


def test_optimisers_and_options():
    model = tiny_model("lama")
    groups = {k: o.param_groups[0] for k, o in model.optimizers.items()}
    assert groups["optimizer_G"]["lr"] == 1e-3 and groups["optimizer_D"]["lr"] == pytest.approx(1e-4)
    assert tuple(groups["optimizer_G"]["betas"]) == (0.9, 0.999)
    for bad, words in (({"size": 36}, "multiple of 8"), ({"size": 8}, "at least 16"),
                       ({"mixed_precision": "fp16"}, "bf16")):
        with pytest.raises(UserError, match=words):
            tiny_model("lama", **bad)


def test_fixed_batch_loss_falls():
    """One fixed batch, 50 steps of the tiny configuration (ngf 8): the generator's objective falls by far (feature
    matching dominates it early) and so does its L1 on the known pixels."""
    model = tiny_model("lama", ngf=8)
    images, masks = smooth_images(2, 32, seed=2), box_masks(2, 32)
    logs = []
    for step in range(50):
        torch.manual_seed(step)
        logs.append({k: float(v) for k, v in model.train_step(Batch(images, masks)).items()})
    assert all(math.isfinite(v) for log in logs for v in log.values())
    for key, factor in (("G_total", 0.3), ("G_l1", 0.8)):
        first = np.mean([log[key] for log in logs[:3]])
        last = np.mean([log[key] for log in logs[-5:]])
        assert last < factor * first, (key, first, last)


def _lama_reference_step(G, D, img, mask):
    """A plain transcription of one LaMa training step (trainers/base.py _do_step, default.py forward /
    generator_loss / discriminator_loss, losses/adversarial.py NonSaturatingWithR1 with lama-fourier.yaml's
    weights, feature_matching.py): Lightning's two optimiser passes, each with its own forward, gradient norms
    clipped to 1 (gradient_clip_val), Adam G 1e-3 / D 1e-4. Returns the losses; updates G and D in place."""
    opt_g, opt_d = torch.optim.Adam(G.parameters(), lr=1e-3), torch.optim.Adam(D.parameters(), lr=1e-4)
    img = img.clone()
    # optimizer_idx 0: the generator
    G.requires_grad_(True), D.requires_grad_(False)
    predicted = G(torch.cat([img * (1 - mask), mask], dim=1))
    l1 = ((mask * 0 + (1 - mask) * 10) * F.l1_loss(predicted, img, reduction="none")).mean()
    real_pred, real_features = D(img)
    fake_pred, fake_features = D(predicted)
    adv = F.softplus(-fake_pred).mean() * 10
    fm = torch.stack([F.mse_loss(f, r) for f, r in zip(fake_features, real_features)]).mean() * 100
    total = l1 + adv + fm
    opt_g.zero_grad()
    total.backward()
    torch.nn.utils.clip_grad_norm_(G.parameters(), 1.0)
    opt_g.step()
    # optimizer_idx 1: the discriminator, after a new forward of the (updated, frozen) generator
    G.requires_grad_(False), D.requires_grad_(True)
    predicted = G(torch.cat([img * (1 - mask), mask], dim=1)).detach()
    img.requires_grad = True
    real_pred, _ = D(img)
    fake_pred, _ = D(predicted)
    grad_real = torch.autograd.grad(outputs=real_pred.sum(), inputs=img, create_graph=True)[0]
    grad_penalty = (grad_real.view(grad_real.shape[0], -1).norm(2, dim=1) ** 2).mean() * 0.001
    m = F.interpolate(mask, size=fake_pred.shape[-2:], mode="nearest")
    fake_loss = F.softplus(fake_pred) * m + (1 - m) * F.softplus(-fake_pred)
    d_loss = (F.softplus(-real_pred) + grad_penalty + fake_loss).mean()
    opt_d.zero_grad()
    d_loss.backward()
    torch.nn.utils.clip_grad_norm_(D.parameters(), 1.0)
    opt_d.step()
    G.requires_grad_(True)
    return {"G_l1": l1.item(), "G_adv": adv.item(), "G_fm": fm.item(), "G_total": total.item(), "D": d_loss.item(),
            "D_r1": grad_penalty.item() / 0.001}


def test_one_step_equals_a_transcription_of_lamas_step():
    """Losses, both networks' weights after their optimiser steps and every BatchNorm statistic (two generator
    forwards, four discriminator calls) equal the transcription's, within float noise."""
    import copy

    model = tiny_model("lama", ngf=8, n_blocks=2)
    G, D = (copy.deepcopy(model.nets[k]) for k in ("generator", "discriminator"))
    images, masks = smooth_images(2, 32, seed=6), box_masks(2, 32)
    masks[1, :, 2:5, 3:29] = 1  # a second, stroke-like hole
    raw = model.train_step(Batch(images, masks))
    # the protocol: 0-dim tensors, detached, left on the device (the trainer reads them in blocks)
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad for v in raw.values())
    logs = {k: float(v) for k, v in raw.items()}
    expected = _lama_reference_step(G, D, images, masks)
    for key, value in expected.items():
        assert logs[key] == pytest.approx(value, rel=1e-5, abs=1e-6), (key, logs[key], value)
    for ours, theirs, what in ((model.nets["generator"], G, "G"), (model.nets["discriminator"], D, "D")):
        reference = dict(theirs.state_dict())
        for name, tensor in ours.state_dict().items():
            if tensor.is_floating_point():
                torch.testing.assert_close(tensor, reference[name], rtol=1e-5, atol=1e-6, msg=f"{what} {name}")
            else:
                assert torch.equal(tensor, reference[name]), (what, name)  # num_batches_tracked: 2 G, 4 D passes
    assert int(model.nets["generator"].state_dict()["model.model.1.bn_l.num_batches_tracked"]) == 2


class LaMaProbe(StepProbe):
    """test_gradflow's probe, for LaMa's D step: there D judges the prediction of LaMa's second forward, made with
    the generator frozen (no gradient), so D's loss cannot reach G's output at all; recorded as such."""

    def _on_backward(self, loss, **kwargs):
        if self.phase == "D" and not any(o.requires_grad for o in self.g_outputs[-1]):
            self.backwards["D"] += 1
            self.d_loss_into_G.append((None,))
            before = _grads_of(self.G)
            result = self._backward(loss, **kwargs)
            self.grad_leaks["D"].append(_changed(before, _grads_of(self.G)))
            return result
        return super()._on_backward(loss, **kwargs)


@pytest.fixture(scope="module")
def probed():
    spec = GAN({"loss_G_adv": "score", "loss_G_fm": "features"}, composites=False)
    model = tiny_model("lama")
    probe = LaMaProbe(model, spec.adversarial)
    batch = Batch(smooth_images(2, 32, seed=1), box_masks(2, 32))
    torch.manual_seed(0)
    logs = {k: float(v) for k, v in model.train_step(batch).items()}
    return model, probe, batch, logs


def test_gradient_flow_through_one_step(probed):
    model, probe, batch, logs = probed
    assert probe.backwards == {"G": 1, "D": 1} and all(math.isfinite(v) for v in logs.values())
    assert len(probe.g_outputs) == 2  # LaMa's two forwards: one per optimiser
    hole = (batch.masks > 0.5).expand(-1, 3, -1, -1)
    for term in ("loss_G_adv", "loss_G_fm"):  # into every image's hole (D judges the raw prediction, so the known
        grad = probe.adv_grads[term]["outputs"][0]  # pixels get some too, as in LaMa)
        for i in range(grad.shape[0]):
            reached = (grad[i].abs().sum(0) > 0)[hole[i, 0]].float().mean().item()
            assert reached > 0.9, (term, i, reached)
    assert bool((probe.adv_grads["loss_G_adv"]["score"] < 0).all())  # G pushes D's scores of its fakes up
    assert probe.grad_leaks["G"] == [[]] and probe.value_leaks["optimizer_G"] == [[]]  # D untouched by G's update
    assert probe.grad_leaks["D"] == [[]] and probe.value_leaks["optimizer_D"] == [[]]  # G untouched by D's update
    assert probe.d_loss_into_G == [(None,)]


def test_l1_reaches_known_pixels_only_and_r1_trains_D():
    model = tiny_model("lama")
    batch = Batch(smooth_images(2, 32, seed=1), box_masks(2, 32))
    model.set_input(batch)
    model.forward()
    grad, = torch.autograd.grad(masked_l1(model.pred, model.real, model.masks), model.pred)
    hole = (model.masks > 0.5).expand_as(grad)
    assert grad[hole].abs().max().item() == 0 and (grad[~hole] != 0).float().mean().item() > 0.9
    real = model.real.detach().requires_grad_(True)
    r1 = r1_penalty(model.netD(real)[0], real)
    grads = torch.autograd.grad(r1, list(model.netD.parameters()), allow_unused=True)
    assert sum(g is not None and bool(g.abs().sum() > 0) for g in grads) >= len(grads) // 2


def test_the_modules_import_nothing_heavy_at_cli_help():
    """spandrel is imported when a network is built, not by the registry or `--help`."""
    import subprocess

    code = ("import sys, diffinpaint.models as m; m.model_class('lama'); "
            "print(any(k.startswith('spandrel') for k in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr
