"""`diffinpaint eval`: run every model on the same images and masks, score the holes, write the tables.

    EVAL/config.toml     data, models, settings, versions
    EVAL/runs/<model>/   each model's run folder (reused when finished; --runs DIR puts them elsewhere)
    EVAL/per_image.csv   model,image,rmse,ssim,label,n_holes,n_hole_pixels
    EVAL/summary.csv     one row per model
    EVAL/summary.json    [{"model", "n_images", "n_holes", "rmse", "ssim", "fid", "kid", ...}]
    EVAL/report.html

Under `accelerate launch` each process runs and scores its shard; per-image rows are gathered as objects
(no padding, so nothing is counted twice) and only the main process computes FID/KID and writes files.
"""
from __future__ import annotations

import csv
import io
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from . import fid as fidlib
from ..data import Dataset, Sample, load_rgb
from .metrics import box_squared_error, box_ssim, masked_squared_error, masked_ssim
from ..models import build_model, model_class
from .metrics import RADIUS
from ..util.files import atomic_write_text
from ..runner import (RunSettings, SettingsChanged, library_versions, model_device,
                      process_state, run, toml_safe)
from ..util.errors import UserError

# Below this many crops per side the 2048×2048 covariance is rank-deficient and FID is dominated by bias;
# KID is unbiased and is the number to compare then.
FID_MIN_CROPS = fidlib.FEATURE_DIM


@dataclass
class EvalSettings:
    models: list[str]
    out: Path
    runs_dir: Path | None = None  # default EVAL/runs
    fid: bool = True  # compute FID/KID when Inception weights are available
    fid_weights: Path | None = None  # the standard pt_inception-2015-12-05 file (offline machines)
    cache_dir: Path | None = None  # ground-truth feature cache; default ~/.cache/diffinpaint/features
    report: bool = True  # write report.html
    run: RunSettings = field(default_factory=RunSettings)


def _tensor(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 N×3×H×W: the metrics do exact integer RMSE and convert only hole crops to float for SSIM."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)


def score_samples(samples: list[Sample], run_dir: Path, model: str) -> list[dict]:
    """Per-image rows for one model; images of equal size are scored together."""
    rows = []
    groups: dict[tuple[int, int], list[Sample]] = {}
    for s in samples:
        groups.setdefault((s.width, s.height), []).append(s)
    for group in groups.values():
        for start in range(0, len(group), 64):
            batch = group[start : start + 64]
            target = _tensor([s.load_image() for s in batch])
            preds = _tensor([load_rgb(run_dir / "images" / s.output_relpath, s.max_pixels) for s in batch])
            masks = torch.from_numpy(np.stack([s.load_mask() for s in batch])).unsqueeze(1)
            if batch[0].boxes:
                sse, count = box_squared_error(preds, target, [s.boxes for s in batch])
                per_hole = box_ssim(preds, target, [s.boxes for s in batch])
            else:
                sse, count = masked_squared_error(preds, target, masks)
                per_hole = [[v] for v in masked_ssim(preds, target, masks).tolist()]
            for i, s in enumerate(batch):
                rows.append({"model": model, "image": s.image_id, "label": s.label or "",
                             "n_holes": len(per_hole[i]), "n_hole_pixels": int(masks[i].sum().item()),
                             "rmse": math.sqrt(sse[i].item() / count[i].item()), "ssim": float(np.mean(per_hole[i])),
                             "_sse": sse[i].item(), "_count": count[i].item(), "_ssim_sum": float(np.sum(per_hole[i]))})
    return rows


def summarise(model: str, rows: list[dict]) -> dict[str, Any]:
    sse = sum(r["_sse"] for r in rows)
    count = sum(r["_count"] for r in rows)
    holes = sum(r["n_holes"] for r in rows)
    return {"model": model, "n_images": len(rows), "n_holes": holes, "rmse": math.sqrt(sse / count),
            "ssim": sum(r["_ssim_sum"] for r in rows) / holes}


def _crops(samples: list[Sample], image_dir: Path | None) -> list[np.ndarray]:
    crops = []
    for s in samples:
        image = s.load_image() if image_dir is None else load_rgb(image_dir / s.output_relpath, s.max_pixels)
        crops.extend(fidlib.hole_crops(image, s.boxes, None if s.boxes else s.load_mask()))
    return crops


def fid_scores(dataset: Dataset, run_dirs: Mapping[str, Path], settings: EvalSettings, device: str, log,
               extractor: fidlib.InceptionFeatures | None = None) -> dict[str, dict[str, Any]]:
    """model -> {"fid", "kid", "kid_std", "n_fid_crops", "fid_note"}; missing values are None."""
    def missing(reason: str) -> dict[str, dict[str, Any]]:
        return {m: {"fid": None, "kid": None, "kid_std": None, "n_fid_crops": 0, "fid_note": reason}
                for m in run_dirs}

    if not settings.fid:
        return missing("FID/KID disabled (--no-fid)")
    if dataset.n_holes < 2:
        log("warning: FID/KID missing: they need at least 2 hole crops")
        return missing("FID/KID need at least 2 hole crops")
    try:
        extractor = extractor or fidlib.InceptionFeatures(settings.fid_weights, device=device)
    except fidlib.FIDUnavailable as err:
        log(f"warning: FID/KID missing: {err}; pass --fid-weights {fidlib.WEIGHTS_NAMES[0]} to compute them")
        return missing(f"{err}; pass --fid-weights {fidlib.WEIGHTS_NAMES[0]} to compute FID/KID")
    key = fidlib.feature_cache_key(extractor.weights_sha256, fidlib.dataset_fingerprint(dataset.samples))
    real = fidlib.cached_features(settings.cache_dir or fidlib.default_cache_dir(), key,
                                  lambda: extractor(_crops(dataset.samples, None)))
    if len(real) < FID_MIN_CROPS:
        log(f"warning: FID over {len(real)} crops (< {FID_MIN_CROPS}, the feature dimension) is strongly biased "
            "and unstable; compare models by KID")
    scores = {}
    for model, run_dir in run_dirs.items():
        fake = extractor(_crops(dataset.samples, run_dir / "images"))
        kid, kid_std = fidlib.kernel_inception_distance(fake, real)
        scores[model] = {"fid": fidlib.frechet_distance(fake, real), "kid": kid, "kid_std": kid_std,
                         "n_fid_crops": len(fake),
                         "fid_note": "" if len(real) >= FID_MIN_CROPS else "few crops: trust KID over FID"}
    return scores


def _csv_text(rows: list[dict], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else repr(row[k]) if isinstance(row.get(k), float)
                             else row[k]) for k in columns})
    return buffer.getvalue()


PER_IMAGE_COLUMNS = ["model", "image", "rmse", "ssim", "label", "n_holes", "n_hole_pixels"]  # contract first
SUMMARY_COLUMNS = ["model", "n_images", "n_holes", "rmse", "ssim", "fid", "kid", "kid_std", "n_fid_crops",
                   "fid_note"]


def format_table(summary: list[dict]) -> str:
    def cell(value):
        return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)

    columns = ["model", "n_images", "n_holes", "rmse", "ssim", "fid", "kid"]
    table = [columns] + [[cell(row.get(c)) for c in columns] for row in summary]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    return "\n".join("  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths)))
                     for r in table)


def evaluate(dataset: Dataset, settings: EvalSettings, model_options: Mapping[str, Any], *, state=None,
             log=None) -> list[dict]:
    import tomli_w

    state = state or process_state(settings.run.device)
    log = log or (lambda message: print(message, file=sys.stderr) if state.is_main_process else None)
    out = Path(settings.out)
    runs_dir = Path(settings.runs_dir) if settings.runs_dir else out / "runs"

    # 1. Check inputs: every model name and option, the holes and the FID weights file, before any work
    for name in settings.models:
        model_class(name)
    if len(set(settings.models)) != len(settings.models):
        raise UserError(f"--models {','.join(settings.models)}: a model is named twice")
    if settings.run.feather:
        raise UserError(f"--feather {settings.run.feather} blends the ground truth into the scored holes and would "
                         "inflate every score; use --feather with `diffinpaint run` only")
    window = 2 * RADIUS + 1
    small = [s.image_id for s in dataset.samples if any(w < window or h < window for *_, w, h in s.boxes)]
    if small:
        raise UserError(f"masks.csv: {len(small)} image(s) have holes smaller than SSIM's {window}x{window} window "
                         f"(first: images/{small[0]}); make the holes at least {window} pixels wide and high")
    device = model_device(state, settings.run.device)
    extractor = None
    if settings.fid and settings.fid_weights is not None:
        # loaded now, on every rank alike (a rank failing alone would hang the others at a barrier), so a bad
        # weights file fails before hours of runs; the main rank uses it for the scores
        extractor = fidlib.InceptionFeatures(settings.fid_weights, device=device)
    models = {name: build_model(name, model_options, device=device) for name in settings.models}
    for model in models.values():
        model.check_labels(dataset.labels)

    # 2. Run (or resume, or reuse) each model into its run folder
    run_dirs = {}
    for name, model in models.items():
        run_dirs[name] = runs_dir / name
        try:
            run(model, dataset, run_dirs[name], settings.run, state=state, log=log)
        except SettingsChanged as err:  # e.g. a retrained checkpoint: say how to redo this model's run
            raise UserError(f"{err.out_dir} holds {name} outputs made with other settings ({err.details}); "
                             f"delete that folder to redo {name}, or pass --runs with a new folder") from None

    # 3. Score: each process its shard, rows gathered as objects (no padded duplicates)
    from accelerate.utils import gather_object

    with state.split_between_processes(list(dataset.samples)) as shard:
        shard = list(shard)
    local_rows = [row for name in models for row in score_samples(shard, run_dirs[name], name)]
    rows = gather_object(local_rows) if state.num_processes > 1 else local_rows
    if not state.is_main_process:
        state.wait_for_everyone()
        return []

    order = {s.image_id: i for i, s in enumerate(dataset.samples)}
    rows.sort(key=lambda r: (settings.models.index(r["model"]), order[r["image"]]))
    summary = [summarise(name, [r for r in rows if r["model"] == name]) for name in settings.models]
    scores = fid_scores(dataset, run_dirs, settings, device, log, extractor)
    for row in summary:
        row.update(scores[row["model"]])

    # 4. Write the eval folder (main process only)
    out.mkdir(parents=True, exist_ok=True)
    config = {"data": str(dataset.root.resolve()), "models": settings.models, "runs_dir": str(runs_dir.resolve()),
              "max_pixels": max((s.max_pixels for s in dataset.samples), default=0),
              "settings": toml_safe({k: v for k, v in asdict(settings).items() if k not in ("models", "run")}),
              "run": toml_safe(asdict(settings.run)), "model_options": toml_safe(dict(model_options)),
              "num_processes": state.num_processes, "versions": library_versions()}
    atomic_write_text(out / "config.toml", tomli_w.dumps(toml_safe(config)))
    atomic_write_text(out / "per_image.csv", _csv_text(rows, PER_IMAGE_COLUMNS))
    atomic_write_text(out / "summary.csv", _csv_text(summary, SUMMARY_COLUMNS))
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    if settings.report:
        try:
            from .report import write_report

            write_report(out)
        except Exception as err:  # the numbers are written; a report failure must not hide them
            log(f"warning: report.html not written ({type(err).__name__}: {err}); fix it, then run "
                f"`diffinpaint report {out}`")
    state.wait_for_everyone()
    return summary
