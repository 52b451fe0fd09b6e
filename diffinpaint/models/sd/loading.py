"""Finding, loading and preparing a diffusers pipeline for the `sd` model.

Only safetensors weights are loaded and remote code never runs. Hub ids go through the Hugging Face cache
(HF_HOME / HF_HUB_CACHE); HF_HUB_OFFLINE=1 means cache only, with a one-line error naming what is missing.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from ...util.errors import UserError
from .families import Family

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


# ---------------------------------------------------------------------------------------------- where it is
def offline() -> bool:
    """HF_HUB_OFFLINE as set now (huggingface_hub reads it once at import; a later setenv counts too)."""
    import huggingface_hub.constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    return env or bool(huggingface_hub.constants.HF_HUB_OFFLINE)


def resolve_checkpoint(ref: str, option: str = "--sd-model", variant: str | None = None) -> tuple[str, dict]:
    """Local folder of a pipeline + what identifies it (folder path and a weights fingerprint, or hub id and the
    resolved commit)."""
    key = option.lstrip("-").replace("-", "_")
    fingerprint = "weights_fingerprint" if key == "sd_model" else f"{key}_fingerprint"
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise UserError(f"{option} {ref}: folder has no model_index.json; point at a diffusers "
                            "pipeline folder (as written by save_pretrained / huggingface-cli download)")
        return str(path.resolve()), {key: ref, f"{key}_path": str(path.resolve()),
                                     fingerprint: weights_fingerprint(path)}
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1 or path.exists():
        raise UserError(f"{option} {ref}: no such folder (a hub id looks like owner/name)")

    from diffusers import DiffusionPipeline

    try:
        folder = DiffusionPipeline.download(ref, use_safetensors=True, local_files_only=offline(), variant=variant)
    except Exception as e:  # hub / cache errors come in many classes; the user needs one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if offline():
            raise UserError(f"{option} {ref}: not in the Hugging Face cache and HF_HUB_OFFLINE=1; download "
                            f"it once online (huggingface-cli download {ref}) or pass a local pipeline folder "
                            f"with {option} DIR") from None
        raise UserError(f"{option} {ref}: cannot load from the hub ({first}); check the id, or pass a "
                        f"local pipeline folder with {option} DIR") from None
    folder = Path(folder)
    revision = folder.name if folder.parent.name == "snapshots" else "unknown"
    return str(folder), {key: ref, f"{key}_revision": revision}


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


def read_index(folder: str) -> tuple[str, dict, dict | None]:
    """(pipeline class name, model_index.json, the denoiser's config or None) of a pipeline folder."""
    index = json.loads((Path(folder) / "model_index.json").read_text())
    denoiser = None
    for name in ("unet", "transformer"):
        config = Path(folder) / name / "config.json"
        if name in index and config.is_file():
            denoiser = json.loads(config.read_text())
            break
    return index.get("_class_name", ""), index, denoiser


# ---------------------------------------------------------------------------------------------- loading
def load_pipeline(folder: str, index: dict, family: Family, dtype: torch.dtype, variant: str | None,
                  prior_folder: str | None = None):
    """The family's pipeline class, from a folder of that pipeline or of its text-to-image sibling (a base
    checkpoint: the inpainting pipeline takes the same components). Kandinsky: one KandinskyV22InpaintCombinedPipeline
    from a combined folder, or built from the decoder folder and the prior folder."""
    import diffusers

    kwargs: dict[str, Any] = {dtype_kwarg(): dtype, "use_safetensors": True}
    if variant:
        kwargs["variant"] = variant
    if "safety_checker" in index:
        # off: these are the user's own photos, and a false positive would silently replace a fill with a black
        # square; requires_safety_checker=False also silences diffusers' warning about it
        kwargs.update(safety_checker=None, requires_safety_checker=False)
        if "feature_extractor" in index:  # only feeds the safety checker
            kwargs["feature_extractor"] = None
    with quiet_loading():
        try:
            if family.key == "kandinsky2.2":
                combined = diffusers.KandinskyV22InpaintCombinedPipeline
                if index.get("_class_name") == combined.__name__:
                    return combined.from_pretrained(folder, **kwargs)
                decoder = diffusers.KandinskyV22InpaintPipeline.from_pretrained(folder, **kwargs)
                prior = diffusers.KandinskyV22PriorPipeline.from_pretrained(prior_folder, **kwargs)
                return combined(**decoder.components, **{f"prior_{k}": v for k, v in prior.components.items()})
            return getattr(diffusers, family.pipeline).from_pretrained(folder, **kwargs)
        except (OSError, ValueError, EnvironmentError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise UserError(f"--sd-model {folder}: cannot load the pipeline ({first}); note only safetensors "
                            "weights are loaded") from None


@contextlib.contextmanager
def quiet_loading():
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


def dtype_kwarg() -> str:
    """diffusers renamed from_pretrained's `torch_dtype` to `dtype` (the old name warns); support both."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401  (only in the renaming versions)
        return "dtype"
    except ImportError:
        return "torch_dtype"


def local_or_hub(ref: str, option: str, allow_patterns: list[str] | None = None) -> str:
    """A folder as is; a hub id resolved through the cache (HF_HUB_OFFLINE respected) with a clear error."""
    if Path(ref).expanduser().is_dir():
        return str(Path(ref).expanduser())
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(ref, local_files_only=offline(), allow_patterns=allow_patterns)
    except Exception:
        raise UserError(f"{option} {ref}: not a folder and not available from the Hugging Face "
                        f"{'cache (HF_HUB_OFFLINE=1)' if offline() else 'hub'}; pass a local folder") from None


# ---------------------------------------------------------------------------------------------- LoRA
def parse_loras(text: str | None) -> list[tuple[str, float]]:
    """`--lora REF[:SCALE],REF[:SCALE]` -> [(REF, SCALE)], scale 1.0 when not given. REF: a .safetensors file, a
    folder holding one, a hub id, or hub id/file.safetensors."""
    if not text:
        return []
    result = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            raise UserError(f"--lora {text}: an empty entry; separate LoRAs with single commas")
        ref, scale = item, 1.0
        head, sep, tail = item.rpartition(":")
        if sep and head:
            try:
                ref, scale = head, float(tail)
            except ValueError:
                pass  # a colon inside the reference
        result.append((ref, scale))
    return result


def resolve_lora(ref: str) -> tuple[str, str, dict[str, Any]]:
    """(folder, weight file name, record for config.toml: the file's sha256) of one LoRA; safetensors only."""
    path = Path(ref).expanduser()
    if path.is_file():
        if path.suffix != ".safetensors":
            raise UserError(f"--lora {ref}: only .safetensors LoRA files are loaded (no pickles)")
        folder, name = path.parent, path.name
    else:
        weight = None
        if not path.is_dir() and ref.endswith(".safetensors") and ref.count("/") >= 2 and not ref.startswith(
                (".", "/", "~")):  # owner/name/file.safetensors on the hub
            ref, weight = ref.rsplit("/", 1)
        elif not path.is_dir() and (ref.startswith((".", "/", "~")) or ref.count("/") != 1):
            raise UserError(f"--lora {ref}: no such file or folder (a hub id looks like owner/name)")
        folder = Path(local_or_hub(ref, "--lora", allow_patterns=[weight] if weight else ["*.safetensors"]))
        found = sorted(p.name for p in folder.glob("*.safetensors"))
        if weight is None:
            if "pytorch_lora_weights.safetensors" in found:
                weight = "pytorch_lora_weights.safetensors"
            elif len(found) == 1:
                weight = found[0]
            else:
                listed = ", ".join(found) or "none"
                raise UserError(f"--lora {ref}: {'several' if found else 'no'} .safetensors files ({listed}); "
                                "name one: --lora FOLDER/FILE.safetensors")
        path = folder / weight
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]  # what identifies it (a moved file resumes)
    return str(path.parent), path.name, {"sha256": digest}


def load_loras(pipe, loras: list[tuple[str, float]]) -> list[dict[str, Any]]:
    """Load each LoRA as its own adapter, weight them by their scales (set_adapters) and fuse them into the
    denoiser and text encoders (no LoRA cost per step). Returns what was loaded, for config.toml."""
    records, names = [], []
    for i, (ref, scale) in enumerate(loras):
        folder, weight, record = resolve_lora(ref)
        name = f"lora{i}"
        try:
            pipe.load_lora_weights(folder, weight_name=weight, adapter_name=name, use_safetensors=True)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise UserError(f"--lora {ref}: cannot load LoRA weights into {type(pipe).__name__} "
                            f"({(str(e).strip().splitlines() or [type(e).__name__])[0]})") from None
        names.append(name)
        records.append({"ref": ref, "scale": scale, **record})
    pipe.set_adapters(names, adapter_weights=[scale for _, scale in loras])
    pipe.fuse_lora(adapter_names=names, lora_scale=1.0)
    pipe.unload_lora_weights()  # the fused weights stay; the adapter layers go
    return records


# ---------------------------------------------------------------------------------------------- random weights
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
