"""The evaluation report: one static HTML page over an eval folder (`diffinpaint report EVAL`).

    EVAL/report.html          opens from disk: no server, no network, no scripts
    EVAL/report_assets/*.png  thumbnails and plots it shows (rewritten on every call)

The page reads top to bottom:
  1. summary per model (summary.json) with bootstrap 95% CIs for rmse and ssim, fid/kid as measured
  2. paired differences between models on the images both scored (mean difference with CI, wins)
  3. per-label breakdown
  4. distributions of per-image rmse and ssim (box + strip plot)
  5. comparison grid: masked input | each model | ground truth, holes outlined in magenta
  6. worst images per model by rmse

Confidence intervals resample *images* (the unit that was drawn from the world) with replacement, a fixed
seed and 2000 resamples, and recompute the same statistic the summary reports: rmse pooled over hole pixels
(each image weighted by its hole pixel count, `n_hole_pixels` in per_image.csv; equal weights when the
column is missing, which the page says), ssim as the mean over holes (each image weighted by `n_holes`).
The interval is the 2.5th..97.5th percentile of the resampled statistic (percentile bootstrap).
"""
from __future__ import annotations

import argparse
import csv
import html
import json
import math
import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np
from PIL import Image

from ..util.files import atomic_write_text
from ..util.errors import UserError

N_RESAMPLES = 2000  # bootstrap resamples; the CI bounds move by well under 1% of their width beyond this
BOOTSTRAP_SEED = 0  # fixed, so the same eval folder always gives the same page
THUMB_SIZE = 192  # longest side of a grid thumbnail in pixels (small images are enlarged, nearest-neighbour)
OUTLINE_RGB = (255, 0, 255)  # magenta: rare in photos, visible on light and dark content
ASSETS = "report_assets"


def esc(value) -> str:
    return html.escape(str(value), quote=True)


# ---------------------------------------------------------------------------------------------- reading


@dataclass
class ImageRow:
    model: str
    image: str
    label: str
    n_holes: int
    rmse: float
    ssim: float
    n_hole_pixels: float | None


@dataclass
class EvalFolder:
    root: Path
    config: dict
    models: list[str]  # in config order, then any others found in per_image.csv
    rows: list[ImageRow]
    summary: list[dict]
    has_pixel_counts: bool
    notes: list[str] = field(default_factory=list)  # things the page should tell the reader

    def rows_of(self, model: str) -> dict[str, ImageRow]:
        return {r.image: r for r in self.rows if r.model == model}

    @property
    def runs_dir(self) -> Path:
        runs = Path(self.config.get("runs_dir", "runs"))
        return runs if runs.is_absolute() else self.root / runs


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _int(text: str | None, default: int) -> int:
    value = _float(text)
    return int(value) if math.isfinite(value) else default


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

    with open(per_image, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"model", "image", "rmse", "ssim"} - set(reader.fieldnames or [])
        if missing:
            raise UserError(f"{per_image} lacks column(s) {', '.join(sorted(missing))}; "
                             "rerun `diffinpaint eval` to rewrite it")
        has_pixel_counts = "n_hole_pixels" in (reader.fieldnames or [])
        rows = [ImageRow(model=r["model"], image=r["image"], label=r.get("label") or "",
                         n_holes=_int(r.get("n_holes"), default=1),
                         rmse=_float(r["rmse"]), ssim=_float(r["ssim"]),
                         n_hole_pixels=_float(r["n_hole_pixels"]) if has_pixel_counts else None)
                for r in reader]
    if not rows:
        raise UserError(f"{per_image} has no rows; rerun `diffinpaint eval`")

    models = [m for m in config.get("models", []) if any(r.model == m for r in rows)]
    models += sorted({r.model for r in rows} - set(models))

    notes = []
    if not has_pixel_counts:
        notes.append("per_image.csv has no n_hole_pixels column, so the rmse confidence intervals weight every "
                     "image equally; the summary rmse pools hole pixels, so the two can differ.")
    bad = [r for r in rows if not (math.isfinite(r.rmse) and math.isfinite(r.ssim))]
    if bad:
        notes.append(f"{len(bad)} per-image row(s) have no finite rmse/ssim and are left out of the intervals "
                     f"and plots (first: {bad[0].model} {bad[0].image}).")
    return EvalFolder(eval_dir, config, models, rows, summary, has_pixel_counts, notes)


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
    mse = rmse**2
    return ci95(np.sqrt(bootstrap(lambda idx: _weighted_mean_resampled(mse, pixels, idx), len(rmse), **kw)))


def ssim_mean(ssim: np.ndarray, holes: np.ndarray) -> float:
    """Mean over holes (per-image ssim is that image's mean over its holes)."""
    return float(np.sum(ssim * holes) / np.sum(holes))


def ssim_ci(ssim: np.ndarray, holes: np.ndarray, **kw) -> tuple[float, float]:
    return ci95(bootstrap(lambda idx: _weighted_mean_resampled(ssim, holes, idx), len(ssim), **kw))


def mean_ci(values: np.ndarray, **kw) -> tuple[float, float]:
    return ci95(bootstrap(lambda idx: values[idx].mean(axis=1), len(values), **kw))


@dataclass
class ModelStats:
    model: str
    n_images: int
    rmse: float  # recomputed from per_image.csv (same definition as the summary)
    rmse_ci: tuple[float, float]
    ssim: float
    ssim_ci: tuple[float, float]


def _arrays(rows: list[ImageRow], has_pixel_counts: bool):
    rows = [r for r in rows if math.isfinite(r.rmse) and math.isfinite(r.ssim)]
    rmse = np.array([r.rmse for r in rows], dtype=np.float64)
    ssim = np.array([r.ssim for r in rows], dtype=np.float64)
    pixels = np.array([r.n_hole_pixels if has_pixel_counts else 1.0 for r in rows], dtype=np.float64)
    holes = np.array([max(r.n_holes, 1) for r in rows], dtype=np.float64)
    return rows, rmse, ssim, pixels, holes


def model_stats(ev: EvalFolder, model: str) -> ModelStats | None:
    rows, rmse, ssim, pixels, holes = _arrays(list(ev.rows_of(model).values()), ev.has_pixel_counts)
    if not rows:
        return None
    return ModelStats(model, len(rows), pooled_rmse(rmse, pixels), rmse_ci(rmse, pixels),
                      ssim_mean(ssim, holes), ssim_ci(ssim, holes))


@dataclass
class PairStats:
    a: str
    b: str
    n: int
    d_rmse: float  # mean over shared images of rmse_a - rmse_b (negative: a is better)
    d_rmse_ci: tuple[float, float]
    rmse_wins: tuple[int, int, int]  # a better, b better, tie
    d_ssim: float  # mean of ssim_a - ssim_b (positive: a is better)
    d_ssim_ci: tuple[float, float]
    ssim_wins: tuple[int, int, int]


def pair_stats(ev: EvalFolder, a: str, b: str) -> PairStats | None:
    ra, rb = ev.rows_of(a), ev.rows_of(b)
    shared = sorted(i for i in set(ra) & set(rb)
                    if all(math.isfinite(v) for v in (ra[i].rmse, rb[i].rmse, ra[i].ssim, rb[i].ssim)))
    if not shared:
        return None
    d_rmse = np.array([ra[i].rmse - rb[i].rmse for i in shared])
    d_ssim = np.array([ra[i].ssim - rb[i].ssim for i in shared])
    return PairStats(
        a, b, len(shared),
        float(d_rmse.mean()), mean_ci(d_rmse), (int((d_rmse < 0).sum()), int((d_rmse > 0).sum()), int((d_rmse == 0).sum())),
        float(d_ssim.mean()), mean_ci(d_ssim), (int((d_ssim > 0).sum()), int((d_ssim < 0).sum()), int((d_ssim == 0).sum())),
    )


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
        if self.dir.exists():
            shutil.rmtree(self.dir)  # the folder belongs to the report; stale thumbnails must not linger
        self.dir.mkdir(parents=True)
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
        path = self.ev.runs_dir / model / "images" / self.samples[image_id].output_relpath
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
    """Box plot plus jittered points of per-image rmse and ssim, one column per model."""
    from matplotlib.figure import Figure  # Figure + savefig uses the Agg canvas; no pyplot global state

    fig = Figure(figsize=(max(7.0, 2.2 + 1.6 * len(ev.models)), 3.8), dpi=100, layout="constrained")
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    for ax, metric, better in zip(fig.subplots(1, 2), ("rmse", "ssim"), ("lower", "higher")):
        data = [np.array([getattr(r, metric) for r in ev.rows_of(m).values() if math.isfinite(getattr(r, metric))])
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


# ---------------------------------------------------------------------------------------------- html

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; margin: 0.5em 0 1.2em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; vertical-align: top; }
th { background: #f2f2f2; } td.l, th.l { text-align: left; }
.ci { color: #666; font-size: 0.85em; } .sig { font-weight: bold; }
.note { background: #fff6d5; border-left: 4px solid #e0b000; padding: 0.3em 0.8em; }
.grid td, .grid th { text-align: center; font-size: 0.8em; } .grid img { display: block; margin: auto; }
.missing { color: #a00; }
"""


def _fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}"


def _ci(ci: tuple[float, float], digits: int = 4, *, mark_zero: bool = False) -> str:
    cls = "ci sig" if mark_zero and (ci[0] > 0 or ci[1] < 0) else "ci"
    return f'<span class="{cls}">[{_fmt(ci[0], digits)}, {_fmt(ci[1], digits)}]</span>'


def _fid_cell(entry: dict, key: str, digits: int) -> str:
    value = entry.get(key)
    if isinstance(value, (int, float)) and math.isfinite(value):
        text = _fmt(float(value), digits)
        std = entry.get(f"{key}_std")
        if isinstance(std, (int, float)) and math.isfinite(std):
            text += f' <span class="ci">± {_fmt(float(std), digits)}</span>'
        return text
    reason = entry.get("fid_note") or "Inception weights were not given (see the eval log)"
    return f'<span class="missing" title="{esc(reason)}">missing</span>'


def _summary_section(ev: EvalFolder, stats: dict[str, ModelStats]) -> list[str]:
    by_model = {e.get("model"): e for e in ev.summary if isinstance(e, dict)}
    out = ["<h2>Summary</h2>",
           "<p>rmse: pooled over all hole pixels (lower is better); ssim: mean over holes (higher is better). "
           f"Brackets: bootstrap 95% interval, {N_RESAMPLES} resamples of images, seed {BOOTSTRAP_SEED}.</p>",
           "<table><tr><th class=l>model</th><th>images</th><th>holes</th><th>rmse</th><th>ssim</th>"
           "<th>fid</th><th>kid</th><th>fid crops</th></tr>"]
    reasons = set()
    for m in ev.models:
        entry, st = by_model.get(m, {}), stats.get(m)
        rmse = entry.get("rmse", st.rmse if st else None)
        ssim = entry.get("ssim", st.ssim if st else None)
        for key in ("fid", "kid"):
            if not isinstance(entry.get(key), (int, float)):
                reasons.add(entry.get("fid_note") or "Inception weights were not given (see the eval log)")
        out.append(
            f"<tr><td class=l>{esc(m)}</td><td>{esc(entry.get('n_images', st.n_images if st else '–'))}</td>"
            f"<td>{esc(entry.get('n_holes', '–'))}</td>"
            f"<td>{_fmt(rmse)} {_ci(st.rmse_ci) if st else ''}</td>"
            f"<td>{_fmt(ssim)} {_ci(st.ssim_ci) if st else ''}</td>"
            f"<td>{_fid_cell(entry, 'fid', 2)}</td><td>{_fid_cell(entry, 'kid', 4)}</td>"
            f"<td>{esc(entry.get('n_fid_crops', '–'))}</td></tr>")
    out.append("</table>")
    for reason in sorted(reasons):
        out.append(f'<p class="note">fid/kid missing: {esc(reason)}</p>')
    return out


def _pairs_section(ev: EvalFolder) -> list[str]:
    pairs = [p for i, a in enumerate(ev.models) for b in ev.models[i + 1:] if (p := pair_stats(ev, a, b))]
    if not pairs:
        return []
    out = ["<h2>Paired differences</h2>",
           "<p>On the images both models scored: mean per-image difference A − B with a bootstrap 95% interval "
           "(bold when it excludes 0), and how many images each model wins. rmse: negative favours A; "
           "ssim: positive favours A.</p>",
           "<table><tr><th class=l>A</th><th class=l>B</th><th>images</th><th>Δ rmse</th>"
           "<th>rmse wins A / B / tie</th><th>Δ ssim</th><th>ssim wins A / B / tie</th></tr>"]
    for p in pairs:
        out.append(
            f"<tr><td class=l>{esc(p.a)}</td><td class=l>{esc(p.b)}</td><td>{p.n}</td>"
            f"<td>{_fmt(p.d_rmse)} {_ci(p.d_rmse_ci, mark_zero=True)}</td><td>{' / '.join(map(str, p.rmse_wins))}</td>"
            f"<td>{_fmt(p.d_ssim)} {_ci(p.d_ssim_ci, mark_zero=True)}</td><td>{' / '.join(map(str, p.ssim_wins))}</td></tr>")
    out.append("</table>")
    return out


def _labels_section(ev: EvalFolder) -> list[str]:
    labels = sorted({r.label for r in ev.rows})
    if len(labels) < 2:
        return []
    out = ["<h2>Per label</h2>", "<p>rmse pooled over hole pixels / ssim mean over holes, per label.</p>",
           "<table><tr><th class=l>label</th>" + "".join(f"<th>{esc(m)}</th>" for m in ev.models) + "</tr>"]
    for label in labels:
        cells = []
        for m in ev.models:
            rows, rmse, ssim, pixels, holes = _arrays([r for r in ev.rows if r.model == m and r.label == label],
                                                      ev.has_pixel_counts)
            cells.append(f"<td>{_fmt(pooled_rmse(rmse, pixels))} / {_fmt(ssim_mean(ssim, holes))} "
                         f'<span class="ci">(n={len(rows)})</span></td>' if rows else "<td>–</td>")
        out.append(f"<tr><td class=l>{esc(label or '(none)')}</td>{''.join(cells)}</tr>")
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
               "Under each output: that image's rmse / ssim.</p>")
    out.append('<table class="grid"><tr><th class=l>image</th><th>masked input</th>'
               + "".join(f"<th>{esc(m)}</th>" for m in ev.models) + "<th>ground truth</th></tr>")
    per_model = {m: ev.rows_of(m) for m in ev.models}
    for image_id in image_ids:
        row = [f"<td class=l>{esc(image_id)}</td>", f"<td>{_img(cells.input(image_id), f'{image_id} masked input')}</td>"]
        for m in ev.models:
            r = per_model[m].get(image_id)
            caption = f"{_fmt(r.rmse)} / {_fmt(r.ssim)}" if r else "not scored"
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
        rows = sorted((r for r in ev.rows_of(m).values() if math.isfinite(r.rmse) and r.image in cells.samples),
                      key=lambda r: -r.rmse)[:n_worst]
        if not rows:
            continue
        out.append(f"<h3>{esc(m)}</h3>")
        out.append('<table class="grid"><tr><th class=l>image</th><th>rmse</th><th>ssim</th><th>masked input</th>'
                   f"<th>{esc(m)}</th><th>ground truth</th></tr>")
        for r in rows:
            out.append(
                f"<tr><td class=l>{esc(r.image)}</td><td>{_fmt(r.rmse)}</td><td>{_fmt(r.ssim)}</td>"
                f"<td>{_img(cells.input(r.image), f'{r.image} masked input')}</td>"
                f"<td>{_img(cells.output(r.image, m), f'{r.image} {m}')}</td>"
                f"<td>{_img(cells.truth(r.image), f'{r.image} ground truth')}</td></tr>")
        out.append("</table>")
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
    scored = sorted({r.image for r in ev.rows} & set(samples or {}))

    # 4. The page
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>diffinpaint report: {esc(eval_dir.name)}</title><style>{CSS}</style></head><body>",
             f"<h1>diffinpaint evaluation: {esc(eval_dir.name)}</h1>",
             f"<p>Eval folder <code>{esc(eval_dir.resolve())}</code>; dataset <code>{esc(data or '–')}</code>; "
             f"models: {esc(', '.join(ev.models))}.</p>"]
    parts += [f'<p class="note">{esc(n)}</p>' for n in ev.notes]
    parts += _summary_section(ev, stats)
    parts += _pairs_section(ev)
    parts += _labels_section(ev)
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
