"""The diffusion inpainters the `sd` model drives: one row per family, how a checkpoint is recognised, how it is
called.

A family is recognised from the pipeline folder's model_index.json (`_class_name`) and its denoiser's config
(`in_channels`, and for SD3.5 `qk_norm` / `dual_attention_layers`). Defaults are the model card's; where the card
says nothing, diffusers' pipeline defaults. The toolkit changes one thing on purpose: strength 1.0 where diffusers'
default is meant for editing a visible region (SD3's 0.6), because here the hole's pixels are hidden from the model
(grey), so a partial strength would start from grey.

Resolution multiples (each side of the model input): 8 for SD/SDXL (the VAE downsamples 8x), 16 for SD3 (8x VAE
and 2x2 patches; the pipeline refuses other sizes) and Flux (8x VAE and 2x2 latent packing), 64 for Kandinsky 2.2
(its pipeline sizes the latents as ceil(side / 64) * 8, so any other side makes the MoVQ latents and the noise
disagree).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from ...util.errors import UserError


@dataclass(frozen=True)
class Family:
    key: str  # recorded in config.toml and manifest.jsonl
    title: str
    pipeline: str  # the diffusers class that drives it
    steps: int
    guidance: float
    strength: float | None  # None: the pipeline has no strength (Kandinsky starts from noise)
    resolution: int | None  # None: the checkpoint's own (denoiser sample_size x VAE factor)
    negative_prompt: bool  # the pipeline takes a negative prompt
    cfg: bool  # guidance is classifier-free (guidance > 1 runs the denoiser twice); False: a distilled embedding
    cuda_dtype: str  # default dtype on CUDA (CPU: fp32)
    blending: bool = False  # a base (text-to-image) checkpoint, inpainted by latent blending
    schedulers: bool = True  # --scheduler applies (DDPM-family samplers); flow-matching families keep theirs
    lora: bool = True  # diffusers has a LoRA loader for the pipeline
    tiny_vae: bool = False  # TAESD (--tiny-vae) and LCM-LoRA (--lcm-lora) apply
    source: str = ""  # where the defaults come from
    extra: dict = field(default_factory=dict)  # fixed call arguments of the family (Kandinsky's prior)


FAMILIES: dict[str, Family] = {f.key: f for f in [
    Family("sd", "SD 1.5 / 2 inpainting", "StableDiffusionInpaintPipeline", 50, 7.5, 1.0, None,
           negative_prompt=True, cfg=True, cuda_dtype="fp16", tiny_vae=True,
           source="model cards of stable-diffusion-inpainting / stable-diffusion-2-inpainting (diffusers' defaults)"),
    Family("sd-base", "SD 1.x / 2 base (4-channel), latent blending", "StableDiffusionInpaintPipeline", 50, 7.5, 1.0,
           None, negative_prompt=True, cfg=True, cuda_dtype="fp16", blending=True, tiny_vae=True,
           source="diffusers' StableDiffusionInpaintPipeline defaults"),
    Family("sdxl", "SDXL inpainting", "StableDiffusionXLInpaintPipeline", 20, 8.0, 0.99, None,
           negative_prompt=True, cfg=True, cuda_dtype="fp16", tiny_vae=True,
           source="model card of diffusers/stable-diffusion-xl-1.0-inpainting-0.1 (strength below 1.0)"),
    Family("sdxl-base", "SDXL base (4-channel), latent blending", "StableDiffusionXLInpaintPipeline", 50, 7.5, 0.9999,
           None, negative_prompt=True, cfg=True, cuda_dtype="fp16", blending=True, tiny_vae=True,
           source="diffusers' StableDiffusionXLInpaintPipeline defaults"),
    Family("sd3", "SD3 (medium)", "StableDiffusion3InpaintPipeline", 28, 7.0, 1.0, None,
           negative_prompt=True, cfg=True, cuda_dtype="bf16", blending=True, schedulers=False,
           source="model card of stable-diffusion-3-medium; strength 1.0 (diffusers' 0.6 is for editing)"),
    Family("sd3.5-large", "SD3.5 large", "StableDiffusion3InpaintPipeline", 28, 3.5, 1.0, None,
           negative_prompt=True, cfg=True, cuda_dtype="bf16", blending=True, schedulers=False,
           source="model card of stable-diffusion-3.5-large (turbo: pass --steps 4 --guidance 0)"),
    Family("sd3.5-medium", "SD3.5 medium", "StableDiffusion3InpaintPipeline", 40, 4.5, 1.0, None,
           negative_prompt=True, cfg=True, cuda_dtype="bf16", blending=True, schedulers=False,
           source="model card of stable-diffusion-3.5-medium"),
    Family("kandinsky2.2", "Kandinsky 2.2 inpainting", "KandinskyV22InpaintPipeline", 150, 4.0, None, 768,
           negative_prompt=True, cfg=True, cuda_dtype="fp16", lora=False,
           source="model card of kandinsky-2-2-decoder-inpaint (768 px, 150 steps); prior: diffusers' 25 steps, 4.0",
           extra={"prior_steps": 25, "prior_guidance": 4.0,
                  "prior": "kandinsky-community/kandinsky-2-2-prior"}),
    Family("flux-fill", "FLUX.1 Fill", "FluxFillPipeline", 50, 30.0, 1.0, 1024,
           negative_prompt=False, cfg=False, cuda_dtype="bf16", schedulers=False,
           source="model card of FLUX.1-Fill-dev (guidance 30, 50 steps, max_sequence_length 512)"),
]}


# ---------------------------------------------------------------------------------------------- recognising
def detect(class_name: str, denoiser: dict[str, Any] | None, where: str) -> Family:
    """The family of a pipeline from its class name (model_index.json `_class_name`) and its denoiser's config
    (unet/ or transformer/config.json). Anything else is refused in one line naming what was found."""
    channels = (denoiser or {}).get("in_channels")
    supported = ("supported: SD 1.5/2 and SDXL (inpainting or base), SD3/SD3.5, Kandinsky 2.2 inpainting, "
                 "FLUX.1 Fill")
    if class_name.startswith("Flux"):
        if class_name == "FluxFillPipeline" or channels == 384:
            return FAMILIES["flux-fill"]
        raise UserError(f"--sd-model {where}: a {class_name} with a {channels}-channel transformer is a base Flux "
                        "model; inpaint with black-forest-labs/FLUX.1-Fill-dev")
    if class_name.startswith("KandinskyV22"):
        if "Inpaint" in class_name:
            return FAMILIES["kandinsky2.2"]
        raise UserError(f"--sd-model {where}: {class_name} is not Kandinsky 2.2's inpainting decoder; use "
                        "kandinsky-community/kandinsky-2-2-decoder-inpaint")
    if class_name.startswith("StableDiffusion3"):
        if channels not in (16, 33):
            raise UserError(f"--sd-model {where}: an SD3 transformer with {channels} input channels; need 16 "
                            "(latent blending) or 33 (an inpainting transformer)")
        cfg = denoiser or {}
        if cfg.get("qk_norm"):  # SD3.5 normalises q/k; medium adds dual-attention (MMDiT-X) layers
            return FAMILIES["sd3.5-medium" if cfg.get("dual_attention_layers") else "sd3.5-large"]
        return FAMILIES["sd3"]
    if class_name.startswith("StableDiffusion") and denoiser is not None and "sample_size" in denoiser:
        xl = class_name.startswith("StableDiffusionXL")
        if channels == 9:
            return FAMILIES["sdxl" if xl else "sd"]
        if channels == 4:
            return FAMILIES["sdxl-base" if xl else "sd-base"]
        raise UserError(f"--sd-model {where}: not an inpainting checkpoint ({class_name} with a UNet with "
                        f"{channels} input channels; need 9 = latents + mask + masked image, or a 4-channel base "
                        "model for latent blending)")
    raise UserError(f"--sd-model {where}: {class_name or 'an unnamed pipeline'} is not a diffusion inpainter the "
                    f"toolkit drives ({supported})")


def multiple_of(family: Family, pipe) -> int:
    """What each side of the model input must be a multiple of, read from the loaded pipeline (see module doc)."""
    if family.key == "kandinsky2.2":
        return pipe.decoder_pipe.movq_scale_factor ** 2
    if family.pipeline == "StableDiffusion3InpaintPipeline":
        return pipe.vae_scale_factor * pipe.transformer.config.patch_size
    if family.key == "flux-fill":
        return pipe.vae_scale_factor * 2
    return pipe.vae_scale_factor


def latent_cell(family: Family, pipe) -> int:
    """Pixels per latent cell (the VAE / MoVQ downsampling)."""
    return pipe.decoder_pipe.movq_scale_factor if family.key == "kandinsky2.2" else pipe.vae_scale_factor


def native_resolution(family: Family, pipe) -> int:
    """The default short side: the card's where it names one, else the checkpoint's (denoiser sample_size x VAE)."""
    if family.resolution is not None:
        return family.resolution
    denoiser = pipe.unet if hasattr(pipe, "unet") and pipe.unet is not None else pipe.transformer
    return int(denoiser.config.sample_size) * pipe.vae_scale_factor


def denoiser_name(family: Family) -> str:
    return "transformer" if family.pipeline in ("StableDiffusion3InpaintPipeline", "FluxFillPipeline") else "unet"


# ---------------------------------------------------------------------------------------------- calling
def call(family: Family, pipe, *, images: torch.Tensor, masks: torch.Tensor, prompts: Sequence[str],
         negatives: Sequence[str], steps: int, guidance: float, strength: float | None,
         generators: Sequence[torch.Generator], prior_steps: int = 0,
         prior_guidance: float = 0.0) -> torch.Tensor:
    """One pipeline call on images N×3×H×W in [0, 1] (the hole already grey) and masks N×1×H×W {0, 1} at the model's
    size; returns the predictions N×3×H×W float in [0, 1] on the CPU."""
    height, width = images.shape[-2:]
    if family.key == "kandinsky2.2":
        return torch.cat([_kandinsky(pipe, images[i:i + 1], masks[i:i + 1], prompts[i], negatives[i], steps,
                                     guidance, prior_steps, prior_guidance, generators[i])
                          for i in range(len(prompts))])
    kwargs: dict[str, Any] = dict(prompt=list(prompts), image=images, mask_image=masks, height=height, width=width,
                                  num_inference_steps=steps, guidance_scale=guidance, generator=list(generators),
                                  output_type="pt")  # float in [0, 1]: no uint8 rounding before the resize back
    if family.negative_prompt:
        kwargs["negative_prompt"] = list(negatives)
    if family.strength is not None:
        kwargs["strength"] = strength
    return pipe(**kwargs).images.float().cpu()


def _kandinsky(pipe, image, mask, prompt, negative, steps, guidance, prior_steps, prior_guidance,
               generator) -> torch.Tensor:
    """Prior then decoder, one image at a time, with one generator: what KandinskyV22InpaintCombinedPipeline does for
    one image. One at a time because diffusers' decoder (0.42) blends every image of a batch with the FIRST image's
    latents and mask (`image[:1]`, `mask_image[:1]`), and its prior doubles the batch for negative prompts, which a
    list of per-image generators cannot follow. The prompt reaches the decoder only through the prior: text ->
    CLIP image embedding (negative prompt -> the negative embedding; none -> the embedding of a blank image)."""
    embeds, negative_embeds = pipe.prior_pipe(prompt=prompt, negative_prompt=negative or None,
                                              num_inference_steps=prior_steps, guidance_scale=prior_guidance,
                                              generator=generator, output_type="pt", return_dict=False)
    out = pipe.decoder_pipe(image=image * 2 - 1, mask_image=mask, image_embeds=embeds,
                            negative_image_embeds=negative_embeds, height=image.shape[-2], width=image.shape[-1],
                            num_inference_steps=steps, guidance_scale=guidance, generator=generator,
                            output_type="np")  # its "pt" output skips the [-1, 1] -> [0, 1] step; "np" does it
    return torch.from_numpy(out.images).permute(0, 3, 1, 2).float()
