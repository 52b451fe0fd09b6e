"""LaMa inference, as LaMa's own evaluation runs it (bin/predict.py with configs/prediction/default.yaml), for a
checkpoint the toolkit trained and for published weights alike: the same generator class runs both.

    diffinpaint run --model lama --lama-weights big-lama.safetensors --data DATA --out RUN
    diffinpaint run --model lama --checkpoint runs/lama --data DATA --out RUN

Per batch (images of one size): each image at its own resolution, padded at the bottom and right to a multiple of
8 (numpy's 'symmetric' padding, as LaMa's pad_img_to_modulo; at least 16 px), the mask binarised, the holes zeroed
and the mask concatenated as a fourth channel, the generator's prediction cropped back. The runner composites, so
known pixels stay the input's. --lama-max-side N first shrinks images whose longer side exceeds N (bicubic,
antialiased; holes never shrink) and enlarges the prediction back: for 4K photos, where the full-size FFT layers
would need tens of GB. BatchNorm in eval mode and no noise: the fill is deterministic and does not depend on the
other images of the batch. --lama-dtype auto runs the generator under bf16 autocast on GPUs that support it (the
FFTs stay fp32 there) and in fp32 elsewhere.

Pretrained weights (--lama-weights FILE): a LaMa generator state dict in safetensors (big-lama.safetensors: keys
`model.model.*`), or a .pth/.ckpt read with torch.load(weights_only=True) (a Lightning checkpoint's `state_dict`
with its `generator.` keys is accepted; discriminator and loss weights in it are ignored). TorchScript archives
(IOPaint's big-lama.pt) and pickles that need code to load are refused with one line saying how to get safetensors.
The block count and width are read from the tensors (big-lama: 18 blocks; LaMa-Fourier: 9).
"""
from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ...util.errors import UserError
from ...util.imageops import resize_images, resize_masks
from ...util.options import option
from ..predictor import Predictor
from .nets import DOWNSAMPLINGS, build_network, generator_input, pad_symmetric, padded_side

DTYPES = ("auto", "fp32", "bf16")
TRAINED_SIZE = 256  # LaMa's training crops (what a pretrained file's config says it was trained at)
GET_SAFETENSORS = ("pass a LaMa generator in safetensors (big-lama.safetensors; README, 'LaMa', says where to get "
                   "it) or convert this file once, where you trust it: python -c \"import torch, safetensors.torch as "
                   "s; s.save_file({k: v.contiguous() for k, v in %s.items() if k.startswith('generator.')}, "
                   "'lama.safetensors')\"")
_BLOCK_KEY = re.compile(r"^model\.model\.(\d+)\.conv1\.ffc\.")


@dataclass
class LaMaSettings:
    # the file's sha256 is recorded in [outputs] instead of its path (as for --lama-checkpoint)
    lama_weights: str | None = option(None, "lama: a pretrained LaMa generator instead of --lama-checkpoint "
                                      "(big-lama.safetensors; .pth/.ckpt state dicts are read without code)",
                                      type=str, metavar="FILE", outputs=False)
    lama_max_side: int = option(0, "lama: shrink images whose longer side exceeds N to N for the generator and "
                                "enlarge its prediction back (0 = every image at its own size, as LaMa's evaluation)",
                                minimum=0, metavar="N")
    lama_dtype: str = option("auto", "lama: generator precision; auto = bf16 autocast on GPUs that support it, else "
                             "fp32", choices=DTYPES)


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive is a zip holding its code (code/ and constants.pkl), which torch.load cannot read as
    plain tensors."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in archive.namelist())


def _read_file(path: Path) -> Mapping[str, Any]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise UserError(f"--lama-weights {path} is not a readable safetensors file ({reason})") from None
    if _is_torchscript(path):
        raise UserError(f"--lama-weights {path} is a TorchScript archive (code, e.g. IOPaint's big-lama.pt), which is "
                        "never run here: " + GET_SAFETENSORS % f"torch.jit.load('{path}', map_location='cpu')"
                        ".state_dict()")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        # torch's weights-only unpickler refusing code raises pickle.UnpicklingError (matched by name: no module
        # here imports pickle)
        if type(err).__name__ == "UnpicklingError":
            raise UserError(f"--lama-weights {path} needs code to unpickle (a Lightning checkpoint with its training "
                            "config, or a whole pickled model), which is never run here: load it as `ckpt` where "
                            "you trust its code, then " + GET_SAFETENSORS % "ckpt['state_dict']") from None
        raise UserError(f"--lama-weights {path} cannot be read as a state dict ({type(err).__name__}): "
                        + GET_SAFETENSORS % "STATE_DICT") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]  # a Lightning checkpoint read without code
    if not isinstance(loaded, dict):
        raise UserError(f"--lama-weights {path} holds a {type(loaded).__name__}, not a state dict: "
                        + GET_SAFETENSORS % "STATE_DICT")
    return loaded


def read_lama_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The generator's tensors of a weights file, keyed as big-lama.safetensors (`model.model.N...`): accepted are
    that layout, a Lightning checkpoint's `generator.model.N...` and FFCResNetGenerator's own `model.N...`."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"--lama-weights {path}: no such file")
    state = {}
    for key, tensor in _read_file(path).items():
        if not isinstance(key, str) or not isinstance(tensor, torch.Tensor):
            continue
        if key.startswith("generator."):
            key = "model." + key.removeprefix("generator.")
        elif key.startswith("model.") and not key.startswith("model.model."):
            key = "model." + key
        if key.startswith("model.model."):
            state[key] = tensor
    if "model.model.1.ffc.convl2l.weight" not in state:
        raise UserError(f"--lama-weights {path} holds no LaMa generator (no model.model.1.ffc.convl2l.weight, or "
                        "generator.model.1... in a Lightning checkpoint)")
    return state


def config_from_weights(state: Mapping[str, torch.Tensor], path: Path) -> dict[str, Any]:
    """What build_network needs, read from the tensors: the block count and the base width (input 4 channels)."""
    first = state["model.model.1.ffc.convl2l.weight"]
    if first.shape[1] != 4:
        raise UserError(f"--lama-weights {path}: its generator takes {first.shape[1]} input channels; LaMa's takes 4 "
                        "(image with the hole zeroed + mask)")
    blocks = len({int(m.group(1)) for key in state if (m := _BLOCK_KEY.match(key))})
    generator = {9: "fourier", 18: "big"}.get(blocks, "fourier")
    return {"model": "lama", "size": TRAINED_SIZE, "generator": generator, "n_blocks": blocks,
            "ngf": int(first.shape[0])}


class LaMaPredictor(Predictor):
    networks = ("generator",)
    Settings = LaMaSettings
    pretrained = "lama_weights"
    own_resolution = True

    @classmethod
    def load_pretrained(cls, path: Path) -> tuple[dict[str, Any], dict[str, nn.Module]]:
        state = read_lama_weights(path)
        config = config_from_weights(state, path)
        generator = build_network(config, "generator")
        try:
            generator.load_state_dict(state, strict=True)
        except RuntimeError as err:
            first = str(err).strip().splitlines()
            detail = first[1].strip() if len(first) > 1 else first[0]
            raise UserError(f"--lama-weights {path} is not a LaMa generator of {DOWNSAMPLINGS} downsamplings and "
                            f"{config['n_blocks']} FFC blocks ({detail[:160]})") from None
        return config, {"generator": generator}

    def check(self) -> None:
        if self.settings.lama_dtype == "bf16" and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError("--lama-dtype bf16: this GPU has no bf16 support; use --lama-dtype fp32 (or auto)")

    @property
    def dtype(self) -> torch.dtype:
        choice = self.settings.lama_dtype
        if choice == "auto":
            bf16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
            return torch.bfloat16 if bf16 else torch.float32
        return torch.bfloat16 if choice == "bf16" else torch.float32

    def fill(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """LaMa's evaluation forward at the batch's own size: pad to a multiple of 8, predict, crop."""
        height, width = images.shape[-2:]
        size = (padded_side(height), padded_side(width))
        x, m = pad_symmetric(images, *size), pad_symmetric(masks, *size)
        dtype = self.dtype
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32):
            pred = self.nets["generator"](generator_input(x, m))
        return pred.float()[..., :height, :width]

    def predict(self, images: torch.Tensor, masks: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        images, masks = images.float(), (masks > 0.5).float()  # LaMa binarises its masks ((mask > 0) of uint8/255)
        height, width = images.shape[-2:]
        limit = self.settings.lama_max_side
        if not limit or max(height, width) <= limit:
            return self.fill(images, masks).clamp(0.0, 1.0)
        scale = limit / max(height, width)
        small = (max(1, round(height * scale)), max(1, round(width * scale)))
        pred = self.fill(resize_images(images, small), resize_masks(masks, small))
        return resize_images(pred.clamp(0.0, 1.0), (height, width))

    def resolved_outputs(self) -> dict[str, Any]:
        dtype = "bf16" if self.dtype == torch.bfloat16 else "fp32"
        return {"generator": self.config.get("generator", "fourier"), "n_blocks": self.config.get("n_blocks", 0),
                "ngf": self.config.get("ngf", 64), "dtype": dtype}
