"""Every eval metric's throughput against its reference implementation, on the same images.

    python eval/bench_metrics.py [--images 256] [--threads 2] [--device cpu|cuda] [--lpips-images 32] [--fid-crops 32]
                                 [--out eval/results/metrics_cuda]

Data: real 256×256 photos (the demo crops from scikit-image) with two 75×75 holes each; the "output" is the
photo with noise in the holes (composited, as eval scores it). Each row times our batched torch code and the
reference on the same data and checks they agree, or the benchmark fails:

  rmse + ssim        hole ssim (README "Metrics"): skimage's full-image SSIM map per image, averaged over each hole
  rmse + ssim_crop   the earlier per-crop SSIM: skimage on each hole crop
  psnr_full + ssim_full   skimage peak_signal_noise_ratio + structural_similarity per whole image
  lpips, lpips_full  torchmetrics' LearnedPerceptualImagePatchSimilarity one crop / image at a time (random
                     AlexNet weights: the speed and the agreement do not depend on them)
  Inception          features per second (torch-fidelity's Inception-v3, random weights), whole images + crops
  P-IDS/U-IDS        the LinearSVC fit on N real + N fake 2048-d features

Results go to eval/results/metrics_<device>.{json,md} (or --out OUT: OUT.json, OUT.md); the last line printed is `ratio_vs_skimage=<x>` for
rmse + ssim (DESIGN's definition), which must stay >= 5.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's diffinpaint, installed or not
sys.path.insert(0, str(Path(__file__).parent))
from machine import machine_info  # noqa: E402

from diffinpaint.data.demo import demo_crops  # noqa: E402
from diffinpaint.data.masks import box_holes, derive_seed  # noqa: E402
from diffinpaint.evaluation.metrics import (box_hole_ssim, box_squared_error, box_ssim, image_psnr,  # noqa: E402
                                            image_ssim)

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


def _mask(shape, image_boxes):
    mask = np.zeros(shape[:2], bool)
    for x, y, w, h in image_boxes:
        mask[y : y + h, x : x + w] = True
    return mask


def _rmse(gt, out, image_boxes):
    diff = (out.astype(np.float64) - gt.astype(np.float64)) / 255.0
    return float(np.sqrt(np.mean(diff[_mask(gt.shape, image_boxes)] ** 2)))


# ---------------------------------------------------------------------------------------------- references


def skimage_hole(gts, outs, boxes):
    from skimage.metrics import structural_similarity

    rmse, ssim = [], []
    for gt, out, image_boxes in zip(gts, outs, boxes):
        rmse.append(_rmse(gt, out, image_boxes))
        _, full = structural_similarity(gt / 255.0, out / 255.0, full=True, **SK)
        ssim.append([float(full[y : y + h, x : x + w].mean()) for x, y, w, h in image_boxes])
    return rmse, ssim


def skimage_crop(gts, outs, boxes):
    from skimage.metrics import structural_similarity

    rmse, ssim = [], []
    for gt, out, image_boxes in zip(gts, outs, boxes):
        rmse.append(_rmse(gt, out, image_boxes))
        ssim.append([structural_similarity(gt[y : y + h, x : x + w] / 255.0, out[y : y + h, x : x + w] / 255.0, **SK)
                     for x, y, w, h in image_boxes])
    return rmse, ssim


def skimage_whole(gts, outs):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    return ([peak_signal_noise_ratio(g, o) for g, o in zip(gts, outs)],
            [structural_similarity(g / 255.0, o / 255.0, **SK) for g, o in zip(gts, outs)])


# ---------------------------------------------------------------------------------------------- ours


def _batches(gts, outs, boxes, device, batch=64):
    for start in range(0, len(gts), batch):
        sl = slice(start, start + batch)
        # uint8 in: RMSE is exact integer arithmetic; SSIM converts only what it filters to float
        yield (torch.from_numpy(outs[sl]).to(device).permute(0, 3, 1, 2),
               torch.from_numpy(gts[sl]).to(device).permute(0, 3, 1, 2), boxes[sl])


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def ours_hole(gts, outs, boxes, device, ssim_fn):
    rmse, ssim = [], []
    for preds, target, b in _batches(gts, outs, boxes, device):
        sse, count = box_squared_error(preds, target, b)
        rmse += (sse / count).sqrt().tolist()
        ssim += ssim_fn(preds, target, b)
    _sync(device)
    return rmse, ssim


def ours_whole(gts, outs, device):
    psnr, ssim = [], []
    for preds, target, _ in _batches(gts, outs, [None] * len(gts), device):
        psnr += image_psnr(preds, target).tolist()
        ssim += image_ssim(preds, target).tolist()
    _sync(device)
    return psnr, ssim


def timed(fn, repeats):
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def _max_diff(a, b):
    flat = lambda v: [x for row in v for x in (row if isinstance(row, list) else [row])]  # noqa: E731
    return max(abs(x - y) for x, y in zip(flat(a), flat(b)))


def bench_lpips(gts, outs, boxes, device, tmp: Path, repeats: int):
    """Ours (batched; crops of one size together) vs torchmetrics' LPIPS metric one item at a time."""
    from unittest import mock

    import torchvision
    from torchmetrics.functional.image import lpips as tm_lpips
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    from diffinpaint.evaluation.lpips import LPIPS

    path = tmp / "alexnet-owt-7be5be79.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    ours = LPIPS(path, device=device)

    def features(net, pretrained=False):
        alexnet = torchvision.models.alexnet(weights=None)
        alexnet.load_state_dict(torch.load(path, weights_only=True))
        return alexnet.features

    with mock.patch.object(tm_lpips, "_get_tv_model_features", features):
        reference = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True).to(device)

    unit = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float().div(255).to(device)  # noqa

    def reference_run():
        whole, crops = [], []
        for gt, out, image_boxes in zip(gts, outs, boxes):
            reference.reset()
            reference.update(unit(out), unit(gt))
            whole.append(reference.compute().item())
            row = []
            for x, y, w, h in image_boxes:
                reference.reset()
                reference.update(unit(out[y : y + h, x : x + w]), unit(gt[y : y + h, x : x + w]))
                row.append(reference.compute().item())
            crops.append(row)
        _sync(device)
        return whole, crops

    def ours_run():
        whole, crops = [], []
        for preds, target, b in _batches(gts, outs, boxes, device, batch=32):
            whole += ours(preds, target).tolist()
            crops += ours.crops(preds, target, b)
        _sync(device)
        return whole, crops

    ours_run()
    t_ref, (w_ref, c_ref) = timed(reference_run, repeats)
    t_ours, (w_ours, c_ours) = timed(ours_run, repeats)
    return t_ref, t_ours, _max_diff(w_ours, w_ref), _max_diff(c_ours, c_ref)


def bench_inception(outs, boxes, device, tmp: Path, n: int, ids_features: int = 1000):
    from diffinpaint.evaluation.fid import WEIGHTS_NAMES, InceptionFeatures, inception_discriminative_scores

    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
    from fid_weights import write_random_inception_weights

    extractor = InceptionFeatures(write_random_inception_weights(tmp / WEIGHTS_NAMES[0]), device=device)
    items = [outs[i % len(outs)] for i in range(n)]
    items += [outs[i % len(outs)][y : y + h, x : x + w] for i in range(n) for x, y, w, h in boxes[i % len(outs)][:1]]
    extractor(items[:2])
    t_features, _ = timed(lambda: extractor(items), 1)
    rng = np.random.default_rng(0)
    real = torch.from_numpy(rng.normal(0, 1, (ids_features, 2048)))
    fake = torch.from_numpy(rng.normal(0.05, 1, (ids_features, 2048)))
    t_ids, _ = timed(lambda: inception_discriminative_scores(real, fake), 1)
    return len(items) / t_features, t_ids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--lpips-images", type=int, default=32, help="images for the LPIPS timing (0 = skip)")
    parser.add_argument("--fid-crops", type=int, default=32, help="images (+ one crop each) for Inception (0 = skip)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ids-features", type=int, default=1000, help="real and fake features for the P-IDS/U-IDS "
                        "SVM timing (default 1000 each)")
    parser.add_argument("--machine-note", default="", help="a few words about the machine, kept in the results")
    parser.add_argument("--out", default=None, help="write OUT.json and OUT.md (default eval/results/metrics_<device>)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    gts, outs, boxes = make_data(args.images)
    n_holes = sum(len(b) for b in boxes)
    dev = args.device
    ours_hole(gts[:8], outs[:8], boxes[:8], dev, box_hole_ssim)  # warm-up (kernels, Gaussian matrices)
    ours_hole(gts[:8], outs[:8], boxes[:8], dev, box_ssim)
    ours_whole(gts[:8], outs[:8], dev)
    rows = {}
    for key, reference, ssim_fn in (("rmse + ssim", skimage_hole, box_hole_ssim),
                                    ("rmse + ssim_crop", skimage_crop, box_ssim)):
        t_ref, (rmse_ref, ssim_ref) = timed(lambda: reference(gts, outs, boxes), args.repeats)  # best of N, as ours
        t_ours, (rmse_ours, ssim_ours) = timed(lambda: ours_hole(gts, outs, boxes, dev, ssim_fn), args.repeats)
        rows[key] = {"reference": "skimage loop", "t_ref": t_ref, "t_ours": t_ours,
                     "max_abs_diff": {"rmse": _max_diff(rmse_ours, rmse_ref), "ssim": _max_diff(ssim_ours, ssim_ref)}}
    t_ref, (psnr_ref, ssim_ref) = timed(lambda: skimage_whole(gts, outs), args.repeats)
    t_ours, (psnr_ours, ssim_ours) = timed(lambda: ours_whole(gts, outs, dev), args.repeats)
    rows["psnr_full + ssim_full"] = {"reference": "skimage loop", "t_ref": t_ref, "t_ours": t_ours,
                                     "max_abs_diff": {"psnr_full": _max_diff(psnr_ours, psnr_ref),
                                                      "ssim_full": _max_diff(ssim_ours, ssim_ref)}}
    tolerance = {"rmse": 1e-9, "ssim": 1e-4, "psnr_full": 1e-6, "ssim_full": 1e-4, "lpips_full": 1e-4, "lpips": 1e-4}
    extra = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.lpips_images:
            k = args.lpips_images
            t_ref, t_ours, d_whole, d_crops = bench_lpips(gts[:k], outs[:k], boxes[:k], dev, Path(tmp), args.repeats)
            rows["lpips + lpips_full"] = {"reference": "torchmetrics LPIPS, one item at a time", "t_ref": t_ref,
                                          "t_ours": t_ours, "images": k,
                                          "max_abs_diff": {"lpips_full": d_whole, "lpips": d_crops}}
        if args.fid_crops:
            items_per_s, t_ids = bench_inception(outs, boxes, dev, Path(tmp), args.fid_crops, args.ids_features)
            extra = {"inception_items_per_s": items_per_s, "pids_uids_features": args.ids_features,
                     f"pids_uids_seconds_{args.ids_features}_pairs": t_ids}
    for key, row in rows.items():
        n = row.get("images", args.images)
        row.update(images_per_s_ref=n / row["t_ref"], images_per_s_ours=n / row["t_ours"],
                   ratio=row["t_ref"] / row["t_ours"])
        bad = {m: d for m, d in row["max_abs_diff"].items() if d > tolerance[m]}
        if bad:
            print(f"MISMATCH in {key}: {bad}")
            return 1

    result = {"images": args.images, "holes": n_holes, "device": dev, "rows": rows, **extra,
              "ratio_vs_skimage": rows["rmse + ssim"]["ratio"], "machine": machine_info(),
              "machine_note": args.machine_note}
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / f"metrics_{dev.split(':')[0]}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    md = [f"Machine: {m['cpu']}, {m['cpu_cores']} cores, torch {m['torch']} ({m['torch_threads']} threads)"
          + (f", GPU {m['gpu']}" if "gpu" in m else "") + (f"; {args.machine_note}" if args.machine_note else ""),
          "", f"Data: {args.images} real 256×256 photos, two 75×75 holes each (LPIPS: the first "
          f"{args.lpips_images}); best of {args.repeats} runs.", "",
          "| metrics | reference | reference images/s | diffinpaint images/s | ratio | max abs difference |",
          "|---|---|---:|---:|---:|---|"]
    for key, row in rows.items():
        diffs = ", ".join(f"{k} {v:.1e}" for k, v in row["max_abs_diff"].items())
        md.append(f"| {key} | {row['reference']} | {row['images_per_s_ref']:.0f} | {row['images_per_s_ours']:.0f} | "
                  f"{row['ratio']:.1f} | {diffs} |")
    if extra:
        md += ["", f"Inception-v3 features (299², {dev}): {extra['inception_items_per_s']:.1f} images or crops/s; "
               f"P-IDS/U-IDS SVM on {args.ids_features} + {args.ids_features} 2048-d features: "
               f"{extra[f'pids_uids_seconds_{args.ids_features}_pairs']:.1f} s."]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    print(f"ratio_vs_skimage={result['ratio_vs_skimage']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
