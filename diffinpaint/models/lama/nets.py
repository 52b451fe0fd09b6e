"""LaMa's networks (Suvorov et al., "Resolution-robust Large Mask Inpainting with Fourier Convolutions", WACV 2022),
after advimman/lama (configs/training/lama-fourier.yaml, big-lama.yaml, discriminator/pix2pixhd_nlayer.yaml;
saicinpainting/training/modules/ffc.py and pix2pixhd.py).

Generator: the FFC ResNet of LaMa's `ffc_resnet_075` config, taken from spandrel (which builds it from the reference's
code, for ComfyUI and chaiNNer), not written again: input [x·(1−m), m] (4 channels, x in [0, 1]), reflection pad 3 +
7×7 conv, three stride-2 3×3 downsamplings (64 → 128 → 256 → 512 channels), n_blocks FFC residual blocks at 1/8 of the
image (ratio_gin = ratio_gout = 0.75: three quarters of the channels go through the spectral transform — a 1×1 conv on
the real FFT of the whole feature map, which is what gives every layer an image-wide receptive field — no LFU), three
transposed-conv upsamplings, reflection pad 3 + 7×7 conv, sigmoid. BatchNorm everywhere (eval mode at inference:
per image, so a fill never depends on its batch). 9 blocks (LaMa-Fourier) = 27,048,835 parameters, 18 blocks
(big-lama) = 50,975,875. The module is spandrel's FFCResNetGenerator held as `self.model`, so its state dict has
big-lama.safetensors' keys (`model.model.*`): a checkpoint the toolkit trains is the same file format as the
published weights, and the same class runs both.

Discriminator: pix2pixHD's N-layer PatchGAN as LaMa configures it (input 3 channels: D sees the image alone, not the
mask; ndf 64, n_layers 4): 4×4 convs with padding 2, stride 2 for the first four (64, 128, 256, 512; BatchNorm on all
but the first), a stride-1 512 → 512 conv + BatchNorm, then a 1×1-channel 4×4 conv; LeakyReLU 0.2. It returns the
score map and the five intermediate activations (feature matching). Attribute names model0..model5 follow the
reference, so LaMa's own discriminator weights would load. 6,962,369 parameters at ndf 64. No custom init anywhere:
LaMa keeps PyTorch's defaults for both networks.
"""
from __future__ import annotations

import sys
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

GENERATORS = {"fourier": 9, "big": 18}  # --generator -> FFC residual blocks (lama-fourier.yaml, big-lama.yaml)
DOWNSAMPLINGS = 3  # the generator works at 1/8 of the image between its down- and upsamplings
MULTIPLE = 2 ** DOWNSAMPLINGS  # LaMa's evaluation pads every image to a multiple of 8 (pad_out_to_modulo: 8)
# the reflection padding of the FFC blocks needs at least 2×2 at 1/8 scale (spandrel's minimum size, 16)
MIN_SIDE = 2 * MULTIPLE
D_LAYERS = 4  # pix2pixhd_nlayer.yaml: n_layers 4
DEFAULTS: dict[str, Any] = {"generator": "fourier", "n_blocks": 0, "ngf": 64, "ndf": 64}


def ffc_resnet_class() -> type[nn.Module]:
    """spandrel's FFCResNetGenerator (the reference's class; spandrel's public `LaMa` wraps it with 18 blocks fixed,
    so the generator class is taken from the module that defines LaMa). Imported here, not at module load, so
    `diffinpaint --help` does not pay for spandrel."""
    from spandrel.architectures.LaMa import LaMa

    return sys.modules[LaMa.__module__].FFCResNetGenerator


def n_blocks(config: Mapping[str, Any]) -> int:
    """The FFC residual blocks of a config: --n-blocks when set, else the --generator's (fourier 9, big 18)."""
    return int(config.get("n_blocks") or GENERATORS[config.get("generator", "fourier")])


class LaMaGenerator(nn.Module):
    """forward(x: N×4×H×W = [image·(1−mask), mask]) -> N×3×H×W in [0, 1] (sigmoid), H and W multiples of 8."""

    def __init__(self, ngf: int = 64, blocks: int = 9):
        super().__init__()
        self.model = ffc_resnet_class()(4, 3, ngf=ngf, n_downsampling=DOWNSAMPLINGS, n_blocks=blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.model(x)  # FFCResNetGenerator.forward(image, mask) only concatenates them first


class NLayerDiscriminator(nn.Module):
    """pix2pixHD's N-layer discriminator as LaMa has it: forward(x) -> (score map, [five activations])."""

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = D_LAYERS):
        super().__init__()
        self.n_layers = n_layers
        kernel, pad = 4, 2  # the reference's padw = ceil((4 - 1) / 2)
        stages = [[nn.Conv2d(input_nc, ndf, kernel, stride=2, padding=pad), nn.LeakyReLU(0.2, True)]]
        width = ndf
        for _ in range(1, n_layers):  # strided, BatchNorm, widths doubling up to 512
            previous, width = width, min(width * 2, 512)
            stages.append([nn.Conv2d(previous, width, kernel, stride=2, padding=pad), nn.BatchNorm2d(width),
                           nn.LeakyReLU(0.2, True)])
        previous, width = width, min(width * 2, 512)
        stages.append([nn.Conv2d(previous, width, kernel, stride=1, padding=pad), nn.BatchNorm2d(width),
                       nn.LeakyReLU(0.2, True)])
        stages.append([nn.Conv2d(width, 1, kernel, stride=1, padding=pad)])
        for index, stage in enumerate(stages):
            setattr(self, f"model{index}", nn.Sequential(*stage))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        activations = []
        for index in range(self.n_layers + 2):
            x = getattr(self, f"model{index}")(x)
            activations.append(x)
        return activations[-1], activations[:-1]


def build_network(config: Mapping[str, Any], name: str) -> nn.Module:
    """A network from the flat config (config.json of a training run, or what a pretrained file implies)."""
    values = {**DEFAULTS, **config}
    if name == "generator":
        return LaMaGenerator(ngf=int(values["ngf"]), blocks=n_blocks(values))
    if name == "discriminator":
        return NLayerDiscriminator(3, ndf=int(values["ndf"]), n_layers=D_LAYERS)
    raise KeyError(f"lama has no network {name!r}")


def count_parameters(config: Mapping[str, Any]) -> dict[str, int]:
    """Parameter counts without allocating (meta device)."""
    with torch.device("meta"):
        return {name: sum(p.numel() for p in build_network(config, name).parameters())
                for name in ("generator", "discriminator")}


# ------------------------------------------------------------------------------------------------ the input


def generator_input(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """LaMa's input: the image with its holes zeroed, then the mask as a fourth channel (concat_mask: true)."""
    return torch.cat([images * (1.0 - masks), masks], dim=1)


def composite(prediction: torch.Tensor, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """LaMa's `inpainted`: the prediction in the holes, the input elsewhere."""
    return masks * prediction + (1.0 - masks) * images


def padded_side(side: int) -> int:
    """The next multiple of 8 (pad_out_to_modulo: 8), at least 16 (the FFC blocks' reflection padding)."""
    return max(-(-side // MULTIPLE) * MULTIPLE, MIN_SIDE)


def pad_symmetric(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pad N×C×h×w at the bottom and right to height×width the way LaMa's evaluation does (np.pad mode='symmetric':
    the border pixel repeated, then the image mirrored), for image and mask alike."""
    h, w = x.shape[-2:]
    if (h, w) == (height, width):
        return x
    rows = torch.from_numpy(np.pad(np.arange(h), (0, height - h), mode="symmetric")).to(x.device)
    cols = torch.from_numpy(np.pad(np.arange(w), (0, width - w), mode="symmetric")).to(x.device)
    return x.index_select(-2, rows).index_select(-1, cols)
