"""The evaluation report: one static HTML page over an eval folder (`diffinpaint report EVAL`).

    EVAL/report.html          opens from disk: no server, no network, no scripts
    EVAL/report_assets/*.png  thumbnails and plots it shows (its own files rewritten on every call)

The page reads top to bottom:
  1. a banner for every model scored on images it was trained on (in_sample), beside the numbers
  2. summary per model in two groups, hole only and whole image (each column naming the paper protocol it equals), arrows saying which
     way is better, the best value per column in bold; bootstrap 95% CIs for the per-image metrics, KID's
     spread over subsets, and with several seeds the spread across seeds
  3. the published protocol each column matches
  4. paired differences between models on the images both scored: the summary's own statistic for A and B on one
     shared resample (CI), per-image wins, the number of comparisons (not corrected for multiplicity)
  5. per-label breakdown
  6. by hole area: LaMa's ten bins of the hole's share of the image, every per-image metric against hole area per
     model, and the table of images per bin with each bin's FID/KID (read from per_bin.csv: they need the
     Inception features, which only eval has)
  7. distributions of per-image rmse and ssim (box + strip plot)
  8. comparison grid: masked input | each model | ground truth, holes outlined in magenta
  9. worst images per model by rmse
 10. text in the holes: each hole where the OCR model read text (text_detections.jsonl), the output's crop beside
     the original's, the detected boxes drawn and the strings read

Confidence intervals resample *images* (the unit that was drawn from the world) with replacement, a fixed
seed and 2000 resamples, and recompute the same statistic the summary reports (columns.py): rmse pooled over
hole pixels (each image weighted by its hole pixel count, `n_hole_pixels` in per_image.csv; equal weights when the
column is missing, which the page says), ssim / ssim_crop / lpips as the mean over holes (each image weighted by
`n_holes`), the whole-image metrics as the mean over images. With several seeds the statistic is computed per
seed on the same resampled images and averaged over seeds, as the summary is. The interval is the 2.5th..97.5th
percentile of the resampled statistic (percentile bootstrap). The set metrics' intervals (fid, kid, fid_full,
kid_full, pids, uids) are not recomputed here (that needs the Inception features): the page shows summary.json's
`<name>_ci_low/_ci_high`, which eval computes the same way from the cached features (columns.py, "Intervals").
"""
from __future__ import annotations

import argparse
import html
import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
from PIL import Image

from .columns import (BIN_EDGES, BY_NAME, COLUMNS, N_BINS, PER_BIN_NOTE, PER_BIN_SET, PER_IMAGE, PSNR_CAP_DB,
                      per_bin_table)
from ..util.errors import UserError
from ..util.files import atomic_write_text

N_RESAMPLES = 2000  # bootstrap resamples; the CI bounds move by well under 1% of their width beyond this
BOOTSTRAP_SEED = 0  # fixed, so the same eval folder always gives the same page
THUMB_SIZE = 192  # longest side of a grid thumbnail in pixels (small images are enlarged, nearest-neighbour)
OUTLINE_RGB = (255, 0, 255)  # magenta: rare in photos, visible on light and dark content
ASSETS = "report_assets"
OWN_ASSET = re.compile(r"(img\d{4}|distributions|by_area)\.png")  # the only files the report deletes
DIGITS = {"fid": 2, "fid_full": 2, "psnr_full": 2, "pids": 3, "uids": 3}  # others: 4


def esc(value) -> str:
    return html.escape(str(value), quote=True)


# ---------------------------------------------------------------------------------------------- reading


@dataclass
class EvalFolder:
    root: Path
    config: dict
    models: list[str]  # in config order, then any others found in per_image.csv
    frame: pd.DataFrame  # per_image.csv; numeric columns as floats (NaN where missing)
    summary: list[dict]
    has_pixel_counts: bool
    notes: list[str] = field(default_factory=list)  # things the page should tell the reader

    def model_rows(self, model: str) -> pd.DataFrame:
        return self.frame[self.frame["model"] == model]

    def seeds_of(self, model: str) -> list[int]:
        return sorted(int(s) for s in self.model_rows(model)["seed"].unique())

    def first_seed_rows(self, model: str) -> dict[str, pd.Series]:
        """image -> its row for the model's first seed (what the grid shows)."""
        rows = self.model_rows(model)
        rows = rows[rows["seed"] == self.seeds_of(model)[0]] if len(rows) else rows
        return {r["image"]: r for _, r in rows.iterrows()}

    @property
    def runs_dir(self) -> Path:
        runs = Path(self.config.get("runs_dir", "runs"))
        return runs if runs.is_absolute() else self.root / runs

    def run_dir(self, model: str) -> Path:
        """The run folder of the model's first seed (config.toml's [run_dirs]; else runs_dir/<model>)."""
        listed = self.config.get("run_dirs", {}).get(model)
        if listed:
            path = Path(listed[0])
            return path if path.is_absolute() else self.root / path
        return self.runs_dir / model


def read_eval_folder(eval_dir: Path) -> EvalFolder:
    eval_dir = Path(eval_dir)
    per_image = eval_dir / "per_image.csv"
    if not per_image.is_file():
        raise UserError(f"{per_image} is missing; run `diffinpaint eval ... --out {eval_dir}` first")
    config, summary = {}, []
    try:
        if (eval_dir / "config.toml").is_file():
            config = tomllib.loads((eval_dir / "config.toml").read_text(encoding="utf-8"))
        if (eval_dir / "summary.json").is_file():
            summary = json.loads((eval_dir / "summary.json").read_text(encoding="utf-8"))
    except ValueError as err:  # TOMLDecodeError, JSONDecodeError, UnicodeDecodeError
        raise UserError(f"{eval_dir}: config.toml or summary.json cannot be parsed ({err}); "
                        "rerun `diffinpaint eval` to rewrite them") from None
    try:
        frame = pd.read_csv(per_image, dtype=str, keep_default_na=False, encoding="utf-8")
    except (ValueError, pd.errors.EmptyDataError) as err:
        raise UserError(f"{per_image} cannot be read as CSV ({str(err).splitlines()[0]}); "
                        "rerun `diffinpaint eval` to rewrite it") from None
    missing = {"model", "image", "rmse", "ssim"} - set(frame.columns)
    if missing:
        raise UserError(f"{per_image} lacks column(s) {', '.join(sorted(missing))}; "
                        "rerun `diffinpaint eval` to rewrite it")
    if frame.empty:
        raise UserError(f"{per_image} has no rows; rerun `diffinpaint eval`")
    has_pixel_counts = "n_hole_pixels" in frame.columns
    for name in [*PER_IMAGE, "n_hole_pixels", "hole_fraction"]:  # older folders lack some: NaN
        frame[name] = pd.to_numeric(frame[name], errors="coerce") if name in frame else np.nan
    frame["n_holes"] = pd.to_numeric(frame["n_holes"], errors="coerce").fillna(1) if "n_holes" in frame else 1
    frame["seed"] = pd.to_numeric(frame["seed"], errors="coerce").fillna(0).astype(int) if "seed" in frame else 0
    frame["label"] = frame["label"] if "label" in frame else ""

    models = [m for m in config.get("models", []) if (frame["model"] == m).any()]
    models += sorted(set(frame["model"]) - set(models))

    notes = []
    if not has_pixel_counts:
        notes.append("per_image.csv has no n_hole_pixels column, so the rmse confidence intervals weight every "
                     "image equally; the summary rmse pools hole pixels, so the two can differ.")
    bad = frame[~(np.isfinite(frame["rmse"]) & np.isfinite(frame["ssim"]))]
    if len(bad):
        notes.append(f"{len(bad)} per-image row(s) have no finite rmse/ssim and are left out of the intervals "
                     f"and plots (first: {bad.iloc[0]['model']} {bad.iloc[0]['image']}).")
    return EvalFolder(eval_dir, config, models, frame, summary, has_pixel_counts, notes)


# ---------------------------------------------------------------------------------------------- statistics


def _weighted_mean_resampled(values: np.ndarray, weights: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return (values * weights)[idx].sum(axis=1) / weights[idx].sum(axis=1)


def bootstrap(statistic, n: int, *, n_resamples: int = N_RESAMPLES, seed: int = BOOTSTRAP_SEED,
              chunk: int = 250) -> np.ndarray:
    """statistic(idx) for `n_resamples` index matrices idx (rows = resamples of range(n) with replacement).

    Chunked so memory stays at chunk*n indices whatever the number of images."""
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, n_resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_resamples - start), n))
        out.append(statistic(idx))
    return np.concatenate(out)


def ci95(samples: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return float(lo), float(hi)


def pooled_rmse(rmse: np.ndarray, pixels: np.ndarray) -> float:
    """sqrt of the hole-pixel-weighted mean of per-image mse: the summary's pooled rmse."""
    return float(math.sqrt(np.sum(rmse**2 * pixels) / np.sum(pixels)))


def rmse_ci(rmse: np.ndarray, pixels: np.ndarray, **kw) -> tuple[float, float]:
    return seed_mean_ci(np.asarray(rmse)[None], np.asarray(pixels), "rmse", **kw)


def mean_ci(values: np.ndarray, **kw) -> tuple[float, float]:
    return ci95(bootstrap(lambda idx: values[idx].mean(axis=1), len(values), **kw))


def _statistic(values: np.ndarray, weights: np.ndarray, pooling: str, idx: np.ndarray) -> np.ndarray:
    """The summary statistic of every seed (rows of `values`) on resampled images, averaged over seeds."""
    per_seed = []
    for v in values:
        if pooling == "rmse":
            per_seed.append(np.sqrt(_weighted_mean_resampled(v**2, weights, idx)))
        else:
            per_seed.append(_weighted_mean_resampled(v, weights, idx))
    return np.mean(per_seed, axis=0)


def seed_mean_ci(values: np.ndarray, weights: np.ndarray, pooling: str, **kw) -> tuple[float, float]:
    """Bootstrap CI of the seed-averaged statistic; values: seeds × images (same images in every row)."""
    return ci95(bootstrap(lambda idx: _statistic(values, weights, pooling, idx), values.shape[1], **kw))


def _matrix(ev: EvalFolder, model: str, name: str, rows: pd.DataFrame | None = None):
    """(values seeds × images, weights per image) for one metric; images finite in every seed."""
    found = _matrix_by_image(ev, model, name, rows)
    if found is None:
        return None
    table, weights = found
    return table.to_numpy(dtype=np.float64).T, weights.to_numpy(dtype=np.float64)


@dataclass
class ModelStats:
    model: str
    n_images: int
    values: dict[str, float]  # per-image metrics recomputed from per_image.csv (same definition as the summary)
    cis: dict[str, tuple[float, float]]

    @property
    def rmse(self) -> float:
        return self.values["rmse"]

    @property
    def rmse_ci(self) -> tuple[float, float]:
        return self.cis["rmse"]

    @property
    def ssim(self) -> float:
        return self.values["ssim"]

    @property
    def ssim_ci(self) -> tuple[float, float]:
        return self.cis["ssim"]


def model_stats(ev: EvalFolder, model: str) -> ModelStats | None:
    values, cis, n_images = {}, {}, 0
    for name in PER_IMAGE:
        found = _matrix(ev, model, name)
        if found is None:
            continue
        matrix, weights = found
        everything = np.arange(matrix.shape[1])[None]
        values[name] = float(_statistic(matrix, weights, BY_NAME[name].pooling, everything)[0])
        cis[name] = seed_mean_ci(matrix, weights, BY_NAME[name].pooling)
        n_images = max(n_images, matrix.shape[1])
    if "rmse" not in values or "ssim" not in values:
        return None
    return ModelStats(model, n_images, values, cis)


@dataclass
class PairStats:
    """A − B on the images both scored, per metric, with the summary's own statistic (pooled rmse, mean hole
    ssim, mean lpips_full, ...) recomputed for both models on one shared resample of those images."""

    a: str
    b: str
    n: int
    diff: dict[str, float]  # statistic(A) − statistic(B) on the shared images
    ci: dict[str, tuple[float, float]]  # percentile bootstrap 95% interval of that difference
    wins: dict[str, tuple[int, int, int]]  # images where A is better, B is better, tie (per-image values)

    @property
    def d_rmse(self) -> float:
        return self.diff["rmse"]

    @property
    def d_rmse_ci(self) -> tuple[float, float]:
        return self.ci["rmse"]

    @property
    def rmse_wins(self) -> tuple[int, int, int]:
        return self.wins["rmse"]

    @property
    def d_ssim(self) -> float:
        return self.diff["ssim"]

    @property
    def d_ssim_ci(self) -> tuple[float, float]:
        return self.ci["ssim"]

    @property
    def ssim_wins(self) -> tuple[int, int, int]:
        return self.wins["ssim"]


def pair_stats(ev: EvalFolder, a: str, b: str) -> PairStats | None:
    """Every per-image metric both models have: the difference of their summary statistics on the shared images
    (each model's seeds averaged as in the summary), its interval from ONE resample of images shared by both
    models (the pairing is kept: a resampled image counts for A and B alike), and per-image wins."""
    diff, cis, wins, n_shared = {}, {}, {}, 0
    for name in PER_IMAGE:
        if BY_NAME[name].reference:  # measured on the originals (text_rate_gt): the same for A and B
            continue
        found_a, found_b = _matrix_by_image(ev, a, name), _matrix_by_image(ev, b, name)
        if found_a is None or found_b is None:
            continue
        (ta, wa), (tb, wb) = found_a, found_b
        shared = ta.index.intersection(tb.index).sort_values()
        if shared.empty:
            continue
        va, vb = ta.loc[shared].to_numpy(float).T, tb.loc[shared].to_numpy(float).T
        weights_a, weights_b = wa.loc[shared].to_numpy(float), wb.loc[shared].to_numpy(float)
        pooling = BY_NAME[name].pooling

        def difference(idx, va=va, vb=vb, weights_a=weights_a, weights_b=weights_b, pooling=pooling):
            return _statistic(va, weights_a, pooling, idx) - _statistic(vb, weights_b, pooling, idx)

        everything = np.arange(len(shared))[None]
        diff[name] = float(difference(everything)[0])
        cis[name] = ci95(bootstrap(difference, len(shared)))
        per_image = va.mean(axis=0) - vb.mean(axis=0)
        better = per_image > 0 if BY_NAME[name].higher_is_better else per_image < 0
        worse = per_image < 0 if BY_NAME[name].higher_is_better else per_image > 0
        wins[name] = (int(better.sum()), int(worse.sum()), int((per_image == 0).sum()))
        n_shared = max(n_shared, len(shared))
    if "rmse" not in diff or "ssim" not in diff:
        return None
    return PairStats(a, b, n_shared, diff, cis, wins)


def _matrix_by_image(ev: EvalFolder, model: str, name: str, rows: pd.DataFrame | None = None):
    """(images × seeds values, per-image weights) of one metric, indexed by image (finite in every seed); the
    weights are the summary's: hole pixels for pooled rmse, holes for hole means, 1 otherwise."""
    rows = ev.model_rows(model) if rows is None else rows
    if name not in rows or rows[name].isna().all():
        return None
    table = rows.pivot_table(index="image", columns="seed", values=name, aggfunc="first")
    table = table[np.isfinite(table).all(axis=1)]
    if table.empty:
        return None
    first = rows.drop_duplicates("image").set_index("image").loc[table.index]
    pooling = BY_NAME[name].pooling
    if pooling == "rmse" and ev.has_pixel_counts:
        weights = first["n_hole_pixels"].astype(float)
    elif pooling == "holes":
        weights = first["n_holes"].astype(float).clip(lower=1.0)
    else:
        weights = pd.Series(1.0, index=table.index)
    return table, weights


def pairs_table(ev: EvalFolder) -> list[PairStats]:
    return [p for i, a in enumerate(ev.models) for b in ev.models[i + 1:] if (p := pair_stats(ev, a, b))]


def labels_table(ev: EvalFolder) -> pd.DataFrame:
    """label × model: (pooled rmse, mean ssim over holes, images) on the first seed's rows."""
    from .columns import aggregate

    records = []
    for m in ev.models:
        rows = ev.model_rows(m)
        rows = rows[rows["seed"] == ev.seeds_of(m)[0]]
        for label, group in rows.groupby("label", sort=True):
            records.append({"label": label, "model": m, "rmse": aggregate(BY_NAME["rmse"], group),
                            "ssim": aggregate(BY_NAME["ssim"], group), "n": len(group)})
    return pd.DataFrame.from_records(records, columns=["label", "model", "rmse", "ssim", "n"])


# ---------------------------------------------------------------------------------------------- images


def _shift_or(mask: np.ndarray) -> np.ndarray:
    """Dilate a bool mask by one pixel (4-neighbourhood)."""
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def outline(mask: np.ndarray) -> np.ndarray:
    """A 2-pixel line straddling the hole edge: one pixel inside, one outside (inside only at the image edge)."""
    padded = np.pad(mask, 1, constant_values=False)  # a hole touching the border is still outlined there
    inner = padded & _shift_or(~padded)  # hole pixels next to a non-hole pixel
    outer = _shift_or(padded) & ~padded
    return (inner | outer)[1:-1, 1:-1]


def thumbnail(rgb: np.ndarray, mask: np.ndarray, *, grey_holes: bool = False, size: int = THUMB_SIZE) -> Image.Image:
    """Resize to fit `size`, optionally grey out the holes (the masked input), outline the holes."""
    h, w = mask.shape
    scale = size / max(h, w)
    tw, th = max(1, round(w * scale)), max(1, round(h * scale))
    rgb = rgb.copy()
    if grey_holes:
        rgb[mask] = 128
    resample = Image.NEAREST if scale >= 1 else Image.LANCZOS
    small = np.asarray(Image.fromarray(rgb).resize((tw, th), resample)).copy()
    small_mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((tw, th), Image.NEAREST)) >= 128
    small[outline(small_mask)] = OUTLINE_RGB
    return Image.fromarray(small)


class Assets:
    """Writes PNGs under EVAL/report_assets/ once per key and hands back their relative src."""

    def __init__(self, eval_dir: Path):
        self.dir = eval_dir / ASSETS
        self.dir.mkdir(parents=True, exist_ok=True)
        for path in self.dir.iterdir():  # stale thumbnails must not linger; files the report did not write stay
            if path.is_file() and OWN_ASSET.fullmatch(path.name):
                path.unlink()
        self.names: dict[tuple, str] = {}

    def src(self, name: str) -> str:
        return quote(f"{ASSETS}/{name}")

    def image(self, key: tuple, make) -> str:
        if key not in self.names:
            name = f"img{len(self.names):04d}.png"
            make().save(self.dir / name)
            self.names[key] = name
        return self.src(self.names[key])


class Cells:
    """Thumbnails of one image: masked input, ground truth, each model's output (loaded lazily, cached)."""

    def __init__(self, ev: EvalFolder, assets: Assets, samples: dict):
        self.ev, self.assets, self.samples = ev, assets, samples
        self._loaded: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _gt(self, image_id: str):
        if image_id not in self._loaded:
            sample = self.samples[image_id]
            self._loaded[image_id] = (sample.load_image(), sample.load_mask())
        return self._loaded[image_id]

    def input(self, image_id: str) -> str:
        return self.assets.image((image_id, "input"), lambda: thumbnail(*self._gt(image_id), grey_holes=True))

    def truth(self, image_id: str) -> str:
        return self.assets.image((image_id, "truth"), lambda: thumbnail(*self._gt(image_id)))

    def output(self, image_id: str, model: str) -> str | None:
        """None when the model's output is missing or unreadable (the cell then says so)."""
        path = self.ev.run_dir(model) / "images" / self.samples[image_id].output_relpath
        gt, mask = self._gt(image_id)
        try:
            with Image.open(path) as im:
                out = np.asarray(im.convert("RGB"))
        except OSError:
            return None
        if out.shape != gt.shape:
            return None
        return self.assets.image((image_id, "model", model), lambda: thumbnail(out, mask))


# ---------------------------------------------------------------------------------------------- plots


def plot_distributions(ev: EvalFolder, path: Path) -> None:
    """Box plot plus jittered points of per-image rmse and ssim (first seed), one column per model."""
    from matplotlib.figure import Figure  # Figure + savefig uses the Agg canvas; no pyplot global state

    fig = Figure(figsize=(max(7.0, 2.2 + 1.6 * len(ev.models)), 3.8), dpi=100, layout="constrained")
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    for ax, metric, better in zip(fig.subplots(1, 2), ("rmse", "ssim"), ("lower", "higher")):
        data = [np.array([v for r in ev.first_seed_rows(m).values() if math.isfinite(v := float(r[metric]))])
                for m in ev.models]
        positions = np.arange(1, len(ev.models) + 1)
        keep = [i for i, d in enumerate(data) if len(d)]
        ax.boxplot([data[i] for i in keep], positions=positions[keep], widths=0.5, showfliers=False)
        for pos, values in zip(positions, data):
            ax.scatter(pos + rng.uniform(-0.15, 0.15, len(values)), values, s=8, alpha=0.5, color="tab:blue")
        ax.set_xticks(positions, ev.models, rotation=20 if len(ev.models) > 4 else 0)
        ax.set_title(f"per-image {metric} ({better} is better)")
        ax.grid(axis="y", alpha=0.3)
    fig.savefig(path)


def plot_by_area(bins: pd.DataFrame, models: list[str], path: Path) -> None:
    """Each per-image metric against the hole's share of the image (LaMa's bins), one line per model."""
    from matplotlib.figure import Figure

    metrics = [m for m in PER_IMAGE if m in bins and bins[m].notna().any()]
    columns = min(4, len(metrics))
    rows = math.ceil(len(metrics) / columns)
    fig = Figure(figsize=(3.6 * columns, 3.0 * rows), dpi=100, layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    centres = 100 * (BIN_EDGES[:-1] + BIN_EDGES[1:]) / 2
    for ax, metric in zip(axes, metrics):
        for model in models:
            mine = bins[bins["model"] == model].reset_index(drop=True)
            keep = (mine["n_images"] > 0) & mine[metric].notna()
            ax.plot(centres[keep.to_numpy()], mine.loc[keep, metric], marker="o", label=model)
        ax.set_title(f"{metric} {BY_NAME[metric].arrow}")
        ax.set_xlabel("hole area (% of image)")
        ax.set_xlim(0, 100)
        ax.grid(alpha=0.3)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    axes[0].legend(fontsize="small")
    fig.savefig(path)


# ---------------------------------------------------------------------------------------------- html

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1500px; }
table { border-collapse: collapse; margin: 0.5em 0 1.2em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; vertical-align: top; }
th { background: #f2f2f2; } td.l, th.l { text-align: left; } th.group { text-align: center; }
.ci { color: #666; font-size: 0.85em; } .sig { font-weight: bold; } td.best { font-weight: bold; }
.note { background: #fff6d5; border-left: 4px solid #e0b000; padding: 0.3em 0.8em; }
.banner { background: #fde2e1; border-left: 6px solid #c0392b; padding: 0.5em 0.9em; font-weight: bold; }
.flag { color: #c0392b; font-size: 0.85em; }
.grid td, .grid th { text-align: center; font-size: 0.8em; } .grid img { display: block; margin: auto; }
.missing { color: #a00; }
table.summary { font-size: 0.9em; } table.summary td .ci { display: block; white-space: nowrap; }
"""


def _fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}"


def _ci(ci: tuple[float, float], digits: int = 4, *, mark_zero: bool = False) -> str:
    cls = "ci sig" if mark_zero and (ci[0] > 0 or ci[1] < 0) else "ci"
    return f'<span class="{cls}">[{_fmt(ci[0], digits)}, {_fmt(ci[1], digits)}]</span>'


def _float(value) -> float | None:
    """A CSV cell or a pandas value (numpy scalars, strings, None, NaN) as a finite float, else None."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) else None


def summary_table(ev: EvalFolder, stats: dict[str, ModelStats]) -> pd.DataFrame:
    """model × metric: summary.json's values, recomputed from per_image.csv where summary.json lacks them."""
    by_model = {e.get("model"): e for e in ev.summary if isinstance(e, dict)}
    records = []
    for m in ev.models:
        entry, st = by_model.get(m, {}), stats.get(m)
        record = {"model": m}
        for column in COLUMNS:
            value = _number(entry.get(column.name))
            if value is None and st is not None and column.name not in entry:
                value = st.values.get(column.name)
            record[column.name] = value
        records.append(record)
    return pd.DataFrame.from_records(records).set_index("model")


def _best(table: pd.DataFrame) -> dict[str, set[str]]:
    """column -> the model(s) with the best value (only when at least two models have one)."""
    best = {}
    for column in COLUMNS:
        values = table[column.name].dropna()
        if len(values) >= 2 and not column.reference:
            target = values.max() if column.higher_is_better else values.min()
            best[column.name] = set(values[values == target].index)
    return best


def _missing_reason(entry: dict, name: str) -> tuple[str, str]:
    """(which columns, why) for a missing value."""
    if name.startswith("lpips"):
        return "lpips", entry.get("lpips_note") or "AlexNet weights were not given (see the eval log)"
    if not BY_NAME[name].per_image:
        return "fid/kid", entry.get("fid_note") or "Inception weights were not given (see the eval log)"
    if name == "ssim_crop":
        return name, ("SSIM of the hole crop is defined for rectangular holes (masks.csv) only; a free-form hole's "
                      "only crop is its bounding box, mostly known pixels (ssim covers free-form holes)")
    if name.startswith("text_rate"):
        return "text_rate", entry.get("text_note") or "the OCR model did not run (see the eval log)"
    if name.startswith("clip") and entry.get("clip_note"):
        return "clip", entry["clip_note"]
    if name == "clip_i":
        return name, "free-form masks have no hole crop: see clip_i_bbox (their bounding-box crop)"
    if name == "clip_i_bbox":
        return name, "computed for free-form masks only (rectangular holes: clip_i is the crop itself)"
    if name == "clip_t":
        return name, "no prompt: CLIPScore is for prompted models (their manifest.jsonl records each image's prompt)"
    return name, "no image had a value"


def _value(table: pd.DataFrame, model: str, name: str) -> float | None:
    value = table.loc[model, name]
    return None if value is None or pd.isna(value) else float(value)


def _cell(entry: dict, st: ModelStats | None, name: str, value: float | None, best: bool) -> str:
    digits = DIGITS.get(name, 4)
    column = BY_NAME[name]
    if value is None:
        return f'<td><span class="missing" title="{esc(_missing_reason(entry, name)[1])}">missing</span></td>'
    text = _fmt(value, digits)
    if column.per_image and st is not None and name in st.cis:
        text += " " + _ci(st.cis[name], digits)
    low, high = _number(entry.get(f"{name}_ci_low")), _number(entry.get(f"{name}_ci_high"))
    if not column.per_image and low is not None and high is not None:  # eval's interval (summary.json)
        text += " " + _ci((low, high), digits)
    if name in ("kid", "kid_full") and _number(entry.get(f"{name}_std")) is not None:
        text += f' <span class="ci">± {_fmt(entry[f"{name}_std"], digits)}</span>'
    sd = _number(entry.get(f"{name}_seed_sd"))
    if sd is not None:
        text += f' <span class="ci">seeds ± {_fmt(sd, digits)}</span>'
    capped = _number(entry.get("n_psnr_capped")) if name == "psnr_full" else None
    if capped:  # summary.json's count of per-image values at the cap (over every seed's rows)
        text += (f' <span class="ci" title="per-image values at the cap, {PSNR_CAP_DB:.2f} dB (the PSNR of an MSE of '
                 f'(0.5/255)²): exact copies">{int(capped)} capped</span>')
    return f'<td class="best">{text}</td>' if best else f"<td>{text}</td>"


def _banners(ev: EvalFolder) -> list[str]:
    out = []
    for entry in ev.summary:
        if isinstance(entry, dict) and entry.get("in_sample"):
            out.append(f'<p class="banner">In-sample: {esc(entry.get("model"))} was scored on '
                       f'{esc(entry.get("n_train_overlap", "some"))} image(s) it was trained on '
                       "(--allow-in-sample). Its numbers overstate how it does on new images and are not "
                       "comparable with the other models.</p>")
    return out


def _summary_section(ev: EvalFolder, stats: dict[str, ModelStats]) -> list[str]:
    by_model = {e.get("model"): e for e in ev.summary if isinstance(e, dict)}
    table = summary_table(ev, stats)
    best = _best(table)
    hole = [c for c in COLUMNS if c.group == "hole"]
    whole = [c for c in COLUMNS if c.group == "whole"]
    multi_seed = any((_number(e.get("n_seeds")) or 1) > 1 for e in by_model.values())
    out = ["<h2>Summary</h2>", *_banners(ev),
           "<p>Arrows say which way is better; the best value per column is in bold. Brackets: bootstrap 95% "
           f"interval over images ({N_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}); for fid, kid, fid_full, kid_full, "
           "pids and uids eval's interval from the cached Inception features (fewer resamples; P-IDS/U-IDS rough, "
           "and only on small sets: see the notes). kid ±: spread over KID's random subsets."
           + (" seeds ±: standard deviation across seeds (the value is the mean over seeds). With several seeds "
              "every interval is that of the seed average: each resample takes the same images from every seed."
              if multi_seed else "") + "</p>",
           '<table class="summary"><tr><th class=l rowspan=2>model</th><th rowspan=2>images</th><th rowspan=2>holes</th>'
           f'<th class="group" colspan={len(hole)}>hole only</th>'
           f'<th class="group" colspan={len(whole)}>whole image (the papers\' protocols: see "What each column is")</th></tr><tr>'
           + "".join(f'<th title="{esc(c.protocol)}">{c.name} {c.arrow}</th>' for c in hole + whole) + "</tr>"]
    reasons = set()
    for m in ev.models:
        entry, st = by_model.get(m, {}), stats.get(m)
        flag = ' <span class="flag">in-sample</span>' if entry.get("in_sample") else ""
        if entry.get("floor"):
            flag += ' <span class="flag" title="not a method: what a fill that learnt nothing scores">floor</span>'
        seeds = _number(entry.get("n_seeds"))
        seed_text = f' <span class="ci">({int(seeds)} seeds)</span>' if seeds and seeds > 1 else ""
        if entry.get("deterministic") and len(ev.config.get("seeds", [])) > 1:
            seed_text = ' <span class="ci">(deterministic: one run)</span>'
        cells = [_cell(entry, st, c.name, _value(table, m, c.name), m in best.get(c.name, ()))
                 for c in hole + whole]
        for c in hole + whole:
            if _value(table, m, c.name) is None:
                reasons.add(_missing_reason(entry, c.name))
        out.append(f"<tr><td class=l>{esc(m)}{flag}{seed_text}</td>"
                   f"<td>{esc(entry.get('n_images', st.n_images if st else '–'))}</td>"
                   f"<td>{esc(entry.get('n_holes', '–'))}</td>{''.join(cells)}</tr>")
    out.append("</table>")
    floors = [m for m in ev.models if by_model.get(m, {}).get("floor")]
    if floors:
        out.append(f'<p class="note">Floors ({esc(", ".join(floors))}): not methods but what a fill that learnt '
                   "nothing about the image scores (grey: mid-grey holes; ring_mean: each hole the mean colour of "
                   "a thin ring around it). A model that does not beat them on a metric has shown nothing that "
                   "metric can see; RMSE in particular rewards blur.</p>")
    for what, reason in sorted(reasons):
        out.append(f'<p class="note">{esc(what)} missing: {esc(reason)}</p>')
    for entry in by_model.values():
        if entry.get("fid_note") and _number(entry.get("fid")) is not None:
            out.append(f'<p class="note">{esc(entry["model"])}: {esc(entry["fid_note"])}</p>')
    return out


def _protocol_section() -> list[str]:
    out = ["<h2>What each column is</h2>",
           "<table><tr><th class=l>column</th><th class=l>group</th><th class=l>matches</th></tr>"]
    for c in COLUMNS:
        out.append(f"<tr><td class=l>{c.name} {c.arrow}</td><td class=l>{c.group}</td>"
                   f"<td class=l>{esc(c.protocol)}</td></tr>")
    out.append("</table>")
    return out


def _pairs_section(ev: EvalFolder) -> list[str]:
    pairs = pairs_table(ev)
    if not pairs:
        return []
    metrics = [c for c in COLUMNS if c.per_image and any(c.name in p.diff for p in pairs)]
    n_intervals = sum(len(p.diff) for p in pairs)
    out = ["<h2>Paired differences</h2>",
           "<p>A − B on the images both models scored, for each metric <em>the statistic the summary reports</em> "
           "(rmse pooled over hole pixels, ssim / lpips averaged over holes, whole-image metrics averaged over "
           "images; seeds averaged), so the sign agrees with the summary table. Brackets: percentile bootstrap 95% "
           f"interval from one resample of the shared images used for both models ({N_RESAMPLES} resamples); bold "
           "when it excludes 0. Under each: images where A / B is better / tie. "
           f"<strong>{len(pairs)} comparisons, {n_intervals} intervals, not corrected for multiplicity</strong>: "
           "with many of them, some intervals exclude 0 by chance (about 1 in 20 when there is no difference). "
           "FID/KID/P-IDS are set metrics and have no paired per-image form here.</p>",
           "<table><tr><th class=l>A</th><th class=l>B</th><th>images</th>"
           + "".join(f"<th>Δ {c.name} {c.arrow}</th>" for c in metrics) + "</tr>"]
    for p in pairs:
        cells = []
        for c in metrics:
            if c.name not in p.diff:
                cells.append("<td>–</td>")
                continue
            digits = DIGITS.get(c.name, 4)
            wins = " / ".join(map(str, p.wins[c.name]))
            cells.append(f"<td>{_fmt(p.diff[c.name], digits)} {_ci(p.ci[c.name], digits, mark_zero=True)}"
                         f'<br><span class="ci">{wins}</span></td>')
        out.append(f"<tr><td class=l>{esc(p.a)}</td><td class=l>{esc(p.b)}</td><td>{p.n}</td>{''.join(cells)}</tr>")
    out.append("</table>")
    return out


def _labels_section(ev: EvalFolder) -> list[str]:
    table = labels_table(ev)
    labels = sorted(table["label"].unique())
    if len(labels) < 2:
        return []
    out = ["<h2>Per label</h2>", "<p>rmse pooled over hole pixels / ssim mean over holes, per label "
           "(first seed).</p>",
           "<table><tr><th class=l>label</th>" + "".join(f"<th>{esc(m)}</th>" for m in ev.models) + "</tr>"]
    cells = table.set_index(["label", "model"])
    for label in labels:
        row = []
        for m in ev.models:
            if (label, m) in cells.index:
                c = cells.loc[(label, m)]
                row.append(f"<td>{_fmt(c['rmse'])} / {_fmt(c['ssim'])} "
                           f'<span class="ci">(n={int(c["n"])})</span></td>')
            else:
                row.append("<td>–</td>")
        out.append(f"<tr><td class=l>{esc(label or '(none)')}</td>{''.join(row)}</tr>")
    out.append("</table>")
    return out


def read_bin_set_metrics(eval_dir: Path) -> dict[str, dict[str, dict]]:
    """model -> bin -> FID/KID values and n_fid_crops from per_bin.csv (eval computed them from the Inception
    features, which the report does not have); {} when the file or its columns are missing (older eval folders)."""
    path = Path(eval_dir) / "per_bin.csv"
    try:
        table = pd.read_csv(path, dtype={"model": str, "bin": str}, keep_default_na=False, encoding="utf-8")
    except (OSError, ValueError, pd.errors.EmptyDataError):
        return {}
    if not {"model", "bin", *PER_BIN_SET} <= set(table.columns):
        return {}
    out: dict[str, dict[str, dict]] = {}
    for _, row in table.iterrows():
        values = {name: _float(row[name]) for name in PER_BIN_SET}
        crops = _float(row.get("n_fid_crops"))
        values["n_fid_crops"] = None if crops is None else int(crops)
        out.setdefault(row["model"], {})[row["bin"]] = values
    return out


TOO_FEW = ("too few images in this bin for this statistic: FID needs 2 per side, KID 4 images (more when an image "
           "has several holes)")


def _area_section(ev: EvalFolder, assets: Assets) -> list[str]:
    if ev.frame["hole_fraction"].isna().all():
        return ["<h2>By hole area</h2>", '<p class="note">per_image.csv has no hole_fraction column (an older '
                "eval folder); rerun `diffinpaint eval` for the breakdown by hole area.</p>"]
    set_values = read_bin_set_metrics(ev.root)
    bins = per_bin_table(ev.frame, ev.models, set_values)
    plot_by_area(bins, ev.models, assets.dir / "by_area.png")
    # FID/KID per bin only where eval computed some (Inception weights given); never plotted: a line through bins
    # of different sizes would show FID's small-sample bias as a trend
    with_sets = any(v.get(name) is not None for bins_ in set_values.values() for v in bins_.values()
                    for name in PER_BIN_SET)
    out = ["<h2>By hole area</h2>",
           f"<p>LaMa's {N_BINS} bins of the hole's share of the image (per_bin.csv); each per-image metric against "
           "hole area, one line per model (empty bins left out).</p>",
           f'<img src="{esc(assets.src("by_area.png"))}" alt="metrics against hole area per model">']
    if with_sets:
        out.append(f'<p class="note">{esc(PER_BIN_NOTE)}</p>')
        metric_heads = "".join(f"<th>{name} {BY_NAME[name].arrow}</th>" for name in PER_BIN_SET)
        out.append("<table><tr><th class=l rowspan=2>hole area</th>"
                   + "".join(f'<th class="group" colspan={1 + len(PER_BIN_SET)}>{esc(m)}</th>' for m in ev.models)
                   + "</tr><tr>" + f"<th>images (crops)</th>{metric_heads}" * len(ev.models) + "</tr>")
    else:
        out.append("<table><tr><th class=l>hole area</th>" + "".join(f"<th>{esc(m)} images</th>" for m in ev.models)
                   + "</tr>")
    for name in bins["bin"].unique():
        rows = {r["model"]: r for _, r in bins[bins["bin"] == name].iterrows()}
        if sum(int(r["n_images"]) for r in rows.values()) == 0:
            continue
        cells = []
        for m in ev.models:
            row = rows.get(m)
            n = int(row["n_images"]) if row is not None else 0
            if not with_sets:
                cells.append(f"<td>{n}</td>")
                continue
            crops = _float(row["n_fid_crops"]) if row is not None else None
            cells.append(f"<td>{n}" + (f' <span class="ci">({int(crops)})</span>' if crops and crops != n else "")
                         + "</td>")
            for metric in PER_BIN_SET:
                value = _float(row[metric]) if row is not None else None
                if value is not None:
                    cells.append(f"<td>{_fmt(value, DIGITS.get(metric, 4))}</td>")
                elif n and m in set_values:  # eval left it empty: too few images for the statistic, not a number
                    cells.append(f'<td><span class="missing" title="{esc(TOO_FEW)}">too few</span></td>')
                else:
                    cells.append("<td>–</td>")
        out.append(f"<tr><td class=l>{esc(name)}</td>{''.join(cells)}</tr>")
    out.append("</table>")
    return out


def _img(src: str | None, alt: str) -> str:
    if src is None:
        return '<span class="missing">output missing</span>'
    return f'<img src="{esc(src)}" alt="{esc(alt)}">'


def _grid_section(ev: EvalFolder, cells: Cells | None, image_ids: list[str], n_total: int) -> list[str]:
    out = ["<h2>Comparison grid</h2>"]
    if cells is None:
        return out + ['<p class="note">No grid: the dataset could not be loaded (see the note above).</p>']
    out.append(f"<p>{len(image_ids)} of {n_total} images, evenly spread over the sorted image list. "
               "Holes outlined in magenta; the masked input shows holes in grey. "
               "Under each output: that image's rmse / ssim (first seed).</p>")
    out.append('<table class="grid"><tr><th class=l>image</th><th>masked input</th>'
               + "".join(f"<th>{esc(m)}</th>" for m in ev.models) + "<th>ground truth</th></tr>")
    per_model = {m: ev.first_seed_rows(m) for m in ev.models}
    for image_id in image_ids:
        row = [f"<td class=l>{esc(image_id)}</td>", f"<td>{_img(cells.input(image_id), f'{image_id} masked input')}</td>"]
        for m in ev.models:
            r = per_model[m].get(image_id)
            caption = f"{_fmt(float(r['rmse']))} / {_fmt(float(r['ssim']))}" if r is not None else "not scored"
            row.append(f"<td>{_img(cells.output(image_id, m), f'{image_id} {m}')}{esc(caption)}</td>")
        row.append(f"<td>{_img(cells.truth(image_id), f'{image_id} ground truth')}</td>")
        out.append(f"<tr>{''.join(row)}</tr>")
    out.append("</table>")
    return out


def _worst_section(ev: EvalFolder, cells: Cells | None, n_worst: int) -> list[str]:
    if cells is None or n_worst <= 0:
        return []
    out = ["<h2>Worst images per model (by rmse)</h2>"]
    for m in ev.models:
        rows = sorted((r for image, r in ev.first_seed_rows(m).items()
                       if math.isfinite(float(r["rmse"])) and image in cells.samples),
                      key=lambda r: -float(r["rmse"]))[:n_worst]
        if not rows:
            continue
        out.append(f"<h3>{esc(m)}</h3>")
        out.append('<table class="grid"><tr><th class=l>image</th><th>rmse</th><th>ssim</th><th>masked input</th>'
                   f"<th>{esc(m)}</th><th>ground truth</th></tr>")
        for r in rows:
            image = r["image"]
            out.append(
                f"<tr><td class=l>{esc(image)}</td><td>{_fmt(float(r['rmse']))}</td><td>{_fmt(float(r['ssim']))}</td>"
                f"<td>{_img(cells.input(image), f'{image} masked input')}</td>"
                f"<td>{_img(cells.output(image, m), f'{image} {m}')}</td>"
                f"<td>{_img(cells.truth(image), f'{image} ground truth')}</td></tr>")
        out.append("</table>")
    return out


TEXT_HOLES_SHOWN = 24  # per model (and for the originals): the page stays small on large sets
DETECTION_RGB = (0, 230, 255)  # cyan: the boxes the OCR model detected


def read_text_detections(eval_dir: Path) -> list[dict] | None:
    """text_detections.jsonl (eval's OCR: one line per hole with text), None when eval did not write one."""
    path = Path(eval_dir) / "text_detections.jsonl"
    if not path.is_file():
        return None
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and {"source", "image", "hole", "detections"} <= set(record):
            out.append(record)
    return out


def text_crop(rgb: np.ndarray, hole: np.ndarray, polygons: list, *, size: int = THUMB_SIZE) -> Image.Image:
    """The hole's bounding box and a margin of a quarter of its size around it, enlarged to `size`: the hole
    outlined in magenta, each detected box drawn in cyan."""
    from PIL import ImageDraw

    ys, xs = np.nonzero(hole)
    if not len(ys):
        return thumbnail(rgb, hole, size=size)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    margin = max(4, round(0.25 * max(y1 - y0, x1 - x0)))
    y0, x0 = max(0, y0 - margin), max(0, x0 - margin)
    y1, x1 = min(rgb.shape[0], y1 + margin), min(rgb.shape[1], x1 + margin)
    image = thumbnail(rgb[y0:y1, x0:x1], hole[y0:y1, x0:x1], size=size)
    scale = image.width / (x1 - x0)
    draw = ImageDraw.Draw(image)
    for polygon in polygons:
        points = [((px - x0) * scale, (py - y0) * scale) for px, py in polygon]
        draw.polygon(points, outline=DETECTION_RGB, width=2)
    return image


def _hole_mask(sample, mask: np.ndarray, index: int) -> np.ndarray:
    if sample.boxes:
        x, y, w, h = sample.boxes[index]
        hole = np.zeros(mask.shape, dtype=bool)
        hole[y : y + h, x : x + w] = True
        return hole
    return mask.astype(bool)


def _run_dir_of_seed(ev: EvalFolder, model: str, seed) -> Path:
    listed = [Path(p) for p in ev.config.get("run_dirs", {}).get(model, [])]
    for path in listed:
        if path.name == f"seed_{seed}":
            return path if path.is_absolute() else ev.root / path
    return ev.run_dir(model)


def _read(detections: list[dict]) -> str:
    return "<br>".join(f"{esc(d.get('text', ''))} <span class=\"ci\">({_fmt(d.get('score'), 2)}, "
                       f"{round(100 * d['inside']) if _number(d.get('inside')) is not None else '?'}% inside)</span>"
                       for d in detections)


def _text_section(ev: EvalFolder, cells: Cells | None) -> list[str]:
    records = read_text_detections(ev.root)
    notes = {e.get("text_note") for e in ev.summary if isinstance(e, dict) and e.get("text_note")}
    if records is None:
        return ["<h2>Text in the holes</h2>", f'<p class="note">{esc(sorted(notes)[0])}</p>'] if notes else []
    threshold = ev.config.get("settings", {}).get("text_threshold", 0.5)
    out = ["<h2>Text in the holes</h2>",
           "<p>Holes where the OCR model (rapidocr's PP-OCR, run on the whole image) read a string with a recognition "
           f"score of at least {esc(threshold)} whose detected box lies at least half inside the hole "
           "(text_rate counts them; text_rate_gt does the same on the originals: text that was really there). "
           "Crops: the hole and a margin, the hole outlined in magenta, each detected box in cyan. First seed "
           "of each model.</p>"]
    if cells is None:
        return out + ['<p class="note">No crops: the dataset could not be loaded (see the note above).</p>']
    originals = {(r["image"], r["hole"]): r["detections"] for r in records if r["source"] == "original"}

    def crop(rgb, image_id, hole_index, detections, key):
        sample = cells.samples[image_id]
        hole = _hole_mask(sample, cells._gt(image_id)[1], hole_index)
        return cells.assets.image(key, lambda: text_crop(rgb, hole, [d["polygon"] for d in detections]))

    def original_cell(image_id, hole_index):
        found = originals.get((image_id, hole_index), [])
        src = crop(cells._gt(image_id)[0], image_id, hole_index, found, (image_id, hole_index, "text-original"))
        return f"<td>{_img(src, f'{image_id} hole {hole_index} original')}</td>"

    listed = [(k, v) for k, v in originals.items() if k[0] in cells.samples]
    out.append(f"<h3>Originals (the reference): {len(originals)} hole(s) with text</h3>")
    if listed:
        out.append('<table class="grid"><tr><th class=l>image</th><th>hole</th><th>original</th>'
                   "<th class=l>read</th></tr>")
        for (image_id, hole_index), found in listed[:TEXT_HOLES_SHOWN]:
            out.append(f"<tr><td class=l>{esc(image_id)}</td><td>{hole_index}</td>"
                       f"{original_cell(image_id, hole_index)}<td class=l>{_read(found)}</td></tr>")
        out.append("</table>")
        if len(listed) > TEXT_HOLES_SHOWN:
            out.append(f"<p>{TEXT_HOLES_SHOWN} of {len(listed)} shown.</p>")
    for m in ev.models:
        seeds = ev.seeds_of(m)
        mine = [r for r in records if r["source"] == "output" and r.get("model") == m
                and (not seeds or r.get("seed") == seeds[0]) and r["image"] in cells.samples]
        out.append(f"<h3>{esc(m)}: {len(mine)} hole(s) with text</h3>")
        if not mine:
            continue
        run_dir = _run_dir_of_seed(ev, m, seeds[0] if seeds else None)
        out.append('<table class="grid"><tr><th class=l>image</th><th>hole</th>'
                   f"<th>{esc(m)}</th><th>original</th><th class=l>read in the output</th>"
                   "<th class=l>read in the original</th></tr>")
        for r in mine[:TEXT_HOLES_SHOWN]:
            image_id, hole_index = r["image"], r["hole"]
            try:
                with Image.open(run_dir / "images" / cells.samples[image_id].output_relpath) as im:
                    rgb = np.asarray(im.convert("RGB"))
                src = crop(rgb, image_id, hole_index, r["detections"], (image_id, hole_index, "text", m))
            except OSError:
                src = None
            out.append(f"<tr><td class=l>{esc(image_id)}</td><td>{hole_index}</td>"
                       f"<td>{_img(src, f'{image_id} hole {hole_index} {m}')}</td>"
                       f"{original_cell(image_id, hole_index)}<td class=l>{_read(r['detections'])}</td>"
                       f"<td class=l>{_read(originals.get((image_id, hole_index), [])) or '–'}</td></tr>")
        out.append("</table>")
        if len(mine) > TEXT_HOLES_SHOWN:
            out.append(f"<p>{TEXT_HOLES_SHOWN} of {len(mine)} shown.</p>")
    return out


def _spread(items: list[str], k: int) -> list[str]:
    if k <= 0 or not items:
        return []
    if len(items) <= k:
        return items
    return [items[i] for i in np.unique(np.linspace(0, len(items) - 1, k).round().astype(int))]


def write_report(eval_dir: Path, *, max_grid_images: int = 24, n_worst: int = 5) -> Path:
    """Write EVAL/report.html (+ EVAL/report_assets/) and return the page's path."""
    # 1. Read the eval folder and the dataset (for ground truth and masks)
    eval_dir = Path(eval_dir).resolve()
    ev = read_eval_folder(eval_dir)
    samples = None
    data = ev.config.get("data")
    if data is None:
        ev.notes.append("config.toml names no dataset (data = ...), so there are no image grids.")
    else:
        from ..data import DEFAULT_MAX_PIXELS, load_dataset
        data_path = Path(data) if Path(data).is_absolute() else eval_dir / data
        try:
            max_pixels = int(ev.config.get("max_pixels", DEFAULT_MAX_PIXELS))  # the limit eval ran under
            samples = {s.image_id: s for s in load_dataset(data_path, skip_invalid=True,
                                                          max_pixels=max_pixels).samples}
        except ValueError as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            ev.notes.append(f"The dataset {data_path} could not be loaded ({first}), so there are no image grids.")

    # 2. Statistics
    stats = {m: s for m in ev.models if (s := model_stats(ev, m))}

    # 3. Assets: plots and thumbnails
    assets = Assets(eval_dir)
    plot_distributions(ev, assets.dir / "distributions.png")
    cells = Cells(ev, assets, samples) if samples is not None else None
    scored = sorted(set(ev.frame["image"]) & set(samples or {}))

    # 4. The page
    seeds = ev.config.get("seeds")
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>diffinpaint report: {esc(eval_dir.name)}</title><style>{CSS}</style></head><body>",
             f"<h1>diffinpaint evaluation: {esc(eval_dir.name)}</h1>",
             f"<p>Eval folder <code>{esc(eval_dir.resolve())}</code>; dataset <code>{esc(data or '–')}</code>; "
             f"models: {esc(', '.join(ev.models))}" + (f"; seeds: {esc(', '.join(map(str, seeds)))}" if seeds else "")
             + ".</p>"]
    parts += [f'<p class="note">{esc(n)}</p>' for n in ev.notes]
    parts += _summary_section(ev, stats)
    parts += _protocol_section()
    parts += _pairs_section(ev)
    parts += _labels_section(ev)
    parts += _area_section(ev, assets)
    parts += _text_section(ev, cells)
    parts += ["<h2>Per-image distributions</h2>",
              f'<img src="{esc(assets.src("distributions.png"))}" alt="per-image rmse and ssim per model">']
    parts += _grid_section(ev, cells, _spread(scored, max_grid_images), len(scored))
    parts += _worst_section(ev, cells, n_worst)
    parts.append("</body></html>\n")

    path = eval_dir / "report.html"
    atomic_write_text(path, "\n".join(parts))
    return path


# ---------------------------------------------------------------------------------------------- cli


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("eval_dir", type=Path, metavar="EVAL", help="eval folder written by `diffinpaint eval`")
    parser.add_argument("--max-grid-images", type=int, default=24,
                        help="images in the comparison grid, spread evenly over the set (default 24)")
    parser.add_argument("--n-worst", type=int, default=5, help="worst images shown per model (default 5)")


def main(args: argparse.Namespace) -> int:
    path = write_report(args.eval_dir, max_grid_images=args.max_grid_images, n_worst=args.n_worst)
    print(path)
    return 0
