"""The frozen network of LaMa's high-receptive-field perceptual loss (training only): the ADE20k scene-parsing
encoder "resnet50dilated" of CSAIL's semantic-segmentation-pytorch, as LaMa's ResNetPL uses it
(saicinpainting/training/losses/perceptual.py, models/ade20k/base.py and resnet.py).

Architecture: a ResNet-50 with the "deep stem" of CSAIL's ImageNet model (three 3×3 convs 3 → 64 → 64 → 128, the
first stride 2, each + BatchNorm + ReLU, then a 3×3 stride-2 max pool; layer1 therefore starts from 128 channels) and
the last two stages dilated instead of strided (dilate_scale 8: layer3 dilation 2, layer4 dilation 4, each stage's
first block one step less), so the four stage outputs are at 1/4, 1/8, 1/8, 1/8 of the image. Bottleneck blocks
(stride on the 3×3 conv) are torchvision's own; their names match CSAIL's state dict.

The loss: 30 × Σ over layer1..layer4 of MSE(φ(pred), φ(target)), on ImageNet-normalised [0, 1] images. The weights
are CSAIL's `encoder_epoch_20.pth` (ade20k-resnet50dilated-ppm_deepsup), read as a plain state dict with
`torch.load(..., weights_only=True)`: nothing is unpickled as code and nothing is downloaded here. LaMa looks for it
at $TORCH_HOME/ade20k/ade20k-resnet50dilated-ppm_deepsup/encoder_epoch_20.pth; so does this module (TORCH_HOME =
the parent of torch's hub folder), unless --perceptual-weights names the file.

The network stays in eval mode (BatchNorm with its ADE20k statistics), as ResNetPL's constructor sets it; see README
("LaMa", differences) for the reference's Lightning module switching it back to train mode.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...util.errors import UserError
from ...util.weights import check_state_dict, required_weights

HRF_FOLDER = "ade20k/ade20k-resnet50dilated-ppm_deepsup"
HRF_FILE = "encoder_epoch_20.pth"
HRF_URL = "http://sceneparsing.csail.mit.edu/model/pytorch/ade20k-resnet50dilated-ppm_deepsup/encoder_epoch_20.pth"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STAGES = (3, 4, 6, 3)  # ResNet-50's bottleneck blocks per stage


def default_hrf_path() -> Path:
    """Where LaMa reads it: $TORCH_HOME/ade20k/... (torch's hub folder is $TORCH_HOME/hub)."""
    return Path(torch.hub.get_dir()).parent / HRF_FOLDER / HRF_FILE


def resolve_hrf_path(given: str | None) -> Path:
    """--perceptual-weights when given, else LaMa's place under torch's home; UserError (one line) when missing."""
    return required_weights(given, default_hrf_path(), flag="--perceptual-weights", what="ADE20k ResNet-50",
                            url=HRF_URL, fallback="train without the perceptual loss with --no-perceptual")


def _stage(inplanes: int, planes: int, blocks: int, stride: int, dilation: int) -> nn.Sequential:
    """One ResNet stage; dilated stages (stride 1 instead of 2) give their first block half the dilation, as CSAIL's
    _nostride_dilate does to the pretrained network (the same as torchvision's replace_stride_with_dilation)."""
    from torchvision.models.resnet import Bottleneck

    first = max(1, dilation // 2)
    downsample = None
    if stride != 1 or inplanes != planes * Bottleneck.expansion:
        downsample = nn.Sequential(nn.Conv2d(inplanes, planes * Bottleneck.expansion, 1, stride=stride, bias=False),
                                   nn.BatchNorm2d(planes * Bottleneck.expansion))
    layers = [Bottleneck(inplanes, planes, stride, downsample, dilation=first)]
    layers += [Bottleneck(planes * Bottleneck.expansion, planes, dilation=dilation) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class ResNet50Dilated(nn.Module):
    """CSAIL's ResnetDilated(resnet50, dilate_scale=8): forward(x) -> [layer1, layer2, layer3, layer4] outputs."""

    def __init__(self):
        super().__init__()

        def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
            return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)

        self.conv1, self.bn1 = conv3x3(3, 64, 2), nn.BatchNorm2d(64)
        self.conv2, self.bn2 = conv3x3(64, 64), nn.BatchNorm2d(64)
        self.conv3, self.bn3 = conv3x3(64, 128), nn.BatchNorm2d(128)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = _stage(128, 64, STAGES[0], stride=1, dilation=1)
        self.layer2 = _stage(256, 128, STAGES[1], stride=2, dilation=1)
        self.layer3 = _stage(512, 256, STAGES[2], stride=1, dilation=2)
        self.layer4 = _stage(1024, 512, STAGES[3], stride=1, dilation=4)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.maxpool(F.relu(self.bn3(self.conv3(x))))
        features = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            features.append(x)
        return features


def read_hrf_state(path: Path) -> dict[str, torch.Tensor]:
    """The encoder's tensors from CSAIL's file, checked against the architecture (keys it does not use, e.g. a
    classifier's, are ignored as the reference's strict=False load does); UserError naming the file otherwise."""
    with torch.device("meta"):
        expected = ResNet50Dilated().state_dict()
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # not a torch file, or one that would need code to unpickle
        raise UserError(f"{path} cannot be read as a state dict ({type(error).__name__}); pass CSAIL's {HRF_FILE} "
                        f"({HRF_URL}) with --perceptual-weights") from None
    if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        raw = raw["state_dict"]
    if not isinstance(raw, dict):
        raise UserError(f"{path} holds a {type(raw).__name__}, not a state dict; pass CSAIL's {HRF_FILE} ({HRF_URL})")
    state = {}
    for key, tensor in raw.items():
        if isinstance(key, str) and isinstance(tensor, torch.Tensor):
            state[key.removeprefix("module.").removeprefix("encoder.")] = tensor
    check_state_dict(state, expected, lambda key, found, shape: (
        f"{path} is not the ADE20k resnet50dilated encoder ({key}: {found}, expected {shape}); pass {HRF_FILE} "
        f"({HRF_URL}) with --perceptual-weights"))
    return {key: state[key] for key in expected}


class HRFPerceptualLoss(nn.Module):
    """forward(pred, target in [0, 1]) -> Σ_l MSE(φ_l(pred), φ_l(target)) over the encoder's four stages (unweighted:
    the step multiplies by LaMa's 30). Frozen, always in eval mode."""

    def __init__(self, state: dict[str, torch.Tensor]):
        super().__init__()
        with torch.device("meta"):  # no random init of 25M parameters (and no RNG draws): the file overwrites all
            encoder = ResNet50Dilated()
        self.encoder = encoder.to_empty(device="cpu")
        self.encoder.load_state_dict(state, strict=True)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "HRFPerceptualLoss":
        return super().train(False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.encoder((x.float() - self.mean) / self.std)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target_features = self.features(target)
        terms = [F.mse_loss(p.float(), t.float()) for p, t in zip(self.features(pred), target_features)]
        return torch.stack(terms).sum()

    @classmethod
    def from_file(cls, path: Path) -> "HRFPerceptualLoss":
        return cls(read_hrf_state(path))
