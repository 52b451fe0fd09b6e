"""LPIPS (Zhang et al. 2018, AlexNet variant) for holes (`lpips`) and whole images (`lpips_full`).

The network is torchmetrics' own LPIPS module (`_LPIPS`: AlexNet slices, LPIPS' scaling layer, unit-normalised
features, the learned linear layers that torchmetrics ships in its package). Only the AlexNet backbone needs
weights from outside: `--lpips-weights FILE`, torchvision's ImageNet state dict `alexnet-owt-7be5be79.pth`,
read with `torch.load(weights_only=True)` (plain tensors, no pickled code). Without a path the torch hub cache
is tried, then torchvision's usual download; when neither works the lpips columns are reported missing.

Inputs are [0, 1] images, mapped to [-1, 1] as LPIPS expects (torchmetrics' `normalize=True`).

Rectangular holes are scored on their crops. A free-form hole has no crop of its own (its bounding box is mostly
known pixels), so it is scored on the whole image's spatial LPIPS map, as the LPIPS paper's `spatial=True` computes
it: each layer's per-position distance (the learned linear layer over squared differences of unit-normalised
features) upsampled bilinearly to the image and summed over layers; the map is averaged over the hole pixels.
The same pass gives `lpips_full` (each layer's distances averaged over positions, summed), as torchmetrics does.

AlexNet's five stages need at least 31 px on a side. An input whose shorter side is under `MIN_SIDE` is upsampled
uniformly (bilinear, both sides by the same factor, so the aspect is kept) until that side is `MIN_SIDE`,
prediction and ground truth alike; a square is enlarged exactly as before, a 12×40 crop (height × width) becomes
32×107 (it used to be stretched on one axis only, to 32×40). The spatial map is upsampled back to the original size.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from ..util.errors import UserError
from ..util.files import sha256_file
from ..util.weights import find_weights as find_hub_weights

WEIGHTS_NAME = "alexnet-owt-7be5be79.pth"
MIN_SIDE = 32
# torchvision's AlexNet `features` index -> the torchmetrics slice that holds it
_SLICE_OF = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}


class LPIPSUnavailable(RuntimeError):
    """No AlexNet weights: the lpips columns are reported missing, everything else still runs."""


def _alexnet_url() -> str:
    from torchvision.models import AlexNet_Weights

    return AlexNet_Weights.IMAGENET1K_V1.url


def find_weights(weights: str | Path | None) -> Path:
    return find_hub_weights(weights, flag="--lpips-weights", names=(WEIGHTS_NAME,), url=_alexnet_url,
                            what="AlexNet (LPIPS)", unavailable=LPIPSUnavailable)


def _backbone_state(state: dict, path: Path) -> dict[str, torch.Tensor]:
    """torchvision AlexNet `features.N.*` tensors renamed to torchmetrics' `net.sliceK.N.*`."""
    if not isinstance(state, dict):
        raise UserError(f"--lpips-weights {path}: not a state dict; pass torchvision's {WEIGHTS_NAME}")
    renamed = {}
    for index, slice_number in _SLICE_OF.items():
        for param in ("weight", "bias"):
            key = f"features.{index}.{param}"
            if key not in state or not isinstance(state[key], torch.Tensor):
                raise UserError(f"--lpips-weights {path}: not torchvision's AlexNet weights (no {key}); "
                                f"pass {WEIGHTS_NAME}")
            renamed[f"net.slice{slice_number}.{index}.{param}"] = state[key]
    return renamed


class LPIPS:
    """Batched LPIPS on float images in [0, 1]: `lpips(preds, target)` -> N distances (float64, on the CPU)."""

    def __init__(self, weights: str | Path | None = None, device: str = "cpu", batch_size: int = 32):
        from torchmetrics.functional.image.lpips import _LPIPS

        path = find_weights(weights)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise UserError(f"--lpips-weights {path}: not a plain PyTorch state dict "
                            f"({str(err).splitlines()[0][:120]}); pass {WEIGHTS_NAME}") from None
        backbone = _backbone_state(state, path)
        # pretrained=True: LPIPS' linear layers from torchmetrics' package; pnet_rand=True: the backbone is built
        # without downloading anything and then filled from the weights file
        self.net = _LPIPS(pretrained=True, net="alex", pnet_rand=True)
        expected = self.net.state_dict()
        for key, tensor in backbone.items():
            if tuple(expected[key].shape) != tuple(tensor.shape):
                raise UserError(f"--lpips-weights {path}: not torchvision's AlexNet weights ({key} is "
                                f"{tuple(tensor.shape)}, AlexNet's is {tuple(expected[key].shape)}); "
                                f"pass {WEIGHTS_NAME}")
        self.net.load_state_dict(backbone, strict=False)
        self.net.to(device).eval().requires_grad_(False)
        self.device = device
        self.batch_size = batch_size
        self.weights_sha256 = sha256_file(path)

    @torch.inference_mode()
    def __call__(self, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """preds, target: N×3×H×W float in [0, 1] or uint8 (one size) -> N LPIPS distances."""
        out = []
        for k in range(0, len(preds), self.batch_size):
            p = _unit(preds[k : k + self.batch_size]).to(self.device)
            t = _unit(target[k : k + self.batch_size]).to(self.device)
            p, t = _at_least(p, MIN_SIDE), _at_least(t, MIN_SIDE)
            out.append(self.net(p, t, normalize=True).reshape(-1).double().cpu())
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)

    def _layer_distances(self, p: torch.Tensor, t: torch.Tensor) -> list[torch.Tensor]:
        """Per layer, the N×1×h×w distance at each position: torchmetrics' `_LPIPS.forward` up to its last step."""
        from torchmetrics.functional.image.lpips import _normalize_tensor

        net = self.net
        outs_p = net.net(net.scaling_layer(2 * p - 1))
        outs_t = net.net(net.scaling_layer(2 * t - 1))
        return [lin((_normalize_tensor(fp) - _normalize_tensor(ft)) ** 2)
                for lin, fp, ft in zip(net.lins, outs_p, outs_t)]

    @torch.inference_mode()
    def spatial(self, preds: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Whole images, one pass: (N LPIPS distances = `lpips_full`, N spatial-map means over each image's
        hole pixels, `mask` N×1×H×W nonzero = hole; NaN for an image with no hole pixels or without a mask).

        The map is LPIPS' `spatial=True` output: every layer's distances upsampled (bilinear, align_corners
        False) to the image's H×W and summed over layers."""
        out_full, out_hole = [], []
        for k in range(0, len(preds), self.batch_size):
            p = _unit(preds[k : k + self.batch_size]).to(self.device)
            t = _unit(target[k : k + self.batch_size]).to(self.device)
            size = tuple(p.shape[-2:])
            layers = self._layer_distances(_at_least(p, MIN_SIDE), _at_least(t, MIN_SIDE))
            out_full.append(sum(d.mean([2, 3], keepdim=True) for d in layers).reshape(-1).double().cpu())
            if mask is None:
                out_hole.append(torch.full((len(p),), float("nan"), dtype=torch.float64))
                continue
            smap = sum(F.interpolate(d, size=size, mode="bilinear", align_corners=False) for d in layers)
            hole = (mask[k : k + self.batch_size, 0] != 0).to(self.device, torch.float64)
            total = (smap[:, 0].double() * hole).sum(dim=(1, 2))
            out_hole.append((total / hole.sum(dim=(1, 2))).cpu())  # 0/0 = NaN: no hole pixels
        empty = torch.zeros(0, dtype=torch.float64)
        return (torch.cat(out_full) if out_full else empty), (torch.cat(out_hole) if out_hole else empty)

    def crops(self, preds: torch.Tensor, target: torch.Tensor, boxes: Sequence[Sequence[tuple[int, int, int, int]]]
              ) -> list[list[float]]:
        """LPIPS of every (x, y, w, h) crop: one list per image; crops of one size go through in one batch."""
        by_size: dict[tuple[int, int], list[tuple[int, int, tuple[int, int, int, int]]]] = {}
        for i, image_boxes in enumerate(boxes):
            for j, box in enumerate(image_boxes):
                by_size.setdefault((box[3], box[2]), []).append((i, j, box))
        result = [[float("nan")] * len(b) for b in boxes]
        for (h, w), items in by_size.items():
            p = torch.stack([preds[i, :, y : y + h, x : x + w] for i, _, (x, y, _, _) in items])
            t = torch.stack([target[i, :, y : y + h, x : x + w] for i, _, (x, y, _, _) in items])
            for (i, j, _), value in zip(items, self(p, t).tolist()):
                result[i][j] = value
        return result


def _unit(images: torch.Tensor) -> torch.Tensor:
    return images.to(torch.float32) / 255.0 if images.dtype == torch.uint8 else images.to(torch.float32)


def _at_least(images: torch.Tensor, side: int) -> torch.Tensor:
    """Upsampled uniformly (bilinear, aspect kept) so the shorter side is `side`; unchanged when it already is."""
    h, w = images.shape[-2:]
    short = min(h, w)
    if short >= side:
        return images
    size = (max(side, round(h * side / short)), max(side, round(w * side / short)))
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False)


__all__ = ["LPIPS", "LPIPSUnavailable", "MIN_SIDE", "WEIGHTS_NAME", "find_weights"]
