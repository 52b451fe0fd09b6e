"""Tiny random diffusion inpainting pipelines, one per family, built in-process and saved as diffusers folders.

Each has the structure of the real checkpoint (the same component classes, a VAE / MoVQ that downsamples 8x with
four blocks, SD3's 2x2 patches, Flux Fill's 2x2 packing and 384-style mask channels, Kandinsky's prior + decoder)
at a few MB, so `--sd-model FOLDER` can be driven offline and fast. Shapes follow diffusers' own tests'
`get_dummy_components()` (tests/pipelines/{stable_diffusion,stable_diffusion_xl,stable_diffusion_3,flux,
kandinsky2_2}/...), except that nothing is read from the hub: CLIP tokenizers are the real CLIP BPE vocabulary
(build_clip_tokenizer), and the T5 tokenizer (SD3, Flux) is a tiny Unigram model trained here with `tokenizers`.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from diffinpaint.models.sd import CONFIG_DIR, build_clip_tokenizer, build_random_pipeline

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
CLIP = dict(TINY_CONFIGS["text_encoder"])


def tiny_pipeline(seed: int = 0, unet_in_channels: int = 9):
    configs = copy.deepcopy(TINY_CONFIGS)
    configs["unet"]["in_channels"] = unet_in_channels
    return build_random_pipeline(configs, seed=seed)


def save_tiny_pipeline(folder: str | Path, seed: int = 0, unet_in_channels: int = 9,
                       variant: str | None = None) -> Path:
    """SD 1.5 inpainting (9-channel UNet) or, with unet_in_channels=4, a base SD checkpoint; saved as safetensors."""
    folder = Path(folder)
    pipe = tiny_pipeline(seed, unet_in_channels)
    if unet_in_channels == 4:  # a base checkpoint is saved by its text-to-image pipeline, as on the hub
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline(**pipe.components)
    pipe.save_pretrained(folder, safe_serialization=True, variant=variant)
    return folder


def save_tiny_vae(folder: str | Path, seed: int = 0) -> Path:
    """A tiny TAESD-style AutoencoderTiny (8x downsampling, 4 latent channels) for --tiny-vae tests."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    vae = AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                          num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1), latent_channels=4)
    vae.save_pretrained(folder, safe_serialization=True)
    return Path(folder)


# ---------------------------------------------------------------------------------------------- shared parts
def _vae(latent_channels: int, flow: bool = False):
    """An AutoencoderKL downsampling 8x (four blocks) like every real one; flow-matching families (SD3, Flux) use
    no quant convs and a shift factor, as theirs do."""
    from diffusers import AutoencoderKL

    cfg = {k: v for k, v in TINY_CONFIGS["vae"].items() if not k.startswith("_")}
    cfg["latent_channels"] = latent_channels
    if flow:
        cfg.update(use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)
    return AutoencoderKL(**cfg)


def _clip(with_projection: bool, **overrides):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(**{**CLIP, **overrides})
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)


T5_CORPUS = [
    "Natural looking seamless image, no text", "Real image of a cat, no text", "Real image of a dog, no text",
    "text, letters, captions, watermark, signature, logo", "a photo of a landscape with trees and a river",
    "A painting of a squirrel eating a burger", "blurry, low quality, distorted, deformed",
]


def build_t5_tokenizer():
    """A tiny T5 tokenizer (Unigram, Metaspace, '</s>' appended) trained in-process on a few sentences, wrapped
    as transformers' T5TokenizerFast: the class real SD3 / Flux folders name, with no hub files."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import T5TokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=200, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>")
    tok.train_from_iterator(T5_CORPUS * 20, trainer=trainer)
    vocab = [tuple(v) for v in json.loads(tok.to_str())["model"]["vocab"]]
    try:  # transformers >= 5: the tokenizers-backed T5 tokenizer takes the Unigram vocabulary directly
        return T5TokenizerFast(vocab=vocab, extra_ids=0)
    except TypeError:  # transformers 4.x
        return T5TokenizerFast(tokenizer_object=tok, extra_ids=0, eos_token="</s>", unk_token="<unk>",
                               pad_token="<pad>")


def _t5(d_model: int = 32):
    """The shape of hf-internal-testing/tiny-random-t5 (diffusers' tests), built from a config."""
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=256, d_model=d_model, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                                   relative_attention_num_buckets=8, dropout_rate=0.0, is_encoder_decoder=False,
                                   use_cache=False))


# ---------------------------------------------------------------------------------------------- families
def save_tiny_sdxl(folder: str | Path, seed: int = 0, unet_in_channels: int = 9) -> Path:
    """SDXL inpainting (9-channel UNet, two CLIP encoders, micro-conditioning) or, with 4, a base SDXL."""
    from diffusers import (EulerDiscreteScheduler, StableDiffusionXLInpaintPipeline, StableDiffusionXLPipeline,
                           UNet2DConditionModel)

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=128, in_channels=unet_in_channels,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4), use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=8, transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * 8 + 32,  # 6 size/crop numbers x 8 + text_encoder_2's projection
        cross_attention_dim=64, norm_num_groups=32)
    # the SDXL release's scheduler (Euler, scaled-linear betas, leading spacing)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                       beta_schedule="scaled_linear", timestep_spacing="leading")
    torch.manual_seed(seed + 1)
    components = dict(unet=unet, scheduler=scheduler, vae=_vae(4), text_encoder=_clip(False, hidden_act="gelu"),
                      tokenizer=build_clip_tokenizer(), text_encoder_2=_clip(True, hidden_act="gelu"),
                      tokenizer_2=build_clip_tokenizer(), image_encoder=None, feature_extractor=None)
    cls = StableDiffusionXLInpaintPipeline if unet_in_channels == 9 else StableDiffusionXLPipeline
    if cls is StableDiffusionXLInpaintPipeline:
        components["requires_aesthetics_score"] = False
    cls(**components).save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def save_tiny_sd3(folder: str | Path, seed: int = 0) -> Path:
    """SD3 (MMDiT with 2x2 patches on 16 latent channels, two CLIP encoders and T5), saved as the text-to-image
    pipeline a real SD3 / SD3.5 repository holds; inpainting is the inpainting pipeline's latent blending."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(sample_size=32, patch_size=2, in_channels=16, num_layers=1,
                                        attention_head_dim=8, num_attention_heads=4, joint_attention_dim=32,
                                        caption_projection_dim=32, pooled_projection_dim=64, out_channels=16)
    torch.manual_seed(seed + 1)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=_vae(16, flow=True),
        text_encoder=_clip(True, hidden_act="gelu"), tokenizer=build_clip_tokenizer(),
        text_encoder_2=_clip(True, hidden_act="gelu"), tokenizer_2=build_clip_tokenizer(),
        text_encoder_3=_t5(32), tokenizer_3=build_t5_tokenizer(), image_encoder=None, feature_extractor=None)
    pipe.save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def save_tiny_flux_fill(folder: str | Path, seed: int = 0) -> Path:
    """FLUX.1 Fill (a Flux transformer whose input is packed latents + packed masked-image latents + the mask
    as 8x8 = 64 channels per latent cell, packed 2x2: 8*C + 256 channels; guidance embedding), CLIP + T5."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxFillPipeline, FluxTransformer2DModel

    latent = 4
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=8 * latent + 4 * 64, out_channels=4 * latent,
                                         num_layers=1, num_single_layers=1, attention_head_dim=16,
                                         num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
                                         guidance_embeds=True, axes_dims_rope=[4, 4, 8])
    torch.manual_seed(seed + 1)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                                                max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
    pipe = FluxFillPipeline(transformer=transformer, scheduler=scheduler, vae=_vae(latent, flow=True),
                            text_encoder=_clip(False, hidden_act="gelu"), tokenizer=build_clip_tokenizer(),
                            text_encoder_2=_t5(32), tokenizer_2=build_t5_tokenizer())
    pipe.save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def _kandinsky_parts(seed: int):
    """(decoder components, prior components) as in diffusers' kandinsky2_2 tests, with an 8x MoVQ."""
    from diffusers import DDPMScheduler, PriorTransformer, UNet2DConditionModel, UnCLIPScheduler, VQModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        in_channels=9, out_channels=8, addition_embed_type="image",  # 8 = mean and variance
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn", block_out_channels=(32, 64), layers_per_block=1,
        encoder_hid_dim=32, encoder_hid_dim_type="image_proj", cross_attention_dim=32, attention_head_dim=4,
        resnet_time_scale_shift="scale_shift", class_embed_type=None, sample_size=64)
    movq = VQModel(block_out_channels=[32, 32, 32, 32], in_channels=3, out_channels=3, latent_channels=4,
                   down_block_types=["DownEncoderBlock2D"] * 3 + ["AttnDownEncoderBlock2D"],
                   up_block_types=["AttnUpDecoderBlock2D"] + ["UpDecoderBlock2D"] * 3, layers_per_block=1,
                   norm_num_groups=8, norm_type="spatial", num_vq_embeddings=12, vq_embed_dim=4)
    # the decoder's scheduler as in kandinsky-community/kandinsky-2-2-decoder-inpaint
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=0.00085, beta_end=0.012,
                              clip_sample=False, steps_offset=1, prediction_type="epsilon", thresholding=False,
                              variance_type="fixed_small", timestep_spacing="leading")
    torch.manual_seed(seed + 1)
    prior = PriorTransformer(num_attention_heads=2, attention_head_dim=12, embedding_dim=32, num_layers=1)
    prior.clip_std = torch.nn.Parameter(torch.ones(prior.clip_std.shape))  # zeros would make every embedding 0
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, image_size=32, projection_dim=32, intermediate_size=37, num_attention_heads=4,
        num_channels=3, num_hidden_layers=2, patch_size=8))
    image_processor = CLIPImageProcessor(crop_size=32, do_center_crop=True, do_normalize=True, do_resize=True,
                                         image_mean=[0.48145466, 0.4578275, 0.40821073],
                                         image_std=[0.26862954, 0.26130258, 0.27577711], resample=3, size=32)
    prior_scheduler = UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="sample",
                                      num_train_timesteps=1000, clip_sample=True, clip_sample_range=10.0)
    decoder = dict(unet=unet, scheduler=scheduler, movq=movq)
    prior_parts = dict(prior=prior, image_encoder=image_encoder, text_encoder=_clip(True),
                       tokenizer=build_clip_tokenizer(), scheduler=prior_scheduler, image_processor=image_processor)
    return decoder, prior_parts


def save_tiny_kandinsky(folder: str | Path, seed: int = 0, combined: bool = False) -> tuple[Path, Path | None]:
    """Kandinsky 2.2 inpainting. combined=False: the decoder folder (as kandinsky-2-2-decoder-inpaint) and a prior
    folder beside it (as kandinsky-2-2-prior), returned as (decoder, prior); combined=True: one folder holding both
    (KandinskyV22InpaintCombinedPipeline.save_pretrained), returned as (folder, None)."""
    from diffusers import KandinskyV22InpaintCombinedPipeline, KandinskyV22InpaintPipeline, KandinskyV22PriorPipeline

    decoder, prior = _kandinsky_parts(seed)
    folder = Path(folder)
    if combined:
        KandinskyV22InpaintCombinedPipeline(**decoder, **{f"prior_{k}": v for k, v in prior.items()}).save_pretrained(
            folder, safe_serialization=True)
        return folder, None
    KandinskyV22InpaintPipeline(**decoder).save_pretrained(folder, safe_serialization=True)
    prior_folder = folder.parent / (folder.name + "-prior")
    KandinskyV22PriorPipeline(**prior).save_pretrained(prior_folder, safe_serialization=True)
    return folder, prior_folder


# family -> a function (folder) writing its tiny pipeline; Kandinsky's prior lands in FOLDER-prior
SAVERS = {
    "sd": lambda f: save_tiny_pipeline(f),
    "sd-base": lambda f: save_tiny_pipeline(f, unet_in_channels=4),
    "sdxl": lambda f: save_tiny_sdxl(f),
    "sdxl-base": lambda f: save_tiny_sdxl(f, unet_in_channels=4),
    "sd3": lambda f: save_tiny_sd3(f),
    "flux-fill": lambda f: save_tiny_flux_fill(f),
    "kandinsky2.2": lambda f: save_tiny_kandinsky(f)[0],
}


def save_tiny_lora(pipeline_folder: str | Path, out_file: str | Path, seed: int = 0, rank: int = 4) -> Path:
    """A LoRA for the denoiser of the pipeline in `pipeline_folder` (UNet or transformer), with random non-zero
    weights (peft's init leaves B = 0, which would change nothing), saved by the pipeline class's own
    save_lora_weights as one .safetensors file: what a user downloads from a LoRA repository."""
    from diffusers import DiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = DiffusionPipeline.from_pretrained(str(pipeline_folder))
    denoiser_name = "unet" if getattr(pipe, "unet", None) is not None else "transformer"
    denoiser = getattr(pipe, denoiser_name)
    torch.manual_seed(seed)
    denoiser.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                                    target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    type(pipe).save_lora_weights(str(out_file.parent), weight_name=out_file.name, safe_serialization=True,
                                 **{f"{denoiser_name}_lora_layers": get_peft_model_state_dict(denoiser)})
    return out_file
