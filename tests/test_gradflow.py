"""Gradient flow through one training step of every GAN (issue 15, item 6), proven with hooks and autograd on the
step's own tensors, not by reading loss values.

For one `train_step` of each GAN's `tiny` configuration, built as the trainer builds it:
  a) the generator's adversarial term(s) send a non-zero gradient into the generated hole pixels of every image,
     and (for D's score) in the direction that makes D call the fakes more real;
  b) where the model composites (completed = m·fake + (1−m)·real) the known pixels get exactly no gradient from it;
  c) D's parameters get nothing from G's update (their .grad is unchanged by backward_G, their values by G's
     optimiser step), G's parameters nothing from D's update (same), and D's loss has no path into G's output.
RePaint (a diffusion model): its UNet gets gradients and there is no discriminator.
DeepFill v2 and DMFN: one `train_step` equals a plain transcription of the reference's step (reference_steps.py)
on the same weights and batch: the logged losses and both networks' gradients, within float noise.

How (c) and (a) are observed: a StepProbe wraps the model's backward_G / backward_D (to know the phase), its
accelerator's backward (to take autograd.grad of the named adversarial terms just before the real backward, and to
snapshot the other network's .grad around it), its optimisers' step, and puts forward hooks on G (its raw output)
and D (its fake scores). The step itself runs unchanged.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator

import reference_steps as ref
from diffinpaint.models import trainable_class
from diffinpaint.models.trainable import Batch
from diffinpaint.training.setup import make_model, prepare_model


def tiny_model(name: str, **overrides):
    """The model's `tiny` configuration, built through the same function as tests/test_contract.py's dry-run test
    (the trainer's options -> (TrainConfig, Options)), checked and prepared as the trainer does (CPU accelerate)."""
    from diffinpaint.training.trainer import configs_from_options

    model_cls = trainable_class(name)
    cfg, opts = configs_from_options(model_cls, {**model_cls.tiny, **overrides})
    model = make_model(model_cls, cfg, opts)
    model.check()
    prepare_model(model, Accelerator(cpu=True))
    return model


def smooth_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=(size, size), mode="bilinear",
                         align_corners=False)


def box_masks(n: int, size: int) -> torch.Tensor:
    """A different box per image, about a third of the side, away from the borders."""
    masks = torch.zeros(n, 1, size, size)
    for i in range(n):
        top, left = size // 4 + 2 * i, size // 5 + 3 * i
        masks[i, :, top:top + size // 3, left:left + size // 3 + i] = 1
    return masks


# ------------------------------------------------------------------------------------------------- the probe


@dataclass
class GAN:
    adversarial: dict[str, str]  # G's adversarial terms (attribute -> "score": a term on D's score, "features")
    composites: bool  # D judges m·fake + (1−m)·real
    holes: bool = True  # conditional: a mask in the batch (False: the whole output is generated)


GANS = {
    "pix2pix": GAN({"loss_G_GAN": "score"}, composites=False),  # the reference's D judges the raw fake_B
    "deepfill": GAN({"loss_G_gan": "score"}, composites=True),
    "dmfn": GAN({"loss_G_gan": "score", "loss_G_dis_feature": "features"}, composites=True),
    "dcgan": GAN({"loss_G": "score"}, composites=False, holes=False),
    "transgan": GAN({"loss_G_adv": "score"}, composites=True),
}


def _as_tuple(out) -> tuple[torch.Tensor, ...]:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _grads_of(net) -> dict[str, torch.Tensor | None]:
    return {n: None if p.grad is None else p.grad.detach().clone() for n, p in net.named_parameters()}


def _values_of(net) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in net.named_parameters()}


def _changed(before: dict, after: dict) -> list[str]:
    """Names whose tensor differs (None and a tensor of zeros count as the same: no gradient either way)."""
    out = []
    for name in before:
        a, b = before[name], after[name]
        if a is None and b is None:
            continue
        if a is None or b is None:
            if (b if a is None else a).abs().sum() != 0:
                out.append(name)
        elif not torch.equal(a, b):
            out.append(name)
    return out


class StepProbe:
    def __init__(self, model, adversarial: dict[str, str]):
        self.model, self.adversarial = model, adversarial
        self.G, self.D = model.nets["generator"], model.nets["discriminator"]
        self.phase: str | None = None
        self.g_outputs: list[tuple[torch.Tensor, ...]] = []
        self.d_scores: dict[str, list[torch.Tensor]] = {"G": [], "D": []}
        self.adv_grads: dict[str, dict] = {}  # term -> {"outputs": grads w.r.t. G's raw output(s), "score": ...}
        self.d_loss_into_G: list[tuple] = []  # per backward_D: grads of D's loss w.r.t. G's output(s)
        self.grad_leaks: dict[str, list[list[str]]] = {"G": [], "D": []}  # phase -> other net's .grad changed
        self.value_leaks: dict[str, list[list[str]]] = {"optimizer_G": [], "optimizer_D": []}
        self.backwards = {"G": 0, "D": 0}
        self._hooks = [self.G.register_forward_hook(self._on_G), self.D.register_forward_hook(self._on_D)]
        model.backward_G = self._in_phase("G", model.backward_G)
        model.backward_D = self._in_phase("D", model.backward_D)
        self._backward = model.accelerator.backward
        model.accelerator.backward = self._on_backward
        for name, other in (("optimizer_G", self.D), ("optimizer_D", self.G)):
            optimizer = model.optimizers[name]
            optimizer.step = self._guard_step(name, optimizer.step, other)

    def _in_phase(self, phase, method):
        def run(*args, **kwargs):
            self.phase = phase
            try:
                return method(*args, **kwargs)
            finally:
                self.phase = None
        return run

    def _guard_step(self, name, step, other):
        def run(*args, **kwargs):
            before = _values_of(other)
            result = step(*args, **kwargs)
            self.value_leaks[name].append(_changed(before, _values_of(other)))
            return result
        return run

    def _on_G(self, module, inputs, output):
        self.g_outputs.append(_as_tuple(output))

    def _on_D(self, module, inputs, output):
        if self.phase is not None:
            self.d_scores[self.phase].append(_as_tuple(output)[0])

    def _fake_score(self) -> torch.Tensor:
        """D's score of the fakes in backward_G: its first call there that carries a gradient (DMFN also scores the
        real images there, without one); the first call if none does."""
        scores = self.d_scores["G"]
        assert scores, "backward_G never called the discriminator"
        return next((s for s in scores if s.requires_grad), scores[0])

    def _on_backward(self, loss, **kwargs):
        phase = self.phase
        assert phase in ("G", "D"), "accelerator.backward called outside backward_G / backward_D"
        self.backwards[phase] += 1
        outputs = self.g_outputs[-1]
        if phase == "G":
            score = self._fake_score()
            for term_name in self.adversarial:
                term = getattr(self.model, term_name)
                targets = [*outputs, score]
                if term.requires_grad:
                    grads = torch.autograd.grad(term, targets, retain_graph=True, allow_unused=True)
                else:  # the term does not depend on anything trainable: no gradient at all
                    grads = [None] * len(targets)
                grads = [torch.zeros_like(t) if g is None else g for t, g in zip(targets, grads)]
                self.adv_grads[term_name] = {"outputs": grads[:-1], "score": grads[-1]}
        else:
            self.d_loss_into_G.append(torch.autograd.grad(loss, list(outputs), retain_graph=True, allow_unused=True)
                                      if loss.requires_grad else (None,) * len(outputs))
        other = self.D if phase == "G" else self.G
        before = _grads_of(other)
        result = self._backward(loss, **kwargs)
        self.grad_leaks[phase].append(_changed(before, _grads_of(other)))
        return result


def gan_batch(model, spec: GAN) -> Batch:
    n, size = model.cfg.batch_size, model.cfg.size
    masks = box_masks(n, size) if spec.holes else torch.zeros(n, 1, size, size)
    return Batch(smooth_images(n, size, seed=1), masks)


@pytest.fixture(scope="module")
def stepped():
    """name -> (model, probe, batch, logs) after one probed train_step (made on first use)."""
    cache = {}

    def get(name: str):
        if name not in cache:
            spec = GANS[name]
            model = tiny_model(name)
            probe = StepProbe(model, spec.adversarial)
            batch = gan_batch(model, spec)
            torch.manual_seed(0)  # the trainer seeds each step; dropout, latent codes, GP mixing draw from it
            logs = model.train_step(batch)
            cache[name] = (model, probe, batch, logs)
        return cache[name]

    return get


def _region(grad: torch.Tensor, batch: Batch, spec: GAN):
    """(hole, known) boolean maps broadcast to grad's shape (the whole image is 'hole' for unconditional G)."""
    if not spec.holes:
        hole = torch.ones_like(grad, dtype=torch.bool)
    else:
        hole = (batch.masks > 0.5).expand_as(grad)
    return hole, ~hole


# ------------------------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("name", list(GANS))
def test_one_G_and_one_D_backward_per_step(name, stepped):
    _, probe, _, logs = stepped(name)
    assert probe.backwards["G"] == 1 and probe.backwards["D"] >= 1, probe.backwards
    assert len(probe.g_outputs) == 1, "the step should run the generator once"
    assert all(math.isfinite(v) for v in logs.values()), logs


@pytest.mark.parametrize("name", list(GANS))
def test_adversarial_term_sends_gradient_into_every_image_hole(name, stepped):
    """(a) each adversarial term of G reaches G's raw output inside every image's hole, at most hole pixels."""
    _, probe, batch, _ = stepped(name)
    spec = GANS[name]
    assert set(probe.adv_grads) == set(spec.adversarial)
    for term, recorded in probe.adv_grads.items():
        for k, grad in enumerate(recorded["outputs"]):
            hole, _ = _region(grad, batch, spec)
            for i in range(grad.shape[0]):
                g, h = grad[i], hole[i]
                assert bool(torch.isfinite(g).all()), (term, k, i)
                total = g[h].abs().sum().item()
                assert total > 0, f"{name}: {term} sends no gradient into image {i}'s hole (output {k})"
                # per pixel (channels summed): the signal covers the hole, not a stray corner of it
                reached = (g.abs().sum(0) > 0)[h[0]].float().mean().item()
                assert reached > 0.9, f"{name}: {term} reaches only {reached:.0%} of image {i}'s hole pixels"


@pytest.mark.parametrize("name", [n for n, s in GANS.items() if s.composites])
def test_known_pixels_get_no_adversarial_gradient(name, stepped):
    """(b) completed = m·fake + (1−m)·real: the adversarial terms give G's raw output exactly zero gradient outside
    the holes (D sees the real pixels there)."""
    _, probe, batch, _ = stepped(name)
    for term, recorded in probe.adv_grads.items():
        for k, grad in enumerate(recorded["outputs"]):
            _, known = _region(grad, batch, GANS[name])
            assert bool(known.any())
            leaked = grad[known].abs().max().item()
            assert leaked == 0, f"{name}: {term} sends gradient into known pixels (output {k}), max {leaked:.3g}"


@pytest.mark.parametrize("name", list(GANS))
def test_generator_loss_pushes_D_scores_of_fakes_up(name, stepped):
    """(a) the direction: every term on D's score falls when D's score of a fake rises (∂term/∂score < 0): G is
    trained to make D call its fakes real (a swapped or sign-flipped GAN term fails this)."""
    _, probe, _, _ = stepped(name)
    for term, kind in GANS[name].adversarial.items():
        if kind != "score":
            continue
        grad = probe.adv_grads[term]["score"]
        first = grad.flatten()[:8].tolist()
        assert bool((grad < 0).all()), f"{name}: ∂{term}/∂D(fake) not negative everywhere, first values {first}"


@pytest.mark.parametrize("name", list(GANS))
def test_D_gets_nothing_from_G_update(name, stepped):
    """(c) D's .grad is unchanged by backward_G and its weights by G's optimiser step."""
    _, probe, _, _ = stepped(name)
    assert probe.grad_leaks["G"] == [[]], f"{name}: backward_G changed D's gradients: {probe.grad_leaks['G']}"
    assert probe.value_leaks["optimizer_G"] == [[]], f"{name}: G's step moved D: {probe.value_leaks['optimizer_G']}"


@pytest.mark.parametrize("name", list(GANS))
def test_G_gets_nothing_from_D_update(name, stepped):
    """(c) D's loss has no path into G's output; G's .grad is unchanged by backward_D, its weights by D's step."""
    _, probe, _, _ = stepped(name)
    for grads in probe.d_loss_into_G:
        assert all(g is None or g.abs().max().item() == 0 for g in grads), f"{name}: D's loss reaches G's output"
    assert all(leak == [] for leak in probe.grad_leaks["D"]), f"{name}: backward_D changed G's gradients"
    assert all(leak == [] for leak in probe.value_leaks["optimizer_D"]), f"{name}: D's step moved G"
    assert probe.value_leaks["optimizer_D"], "D's optimiser never stepped"


def test_repaint_unet_gets_gradients_and_has_no_discriminator():
    model = tiny_model("repaint")
    assert set(model.nets) == {"unet"} and set(model.optimizers) == {"optimizer"}
    unet = model.nets["unet"]
    before = _values_of(unet)
    torch.manual_seed(0)
    model.train_step(Batch(smooth_images(2, model.cfg.size), torch.zeros(2, 1, model.cfg.size, model.cfg.size)))
    missing = [n for n, p in unet.named_parameters() if p.grad is None]
    assert not missing, f"UNet parameters without a gradient: {missing[:5]}"
    grads = [p.grad for p in unet.parameters()]
    assert all(torch.isfinite(g).all() for g in grads)
    zero = [n for n, p in unet.named_parameters() if torch.count_nonzero(p.grad) == 0]
    assert len(zero) <= 0.05 * len(grads), f"UNet parameters with an all-zero gradient: {zero[:5]}"
    assert len(_changed(before, _values_of(unet))) >= 0.95 * len(grads)


# ------------------------------------------------------------------------------- pinned to the references


def _assert_grads_match(net, reference: dict[str, torch.Tensor], what: str) -> None:
    """Every parameter's .grad equals the reference's within float noise: 1e-5 of the tensor's largest value (and
    1e-4 relative). A tensor whose gradient is below the network's float noise (largest value under 1e-5 of the
    network's largest, e.g. a conv bias followed by InstanceNorm, zero in exact arithmetic) is held to 1e-5 of the
    network's largest value instead: summation order alone moves it by that much."""
    params = dict(net.named_parameters())
    assert set(params) == set(reference), what
    network = max(g.abs().max().item() for g in reference.values())
    assert network > 0, f"{what}: the reference gradient is zero"
    for name, expected in reference.items():
        got = params[name].grad
        assert got is not None, f"{what}: {name} has no gradient"
        scale = max(expected.abs().max().item(), network * (expected.abs().max().item() < 1e-5 * network))
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5 * scale, msg=lambda m: f"{what} {name}: {m}")


def _assert_buffers_match(net, reference_net, what: str) -> None:
    """Spectral-norm vectors, BatchNorm statistics: the same number and order of passes through the network."""
    ours = dict(net.named_buffers())
    for name, expected in reference_net.named_buffers():
        torch.testing.assert_close(ours[name], expected, rtol=1e-4, atol=1e-6, msg=lambda m: f"{what} {name}: {m}")


def _assert_losses_match(logs: dict[str, float], expected: dict[str, float], what: str) -> None:
    assert set(logs) == set(expected), (what, sorted(logs), sorted(expected))
    for key, value in expected.items():
        assert logs[key] == pytest.approx(value, rel=1e-5, abs=1e-6), (what, key, logs[key], value)


def _optimisers_are(model, lr: float, betas: tuple[float, float]) -> None:
    for name in ("optimizer_G", "optimizer_D"):
        group = model.optimizers[name].param_groups[0]
        assert (group["lr"], tuple(group["betas"])) == (lr, betas), (name, group["lr"], group["betas"])


def test_deepfill_step_matches_the_reference_transcription():
    model = tiny_model("deepfill")
    _optimisers_are(model, ref.DEEPFILL_LR, ref.DEEPFILL_BETAS)
    netG, netD = (copy.deepcopy(model.nets[k]) for k in ("generator", "discriminator"))
    size = model.cfg.size
    images, masks = smooth_images(2, size, seed=3), box_masks(2, size)
    masks[1, :, 2:6, 3:size - 3] = 1  # a second, stroke-like hole in one image
    logs = model.train_step(Batch(images, masks))
    expected, grads_G, grads_D = ref.deepfill_v2_step(netG, netD, images, masks,
                                                      gan_loss_alpha=model.opts.gan_weight,
                                                      l1_loss_alpha=model.opts.l1_weight)
    _assert_losses_match(logs, expected, "deepfill")
    _assert_grads_match(model.nets["generator"], grads_G, "deepfill G")
    _assert_grads_match(model.nets["discriminator"], grads_D, "deepfill D")
    _assert_buffers_match(model.nets["discriminator"], netD, "deepfill D")


def _dmfn_holes(size: int) -> tuple[torch.Tensor, list[tuple[int, int, int, int]]]:
    """The reference's regular holes (data/util.py bbox + bbox2mask): a size/2 box, each side shrunk by the same
    amount, and that box as the local discriminator's bbox. One box touches the image border."""
    box = size // 2
    masks = torch.zeros(2, 1, size, size)
    bboxes = [(size // 8, size // 4 + 3, box, box), (size - box, 0, box, box)]
    for i, ((top, left, h, w), (dh, dw)) in enumerate(zip(bboxes, [(2, 4), (3, 0)])):
        masks[i, :, top + dh:top + h - dh, left + dw:left + w - dw] = 1
    return masks, bboxes


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    """A random VGG19 `features` state dict in torchvision's layout (no download)."""
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("gradflow_vgg") / "vgg19_random.pth"
    torch.save(make_layers(cfgs["E"]).state_dict(), path)
    return path


@pytest.mark.parametrize("perceptual", [False, True], ids=["tiny", "perceptual"])
def test_dmfn_step_matches_the_reference_transcription(perceptual, request):
    extra = {"perceptual": True, "vgg_weights": str(request.getfixturevalue("vgg_file"))} if perceptual else {}
    model = tiny_model("dmfn", **extra)
    _optimisers_are(model, ref.DMFN_LR, ref.DMFN_BETAS)
    netG, netD = (copy.deepcopy(model.nets[k]) for k in ("generator", "discriminator"))
    images = smooth_images(2, model.cfg.size, seed=4)
    masks, bboxes = _dmfn_holes(model.cfg.size)
    logs = model.train_step(Batch(images, masks))
    expected, grads_G, grads_D = ref.dmfn_step(netG, netD, images, masks, bboxes, vgg=model.vgg)
    _assert_losses_match(logs, expected, "dmfn")
    _assert_grads_match(model.nets["generator"], grads_G, "dmfn G")
    _assert_grads_match(model.nets["discriminator"], grads_D, "dmfn D")
    _assert_buffers_match(model.nets["discriminator"], netD, "dmfn D")
