"""The frozen VGG19 feature extractor of DMFN's perceptual losses (training only).

torchvision's `vgg19()` architecture truncated after relu5_1 (features[0..29]), returning relu1_1, relu2_1,
relu3_1, relu4_1 and relu5_1 (the reference's VGGFeatureExtractor, feature_layer = (1, 6, 11, 20, 29)). The
weights are torchvision's ImageNet VGG19 (`vgg19-dcbb9e9d.pth`), read as a plain state dict with
`torch.load(..., weights_only=True)`: no code is ever unpickled. Nothing is downloaded here.

Inputs are images in [−1, 1], mapped to [0, 1] and normalised with the ImageNet mean and std. (The reference
subtracts mean − 1 and divides by 2·std, which amounts to subtracting mean/2 from the [0, 1] image; we use the
standard normalisation the VGG weights were trained with.)
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ...util.errors import UserError
from ...util.weights import check_state_dict, required_weights

VGG_FILE = "vgg19-dcbb9e9d.pth"
VGG_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
RELU_INDICES = (1, 6, 11, 20, 29)  # relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 in vgg19().features
LAYER_NAMES = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
CHANNELS = (64, 128, 256, 512, 512)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_vgg_path() -> Path:
    """Where torchvision itself caches the file: <torch hub dir>/checkpoints/vgg19-dcbb9e9d.pth."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG_FILE


def resolve_vgg_path(given: str | None) -> Path:
    """The weights file to use: --vgg-weights when given, else the torch hub cache; UserError when missing."""
    return required_weights(given, default_vgg_path(), flag="--vgg-weights", what="VGG19", url=VGG_URL,
                            fallback="train without the VGG losses with --no-perceptual")


def _features(materialise: bool = True) -> nn.Sequential:
    """vgg19().features[:30], built on the meta device (no random init of 143M parameters, no RNG draws) and
    then given real, uninitialised storage (every tensor is then overwritten by the loaded weights)."""
    from torchvision.models import vgg19

    with torch.device("meta"):
        features = vgg19(weights=None).features[: RELU_INDICES[-1] + 1]
    return features.to_empty(device="cpu") if materialise else features


def read_vgg_state(path: Path) -> dict[str, torch.Tensor]:
    """The features.* tensors of a torchvision VGG19 state dict (the full model's, or `vgg19().features`'s own
    with keys '0.weight', ...), checked against the architecture; UserError naming the file otherwise."""
    expected = _features(materialise=False).state_dict()  # shapes only
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # not a torch file, or one that would need code to unpickle
        raise UserError(f"{path} cannot be read as a VGG19 state dict ({type(error).__name__}); pass torchvision's "
                        f"{VGG_FILE} ({VGG_URL}) with --vgg-weights") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path} holds a {type(raw).__name__}, not a state dict; pass torchvision's {VGG_FILE} "
                        f"({VGG_URL}) with --vgg-weights")
    state = {}
    for key, tensor in raw.items():
        if not isinstance(key, str) or not isinstance(tensor, torch.Tensor):
            continue
        short = key[len("features."):] if key.startswith("features.") else key
        if short in expected:
            state[short] = tensor
    check_state_dict(state, expected, lambda key, found, shape: (
        f"{path} is not torchvision's VGG19 state dict (features.{key}: {found}, expected {shape}); pass {VGG_FILE} "
        f"({VGG_URL}) with --vgg-weights"))
    return state


class VGGFeatures(nn.Module):
    """Frozen VGG19 up to relu5_1: forward(x in [−1, 1]) -> [relu1_1, relu2_1, relu3_1, relu4_1, relu5_1]."""

    def __init__(self, state: dict[str, torch.Tensor]):
        super().__init__()
        features = _features()
        features.load_state_dict(state, strict=True)
        bounds = (0,) + tuple(i + 1 for i in RELU_INDICES)
        self.stages = nn.ModuleList(features[a:b] for a, b in zip(bounds[:-1], bounds[1:]))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)  # a fixed feature space, not a trained network
        self.eval()

    def train(self, mode: bool = True) -> "VGGFeatures":
        return super().train(False)  # always eval (no dropout or norm inside, but say so)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = ((x.float() + 1.0) / 2.0 - self.mean) / self.std
        out = []
        for stage in self.stages:
            h = stage(h)
            out.append(h)
        return out

    @classmethod
    def from_file(cls, path: Path) -> "VGGFeatures":
        return cls(read_vgg_state(path))
