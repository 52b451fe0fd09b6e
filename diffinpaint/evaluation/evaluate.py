"""`diffinpaint eval`: run every model on the same images and masks, score them, write the tables.

    EVAL/.diffinpaint-eval   marks a folder eval wrote: the only non-empty --out eval writes into
    EVAL/config.toml         data, models, seeds, run folders, settings, versions
    EVAL/runs/<model>/       each model's run folder (reused when finished; --runs DIR puts them elsewhere);
                             with --seeds a,b: runs/<model>/seed_<s>/ (deterministic models run once)
    EVAL/per_image.csv       model,image,rmse,ssim,ssim_crop,lpips,psnr_full,ssim_full,lpips_full,label,seed,...
    EVAL/per_bin.csv         model,bin,n_images,<per-image metrics>,n_fid_crops,fid,kid,fid_full,kid_full over LaMa's
                             ten bins of hole area (FID/KID of each bin's own images; columns.PER_BIN_NOTE)
    EVAL/summary.csv/.json   one row per model (columns.py lists the metrics); null where not computable
    EVAL/text_detections.jsonl  every hole where the OCR model read text (text.py), outputs and originals
    EVAL/report.html

The steps, in order:
  1. check everything before any work: options, the out folder, each model (built, checked, freed: its
     options, checkpoint, labels, training set against these images, stale run folders), the weights files;
  2. run each model (and seed) into its run folder, one model in memory at a time;
  3. score: each process its shard; hole metrics, whole-image metrics, LPIPS and Inception features of every
     image and crop once, the OCR (text_rate) and CLIP (clip_i, clip_t) of every output, and of each original
     once; rows gathered as objects (no padding, so nothing is counted twice);
  4. set metrics (FID, KID, P-IDS/U-IDS; FID/KID per bin of hole area) and the summary on the main process, which
     alone writes files.
"""
from __future__ import annotations

import dataclasses
import gc
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from . import fid as fidlib
from .columns import (BIN_NAMES, COLUMNS, LATER, PER_BIN_COLUMNS, PER_BIN_SET, PER_IMAGE, area_bin, n_psnr_capped,
                      over_seeds, per_bin_table, per_image_summary)
from .leakage import TrainingSetCheck, check_training_set, dataset_fingerprints
from .metrics import (RADIUS, box_hole_ssim, box_squared_error, box_ssim, image_psnr, image_ssim,
                      mask_bounding_box, masked_squared_error, masked_ssim)
from ..data import Dataset, Sample, load_rgb
from ..models import build_model, model_class
from ..runner import (RunSettings, SettingsChanged, check_config, check_out_dir, library_versions, model_device,
                      process_state, run, toml_safe)
from ..util.errors import UserError
from ..util.files import atomic_write_text

# Below this many crops per side the 2048×2048 covariance is rank-deficient and FID is dominated by bias;
# KID is unbiased and is the number to compare then.
FID_MIN_CROPS = fidlib.FEATURE_DIM
MARKER = ".diffinpaint-eval"
MARKER_CONTENT = {"format": "diffinpaint-eval", "version": 1}
BATCH_PIXELS = 1 << 22  # pixels per scoring batch (16 images of 512²): bounds memory whatever the image size


@dataclass
class Variant:
    """One row of an eval: a registered model with its option values (field name -> value). `--models a,b` makes
    one variant per model, named after it."""

    name: str  # the row's name, its run folder under runs/ and its name in the report
    model: str  # registry name
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, model: str, **options: Any) -> "Variant":
        return cls(name=model, model=model, options=options)


@dataclass
class EvalSettings:
    variants: list[Variant]
    out: Path
    runs_dir: Path | None = None  # default EVAL/runs
    fid: bool = True  # compute the Inception metrics when weights are available
    fid_weights: Path | None = None  # the standard pt_inception-2015-12-05 file (offline machines)
    lpips_weights: Path | None = None  # torchvision's alexnet-owt-7be5be79.pth (offline machines)
    cache_dir: Path | None = None  # ground-truth feature cache; default ~/.cache/diffinpaint/features
    report: bool = True  # write report.html
    seeds: list[int] | None = None  # run every model once per seed; None = [run.seed]
    allow_in_sample: bool = False  # score models trained on some of these images (marked in_sample)
    text: bool = True  # text_rate / text_rate_gt with the bundled OCR model (evaluation/text.py)
    text_threshold: float = 0.5  # OCR recognition score from which a string counts as text
    clip_model: str = "ViT-B-32"  # open_clip architecture[:tag] for clip_i / clip_t (evaluation/clip.py)
    clip_weights: Path | None = None  # open_clip's open_clip_model.safetensors (else the Hugging Face cache)
    run: RunSettings = field(default_factory=RunSettings)


@dataclass
class ModelPlan:
    name: str  # the variant's name
    variant: Variant
    seeds: list[int]
    run_dirs: list[Path]
    deterministic: bool
    training: TrainingSetCheck
    floor: bool = False  # grey / ring_mean: marked in the summary and the report


# ---------------------------------------------------------------------------------------------- checks


def check_eval_out(out: Path, dataset: Dataset) -> None:
    """--out must be new, empty, or a folder eval wrote (its marker file); anything else is left untouched."""
    out = Path(out)
    data, resolved = dataset.root.resolve(), out.resolve()
    if resolved == data or data in resolved.parents:
        raise UserError(f"--out {out} is inside the dataset folder {dataset.root}; choose an --out outside it")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; choose a new folder")
    if out.is_dir() and any(out.iterdir()) and not is_eval_folder(out):
        raise UserError(f"--out {out} is a non-empty folder that `diffinpaint eval` did not write (no {MARKER}); "
                        "choose a new --out")


def is_eval_folder(path: Path) -> bool:
    try:
        return json.loads((Path(path) / MARKER).read_text(encoding="utf-8")) == MARKER_CONTENT
    except (OSError, ValueError):
        return False


def parse_seeds(text: str) -> list[int]:
    """`--seeds 0,1,2` -> [0, 1, 2]; refuses empty lists, non-integers and repeats."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--seeds {text}: give whole numbers separated by commas, e.g. --seeds 0,1,2") from None
    if not seeds:
        raise UserError("--seeds is empty; give whole numbers separated by commas, e.g. --seeds 0,1,2")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise UserError(f"--seeds {text}: seed {repeated[0]} is given twice; give each seed once")
    return seeds


def _free(model) -> None:
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def plan_models(dataset: Dataset, settings: EvalSettings, device: str, state, log) -> list[ModelPlan]:
    """Build, check and free every model, so bad input fails before hours of runs."""
    seeds = settings.seeds or [settings.run.seed]
    runs_dir = Path(settings.runs_dir) if settings.runs_dir else Path(settings.out) / "runs"
    fingerprints: dict[str, str] = {}

    def evaluated_fingerprints() -> dict[str, str]:
        if not fingerprints:
            fingerprints.update(dataset_fingerprints(dataset.samples, state))
        return fingerprints

    plans = []
    for variant in settings.variants:
        name = variant.name
        model = build_model(variant.model, variant.options, device=device)
        # models whose output does not depend on the seed say so: they run once whatever --seeds says
        deterministic = bool(model.deterministic)
        model_seeds = seeds[:1] if deterministic else seeds
        run_dirs = ([runs_dir / name] if len(model_seeds) == 1 else
                    [runs_dir / name / f"seed_{s}" for s in model_seeds])
        try:
            model.check_labels(dataset.labels)
            training = check_training_set(name, model, evaluated_fingerprints,
                                          allow_in_sample=settings.allow_in_sample, log=log)
            for seed, run_dir in zip(model_seeds, run_dirs):
                check_out_dir(run_dir, dataset)
                check_config(run_dir, model, dataclasses.replace(settings.run, seed=seed))
        except SettingsChanged as err:  # e.g. a retrained checkpoint: say how to redo this model's run
            raise UserError(f"{err.out_dir} holds {name} outputs made with other settings ({err.details}); "
                            f"delete that folder to redo {name}, or pass --runs with a new folder") from None
        finally:
            _free(model)
        plans.append(ModelPlan(name, variant, model_seeds, run_dirs, deterministic, training,
                               floor=bool(getattr(model, "floor", False))))
    return plans


# ---------------------------------------------------------------------------------------------- scoring


def _tensor(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 N×3×H×W: RMSE is exact integer arithmetic and only what SSIM/LPIPS read becomes float."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)


def _crop_boxes(sample: Sample, mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """The crops LPIPS and FID see: each box, or the bounding box of a free-form hole."""
    if sample.boxes:
        return list(sample.boxes)
    box = mask_bounding_box(torch.from_numpy(mask))
    return [box] if box else []


def _crops(image: np.ndarray, boxes) -> list[np.ndarray]:
    return [image[y : y + h, x : x + w] for x, y, w, h in boxes]


def _batches(samples: list[Sample]) -> list[list[Sample]]:
    """Same-size images, about BATCH_PIXELS pixels per batch."""
    groups: dict[tuple[int, int], list[Sample]] = {}
    for s in samples:
        groups.setdefault((s.width, s.height), []).append(s)
    batches = []
    for (w, h), group in groups.items():
        size = max(1, BATCH_PIXELS // (w * h))
        batches += [group[k : k + size] for k in range(0, len(group), size)]
    return batches


class Scorer:
    """Per-image metrics of one run folder on this process's shard; LPIPS, Inception, the OCR model (text) and CLIP
    are optional. What only depends on the originals (their OCR, their CLIP crop embeddings) is computed once per
    image and reused for every model and seed."""

    def __init__(self, device: str, lpips=None, inception: fidlib.InceptionFeatures | None = None, text=None,
                 clip=None):
        self.device, self.lpips, self.inception, self.text, self.clip = device, lpips, inception, text, clip
        self._original: dict[tuple[str, str], Any] = {}  # (image id, what) -> value computed on the original

    def _once(self, image_id: str, what: str, compute):
        if (image_id, what) not in self._original:
            self._original[(image_id, what)] = compute()
        return self._original[(image_id, what)]

    def text_rows(self, batch: list[Sample], gts, outs, masks_np) -> list[dict]:
        """Per image: n_text_holes, text_rate (output) and the same on the original (_gt), plus the holes with
        text and their detections (private keys, for text_detections.jsonl and the report)."""
        from .text import hole_masks, hole_records, text_in_holes

        if self.text is None:
            return [{"n_text_holes": math.nan, "n_text_holes_gt": math.nan, "text_rate": math.nan,
                     "text_rate_gt": math.nan} for _ in batch]
        holes = [hole_masks(m.shape, s.boxes, m) for s, m in zip(batch, masks_np)]
        found = [text_in_holes(d, h) for d, h in zip(self.text(outs), holes)]
        found_gt = [self._once(s.image_id, "text", lambda g=g, h=h: text_in_holes(self.text([g])[0], h))
                    for s, g, h in zip(batch, gts, holes)]
        rows = []
        for mine, gt, h in zip(found, found_gt, holes):
            n, n_gt = sum(1 for f in mine if f), sum(1 for f in gt if f)
            rows.append({"n_text_holes": n, "n_text_holes_gt": n_gt,
                         "text_rate": n / len(h) if h else math.nan, "text_rate_gt": n_gt / len(h) if h else math.nan,
                         "_text_holes": hole_records(mine), "_text_holes_gt": hole_records(gt)})
        return rows

    def clip_rows(self, batch: list[Sample], gts, outs, crop_boxes, prompts: dict[str, str]) -> list[dict]:
        """Per image: clip_i (rectangular holes: mean over the hole crops), clip_i_bbox (free-form: the mask's
        bounding-box crop) and clip_t (CLIPScore of the whole output against its prompt; NaN without one)."""
        from .clip import clip_score, cosine

        nan = {"clip_i": math.nan, "clip_i_bbox": math.nan, "clip_t": math.nan}
        if self.clip is None:
            return [dict(nan) for _ in batch]
        counts = [len(b) for b in crop_boxes]
        fake = self.clip.encode_images([c for o, b in zip(outs, crop_boxes) for c in _crops(o, b)])
        real = [self._once(s.image_id, "clip", lambda g=g, b=b: self.clip.encode_images(_crops(g, b)))
                for s, g, b in zip(batch, gts, crop_boxes)]
        fake = np.split(fake, np.cumsum(counts)[:-1]) if counts else []
        texts = [prompts.get(s.image_id) or "" for s in batch]
        prompted = [i for i, t in enumerate(texts) if t.strip()]
        scores = {}
        if prompted:
            image_emb = self.clip.encode_images([outs[i] for i in prompted])
            text_emb = self.clip.encode_texts([texts[i] for i in prompted])
            scores = dict(zip(prompted, clip_score(image_emb, text_emb).tolist()))
        rows = []
        for i, s in enumerate(batch):
            row = dict(nan)
            if counts[i]:
                row["clip_i" if s.boxes else "clip_i_bbox"] = float(np.mean(cosine(fake[i], real[i])))
            row["clip_t"] = scores.get(i, math.nan)
            rows.append(row)
        return rows

    def features(self, images: list[np.ndarray], crop_lists: list[list[np.ndarray]]):
        """Inception features of whole images and their crops, in one pass: (whole N×2048, [K_i×2048])."""
        counts = [len(c) for c in crop_lists]
        feats = self.inception([*images, *[c for crops in crop_lists for c in crops]]).float().numpy()
        whole, rest = feats[: len(images)], feats[len(images) :]
        split = np.split(rest, np.cumsum(counts)[:-1]) if counts else []
        return whole, split

    def score(self, samples: list[Sample], image_dir: Path, model: str, seed: int) -> list[dict]:
        rows = []
        prompts = run_prompts(image_dir.parent) if self.clip is not None else {}
        for batch in _batches(samples):
            gts = [s.load_image() for s in batch]
            outs = [load_rgb(image_dir / s.output_relpath, s.max_pixels) for s in batch]
            masks_np = [s.load_mask() for s in batch]
            target, preds = _tensor(gts).to(self.device), _tensor(outs).to(self.device)
            masks = torch.from_numpy(np.stack(masks_np)).unsqueeze(1).to(self.device)
            crop_boxes = [_crop_boxes(s, m) for s, m in zip(batch, masks_np)]
            # hole only
            if batch[0].boxes:
                boxes = [s.boxes for s in batch]
                sse, count = box_squared_error(preds, target, boxes)
                ssim = box_hole_ssim(preds, target, boxes)
                ssim_crop = box_ssim(preds, target, boxes)
            else:
                sse, count = masked_squared_error(preds, target, masks)
                ssim = [[v] for v in masked_ssim(preds, target, masks).tolist()]
                # a free-form hole has no crop of its own (its bounding box is mostly known pixels): ssim covers it
                ssim_crop = [[math.nan]] * len(batch)
            # LPIPS: each hole crop for boxes; for free-form masks the whole image's spatial LPIPS map averaged over
            # the hole pixels, from the same pass as lpips_full
            if self.lpips is None:
                lpips, lpips_full = [[math.nan]] * len(batch), [math.nan] * len(batch)
            elif batch[0].boxes:
                lpips = self.lpips.crops(preds, target, [s.boxes for s in batch])
                lpips_full = self.lpips(preds, target).tolist()
            else:
                full, hole = self.lpips.spatial(preds, target, masks)
                lpips, lpips_full = [[v] for v in hole.tolist()], full.tolist()
            # whole image (psnr_full capped: metrics.image_psnr)
            psnr_full = image_psnr(preds, target).tolist()
            ssim_full = image_ssim(preds, target).tolist()
            if self.inception is not None:
                whole_features, crop_features = self.features(outs, [_crops(o, b) for o, b in zip(outs, crop_boxes)])
            text = self.text_rows(batch, gts, outs, masks_np)
            clip = self.clip_rows(batch, gts, outs, crop_boxes, prompts)
            sse, count = sse.cpu(), count.cpu()
            for i, s in enumerate(batch):
                holes = int(masks_np[i].sum())
                row = {"model": model, "image": s.image_id, "seed": seed, "label": s.label or "",
                       "n_holes": len(ssim[i]), "n_hole_pixels": holes, "hole_fraction": holes / masks_np[i].size,
                       "rmse": math.sqrt(sse[i].item() / count[i].item()), "ssim": _mean(ssim[i]),
                       "ssim_crop": _mean(ssim_crop[i]), "lpips": _mean(lpips[i]), "psnr_full": psnr_full[i],
                       "ssim_full": ssim_full[i], "lpips_full": lpips_full[i]}
                row.update(text[i])
                row.update(clip[i])
                if self.inception is not None:
                    row["_whole_features"], row["_crop_features"] = whole_features[i], crop_features[i]
                rows.append(row)
        return rows

    def real_features(self, samples: list[Sample]) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """(image id, whole 2048, crops K×2048) of the ground truth, for this process's shard."""
        out = []
        for batch in _batches(samples):
            gts = [s.load_image() for s in batch]
            crops = [_crops(g, _crop_boxes(s, s.load_mask())) for g, s in zip(gts, batch)]
            whole, split = self.features(gts, crops)
            out += [(s.image_id, whole[i], split[i]) for i, s in enumerate(batch)]
        return out


def run_prompts(run_dir: Path) -> dict[str, str]:
    """image id -> the prompt a prompted model (SD) was given, from the run's manifest.jsonl (others write none)."""
    from ..runner import MANIFEST, read_manifest

    return {r["image"]: r["prompt"] for r in read_manifest(Path(run_dir) / MANIFEST)
            if isinstance(r.get("prompt"), str)}


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def _gather(state, items: list) -> list:
    from accelerate.utils import gather_object

    return gather_object(items) if state.num_processes > 1 else items


# ---------------------------------------------------------------------------------------------- set metrics


def _missing(note: str) -> dict[str, Any]:
    return {"fid": None, "kid": None, "kid_std": None, "fid_full": None, "kid_full": None, "kid_full_std": None,
            "pids": None, "uids": None, "n_fid_crops": 0, "n_fid_images": 0, "fid_note": note,
            **{f"{name}_ci_{end}": None for name in fidlib.CI_METRICS for end in ("low", "high")}}


def inception_distances(fake_whole: np.ndarray, fake_crops: np.ndarray, real_whole: np.ndarray,
                        real_crops: np.ndarray, crop_image: np.ndarray | None = None) -> dict[str, Any]:
    """fid, kid, kid_std (hole crops) and fid_full, kid_full, kid_full_std (whole images) of one paired set; None
    where the set is too small for the statistic: FID needs 2 rows per side (a covariance), KID subsets of at least
    2 per side from disjoint images (fidlib.kid_subset_size: 4 images, more when an image has several crops).
    Rows are paired (row i of fake and real = the same image or crop); crop_image[k] = the image of crop k, so two
    crops of one image never sit on both sides of a KID subset (default: one crop per image)."""
    crop_image = np.arange(len(fake_crops)) if crop_image is None else np.asarray(crop_image)
    largest = int(np.unique(crop_image, return_counts=True)[1].max()) if len(crop_image) else 1
    out: dict[str, Any] = {}
    for prefix, fake, real, groups, per_group in (("", fake_crops, real_crops, crop_image, largest),
                                                  ("_full", fake_whole, real_whole, None, 1)):
        f, r = torch.from_numpy(np.asarray(fake)).double(), torch.from_numpy(np.asarray(real)).double()
        out[f"fid{prefix}"] = fidlib.frechet_distance(f, r) if len(f) >= 2 else None
        out[f"kid{prefix}"] = out[f"kid{prefix}_std"] = None
        if fidlib.kid_subset_size(len(f), largest_group=per_group) >= 2:
            out[f"kid{prefix}"], out[f"kid{prefix}_std"] = fidlib.kernel_inception_distance(r, f, groups=groups)
    return out


def set_metrics(fake_whole: np.ndarray, fake_crops: np.ndarray, real_whole: np.ndarray, real_crops: np.ndarray,
                crop_image: np.ndarray | None = None) -> dict[str, Any]:
    """FID, KID (crops and whole images) and P-IDS/U-IDS for one model and seed, each with its 95% image-bootstrap
    interval `<metric>_ci_low/_ci_high` from the same features (fidlib.set_metric_intervals's). Rows are paired
    (row i of fake and real = the same image or crop); crop_image[k] = the image row of crop k, so an image's crops
    resample together and never sit on both sides of a KID subset (default: one crop per image).

    The resampled values themselves are kept under the private key `_resampled`: with several seeds summarise
    averages them per resample across seeds (fidlib.seed_averaged_intervals) for the summary's intervals."""
    out = _missing("")
    notes = []
    crop_image = np.arange(len(fake_crops)) if crop_image is None else np.asarray(crop_image)
    out.update(inception_distances(fake_whole, fake_crops, real_whole, real_crops, crop_image))
    computed = [name for name in ("fid", "kid", "fid_full", "kid_full") if out[name] is not None]
    for prefix, fake, unit in (("", fake_crops, "crops"), ("_full", fake_whole, "images")):
        if out[f"kid{prefix}"] is None:
            notes.append(f"KID needs at least 4 {unit}")
        if len(fake) < FID_MIN_CROPS:
            notes.append(f"{len(fake)} {unit} (< {FID_MIN_CROPS}): FID{prefix.replace('_', ' ')} is biased, trust KID")
    out["n_fid_crops"], out["n_fid_images"] = len(fake_crops), len(fake_whole)
    if len(fake_whole) >= 2:
        out["pids"], out["uids"], converged = fidlib.inception_discriminative_scores(
            torch.from_numpy(real_whole), torch.from_numpy(fake_whole))
        computed += ["pids", "uids"]
        if not converged:
            notes.append("the P-IDS/U-IDS SVM did not converge")
        if len(fake_whole) < FID_MIN_CROPS:
            notes.append("P-IDS/U-IDS over fewer images than feature dimensions: the SVM separates almost anything")
        if len(fake_whole) > fidlib.IDS_CI_MAX_IMAGES:
            notes.append(f"no P-IDS/U-IDS interval above {fidlib.IDS_CI_MAX_IMAGES} images (each resample refits "
                         "the SVM)")
    if len(fake_whole) >= 2:
        out["_resampled"] = fidlib.resampled_set_metrics(real_whole, fake_whole, real_crops, fake_crops, crop_image,
                                                         estimates=out, metrics=computed)
        out.update(_interval_fields(fidlib.seed_averaged_intervals([out["_resampled"]])))
    out["fid_note"] = "; ".join(notes)
    return out


def _interval_fields(intervals: Mapping[str, tuple[float, float] | None]) -> dict[str, float | None]:
    """{name: (low, high) or None} -> the summary's <name>_ci_low / <name>_ci_high fields."""
    out = {}
    for name, interval in intervals.items():
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = interval or (None, None)
    return out


def seed_intervals(set_scores: list[dict[str, Any]]) -> dict[str, float | None]:
    """The summary's <metric>_ci_low/_ci_high for fid, kid, fid_full, kid_full, pids, uids over all of a model's
    seeds: each bootstrap resample draws the same images for every seed, each seed's statistic is computed on it and
    the seeds averaged, as the summary's value is (fidlib.seed_averaged_intervals). So the interval covers image
    sampling and seed-to-seed variation of the seed-averaged value; with one seed it is that seed's interval.
    Null for a metric some seed could not compute."""
    fields = {f"{name}_ci_{end}": None for name in fidlib.CI_METRICS for end in ("low", "high")}
    if set_scores and all("_resampled" in s for s in set_scores):
        fields.update(_interval_fields(fidlib.seed_averaged_intervals([s["_resampled"] for s in set_scores])))
    return fields


def per_bin_set_metrics(rows: list[dict], real: tuple[np.ndarray, np.ndarray, np.ndarray],
                        order: Mapping[str, int]) -> dict[str, dict[str, Any]]:
    """per_bin.csv's set metrics for one model: bin name -> fid, kid, fid_full, kid_full and n_fid_crops.

    `rows` are the model's scored rows (every seed) with their Inception features (private keys `_whole_features`,
    `_crop_features`); `real` the ground truth's (whole, crops, crop_image) in dataset order; `order` image id ->
    dataset row. No Inception pass: the features eval already holds. Each bin compares its own images' outputs
    with the same images' originals (crops paired as in set_metrics, KID's sides from disjoint images), per seed,
    then the mean over seeds, as the summary. A value the bin is too small for is None (inception_distances);
    n_images (per_bin_table) and n_fid_crops say what each value rests on: FID on few rows is strongly biased
    upward, so bins of different sizes are not comparable by FID (columns.PER_BIN_NOTE)."""
    real_whole, real_crops, crop_image = real
    groups: dict[tuple[int, Any], list[dict]] = {}
    for r in rows:
        groups.setdefault((area_bin(float(r["hole_fraction"])), r["seed"]), []).append(r)
    seeds = sorted({r["seed"] for r in rows})
    out = {}
    for index, name in enumerate(BIN_NAMES):
        per_seed, n_crops = [], 0
        for seed in seeds:
            mine = sorted(groups.get((index, seed), []), key=lambda r: order[r["image"]])
            if not mine:
                continue
            images = np.array([order[r["image"]] for r in mine])
            crops = np.flatnonzero(np.isin(crop_image, images))  # dataset order, as the fake crops below
            fake_crops = np.concatenate([r["_crop_features"] for r in mine])
            if len(fake_crops) != len(crops):
                raise RuntimeError(f"bin {name}: {len(fake_crops)} output crops but {len(crops)} original crops")
            per_seed.append(inception_distances(np.stack([r["_whole_features"] for r in mine]), fake_crops,
                                                real_whole[images], real_crops[crops], crop_image[crops]))
            n_crops = len(crops)
        record: dict[str, Any] = {"n_fid_crops": n_crops}
        for metric in PER_BIN_SET:
            # a bin holds the same images in every seed, so a value is missing in all seeds or in none
            record[metric] = over_seeds([s[metric] for s in per_seed])[0]
        out[name] = record
    return out


# ---------------------------------------------------------------------------------------------- tables


PER_IMAGE_COLUMNS = ["model", "image", *[c for c in PER_IMAGE if c not in LATER], "label", "seed", "n_holes",
                     "n_hole_pixels", "hole_fraction", *LATER, "n_text_holes", "n_text_holes_gt"]
# KID's spread over subsets and the counts (summarise: the first seed's), the set metrics' bootstrap intervals (over
# every seed: seed_intervals)
SET_FIELDS = ["kid_std", "kid_full_std", *[f"{name}_ci_{end}" for name in fidlib.CI_METRICS for end in ("low", "high")],
              "n_fid_crops", "n_fid_images"]
SUMMARY_COLUMNS = ["model", "n_images", "n_holes", *[c.name for c in COLUMNS], *SET_FIELDS, "n_seeds", "seeds",
                   "deterministic", *[f"{c.name}_seed_sd" for c in COLUMNS], "in_sample", "n_train_overlap",
                   "training_set", "fid_note", "lpips_note", "n_psnr_capped", "n_text_holes", "n_text_holes_gt",
                   "text_note", "clip_note"]


def _csv(frame: pd.DataFrame, columns: list[str]) -> str:
    # pandas writes Python floats at full precision (repr), None/NaN as empty cells
    return frame.reindex(columns=columns).to_csv(index=False, lineterminator="\n", na_rep="")


def format_table(summary: list[dict]) -> str:
    def cell(value):
        return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)

    columns = ["model", "n_images", "rmse", "ssim", "lpips", "fid", "kid", "psnr_full", "ssim_full", "lpips_full",
               "fid_full", "text_rate", "clip_t"]
    table = [columns] + [[cell(row.get(c)) + ("*" if c == "model" and row.get("in_sample") else "")
                          for c in columns] for row in summary]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    lines = ["  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths))) for r in table]
    if any(row.get("in_sample") for row in summary):
        lines.append("* in-sample: scored on images it was trained on (--allow-in-sample)")
    return "\n".join(lines)


def _finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def summarise(plan: ModelPlan, rows: pd.DataFrame, set_scores: list[dict[str, Any]], lpips_note: str,
              notes: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One model's summary row: per-seed values averaged over seeds, with their spread; the set metrics' intervals
    are those of that seed average (seed_intervals)."""
    first = rows[rows["seed"] == plan.seeds[0]]
    row: dict[str, Any] = {"model": plan.name, "registry_model": plan.variant.model, "n_images": int(len(first)), "n_holes": int(first["n_holes"].sum())}
    spread = per_image_summary(rows)
    row["n_psnr_capped"] = n_psnr_capped(rows)  # psnr_full values at the cap, over every seed's rows
    for column in COLUMNS:
        if column.per_image:
            row[column.name], row[f"{column.name}_seed_sd"] = spread[column.name]
        else:
            row[column.name], row[f"{column.name}_seed_sd"] = over_seeds([s[column.name] for s in set_scores])
    # the set metrics' intervals: every seed's outputs on each resample, averaged as the value is; KID's spread over
    # subsets and the counts (the same in every seed): the first seed's
    intervals = seed_intervals(set_scores)
    for key in SET_FIELDS:
        row[key] = intervals[key] if key in intervals else set_scores[0][key]
    row["fid_note"] = set_scores[0]["fid_note"]
    row["lpips_note"] = lpips_note
    row.update(notes or {})  # text_note, clip_note
    for key in ("n_text_holes", "n_text_holes_gt"):  # the first seed's counts, as n_holes
        counts = pd.to_numeric(first[key], errors="coerce") if key in first else pd.Series(dtype=float)
        row[key] = int(counts.sum()) if len(counts) and counts.notna().all() else None
    row["n_seeds"], row["seeds"] = len(plan.seeds), ",".join(map(str, plan.seeds))
    row["deterministic"] = plan.deterministic  # run once whatever --seeds says
    row["floor"] = plan.floor
    row.update(plan.training.summary_fields())
    return {k: _finite_or_none(v) for k, v in row.items()}


# ---------------------------------------------------------------------------------------------- evaluate


def evaluate(dataset: Dataset, settings: EvalSettings, *, state=None, log=None) -> list[dict]:
    import tomli_w

    state = state or process_state(settings.run.device)
    log = log or (lambda message: print(message, file=sys.stderr) if state.is_main_process else None)
    out = Path(settings.out)
    runs_dir = Path(settings.runs_dir) if settings.runs_dir else out / "runs"

    # 1. Check everything before any work
    names = [v.name for v in settings.variants]
    for variant in settings.variants:
        model_class(variant.model)
    if len(set(names)) != len(names):
        raise UserError(f"models {','.join(names)}: a name is used twice; give each variant its own name")
    if settings.seeds is not None and len(set(settings.seeds)) != len(settings.seeds):
        raise UserError(f"--seeds {','.join(map(str, settings.seeds))}: a seed is given twice; give each seed once")
    if settings.run.feather:
        raise UserError(f"--feather {settings.run.feather} blends the ground truth into the scored holes and would "
                        "inflate every score; use --feather with `diffinpaint run` only")
    window = 2 * RADIUS + 1
    small = [s.image_id for s in dataset.samples if any(w < window or h < window for *_, w, h in s.boxes)]
    if small:
        raise UserError(f"masks.csv: {len(small)} image(s) have holes smaller than SSIM's {window}x{window} window "
                        f"(first: images/{small[0]}); make the holes at least {window} pixels wide and high")
    tiny = [s.image_id for s in dataset.samples if min(s.width, s.height) < window]
    if tiny:
        raise UserError(f"images/{tiny[0]} is smaller than SSIM's {window}x{window} window ({len(tiny)} such "
                        "image(s)); use images at least 11 pixels wide and high")
    check_eval_out(out, dataset)
    device = model_device(state, settings.run.device)
    # the weights are loaded now, on every rank alike (a rank failing alone would hang the others at a
    # barrier), so a bad file fails before hours of runs; every rank scores its shard with them
    inception, fid_note = None, ""
    if not settings.fid:
        fid_note = "Inception metrics disabled (--no-fid)"
    elif dataset.n_holes < 2:
        fid_note = "FID/KID need at least 2 hole crops"
        log(f"warning: FID/KID missing: {fid_note}")
    else:
        try:
            inception = fidlib.InceptionFeatures(settings.fid_weights, device=device)
        except fidlib.FIDUnavailable as err:
            fid_note = f"{err}; pass --fid-weights {fidlib.WEIGHTS_NAMES[0]} to compute FID/KID/P-IDS/U-IDS"
            log(f"warning: FID/KID missing: {fid_note}")
    lpips, lpips_note = _load_lpips(settings, device, log)
    text, text_note = _load_text(settings, device, log)
    clip, clip_note = _load_clip(settings, device, log)
    plans = plan_models(dataset, settings, device, state, log)

    # 2. Run each model (and seed), one model in memory at a time
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / MARKER, json.dumps(MARKER_CONTENT) + "\n")
    state.wait_for_everyone()
    for plan in plans:
        model = build_model(plan.variant.model, plan.variant.options, device=device)
        try:
            for seed, run_dir in zip(plan.seeds, plan.run_dirs):
                run(model, dataset, run_dir, dataclasses.replace(settings.run, seed=seed), state=state, log=log)
        finally:
            _free(model)

    # 3. Score: each process its shard, rows gathered as objects (no padded duplicates)
    scorer = Scorer(device, lpips, inception, text=text, clip=clip)
    with state.split_between_processes(list(dataset.samples)) as shard:
        shard = list(shard)
    local = [row for plan in plans for seed, run_dir in zip(plan.seeds, plan.run_dirs)
             for row in scorer.score(shard, run_dir / "images", plan.name, seed)]
    rows = _gather(state, local)
    real = _real_features(dataset, scorer, shard, settings, state) if inception is not None else None
    if not state.is_main_process:
        state.wait_for_everyone()
        return []

    # 4. Tables and set metrics (main process only)
    order = {s.image_id: i for i, s in enumerate(dataset.samples)}
    model_order = {name: i for i, name in enumerate(names)}
    rows.sort(key=lambda r: (model_order[r["model"]], r["seed"], order[r["image"]]))
    summary = []
    frame = pd.DataFrame.from_records([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
    bin_scores = {}  # model -> bin -> per_bin.csv's FID/KID
    for plan in plans:
        set_scores = []
        for seed in plan.seeds:
            mine = [r for r in rows if r["model"] == plan.name and r["seed"] == seed]
            if inception is None:
                set_scores.append(_missing(fid_note))
                continue
            set_scores.append(set_metrics(np.stack([r["_whole_features"] for r in mine]),
                                          np.concatenate([r["_crop_features"] for r in mine]), *real))
        if inception is not None:
            bin_scores[plan.name] = per_bin_set_metrics([r for r in rows if r["model"] == plan.name], real, order)
        summary.append(summarise(plan, frame[frame["model"] == plan.name], set_scores, lpips_note,
                                 {"text_note": text_note, "clip_note": clip_note}))
    if inception is not None and real[1].shape[0] < FID_MIN_CROPS:
        log(f"warning: FID over {real[1].shape[0]} crops (< {FID_MIN_CROPS}, the feature dimension) is strongly "
            "biased and unstable; compare models by KID")

    # 5. Write the eval folder
    config = {"data": str(dataset.root.resolve()), "models": names, "runs_dir": str(runs_dir.resolve()),
              "seeds": settings.seeds or [settings.run.seed],
              "run_dirs": {p.name: [str(d.resolve()) for d in p.run_dirs] for p in plans},
              "max_pixels": max((s.max_pixels for s in dataset.samples), default=0),
              "settings": toml_safe({k: v for k, v in asdict(settings).items() if k not in ("variants", "run")}),
              "run": toml_safe(asdict(settings.run)),
              "variants": {v.name: toml_safe({"model": v.model, **v.options}) for v in settings.variants},
              "weights": {"inception_sha256": inception.weights_sha256 if inception else "none",
                          "lpips_sha256": lpips.weights_sha256 if lpips else "none",
                          "clip_sha256": clip.weights_sha256 if clip else "none"},
              "num_processes": state.num_processes, "versions": library_versions()}
    atomic_write_text(out / "config.toml", tomli_w.dumps(toml_safe(config)))
    atomic_write_text(out / "per_image.csv", _csv(frame, PER_IMAGE_COLUMNS))
    atomic_write_text(out / "per_bin.csv", _csv(per_bin_table(frame, names, bin_scores), PER_BIN_COLUMNS))
    summary_frame = pd.DataFrame.from_records(summary)
    atomic_write_text(out / "summary.csv", _csv(summary_frame, SUMMARY_COLUMNS))
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    if text is not None:
        atomic_write_text(out / TEXT_DETECTIONS, text_detections(rows, plans))
    if settings.report:
        try:
            from .report import write_report

            write_report(out)
        except Exception as err:  # the numbers are written; a report failure must not hide them
            log(f"warning: report.html not written ({type(err).__name__}: {err}); fix it, then run "
                f"`diffinpaint report {out}`")
    state.wait_for_everyone()
    return summary


TEXT_DETECTIONS = "text_detections.jsonl"


def text_detections(rows: list[dict], plans: list[ModelPlan]) -> str:
    """EVAL/text_detections.jsonl: one line per hole with text, {source: "output" (model, seed) or "original",
    image, hole (index among the image's holes), detections: [{text, score, polygon, inside}]}. The originals once."""
    lines = []
    first = plans[0] if plans else None
    for r in rows:
        if first is not None and r["model"] == first.name and r["seed"] == first.seeds[0]:
            lines += [{"source": "original", "model": None, "seed": None, "image": r["image"], **hole}
                      for hole in r.get("_text_holes_gt", [])]
    for r in rows:
        lines += [{"source": "output", "model": r["model"], "seed": r["seed"], "image": r["image"], **hole}
                  for hole in r.get("_text_holes", [])]
    return "".join(json.dumps(line) + "\n" for line in lines)


def _load_text(settings: EvalSettings, device: str, log):
    from .text import TextDetector, TextUnavailable

    if not settings.text:
        return None, "text rate disabled (--no-text)"
    try:
        return TextDetector(settings.text_threshold, device=device), ""
    except TextUnavailable as err:
        note = f"{err}"
        log(f"warning: text rate missing: {note}")
        return None, note


def _optional_metric(build, unavailable: type[Exception], hint: str, what: str, log):
    """(the metric's network, "") or (None, note) when its weights are missing: that metric is then null with one
    warning and everything else still runs."""
    try:
        return build(), ""
    except unavailable as err:
        note = f"{err}; {hint}"
        log(f"warning: {what} missing: {note}")
        return None, note


def _load_clip(settings: EvalSettings, device: str, log):
    from .clip import CLIP, CLIPUnavailable, WEIGHTS_NAME

    return _optional_metric(lambda: CLIP(settings.clip_model, settings.clip_weights, device=device), CLIPUnavailable,
                            f"pass --clip-weights {WEIGHTS_NAME} to compute clip_i/clip_t", "CLIP", log)


def _load_lpips(settings: EvalSettings, device: str, log):
    from .lpips import LPIPS, LPIPSUnavailable, WEIGHTS_NAME

    return _optional_metric(lambda: LPIPS(settings.lpips_weights, device=device), LPIPSUnavailable,
                            f"pass --lpips-weights {WEIGHTS_NAME} to compute LPIPS", "LPIPS", log)


def _real_features(dataset: Dataset, scorer: Scorer, shard: list[Sample], settings: EvalSettings, state):
    """Ground-truth Inception features (whole N×2048, crops K×2048) in dataset order and the image row of each crop
    (K), cached across evals under a key naming the protocol, the weights, the resize and crop rules and the
    dataset's content."""
    key = fidlib.feature_cache_key(scorer.inception.weights_sha256, fidlib.dataset_fingerprint(dataset.samples))
    path = fidlib.cache_path(settings.cache_dir, key)
    cached = fidlib.load_cached(path)
    usable = cached is not None and {"whole", "crops", "crop_image"} <= set(cached)
    if all(_gather(state, [usable])):  # every rank must take the same branch (collectives below)
        return cached["whole"].numpy(), cached["crops"].numpy(), cached["crop_image"].numpy()
    parts = {image_id: (whole, crops) for image_id, whole, crops in _gather(state, scorer.real_features(shard))}
    whole = np.stack([parts[s.image_id][0] for s in dataset.samples])
    crops = np.concatenate([parts[s.image_id][1] for s in dataset.samples])
    crop_image = np.concatenate([np.full(len(parts[s.image_id][1]), i, dtype=np.int64)
                                 for i, s in enumerate(dataset.samples)])
    if state.is_main_process:
        fidlib.save_cached(path, {"whole": torch.from_numpy(whole), "crops": torch.from_numpy(crops),
                                  "crop_image": torch.from_numpy(crop_image)})
    return whole, crops, crop_image
