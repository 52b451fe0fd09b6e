"""DCGAN networks (Radford et al. 2016) as the semantic-inpainting code builds them: the carpedm20/DCGAN-tensorflow
layout that bamos/dcgan-completion.tensorflow (model.py, ops.py) and Yeh et al.'s own code (moodoki/
semantic_image_inpainting) load.

Generator: z (100, uniform in [−1, 1]) -> Linear -> 4×4×(gf·2^(n−1)), BN, ReLU -> n transposed 5×5 stride-2
convs halving the width (BN + ReLU after all but the last) -> 3 channels, tanh. n = log2(size/4): at 64 px the
widths are 512-256-128-64-3 (gf 64).
Discriminator: n 5×5 stride-2 convs 3 -> df -> 2df -> ... -> 4×4×(df·2^(n−1)) (LeakyReLU 0.2; BN after all but
the first) -> Linear to one logit.

Every conv and linear layer has a bias, also before batch norm (TF ops.py adds one to each), and batch norm has a
scale and a shift: that is what gives the reference counts at 64 px, generator 5,135,363 and discriminator
4,316,545. The number of layers follows the size (32 px: 3 up/down layers, 256-128-64; 128 px: 5, 1024-...-64),
where carpedm20's code keeps 4 layers and changes the first feature map instead; the width next to the image is
gf / df at every size. (bamos' model.py itself starts its upsampling with a 512 -> 512 layer: 11.5M parameters;
the 512-256-128-64 widths here are the DCGAN paper's layout at gf 64, as the research notes count it.)

Padding: TF's 'SAME' pads a stride-2 5×5 conv by 1 before and 2 after; PyTorch pads 2 on both sides (the
transposed conv adds output_padding 1). Same shapes, a half-pixel different alignment: irrelevant without the
TF weights.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import nn

IMAGE_CHANNELS = 3
KERNEL = 5  # DCGAN-tensorflow's k_h = k_w = 5
MIN_SIZE, MAX_SIZE = 32, 256


def num_layers(size: int) -> int:
    """Up (generator) and down (discriminator) layers between 4×4 and size×size: log2(size / 4)."""
    if size < MIN_SIZE or size > MAX_SIZE or size & (size - 1):
        raise ValueError(f"size {size} is not a power of two between {MIN_SIZE} and {MAX_SIZE}")
    return int(math.log2(size)) - 2


class Generator(nn.Module):
    def __init__(self, size: int = 64, z_dim: int = 100, gf: int = 64):
        super().__init__()
        n = num_layers(size)
        self.top = gf * 2 ** (n - 1)  # width of the 4×4 map
        self.project = nn.Linear(z_dim, 4 * 4 * self.top)
        self.bn0 = nn.BatchNorm2d(self.top)
        layers: list[nn.Module] = []
        width = self.top
        for _ in range(n - 1):
            layers += [nn.ConvTranspose2d(width, width // 2, KERNEL, stride=2, padding=2, output_padding=1),
                       nn.BatchNorm2d(width // 2), nn.ReLU(True)]
            width //= 2
        layers += [nn.ConvTranspose2d(width, IMAGE_CHANNELS, KERNEL, stride=2, padding=2, output_padding=1),
                   nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z N×z_dim -> images N×3×size×size in [−1, 1]."""
        x = self.project(z).view(z.shape[0], self.top, 4, 4)
        return self.body(torch.relu(self.bn0(x)))


class Discriminator(nn.Module):
    def __init__(self, size: int = 64, df: int = 64):
        super().__init__()
        n = num_layers(size)
        layers: list[nn.Module] = [nn.Conv2d(IMAGE_CHANNELS, df, KERNEL, stride=2, padding=2), nn.LeakyReLU(0.2)]
        width = df
        for _ in range(n - 1):  # batch norm on every layer but the first (DCGAN paper)
            layers += [nn.Conv2d(width, width * 2, KERNEL, stride=2, padding=2), nn.BatchNorm2d(width * 2),
                       nn.LeakyReLU(0.2)]
            width *= 2
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(4 * 4 * width, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images N×3×size×size in [−1, 1] -> logits N×1 (real > 0)."""
        return self.head(self.body(images).flatten(1))


def init_weights(net: nn.Module) -> nn.Module:
    """DCGAN init: conv / linear weights ~ N(0, 0.02), biases 0; batch-norm scale ~ N(1, 0.02), shift 0."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return net


def build_network(config: Mapping[str, Any], name: str) -> nn.Module:
    """The network `name` of a checkpoint, from its flat training config (weights loaded by the caller)."""
    if name == "generator":
        return Generator(int(config["size"]), int(config["z_dim"]), int(config["gf"]))
    if name == "discriminator":
        return Discriminator(int(config["size"]), int(config["df"]))
    raise KeyError(f"dcgan has no network {name!r}")


def count_parameters(size: int = 64, z_dim: int = 100, gf: int = 64, df: int = 64) -> tuple[int, int]:
    """(generator, discriminator) parameter counts, built on the meta device: nothing is allocated."""
    with torch.device("meta"):
        generator, discriminator = Generator(size, z_dim, gf), Discriminator(size, df)
    return (sum(p.numel() for p in generator.parameters()), sum(p.numel() for p in discriminator.parameters()))
