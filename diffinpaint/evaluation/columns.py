"""The metric columns of an eval folder and how per-image values add up to a summary (no torch: the report
imports this too, so the summary eval writes and the numbers the report recomputes share one definition).

Each metric is one column of summary.csv/json; those with per-image values are also columns of per_image.csv
and per_bin.csv, and FID/KID (hole crops and whole images) are also computed per bin (PER_BIN_SET, PER_BIN_NOTE).
A model's summary value is computed per seed from its per-image rows, then averaged over seeds (`<name>_seed_sd` =
the sample standard deviation across seeds).

Intervals. The set metrics' `<name>_ci_low` / `<name>_ci_high` in the summary (fid, kid, fid_full, kid_full, pids,
uids; fid.CI_METRICS) are 95% percentile-bootstrap intervals over images computed from the cached Inception
features (fid.resampled_set_metrics). With several seeds, each resample draws the same images for every seed, the
statistic is computed per seed on it and averaged over seeds, exactly as the summary's value is averaged
(fid.seed_averaged_intervals); the interval is the 2.5th..97.5th percentile of that seed average. An image's
outputs in all seeds travel together, and each output's seed comes from (seed, image), so the interval covers both
which images were drawn and how outputs vary from seed to seed; with one seed it is that seed's interval. The
report computes the per-image metrics' intervals the same way (report.seed_mean_ci).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Column:
    name: str
    group: str  # "hole" (the toolkit's own view) or "whole" (LaMa / CoModGAN protocol)
    higher_is_better: bool
    per_image: bool  # a per-image value exists (the others are set metrics: fid, kid, pids, uids)
    pooling: str = "mean"  # "rmse": sqrt of pixel-pooled MSE; "holes": mean over holes; "mean": over images
    protocol: str = ""  # the published protocol this column matches, for the report's header
    reference: bool = False  # measured on the originals (text_rate_gt): no better or worse, never in bold

    @property
    def arrow(self) -> str:
        if self.reference:
            return "(originals)"
        return "↑" if self.higher_is_better else "↓"


COLUMNS = [
    Column("rmse", "hole", False, True, "rmse", "Kaggle photo reconstruction (RMSE over hole pixels)"),
    Column("ssim", "hole", True, True, "holes", "full-image SSIM map averaged over the hole"),
    Column("ssim_crop", "hole", True, True, "holes",
           "SSIM of the hole crop alone (earlier definition; rectangular holes only)"),
    Column("lpips", "hole", False, True, "holes",
           "LPIPS (AlexNet) of hole crops; free-form: the spatial LPIPS map over hole pixels"),
    Column("fid", "hole", False, False, protocol="FID of hole crops (local FID)"),
    Column("kid", "hole", False, False, protocol="KID of hole crops"),
    Column("psnr_full", "whole", True, True, "mean",
           "MAT: PSNR of the composited image (capped at 54.15 dB, see n_psnr_capped); LaMa reports no PSNR"),
    Column("ssim_full", "whole", True, True, "mean",
           "MAT: skimage-style SSIM of the composited image; NOT LaMa's (its pytorch-ssim zero-pads the border, "
           "about 0.01 apart on the demo)"),
    Column("lpips_full", "whole", False, True, "mean", "MAT (AlexNet LPIPS); LaMa uses VGG"),
    Column("fid_full", "whole", False, False, protocol="LaMa / CoModGAN / MAT: FID of composited images"),
    Column("kid_full", "whole", False, False, protocol="KID of composited images"),
    Column("pids", "whole", True, False, protocol="CoModGAN / MAT: paired Inception discriminative score"),
    Column("uids", "whole", True, False, protocol="CoModGAN / MAT: unpaired Inception discriminative score"),
    # text.py: share of holes where the OCR model (rapidocr's PP-OCR) reads text (score >= --text-threshold) with at
    # least half of its detected box inside the hole; per image n_text_holes / n_holes, pooled over holes
    Column("text_rate", "hole", False, True, "holes",
           "share of holes with text read by an OCR model (PP-OCR, score >= threshold, box mostly inside the hole)"),
    Column("text_rate_gt", "hole", False, True, "holes",
           "text_rate of the originals: the reference (text that was really there)", reference=True),
    # clip.py: CLIP (open_clip, default OpenAI ViT-B/32) image-embedding cosine of output vs original crop
    Column("clip_i", "hole", True, True, "holes", "CLIP image-embedding cosine, output vs original hole crop"),
    Column("clip_i_bbox", "hole", True, True, "holes",
           "free-form masks: clip_i on the bounding-box crop, known pixels included"),
    Column("clip_t", "whole", True, True, "mean",
           "CLIPScore (Hessel et al. 2021; torchmetrics): max(100·cos, 0) of the output vs its prompt"),
]
BY_NAME = {c.name: c for c in COLUMNS}
PER_IMAGE = [c.name for c in COLUMNS if c.per_image]
# per_image.csv keeps the contract's leading order (model,image,rmse,...,lpips_full,label,...): the per-image metrics
# added since (text, CLIP) come after the bookkeeping columns
LATER = ["text_rate", "text_rate_gt", "clip_i", "clip_i_bbox", "clip_t"]
SET_METRICS = [c.name for c in COLUMNS if not c.per_image]

# psnr_full of an exact copy is infinite (MSE 0), which would turn a model's mean into inf and the summary into
# null. Every PSNR is capped at that of an MSE of (0.5/255)²: an RMSE of half a uint8 grey level, below which the
# 8-bit images cannot tell the output from the original. For data range 1 that is 20·log10(255/0.5) ≈ 54.15 dB.
# Capped values are counted (`n_psnr_capped` in the summary, shown beside psnr_full in the report).
PSNR_MIN_MSE = (0.5 / 255.0) ** 2
PSNR_CAP_DB = 10.0 * math.log10(1.0 / PSNR_MIN_MSE)

# LaMa's evaluator: ten equal bins of the hole's share of the image, np.linspace(0, 1, 11); an area of exactly
# 1 goes in the last bin
N_BINS = 10
BIN_EDGES = np.linspace(0.0, 1.0, N_BINS + 1)
BIN_NAMES = [f"{round(100 * BIN_EDGES[i])}-{round(100 * BIN_EDGES[i + 1])}%" for i in range(N_BINS)]


def area_bin(fraction: float) -> int:
    index = int(np.searchsorted(BIN_EDGES, fraction, side="right")) - 1
    return min(max(index, 0), N_BINS - 1)


def aggregate(column: Column, rows: pd.DataFrame) -> float | None:
    """One seed's summary value of a per-image column over `rows` (NaN rows left out; None when none left)."""
    values = pd.to_numeric(rows[column.name], errors="coerce") if column.name in rows else pd.Series(dtype=float)
    keep = values.notna().to_numpy()
    if not keep.any():
        return None
    v = values.to_numpy(dtype=np.float64)[keep]
    if column.pooling == "rmse":
        pixels = _weights(rows, "n_hole_pixels")[keep]
        return float(math.sqrt(np.sum(v**2 * pixels) / np.sum(pixels)))
    if column.pooling == "holes":
        holes = np.maximum(_weights(rows, "n_holes")[keep], 1.0)
        return float(np.sum(v * holes) / np.sum(holes))
    return float(np.mean(v))


def _weights(rows: pd.DataFrame, name: str) -> np.ndarray:
    """Per-image weights; equal weights when the column is missing (older eval folders)."""
    if name not in rows:
        return np.ones(len(rows))
    return pd.to_numeric(rows[name], errors="coerce").fillna(1.0).to_numpy(dtype=np.float64)


def over_seeds(values: list[float | None]) -> tuple[float | None, float | None]:
    """(mean, sample standard deviation) of per-seed values; sd is None for fewer than two seeds."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None, None
    mean = float(np.mean(finite))
    return mean, (float(np.std(finite, ddof=1)) if len(finite) > 1 else None)


def per_image_summary(rows: pd.DataFrame) -> dict[str, tuple[float | None, float | None]]:
    """name -> (mean over seeds, sd over seeds) of every per-image column, for one model's rows."""
    seeds = sorted(rows["seed"].unique()) if "seed" in rows else [None]
    out = {}
    for column in COLUMNS:
        if not column.per_image:
            continue
        per_seed = [aggregate(column, rows if seed is None else rows[rows["seed"] == seed]) for seed in seeds]
        out[column.name] = over_seeds(per_seed)
    return out


def n_psnr_capped(rows: pd.DataFrame) -> int:
    """How many per-image psnr_full values in `rows` sit at the cap (every seed's rows: an image capped in two
    seeds counts twice)."""
    if "psnr_full" not in rows:
        return 0
    values = pd.to_numeric(rows["psnr_full"], errors="coerce").to_numpy(dtype=np.float64)
    return int(np.sum(values >= PSNR_CAP_DB))


# per_bin.csv's set metrics: FID and KID of each bin's own images, hole crops (fid, kid) and whole images (fid_full,
# kid_full), from the Inception features eval already holds (evaluate.per_bin_set_metrics), per seed then averaged.
# Empty where the bin is too small: FID needs 2 rows per side (a covariance), KID subsets of 2 per side from
# disjoint images (4 images; more when images have several crops). n_images and n_fid_crops give what each value
# rests on. The report shows PER_BIN_NOTE with them.
PER_BIN_SET = ["fid", "kid", "fid_full", "kid_full"]
PER_BIN_COLUMNS = ["model", "bin", "n_images", *PER_IMAGE, "n_fid_crops", *PER_BIN_SET]
PER_BIN_NOTE = ("FID and KID per bin compare each bin's outputs with the same images' originals, features of that "
                "bin's images only (crops for fid/kid, whole images for fid_full/kid_full; seeds averaged). FID rests "
                "on n_images whole images or n_fid_crops crops per side; on fewer than the 2048 feature dimensions "
                "it is strongly biased upward, the more so the fewer the images, so bins with different counts are "
                "not comparable by FID, nor with the summary's FID: compare models within one bin, or by KID "
                "(unbiased, though noisy on few images). Empty in per_bin.csv (\"too few\" in the report): too few "
                "images for that statistic (FID needs 2 per side, KID 4 images, more when images hold several "
                "holes).")


def per_bin_table(per_image: pd.DataFrame, models: list[str],
                  set_metrics: dict[str, dict[str, dict]] | None = None) -> pd.DataFrame:
    """per_bin.csv: model, bin, n_images, every per-image metric, and FID/KID of the bin's images (PER_BIN_SET,
    with n_fid_crops), ten rows per model (LaMa's bins). `set_metrics` (model -> bin name -> values, from
    evaluate.per_bin_set_metrics or a per_bin.csv already written) fills the set columns; empty without it."""
    set_metrics = set_metrics or {}
    records = []
    per_image = per_image.assign(bin=per_image["hole_fraction"].astype(float).map(area_bin))
    for model in models:
        rows = per_image[per_image["model"] == model]
        seeds = sorted(rows["seed"].unique())
        for index, name in enumerate(BIN_NAMES):
            in_bin = rows[rows["bin"] == index]
            record = {"model": model, "bin": name, "n_images": int(in_bin["image"].nunique())}
            for column in COLUMNS:
                if column.per_image:
                    per_seed = [aggregate(column, in_bin[in_bin["seed"] == s]) if len(in_bin) else None
                                for s in seeds]
                    record[column.name] = over_seeds(per_seed)[0]
            record.update(set_metrics.get(model, {}).get(name, {}))
            records.append(record)
    return pd.DataFrame.from_records(records, columns=PER_BIN_COLUMNS)
