"""CLIP scores (open-clip-torch): a semantic counterpart to LPIPS for holes, and prompt alignment for prompted models.

  clip_i       per rectangular hole: cosine similarity of the CLIP image embeddings of the output's hole crop and
               the original's crop; an image's value = mean over its holes, summary = mean over holes (as ssim).
  clip_i_bbox  free-form masks (masks/*.png): the same cosine on the crop of the mask's bounding box, known pixels
               included (they are identical in output and original, so this reads higher than a hole-only number
               would; named *_bbox by the README's rule). Rectangular holes leave it null, free-form ones leave
               clip_i null: CLIP has no per-pixel form to average over a free-form hole.
  clip_t       CLIPScore (Hessel et al. 2021, as torchmetrics computes it): max(100 * cos(E_image, E_text), 0) of the
               whole composited output against the prompt the model was given for that image (the run's
               manifest.jsonl, written by prompted models: SD). Mean over images. Null for models without a
               prompt and for images whose prompt is empty (an empty prompt says nothing to align with).
               torchmetrics clamps the batch mean; we clamp per image, as the paper does: the two agree whenever
               no cosine is negative (with trained CLIP weights, practically always).

Every crop / image goes through open_clip's own evaluation transform for the model (resize the shorter side to
224 px, bicubic; centre crop; CLIP's mean/std), so the numbers equal the formula applied to open_clip's own
`encode_image` / `encode_text` (tests/test_clip.py).

`--clip-model` names an open_clip architecture, optionally with the pretrained tag of the weights: `ViT-B-32`
(default) = `ViT-B-32:openai`, OpenAI's ViT-B/32, the model of the CLIPScore paper and of torchmetrics' default
for CLIPScore, so clip_t lines up with published CLIPScores. The tag fixes what open_clip fixes for those weights:
QuickGELU (OpenAI's weights need it), the normalisation and the Hugging Face repo the weights come from.
`--clip-weights FILE` is open_clip's `open_clip_model.safetensors` (read as plain tensors: nothing is unpickled);
without it the Hugging Face hub cache is tried (the tag's repo, e.g. timm/vit_base_patch32_clip_224.openai). Eval
never downloads them itself. Without weights all three columns are null with one warning, as FID is.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..util.errors import UserError
from ..util.files import sha256_file

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_TAG = "openai"  # the CLIPScore paper's ViT-B/32
WEIGHTS_NAME = "open_clip_model.safetensors"  # the file open_clip's Hugging Face repos hold
_PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")


class CLIPUnavailable(RuntimeError):
    """No CLIP weights: clip_i / clip_i_bbox / clip_t are reported missing, everything else still runs."""


def parse_model(spec: str) -> tuple[str, str | None]:
    """`ARCH` or `ARCH:TAG` -> (architecture, pretrained tag). ARCH alone takes `openai` when open_clip lists it,
    else no tag (then --clip-weights is needed: there is no repo to look in)."""
    import open_clip

    arch, _, tag = str(spec).partition(":")
    if arch not in open_clip.list_models():
        raise UserError(f"--clip-model {spec}: {arch} is not an open_clip architecture (e.g. {DEFAULT_MODEL}, "
                        "ViT-B-16, ViT-L-14; open_clip.list_models() lists them)")
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if tag:
        if tag not in tags:
            raise UserError(f"--clip-model {spec}: open_clip has no weights tagged {tag} for {arch} "
                            f"(it has: {', '.join(tags) or 'none'})")
        return arch, tag
    return arch, (DEFAULT_TAG if DEFAULT_TAG in tags else None)


def _pretrained_cfg(arch: str, tag: str | None) -> dict:
    import open_clip

    return dict(open_clip.get_pretrained_cfg(arch, tag)) if tag else {}


def hub_repo(arch: str, tag: str | None) -> str | None:
    """The Hugging Face repo open_clip takes these weights from (e.g. timm/vit_base_patch32_clip_224.openai)."""
    return (_pretrained_cfg(arch, tag).get("hf_hub") or "").strip("/") or None


def find_weights(given: str | Path | None, arch: str, tag: str | None) -> Path:
    """The given file, else the Hugging Face cache's copy of the tag's safetensors, else a download (not offline)."""
    if given is not None:
        path = Path(given)
        if not path.is_file():
            raise UserError(f"--clip-weights {path}: no such file; pass open_clip's {WEIGHTS_NAME} for {arch} (or "
                            "leave it out to report clip_i/clip_t as missing)")
        if path.suffix != ".safetensors":
            raise UserError(f"--clip-weights {path}: give open_clip's safetensors file ({WEIGHTS_NAME}); "
                            "pickled checkpoints are not read")
        return path
    repo = hub_repo(arch, tag)
    if repo is None:
        raise CLIPUnavailable(f"{arch} has no pretrained tag with a Hugging Face repo; pass --clip-weights FILE")
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo, WEIGHTS_NAME)
    if isinstance(cached, str) and Path(cached).is_file():
        return Path(cached)
    # no download here: eval never fetches 600 MB behind the user's back (`hf download REPO FILE` does it once)
    raise CLIPUnavailable(f"no {arch} ({tag}) weights in the Hugging Face cache ({repo}/{WEIGHTS_NAME}; "
                          f"`hf download {repo} {WEIGHTS_NAME}` puts them there)")


class CLIP:
    """open_clip model + its evaluation transform + tokenizer. Embeddings come back unit-normalised, float64, CPU."""

    def __init__(self, model: str = DEFAULT_MODEL, weights: str | Path | None = None, device: str = "cpu",
                 batch_size: int = 32):
        import open_clip
        from open_clip.transform import PreprocessCfg, image_transform_v2

        self.arch, self.tag = parse_model(model)
        self.name = self.arch + (f":{self.tag}" if self.tag else "")
        path = find_weights(weights, self.arch, self.tag)
        cfg = _pretrained_cfg(self.arch, self.tag)
        logging.disable(logging.WARNING)  # open_clip warns on the root logger that it built random weights
        try:
            net = open_clip.create_model(self.arch, pretrained=None, device="cpu",
                                         force_quick_gelu=bool(cfg.get("quick_gelu", False)),
                                         force_preprocess_cfg={k: cfg[k] for k in _PREPROCESS_KEYS if cfg.get(k)})
        finally:
            logging.disable(logging.NOTSET)
        try:
            open_clip.load_checkpoint(net, str(path), strict=True)
        except Exception as err:
            first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
            raise UserError(f"--clip-weights {path}: not open_clip {self.arch} weights ({first}); pass the "
                            f"{WEIGHTS_NAME} of {self.name}") from None
        self.model = net.to(device).eval()
        self.preprocess = image_transform_v2(PreprocessCfg(**net.visual.preprocess_cfg), is_train=False)
        self.tokenizer = open_clip.get_tokenizer(self.arch)
        self.device, self.batch_size = device, batch_size
        self.weights_sha256 = sha256_file(path)

    @torch.no_grad()
    def encode_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """uint8 H×W×3 RGB images (any size) -> N×D unit vectors."""
        from PIL import Image

        out = []
        for start in range(0, len(images), self.batch_size):
            batch = torch.stack([self.preprocess(Image.fromarray(np.ascontiguousarray(im)))
                                 for im in images[start : start + self.batch_size]])
            out.append(self.model.encode_image(batch.to(self.device)).float().cpu())
        return _unit(torch.cat(out)) if out else np.zeros((0, 0))

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(list(texts[start : start + self.batch_size]))
            out.append(self.model.encode_text(tokens.to(self.device)).float().cpu())
        return _unit(torch.cat(out)) if out else np.zeros((0, 0))


def _unit(features: torch.Tensor) -> np.ndarray:
    f = features.double()
    return (f / f.norm(p=2, dim=-1, keepdim=True)).numpy()


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of unit vectors."""
    return np.sum(np.asarray(a) * np.asarray(b), axis=-1)


def clip_score(image_embeddings: np.ndarray, text_embeddings: np.ndarray) -> np.ndarray:
    """CLIPScore per row: max(100 * cos, 0)."""
    return np.maximum(100.0 * cosine(image_embeddings, text_embeddings), 0.0)
