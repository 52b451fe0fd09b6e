"""RePaint on a DDPM the toolkit trains: the UNet, the DDPM training step, RePaint sampling (models/repaint).

Everything runs on the CPU with tiny UNets (widths 8,16, 32 px); the default network is only built on the meta
device to count its parameters.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator

from diffinpaint.models.repaint import Predictor, build_network
from diffinpaint.models.repaint.infer import (RePaintPredictor, RePaintSettings, check_diffusers_version,
                                              known_region, make_scheduler, repaint, repaint_step, unet_evaluations)
from diffinpaint.models.repaint.nets import attention_resolution, block_types, count_parameters
from diffinpaint.models.repaint.step import RePaintOptions, RePaintTraining, epsilon_loss
from diffinpaint.training.config import TrainConfig
from diffinpaint.models.trainable import Batch
from diffinpaint.training.setup import make_model, prepare_model
from diffinpaint.util.errors import UserError
from diffinpaint.util.options import add_flags, build, given, validate
from diffinpaint.training import trainer as tr

TINY = RePaintOptions(block_channels="8,16", layers_per_block=1, norm_groups=4)
SIZE = 32


def flat_config(opts: RePaintOptions = TINY, size: int = SIZE) -> dict:
    """What config.json holds: the shared options + the model's options + its name."""
    return {**asdict(TrainConfig(model="repaint", size=size)), **asdict(opts), "model": "repaint"}


def tiny_unet(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network(flat_config(), "unet").eval()


def smooth_images(n: int, seed: int, size: int = SIZE) -> torch.Tensor:
    """Blurry random images in [0, 1] (upsampled 4×4 noise): easy for a tiny UNet to learn."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=size, mode="bilinear", align_corners=False)


def hole_masks(n: int, size: int = SIZE) -> torch.Tensor:
    """A different square hole per image (1 = hole)."""
    masks = torch.zeros(n, 1, size, size)
    for i in range(n):
        masks[i, :, 4 + 2 * i: 16 + 2 * i, 8: 20 + i] = 1.0
    return masks


def predictor(settings: RePaintSettings, net: torch.nn.Module | None = None) -> RePaintPredictor:
    p = Predictor(flat_config(), {"unet_ema": net if net is not None else tiny_unet()}, settings, torch.device("cpu"))
    p.check()
    return p


def alphas_cumprod_by_hand(steps: int = 1000) -> torch.Tensor:
    """The DDPM paper's linear schedule: β from 1e-4 to 0.02, ᾱ_t = Π (1 − β_s)."""
    betas = torch.linspace(1e-4, 0.02, steps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


# ---------------------------------------------------------------------------------------------- networks


def test_default_unet_matches_the_research_count():
    config = flat_config(RePaintOptions(), size=64)
    with torch.device("meta"):
        unet = build_network(config, "unet")
    # seed-models.md §0.4 / §5.3: 25.3M for widths 64-128-256-256 at 64 px (diffusers example layout)
    assert count_parameters(unet) == 25_304_963
    assert unet.config.down_block_types == ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D")
    assert unet.config.up_block_types == ("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D")
    assert attention_resolution(config) == 16  # the DDPM paper's attention resolution
    # the 256 px layout the docs recommend: seed-models.md's 28.4M, attention again at 16 px
    config256 = flat_config(RePaintOptions(block_channels="64,64,128,128,256,256"), size=256)
    with torch.device("meta"):
        assert count_parameters(build_network(config256, "unet")) == 28_447_235
    assert attention_resolution(config256) == 16
    # the diffusers example's own 6-level layout puts attention at the same level
    assert block_types(6)[0][4] == "AttnDownBlock2D" and block_types(6)[1][1] == "AttnUpBlock2D"
    model = make_model(RePaintTraining, TrainConfig(model="repaint", size=64), RePaintOptions())
    lines = "\n".join(model.describe())
    assert "64-128-256-256" in lines and "attention at 16x16" in lines and "2,410 UNet evaluations" in lines


def test_tiny_unet_output_shape():
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        out = tiny_unet()(x, torch.tensor([3, 500])).sample
    assert out.shape == (2, 3, SIZE, SIZE) and torch.isfinite(out).all()


# ---------------------------------------------------------------------------------------------- training


def make_trained_model(lr: float = 1e-4) -> RePaintTraining:
    cfg = TrainConfig(model="repaint", size=SIZE, lr=lr, batch_size=2, holes="none", seed=0)
    model = make_model(RePaintTraining, cfg, TINY)
    model.check()
    prepare_model(model, Accelerator(cpu=True))
    return model


def test_defaults_and_options():
    assert RePaintTraining.defaults["size"] == 64 and RePaintTraining.defaults["lr"] == 1e-4
    assert RePaintTraining.defaults["holes"] == "none" and RePaintTraining.defaults["decay_start"] == 1.0
    assert RePaintTraining.hole_choices == ("none",) and RePaintTraining.ema == {"unet": 0.9999}
    parser = argparse.ArgumentParser()
    tr.add_arguments(parser, RePaintTraining)
    base = ["--data", "d", "--out", "o"]
    assert tr.configs_from_options(RePaintTraining, vars(parser.parse_args(base)))[1] == RePaintOptions()
    args = parser.parse_args([*base, "--block-channels", "8,16", "--layers-per-block", "1", "--norm-groups", "4",
                              "--train-timesteps", "500", "--beta-schedule", "squaredcos_cap_v2"])
    assert tr.configs_from_options(RePaintTraining, vars(args))[1] == \
        RePaintOptions("8,16", 1, 4, 500, "squaredcos_cap_v2")
    model = make_trained_model()
    opt = model.optimizers["optimizer"]
    group = opt.param_groups[0]
    assert isinstance(opt.optimizer, torch.optim.AdamW)
    assert group["betas"] == (0.95, 0.999) and group["weight_decay"] == 1e-6 and group["lr"] == 1e-4


def test_epsilon_loss_by_hand():
    """train_step's loss = mean (ε − ε_θ(√ᾱ_t·x0 + √(1−ᾱ_t)·ε, t))², with ε and t drawn from torch's global RNG."""
    model = make_trained_model()
    unet = model.nets["unet"]
    images = smooth_images(2, seed=3)
    torch.manual_seed(7)  # what the trainer does before each step
    noise, t = torch.randn(2, 3, SIZE, SIZE), torch.randint(0, 1000, (2,))
    abar = alphas_cumprod_by_hand()[t].float().view(2, 1, 1, 1)
    x0 = images * 2 - 1
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    with torch.no_grad():
        expected = ((noise - unet(x_t, t).sample) ** 2).mean().item()
        assert epsilon_loss(unet, model.noise_scheduler(), x0, noise, t).item() == pytest.approx(expected, rel=1e-5)
    torch.manual_seed(7)
    losses = model.train_step(Batch(images, torch.zeros(2, 1, SIZE, SIZE)))
    assert set(losses) == {"loss"} and losses["loss"].ndim == 0 and not losses["loss"].requires_grad
    assert losses["loss"] == pytest.approx(expected, rel=1e-5)  # same draws, the weights before the update


def test_it_learns_a_fixed_batch():
    """40 steps on one batch: the ε-MSE on a fixed (ε, t) draw falls well below the untrained network's (≈1)."""
    model = make_trained_model(lr=3e-3)
    batch = Batch(smooth_images(4, seed=1), torch.zeros(4, 1, SIZE, SIZE))
    x0 = batch.images * 2 - 1
    g = torch.Generator().manual_seed(11)
    noise, t = torch.randn(x0.shape, generator=g), torch.randint(0, 1000, (16,), generator=g)
    x0_eval, noise_eval = x0.repeat(4, 1, 1, 1), torch.cat([noise] + [torch.randn(x0.shape, generator=g)
                                                                      for _ in range(3)])

    def held_loss() -> float:
        with torch.no_grad():
            return epsilon_loss(model.nets["unet"], model.noise_scheduler(), x0_eval, noise_eval, t).item()

    before = held_loss()
    losses = []
    for step in range(40):
        torch.manual_seed(1000 + step)
        losses.append(model.train_step(batch)["loss"])
    after = held_loss()
    assert 0.7 < before < 1.5  # ε-MSE of an untrained network starts near 1
    assert after < 0.6 * before, (before, after)
    assert sum(losses[-5:]) / 5 < 0.6 * losses[0], losses


def test_sample_grid_is_unconditional_images():
    model = make_trained_model()
    model.nets["unet"].eval()
    torch.manual_seed(0)
    out = model.sample(Batch(smooth_images(3, seed=0), torch.zeros(3, 1, SIZE, SIZE)))
    assert out.shape == (3, 3, SIZE, SIZE) and out.min() >= 0 and out.max() <= 1
    torch.manual_seed(0)
    assert torch.equal(out, model.sample(Batch(smooth_images(3, seed=5), torch.zeros(3, 1, SIZE, SIZE))))


def test_training_options_refused():
    cases = [(TINY, 31, "multiple of 2"), (RePaintOptions("8,x"), 32, "comma-separated"),
             (RePaintOptions("8"), 32, "at least two"), (RePaintOptions("8,16", 1, 5), 32, "--norm-groups"),
             (RePaintOptions("8,16", 0, 4), 32, "--layers-per-block"),
             (RePaintOptions("8,16", 1, 4, 1000, "cosine"), 32, "--beta-schedule"),
             (RePaintOptions("8,16", 1, 4, 1), 32, "--train-timesteps")]
    for opts, size, words in cases:
        model = make_model(RePaintTraining, TrainConfig(model="repaint", size=size), opts)
        with pytest.raises(UserError, match=words) as err:
            model.check()
        assert "\n" not in str(err.value)
    # 64,128,256,256 needs a multiple of 8: 96 is fine, 100 is not
    make_model(RePaintTraining, TrainConfig(size=96), RePaintOptions()).check()
    with pytest.raises(UserError, match="--size 100 does not fit a UNet with 4 levels: it must be a multiple of 8"):
        make_model(RePaintTraining, TrainConfig(size=100), RePaintOptions()).check()


# ---------------------------------------------------------------------------------------------- RePaint


def test_repaint_step_keeps_the_known_trajectory():
    """One scheduler step with our masks (1 = hole): known pixels = √ᾱ_prev·x0 + √(1−ᾱ_prev)·ε for the ε drawn
    from each image's own generator; hole pixels = the DDIM/DDPM step from the model's ε (eta 1)."""
    scheduler = make_scheduler(flat_config(), RePaintSettings(repaint_steps=10, jump_length=2, jump_n_sample=2))
    t, t_prev = 500, 400  # 1000 // 10 apart
    abar = alphas_cumprod_by_hand()
    a_t, a_prev = abar[t].item(), abar[t_prev].item()
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 3, SIZE, SIZE, generator=g) * 2 - 1
    sample, eps = torch.randn(2, 3, SIZE, SIZE, generator=g), torch.randn(2, 3, SIZE, SIZE, generator=g)
    holes = hole_masks(2)
    seeds = [123, 456]
    out = repaint_step(scheduler, eps, t, sample, x0, holes, [torch.Generator().manual_seed(s) for s in seeds])
    noise = torch.cat([torch.randn((1, 3, SIZE, SIZE), generator=torch.Generator().manual_seed(s)) for s in seeds])
    known = a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * noise
    x0_pred = ((sample - (1 - a_t) ** 0.5 * eps) / a_t ** 0.5).clamp(-1, 1)
    var = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
    unknown = a_prev ** 0.5 * x0_pred + (1 - a_prev - var) ** 0.5 * eps + var ** 0.5 * noise
    keep = holes.expand_as(x0) == 0
    assert torch.allclose(out[keep], known[keep], atol=1e-5)
    assert torch.allclose(out[~keep], unknown[~keep], atol=1e-5)
    assert torch.equal(known_region(holes), 1 - holes)


def test_version_check():
    for bad in ("0.32.0", "0.32.2", "0.31.0", "0.33.0.dev0", "not-a-version"):
        with pytest.raises(UserError, match=r"pip install 'diffusers>=0\.33'") as err:
            check_diffusers_version(bad)
        assert "\n" not in str(err.value)
    for good in ("0.33.0", "0.33.1", "0.42.1", "1.0.0"):
        check_diffusers_version(good)


def test_unet_evaluations_follow_the_jump_schedule():
    """steps 10, jump 2, n_sample 2: 10 reverse steps + 4 jump points × 1 extra visit × 2 steps = 18 UNet calls."""
    calls = []

    class Counting(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x, t):
            calls.append(t)
            return self.net(x, t)

    settings = RePaintSettings(repaint_steps=10, jump_length=2, jump_n_sample=2)
    p = predictor(settings, Counting(tiny_unet()))
    p.predict(smooth_images(1, 0), hole_masks(1), [0])
    timesteps = make_scheduler(flat_config(), settings).timesteps.tolist()
    assert len(calls) == unet_evaluations(timesteps) == 18
    assert len(timesteps) - len(calls) == 8  # the noise-only undo steps
    assert calls[:5] == [900, 800, 700, 600, 700]  # 9, 8, 7, 6, then the jump back up to 8 and down again
    # the paper's 250 / 10 / 10: 250 + 24 jump points × 9 × 10 = 2,410 (seed-models.md §5.1)
    assert unet_evaluations(make_scheduler(flat_config(), RePaintSettings()).timesteps.tolist()) == 2410
    fewer = make_scheduler(flat_config(), RePaintSettings(repaint_steps=10, jump_length=2, jump_n_sample=1))
    assert unet_evaluations(fewer.timesteps.tolist()) == 10  # no resampling: one call per step


def test_predictor_known_region_determinism_and_batch_independence():
    settings = RePaintSettings(repaint_steps=6, jump_length=2, jump_n_sample=2)
    p = predictor(settings)
    assert p.networks == ("unet_ema",)
    images, masks, seeds = smooth_images(3, seed=2), hole_masks(3), [11, 22, 33]
    out = p.predict(images, masks, seeds)
    assert out.shape == (3, 3, SIZE, SIZE) and out.min() >= 0 and out.max() <= 1
    # the last step (ᾱ_prev = 1) puts the original back in the known region
    keep = masks.expand_as(images) == 0
    assert torch.allclose(out[keep], images[keep], atol=1e-5)
    # the hole is the model's (an untrained UNet's output is nothing like the image)
    assert (out[~keep] - images[~keep]).abs().mean() > 0.05
    assert torch.equal(out, p.predict(images, masks, seeds))  # deterministic per seed
    for i in range(3):
        alone = p.predict(images[i:i + 1], masks[i:i + 1], seeds[i:i + 1])
        assert torch.allclose(alone[0], out[i], atol=1e-5)
    other = p.predict(images[:1], masks[:1], [12])
    assert not torch.allclose(other[0][~keep[0]], out[0][~keep[0]], atol=1e-3)  # another seed, another fill
    assert p.resolved_outputs() == {"network": "unet_ema"}  # the settings themselves: from their declaration


def test_eta_changes_the_fill():
    """--repaint-eta 0 (DDIM steps) runs and fills the hole differently from eta 1 (DDPM-like) for the same seed."""
    images, masks = smooth_images(1, seed=4), hole_masks(1)
    ddim = predictor(RePaintSettings(repaint_steps=5, jump_length=10, jump_n_sample=1, eta=0.0)).predict(
        images, masks, [5])
    ddpm = predictor(RePaintSettings(repaint_steps=5, jump_length=10, jump_n_sample=1, eta=1.0)).predict(
        images, masks, [5])
    hole = masks.expand_as(images) == 1
    assert not torch.allclose(ddim[hole], ddpm[hole], atol=1e-3)


def test_inference_settings_refused():
    parser = argparse.ArgumentParser()
    add_flags(parser, RePaintSettings)
    assert given(parser.parse_args([])) == {}  # nothing typed: the declared defaults stay in force
    args = parser.parse_args(["--repaint-steps", "50", "--repaint-jump-length", "5", "--repaint-jump-n-sample", "3",
                              "--repaint-eta", "0"])
    assert build(RePaintSettings, given(args)) == RePaintSettings(50, 5, 3, 0.0)
    net = tiny_unet()
    cases = [(RePaintSettings(repaint_steps=0), "--repaint-steps 0"),
             (RePaintSettings(jump_length=0), "--repaint-jump-length"),
             (RePaintSettings(jump_n_sample=0), "--repaint-jump-n-sample"), (RePaintSettings(eta=1.5), "--repaint-eta"),
             (RePaintSettings(repaint_steps=2000), "exceeds the 1000 timesteps")]
    for settings, words in cases:
        p = Predictor(flat_config(), {"unet_ema": net}, settings, torch.device("cpu"))
        with pytest.raises(UserError, match=words) as err:
            validate(settings)  # ranges: from the declaration (models/trained.py validates before building)
            p.check()  # what depends on the checkpoint
        assert "\n" not in str(err.value)
    # a checkpoint trained with fewer timesteps refuses the default 250 steps with the fix in the message
    short = Predictor({**flat_config(), "train_timesteps": 100}, {"unet_ema": net}, RePaintSettings(),
                      torch.device("cpu"))
    with pytest.raises(UserError, match="pass --repaint-steps 100 or fewer"):
        short.check()


def test_repaint_loop_checks_generators():
    scheduler = make_scheduler(flat_config(), RePaintSettings(repaint_steps=2, jump_n_sample=1))
    with pytest.raises(ValueError, match="2 generators for 1 images"):
        repaint(lambda x, t: x, scheduler, torch.zeros(1, 3, 8, 8), torch.zeros(1, 1, 8, 8),
                [torch.Generator(), torch.Generator()])
