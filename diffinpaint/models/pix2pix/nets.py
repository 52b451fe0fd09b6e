"""Pix2Pix networks (Isola et al. 2017), re-stated from the reference implementation
(junyanz/pytorch-CycleGAN-and-pix2pix, models/networks.py): UnetGenerator built from nested
UnetSkipConnectionBlocks, the PatchGAN NLayerDiscriminator, and `init_weights` with N(0, 0.02).

For inpainting the generator sees 4 channels (masked image in [-1, 1] + mask, 1 = hole) and predicts the RGB
image (tanh, [-1, 1]); the discriminator is conditioned on that input, so it sees 4 + 3 = 7 channels.

With the defaults (size 256 -> 8 down levels = unet_256, ngf 64, ndf 64, 3 strided layers = 70x70 PatchGAN)
the generator has 54,414,979 parameters and the discriminator 2,769,729: the reference's 54,413,955 (3 channels
in) and 2,768,705 (6 channels in) plus one input channel's first-layer weights each.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from ...util.errors import UserError

IMAGE_CHANNELS = 3
INPUT_CHANNELS = IMAGE_CHANNELS + 1  # masked image + mask
MIN_SIZE = 32  # the U-Net has at least 5 levels (reference: num_downs - 5 intermediate blocks >= 0)


def unet_depth(size: int) -> int:
    """Number of down levels for a square input of `size` px: log2(size) (unet_128 = 7, unet_256 = 8), so the
    innermost feature map is 1x1 as in the reference."""
    if size < MIN_SIZE or size & (size - 1):
        raise UserError(f"--size {size} is not supported; pass a power of two >= {MIN_SIZE} (e.g. 64, 128, 256)")
    return int(math.log2(size))


class UnetSkipConnectionBlock(nn.Module):
    """One U-Net level: x -> [down -> submodule -> up] concatenated with x (except the outermost level).

    The down path starts with an in-place LeakyReLU, exactly as in the reference; it also rewrites x, so the
    skip connection carries LeakyReLU(x). Kept on purpose: it is what the published models were trained with.
    """

    def __init__(self, outer_nc: int, inner_nc: int, input_nc: int | None = None, submodule: nn.Module | None = None,
                 outermost: bool = False, innermost: bool = False, use_dropout: bool = False):
        super().__init__()
        self.outermost = outermost
        use_bias = False  # batch norm follows every inner conv, so a bias would be redundant (reference)
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
        downrelu = nn.LeakyReLU(0.2, True)
        downnorm = nn.BatchNorm2d(inner_nc)
        uprelu = nn.ReLU(True)
        upnorm = nn.BatchNorm2d(outer_nc)

        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            model = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            model = [downrelu, downconv, uprelu, upconv, upnorm]
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            model = [downrelu, downconv, downnorm, submodule, uprelu, upconv, upnorm]
            if use_dropout:
                model += [nn.Dropout(0.5)]
        self.model = nn.Sequential(*model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """The reference U-Net: built from the innermost level outwards; the num_downs - 5 levels with ngf*8
    channels next to the bottleneck carry dropout 0.5 (pix2pix's default, i.e. without --no_dropout)."""

    def __init__(self, input_nc: int, output_nc: int, num_downs: int, ngf: int = 64, use_dropout: bool = True):
        super().__init__()
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, innermost=True)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block, use_dropout=use_dropout)
        block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, submodule=block)
        block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, submodule=block)
        block = UnetSkipConnectionBlock(ngf, ngf * 2, submodule=block)
        self.model = UnetSkipConnectionBlock(output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class NLayerDiscriminator(nn.Module):
    """PatchGAN: n_layers strided 4x4 convs, one stride-1 conv, then a 1-channel logit map. n_layers = 3 gives
    each output logit a 70x70 receptive field."""

    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        kw, padw, use_bias = 4, 1, False
        sequence: list[nn.Module] = [nn.Conv2d(input_nc, ndf, kernel_size=kw, stride=2, padding=padw),
                                     nn.LeakyReLU(0.2, True)]
        nf_mult = 1
        for n in range(1, n_layers):
            nf_mult_prev, nf_mult = nf_mult, min(2 ** n, 8)
            sequence += [nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=kw, stride=2, padding=padw,
                                   bias=use_bias),
                         nn.BatchNorm2d(ndf * nf_mult), nn.LeakyReLU(0.2, True)]
        nf_mult_prev, nf_mult = nf_mult, min(2 ** n_layers, 8)
        sequence += [nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=kw, stride=1, padding=padw,
                               bias=use_bias),
                     nn.BatchNorm2d(ndf * nf_mult), nn.LeakyReLU(0.2, True)]
        sequence += [nn.Conv2d(ndf * nf_mult, 1, kernel_size=kw, stride=1, padding=padw)]
        self.model = nn.Sequential(*sequence)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def init_weights(net: nn.Module, gain: float = 0.02) -> nn.Module:
    """The reference's 'normal' init: conv weights ~ N(0, gain), biases 0; batch-norm scale ~ N(1, gain)."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0.0)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.constant_(m.bias, 0.0)
    return net


def build_generator(size: int = 256, ngf: int = 64, use_dropout: bool = True) -> UnetGenerator:
    return UnetGenerator(INPUT_CHANNELS, IMAGE_CHANNELS, unet_depth(size), ngf=ngf, use_dropout=use_dropout)


def build_discriminator(ndf: int = 64, n_layers: int = 3) -> NLayerDiscriminator:
    return NLayerDiscriminator(INPUT_CHANNELS + IMAGE_CHANNELS, ndf=ndf, n_layers=n_layers)


def count_parameters(size: int = 256, ngf: int = 64, ndf: int = 64, n_layers: int = 3) -> tuple[int, int]:
    """(generator, discriminator) parameter counts, built on the meta device: no memory is allocated."""
    with torch.device("meta"):
        generator = build_generator(size, ngf)
        discriminator = build_discriminator(ndf, n_layers)
    return (sum(p.numel() for p in generator.parameters()), sum(p.numel() for p in discriminator.parameters()))


# ------------------------------------------------------------------------------- the model's input convention
# One definition, used by training and inference alike, so the generator never sees at test time an input
# prepared differently from the ones it was trained on.

HOLE_FILL = 0.0  # hole pixels in the generator input, in the [-1, 1] image range: mid-grey


def generator_input(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """images N×3×S×S in [0, 1], masks N×1×S×S (1 = hole) -> N×4×S×S: the image in [-1, 1] with its holes set to
    HOLE_FILL, then the mask."""
    scaled = images * 2.0 - 1.0
    return torch.cat([scaled * (1.0 - masks) + HOLE_FILL * masks, masks], 1)


def build_network(config, name: str) -> nn.Module:
    """The network `name` of a checkpoint, from its flat training config (weights loaded by the caller)."""
    if name == "generator":
        return build_generator(int(config["size"]), int(config["ngf"]), bool(config["dropout"]))
    if name == "discriminator":
        return build_discriminator(int(config["ndf"]), int(config["n_layers_d"]))
    raise KeyError(f"pix2pix has no network {name!r}")
