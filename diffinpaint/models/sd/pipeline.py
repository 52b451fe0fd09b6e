"""Diffusion inpainting through diffusers: model `sd`, every family in families.py (SD 1.5/2, SDXL, SD3/SD3.5,
Kandinsky 2.2, FLUX.1 Fill, and base SD/SDXL checkpoints by latent blending), recognised from the checkpoint.

What happens to one batch (`StableDiffusionModel.inpaint`):
  1. jobs: the whole image (--region full), or a square around each group of nearby holes (--region crop);
  2. each job gets a model size that keeps its aspect: short side = --resolution, each side rounded to the family's
     multiple (8 SD/SDXL, 16 SD3/Flux, 64 Kandinsky; families.py says why);
  3. conditioning (`conditioning`): the photo resized (bicubic, antialias); the model's hole = every model pixel
     whose resize footprint touches a hole pixel, grown to whole latent cells; that hole painted grey AFTER the
     resize. So the known pixels the pipeline sees are the resized photo exactly (no grey bleeds into them), and no
     pixel it sees carries anything of the hole's content (the resize kernel cannot carry it across the border);
  4. one pipeline call per group of same-size jobs, one CPU torch.Generator per job seeded from the image's seed,
     so the noise does not depend on batch size or device;
  5. the prediction is resized back and pasted into a copy of the input.
The runner composites (`mask * pred + (1 - mask) * image`) with the original mask; this model returns the full
prediction.

Only safetensors weights are loaded, remote code never runs, and the safety checker is off: these are the user's
own photos, and a false positive would silently replace a fill with a black square.
"""
from __future__ import annotations

import contextlib
import logging
import math
import sys
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ...util.errors import UserError
from ...util.imageops import resize_images, resize_masks
from ...util.options import option, validate
from ..base import InpaintModel
from . import families
from .families import FAMILIES, Family
from .loading import (CONFIG_DIR, DTYPES, SCHEDULERS, build_clip_tokenizer, build_random_pipeline, dtype_kwarg,
                      load_loras, load_pipeline, local_or_hub, parse_loras, read_index, resolve_checkpoint)
from .prompts import PromptSet, load_prompt_set

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-inpainting"
KANDINSKY_COMBINED = "KandinskyV22InpaintCombinedPipeline"
_SAID: set[tuple[str, str, str]] = set()  # warnings already printed by this process


@dataclass
class Settings:
    sd_model: str = option(DEFAULT_MODEL, "diffusion inpainter, hub id or pipeline folder: SD 1.5/2 or SDXL "
                           "(inpainting or base), SD3/SD3.5, Kandinsky 2.2, FLUX.1 Fill (family read from "
                           "model_index.json)", metavar="ID|DIR")
    prompt_set: str = option("natural", "prompt set: natural, natural-no-negative, animal, empty, or a .toml path",
                             metavar="NAME|PATH")
    # None = the family's default (families.py: the model card's, else diffusers'), written to config.toml
    steps: int | None = option(None, "denoising steps (default: the family's: SD 50, SDXL 20, SD3 28, Kandinsky "
                               "150, Flux Fill 50)", type=int, minimum=1, metavar="N")
    guidance: float | None = option(None, "guidance scale (default: the family's; 1 = off with the empty prompt "
                                    "set; <= 1 turns classifier-free guidance off)", type=float, minimum=0,
                                    metavar="SCALE")
    strength: float | None = option(None, "noise strength in the hole, (0, 1] (default: the family's: 1.0, SDXL "
                                    "inpainting 0.99)", type=float, above=0, maximum=1, metavar="S")
    scheduler: str | None = option(None, "sampler for UNet families (default: the checkpoint's own)", type=str,
                                   choices=sorted(SCHEDULERS))
    # None = fp16 on CUDA (bf16 for SD3 and Flux, as released), fp32 elsewhere (fp16 convolutions on CPU are slow)
    dtype: str | None = option(None, "weights/compute dtype (default on CUDA: fp16, bf16 for SD3/Flux; fp32 on "
                               "CPU)", type=str, choices=sorted(DTYPES))
    variant: str | None = option(None, "weights variant to load: the *.VARIANT.safetensors files, e.g. fp16 (half "
                                 "the download)", type=str, metavar="NAME")
    lora: str | None = option(None, "LoRA weights, comma-separated: FILE.safetensors, DIR, hub ID or "
                              "ID/FILE.safetensors, each with an optional :SCALE (default 1.0); needs peft",
                              type=str, metavar="REF[:SCALE],...")
    # "sdpa" = torch scaled_dot_product_attention (diffusers' default processor); "xformers" needs CUDA
    attention: str = option("sdpa", "attention kernel", choices=("sdpa", "xformers"))
    compile: bool = option(False, "torch.compile the denoiser (UNet or transformer)")
    # keep components on CPU and move each to the GPU only while it runs (saves memory, costs speed)
    cpu_offload: bool = option(False, "offload idle components to CPU (CUDA only; lets Flux/SD3/SDXL fit small "
                               "GPUs)", outputs=False)
    region: str = option("full", "full: resize the whole image; crop: inpaint a square around each hole, for large "
                         "photos with small holes", choices=("full", "crop"))
    resolution: int | None = option(None, "short side of the model input; each side a multiple of 8 (SD/SDXL), 16 "
                                    "(SD3/Flux) or 64 (Kandinsky) (default: the family's: 512 SD, 1024 SDXL/SD3/"
                                    "Flux, 768 Kandinsky)", type=int, minimum=64, metavar="PX")
    tiny_vae: str | None = option(None, "TAESD (AutoencoderTiny) hub id or folder replacing the VAE (SD/SDXL): "
                                  "faster, lower quality", type=str, metavar="ID|DIR")
    lcm_lora: str | None = option(None, "LCM-LoRA weights + LCM scheduler for few-step sampling (SD/SDXL; use e.g. "
                                  "--steps 4 --guidance 1.5; needs peft)", type=str, metavar="ID|DIR")
    crop_margin: int = option(128, "--region crop: context pixels kept around each hole's bounding box", minimum=0,
                              metavar="PX")
    kandinsky_prior: str | None = option(None, "Kandinsky 2.2: the prior pipeline that turns the prompt into an "
                                         "image embedding (default kandinsky-community/kandinsky-2-2-prior; not "
                                         "needed for a combined pipeline folder)", type=str, metavar="ID|DIR")


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
        cuda = self.device.startswith("cuda")
        # 1. Cheap checks first: prompt set, option values, the device
        self.prompts: PromptSet = load_prompt_set(s.prompt_set)
        _check_device(s, self.device)

        # 2. The checkpoint and its family
        self.checkpoint: dict[str, Any] = {"sd_model": s.sd_model}
        if pipeline is None:
            folder, self.checkpoint = resolve_checkpoint(s.sd_model, variant=s.variant)
            class_name, index, denoiser_config = read_index(folder)
        else:
            class_name, denoiser_config = type(pipeline).__name__, _denoiser_config(pipeline)
        self.family = f = families.detect(class_name, denoiser_config, s.sd_model)
        _check_family(s, f)
        self.blending = f.blending and (denoiser_config or {}).get("in_channels") in (4, 16)
        self.dtype_name = s.dtype or (f.cuda_dtype if cuda else "fp32")
        self.dtype = DTYPES[self.dtype_name]
        if pipeline is None:
            prior_folder = None
            if f.key == "kandinsky2.2" and class_name != KANDINSKY_COMBINED:
                prior_folder, record = resolve_checkpoint(s.kandinsky_prior or f.extra["prior"],
                                                          "--kandinsky-prior", s.variant)
                self.checkpoint.update(record)
            pipeline = load_pipeline(folder, index, f, self.dtype, s.variant, prior_folder)
        elif pipeline.dtype != self.dtype:
            pipeline = pipeline.to(dtype=self.dtype)
        self.pipe = pipeline

        # 3. What the options resolve to for this family (None = the family's default)
        self.empty_prompts = not self.prompts.prompt and not self.prompts.negative_prompt
        guidance_off = self.empty_prompts and s.guidance is None and f.cfg  # nothing to guide towards
        self.steps = s.steps if s.steps is not None else f.steps
        self.guidance = s.guidance if s.guidance is not None else (1.0 if guidance_off else f.guidance)
        self.strength = None if f.strength is None else (s.strength if s.strength is not None else f.strength)
        self.prior_steps = f.extra.get("prior_steps", 0)
        self.prior_guidance = 1.0 if guidance_off else f.extra.get("prior_guidance", 0.0)
        self.multiple = families.multiple_of(f, self.pipe)
        self.cell = families.latent_cell(f, self.pipe)
        self.resolution = s.resolution or families.native_resolution(f, self.pipe)
        if self.resolution % self.multiple:
            raise UserError(f"--resolution {self.resolution}: {f.title} needs a multiple of {self.multiple} "
                            f"(e.g. {self.resolution - self.resolution % self.multiple or self.multiple})")
        if self.strength is not None and int(self.steps * self.strength) < 1:
            raise UserError(f"--steps {self.steps} x --strength {self.strength} leaves no denoising step; raise "
                            "one of them")

        # 4. Optional parts and speed options
        self.loras = _apply_options(self.pipe, s, f, self.device, self.dtype)
        self.pipe.set_progress_bar_config(disable=True)

        # 5. Say once when the prompt set's negative prompt cannot be used (never dropped silently)
        self.negative_prompt_used, why = self._negative_prompt_use()
        said = (f.key, self.prompts.negative_prompt, why)
        if self.prompts.negative_prompt and not self.negative_prompt_used and said not in _SAID:
            _SAID.add(said)  # once per process: eval builds each model twice (checks, then the run)
            print(f"warning: sd ({f.key}): the prompt set's negative prompt {self.prompts.negative_prompt!r} is not "
                  f"used: {why}; manifest.jsonl records negative_prompt_used: false", file=sys.stderr)

    def _negative_prompt_use(self) -> tuple[bool, str]:
        f = self.family
        if not f.negative_prompt:
            return False, (f"{f.pipeline} takes no negative prompt (FLUX.1 Fill is guidance-distilled: its guidance "
                           "is an input of the transformer, not classifier-free guidance, and diffusers' pipeline "
                           "offers no true CFG for it)")
        if self.guidance <= 1 and self.prior_guidance <= 1:
            return False, f"--guidance {self.guidance:g} turns classifier-free guidance off"
        return True, ""

    # ------------------------------------------------------------------ model surface
    def check_labels(self, labels: Sequence[str | None]) -> None:
        self.prompts.check_labels(labels)

    def manifest_fields(self, index: int, labels: Sequence[str | None]) -> dict[str, Any]:
        prompt, negative = self.prompts.for_label(labels[index])
        return {"prompt": prompt, "negative_prompt": negative, "negative_prompt_used": self.negative_prompt_used,
                "family": self.family.key, "inpainting": "latent blending" if self.blending else "inpainting model"}

    def resolved_outputs(self) -> dict[str, Any]:
        """What the declared options resolved to for this checkpoint's family and this device: the checkpoint (and
        its weights' fingerprint), the family and its defaults, the prompt set's texts, the scheduler class, dtype,
        resolution, LoRAs (with their files' hashes), library versions."""
        import diffusers
        import transformers

        f = self.family
        kandinsky = f.key == "kandinsky2.2"
        denoising = self.pipe.decoder_pipe if kandinsky else self.pipe
        out = {**self.checkpoint, "family": f.key,
               "pipeline": ("KandinskyV22PriorPipeline + KandinskyV22InpaintPipeline" if kandinsky
                            else type(self.pipe).__name__),
               "inpainting": "latent blending" if self.blending else "inpainting model",
               "prompt_set": self.prompts.as_dict(),
               "negative_prompt_used": self.negative_prompt_used, "steps": self.steps, "guidance": self.guidance,
               "strength": self.strength, "resolution": self.resolution, "size_multiple": self.multiple,
               "scheduler": self.settings.scheduler or ("lcm" if self.settings.lcm_lora else "checkpoint"),
               "scheduler_class": type(denoising.scheduler).__name__, "dtype": self.dtype_name,
               "lora": self.loras or None, "diffusers": diffusers.__version__,
               "transformers": transformers.__version__}
        if kandinsky:
            out.update(prior_steps=self.prior_steps, prior_guidance=self.prior_guidance)
        return out

    def model_size(self, h: int, w: int) -> tuple[int, int]:
        return model_size(h, w, self.resolution, self.multiple)

    @torch.no_grad()
    def inpaint(self, images, masks, *, seeds, labels):
        # 1. Check inputs
        n, c, h, w = images.shape
        if c != 3 or masks.shape != (n, 1, h, w) or len(seeds) != n or len(labels) != n:
            raise ValueError(f"sd.inpaint: got images {tuple(images.shape)}, masks {tuple(masks.shape)}, "
                             f"{len(seeds)} seeds, {len(labels)} labels; need N×3×H×W, N×1×H×W, N, N")
        images = images.detach().float().cpu()
        masks = (masks.detach().float().cpu() > 0.5).float()

        # 2. Jobs: (image index, box y0, x0, y1, x1, seed); images without a hole need no work
        jobs = []
        for i in range(n):
            if not masks[i].any():
                continue
            if self.settings.region == "full":
                jobs.append((i, 0, 0, h, w, int(seeds[i])))
            else:
                for k, box in enumerate(hole_crop_boxes(masks[i, 0], self.resolution, self.settings.crop_margin)):
                    jobs.append((i, *box, crop_seed(int(seeds[i]), k)))

        # 3. Run the pipeline on at most N jobs at a time (a crop run can have more jobs than images), one call per
        #    model size among them (crops of one image can differ in shape)
        pred = images.clone()
        for start in range(0, len(jobs), n):
            by_size: dict[tuple[int, int], list] = {}
            for job in jobs[start:start + n]:
                by_size.setdefault(self.model_size(job[3] - job[1], job[4] - job[2]), []).append(job)
            for size, group in by_size.items():
                inputs = [conditioning(images[i, :, y0:y1, x0:x1], masks[i, :, y0:y1, x0:x1], size, self.cell)
                          for i, y0, x0, y1, x1, _ in group]
                texts = [self.prompts.for_label(labels[job[0]]) for job in group]
                with _quiet_calls():
                    out = families.call(
                        self.family, self.pipe, images=torch.stack([x for x, _ in inputs]),
                        masks=torch.stack([m for _, m in inputs]), prompts=[t[0] for t in texts],
                        negatives=[t[1] for t in texts], steps=self.steps, guidance=self.guidance,
                        strength=self.strength, prior_steps=self.prior_steps, prior_guidance=self.prior_guidance,
                        generators=[torch.Generator("cpu").manual_seed(job[5]) for job in group])
                # 4. Resize back and paste
                for (i, y0, x0, y1, x1, _), fill in zip(group, out):
                    pred[i, :, y0:y1, x0:x1] = resize_images(fill[None], (y1 - y0, x1 - x0))[0].clamp(0, 1)
        return pred


# ---------------------------------------------------------------------- sizes and conditioning (used by tests)
def model_size(h: int, w: int, resolution: int, multiple: int) -> tuple[int, int]:
    """The model input size for an h×w job: aspect kept, short side = resolution, each side rounded to `multiple`.
    Resizing keeps every photo undistorted (a 256×384 photo at 512 becomes 512×768, not 512×512); padding instead
    would spend denoising work on pixels that are not there and give the model an artificial border."""
    scale = resolution / min(h, w)
    return (max(multiple, round(h * scale / multiple) * multiple),
            max(multiple, round(w * scale / multiple) * multiple))


def resize_reach(n_in: int, n_out: int) -> int:
    """How far (input pixels) one output pixel of `resize_images` reads beyond its own footprint: antialiased
    bicubic reads 2 pixels of the coarser grid either side; 0 when the side is unchanged. Rounded up, plus one."""
    if n_in == n_out:
        return 0
    return math.ceil(2 * max(n_in / n_out, 1.0)) + 1


def conditioning(image: torch.Tensor, mask: torch.Tensor, size: tuple[int, int],
                 cell: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(image 3×H×W, mask 1×H×W) as the pipeline gets them for one job (image 3×h×w, mask 1×h×w, 1 = hole).

    The hole as the model sees it: every model pixel whose resize kernel reads a hole pixel (the hole widened by
    `resize_reach`, then area-resized with `> 0`, so it never shrinks), grown to whole latent cells (see
    `grow_to_latent_cells`). The image: the photo resized, that hole painted grey. Known pixels are therefore the
    resized photo exactly, and none of them holds anything of the hole's content."""
    h, w = image.shape[-2:]
    ry, rx = resize_reach(h, size[0]), resize_reach(w, size[1])
    seen = mask[None].float()
    if ry or rx:
        seen = F.max_pool2d(seen, kernel_size=(2 * ry + 1, 2 * rx + 1), stride=1, padding=(ry, rx))
    hole = grow_to_latent_cells(resize_masks(seen, size), cell)[0]
    resized = resize_images(image[None], size)[0]
    return resized * (1 - hole) + 0.5 * hole, hole


def grow_to_latent_cells(masks: torch.Tensor, factor: int) -> torch.Tensor:
    """Every latent cell (factor×factor pixels) that touches a hole becomes hole entirely.

    SD's pipelines shrink the mask to the latent grid by nearest sampling (one pixel per cell), so a hole narrower
    than a cell (a 2-px stroke at 512 px: LaMa's thin masks on large photos) can vanish from the UNet's mask channel
    while the masked image there is grey. Growing it to whole cells first makes the model see every hole; the
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
    no crop contains a part of a hole it does not fill. A square larger than the image is clipped to it (the crop is
    then sized for the model like a whole photo: aspect kept).
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


# ---------------------------------------------------------------------- option rules and application
@contextlib.contextmanager
def _quiet_calls():
    """diffusers' SDXL pipeline moves its VAE to float32 with `.to(dtype=...)` on every call (force_upcast), and
    diffusers (0.42) then warns about "modules that should be kept in float32" even when there are none: several
    lines per batch, about its own code. Only that logger is raised to errors, only during the call."""
    logger = logging.getLogger("diffusers.models.modeling_utils")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _denoiser_config(pipe) -> dict[str, Any]:
    for name in ("unet", "transformer"):
        module = getattr(pipe, name, None)
        if module is not None:
            return dict(module.config)
    return {}


def _check_device(s: Settings, device: str) -> None:
    """Types, choices and ranges come from the declaration; the rules between options and the device are here."""
    validate(s)
    cuda = device.startswith("cuda")
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
    for flag, value in (("--lora", s.lora), ("--lcm-lora", s.lcm_lora)):
        if value:
            try:
                import peft  # noqa: F401
            except ImportError:
                raise UserError(f"{flag} needs the peft package (pip install 'diffinpaint[lora]')") from None


def _check_family(s: Settings, f: Family) -> None:
    """Options that the checkpoint's family cannot honour are refused, naming the family (never ignored)."""
    if s.strength is not None and f.strength is None:
        raise UserError(f"--strength: {f.title}'s pipeline has no strength (it always starts from noise)")
    if s.scheduler is not None and not f.schedulers:
        raise UserError(f"--scheduler {s.scheduler}: {f.title} samples with its flow-matching scheduler; "
                        "--scheduler swaps the UNet families' samplers only")
    if s.lora and not f.lora:
        raise UserError(f"--lora: diffusers has no LoRA loader for {f.title}")
    for flag, value in (("--tiny-vae", s.tiny_vae), ("--lcm-lora", s.lcm_lora)):
        if value and not f.tiny_vae:
            raise UserError(f"{flag}: for SD 1.5/2 and SDXL only, not {f.title}")
    if s.kandinsky_prior and f.key != "kandinsky2.2":
        raise UserError(f"--kandinsky-prior: the checkpoint is {f.title}, not Kandinsky 2.2")


def _apply_options(pipe, s: Settings, f: Family, device: str, dtype: torch.dtype) -> list[dict[str, Any]]:
    """Swap in the optional parts, then place the pipeline on the device. Returns the LoRAs loaded."""
    import diffusers

    denoising = pipe.decoder_pipe if f.key == "kandinsky2.2" else pipe  # the pipeline that owns the sampler
    if s.tiny_vae:
        try:
            pipe.vae = diffusers.AutoencoderTiny.from_pretrained(local_or_hub(s.tiny_vae, "--tiny-vae"),
                                                                 use_safetensors=True, **{dtype_kwarg(): dtype})
        except (OSError, ValueError) as e:
            raise UserError(f"--tiny-vae {s.tiny_vae}: cannot load an AutoencoderTiny "
                            f"({str(e).strip().splitlines()[0]})") from None
    if s.lcm_lora:
        try:
            pipe.load_lora_weights(local_or_hub(s.lcm_lora, "--lcm-lora"), use_safetensors=True)
        except (OSError, ValueError) as e:
            raise UserError(f"--lcm-lora {s.lcm_lora}: cannot load LoRA weights "
                            f"({str(e).strip().splitlines()[0]})") from None
        pipe.fuse_lora()
    loras = load_loras(pipe, parse_loras(s.lora)) if s.lora else []
    name = "lcm" if s.lcm_lora and s.scheduler is None else s.scheduler
    if name is not None:
        class_name, extra = SCHEDULERS[name]
        scheduler = getattr(diffusers, class_name).from_config(denoising.scheduler.config, **extra)
        denoising.scheduler = scheduler
        if denoising is not pipe:
            pipe.scheduler = scheduler
    if s.attention == "xformers":
        pipe.enable_xformers_memory_efficient_attention()
    if s.cpu_offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    if s.compile:
        attr = families.denoiser_name(f)
        module = getattr(denoising, attr)
        if device.startswith("cuda") and attr == "unet":
            module.to(memory_format=torch.channels_last)
        setattr(denoising, attr, torch.compile(module))
    return loras


__all__ = ["CONFIG_DIR", "DEFAULT_MODEL", "FAMILIES", "Settings", "StableDiffusionModel", "build_clip_tokenizer",
           "build_random_pipeline", "conditioning", "grow_to_latent_cells", "hole_crop_boxes", "model_size"]
