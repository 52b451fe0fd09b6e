"""Stable Diffusion inpainting through diffusers (`AutoPipelineForInpainting`).

Any inpainting checkpoint works: a hub id or a local folder written by `save_pretrained` (SD 1.5 / SD 2
inpainting, SDXL inpainting: a UNet with 9 input channels = 4 latent + 1 mask + 4 masked-image latent).

What happens to one batch (see `StableDiffusionModel.inpaint`):
  1. the hole is blanked (grey) at input size, so the model never sees the pixels it must predict;
  2. each job (the whole image, or with --region crop a square around each hole) is resized to the model's
     resolution (512, SDXL 1024): image bicubic with antialias, mask with area interpolation then `> 0`,
     i.e. max-pool style, so a hole never shrinks and never vanishes;
  3. one pipeline call per batch, one CPU torch.Generator per job seeded from the image's seed, so the noise
     does not depend on batch size or device;
  4. the prediction is resized back (bicubic, antialias) and pasted into a copy of the input.
The runner composites (`mask * pred + (1 - mask) * image`); this model returns the full prediction.

Only safetensors weights are loaded, remote code never runs, and the safety checker is off: these are the
user's own photos, and a false positive would silently replace a fill with a black square.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .prompts import PromptSet, load_prompt_set
from ...util.imageops import resize_images, resize_masks
from ..base import InpaintModel
from ...util.errors import UserError
from ...util.options import option, validate

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-inpainting"
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "sd15_inpainting"

# --scheduler NAME -> diffusers class. Swapped in with from_config(checkpoint's scheduler config), so the
# checkpoint's beta schedule and prediction type are kept.
SCHEDULERS = {
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {}),
    "dpm++_karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "lcm": ("LCMScheduler", {}),
}
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass
class Settings:
    sd_model: str = option(DEFAULT_MODEL, "inpainting checkpoint: hub id or local pipeline folder", metavar="ID|DIR")
    prompt_set: str = option("natural", "prompt set: natural, natural-no-negative, animal, empty, or a .toml path",
                             metavar="NAME|PATH")
    # 50 is the diffusers default and what the SD 1.5 inpainting model card uses
    steps: int = option(50, "denoising steps", minimum=1)
    # 7.5 is the diffusers / model card default
    guidance: float = option(7.5, "classifier-free guidance scale (<= 1 disables guidance)", minimum=0)
    # 1.0 = start from pure noise in the hole (the hole's pixels are never shown to the model anyway)
    strength: float = option(1.0, "noise strength in the hole, (0, 1]", above=0, maximum=1)
    scheduler: str | None = option(None, "sampler (default: the checkpoint's own)", type=str,
                                   choices=sorted(SCHEDULERS))
    # None = fp16 on CUDA, fp32 elsewhere (fp16 convolutions on CPU are slow or unsupported)
    dtype: str | None = option(None, "weights/compute dtype (default fp16 on CUDA, fp32 on CPU)", type=str,
                               choices=sorted(DTYPES))
    # "sdpa" = torch scaled_dot_product_attention (diffusers' default processor); "xformers" needs CUDA
    attention: str = option("sdpa", "attention kernel", choices=("sdpa", "xformers"))
    # torch.compile the UNet (first batch pays the compile time; worth it for long runs on a GPU)
    compile: bool = option(False, "torch.compile the UNet")
    # keep components on CPU and move each to the GPU only while it runs (saves memory, costs speed)
    cpu_offload: bool = option(False, "offload idle components to CPU (CUDA only)", outputs=False)
    region: str = option("full", "full: resize the whole image; crop: inpaint a square around each hole, for large "
                         "photos with small holes", choices=("full", "crop"))
    # None = the checkpoint's native size (UNet sample_size x VAE factor: 512 for SD 1.5/2, 1024 for SDXL)
    resolution: int | None = option(None, "model input size, a multiple of 8 (default: the checkpoint's, 512 SD "
                                    "1.5/2, 1024 SDXL)", type=int, minimum=64)
    tiny_vae: str | None = option(None, "TAESD (AutoencoderTiny) hub id or folder replacing the VAE: faster, lower "
                                  "quality", type=str, metavar="ID|DIR")
    lcm_lora: str | None = option(None, "LCM-LoRA weights + LCM scheduler for few-step sampling (use e.g. --steps 4 "
                                  "--guidance 1.5; needs peft)", type=str, metavar="ID|DIR")
    crop_margin: int = option(128, "--region crop: context pixels kept around each hole's bounding box", minimum=0)


class StableDiffusionModel(InpaintModel):
    name = "sd"
    Settings = Settings

    def __init__(self, settings: Settings | None = None, device: str = "cpu", *, pipeline=None):
        """Load the pipeline now, so every configuration error surfaces before the first image.

        `pipeline` injects an already built pipeline (benchmarks with random weights); `settings.sd_model`
        is then only recorded, not loaded.
        """
        self.settings = s = settings or Settings()
        self.device = str(device)
        # 1. Cheap checks first: prompt set and option values
        self.prompts: PromptSet = load_prompt_set(s.prompt_set)
        _check_settings(s, self.device)
        self.dtype_name = s.dtype or ("fp16" if self.device.startswith("cuda") else "fp32")
        self.dtype = DTYPES[self.dtype_name]
        # 2. The checkpoint
        self.checkpoint: dict[str, Any] = {"sd_model": s.sd_model}
        if pipeline is None:
            folder, self.checkpoint = resolve_checkpoint(s.sd_model)
            pipeline = _load_pipeline(folder, self.dtype)
        elif pipeline.unet.dtype != self.dtype:
            pipeline = pipeline.to(dtype=self.dtype)
        unet = getattr(pipeline, "unet", None)
        if unet is None or unet.config.in_channels != 9:
            got = "no UNet" if unet is None else f"a UNet with {unet.config.in_channels} input channels"
            raise UserError(f"--sd-model {s.sd_model}: not an inpainting checkpoint ({type(pipeline).__name__} with "
                             f"{got}; need 9 = latents + mask + masked image), e.g. {DEFAULT_MODEL}")
        self.pipe = pipeline
        # 3. Optional parts and speed options
        _apply_options(self.pipe, s, self.device, self.dtype)
        self.resolution = s.resolution or unet.config.sample_size * self.pipe.vae_scale_factor
        if self.resolution % 8:
            raise UserError(f"--resolution {self.resolution}: must be a multiple of 8 (the VAE's downsampling)")
        self.pipe.set_progress_bar_config(disable=True)

    # ------------------------------------------------------------------ model surface
    def check_labels(self, labels: Sequence[str | None]) -> None:
        self.prompts.check_labels(labels)

    def manifest_fields(self, index: int, labels: Sequence[str | None]) -> dict[str, Any]:
        prompt, negative = self.prompts.for_label(labels[index])
        return {"prompt": prompt, "negative_prompt": negative}

    def resolved_outputs(self) -> dict[str, Any]:
        """What the declared options resolved to: the checkpoint (and its weights' fingerprint), the prompt set's
        texts, the scheduler class, dtype and resolution chosen for this device, library versions."""
        import diffusers
        import transformers

        return {**self.checkpoint, "pipeline": type(self.pipe).__name__, "prompt_set": self.prompts.as_dict(),
                "scheduler": self.settings.scheduler or "checkpoint",
                "scheduler_class": type(self.pipe.scheduler).__name__, "dtype": self.dtype_name,
                "resolution": self.resolution, "diffusers": diffusers.__version__,
                "transformers": transformers.__version__}

    @torch.no_grad()
    def inpaint(self, images, masks, *, seeds, labels):
        # 1. Check inputs
        n, c, h, w = images.shape
        if c != 3 or masks.shape != (n, 1, h, w) or len(seeds) != n or len(labels) != n:
            raise ValueError(f"sd.inpaint: got images {tuple(images.shape)}, masks {tuple(masks.shape)}, "
                             f"{len(seeds)} seeds, {len(labels)} labels; need N×3×H×W, N×1×H×W, N, N")
        images = images.detach().float().cpu()
        masks = (masks.detach().float().cpu() > 0.5).float()

        # 2. Blank the hole: the model must not see what it is asked to predict (strength < 1 would start from
        #    it; the 9-channel UNet's masked image is blanked by diffusers too, so this changes nothing else)
        hidden = images * (1 - masks) + 0.5 * masks

        # 3. Jobs: (image index, box y0, x0, y1, x1, seed); images without a hole need no work
        jobs = []
        for i in range(n):
            if not masks[i].any():
                continue
            if self.settings.region == "full":
                jobs.append((i, 0, 0, h, w, int(seeds[i])))
            else:
                for k, box in enumerate(hole_crop_boxes(masks[i, 0], self.resolution, self.settings.crop_margin)):
                    jobs.append((i, *box, crop_seed(int(seeds[i]), k)))

        # 4. Run the pipeline in chunks of at most N jobs (a crop run can have more jobs than images)
        pred = images.clone()
        for start in range(0, len(jobs), n):
            chunk = jobs[start:start + n]
            crops = [(hidden[i, :, y0:y1, x0:x1], masks[i, :, y0:y1, x0:x1]) for i, y0, x0, y1, x1, _ in chunk]
            size = (self.resolution, self.resolution)
            image_in = torch.stack([resize_images(img[None], size)[0] for img, _ in crops])
            mask_in = grow_to_latent_cells(torch.stack([resize_masks(m[None], size)[0] for _, m in crops]),
                                           getattr(self.pipe, "vae_scale_factor", 8))
            texts = [self.prompts.for_label(labels[job[0]]) for job in chunk]
            out = self.pipe(
                prompt=[t[0] for t in texts],
                negative_prompt=[t[1] for t in texts],
                image=image_in,
                mask_image=mask_in,
                height=self.resolution,
                width=self.resolution,
                strength=self.settings.strength,
                num_inference_steps=self.settings.steps,
                guidance_scale=self.settings.guidance,
                generator=[torch.Generator("cpu").manual_seed(job[5]) for job in chunk],
                output_type="pt",  # float in [0, 1]: no uint8 rounding before the resize back
            ).images.float().cpu()
            # 5. Resize back and paste
            for (i, y0, x0, y1, x1, _), fill in zip(chunk, out):
                pred[i, :, y0:y1, x0:x1] = resize_images(fill[None], (y1 - y0, x1 - x0))[0]
        return pred


# ---------------------------------------------------------------------- resizing (documented, used by tests)
def grow_to_latent_cells(masks: torch.Tensor, factor: int) -> torch.Tensor:
    """Every latent cell (factor×factor pixels) that touches a hole becomes hole entirely.

    The pipeline shrinks the mask to the latent grid by nearest sampling (one pixel per cell), so a hole narrower
    than a cell (a 2-px stroke at 512 px: LaMa's thin masks on large photos) can vanish from the UNet's mask channel
    while the masked image there is grey. Growing it to whole cells first makes the UNet see every hole; the
    runner composites with the original mask, so only the hole's pixels change."""
    n, _, h, w = masks.shape
    if h % factor or w % factor:
        raise ValueError(f"mask {h}x{w} is not a multiple of the latent cell {factor}")
    cells = F.max_pool2d(masks.float(), kernel_size=factor, stride=factor)
    return cells.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def hole_crop_boxes(mask: torch.Tensor, resolution: int, margin: int) -> list[tuple[int, int, int, int]]:
    """Boxes (y0, x0, y1, x1) for --region crop: one square per group of nearby holes.

    Each hole (connected component) gets its bounding box plus `margin` pixels on every side, widened to a
    square of at least `resolution` (so small holes keep plenty of context and are not upscaled) and shifted
    inside the image; squares that would overlap are merged, so every hole pixel is painted exactly once and
    no crop contains a part of a hole it does not fill. A square larger than the image is clipped to it.
    """
    from scipy import ndimage

    H, W = mask.shape
    labelled, count = ndimage.label(mask.numpy() > 0.5)
    boxes = [(sl[0].start, sl[1].start, sl[0].stop, sl[1].stop) for sl in ndimage.find_objects(labelled)]

    def square(b):
        y0, x0, y1, x1 = b
        side = max(y1 - y0, x1 - x0) + 2 * margin
        side = max(side, resolution)
        sh, sw = min(side, H), min(side, W)
        cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
        top = int(min(max(round(cy - sh / 2), 0), H - sh))
        left = int(min(max(round(cx - sw / 2), 0), W - sw))
        return (top, left, top + sh, left + sw)

    def overlap(a, b):
        return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]

    merged = True
    while merged:  # holes are few; quadratic is fine
        merged = False
        squares = [square(b) for b in boxes]
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                if overlap(squares[i], squares[j]):
                    a, b = boxes[i], boxes[j]
                    boxes[i] = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    del boxes[j]
                    merged = True
                    break
            if merged:
                break
    return sorted(square(b) for b in boxes)


def crop_seed(seed: int, k: int) -> int:
    """Seed of the k-th crop of an image: the image's own seed for the first, a hash of (seed, k) after."""
    if k == 0:
        return seed
    return int(np.random.SeedSequence([seed % 2**63, k]).generate_state(1, np.uint64)[0] % 2**63)


# ---------------------------------------------------------------------- loading
def _offline() -> bool:
    """HF_HUB_OFFLINE as set now (huggingface_hub reads it once at import; a later setenv counts too)."""
    import huggingface_hub.constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    return env or bool(huggingface_hub.constants.HF_HUB_OFFLINE)


def resolve_checkpoint(sd_model: str) -> tuple[str, dict[str, Any]]:
    """Local folder of the pipeline + what identifies it (folder path and a weights fingerprint, or hub id and
    the resolved commit). Hub ids go through the HF cache (HF_HOME / HF_HUB_CACHE); HF_HUB_OFFLINE=1 means
    cache only."""
    path = Path(sd_model).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise UserError(f"--sd-model {sd_model}: folder has no model_index.json; point at a diffusers "
                             "pipeline folder (as written by save_pretrained / huggingface-cli download)")
        return str(path.resolve()), {"sd_model": sd_model, "sd_model_path": str(path.resolve()),
                                     "weights_fingerprint": weights_fingerprint(path)}
    if sd_model.startswith((".", "/", "~")) or sd_model.count("/") > 1 or path.exists():
        raise UserError(f"--sd-model {sd_model}: no such folder (a hub id looks like owner/name)")

    from diffusers import DiffusionPipeline

    offline = _offline()
    try:
        folder = DiffusionPipeline.download(sd_model, use_safetensors=True, local_files_only=offline)
    except Exception as e:  # hub / cache errors come in many classes; the user needs one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if offline:
            raise UserError(f"--sd-model {sd_model}: not in the Hugging Face cache and HF_HUB_OFFLINE=1; download "
                             f"it once online (huggingface-cli download {sd_model}) or pass a local pipeline folder "
                             "with --sd-model DIR") from None
        raise UserError(f"--sd-model {sd_model}: cannot load from the hub ({first}); check the id, or pass a "
                         "local pipeline folder with --sd-model DIR") from None
    folder = Path(folder)
    revision = folder.name if folder.parent.name == "snapshots" else "unknown"
    return str(folder), {"sd_model": sd_model, "sd_model_revision": revision}


def weights_fingerprint(folder: Path) -> str:
    """Quick fingerprint of a local pipeline folder: sha256 over every config and weight file's path, size, and
    first/last 64 KiB. Catches replaced or retrained weights without hashing gigabytes."""
    digest = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in {".json", ".safetensors", ".txt"}):
        size = f.stat().st_size
        digest.update(f"{f.relative_to(folder).as_posix()}:{size}".encode())
        with open(f, "rb") as fh:
            digest.update(fh.read(65536))
            if size > 65536:
                fh.seek(max(size - 65536, 65536))
                digest.update(fh.read())
    return digest.hexdigest()[:16]


def _load_pipeline(folder: str, dtype: torch.dtype):
    from diffusers import AutoPipelineForInpainting, DiffusionPipeline

    kwargs: dict[str, Any] = {_dtype_kwarg(): dtype, "use_safetensors": True}
    index = DiffusionPipeline.load_config(folder)
    if "safety_checker" in index:
        # off (see module docstring); requires_safety_checker=False also silences diffusers' warning about it
        kwargs.update(safety_checker=None, requires_safety_checker=False)
        if "feature_extractor" in index:  # only feeds the safety checker
            kwargs["feature_extractor"] = None
    with _quiet_loading():
        try:
            return AutoPipelineForInpainting.from_pretrained(folder, **kwargs)
        except (OSError, ValueError, EnvironmentError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise UserError(f"--sd-model {folder}: cannot load the pipeline ({first}); note only safetensors "
                             "weights are loaded") from None


@contextlib.contextmanager
def _quiet_loading():
    """No per-component loading bars from diffusers / transformers (the runner has its own progress)."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    was = dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        if was[0]:
            dlog.enable_progress_bar()
        if was[1]:
            tlog.enable_progress_bar()


def _dtype_kwarg() -> str:
    """diffusers renamed from_pretrained's `torch_dtype` to `dtype` (the old name warns); support both."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401  (only in the renaming versions)
        return "dtype"
    except ImportError:
        return "torch_dtype"


def _check_settings(s: Settings, device: str) -> None:
    """Types, choices and ranges come from the declaration; the rules between options and the device are here."""
    validate(s)
    cuda = device.startswith("cuda")
    if int(s.steps * s.strength) < 1:
        raise UserError(f"--steps {s.steps} x --strength {s.strength} leaves no denoising step; raise one of them")
    if s.dtype == "fp16" and not cuda:
        raise UserError(f"--dtype fp16 on {device}: half-precision convolutions need CUDA; use bf16 or fp32")
    if s.resolution is not None and s.resolution % 8:
        raise UserError(f"--resolution {s.resolution}: must be a multiple of 8, at least 64")
    if s.attention == "xformers":
        if not cuda:
            raise UserError(f"--attention xformers needs a CUDA device (got --device {device}); use sdpa")
        try:
            import xformers  # noqa: F401
        except ImportError:
            raise UserError("--attention xformers: xformers is not installed "
                             "(pip install 'diffinpaint[xformers]'); or use --attention sdpa") from None
    if s.cpu_offload and not cuda:
        raise UserError(f"--cpu-offload moves components to a GPU while they run; it needs a CUDA device, "
                         f"got --device {device}")
    if s.lcm_lora:
        try:
            import peft  # noqa: F401
        except ImportError:
            raise UserError("--lcm-lora needs the peft package (pip install peft)") from None


def _apply_options(pipe, s: Settings, device: str, dtype: torch.dtype) -> None:
    import diffusers

    if s.tiny_vae:
        from diffusers import AutoencoderTiny

        try:
            pipe.vae = AutoencoderTiny.from_pretrained(_local_or_hub(s.tiny_vae, "--tiny-vae"), use_safetensors=True,
                                                       **{_dtype_kwarg(): dtype})
        except (OSError, ValueError) as e:
            raise UserError(f"--tiny-vae {s.tiny_vae}: cannot load an AutoencoderTiny "
                             f"({str(e).strip().splitlines()[0]})") from None
    if s.lcm_lora:
        try:
            pipe.load_lora_weights(_local_or_hub(s.lcm_lora, "--lcm-lora"), use_safetensors=True)
        except (OSError, ValueError) as e:
            raise UserError(f"--lcm-lora {s.lcm_lora}: cannot load LoRA weights "
                             f"({str(e).strip().splitlines()[0]})") from None
        pipe.fuse_lora()
    name = "lcm" if s.lcm_lora and s.scheduler is None else s.scheduler
    if name is not None:
        class_name, extra = SCHEDULERS[name]
        pipe.scheduler = getattr(diffusers, class_name).from_config(pipe.scheduler.config, **extra)
    if s.attention == "xformers":
        pipe.enable_xformers_memory_efficient_attention()
    if s.cpu_offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    if s.compile:
        if device.startswith("cuda"):
            pipe.unet.to(memory_format=torch.channels_last)
        pipe.unet = torch.compile(pipe.unet)


def _local_or_hub(ref: str, option: str) -> str:
    """A folder as is; a hub id resolved through the cache (HF_HUB_OFFLINE respected) with a clear error."""
    if Path(ref).expanduser().is_dir():
        return str(Path(ref).expanduser())
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(ref, local_files_only=_offline())
    except Exception:
        raise UserError(f"{option} {ref}: not a folder and not available from the Hugging Face "
                         f"{'cache (HF_HUB_OFFLINE=1)' if _offline() else 'hub'}; pass a local folder") from None


# ---------------------------------------------------------------------- random-weight pipelines (no downloads)
def build_clip_tokenizer(model_max_length: int = 77):
    """The real CLIP BPE tokenizer (the one SD 1.x uses), built offline from the vocabulary open-clip-torch
    ships (bpe_simple_vocab_16e6.txt.gz), the way open_clip's SimpleTokenizer builds its encoder: 256 byte
    symbols, the same with '</w>', one token per merge, then the two special tokens (49408 in all)."""
    import gzip
    from importlib.resources import files

    try:
        from open_clip.tokenizer import bytes_to_unicode
    except ImportError:
        raise UserError("random-weight SD pipelines need open-clip-torch for the CLIP vocabulary: "
                        "pip install 'diffinpaint[bench]'") from None
    from transformers import CLIPTokenizer

    lines = gzip.decompress((files("open_clip") / "bpe_simple_vocab_16e6.txt.gz").read_bytes()).decode("utf-8")
    merges = [tuple(m.split()) for m in lines.split("\n")[1:49152 - 256 - 2 + 1]]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=merges, model_max_length=model_max_length)


def build_random_pipeline(configs: str | Path | dict = CONFIG_DIR, *, seed: int = 0):
    """A StableDiffusionInpaintPipeline with random weights from architecture configs and the real CLIP
    tokenizer. `configs`: a folder with unet.json, vae.json, text_encoder.json, scheduler.json (default:
    full-size SD 1.5 inpainting, shipped in diffinpaint/configs) or a dict with those four keys.
    For speed measurements and tests; the outputs are noise."""
    import diffusers
    from diffusers import AutoencoderKL, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    def load(name):
        if isinstance(configs, dict):
            return dict(configs[name])
        return json.loads((Path(configs) / f"{name}.json").read_text())

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(load("unet"))
    vae = AutoencoderKL.from_config(load("vae"))
    text_cfg = {k: v for k, v in load("text_encoder").items() if not k.startswith("_")}
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_cfg))
    sched_cfg = load("scheduler")
    scheduler = getattr(diffusers, sched_cfg["_class_name"]).from_config(sched_cfg)
    return StableDiffusionInpaintPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=build_clip_tokenizer(text_cfg["max_position_embeddings"]),
        unet=unet, scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
