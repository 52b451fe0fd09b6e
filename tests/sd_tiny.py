"""A tiny random Stable Diffusion inpainting pipeline, built in-process and saved as a diffusers folder.

Same structure as the real SD 1.5 inpainting checkpoint (9-channel UNet, a VAE that downsamples 8x with four
blocks, CLIP text encoder with the real CLIP tokenizer) at a few MB, so the model code can be driven through
`--sd-model FOLDER` offline and fast. Modelled on diffusers' tests `get_dummy_components()`.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

from diffinpaint.models.sd import CONFIG_DIR, build_random_pipeline

TINY_CONFIGS = {
    "unet": {
        "_class_name": "UNet2DConditionModel",
        "block_out_channels": [32, 64],
        "layers_per_block": 1,
        "sample_size": 64,  # 64 latents x 8 = 512: the default resolution, as for the real model
        "in_channels": 9,
        "out_channels": 4,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
        "cross_attention_dim": 32,
        "attention_head_dim": [2, 4],
        "norm_num_groups": 32,
    },
    "vae": {
        "_class_name": "AutoencoderKL",
        "block_out_channels": [8, 16, 16, 16],  # four blocks = 8x downsampling, like the real VAE
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "latent_channels": 4,
        "layers_per_block": 1,
        "norm_num_groups": 8,
        "sample_size": 512,
    },
    "text_encoder": {
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": 1,
        "hidden_size": 32,
        "intermediate_size": 37,
        "layer_norm_eps": 1e-05,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "max_position_embeddings": 77,
        "vocab_size": 49408,  # the real CLIP vocabulary
        "hidden_act": "quick_gelu",
        "projection_dim": 32,
    },
    "scheduler": json.loads((CONFIG_DIR / "scheduler.json").read_text()),  # the real SD 1.5 inpainting schedule
}


def tiny_pipeline(seed: int = 0, unet_in_channels: int = 9):
    configs = copy.deepcopy(TINY_CONFIGS)
    configs["unet"]["in_channels"] = unet_in_channels
    return build_random_pipeline(configs, seed=seed)


def save_tiny_pipeline(folder: str | Path, seed: int = 0, unet_in_channels: int = 9) -> Path:
    """Build the tiny pipeline and write it as a diffusers folder (safetensors); return the folder."""
    folder = Path(folder)
    tiny_pipeline(seed, unet_in_channels).save_pretrained(folder, safe_serialization=True)
    return folder


def save_tiny_vae(folder: str | Path, seed: int = 0) -> Path:
    """A tiny TAESD-style AutoencoderTiny (8x downsampling, 4 latent channels) for --tiny-vae tests."""
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    vae = AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                          num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1), latent_channels=4)
    vae.save_pretrained(folder, safe_serialization=True)
    return Path(folder)
