"""Masked RMSE + SSIM throughput against a per-image scikit-image loop, and FID feature extraction speed.

    python eval/bench_metrics.py [--images 256] [--threads 2] [--device cpu|cuda] [--fid-crops 32]

Data: real 256×256 photos (the demo crops from scikit-image) with two 75×75 holes each; the "output" is the
photo with noise in the holes. Both implementations score the same images and the numbers must agree
(|ΔSSIM| <= 1e-4 per hole, |ΔRMSE| <= 1e-9 per image) or the benchmark fails. Results go to
eval/results/metrics_<device>.{json,md}; the last line printed is `ratio_vs_skimage=<x>`.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from machine import machine_info  # noqa: E402

from diffinpaint.data.demo import demo_crops  # noqa: E402
from diffinpaint.data.masks import box_holes, derive_seed  # noqa: E402
from diffinpaint.evaluation.metrics import box_squared_error, box_ssim  # noqa: E402

SK = dict(channel_axis=-1, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)


def make_data(n: int):
    crops = [c for _, _, c in demo_crops(256, 3)]
    rng = np.random.default_rng(0)
    gts, outs, boxes = [], [], []
    for i in range(n):
        gt = crops[i % len(crops)]
        image_boxes = box_holes(256, 256, 2, 75, np.random.default_rng(derive_seed(0, str(i))))
        out = gt.copy()
        for x, y, w, h in image_boxes:
            patch = out[y : y + h, x : x + w].astype(int) + rng.integers(-50, 51, (h, w, 3))
            out[y : y + h, x : x + w] = np.clip(patch, 0, 255)
        gts.append(gt), outs.append(out), boxes.append(image_boxes)
    return np.stack(gts), np.stack(outs), boxes


def skimage_loop(gts, outs, boxes):
    from skimage.metrics import structural_similarity

    rmse, ssim = [], []
    for gt, out, image_boxes in zip(gts, outs, boxes):
        mask = np.zeros(gt.shape[:2], bool)
        for x, y, w, h in image_boxes:
            mask[y : y + h, x : x + w] = True
        diff = (out.astype(np.float64) - gt.astype(np.float64)) / 255.0
        rmse.append(float(np.sqrt(np.mean(diff[mask] ** 2))))
        ssim.append([structural_similarity(gt[y : y + h, x : x + w] / 255.0, out[y : y + h, x : x + w] / 255.0, **SK)
                     for x, y, w, h in image_boxes])
    return rmse, ssim


def torch_batched(gts, outs, boxes, device, batch=64):
    rmse, ssim = [], []
    for start in range(0, len(gts), batch):
        sl = slice(start, start + batch)
        # uint8 in: RMSE is exact integer arithmetic, SSIM converts only the hole crops to float
        target = torch.from_numpy(gts[sl]).to(device).permute(0, 3, 1, 2)
        preds = torch.from_numpy(outs[sl]).to(device).permute(0, 3, 1, 2)
        sse, count = box_squared_error(preds, target, boxes[sl])
        rmse += (sse / count).sqrt().tolist()
        ssim += box_ssim(preds, target, boxes[sl])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return rmse, ssim


def timed(fn, repeats):
    best = float("inf")
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--fid-crops", type=int, default=32, help="crops for the Inception timing (0 = skip)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    gts, outs, boxes = make_data(args.images)
    n_holes = sum(len(b) for b in boxes)
    torch_batched(gts[:8], outs[:8], boxes[:8], args.device)  # warm-up (kernels, Gaussian matrices)
    t_sk, (rmse_sk, ssim_sk) = timed(lambda: skimage_loop(gts, outs, boxes), args.repeats)  # best of N, as ours
    t_torch, (rmse_t, ssim_t) = timed(lambda: torch_batched(gts, outs, boxes, args.device), args.repeats)
    d_ssim = max(abs(a - b) for x, y in zip(ssim_t, ssim_sk) for a, b in zip(x, y))
    d_rmse = max(abs(a - b) for a, b in zip(rmse_t, rmse_sk))
    if d_ssim > 1e-4 or d_rmse > 1e-6:
        print(f"MISMATCH: max |dSSIM| {d_ssim:.2e}, max |dRMSE| {d_rmse:.2e}")
        return 1

    fid = {}
    if args.fid_crops:
        from diffinpaint.evaluation.fid import InceptionFeatures
        from diffinpaint.evaluation.fid import WEIGHTS_NAMES

        sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
        from fid_weights import write_random_inception_weights

        with tempfile.TemporaryDirectory() as tmp:
            extractor = InceptionFeatures(write_random_inception_weights(Path(tmp) / WEIGHTS_NAMES[0]),
                                          device=args.device)
        crops = [outs[i % len(outs)][y : y + h, x : x + w] for i in range(args.fid_crops)
                 for x, y, w, h in boxes[i % len(outs)][:1]]
        extractor(crops[:2])
        t_fid, _ = timed(lambda: extractor(crops), 1)
        fid = {"fid_crops_per_s": len(crops) / t_fid}

    result = {
        "images": args.images, "holes": n_holes, "device": args.device,
        "skimage_images_per_s": args.images / t_sk, "skimage_holes_per_s": n_holes / t_sk,
        "torch_images_per_s": args.images / t_torch, "torch_holes_per_s": n_holes / t_torch,
        "ratio_vs_skimage": t_sk / t_torch, "max_abs_ssim_diff": d_ssim, "max_abs_rmse_diff": d_rmse,
        **fid, "machine": machine_info(),
    }
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    stem = f"metrics_{args.device.split(':')[0]}"
    (results / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    md = [f"Machine: {m['cpu']}, {m['cpu_cores']} cores, torch {m['torch']} ({m['torch_threads']} threads)"
          + (f", GPU {m['gpu']}" if "gpu" in m else ""), "",
          "| implementation | images/s | holes/s | ratio |", "|---|---:|---:|---:|",
          f"| skimage loop (reference) | {result['skimage_images_per_s']:.0f} | {result['skimage_holes_per_s']:.0f} | 1.0 |",
          f"| diffinpaint (torch, {args.device}) | {result['torch_images_per_s']:.0f} | "
          f"{result['torch_holes_per_s']:.0f} | {result['ratio_vs_skimage']:.1f} |", "",
          f"Agreement: max |ΔSSIM| = {d_ssim:.1e}, max |ΔRMSE| = {d_rmse:.1e}."]
    if fid:
        md.append(f"FID features (Inception-v3, 299², {args.device}): {fid['fid_crops_per_s']:.1f} crops/s.")
    (results / f"{stem}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    print(f"ratio_vs_skimage={result['ratio_vs_skimage']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
