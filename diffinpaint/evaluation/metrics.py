"""Masked metrics, exactly as DESIGN.md defines them (pixel values in [0, 1] = uint8 / 255).

- rmse: sqrt of the mean squared error over all hole pixels and channels (pooled over images).
- ssim: per rectangular hole, SSIM of the hole crop as skimage.metrics.structural_similarity(gt, out,
  channel_axis=-1, data_range=1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False); free-form
  masks: the SSIM map of the whole image (same window) averaged over hole pixels.
- fid / kid: Inception-v3 pool3 features of the hole crops (see fid.py).

SSIM is re-stated in torch because skimage loops over channels and crops in Python (about 530 holes/s on two
cores). The Gaussian filter with scipy's 'reflect' boundary is a linear map along each axis, so it is written as
two small dense matrix products `G_h @ X @ G_w^T` over the whole batch: no 1-channel conv2d, no large
temporaries. The tests hold it to skimage within 1e-4 on random and real crops.

Metric objects follow torchmetrics (running sums as state, `update`/`compute`), so the result does not depend
on how the images were batched, and they sync across processes like any torchmetrics metric.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import torch
from torchmetrics import Metric

SIGMA = 1.5
TRUNCATE = 3.5  # skimage's value for gaussian_weights=True
RADIUS = int(TRUNCATE * SIGMA + 0.5)  # 5 -> an 11-tap window, as scipy.ndimage computes it
K1, K2 = 0.01, 0.03

Box = tuple[int, int, int, int]  # x, y, width, height


# ---------------------------------------------------------------------------------------------- RMSE


def masked_squared_error(preds: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: (sum of squared errors over hole pixels and channels, number of such values), float64.

    preds, target: N×3×H×W, either float in [0, 1] or uint8 (then the arithmetic is exact integer
    arithmetic, scaled by 1/255² at the end); mask: N×1×H×W, 1 = hole.
    """
    sse, count = [], []
    for pred, true, hole in zip(preds, target, mask.bool()):
        # gather the hole pixels (H×W×C order: contiguous for images decoded as H×W×3) instead of
        # multiplying whole images by the mask: holes are a fraction of the image (measured 8x faster)
        selected_p = pred.permute(1, 2, 0)[hole[0]]
        selected_t = true.permute(1, 2, 0)[hole[0]]
        if selected_p.dtype == torch.uint8 and selected_t.dtype == torch.uint8:
            diff = selected_p.to(torch.int32) - selected_t.to(torch.int32)
            sse.append((diff * diff).sum().to(torch.float64) / 255.0**2)  # exact integer sum
        else:
            diff = selected_p.to(torch.float64) - selected_t.to(torch.float64)
            sse.append((diff * diff).sum())
        count.append(torch.tensor(float(selected_p.numel()), dtype=torch.float64))
    return torch.stack(sse), torch.stack(count)


def _intersection(a: Box, b: Box) -> Box | None:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    return (x0, y0, x1 - x0, y1 - y0) if x1 > x0 and y1 > y0 else None


def _crops(images: torch.Tensor, items: Sequence[tuple[int, Box]]) -> torch.Tensor:
    """Stack the (image index, box) crops, which must share one size: K×C×h×w."""
    return torch.stack([images[i, :, y : y + h, x : x + w] for i, (x, y, w, h) in items])


def _crop_sse(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum of squared errors per crop (K×C×h×w -> K, float64); exact integer arithmetic for uint8."""
    if preds.dtype == torch.uint8 and target.dtype == torch.uint8:
        diff = preds.to(torch.int32) - target.to(torch.int32)
        return (diff * diff).sum(dim=(1, 2, 3)).to(torch.float64) / 255.0**2
    diff = preds.to(torch.float64) - target.to(torch.float64)
    return (diff * diff).sum(dim=(1, 2, 3))


def box_squared_error(preds: torch.Tensor, target: torch.Tensor, boxes: Sequence[Sequence[Box]]
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """masked_squared_error for rectangular holes, reading only the hole crops (two 75² holes are ~17% of a
    256² image), all crops of one size in one op. Where two holes overlap, the intersection is subtracted once
    (inclusion-exclusion), so a pixel counts once; an image with a pixel inside three holes uses the mask."""
    n = len(boxes)
    sse = torch.zeros(n, dtype=torch.float64, device=preds.device)
    count = torch.zeros(n, dtype=torch.float64, device=preds.device)
    add: dict[tuple[int, int], list[tuple[int, Box]]] = {}  # crop size -> crops whose SSE is added
    subtract: dict[tuple[int, int], list[tuple[int, Box]]] = {}  # ... and pairwise intersections, subtracted
    for i, image_boxes in enumerate(boxes):
        pairs = [r for k, a in enumerate(image_boxes) for b in image_boxes[k + 1 :]
                 if (r := _intersection(a, b)) is not None]
        if any(_intersection(r, q) is not None for k, r in enumerate(pairs) for q in pairs[k + 1 :]):
            mask = torch.zeros((1, 1, *preds.shape[-2:]), dtype=torch.bool, device=preds.device)
            for x, y, w, h in image_boxes:
                mask[..., y : y + h, x : x + w] = True
            one_sse, one_count = masked_squared_error(preds[i : i + 1], target[i : i + 1], mask)
            sse[i], count[i] = one_sse[0], one_count[0]
            continue
        for box in image_boxes:
            add.setdefault((box[3], box[2]), []).append((i, box))
        for box in pairs:
            subtract.setdefault((box[3], box[2]), []).append((i, box))
        area = sum(w * h for *_, w, h in image_boxes) - sum(w * h for *_, w, h in pairs)
        count[i] = float(area * preds.shape[1])
    for groups, sign in ((add, 1.0), (subtract, -1.0)):
        for items in groups.values():
            index = torch.tensor([i for i, _ in items], device=preds.device)
            sse.index_add_(0, index, sign * _crop_sse(_crops(preds, items), _crops(target, items)))
    return sse, count


def masked_rmse(preds: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Pooled over the batch: sqrt(sum of squared errors / number of hole values)."""
    sse, count = masked_squared_error(preds, target, mask)
    return (sse.sum() / count.sum()).sqrt()


class MaskedRMSE(Metric):
    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("sse", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> None:
        sse, count = masked_squared_error(preds, target, mask)
        self.sse += sse.sum()
        self.count += count.sum()

    def compute(self) -> torch.Tensor:
        return (self.sse / self.count).sqrt()


# ---------------------------------------------------------------------------------------------- SSIM


@lru_cache(maxsize=64)
def _gaussian_matrix(n: int, crop: bool, device: str, dtype: torch.dtype) -> torch.Tensor:
    """The 1-D Gaussian filter over n samples with scipy's 'reflect' boundary (d c b a | a b c d | d c b a),
    as an n×n matrix; with crop=True only the rows skimage keeps (it drops RADIUS rows at each edge)."""
    taps = torch.arange(-RADIUS, RADIUS + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (taps / SIGMA) ** 2)
    weights /= weights.sum()
    matrix = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for k, w in zip(range(-RADIUS, RADIUS + 1), weights.tolist()):
            j = i + k
            while j < 0 or j >= n:  # reflect until inside (only loops more than once for n < RADIUS)
                j = -j - 1 if j < 0 else 2 * n - j - 1
            matrix[i, j] += w
    if crop:
        matrix = matrix[RADIUS : n - RADIUS]
    return matrix.to(device=device, dtype=dtype)


def ssim_map(preds: torch.Tensor, target: torch.Tensor, *, crop: bool) -> torch.Tensor:
    """Per-channel SSIM map N×C×H'×W' (H' = H - 10 when crop, else H), skimage's formula and window."""
    if min(preds.shape[-2:]) < 2 * RADIUS + 1:
        raise ValueError(f"SSIM needs crops of at least {2 * RADIUS + 1}x{2 * RADIUS + 1} pixels, "
                         f"got {preds.shape[-1]}x{preds.shape[-2]}")
    dtype = preds.dtype if preds.dtype in (torch.float32, torch.float64) else torch.float32
    x, y = preds.to(dtype), target.to(dtype)
    n, c, h, w = x.shape
    g_h = _gaussian_matrix(h, crop, str(x.device), dtype)
    g_w = _gaussian_matrix(w, crop, str(x.device), dtype)
    stacked = torch.stack([x, y, x * x, y * y, x * y])  # 5×N×C×H×W: one pair of products filters all five
    # Along W: one tall GEMM (5NCH × W) @ (W × W'). Along H: lay the data out as H × (5NC·W') and do one wide
    # GEMM. Two big GEMMs beat thousands of tiny batched ones (and conv2d) by a wide margin on CPU.
    along_w = (stacked.reshape(-1, w) @ g_w.T).reshape(5 * n * c, h, -1)
    w_out = along_w.shape[-1]
    along_h = g_h @ along_w.transpose(0, 1).reshape(h, -1)  # H' × (5NC·W')
    ux, uy, uxx, uyy, uxy = along_h.reshape(-1, 5, n, c, w_out).unbind(1)  # each H'×N×C×W'
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy  # population covariance (cov_norm = 1)
    c1, c2 = K1**2, K2**2  # data_range = 1
    smap = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return smap.permute(1, 2, 0, 3)


# Crops per SSIM call: small enough that the five filtered maps stay in cache (measured: 16 is ~3x faster
# than one call over 128 crops on a 2-core x86 machine).
SSIM_CHUNK = 16


def _as_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [0, 1]; float stays as it is. Crops are converted after cropping: far less work."""
    return images.to(torch.float32).div_(255.0) if images.dtype == torch.uint8 else images


def box_ssim(preds: torch.Tensor, target: torch.Tensor, boxes: Sequence[Sequence[Box]]) -> list[list[float]]:
    """SSIM of every rectangular hole crop: one list per image, one value per box, as skimage computes it.

    Crops of the same size across the whole batch are scored in one batched call.
    """
    by_size: dict[tuple[int, int], list[tuple[int, int, Box]]] = {}
    for i, image_boxes in enumerate(boxes):
        for j, (x, y, w, h) in enumerate(image_boxes):
            by_size.setdefault((h, w), []).append((i, j, (x, y, w, h)))
    result: list[list[float]] = [[math.nan] * len(b) for b in boxes]
    for (h, w), items in by_size.items():
        crops_p = _as_unit_float(torch.stack([preds[i, :, y : y + h, x : x + w] for i, _, (x, y, _, _) in items]))
        crops_t = _as_unit_float(torch.stack([target[i, :, y : y + h, x : x + w] for i, _, (x, y, _, _) in items]))
        # skimage: mean over the cropped map per channel (float64), then mean over channels
        values = torch.cat([
            ssim_map(crops_t[k : k + SSIM_CHUNK], crops_p[k : k + SSIM_CHUNK], crop=True)
            .double().mean(dim=(-2, -1)).mean(dim=1)
            for k in range(0, len(items), SSIM_CHUNK)
        ])
        for (i, j, _), value in zip(items, values.tolist()):
            result[i][j] = value
    return result


def masked_ssim(preds: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Free-form masks: the whole image's SSIM map (channel mean) averaged over hole pixels, per image."""
    values = []
    for i in range(len(preds)):  # one image at a time keeps the filtered maps small
        smap = ssim_map(_as_unit_float(target[i : i + 1]), _as_unit_float(preds[i : i + 1]), crop=False).double().mean(dim=1)
        hole = mask[i].double()
        values.append((smap * hole).sum() / hole.sum())
    return torch.stack(values)


class BoxSSIM(Metric):
    """Mean SSIM over rectangular holes (each hole counts once, whatever image or batch it came in)."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("holes", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor, boxes: Sequence[Sequence[Box]]) -> None:
        values = [v for image in box_ssim(preds, target, boxes) for v in image]
        self.total += sum(values)
        self.holes += len(values)

    def compute(self) -> torch.Tensor:
        return self.total / self.holes


class MaskedSSIM(Metric):
    """Mean over images of the SSIM map averaged over each image's hole pixels (free-form masks)."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("images", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> None:
        values = masked_ssim(preds, target, mask)
        self.total += values.sum()
        self.images += values.numel()

    def compute(self) -> torch.Tensor:
        return self.total / self.images
