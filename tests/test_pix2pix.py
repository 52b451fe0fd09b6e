"""Pix2Pix on the one trainer: networks, training (losses, resume, checkpoints, bad input), inference, and the
golden run pinned before the refactor (tests/data/pix2pix_golden.json).

Everything runs on tiny configurations (ngf 8, 32 px) built in-process; no downloads.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffinpaint.models import build_model, model_class
from diffinpaint.models.pix2pix.nets import (HOLE_FILL, build_discriminator, build_generator, count_parameters,
                                             generator_input, init_weights, unet_depth)
from diffinpaint.models.pix2pix.step import Pix2PixOptions, Pix2PixTraining
from diffinpaint.training import checkpoints as ck
from diffinpaint.training import trainer as tr
from diffinpaint.training.data import TrainingImages
from diffinpaint.models.trainable import Batch
from diffinpaint.training.setup import make_model, prepare_model
from diffinpaint.util.checkpoint import checkpoint_dirs, resolve_checkpoint
from diffinpaint.util.errors import UserError
from diffinpaint.util.options import add_flags, given
from diffinpaint.util.files import sha256_file
from make_pix2pix_golden import write_dataset as _write_dataset  # the pinned runs' data, shared with the script

GOLDEN = Path(__file__).parent / "data" / "pix2pix_golden.json"

TINY = dict(size=32, ngf=8, ndf=8, batch_size=2, device="cpu", sample_every=5, checkpoint_every=3)




@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return _write_dataset(tmp_path_factory.mktemp("p2p") / "data")


def _cfg(data: Path, out: Path, **kw) -> dict:
    return {"data": str(data), "out": str(out), **TINY, "steps": 6, **kw}


def train(options: dict) -> Path:
    return tr.train_from_options("pix2pix", options)


def _images(data: Path, **kw) -> TrainingImages:
    from diffinpaint.data import load_dataset

    o = {**TINY, "holes": "dataset", "flip": True, "seed": 0, **kw}
    return TrainingImages(load_dataset(data).samples, o["size"], o["holes"], o["flip"], o["seed"])


def _weights(folder: Path, name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / f"{name}.safetensors"))


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    tr.add_arguments(parser, Pix2PixTraining)
    return parser.parse_args(argv, argparse.Namespace(train_verb="pix2pix"))


# ------------------------------------------------------------------------------------------------ networks


def test_default_parameter_counts_without_allocating():
    n_g, n_d = count_parameters()  # built on the meta device
    assert (n_g, n_d) == (54_414_979, 2_769_729)
    assert round(n_g / 1e6, 1) == 54.4 and round(n_d / 1e6, 2) == 2.77
    # the reference's unet_256 with 3 input channels is 54,413,955: ours adds the mask channel's 64*4*4 weights
    assert n_g - 64 * 4 * 4 == 54_413_955


def test_unet_depth_follows_size_and_shapes():
    assert unet_depth(256) == 8 and unet_depth(128) == 7 and unet_depth(32) == 5
    for bad in (48, 16, 0):
        with pytest.raises(ValueError, match="power of two"):
            unet_depth(bad)
    torch.manual_seed(0)
    g, d = init_weights(build_generator(64, 8)), init_weights(build_discriminator(8))
    x = torch.randn(2, 4, 64, 64)
    y = g(x)
    assert y.shape == (2, 3, 64, 64) and y.abs().max() <= 1.0  # tanh
    assert d(torch.cat([x, y], 1)).shape == (2, 1, 6, 6)  # PatchGAN logit map
    assert sum(isinstance(m, torch.nn.Dropout) for m in build_generator(256, 8).modules()) == 3  # unet_256


def test_generator_input_zeroes_holes_and_appends_mask():
    images = torch.rand(1, 3, 8, 8)
    masks = torch.zeros(1, 1, 8, 8)
    masks[..., 2:5, 3:6] = 1
    x = generator_input(images, masks)
    assert x.shape == (1, 4, 8, 8)
    assert torch.all(x[:, :3][masks.expand(1, 3, 8, 8) > 0] == HOLE_FILL)
    assert torch.allclose(x[:, :3][masks.expand(1, 3, 8, 8) == 0], (images * 2 - 1)[masks.expand(1, 3, 8, 8) == 0])
    assert torch.equal(x[:, 3:], masks)


def test_golden_run_is_unchanged_by_the_trainer_refactor(data, tmp_path):
    """Two small runs made with the code before the one trainer (see make_pix2pix_golden.py): the same losses at
    every step and the same weights (bit-identical on the machine that made them; float noise allowed elsewhere)."""
    golden = json.loads(GOLDEN.read_text())
    for name, run in golden.items():
        final = train(_cfg(data, tmp_path / name, checkpoint_every=3, sample_every=5, **run["options"]))
        log = [json.loads(line) for line in (tmp_path / name / "log.jsonl").read_text().splitlines()]
        assert [r["step"] for r in log] == [r["step"] for r in run["log"]]
        for mine, theirs in zip(log, run["log"]):
            assert mine.keys() == theirs.keys()
            for key in theirs:
                assert mine[key] == pytest.approx(theirs[key], rel=1e-4, abs=1e-6), (name, mine["step"], key)
        for net in ("generator", "discriminator"):
            from safetensors.torch import load_file

            tensors = load_file(str(final / f"{net}.safetensors"))
            assert sorted(tensors) == sorted(run["weights"][net])
            for key, (total, total_abs) in run["weights"][net].items():
                value = tensors[key].double()
                assert float(value.sum()) == pytest.approx(total, rel=1e-4, abs=1e-5), (name, net, key)
                assert float(value.abs().sum()) == pytest.approx(total_abs, rel=1e-4, abs=1e-5), (name, net, key)


def test_lr_schedule_constant_then_linear():
    factors = [tr.lr_factor(s, 10, 0.5) for s in range(10)]
    assert factors[:6] == [1.0] * 6
    assert all(a > b for a, b in zip(factors[5:], factors[6:])) and factors[-1] > 0


# ------------------------------------------------------------------------------------------------ training


def test_losses_finite_and_l1_falls_on_a_fixed_batch(data):
    from accelerate import Accelerator

    images = _images(data)
    batch = [images.example(i, np.random.default_rng(i), False) for i in range(2)]
    cfg, opts = tr.configs_from_options(Pix2PixTraining, {**TINY, "lr": 1e-3})
    model = make_model(Pix2PixTraining, cfg, opts)
    prepare_model(model, Accelerator(cpu=True))
    fixed = Batch(torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch]))
    history = [model.train_step(fixed) for _ in range(30)]
    assert all(math.isfinite(v) for losses in history for v in losses.values())
    first, last = history[0]["G_L1"], np.mean([h["G_L1"] for h in history[-5:]])
    assert last < 0.6 * first, (first, last)


def test_train_writes_checkpoints_samples_and_log(data, tmp_path):
    out = tmp_path / "out"
    final = train(_cfg(data, out, steps=7, keep_checkpoints=2))
    assert final == out / "checkpoints" / "step_000007"
    assert [s for s, _ in checkpoint_dirs(out)] == [6, 7]  # step 3 pruned
    assert sorted(p.name for p in final.iterdir()) == sorted(
        ["config.json", "state.json", "generator.safetensors", "discriminator.safetensors",
         "optimizer_G.safetensors", "optimizer_D.safetensors"])
    assert not list(final.glob("*.pt")) and not list(final.glob("*.pth")) and not list(final.glob("*.bin"))
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step_000005.png", "step_000007.png"]
    grid = Image.open(out / "samples" / "step_000007.png")
    assert grid.size == (3 * 32, 4 * 32)  # masked input | output | target, four rows
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == list(range(1, 8))
    assert all(math.isfinite(entry[k]) for entry in log for k in ("D_real", "D_fake", "G_GAN", "G_L1"))
    state = json.loads((final / "state.json").read_text())
    assert state["step"] == 7 and state["schedulers"]["optimizer_G"]["last_epoch"] == 7
    assert state["model"] == "pix2pix" and json.loads((final / "config.json").read_text())["ngf"] == 8
    record = json.loads((out / "training_set.json").read_text())
    assert record["n_images"] == 5 and len({r["fingerprint"] for r in record["images"]}) == 5


def test_resume_equals_uninterrupted(data, tmp_path):
    whole = train(_cfg(data, tmp_path / "whole", steps=10))
    train(_cfg(data, tmp_path / "parts", steps=10, stop_at=6))
    assert checkpoint_dirs(tmp_path / "parts")[-1][0] == 6
    (tmp_path / "parts" / "checkpoints" / ".tmp-step_000009-123").mkdir()  # as if killed while writing step 9
    parts = train(_cfg(data, tmp_path / "parts", steps=10, resume=True))
    for name in ("generator", "discriminator", "optimizer_G", "optimizer_D"):
        a, b = _weights(whole, name), _weights(parts, name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
    state_a, state_b = (json.loads((p / "state.json").read_text()) for p in (whole, parts))
    assert state_a["schedulers"] == state_b["schedulers"] and state_a["optimizers"] == state_b["optimizers"]
    assert (tmp_path / "whole" / "log.jsonl").read_text() == (tmp_path / "parts" / "log.jsonl").read_text()
    assert not list((tmp_path / "parts" / "checkpoints").glob(".tmp-*"))  # leftovers cleaned on start


def test_data_order_does_not_depend_on_workers(data, tmp_path):
    a = train(_cfg(data, tmp_path / "w0", steps=2, holes="box"))
    b = train(_cfg(data, tmp_path / "w1", steps=2, holes="box", workers=1))
    ga, gb = _weights(a, "generator"), _weights(b, "generator")
    assert all(torch.equal(ga[k], gb[k]) for k in ga)


@pytest.mark.parametrize("holes", ["thin", "thick"])
def test_generated_holes(data, holes):
    images = _images(data, holes=holes)
    image, mask = images[3]
    assert image.shape == (3, 32, 32) and mask.shape == (1, 32, 32)
    assert 0 < mask.mean() < 1 and set(mask.unique().tolist()) <= {0.0, 1.0}
    again_image, again_mask = images[3]
    assert torch.equal(mask, again_mask) and torch.equal(image, again_image)


def test_dataset_holes_from_mask_pngs(tmp_path):
    root = _write_dataset(tmp_path / "pngs", n=2, mask_pngs=True)
    images = _images(root, flip=False)
    image, mask = images.example(0, np.random.default_rng(0), False)  # 48x40 image, hole x 12:30, y 10:24
    assert image.shape == (3, 32, 32)
    expected = torch.zeros(32, 32)
    expected[8:20, 8:20] = 1  # y 10:24 of 40 rows -> 8:19.2, x 12:30 of 48 columns -> 8:20 (covering pixels)
    assert torch.equal(mask[0], expected)


def test_box_holes_scale_with_size(data):
    images = _images(data, size=64, holes="box")
    _, mask = images[0]
    side = round(75 * 64 / 256)
    assert 0 < mask.sum() <= 2 * side * side


def test_nan_loss_stops_with_last_good_checkpoint(data, tmp_path, monkeypatch, capsys):
    real = Pix2PixTraining.train_step
    calls = {"n": 0}

    def flaky(self, batch):
        calls["n"] += 1
        losses = real(self, batch)
        return {**losses, "G_L1": float("nan")} if calls["n"] == 5 else losses

    monkeypatch.setattr(Pix2PixTraining, "train_step", flaky)
    out = tmp_path / "out"
    args = _parse(["--data", str(data), "--out", str(out), "--size", "32", "--ngf", "8", "--ndf", "8",
                   "--batch-size", "2", "--device", "cpu", "--steps", "8", "--checkpoint-every", "3"])
    assert tr.main(args) == 1
    err = capsys.readouterr().err
    assert "not finite at step 5" in err and "step_000003" in err
    assert [s for s, _ in checkpoint_dirs(out)] == [3]
    assert not list((out / "checkpoints").glob(".tmp-*"))


def test_dry_run_prints_config_and_counts(data, tmp_path, capsys):
    out = tmp_path / "never"
    assert tr.main(_parse(["--data", str(data), "--out", str(out), "--dry-run"])) == 0
    text = capsys.readouterr().out
    assert "54,414,979 parameters (54.41 M)" in text and "2,769,729 parameters (2.77 M)" in text
    assert "lambda_l1: 100.0" in text and "unet_256" in text
    assert not out.exists()


def test_cli_train_dry_run(data, tmp_path, capsys):
    from diffinpaint import cli

    code = cli.main(["train", "pix2pix", "--dry-run", "--data", str(data), "--out", str(tmp_path / "o"),
                     "--size", "64", "--ngf", "8"])
    assert code == 0 and "unet_64" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ bad input


def _one_line_value_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_dataset_smaller_than_a_batch(data, tmp_path):
    with pytest.raises(UserError) as excinfo:
        train(_cfg(data, tmp_path / "o", batch_size=6))
    assert "fewer than one batch" in _one_line_value_error(excinfo)
    with pytest.raises(UserError, match="fewer than one batch"):
        tr.main(_parse(["--data", str(data), "--out", str(tmp_path / "o"), "--batch-size", "6", "--dry-run"]))


def test_resume_refusals(data, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(UserError) as excinfo:
        train(_cfg(data, out, resume=True))
    assert "holds no checkpoint" in _one_line_value_error(excinfo)
    train(_cfg(data, out, steps=3, decay_start=0.5))
    with pytest.raises(UserError, match="pass --resume"):
        train(_cfg(data, out, steps=6))  # would overwrite an existing run
    with pytest.raises(UserError) as excinfo:
        train(_cfg(data, out, steps=3, ngf=16, resume=True))
    assert "ngf=8" in _one_line_value_error(excinfo) and "--ngf 8" in str(excinfo.value)
    # a new --steps with a decaying LR would move the schedule under the run: refused, naming the fix
    with pytest.raises(UserError) as excinfo:
        train(_cfg(data, out, steps=6, resume=True))
    assert "--steps 3" in _one_line_value_error(excinfo) and "LR would jump" in str(excinfo.value)
    (out / "checkpoints" / "step_000003" / "optimizer_D.safetensors").unlink()
    with pytest.raises(UserError) as excinfo:
        train(_cfg(data, out, steps=3, stop_at=2, resume=True))
    assert "optimizer_D.safetensors is missing" in _one_line_value_error(excinfo)


def test_resume_with_more_steps_under_a_constant_lr(data, tmp_path):
    whole = train(_cfg(data, tmp_path / "whole", steps=6, decay_start=1.0))
    train(_cfg(data, tmp_path / "parts", steps=4, decay_start=1.0))
    parts = train(_cfg(data, tmp_path / "parts", steps=6, decay_start=1.0, resume=True))
    a, b = _weights(whole, "generator"), _weights(parts, "generator")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_options():
    for argv, match in ((["--size", "100"], "power of two"), (["--steps", "0"], "--steps"),
                        (["--decay-start", "2"], "--decay-start")):
        with pytest.raises(UserError, match=match):
            tr.main(_parse(["--data", "d", "--out", "o", *argv]))


# ------------------------------------------------------------------------------------------------ inference


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "out"
    train(_cfg(data, out, steps=4))
    return out


def _model(checkpoint=None, **settings):
    return build_model("pix2pix", {"checkpoint": None if checkpoint is None else str(checkpoint), **settings})


def test_checkpoint_round_trip(trained):
    folder = resolve_checkpoint(trained, "pix2pix")
    assert folder.name == "step_000004"
    model = _model(trained)
    generator = model.predictor.nets["generator"]
    saved = _weights(folder, "generator")
    assert all(torch.equal(v, saved[k]) for k, v in generator.state_dict().items())
    assert model.step == 4 and not generator.training and len(model.weights_sha256["generator"]) == 64
    # optimiser state: safetensors tensors + JSON, back to an equal state_dict
    tensors = _weights(folder, "optimizer_G")
    meta = json.loads((folder / "state.json").read_text())["optimizers"]["optimizer_G"]
    state = ck.optimizer_from_safetensors(tensors, meta)
    netG = build_generator(32, 8)
    optimizer = torch.optim.Adam(netG.parameters())
    optimizer.load_state_dict(state)
    again, again_meta = ck.optimizer_to_safetensors(optimizer.state_dict())
    assert again.keys() == tensors.keys() and all(torch.equal(again[k], tensors[k]) for k in tensors)
    assert again_meta == meta
    # a half-written checkpoint (temporary folder) is never picked up
    (trained / "checkpoints" / ".tmp-step_000009-1").mkdir()
    assert resolve_checkpoint(trained, "pix2pix") == folder


def test_inference_shape_range_determinism(trained):
    model = _model(trained)
    torch.manual_seed(1)
    images = torch.rand(2, 3, 40, 56)
    masks = torch.zeros(2, 1, 40, 56)
    masks[0, :, 5:20, 10:30] = 1
    masks[1, :, 20:35, 30:50] = 1
    out = model.inpaint(images, masks, seeds=[0, 1], labels=[None, None])
    assert out.shape == images.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, model.inpaint(images, masks, seeds=[5, 6], labels=[None, None]))
    single = model.inpaint(images[1:], masks[1:], seeds=[1], labels=[None])
    assert torch.allclose(single, out[1:], atol=1e-5)  # eval mode: no dependence on the batch
    settings = model.output_settings()
    assert settings["step"] == 4 and settings["checkpoint"].endswith("step_000004") and settings["size"] == 32
    assert settings["generator_sha256"] == sha256_file(resolve_checkpoint(trained, "pix2pix") / "generator.safetensors")
    assert settings["training_set_sha256"] == sha256_file(trained / "training_set.json")


def test_inference_refuses_bad_checkpoints(trained, tmp_path):
    with pytest.raises(UserError, match="--pix2pix-checkpoint"):
        _model()
    pickle = tmp_path / "model.pth"
    torch.save(build_generator(32, 8).state_dict(), pickle)
    for bad, match in ((pickle, "not a pix2pix checkpoint"), (tmp_path / "nowhere", "does not exist"),
                       (tmp_path, "holds no pix2pix checkpoint")):
        with pytest.raises(UserError, match=match) as excinfo:
            _model(bad)
        _one_line_value_error(excinfo)
    # a pickle renamed to .safetensors inside an otherwise valid checkpoint folder
    fake = tmp_path / "fake"
    fake.mkdir()
    source = resolve_checkpoint(trained, "pix2pix")
    for name in ("config.json", "state.json"):
        (fake / name).write_bytes((source / name).read_bytes())
    (fake / "generator.safetensors").write_bytes(pickle.read_bytes())
    with pytest.raises(UserError, match="not a readable safetensors file") as excinfo:
        _model(fake)
    _one_line_value_error(excinfo)
    # weights of another configuration
    from safetensors.torch import save_file

    save_file(build_generator(32, 16).state_dict(), str(fake / "generator.safetensors"))
    with pytest.raises(UserError, match="does not fit the configuration") as excinfo:
        _model(fake)
    _one_line_value_error(excinfo)
    # a checkpoint of another model
    config = json.loads((source / "config.json").read_text())
    (fake / "config.json").write_text(json.dumps({**config, "model": "deepfill"}))
    with pytest.raises(UserError, match="is a deepfill checkpoint, not pix2pix") as excinfo:
        _model(fake)
    _one_line_value_error(excinfo)


def test_checkpoint_flag_lands_on_pix2pix_only():
    from diffinpaint.models import given_options

    parser = argparse.ArgumentParser()
    add_flags(parser, model_class("pix2pix").Settings, "opt.pix2pix.")
    args = parser.parse_args(["--pix2pix-checkpoint", "x", "--pix2pix-norm", "instance"])
    assert given_options(args, ["pix2pix", "telea"]) == {"pix2pix": {"checkpoint": "x", "pix2pix_norm": "instance"},
                                                         "telea": {}}
    assert given(parser.parse_args([]), "opt.pix2pix.") == {}


def test_hole_weight_is_normalised_so_lambda_keeps_its_meaning():
    model = make_model(Pix2PixTraining, tr.configs_from_options(Pix2PixTraining, {})[0], Pix2PixOptions(hole_weight=3.0))
    fake, real = torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2)
    real[..., 0, 0] = 3.0  # error 3 at the hole pixel, 1 elsewhere
    model.mask = torch.zeros(1, 1, 2, 2)
    model.mask[..., 0, 0] = 1
    # weights 3 (hole) and 1 (three known pixels), normalised: (3*3 + 1*1*3) / (3 + 3) per channel
    assert model.criterionL1(fake, real).item() == pytest.approx((3 * 3 + 3 * 1) / 6)
    model.opts = Pix2PixOptions(hole_weight=1.0)
    assert model.criterionL1(fake, real).item() == pytest.approx((3 + 3) / 4)  # the paper's plain mean


def test_instance_norm_at_inference_is_the_reference_test_mode(trained):
    """--pix2pix-norm instance: each image normalised by its own statistics (the reference's test script runs the
    networks in train mode at batch 1), dropout off, batch-independent, running statistics untouched."""
    import copy

    running, instance = _model(trained), _model(trained, pix2pix_norm="instance")
    g = torch.Generator().manual_seed(0)
    images, masks = torch.rand(3, 3, 32, 32, generator=g), torch.zeros(3, 1, 32, 32)
    masks[:, :, 8:20, 6:18] = 1
    generator = instance.predictor.nets["generator"]
    buffers = {k: v.clone() for k, v in generator.state_dict().items()}
    with torch.inference_mode():
        out = instance.inpaint(images, masks, seeds=[0, 1, 2], labels=[None] * 3)
        alone = instance.inpaint(images[1:2], masks[1:2], seeds=[1], labels=[None])
        base = running.inpaint(images, masks, seeds=[0, 1, 2], labels=[None] * 3)
    # by hand: a copy with every batch norm in train mode (dropout stays off), one image at a time
    reference = copy.deepcopy(generator)
    for module in reference.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.train()
    from diffinpaint.models.pix2pix.nets import generator_input

    with torch.no_grad():
        expected = torch.cat([(reference(generator_input(x[None], m[None])) + 1) / 2 for x, m in zip(images, masks)])
    assert torch.allclose(out, expected.clamp(0, 1), atol=1e-5)
    assert torch.allclose(alone[0], out[1], atol=1e-5)
    assert not torch.allclose(out, base, atol=1e-3)  # the running statistics give another fill
    assert all(torch.equal(v, buffers[k]) for k, v in generator.state_dict().items())
    assert not generator.training and instance.output_settings()["pix2pix_norm"] == "instance"
