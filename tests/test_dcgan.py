"""DCGAN + semantic inpainting (Yeh et al. 2017): networks, the training step, the test-time latent search and
Poisson blending, bad options. Tiny widths (gf/df 4-8) at 32 px, CPU, no downloads."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from scipy.signal import convolve2d

from diffinpaint.models.dcgan import Predictor, build_network
from diffinpaint.models.dcgan.infer import (DCGANPredictor, DCGANSettings, context_loss, context_weights,
                                            poisson_blend, prior_loss, search_latents)
from diffinpaint.models.dcgan.nets import count_parameters
from diffinpaint.models.dcgan.step import DCGANOptions, DCGANTraining
from diffinpaint.training.config import TrainConfig
from diffinpaint.models.trainable import Batch
from diffinpaint.training.trainer import check_config
from diffinpaint.util.options import validate
from diffinpaint.training.setup import make_model, prepare_model
from diffinpaint.util.errors import UserError

TINY = dict(size=32, z_dim=100, gf=4, df=4)


def _images(n: int, size: int = 32) -> torch.Tensor:
    """Smooth colour ramps, different per image, in [0, 1]."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    return torch.stack([torch.stack([xx * a, yy * (1 - a), (xx + yy) / 2]) for a in torch.linspace(0.1, 1.0, n)])


def _masks(n: int, size: int = 32) -> torch.Tensor:
    """A different box per image; the second one touches the top-left corner."""
    masks = torch.zeros(n, 1, size, size)
    for i in range(n):
        y, x = [(8, 10), (0, 0), (18, 14), (4, 20)][i % 4]
        masks[i, :, y:y + 10, x:x + 12] = 1.0
    return masks


def _trained_model(steps: int = 0, batch: int = 8, seed: int = 0, **opts) -> tuple[DCGANTraining, Batch]:
    cfg = TrainConfig(model="dcgan", size=32, batch_size=batch, lr=2e-4, holes="none", seed=seed)
    model = make_model(DCGANTraining, cfg, DCGANOptions(**{"gf": 8, "df": 8, **opts}))
    model.check()
    prepare_model(model, Accelerator(cpu=True))
    fixed = Batch(_images(batch), torch.zeros(batch, 1, 32, 32))
    for step in range(steps):
        torch.manual_seed(1000 + step)  # as the trainer: torch's RNG re-seeded before every step
        model.train_step(fixed)
    return model, fixed


def _predictor(settings: DCGANSettings, seed: int = 0) -> DCGANPredictor:
    torch.manual_seed(seed)
    # PyTorch's default init: an untrained generator whose output depends on z (DCGAN's N(0, 0.02) barely does)
    nets = {name: build_network(TINY, name).eval() for name in ("generator", "discriminator")}
    return Predictor(TINY, nets, settings, torch.device("cpu"))


# ------------------------------------------------------------------------------------------------ networks


def test_default_parameter_counts_match_the_reference_without_allocating():
    # carpedm20/bamos TF layout at 64 px, gf = df = 64 (research notes §3.1)
    assert count_parameters() == (5_135_363, 4_316_545)
    cfg = TrainConfig(model="dcgan", size=64)
    lines = "\n".join(make_model(DCGANTraining, cfg).describe())
    assert "5,135,363" in lines and "4,316,545" in lines and "512-256-128-64-3" in lines


@pytest.mark.parametrize("size,layers", [(32, 3), (64, 4), (128, 5)])
def test_layers_follow_the_size(size, layers):
    cfg = {"size": size, "z_dim": 100, "gf": 4, "df": 4}
    G, D = build_network(cfg, "generator"), build_network(cfg, "discriminator")
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in G.modules()) == layers
    assert sum(isinstance(m, torch.nn.Conv2d) for m in D.modules()) == layers
    G.eval(), D.eval()
    with torch.no_grad():
        out = G(torch.rand(2, 100) * 2 - 1)
        assert out.shape == (2, 3, size, size) and out.abs().max() <= 1.0
        assert D(out).shape == (2, 1)


# ------------------------------------------------------------------------------------------------ training


def test_step_losses_match_a_hand_computation_on_two_images():
    model, batch = _trained_model(batch=2)
    G0, D0 = copy.deepcopy(model.nets["generator"]), copy.deepcopy(model.nets["discriminator"])
    torch.manual_seed(7)
    logged = model.train_step(batch)
    D1 = copy.deepcopy(model.nets["discriminator"])  # D after its update (the G step does not change it)
    torch.manual_seed(7)
    z = torch.rand(2, 100) * 2 - 1  # the step's only random draw: z ~ U[−1, 1]
    with torch.no_grad():
        fake = G0(z)
        real = batch.images * 2 - 1
        # BCE with logits: −log σ(l) for target 1, −log(1 − σ(l)) for target 0
        d_real = -torch.log(torch.sigmoid(D0(real))).mean()
        d_fake = -torch.log(1 - torch.sigmoid(D0(fake))).mean()
        g = -torch.log(torch.sigmoid(D1(fake))).mean()
    assert logged["D_real"] == pytest.approx(d_real.item(), rel=1e-5)
    assert logged["D_fake"] == pytest.approx(d_fake.item(), rel=1e-5)
    assert logged["G"] == pytest.approx(g.item(), rel=1e-5)


def test_gan_learns_the_discriminator_separates_real_from_fake():
    model, batch = _trained_model(steps=30)
    G, D = model.nets["generator"], model.nets["discriminator"]
    torch.manual_seed(3)
    z = torch.rand(8, 100) * 2 - 1
    with torch.no_grad():
        for mode in ("train", "eval"):  # batch statistics as in training, and running statistics
            G.train(mode == "train"), D.train(mode == "train")
            real, fake = D(batch.images * 2 - 1), D(G(z))
            assert real.mean() > fake.mean() + 1.0, mode
    torch.manual_seed(0)
    samples = model.sample(batch)
    assert samples.shape == (8, 3, 32, 32) and 0 <= samples.min() and samples.max() <= 1


# ------------------------------------------------------------------------------------------------ the search


def test_context_weights_are_the_hole_fraction_around_known_pixels():
    mask = np.zeros((9, 11), np.float32)
    mask[0:2, 0:3] = 1  # touches the corner: the symmetric border matters
    mask[5:7, 6:8] = 1
    expected = np.zeros_like(mask)
    for y in range(9):
        for x in range(11):
            if mask[y, x]:
                continue  # hole pixels weigh 0
            holes = 0
            for dy in range(-3, 4):
                for dx in range(-3, 4):
                    # 'symmetric' border: index −1 is 0, −2 is 1, 9 is 8, ...
                    yy, xx = y + dy, x + dx
                    yy = -yy - 1 if yy < 0 else (2 * 9 - yy - 1 if yy >= 9 else yy)
                    xx = -xx - 1 if xx < 0 else (2 * 11 - xx - 1 if xx >= 11 else xx)
                    holes += mask[yy, xx]
            expected[y, x] = holes / 49
    weights = context_weights(torch.from_numpy(mask)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(weights, expected, atol=1e-6)
    # moodoki's createWeightedMask (M = known): M · conv2d(1 − M, box/49, 'same', 'symm')
    known = 1 - mask
    np.testing.assert_allclose(weights, known * convolve2d(1 - known, np.ones((7, 7)) / 49, mode="same",
                                                           boundary="symm"), atol=1e-6)
    assert weights[3, 3] > 0 and weights[8, 0] == 0  # near a hole vs more than 3 px from any


def test_context_and_prior_losses_by_hand():
    fake, target = torch.rand(2, 3, 8, 8) * 2 - 1, torch.rand(2, 3, 8, 8) * 2 - 1
    weights = torch.rand(2, 1, 8, 8)
    expected = [sum(abs(weights[i, 0, y, x] * (fake[i, c, y, x] - target[i, c, y, x]))
                    for c in range(3) for y in range(8) for x in range(8)) for i in range(2)]
    torch.testing.assert_close(context_loss(fake, target, weights), torch.stack(expected), rtol=1e-5, atol=1e-5)
    logits = torch.tensor([[-2.0], [0.5]])
    torch.testing.assert_close(prior_loss(logits), torch.log(1 - torch.sigmoid(logits)).flatten())


def test_latent_search_lowers_the_context_loss_of_every_image_and_leaves_the_networks_alone():
    predictor = _predictor(DCGANSettings())
    G, D = predictor.nets["generator"], predictor.nets["discriminator"]
    before = {k: v.clone() for k, v in {**G.state_dict(), **{f"D.{k}": v for k, v in D.state_dict().items()}}.items()}
    # targets the generator can reach: its own images at hidden codes; the search starts elsewhere
    torch.manual_seed(1)
    masks = _masks(4)
    with torch.no_grad():
        target = G(torch.rand(4, 100) * 2 - 1)
    weights, hole = context_weights(masks), masks.expand_as(target)
    z0 = predictor.start_codes([11, 12, 13, 14])[::4]  # the first start of each image
    with torch.no_grad():  # the search must switch gradients back on itself
        z = search_latents(G, D, target, weights, z0, iterations=40, lr=0.01, prior_weight=0.003)
        start, end = context_loss(G(z0), target, weights), context_loss(G(z), target, weights)
        hole_start = ((G(z0) - target).abs() * hole).flatten(1).sum(1)
        hole_end = ((G(z) - target).abs() * hole).flatten(1).sum(1)
    assert (end < 0.7 * start).all(), (start, end)
    assert (hole_end < hole_start).all(), (hole_start, hole_end)  # matching the context recovers the hole
    assert z.abs().max() <= 1.0  # clipped to the prior's support
    after = {**G.state_dict(), **{f"D.{k}": v for k, v in D.state_dict().items()}}
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics included: eval mode
    assert all(p.requires_grad for p in [*G.parameters(), *D.parameters()])  # flags restored


def test_more_restarts_never_lose_and_the_best_one_wins():
    images, masks = _images(2), _masks(2)
    one = _predictor(DCGANSettings(iterations=10, restarts=1, blend="none"))
    three = _predictor(DCGANSettings(iterations=10, restarts=3, blend="none"))
    # the first start of each image is the same in both (rows drawn in order from the image's seed)
    torch.testing.assert_close(three.start_codes([5, 6]).view(2, 3, -1)[:, 0], one.start_codes([5, 6]))
    weights, target = context_weights(masks), images * 2 - 1
    loss_one = context_loss(one.predict(images, masks, [5, 6]) * 2 - 1, target, weights)
    loss_three = context_loss(three.predict(images, masks, [5, 6]) * 2 - 1, target, weights)
    assert (loss_three <= loss_one + 1e-4).all()


@pytest.mark.parametrize("blend,restarts", [("none", 2), ("poisson", 2), ("none", 24)])
def test_predictor_is_deterministic_and_batch_independent(blend, restarts):
    # restarts 24: 2 images per 64-row chunk, so the batch of 3 spans two chunks
    predictor = _predictor(DCGANSettings(iterations=15, restarts=restarts, blend=blend))
    predictor.check()
    images, masks, seeds = _images(3), _masks(3), [101, 102, 103]
    with torch.no_grad():  # as the runner calls it (needs_grad: never inference_mode)
        batch = predictor.predict(images, masks, seeds)
        again = predictor.predict(images, masks, seeds)
        alone = predictor.predict(images[1:2], masks[1:2], seeds[1:2])
    assert batch.shape == (3, 3, 32, 32) and batch.min() >= 0 and batch.max() <= 1
    torch.testing.assert_close(batch, again, rtol=0, atol=0)
    # bitwise: the search always runs on chunks of the same shape (infer.py CHUNK_ROWS)
    torch.testing.assert_close(alone[0], batch[1], rtol=0, atol=0)
    other_seed = predictor.predict(images[1:2], masks[1:2], [999])
    assert not torch.allclose(other_seed, alone)  # the seed picks the starting codes
    if blend == "poisson":  # known pixels are the input's (the runner composites anyway)
        known = (1 - masks).bool().expand_as(images)
        torch.testing.assert_close(batch[known], images[known])


def test_poisson_blend_removes_a_colour_offset_also_at_the_border():
    yy, xx = np.mgrid[0:32, 0:32]
    image = np.stack([xx / 40 + 0.1, yy / 40 + 0.05, (xx + yy) / 80 + 0.2], -1)
    for box in [(10, 20, 8, 22), (0, 12, 0, 9), (20, 32, 25, 32), (0, 32, 0, 5)]:
        hole = np.zeros((32, 32), bool)
        hole[box[0]:box[1], box[2]:box[3]] = True
        fill = image + 0.2  # right gradients, wrong colour
        out = poisson_blend(image, fill, hole)
        np.testing.assert_allclose(out, image, atol=1e-9, err_msg=str(box))
    assert np.array_equal(poisson_blend(image, image + 0.2, np.ones((32, 32), bool)), image + 0.2)


# ------------------------------------------------------------------------------------------------ bad input


def test_bad_options_raise_user_errors_naming_the_fix():
    for size in (48, 16):
        model = make_model(DCGANTraining, TrainConfig(model="dcgan", size=size))
        with pytest.raises(UserError, match="power of two") as err:
            model.check()
        assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="--z-dim"):  # ranges come from the declaration, checked by the trainer
        model = make_model(DCGANTraining, TrainConfig(size=64), DCGANOptions(z_dim=0))
        check_config(model.cfg, model)
    for settings, flag in [(DCGANSettings(iterations=0), "--dcgan-iterations"),
                           (DCGANSettings(restarts=0), "--dcgan-restarts"),
                           (DCGANSettings(blend="alpha"), "--dcgan-blend")]:
        with pytest.raises(UserError, match=flag) as err:
            validate(settings)  # what models/trained.py does before building the predictor
        assert "\n" not in str(err.value)
    assert DCGANTraining.hole_choices == ("none",) and Predictor.needs_grad
    assert Predictor.networks == ("generator", "discriminator")
