"""DMFN networks ("Image Fine-grained Inpainting", Hui, Li, Gao, Wang; arXiv 2002.02609), re-stated from the
authors' code (Zheng222/DMFN: models/architecture.py, models/block.py, models/networks.py).

Generator: input [x·(1−m) in [−1, 1] (holes 0), m] (4 channels) -> encoder (5×5 conv, three 3×3 convs, two of
them stride 2: 64×64×4nf at 256) -> n_blocks dense multi-scale fusion blocks (DMFB) -> decoder (3×3 conv, two
[4×4 transposed conv stride 2 + 3×3 conv] stages) -> 3×3 conv -> tanh. Instance norm without affine parameters
(per image: one image's output never depends on the others in its batch).

DMFB, two variants (option `dmfb`):
  released  the block as the authors' code has it (block.py ResBlock_new): 3×3 reduce to C/4, IN, ReLU; four
            parallel 3×3 convs with dilations 1, 2, 4, 8; cumulative sums s1 = d1, s_i = s_{i-1} + d_i; concat,
            IN, ReLU; 3×3 fusion conv; IN; + input. No K_i convolutions. 885,312 parameters at C = 256.
  paper     the block as the paper's Fig. 2 describes it: the same reduce and dilated convs, then the combination
            y1 = x1, y_i = K_i(x_i + y_{i-1}) with K_i a 3×3 conv followed by IN + ReLU; concat, IN, ReLU; 1×1
            fusion conv; IN; + input. 471,808 parameters at C = 256.

Discriminator (architecture.py Discriminator): a global branch, 6 × [5×5 conv stride 2, BatchNorm, LeakyReLU 0.2]
(widths ndf, 2, 4, 8, 8, 8 ×ndf; BatchNorm on every layer, the first included, as the code has it) on the whole
image, and a local branch, 5 × the same layers on the size/2 × size/2 crop around the hole; each flattened into a
Linear to 8·ndf (512), concatenated, LeakyReLU 0.2, Linear to one logit. The local branch's five feature maps
are returned too (discriminator feature matching). The Linear input sizes follow --size (8192 at 256).

At the defaults (size 256, nf 64, ndf 64, 8 released blocks) the generator has 9,037,443 parameters and the
discriminator 36,673,025, the reference's counts.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

IMAGE_CHANNELS = 3
INPUT_CHANNELS = IMAGE_CHANNELS + 1  # masked image + mask
GLOBAL_LAYERS = 6  # stride-2 layers of the discriminator's global branch (on the whole image)
LOCAL_LAYERS = 5  # stride-2 layers of its local branch (on the size/2 crop)
MIN_SIZE = 2 ** GLOBAL_LAYERS  # 64: the global branch halves the image 6 times
DMFB_VARIANTS = ("released", "paper")

# the paper's and the code's defaults; build_network reads the same names from the flat config
DEFAULTS: dict[str, Any] = {"size": 256, "nf": 64, "ndf": 64, "n_blocks": 8, "dmfb": "released"}


def conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    """A conv with 'same' zero padding (the reference pads with ZeroPad2d then convolves without padding: the
    same thing, and the same parameters)."""
    return nn.Conv2d(in_ch, out_ch, kernel, stride, padding=dilation * (kernel - 1) // 2, dilation=dilation)


def instance_norm(channels: int) -> nn.InstanceNorm2d:
    return nn.InstanceNorm2d(channels, affine=False)  # the reference's 'in': no parameters, no running stats


class DMFBReleased(nn.Module):
    """The dense multi-scale fusion block as the authors' code has it (block.py ResBlock_new)."""

    def __init__(self, channels: int):
        super().__init__()
        width = channels // 4
        self.reduce = conv(channels, width, 3)
        self.dilated = nn.ModuleList(conv(width, width, 3, dilation=d) for d in (1, 2, 4, 8))
        self.fuse = conv(channels, channels, 3)
        self.norm_reduce, self.norm_cat, self.norm_out = instance_norm(width), instance_norm(channels), \
            instance_norm(channels)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.norm_reduce(self.reduce(x)))
        # sparse multi-scale features, densified by cumulative addition: s1 = d1, s_i = s_{i-1} + d_i
        sums, total = [], None
        for branch in self.dilated:
            total = branch(h) if total is None else total + branch(h)
            sums.append(total)
        fused = self.fuse(self.act(self.norm_cat(torch.cat(sums, 1))))
        return x + self.norm_out(fused)


class DMFBPaper(nn.Module):
    """The dense multi-scale fusion block as the paper describes it (Fig. 2): y1 = x1, y_i = K_i(x_i + y_{i-1})
    with K_i a 3×3 conv (+ IN + ReLU), then a 1×1 fusion conv (+ IN) and the residual."""

    def __init__(self, channels: int):
        super().__init__()
        width = channels // 4
        self.reduce = conv(channels, width, 3)
        self.dilated = nn.ModuleList(conv(width, width, 3, dilation=d) for d in (1, 2, 4, 8))
        self.combine = nn.ModuleList(conv(width, width, 3) for _ in range(3))  # K_2, K_3, K_4
        self.fuse = conv(channels, channels, 1)
        self.norm_reduce, self.norm_cat, self.norm_out = instance_norm(width), instance_norm(channels), \
            instance_norm(channels)
        self.norm_combine = nn.ModuleList(instance_norm(width) for _ in range(3))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.norm_reduce(self.reduce(x)))
        xs = [branch(h) for branch in self.dilated]
        ys = [xs[0]]
        for x_i, k_i, norm in zip(xs[1:], self.combine, self.norm_combine):
            ys.append(self.act(norm(k_i(x_i + ys[-1]))))
        fused = self.fuse(self.act(self.norm_cat(torch.cat(ys, 1))))
        return x + self.norm_out(fused)


def conv_in_relu(in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(conv(in_ch, out_ch, kernel, stride), instance_norm(out_ch), nn.ReLU())


def up_block(in_ch: int, out_ch: int) -> nn.Sequential:
    """The reference's upconv_block: 4×4 transposed conv stride 2 (exact doubling), IN, ReLU; 3×3 conv, IN, ReLU."""
    return nn.Sequential(nn.ConvTranspose2d(in_ch, out_ch, 4, 2, 1), instance_norm(out_ch), nn.ReLU(),
                         conv_in_relu(out_ch, out_ch, 3))


class Generator(nn.Module):
    """architecture.py InpaintingGenerator: 4-channel input in [−1, 1], image out in [−1, 1] (tanh)."""

    def __init__(self, nf: int = 64, n_blocks: int = 8, dmfb: str = "released"):
        super().__init__()
        if dmfb not in DMFB_VARIANTS:
            raise ValueError(f"dmfb {dmfb!r}; choose from {', '.join(DMFB_VARIANTS)}")
        block = DMFBReleased if dmfb == "released" else DMFBPaper
        self.encoder = nn.Sequential(
            nn.Sequential(conv(INPUT_CHANNELS, nf, 5), nn.ReLU()),  # no norm on the first layer (reference)
            conv_in_relu(nf, 2 * nf, 3, stride=2),  # S/2
            conv_in_relu(2 * nf, 2 * nf, 3),
            conv_in_relu(2 * nf, 4 * nf, 3, stride=2),  # S/4: 64×64×256 at 256
        )
        self.blocks = nn.Sequential(*(block(4 * nf) for _ in range(n_blocks)))
        self.decoder = nn.Sequential(
            conv_in_relu(4 * nf, 4 * nf, 3),
            up_block(4 * nf, 2 * nf),  # S/2
            up_block(2 * nf, nf),  # S
            nn.Sequential(conv(nf, IMAGE_CHANNELS, 3), nn.Tanh()),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.blocks(self.encoder(x)))


def halved(side: int, times: int) -> int:
    """Side of a map after `times` 5×5 stride-2 convs with padding 2: each gives ceil(side / 2)."""
    for _ in range(times):
        side = (side + 1) // 2
    return side


def d_layer(in_ch: int, out_ch: int) -> nn.Sequential:
    # the reference's conv_block(norm='bn', activation='lrelu'): BatchNorm on every layer, the first included
    return nn.Sequential(conv(in_ch, out_ch, 5, stride=2), nn.BatchNorm2d(out_ch), nn.LeakyReLU(0.2))


def d_widths(ndf: int) -> list[int]:
    return [ndf, 2 * ndf, 4 * ndf, 8 * ndf, 8 * ndf, 8 * ndf]


def local_crop_size(size: int) -> int:
    """The local discriminator's crop: 128×128 at 256 (the DMFN box's bounding box), size/2 in general."""
    return size // 2


class Discriminator(nn.Module):
    """architecture.py Discriminator: global + local branches. forward(image, patch) -> (logits N×1, the local
    branch's 5 feature maps)."""

    def __init__(self, size: int = 256, ndf: int = 64):
        super().__init__()
        widths = d_widths(ndf)
        ins = [IMAGE_CHANNELS] + widths[:-1]
        self.global_branch = nn.Sequential(*(d_layer(i, o) for i, o in zip(ins, widths)))
        # kept as separate layers: the generator matches each of their outputs
        self.local_branch = nn.ModuleList(d_layer(i, o) for i, o in zip(ins[:LOCAL_LAYERS], widths[:LOCAL_LAYERS]))
        hidden = 8 * ndf  # 512 in the reference
        g_side = halved(size, GLOBAL_LAYERS)
        l_side = halved(local_crop_size(size), LOCAL_LAYERS)
        self.global_linear = nn.Linear(widths[GLOBAL_LAYERS - 1] * g_side * g_side, hidden)
        self.local_linear = nn.Linear(widths[LOCAL_LAYERS - 1] * l_side * l_side, hidden)
        self.head = nn.Sequential(nn.LeakyReLU(0.2), nn.Linear(2 * hidden, 1))

    def forward(self, image: torch.Tensor, patch: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        features = []
        h = patch
        for layer in self.local_branch:
            h = layer(h)
            features.append(h)
        local = self.local_linear(h.flatten(1))
        whole = self.global_linear(self.global_branch(image).flatten(1))
        return self.head(torch.cat([local, whole], 1)), features


def _option(config: Mapping[str, Any], key: str) -> Any:
    value = config.get(key)
    return DEFAULTS[key] if value is None else value


def build_network(config: Mapping[str, Any], name: str) -> nn.Module:
    """'generator' or 'discriminator' from the flat training config (size, nf, ndf, n_blocks, dmfb)."""
    if name == "generator":
        return Generator(int(_option(config, "nf")), int(_option(config, "n_blocks")), str(_option(config, "dmfb")))
    if name == "discriminator":
        return Discriminator(int(_option(config, "size")), int(_option(config, "ndf")))
    raise ValueError(f"dmfn has no network {name!r}; it has generator and discriminator")


def init_weights(net: nn.Module) -> nn.Module:
    """The reference's weights_init (networks.py), which matches class names containing 'Conv2d' or
    'BatchNorm2d': conv weights ~ N(0, 0.02), biases 0; BatchNorm scale ~ N(1, 0.02), shift 0. Transposed convs
    and Linear layers keep PyTorch's default init, as there ('ConvTranspose2d' does not contain 'Conv2d')."""
    for m in net.modules():
        if type(m) is nn.Conv2d:
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return net


def count_parameters(config: Mapping[str, Any] | None = None) -> dict[str, int]:
    """{'generator': n, 'discriminator': n, 'dmfb': n per block}, built on the meta device (nothing allocated)."""
    config = dict(config or {})
    with torch.device("meta"):
        nets = {name: build_network(config, name) for name in ("generator", "discriminator")}
        block = (DMFBReleased if _option(config, "dmfb") == "released" else DMFBPaper)(4 * int(_option(config, "nf")))
    counts = {name: sum(p.numel() for p in net.parameters()) for name, net in nets.items()}
    counts["dmfb"] = sum(p.numel() for p in block.parameters())
    return counts


# ------------------------------------------------------------------------------- the model's input convention
# One definition for training and inference, so the generator never sees at test time an input prepared
# differently from the ones it was trained on.

def generator_input(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """images N×3×S×S in [0, 1], masks N×1×S×S (1 = hole) -> N×4×S×S: the image in [−1, 1] with its holes set to
    0 (the reference's img·(1 − mask)), then the mask."""
    scaled = images * 2.0 - 1.0
    return torch.cat([scaled * (1.0 - masks), masks], 1)


def composite(generated: torch.Tensor, target: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """m·G + (1 − m)·x: the generator's pixels in the hole, the known ones elsewhere (both in [−1, 1])."""
    return masks * generated + (1.0 - masks) * target
