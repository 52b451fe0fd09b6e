"""Plain-torch transcriptions of the reference training steps that DeepFill v2 and DMFN follow, for
tests/test_gradflow.py to pin one `train_step` against: same weights, same batch, the reference's math written out
again here, without the toolkit's step code (only its networks, which are what the weights mean).

Each function takes copies of the networks (it updates them with Adam, as the reference's step does) and returns
(losses, grads_G, grads_D): the losses under the toolkit's log names, and each network's gradient of its own loss
by parameter name, which is what the toolkit's step leaves in `.grad` after `train_step`.

Where the toolkit departs from its reference on purpose (README, "Differs from the reference, on purpose"), the
transcription follows the toolkit and says so next to the line: those are decisions, not what is being tested.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Grads = dict[str, torch.Tensor]


def _grads(loss: torch.Tensor, net: nn.Module) -> Grads:
    names, params = zip(*[(n, p) for n, p in net.named_parameters() if p.requires_grad])
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return {n: torch.zeros_like(p) if g is None else g for n, p, g in zip(names, params, grads)}


def _adam_step(net: nn.Module, grads: Grads, lr: float, betas: tuple[float, float]) -> None:
    """One Adam step from fresh state (the first step of a run), as the reference's optimiser takes it."""
    params = dict(net.named_parameters())
    for name, grad in grads.items():
        params[name].grad = grad.clone()
    torch.optim.Adam([params[n] for n in grads], lr=lr, betas=betas).step()
    for name in grads:
        params[name].grad = None


# ----------------------------------------------------------------------------------------------- DeepFill v2

# JiahuiYu/generative_inpainting v2.0.0: train.py (one Adam(1e-4, 0.5, 0.999) for G and D; neuralgym's secondary
# trainer takes one D step before every G step) and inpaint_model.py `build_graph_with_losses` (below, the same
# graph once for the D loss and once for the G loss); inpaint.yml: gan 'sngan', gan_with_mask, gan_loss_alpha 1,
# l1_loss_alpha 1, ae_loss True.
DEEPFILL_LR, DEEPFILL_BETAS = 1e-4, (0.5, 0.999)


def deepfill_v2_step(netG: nn.Module, netD: nn.Module, images: torch.Tensor, masks: torch.Tensor, *,
                     gan_loss_alpha: float = 1.0, l1_loss_alpha: float = 1.0):
    """images N×3×H×W in [0, 1], masks N×1×H×W (1 = hole). One D step, then one G step, on this batch.

    Toolkit choices followed here: the D and G steps share one batch and one mask per image (TF dequeues a
    fresh batch for the D step and tiles one mask over the batch)."""

    def build_graph_with_losses(d_net):
        batch_pos = images * 2.0 - 1.0  # batch_data / 127.5 - 1
        batch_incomplete = batch_pos * (1.0 - masks)
        x1, x2 = netG(batch_incomplete, masks)  # build_inpaint_net(xin, mask): it appends [ones, ones*mask] itself
        batch_predicted = x2
        batch_complete = batch_predicted * masks + batch_incomplete * (1.0 - masks)
        losses = {"L1_coarse": l1_loss_alpha * (batch_pos - x1).abs().mean(),
                  "L1_fine": l1_loss_alpha * (batch_pos - x2).abs().mean()}
        losses["ae_loss"] = losses["L1_coarse"] + losses["L1_fine"]
        # gan: real and completed in one pass, the mask appended to both (gan_with_mask)
        batch_pos_neg = torch.cat([batch_pos, batch_complete], 0)
        batch_pos_neg = torch.cat([batch_pos_neg, masks.repeat(2, 1, 1, 1)], 1)
        pos_neg = d_net(batch_pos_neg)
        pos, neg = pos_neg.chunk(2, dim=0)
        # neuralgym gan_hinge_loss
        g_loss = -neg.mean()
        d_loss = 0.5 * F.relu(1.0 - pos).mean() + 0.5 * F.relu(1.0 + neg).mean()
        losses["G_gan"], losses["D"] = g_loss, d_loss
        losses["G"] = gan_loss_alpha * g_loss + losses["ae_loss"]
        return losses

    # the D step: only d_vars are optimised (tf.gradients of d_loss w.r.t. them; G's output is a constant to it)
    d_losses = build_graph_with_losses(netD)
    grads_D = _grads(d_losses["D"], netD)
    _adam_step(netD, grads_D, DEEPFILL_LR, DEEPFILL_BETAS)
    # the G step on the updated D: only g_vars are optimised
    g_losses = build_graph_with_losses(netD)
    grads_G = _grads(g_losses["G"], netG)
    _adam_step(netG, grads_G, DEEPFILL_LR, DEEPFILL_BETAS)
    losses = {"D": d_losses["D"], "G_gan": g_losses["G_gan"], "L1_coarse": g_losses["L1_coarse"],
              "L1_fine": g_losses["L1_fine"], "G": g_losses["G"]}
    return {k: float(v.detach()) for k, v in losses.items()}, grads_G, grads_D


# ------------------------------------------------------------------------------------------------------ DMFN

# Zheng222/DMFN: models/inpainting_model.py `optimize_parameters`, models/loss.py (GANLoss vanilla, MaskedL1Loss,
# center_loss), utils.py (batch_get_centers), configs/celeba-hq-regular_list.yaml (weights, Adam 2e-4 (0.5, 0.999)).
DMFN_LR, DMFN_BETAS = 2e-4, (0.5, 0.999)
PIXEL_W, FEATURE_W, CENTER_W, DIS_FEATURE_W, GAN_W = 1.0, 25.0, 1.0, 5.0, 0.003
VGG_W = [1e3 / n ** 2 for n in (64, 128, 256, 512, 512)]
DIS_W = [1e3 / n ** 2 for n in (64, 128, 256, 512, 512)]


def _bce(logits: torch.Tensor, real: bool) -> torch.Tensor:  # GANLoss('vanilla', 1.0, 0.0)
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, 1.0 if real else 0.0))


def _masked_l1(inp: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # MaskedL1Loss
    mask = mask.expand(-1, inp.size(1), -1, -1)
    return F.l1_loss(inp * mask, target * mask)


def _batch_get_centers(fea: torch.Tensor, epsilon: float = 1e-7) -> torch.Tensor:  # utils.batch_get_centers
    b, c, h, w = fea.shape
    fea_map = fea + epsilon
    k = torch.sum(fea_map, dim=(2, 3), keepdim=True)
    fea_map_pdf = fea_map / k
    # toolkit choice (README): x along the width, y along the height, both evenly on [-1, 1] (the reference's
    # get_coordinate_tensors makes both maps vary along the width, on [-1, 1 - 2/n])
    x_map = torch.linspace(-1.0, 1.0, w).view(1, 1, 1, w).expand(b, c, h, w)
    y_map = torch.linspace(-1.0, 1.0, h).view(1, 1, h, 1).expand(b, c, h, w)
    x_center = torch.sum(fea_map_pdf * x_map, dim=(2, 3), keepdim=True)
    y_center = torch.sum(fea_map_pdf * y_map, dim=(2, 3), keepdim=True)
    return torch.cat((x_center, y_center), dim=3)  # B, C, 1, 2


def _center_loss(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:  # loss.center_loss
    return F.mse_loss(_batch_get_centers(pred), _batch_get_centers(gt))


def _crop_patch(tensor: torch.Tensor, bbox: list[tuple[int, int, int, int]]) -> torch.Tensor:
    """InpaintingModel.crop_patch: each image's (top, left, height, width) box."""
    return torch.stack([t[:, top:top + h, left:left + w] for t, (top, left, h, w) in zip(tensor, bbox)])


def dmfn_step(netG: nn.Module, netD: nn.Module, images: torch.Tensor, masks: torch.Tensor,
              bbox: list[tuple[int, int, int, int]], vgg: nn.Module | None = None):
    """images N×3×H×W in [0, 1], masks N×1×H×W (1 = hole), bbox: each image's local-D box (top, left, h, w), the
    reference's var_bbox. G step first (D frozen), then the D step on the same output. vgg: the feature
    network (relu1_1..relu5_1 of a [−1, 1] image) or None for the toolkit's --no-perceptual.

    Toolkit choices followed here: the networks' call signatures (G takes [input, mask] as one tensor, D takes
    (image, patch)); the VGG's input normalisation is the feature network's own; the alignment grid (above)."""
    target = images * 2.0 - 1.0  # ToTensor + Normalize(0.5, 0.5)
    mask = masks
    var_input = target * (1.0 - mask)  # dataset.py: img_tensor * (1 - mask_tensor)

    # update G (D frozen: only G's parameters are differentiated)
    output = mask * netG(torch.cat([var_input, mask], dim=1)) + (1 - mask) * var_input
    l_g_pix = PIXEL_W * F.l1_loss(output, target)
    l_g_total = l_g_pix
    losses = {"G_pixel": l_g_pix}
    if vgg is not None:
        target_feas = [fea.detach() for fea in vgg(target)]
        output_feas = vgg(output)
        # self-guided regression loss
        error_map = torch.mean(torch.pow(torch.abs(output.detach() - target), 2.0), dim=1, keepdim=True)
        error_map_max_w, _ = torch.max(error_map, dim=3, keepdim=True)
        error_map_max, _ = torch.max(error_map_max_w, dim=2, keepdim=True)
        error_map_normalized = error_map / error_map_max
        vgg_losses = [VGG_W[0] * _masked_l1(output_feas[0], target_feas[0], 1.0 + error_map_normalized)]
        down = F.avg_pool2d(error_map_normalized, kernel_size=2, stride=2)
        vgg_losses.append(VGG_W[1] * _masked_l1(output_feas[1], target_feas[1], 1.0 + down))
        for i, fea in enumerate(output_feas[2:], start=2):
            vgg_losses.append(VGG_W[i] * F.l1_loss(fea, target_feas[i]))
        l_g_fea = FEATURE_W * sum(vgg_losses)
        l_g_center = CENTER_W * _center_loss(output_feas[3], target_feas[3])
        l_g_total = l_g_total + l_g_fea + l_g_center
        losses.update(G_feature=l_g_fea, G_align=l_g_center)

    pred_g_fake, dis_feas_fake = netD(output, _crop_patch(output, bbox))
    pred_g_real, dis_feas_real = netD(target, _crop_patch(target, bbox))
    pred_g_real = pred_g_real.detach()
    l_g_gan = GAN_W * (_bce(pred_g_real - torch.mean(pred_g_fake), False)
                       + _bce(pred_g_fake - torch.mean(pred_g_real), True)) / 2
    l_g_total = l_g_total + l_g_gan
    target_dis_feas = [dis_fea.detach() for dis_fea in dis_feas_real]
    l_g_dis_fea = DIS_FEATURE_W * sum(DIS_W[i] * F.l1_loss(fea, target_dis_feas[i])
                                      for i, fea in enumerate(dis_feas_fake))
    l_g_total = l_g_total + l_g_dis_fea
    losses.update(G_gan=l_g_gan, G_dis_feature=l_g_dis_fea, G_total=l_g_total)
    grads_G = _grads(l_g_total, netG)
    _adam_step(netG, grads_G, DMFN_LR, DMFN_BETAS)

    # update D on the output made before G's update
    pred_d_real, _ = netD(target, _crop_patch(target, bbox))
    pred_d_fake, _ = netD(output.detach(), _crop_patch(output, bbox).detach())
    l_d_real = _bce(pred_d_real - torch.mean(pred_d_fake), True)
    l_d_fake = _bce(pred_d_fake - torch.mean(pred_d_real), False)
    l_d_gan = (l_d_fake + l_d_real) / 2
    grads_D = _grads(l_d_gan, netD)
    _adam_step(netD, grads_D, DMFN_LR, DMFN_BETAS)
    losses.update(D=l_d_gan, D_real_logit=pred_d_real.detach().mean(), D_fake_logit=pred_d_fake.detach().mean())
    return {k: float(v.detach()) for k, v in losses.items()}, grads_G, grads_D
