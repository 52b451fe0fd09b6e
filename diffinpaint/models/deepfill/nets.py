"""DeepFill v2 networks (Yu et al., "Free-Form Image Inpainting with Gated Convolution", ICCV 2019).

Re-stated from the official TF code (JiahuiYu/generative_inpainting v2.0.0, inpaint_model.py + inpaint_ops.py),
checked against the PyTorch port nipponjo/deepfillv2-pytorch (model/networks.py), which loads the TF weights.

Generator (`cnum` 48 as the reference's `cnum`: the width of the first convolution BEFORE gating):
  input  5 channels: the image in [-1, 1] with its holes set to 0, a channel of ones, the mask (1 = hole)
  stage 1 (coarse): gated convs, two stride-2 downsamplings, dilations 2/4/8/16, two nearest-×2 upsamplings, tanh
  stage 2 (refine): input x1·m + x·(1−m) (3 channels); a dilated conv branch and an attention branch (contextual
                    attention, or `attention="self"`: a masked self-attention block in its place), concatenated,
                    decoded like stage 1, tanh
  returns (x1, x2), both N×3×S×S in [-1, 1]
Discriminator (SN-PatchGAN): RGB + mask, six 5×5 stride-2 spectrally normalised convs 64-128-256-256-256-256 with
  LeakyReLU 0.2; the flattened feature map is the logits (4096 per image at 256 px).

Parameter counts at the defaults: generator 4,052,478 (stage 1 1,631,151, stage 2 2,421,327), discriminator
5,946,816 (both as counted from nipponjo's port; the paper says ≈4.1M for G).

Initialisation is the TF default the reference trains with: Glorot-uniform kernels, zero biases (done in the
constructors, so `build_network` returns an initialised network).

Deliberate differences from the TF code (none changes a parameter count):
- convolutions pad symmetrically (PyTorch style, as nipponjo's port); TF 'SAME' pads stride-2 convs unevenly;
- nearest resampling is the plain ×2 / ÷2 kind; neuralgym's `resize` uses align_corners=True, which duplicates
  and drops slightly irregular rows;
- contextual attention takes each image's own mask (TF: one mask per batch, only the first is read), and finds
  the hole at the matching resolution by max-pooling (any hole pixel in a cell makes it a hole) instead of
  nearest sampling, so no background patch that overlaps the hole is ever copied, whatever the mask.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

IMAGE_CHANNELS = 3
GENERATOR_INPUT_CHANNELS = 5  # masked image, ones, mask
DISCRIMINATOR_INPUT_CHANNELS = 4  # image, mask (inpaint.yml gan_with_mask: True)
DISCRIMINATOR_WIDTHS = (64, 128, 256, 256, 256, 256)
ATTENTION_CHOICES = ("contextual", "self")
SIZE_MULTIPLE = 8  # two stride-2 convolutions, then contextual attention matches at half that resolution


# ----------------------------------------------------------------------------------------------- building blocks


class GatedConv2d(nn.Module):
    """`gen_conv`: one convolution to 2·out channels, split into features and gates: ELU(a)·σ(b) (ReLU(a)·σ(b)
    where the reference asks for ReLU). activation=None: the output layer, a plain convolution with no gate."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, dilation: int = 1,
                 activation: str | None = "elu"):
        super().__init__()
        self.gated = activation is not None
        self.activation = {"elu": F.elu, "relu": F.relu, None: None}[activation]
        self.conv = nn.Conv2d(in_ch, 2 * out_ch if self.gated else out_ch, kernel, stride=stride,
                              padding=dilation * (kernel - 1) // 2, dilation=dilation)
        nn.init.xavier_uniform_(self.conv.weight)  # TF's glorot_uniform over the whole (features + gates) kernel
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if not self.gated:
            return x
        features, gates = x.chunk(2, dim=1)
        return self.activation(features) * torch.sigmoid(gates)


class GatedUpConv2d(nn.Module):
    """`gen_deconv`: nearest-neighbour ×2 upsampling, then a 3×3 gated convolution."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = GatedConv2d(in_ch, out_ch, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


def gated_stack(layers: list[tuple]) -> nn.Sequential:
    """Layers from a table of (name, in, out, kernel, stride, dilation[, activation]); kernel "up" = ×2 upsampling
    followed by a 3×3 gated conv. Names are the reference's, so a checkpoint reads like inpaint_model.py."""
    modules = OrderedDict()
    for name, in_ch, out_ch, kernel, stride, dilation, *activation in layers:
        if kernel == "up":
            modules[name] = GatedUpConv2d(in_ch, out_ch)
        else:
            modules[name] = GatedConv2d(in_ch, out_ch, kernel, stride, dilation, *activation)
    return nn.Sequential(modules)


# ------------------------------------------------------------------------------------------ contextual attention


def _flat_shift_sum(scores: torch.Tensor) -> torch.Tensor:
    """The reference's 3×3 identity-kernel 'fuse' convolution on the N×Lf×Lb score matrix: each score becomes the
    sum of itself and its two diagonal neighbours, (p−1, q−1) and (p+1, q+1), with zeros beyond the ends. Foreground
    p and background q move one step together, so a match is rewarded when the neighbouring patches match too.
    Indices are flattened row-major, so a step off the end of a row wraps to the next one (as in the reference)."""
    fused = scores.clone()
    fused[:, 1:, 1:] += scores[:, :-1, :-1]
    fused[:, :-1, :-1] += scores[:, 1:, 1:]
    return fused


def contextual_attention(f: torch.Tensor, b: torch.Tensor, mask: torch.Tensor, softmax_scale: float = 10.0,
                         fuse: bool = True, return_attention: bool = False):
    """Contextual attention (`contextual_attention(f, b, mask, ksize=3, stride=1, rate=2)` in inpaint_ops.py).

    f, b:  N×C×H×W foreground (queries) and background (what is copied); H, W even. The generator passes f = b.
    mask:  N×1×h×w, 1 = hole, at any resolution that is a multiple of H/2 (the image's, normally).
    Returns N×C×H×W (and the N×(H/2·W/2)×(H/2·W/2) attention weights, foreground × background, if asked).

    1. Both maps are sampled at rate 2 (every other pixel); every 3×3 background patch there is L2-normalised,
       so a foreground patch's score against it is its projection on the patch's direction (cosine up to |f|).
    2. Scores are fused along both axes (`_flat_shift_sum`, then again on column-major indices).
    3. Background patches touching the hole get score 0 before a softmax of scale 10 and weight 0 after it: their
       share of the softmax mass is dropped, so each row of weights sums to at most 1 (as in the reference).
    4. The output is rebuilt from the full-resolution 4×4 background patches (stride 2): a transposed
       convolution of the weights with those patches, divided by the 4 patches covering each pixel.
    Each image is computed on its own (batched matrix products), so the result does not depend on the batch.
    """
    n, c, height, width = b.shape
    h2, w2 = height // 2, width // 2
    # computed in fp32 even under autocast: fused scores reach ±90 before the softmax
    with torch.autocast(device_type=f.device.type, enabled=False):
        f, b = f.float(), b.float()
        # full-resolution 4×4 patches at stride 2, one per matching position: what gets pasted
        raw_patches = F.unfold(b, kernel_size=4, stride=2, padding=1)  # N × C·16 × Lb
        # matching at rate 2: 3×3 patches of the subsampled maps
        f_cols = F.unfold(f[:, :, ::2, ::2], kernel_size=3, padding=1)  # N × C·9 × Lf
        b_cols = F.unfold(b[:, :, ::2, ::2], kernel_size=3, padding=1)  # N × C·9 × Lb
        b_cols = b_cols / b_cols.norm(dim=1, keepdim=True).clamp_min(1e-4)
        scores = f_cols.transpose(1, 2) @ b_cols  # N × Lf × Lb

        if fuse:
            scores = _flat_shift_sum(scores)  # neighbours along rows
            by_columns = scores.view(n, h2, w2, h2, w2).permute(0, 2, 1, 4, 3).reshape(n, h2 * w2, h2 * w2)
            scores = _flat_shift_sum(by_columns)  # neighbours along columns
            scores = scores.view(n, w2, h2, w2, h2).permute(0, 2, 1, 4, 3).reshape(n, h2 * w2, h2 * w2)

        # a background patch is usable when none of its 3×3 cells holds a hole pixel (outside the map = known)
        cell = (mask.shape[-2] // h2, mask.shape[-1] // w2)
        hole_cells = F.max_pool2d(mask.float(), kernel_size=cell)  # N × 1 × h2 × w2
        touches_hole = F.max_pool2d(hole_cells, kernel_size=3, stride=1, padding=1).flatten(1) > 0  # N × Lb
        usable = (~touches_hole).float().unsqueeze(1)  # N × 1 × Lb

        attention = torch.softmax(scores * usable * softmax_scale, dim=2) * usable
        pasted = raw_patches @ attention.transpose(1, 2)  # N × C·16 × Lf
        out = F.fold(pasted, (height, width), kernel_size=4, stride=2, padding=1) / 4.0
    return (out, attention) if return_attention else out


class ContextualAttention(nn.Module):
    """Contextual attention as a module (no parameters): called as in the reference, on (x, x, mask)."""

    def __init__(self, softmax_scale: float = 10.0):
        super().__init__()
        self.softmax_scale = softmax_scale

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return contextual_attention(x, x, mask, softmax_scale=self.softmax_scale)


class MaskedSelfAttention(nn.Module):
    """A SAGAN/BigGAN self-attention block whose keys never come from the hole (seed-models.md §1.7).

    1×1 projections: query and key to C/8, value to C/2, output back to C (no biases, as BigGAN). Keys and values
    are max-pooled ×2 (the resolution contextual attention matches at, 1,024 keys at 256 px). A key cell holding
    any hole pixel is masked out of the softmax, so the block only copies from known context; if every key is
    masked the block adds nothing. Output x + γ·o with γ = 0 at init: the block starts as the identity.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.query = nn.Conv2d(channels, channels // 8, 1, bias=False)
        self.key = nn.Conv2d(channels, channels // 8, 1, bias=False)
        self.value = nn.Conv2d(channels, channels // 2, 1, bias=False)
        self.out = nn.Conv2d(channels // 2, channels, 1, bias=False)
        for conv in (self.query, self.key, self.value, self.out):
            nn.init.xavier_uniform_(conv.weight)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, return_attention: bool = False):
        n, c, height, width = x.shape
        query = self.query(x).flatten(2)  # N × C/8 × L
        key = F.max_pool2d(self.key(x), 2).flatten(2)  # N × C/8 × L/4
        value = F.max_pool2d(self.value(x), 2).flatten(2)  # N × C/2 × L/4
        cell = (mask.shape[-2] // (height // 2), mask.shape[-1] // (width // 2))
        hole = F.max_pool2d(mask.float(), kernel_size=cell).flatten(1) > 0  # N × L/4 key cells holding a hole
        logits = query.transpose(1, 2) @ key  # N × L × L/4
        logits = logits.masked_fill(hole.unsqueeze(1), torch.finfo(logits.dtype).min)
        # zeroing after the softmax too makes an all-hole row give 0 instead of a uniform average of hole values
        attention = torch.softmax(logits, dim=2) * (~hole).unsqueeze(1).to(logits.dtype)
        o = (value @ attention.transpose(1, 2)).view(n, c // 2, height, width)
        out = x + self.gamma * self.out(o)
        return (out, attention) if return_attention else out


# ---------------------------------------------------------------------------------------------------- generator


class CoarseNet(nn.Module):
    """Stage 1 (`conv1` ... `conv17` in inpaint_model.py). Widths after gating: cnum/2 ... 2·cnum ... cnum/4."""

    def __init__(self, cnum: int):
        super().__init__()
        c1, c2, c4 = cnum // 2, cnum, 2 * cnum
        self.layers = gated_stack([
            ("conv1", GENERATOR_INPUT_CHANNELS, c1, 5, 1, 1),
            ("conv2_downsample", c1, c2, 3, 2, 1),
            ("conv3", c2, c2, 3, 1, 1),
            ("conv4_downsample", c2, c4, 3, 2, 1),
            ("conv5", c4, c4, 3, 1, 1),
            ("conv6", c4, c4, 3, 1, 1),
            ("conv7_atrous", c4, c4, 3, 1, 2),
            ("conv8_atrous", c4, c4, 3, 1, 4),
            ("conv9_atrous", c4, c4, 3, 1, 8),
            ("conv10_atrous", c4, c4, 3, 1, 16),
            ("conv11", c4, c4, 3, 1, 1),
            ("conv12", c4, c4, 3, 1, 1),
            ("conv13_upsample", c4, c2, "up", 1, 1),
            ("conv14", c2, c2, 3, 1, 1),
            ("conv15_upsample", c2, c1, "up", 1, 1),
            ("conv16", c1, cnum // 4, 3, 1, 1),
            ("conv17", cnum // 4, IMAGE_CHANNELS, 3, 1, 1, None),
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.layers(x))


class RefineNet(nn.Module):
    """Stage 2: a dilated conv branch ('hallucination') and an attention branch, concatenated and decoded."""

    def __init__(self, cnum: int, attention: str = "contextual"):
        super().__init__()
        c1, c2, c4 = cnum // 2, cnum, 2 * cnum
        self.conv_branch = gated_stack([
            ("xconv1", IMAGE_CHANNELS, c1, 5, 1, 1),
            ("xconv2_downsample", c1, c1, 3, 2, 1),
            ("xconv3", c1, c2, 3, 1, 1),
            ("xconv4_downsample", c2, c2, 3, 2, 1),
            ("xconv5", c2, c4, 3, 1, 1),
            ("xconv6", c4, c4, 3, 1, 1),
            ("xconv7_atrous", c4, c4, 3, 1, 2),
            ("xconv8_atrous", c4, c4, 3, 1, 4),
            ("xconv9_atrous", c4, c4, 3, 1, 8),
            ("xconv10_atrous", c4, c4, 3, 1, 16),
        ])
        self.attention_encoder = gated_stack([
            ("pmconv1", IMAGE_CHANNELS, c1, 5, 1, 1),
            ("pmconv2_downsample", c1, c1, 3, 2, 1),
            ("pmconv3", c1, c2, 3, 1, 1),
            ("pmconv4_downsample", c2, c4, 3, 2, 1),
            ("pmconv5", c4, c4, 3, 1, 1),
            ("pmconv6", c4, c4, 3, 1, 1, "relu"),  # ReLU here, as the reference: attention scores see ≥ 0 features
        ])
        self.attention = ContextualAttention() if attention == "contextual" else MaskedSelfAttention(c4)
        self.attention_decoder = gated_stack([
            ("pmconv9", c4, c4, 3, 1, 1),
            ("pmconv10", c4, c4, 3, 1, 1),
        ])
        self.merge = gated_stack([
            ("allconv11", 2 * c4, c4, 3, 1, 1),
            ("allconv12", c4, c4, 3, 1, 1),
            ("allconv13_upsample", c4, c2, "up", 1, 1),
            ("allconv14", c2, c2, 3, 1, 1),
            ("allconv15_upsample", c2, c1, "up", 1, 1),
            ("allconv16", c1, cnum // 4, 3, 1, 1),
            ("allconv17", cnum // 4, IMAGE_CHANNELS, 3, 1, 1, None),
        ])

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hallucinated = self.conv_branch(x)
        attended = self.attention_decoder(self.attention(self.attention_encoder(x), mask))
        return torch.tanh(self.merge(torch.cat([hallucinated, attended], dim=1)))


class DeepFillGenerator(nn.Module):
    """The two-stage generator. forward(masked, mask): masked = the image in [-1, 1] with its holes at 0
    (x·(1−m)), mask N×1×S×S (1 = hole). Returns (x1, x2): the coarse and the refined image, in [-1, 1]."""

    def __init__(self, cnum: int = 48, attention: str = "contextual"):
        super().__init__()
        self.coarse = CoarseNet(cnum)
        self.refine = RefineNet(cnum, attention)

    def forward(self, masked: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ones = torch.ones_like(mask)  # the reference's placeholder for a user sketch channel
        x1 = self.coarse(torch.cat([masked, ones, ones * mask], dim=1))
        # stage 2 starts from the input with its hole pasted over by the coarse result
        x2 = self.refine(x1 * mask + masked * (1.0 - mask), mask)
        return x1, x2


# ------------------------------------------------------------------------------------------------ discriminator


class SNPatchGAN(nn.Module):
    """`build_sn_patch_gan_discriminator`: six [5×5 stride-2 spectral-norm conv, LeakyReLU 0.2], flattened.

    Spectral norm is torch's parametrization (one power iteration per training forward, like neuralgym's); its
    u and v vectors are buffers, so they are in the state_dict and a resumed run continues bit-exactly."""

    def __init__(self, in_ch: int = DISCRIMINATOR_INPUT_CHANNELS, widths: tuple[int, ...] = DISCRIMINATOR_WIDTHS):
        super().__init__()
        layers: list[nn.Module] = []
        for out_ch in widths:
            conv = nn.Conv2d(in_ch, out_ch, 5, stride=2, padding=2)
            nn.init.xavier_uniform_(conv.weight)  # TF default, before the spectral norm reads it
            nn.init.zeros_(conv.bias)
            layers += [spectral_norm(conv), nn.LeakyReLU(0.2)]
            in_ch = out_ch
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).flatten(1)


# --------------------------------------------------------------------------------------------------- the API


def generator_input(images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """images N×3×S×S in [0, 1], masks N×1×S×S (1 = hole) -> (x·(1−m) with x in [-1, 1], m): what the generator
    takes, the same in training and inference."""
    masks = (masks > 0.5).to(images.dtype)
    return (images * 2.0 - 1.0) * (1.0 - masks), masks


def build_network(config: Mapping[str, Any], name: str) -> nn.Module:
    """The network `name` of a checkpoint, from its flat training config (weights loaded by the caller)."""
    if name == "generator":
        return DeepFillGenerator(int(config.get("cnum", 48)), str(config.get("attention", "contextual")))
    if name == "discriminator":
        return SNPatchGAN()
    raise KeyError(f"deepfill has no network {name!r}")


def count_parameters(cnum: int = 48, attention: str = "contextual") -> dict[str, int]:
    """Parameter counts, built on the meta device (nothing allocated): generator, its two stages, discriminator."""
    def n(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    with torch.device("meta"):
        generator = DeepFillGenerator(cnum, attention)
        discriminator = SNPatchGAN()
    return {"generator": n(generator), "stage1": n(generator.coarse), "stage2": n(generator.refine),
            "discriminator": n(discriminator)}
