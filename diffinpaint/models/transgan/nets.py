"""A conditional TransGAN for inpainting: TransGAN's generator and multi-scale discriminator (Jiang, Chang, Wang,
NeurIPS 2021; VITA-Group/TransGAN models_search/ViT_custom_rp.py and ViT_custom_scale2_rp_noise.py, CIFAR-10
config exps/cifar_train.py), with the generator's input changed from a latent code to the masked image.

Generator (size 32, dim 1024, depth 5,4,2):
    [image·(1−m) in [−1, 1], m] -> conv k = s = 4 (patch embedding) -> 8×8 tokens × 1024, + learned position
    embedding -> 5 blocks -> PixelShuffle(2) -> 16×16 × 256, + pos -> 4 blocks -> PixelShuffle(2) -> 32×32 × 64,
    + pos -> 2 blocks -> 1×1 conv -> 3 channels.
  The reference's first layer is Linear(latent 256 -> 8·8·1024) from z; here the patch embedding puts the masked
  image on the same 8×8 grid. No tanh at the end (reference); inference clamps to [−1, 1].
  At 64 px the patch embedding stays k = s = 4, so the token grid is 16×16 and the three stages run at 16, 32 and
  64 px: the reference's own way to other sizes (STL-10, 48 px: bottom width 12, same three stages) and the
  simpler of the two options (no fourth stage, no new depth to choose).
Discriminator (df_dim 384, depth 3, patch 2), the reference's two-scale ViT:
    conv k = s = 2 -> 16×16 × 288 (3/4 of 384), + pos -> 3 blocks -> average-pool ×2 -> concat with a second
    embedding of the input (conv k = s = 4 -> 96) -> 8×8 × 384, + pos -> 3 blocks -> cls token + 1 block -> LayerNorm
    -> Linear(384 -> 1).
  It is conditional: it sees [image, mask] (4 channels), so it judges the fill given where the hole is. Each of
  its attention layers adds the reference's learned-strength per-token noise (the "_noise" in the file name).
Blocks (both networks): pre-norm LayerNorm -> multi-head self-attention (4 heads, no qkv bias, a learned relative
position bias per head over the token grid, as the reference's *_rp models) -> residual; LayerNorm -> MLP (ratio 4,
GELU) -> residual. Attention is global over each stage's grid (the reference's window = the grid at 32 px).

Parameters at the defaults, 32 px: generator 66,536,303 = the reference's 83,312,495 − its Linear from z
(16,842,752) + the patch embedding (66,560). Discriminator 10,213,088 = the reference's 10,210,400 + the mask
channel in its two input convolutions (2,688).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

IMAGE_CHANNELS = 3
INPUT_CHANNELS = IMAGE_CHANNELS + 1  # masked image + mask
SIZES = (32, 64)
G_PATCH = 4  # generator patch embedding: k = s = 4, so the token grid is size / 4
D_PATCH = 2  # discriminator's fine embedding (reference patch_size 2); its coarse one is 2·D_PATCH
HOLE_FILL = 0.0  # hole pixels in the generator input, in the [−1, 1] range: mid-grey


def parse_depth(depth: str | Sequence[int]) -> list[int]:
    """'5,4,2' -> [5, 4, 2] (blocks per generator stage)."""
    if isinstance(depth, str):
        depth = [int(d) for d in depth.split(",") if d.strip()]
    return [int(d) for d in depth]


def generator_input(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """images N×3×S×S in [0, 1], masks N×1×S×S (1 = hole) -> N×4×S×S: the image in [−1, 1] with its holes set to
    HOLE_FILL, then the mask. One definition for training and inference."""
    scaled = images * 2.0 - 1.0
    return torch.cat([scaled * (1.0 - masks) + HOLE_FILL * masks, masks], 1)


class Attention(nn.Module):
    """Multi-head self-attention with the reference's relative position bias (a learned scalar per head and per
    2-D offset between two tokens of a grid×grid map; grid 0 = none, for the discriminator's cls-token block).

    fused=True uses torch's scaled_dot_product_attention (memory-efficient kernels on GPU); fused=False writes
    the softmax out, which the discriminator needs: the gradient penalty differentiates its gradient again, and
    the fused GPU kernels have no double backward.
    noise=True: the reference discriminator's noise injection (ViT_custom_scale2_rp_noise.py): one N(0, 1) draw per
    token, from torch's global RNG, times a learned strength (initially 0), added to the input."""

    def __init__(self, dim: int, heads: int, grid: int, fused: bool, noise: bool = False):
        super().__init__()
        self.heads, self.grid, self.fused = heads, grid, fused
        self.noise_strength = nn.Parameter(torch.zeros([])) if noise else None
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=False)  # reference: qkv_bias False
        self.proj = nn.Linear(dim, dim)
        if grid:
            self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * grid - 1) ** 2, heads))
            nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
            coords = torch.stack(torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")).flatten(1)
            offset = (coords[:, :, None] - coords[:, None, :]) + (grid - 1)  # 2 × N × N, in [0, 2·grid − 2]
            # the table row of each (query, key) pair; not a weight, so not saved with them
            self.register_buffer("relative_position_index", offset[0] * (2 * grid - 1) + offset[1], persistent=False)

    def position_bias(self) -> torch.Tensor:
        n = self.grid * self.grid
        return self.relative_position_bias_table[self.relative_position_index.reshape(-1)].view(n, n, -1) \
            .permute(2, 0, 1).unsqueeze(0)  # 1 × heads × N × N

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        if self.noise_strength is not None:
            x = x + torch.randn(b, n, 1).to(x.device, x.dtype) * self.noise_strength
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.position_bias().to(q.dtype) if self.grid else None
        if self.fused:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        else:
            logits = (q @ k.transpose(-2, -1)) * self.scale
            if bias is not None:
                logits = logits + bias
            out = logits.softmax(-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + MLP(LN(x)) (MLP: Linear, GELU, Linear; ratio 4)."""

    def __init__(self, dim: int, heads: int, grid: int, fused: bool, noise: bool = False, mlp_ratio: int = 4):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, grid, fused, noise)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * mlp_ratio), nn.GELU(), nn.Linear(dim * mlp_ratio, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """N×C×H×W -> N×(H·W)×C."""
    return x.flatten(2).transpose(1, 2)


def _grid(x: torch.Tensor, side: int) -> torch.Tensor:
    """N×(H·W)×C -> N×C×H×W."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], side, side)


class Generator(nn.Module):
    def __init__(self, size: int = 32, dim: int = 1024, depth: Sequence[int] = (5, 4, 2), heads: int = 4):
        super().__init__()
        self.bottom = size // G_PATCH  # token grid of stage 1
        dims = [dim, dim // 4, dim // 16]  # PixelShuffle(2) turns C channels into C/4 at twice the side
        self.patch_embed = nn.Conv2d(INPUT_CHANNELS, dim, kernel_size=G_PATCH, stride=G_PATCH)
        self.pos_embed = nn.ParameterList(
            [nn.Parameter(torch.zeros(1, (self.bottom * 2 ** i) ** 2, d)) for i, d in enumerate(dims)])
        for pos in self.pos_embed:
            nn.init.trunc_normal_(pos, std=0.02)
        self.stages = nn.ModuleList(
            [nn.Sequential(*[Block(d, heads, self.bottom * 2 ** i, fused=True) for _ in range(n)])
             for i, (d, n) in enumerate(zip(dims, depth))])
        self.to_rgb = nn.Conv2d(dims[-1], IMAGE_CHANNELS, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """generator_input(...) N×4×S×S -> images N×3×S×S, about [−1, 1] (not squashed)."""
        side = self.bottom
        tokens = _tokens(self.patch_embed(x))
        for i, stage in enumerate(self.stages):
            if i:  # PixelShuffle(2): 4 channels -> a 2×2 block of pixels; twice the side, a quarter of the width
                tokens = _tokens(F.pixel_shuffle(_grid(tokens, side), 2))
                side *= 2
            tokens = stage(tokens + self.pos_embed[i])
        return self.to_rgb(_grid(tokens, side))


class Discriminator(nn.Module):
    def __init__(self, size: int = 32, dim: int = 384, depth: int = 3, heads: int = 4,
                 in_channels: int = INPUT_CHANNELS):
        super().__init__()
        fine, coarse = size // D_PATCH, size // (2 * D_PATCH)  # token grids of the two scales
        self.fine = fine
        self.fRGB_1 = nn.Conv2d(in_channels, dim // 4 * 3, kernel_size=D_PATCH, stride=D_PATCH)
        self.fRGB_2 = nn.Conv2d(in_channels, dim // 4, kernel_size=2 * D_PATCH, stride=2 * D_PATCH)
        self.pos_embed_1 = nn.Parameter(torch.zeros(1, fine * fine, dim // 4 * 3))
        self.pos_embed_2 = nn.Parameter(torch.zeros(1, coarse * coarse, dim))
        # explicit attention (fused=False): the gradient penalty needs its double backward
        self.blocks_1 = nn.Sequential(*[Block(dim // 4 * 3, heads, fine, False, noise=True) for _ in range(depth)])
        self.blocks_2 = nn.Sequential(*[Block(dim, heads, coarse, False, noise=True) for _ in range(depth)])
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        # cls token + all tokens: no grid, so no position bias (reference window_size 0)
        self.last_block = Block(dim, heads, 0, False, noise=True)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 1)
        for p in (self.pos_embed_1, self.pos_embed_2, self.cls_token):
            nn.init.trunc_normal_(p, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[image in [−1, 1], mask] N×4×S×S -> scores N×1 (a WGAN critic: real high, fake low)."""
        tokens = self.blocks_1(_tokens(self.fRGB_1(x)) + self.pos_embed_1)
        pooled = F.avg_pool2d(_grid(tokens, self.fine), 2)  # the fine scale, pooled to the coarse grid
        tokens = torch.cat([_tokens(pooled), _tokens(self.fRGB_2(x))], -1) + self.pos_embed_2
        tokens = self.blocks_2(tokens)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], 1)
        return self.head(self.norm(self.last_block(tokens))[:, 0])


def init_weights(net: nn.Module, linear_std: float | None) -> nn.Module:
    """The reference's init: convolutions xavier_uniform (train_derived.py weights_init, --init_type
    xavier_uniform); linear layers truncated N(0, linear_std) with zero bias where the reference does that (its
    discriminator), PyTorch's default where it does not (its generator: linear_std None); LayerNorm 1 / 0.
    Position embeddings, relative-position tables and the cls token are drawn (trunc. N(0, 0.02)) at build time."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.trunc_normal_(m.weight, std=linear_std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return net


def build_network(config: Mapping[str, Any], name: str) -> nn.Module:
    """The network `name` of a checkpoint, from its flat training config (weights loaded by the caller)."""
    if name == "generator":
        return Generator(int(config["size"]), int(config["dim"]), parse_depth(config["depth"]), int(config["heads"]))
    if name == "discriminator":
        return Discriminator(int(config["size"]), int(config["d_dim"]), int(config["d_depth"]), int(config["heads"]))
    raise KeyError(f"transgan has no network {name!r}")


def count_parameters(size: int = 32, dim: int = 1024, depth: str = "5,4,2", d_dim: int = 384, d_depth: int = 3,
                     heads: int = 4) -> tuple[int, int]:
    """(generator, discriminator) parameter counts, built on the meta device: nothing is allocated."""
    with torch.device("meta"):
        generator = Generator(size, dim, parse_depth(depth), heads)
        discriminator = Discriminator(size, d_dim, d_depth, heads)
    return (sum(p.numel() for p in generator.parameters()), sum(p.numel() for p in discriminator.parameters()))
