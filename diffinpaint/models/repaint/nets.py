"""The unconditional DDPM that RePaint samples from: a diffusers `UNet2DModel` predicting the noise ε.

RePaint (Lugmayr et al., CVPR 2022) trains nothing of its own: it conditions a pre-trained unconditional DDPM at
sampling time. No such model exists for our data, so the toolkit trains a small one (step.py) and samples it with
RePaint (infer.py). The network is laid out like the diffusers unconditional example
(examples/unconditional_image_generation/train_unconditional.py): ResNet blocks at every level, self-attention at
the second-lowest resolution only, 3 channels in and 3 out (ε; RePaint in diffusers has no learned variance).

Default: widths 64-128-256-256, 2 ResNet blocks per level, at 64 px: levels at 64, 32, 16, 8 px with attention
at 16 px (the DDPM paper's attention resolution), 25,304,963 parameters (the research notes' 25.3M, 17.5 GFLOPs
per forward). For 256 px pass six widths, e.g. --block-channels 64,64,128,128,256,256 (28,447,235 parameters,
attention again at 16 px); four widths at 256 px would put the attention at 64 px (4,096 tokens), which is slow.

The noise schedule (training timesteps, β schedule) lives in the flat config too: training (DDPMScheduler) and
RePaint (RePaintScheduler) both build it from `scheduler_kwargs(config)`, so they cannot disagree.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from torch import nn

from ...util.errors import UserError

# β schedules both DDPMScheduler and RePaintScheduler implement identically
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
# the DDPM paper's linear β range (diffusers' defaults): with 1000 steps, ᾱ_T ≈ 4e-5, i.e. x_T is pure noise
BETA_START, BETA_END = 1e-4, 0.02


def parse_channels(value: str | Sequence[int]) -> tuple[int, ...]:
    """'64,128,256,256' (CLI / config.json) or a sequence of ints -> a tuple of positive widths."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        try:
            channels = tuple(int(p) for p in parts)
        except ValueError:
            raise UserError(f"--block-channels {value!r} is not a comma-separated list of integers; pass e.g. "
                            "64,128,256,256") from None
    else:
        channels = tuple(int(c) for c in value)
    if len(channels) < 2 or min(channels) < 1:
        raise UserError(f"--block-channels {value!r} needs at least two positive widths (one per UNet level); pass "
                        "e.g. 64,128,256,256")
    return channels


def block_types(levels: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Down and up block types: attention at the second-lowest level, as the diffusers unconditional example
    (which has it at level 5 of 6). The up path runs from the lowest level upwards, so its attention block is
    the second one."""
    attention = levels - 2
    down = tuple("AttnDownBlock2D" if i == attention else "DownBlock2D" for i in range(levels))
    up = tuple(reversed(tuple("AttnUpBlock2D" if i == attention else "UpBlock2D" for i in range(levels))))
    return down, up


def check_network_config(config: Mapping[str, Any]) -> tuple[int, ...]:
    """UserError for a configuration the UNet cannot be built with; returns the parsed widths."""
    channels = parse_channels(config["block_channels"])
    size, groups = int(config["size"]), int(config["norm_groups"])
    factor = 2 ** (len(channels) - 1)  # each level but the last halves the resolution
    if size < factor or size % factor:
        raise UserError(f"--size {size} does not fit a UNet with {len(channels)} levels: it must be a multiple of "
                        f"{factor} (2^(levels-1)); pass e.g. --size {max(factor, round(size / factor) * factor)} "
                        "or fewer --block-channels")
    if groups < 1 or any(c % groups for c in channels):
        raise UserError(f"--norm-groups {groups} must divide every width in --block-channels "
                        f"{','.join(map(str, channels))}; pass a divisor such as 32, 16 or 8")
    if int(config["layers_per_block"]) < 1:
        raise UserError(f"--layers-per-block {config['layers_per_block']} must be at least 1")
    return channels


def build_network(config: Mapping[str, Any], name: str) -> nn.Module:
    """The network called `name` from the flat config: only "unet" (its EMA copy "unet_ema" is built as "unet")."""
    if name != "unet":
        raise KeyError(f"repaint has one network, 'unet', not {name!r}")
    from diffusers import UNet2DModel  # heavy import, only when a network is built

    channels = check_network_config(config)
    down, up = block_types(len(channels))
    return UNet2DModel(sample_size=int(config["size"]), in_channels=3, out_channels=3,
                       layers_per_block=int(config["layers_per_block"]), block_out_channels=channels,
                       down_block_types=down, up_block_types=up, norm_num_groups=int(config["norm_groups"]))


def attention_resolution(config: Mapping[str, Any]) -> int:
    """The side in pixels of the feature map the attention blocks see."""
    levels = len(parse_channels(config["block_channels"]))
    return int(config["size"]) // 2 ** (levels - 2)


def scheduler_kwargs(config: Mapping[str, Any]) -> dict[str, Any]:
    """The noise schedule the UNet was trained with, as keyword arguments of DDPMScheduler and RePaintScheduler."""
    if config["beta_schedule"] not in BETA_SCHEDULES:
        raise UserError(f"--beta-schedule {config['beta_schedule']!r}; choose from {', '.join(BETA_SCHEDULES)}")
    return {"num_train_timesteps": int(config["train_timesteps"]), "beta_start": BETA_START, "beta_end": BETA_END,
            "beta_schedule": config["beta_schedule"]}


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
