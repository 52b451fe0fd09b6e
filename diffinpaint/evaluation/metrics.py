"""Pixel metrics, exactly as README "Metrics" defines them (pixel values in [0, 1] = uint8 / 255).

Hole only:
- rmse: sqrt of the mean squared error over all hole pixels and channels (pooled over images).
- ssim: skimage's *full-image* SSIM map (structural_similarity(gt, out, channel_axis=-1, data_range=1,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True)) averaged over a hole's pixels and
  channels: per rectangular hole, or per image for free-form masks. The window sees the real surroundings, so
  seams count. Only the hole grown by the window radius (5 px, clipped to the image) is filtered: at every hole
  pixel that gives exactly the full map's value, for a fraction of the work.
- ssim_crop: the earlier per-crop number, skimage SSIM of the hole crop alone (drops a 5-px ring inside the
  hole and mirrors the fill at its edge); rectangular holes only (eval leaves it null for free-form masks, whose
  only crop is the bounding box; `masked_ssim_crop` still computes that, NaN when under 11 px).
Whole image (LaMa's protocol, on the composited output):
- psnr_full: 10·log10(1 / MSE) over the whole image (skimage's peak_signal_noise_ratio, data_range 1), capped at
  PSNR_CAP_DB (an MSE of (0.5/255)², ≈ 54.15 dB) so an exact copy is a number, not inf.
- ssim_full: skimage's structural_similarity of the whole image (same parameters): the mean of the map
  without its 5-px border.

SSIM is re-stated in torch because skimage loops over channels and crops in Python. The separable Gaussian
filter (scipy's 'reflect' boundary) is 11 shifted multiply-adds per axis over the whole batch: no 1-channel
conv2d, and every value is computed the same way whatever the batch holds, so results do not depend on
batching. (Measured on one x86 core: a 256² image in 4.7 ms against skimage's 14 ms; a dense Gaussian matrix
product, the earlier approach, took 17 ms.) The tests hold every SSIM
here to skimage within 1e-4 on random and real images.

Metric objects follow torchmetrics (running sums as state, `update`/`compute`), so the result does not depend
on how the images were batched, and they sync across processes like any torchmetrics metric.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import torch
from torchmetrics import Metric

from .columns import PSNR_CAP_DB

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


@lru_cache(maxsize=None)
def _gaussian_taps() -> tuple[float, ...]:
    offsets = torch.arange(-RADIUS, RADIUS + 1, dtype=torch.float64)
    weights = torch.exp(-(offsets**2) / (2 * SIGMA**2))
    return tuple((weights / weights.sum()).tolist())


def _shift_filter(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Gaussian filter along `dim` with scipy's 'reflect' boundary (d c b a | a b c d | d c b a): pad with the
    mirrored edges, then add the 11 shifted copies. Each output value is the same sum in the same order
    whatever else is in the batch, so a crop's SSIM does not depend on how crops were batched (a matrix
    product's blocking, which depends on the batch's shape, would move the last bits)."""
    n = x.shape[dim]
    padded = torch.cat([x.narrow(dim, 0, RADIUS).flip(dim), x, x.narrow(dim, n - RADIUS, RADIUS).flip(dim)], dim)
    taps = _gaussian_taps()
    out = padded.narrow(dim, 0, n) * taps[0]
    for k in range(1, len(taps)):
        out.add_(padded.narrow(dim, k, n), alpha=taps[k])
    return out


def ssim_map(preds: torch.Tensor, target: torch.Tensor, *, crop: bool) -> torch.Tensor:
    """Per-channel SSIM map N×C×H'×W' (H' = H - 10 when crop, else H), skimage's formula and window."""
    if min(preds.shape[-2:]) < 2 * RADIUS + 1:
        raise ValueError(f"SSIM needs crops of at least {2 * RADIUS + 1}x{2 * RADIUS + 1} pixels, "
                         f"got {preds.shape[-1]}x{preds.shape[-2]}")
    dtype = preds.dtype if preds.dtype in (torch.float32, torch.float64) else torch.float32
    x, y = preds.to(dtype), target.to(dtype)
    h, w = x.shape[-2:]
    stacked = torch.stack([x, y, x * x, y * y, x * y])  # 5×N×C×H×W: one pass of the filter for all five
    filtered = _shift_filter(_shift_filter(stacked, -1), -2)
    if crop:  # skimage drops the RADIUS-wide border, where the window reaches past the image
        filtered = filtered[..., RADIUS : h - RADIUS, RADIUS : w - RADIUS]
    ux, uy, uxx, uyy, uxy = filtered.unbind(0)
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy  # population covariance (cov_norm = 1)
    c1, c2 = K1**2, K2**2  # data_range = 1
    return ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))


# Crops per SSIM call: small enough that the five filtered maps stay in cache (measured: 16 is ~3x faster
# than one call over 128 crops on a 2-core x86 machine).
SSIM_CHUNK = 16


def _as_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [0, 1]; float stays as it is. Crops are converted after cropping: far less work."""
    return images.to(torch.float32).div_(255.0) if images.dtype == torch.uint8 else images


def box_ssim(preds: torch.Tensor, target: torch.Tensor, boxes: Sequence[Sequence[Box]]) -> list[list[float]]:
    """`ssim_crop`: SSIM of every rectangular hole crop on its own, as skimage computes it for the crop; one list
    per image, one value per box. Crops of the same size across the whole batch are scored in one batched call.
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


box_ssim_crop = box_ssim  # the name that says which definition it is


def grown_box(box: Box, height: int, width: int) -> Box:
    """The box grown by the SSIM window radius on every side, clipped to the image: every hole pixel's window
    lies inside it, or reaches past it only at the image border, where the reflection is the image's own."""
    x, y, w, h = box
    x0, x1 = _grow(x, x + w, width)
    y0, y1 = _grow(y, y + h, height)
    return x0, y0, x1 - x0, y1 - y0


def _grow(start: int, stop: int, size: int) -> tuple[int, int]:
    """[start, stop) grown by RADIUS, clipped to [0, size), and widened to the 11-px window where the image
    allows (a hole in a corner: more context changes nothing, the filter just needs a full window)."""
    window = 2 * RADIUS + 1
    start, stop = max(0, start - RADIUS), min(size, stop + RADIUS)
    if stop - start < window:
        stop = min(size, start + window)
        start = max(0, stop - window)
    return start, stop


def box_hole_ssim(preds: torch.Tensor, target: torch.Tensor, boxes: Sequence[Sequence[Box]]
                  ) -> list[list[float]]:
    """`ssim` for rectangular holes: the full-image SSIM map averaged over each hole (one list per image, one
    value per box). Grown boxes of one size across the batch are filtered in one batched call."""
    height, width = preds.shape[-2:]
    by_size: dict[tuple[int, int], list[tuple[int, int, Box, Box]]] = {}
    for i, image_boxes in enumerate(boxes):
        for j, box in enumerate(image_boxes):
            grown = grown_box(box, height, width)
            by_size.setdefault((grown[3], grown[2]), []).append((i, j, box, grown))
    result: list[list[float]] = [[math.nan] * len(b) for b in boxes]
    for (gh, gw), items in by_size.items():
        for k in range(0, len(items), SSIM_CHUNK):
            chunk = items[k : k + SSIM_CHUNK]
            crops_p = _as_unit_float(torch.stack([preds[i, :, gy : gy + gh, gx : gx + gw]
                                                  for i, _, _, (gx, gy, _, _) in chunk]))
            crops_t = _as_unit_float(torch.stack([target[i, :, gy : gy + gh, gx : gx + gw]
                                                  for i, _, _, (gx, gy, _, _) in chunk]))
            maps = ssim_map(crops_t, crops_p, crop=False)  # K×C×gh×gw
            for m, (i, j, (x, y, w, h), (gx, gy, _, _)) in zip(maps, chunk):
                result[i][j] = m[:, y - gy : y - gy + h, x - gx : x - gx + w].double().mean().item()
    return result


def masked_ssim(preds: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`ssim` for free-form masks: the full-image SSIM map (channel mean) averaged over hole pixels, per image.
    The map is filtered over the hole's bounding box grown by the window radius only (same values there)."""
    values = []
    height, width = preds.shape[-2:]
    for i in range(len(preds)):  # one image at a time keeps the filtered maps small
        hole = mask[i, 0].bool()
        box = mask_bounding_box(hole)
        if box is None:
            values.append(torch.tensor(math.nan, dtype=torch.float64))
            continue
        gx, gy, gw, gh = grown_box(box, height, width)
        window = (slice(None), slice(gy, gy + gh), slice(gx, gx + gw))
        smap = ssim_map(_as_unit_float(target[i][window][None]), _as_unit_float(preds[i][window][None]),
                        crop=False)[0].double().mean(dim=0)
        weight = hole[gy : gy + gh, gx : gx + gw].double()
        values.append((smap * weight).sum() / weight.sum())
    return torch.stack(values).cpu()


def masked_ssim_crop(preds: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`ssim_crop` for free-form masks: SSIM of the hole's bounding-box crop alone (NaN under 11×11 pixels)."""
    values = []
    window = 2 * RADIUS + 1
    for i in range(len(preds)):
        box = mask_bounding_box(mask[i, 0])
        if box is None or box[2] < window or box[3] < window:
            values.append(math.nan)
            continue
        values.append(box_ssim(preds[i : i + 1], target[i : i + 1], [[box]])[0][0])
    return torch.tensor(values, dtype=torch.float64)


def mask_bounding_box(hole: torch.Tensor) -> Box | None:
    """(x, y, w, h) of the hole pixels of an H×W mask, or None when there are none."""
    hole = hole.bool()
    rows, cols = torch.nonzero(hole.any(dim=1)).flatten(), torch.nonzero(hole.any(dim=0)).flatten()
    if len(rows) == 0:
        return None
    y, x = int(rows[0]), int(cols[0])
    return x, y, int(cols[-1]) - x + 1, int(rows[-1]) - y + 1


# Whole images per SSIM call. On a CPU one at a time keeps the filtered maps in cache (one 256² image: 4.7 ms;
# 4 at once: 8 ms each; skimage: 14 ms, on one x86 core); a GPU wants big launches instead.
IMAGE_CHUNK = {"cpu": 1, "cuda": 16}


def image_ssim(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`ssim_full`: skimage's structural_similarity of each whole image (N, float64)."""
    values = []
    chunk = IMAGE_CHUNK.get(preds.device.type, 1)
    for k in range(0, len(preds), chunk):
        smap = ssim_map(_as_unit_float(target[k : k + chunk]), _as_unit_float(preds[k : k + chunk]), crop=True)
        values.append(smap.double().mean(dim=(-2, -1)).mean(dim=1))  # per channel, then over channels
    return torch.cat(values).cpu()


def image_psnr(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`psnr_full`: 10·log10(1 / MSE) over each whole image (N, float64), at most PSNR_CAP_DB: an exact copy
    (MSE 0) and anything closer than an RMSE of half a grey level get exactly PSNR_CAP_DB (columns.py says why)."""
    if preds.dtype == torch.uint8 and target.dtype == torch.uint8:
        diff = preds.to(torch.int32) - target.to(torch.int32)
        mse = (diff * diff).sum(dim=(1, 2, 3)).to(torch.float64) / (255.0**2 * preds[0].numel())
    else:
        mse = (preds.to(torch.float64) - target.to(torch.float64)).square().mean(dim=(1, 2, 3))
    return (10.0 * torch.log10(1.0 / mse)).clamp(max=PSNR_CAP_DB).cpu()


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
