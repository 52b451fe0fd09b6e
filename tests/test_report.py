"""The HTML report over a tiny eval folder built here: structure, statistics, escaping, and a real render in
headless Chromium (no console errors, every image decodes, nothing fetched from the network)."""
from __future__ import annotations

import argparse
import csv
import html
import json
import math
import os
import shutil
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from diffinpaint.evaluation import report
from diffinpaint.data import load_dataset

try:  # tests/ is on sys.path under pytest's default import mode; a package layout needs the other spelling
    import render_check
except ImportError:
    from tests import render_check

MODELS = ["telea", "ns"]  # "ns" gets 3x the error of "telea" on every image, so it must lose everywhere
NOISE = {"telea": 12.0, "ns": 36.0}
WEIRD = "dogs/o'neil & <x>.png"  # a file name that breaks HTML unless escaped
IMAGES = {  # image id -> holes (x, y, w, h); the second hole of a.png overlaps nothing, c.png's touches the edge
    "cats/a.png": [(8, 8, 16, 16), (36, 30, 20, 14)],
    "cats/b.png": [(20, 20, 24, 24)],
    "cats/c.png": [(0, 40, 30, 24)],
    "dogs/d.png": [(30, 4, 14, 28)],
    "dogs/e.jpg": [(10, 30, 40, 16), (40, 4, 16, 16)],
    WEIRD: [(16, 16, 32, 32)],
}


def _photo(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A smooth colour field with a few discs: texture for SSIM, not noise."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack([np.sin(6 * xx + rng.uniform(0, 6)), np.cos(5 * yy + rng.uniform(0, 6)), xx * yy], -1)
    for _ in range(3):
        cx, cy, r = rng.uniform(0, 1, 2).tolist() + [rng.uniform(0.1, 0.25)]
        base[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] += rng.uniform(-1, 1, 3)
    base = (base - base.min()) / (base.max() - base.min())
    return (base * 255).astype(np.uint8)


SK = dict(channel_axis=-1, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)


def _ssim_holes(gt: np.ndarray, out: np.ndarray, boxes) -> tuple[list[float], list[float]]:
    """(ssim: the full-image map averaged over each hole, ssim_crop: SSIM of each hole crop alone)."""
    _, full = structural_similarity(gt / 255.0, out / 255.0, full=True, **SK)
    hole = [float(full[y:y + h, x:x + w].mean()) for x, y, w, h in boxes]
    crop = [structural_similarity(gt[y:y + h, x:x + w] / 255.0, out[y:y + h, x:x + w] / 255.0, **SK)
            for x, y, w, h in boxes]
    return hole, crop


def build_eval(root: Path, *, pixel_counts: bool = True, fid: float | None = None, seeds=(0,),
               in_sample: dict[str, int] | None = None) -> Path:
    """DATA/ (6 images, masks.csv) and EVAL/ (runs, per_image.csv, summary.json/csv, config.toml) in the format
    eval writes; every number computed here with numpy / skimage, independently of diffinpaint."""
    data, ev = root / "data", root / "eval"
    rng = np.random.default_rng(0)
    rows_csv = []
    for image_id, boxes in IMAGES.items():
        path = data / "images" / image_id
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_photo(rng)).save(path, quality=95)
        rows_csv += [[image_id, *box] for box in boxes]
    with open(data / "masks.csv", "w", newline="") as f:
        csv.writer(f).writerows([["image", "x", "y", "width", "height"], *rows_csv])

    dataset = load_dataset(data)
    per_image, summary = [], []
    for model in MODELS:
        per_seed = []
        for seed in seeds:
            sq_err, pixels, holes_ssim, psnrs = 0.0, 0, [], []
            for sample in dataset.samples:
                gt, mask = sample.load_image(), sample.load_mask()
                noise = np.random.default_rng([zlib.crc32(sample.image_id.encode()), seed]).standard_normal(gt.shape)
                out = gt.copy()
                out[mask] = np.clip(gt.astype(np.float64) + NOISE[model] * noise, 0, 255).round().astype(np.uint8)[mask]
                run = ev / "runs" / model if len(seeds) == 1 else ev / "runs" / model / f"seed_{seed}"
                dest = run / "images" / sample.output_relpath
                dest.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(out).save(dest)
                err = (out[mask].astype(np.float64) - gt[mask]) / 255.0
                hole, crop = _ssim_holes(gt, out, sample.boxes)
                psnr = peak_signal_noise_ratio(gt, out)
                row = {"model": model, "image": sample.image_id, "rmse": math.sqrt(np.mean(err**2)),
                       "ssim": float(np.mean(hole)), "ssim_crop": float(np.mean(crop)), "lpips": None,
                       "psnr_full": psnr, "ssim_full": structural_similarity(gt / 255.0, out / 255.0, **SK),
                       "lpips_full": None, "label": sample.label, "seed": seed, "n_holes": len(sample.boxes),
                       "hole_fraction": mask.mean()}
                if pixel_counts:
                    row["n_hole_pixels"] = int(mask.sum())
                per_image.append(row)
                sq_err, pixels, holes_ssim = sq_err + np.sum(err**2), pixels + err.size, holes_ssim + hole
                psnrs.append(psnr)
            per_seed.append({"rmse": math.sqrt(sq_err / pixels), "ssim": float(np.mean(holes_ssim)),
                             "psnr_full": float(np.mean(psnrs))})
        entry = {"model": model, "n_images": len(dataset.samples), "n_holes": len(holes_ssim),
                 "fid": fid, "kid": None if fid is None else fid / 100, "kid_std": None if fid is None else 0.001,
                 "fid_full": None if fid is None else fid / 2, "kid_full": None if fid is None else fid / 200,
                 "pids": None if fid is None else 0.1, "uids": None if fid is None else 0.2,
                 "n_fid_crops": len(holes_ssim), "n_seeds": len(seeds), "seeds": ",".join(map(str, seeds)),
                 "in_sample": bool(in_sample and model in in_sample),
                 "n_train_overlap": (in_sample or {}).get(model, 0)}
        for key in ("rmse", "ssim", "psnr_full"):
            values = [s[key] for s in per_seed]
            entry[key] = float(np.mean(values))
            entry[f"{key}_seed_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else None
        summary.append(entry)
    with open(ev / "per_image.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(per_image[0]))
        writer.writeheader()
        writer.writerows(per_image)
    (ev / "summary.json").write_text(json.dumps(summary))
    with open(ev / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(summary[0]))
        writer.writeheader()
        writer.writerows(summary)
    (ev / "config.toml").write_text(f'data = {json.dumps(str(data))}\nmodels = {json.dumps(MODELS)}\n'
                                    f'runs_dir = {json.dumps(str(ev / "runs"))}\nseeds = {json.dumps(list(seeds))}\n'
                                    + ("" if len(seeds) == 1 else "[run_dirs]\n" + "".join(
                                        f'{m} = {json.dumps([str(ev / "runs" / m / f"seed_{s}") for s in seeds])}\n'
                                        for m in MODELS)))
    return ev


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images: list[dict[str, str]] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))


def img_attributes(html: str) -> list[dict[str, str]]:
    """The attributes of every <img> of a page, in order."""
    parser = _Images()
    parser.feed(html)
    return parser.images


def img_srcs(page: Path) -> list[str]:
    return [image["src"] for image in img_attributes(page.read_text(encoding="utf-8"))]


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory) -> Path:
    return build_eval(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def page(eval_dir) -> Path:
    return report.write_report(eval_dir, n_worst=3)


# ---------------------------------------------------------------------------------------------- structure


def test_every_image_is_a_file_inside_the_eval_folder(page, eval_dir):
    from urllib.parse import unquote

    srcs = img_srcs(page)
    # 1 plot + grid (6 images x (input + 2 models + truth)); worst images reuse the grid's thumbnails
    assert len(srcs) == 2 + 6 * 4 + 2 * 3 * 3  # 2 plots: distributions, by hole area
    for src in srcs:
        if src.startswith("data:image/"):
            continue
        assert "://" not in src and not src.startswith("/"), src
        target = (eval_dir / unquote(src)).resolve()
        assert target.is_relative_to(eval_dir.resolve()) and target.is_file(), src
        with Image.open(target) as im:
            im.verify()
    text = page.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text and "<script" not in text


def test_summary_lists_each_model_with_intervals_around_the_estimate(page, eval_dir):
    text = page.read_text(encoding="utf-8")
    ev = report.read_eval_folder(eval_dir)
    summary = {e["model"]: e for e in json.loads((eval_dir / "summary.json").read_text())}
    for model in MODELS:
        assert f"<td class=l>{model}</td>" in text
        stats = report.model_stats(ev, model)
        # recomputed from per_image.csv with pixel weights == the pooled summary
        assert stats.rmse == pytest.approx(summary[model]["rmse"], rel=1e-12)
        assert stats.ssim == pytest.approx(summary[model]["ssim"], rel=1e-12)
        assert stats.rmse_ci[0] < stats.rmse < stats.rmse_ci[1]
        assert stats.ssim_ci[0] < stats.ssim < stats.ssim_ci[1]
        assert f"{summary[model]['rmse']:.4f} " in text and f"[{stats.rmse_ci[0]:.4f}, {stats.rmse_ci[1]:.4f}]" in text
    assert "missing" in text and "Inception weights were not given" in text


def test_summary_has_hole_and_whole_image_groups_with_arrows_and_the_best_in_bold(page, eval_dir):
    text = page.read_text(encoding="utf-8")
    summary = {e["model"]: e for e in json.loads((eval_dir / "summary.json").read_text())}
    assert ">hole only</th>" in text and ">whole image (the papers' protocols: see \"What each column is\")</th>" in text
    for header in ("rmse ↓", "ssim ↑", "ssim_crop ↑", "lpips ↓", "fid ↓", "psnr_full ↑", "ssim_full ↑",
                   "lpips_full ↓", "fid_full ↓", "pids ↑", "uids ↑"):
        assert f">{header}</th>" in text, header
    # telea has a third of ns's noise: it wins rmse (lower) and psnr_full (higher); the bold cell is telea's
    assert f'<td class="best">{summary["telea"]["rmse"]:.4f} ' in text
    assert f'<td class="best">{summary["ns"]["rmse"]:.4f} ' not in text
    assert f'<td class="best">{summary["telea"]["psnr_full"]:.2f} ' in text
    ev = report.read_eval_folder(eval_dir)
    stats = report.model_stats(ev, "telea")
    for name in ("ssim_crop", "psnr_full", "ssim_full"):  # every per-image metric gets its interval
        assert stats.cis[name][0] <= stats.values[name] <= stats.cis[name][1]
    assert stats.values["psnr_full"] == pytest.approx(summary["telea"]["psnr_full"], rel=1e-12)
    assert "lpips" not in stats.values  # no LPIPS weights: a missing column, not a zero
    assert "AlexNet weights were not given" in text
    assert 'class="banner"' not in text and 'class="flag"' not in text  # nobody is in-sample here


def test_in_sample_models_get_a_banner_and_a_flag(tmp_path):
    ev_dir = build_eval(tmp_path, in_sample={"ns": 3})
    text = report.write_report(ev_dir, max_grid_images=1, n_worst=0).read_text(encoding="utf-8")
    assert text.count('class="banner"') == 1 and "ns was scored on 3 image(s) it was trained on" in text
    assert "<td class=l>ns <span class=\"flag\">in-sample</span></td>" in text
    # the banner sits with the numbers: right under the Summary heading, before the table
    assert text.index("<h2>Summary</h2>") < text.index('class="banner"') < text.index('<table class="summary">')


def test_several_seeds_give_the_mean_and_the_spread_across_seeds(tmp_path):
    seeds = (0, 1, 2)
    ev_dir = build_eval(tmp_path, seeds=seeds)
    text = report.write_report(ev_dir, max_grid_images=2, n_worst=1).read_text(encoding="utf-8")
    summary = {e["model"]: e for e in json.loads((ev_dir / "summary.json").read_text())}
    ev = report.read_eval_folder(ev_dir)
    assert ev.seeds_of("telea") == list(seeds)
    for model in MODELS:
        stats = report.model_stats(ev, model)
        assert stats.rmse == pytest.approx(summary[model]["rmse"], rel=1e-12)  # mean over seeds of pooled rmse
        assert stats.ssim == pytest.approx(summary[model]["ssim"], rel=1e-12)
        assert stats.rmse_ci[0] < stats.rmse < stats.rmse_ci[1]
        assert f'seeds ± {summary[model]["rmse_seed_sd"]:.4f}' in text
        assert f"<td class=l>{model} <span class=\"ci\">(3 seeds)</span></td>" in text
    # the grid shows the first seed's outputs, from the run folders config.toml lists
    assert ev.run_dir("ns") == ev_dir / "runs" / "ns" / "seed_0"
    assert "output missing" not in text


def test_by_hole_area_plots_each_metric_in_lamas_bins(page, eval_dir):
    text = page.read_text(encoding="utf-8")
    assert "<h2>By hole area</h2>" in text and "by_area.png" in text
    ev = report.read_eval_folder(eval_dir)
    from diffinpaint.evaluation.columns import BIN_NAMES, per_bin_table

    bins = per_bin_table(ev.frame, ev.models)
    assert list(bins["bin"][:10]) == BIN_NAMES and BIN_NAMES[0] == "0-10%" and BIN_NAMES[-1] == "90-100%"
    assert bins[bins["model"] == "telea"]["n_images"].sum() == len(IMAGES)
    fractions = ev.frame[ev.frame["model"] == "telea"]["hole_fraction"]
    expected = np.bincount(np.minimum((fractions * 10).astype(int), 9), minlength=10)
    assert list(bins[bins["model"] == "telea"]["n_images"]) == list(expected)


def test_per_bin_fid_and_set_metric_intervals_come_from_eval_files(tmp_path):
    """FID/KID per bin need the Inception features, which only eval has: the page reads them from per_bin.csv, says
    what they rest on (the bias note), shows "too few" where eval left a bin's value empty, and puts summary.json's
    set-metric intervals next to fid/kid/pids. No per_bin.csv (the folder above): the plain image-count table."""
    from diffinpaint.evaluation.columns import PER_BIN_COLUMNS, PER_BIN_NOTE, per_bin_table

    ev_dir = build_eval(tmp_path, fid=12.5)
    ev = report.read_eval_folder(ev_dir)
    counts = per_bin_table(ev.frame, ev.models).set_index(["model", "bin"])["n_images"]
    values = {m: {b: ({"fid": 40.0 + i, "kid": 0.01 * i, "fid_full": 20.0 + i, "kid_full": 0.001 * i,
                       "n_fid_crops": int(n) + 1} if n >= 2 else {"n_fid_crops": int(n)})
                  for i, ((mm, b), n) in enumerate(counts.items()) if mm == m} for m in ev.models}
    (ev_dir / "per_bin.csv").write_text(per_bin_table(ev.frame, ev.models, values).to_csv(index=False),
                                        encoding="utf-8")
    assert report.read_bin_set_metrics(ev_dir)["ns"] == {b: {**{k: None for k in ("fid", "kid", "fid_full",
                                                                                   "kid_full")}, **v}
                                                         for b, v in values["ns"].items()}
    summary = json.loads((ev_dir / "summary.json").read_text())
    for entry in summary:
        entry.update(fid_ci_low=11.25, fid_ci_high=13.75, pids_ci_low=0.05, pids_ci_high=0.15)
    (ev_dir / "summary.json").write_text(json.dumps(summary))
    text = report.write_report(ev_dir, max_grid_images=1, n_worst=0).read_text(encoding="utf-8")
    assert list(pd.read_csv(ev_dir / "per_bin.csv").columns) == PER_BIN_COLUMNS
    assert html.escape(PER_BIN_NOTE, quote=True) in text
    assert "<th>images (crops)</th><th>fid ↓</th><th>kid ↓</th><th>fid_full ↓</th><th>kid_full ↓</th>" in text
    single = [b for (m, b), n in counts.items() if m == "telea" and n == 1]
    assert single and ">too few</span>" in text  # a bin of one image: no FID, never a number
    shown = [(b, v) for b, v in values["telea"].items() if "fid" in v]
    assert shown and f"<td>{shown[0][1]['fid']:.2f}</td>" in text
    assert "12.50 <span class=\"ci\">[11.25, 13.75]</span>" in text and "[0.050, 0.150]" in text


def test_the_report_deletes_only_its_own_assets(tmp_path):
    ev_dir = build_eval(tmp_path)
    (ev_dir / "report_assets").mkdir()
    (ev_dir / "report_assets" / "notes.txt").write_text("mine")
    (ev_dir / "report_assets" / "img9999.png").write_bytes(b"stale")
    report.write_report(ev_dir, max_grid_images=1, n_worst=0)
    names = {p.name for p in (ev_dir / "report_assets").iterdir()}
    assert "notes.txt" in names and "img9999.png" not in names


def test_paired_differences_see_a_model_that_is_worse_everywhere(eval_dir):
    ev = report.read_eval_folder(eval_dir)
    pair = report.pair_stats(ev, "telea", "ns")
    assert pair.n == len(IMAGES)
    assert pair.rmse_wins == (len(IMAGES), 0, 0)
    assert pair.d_rmse_ci[1] < 0  # telea better: the whole interval is below zero
    assert pair.d_ssim > 0 and sum(pair.ssim_wins) == len(IMAGES)
    reverse = report.pair_stats(ev, "ns", "telea")
    assert reverse.d_rmse == pytest.approx(-pair.d_rmse) and reverse.rmse_wins == (0, len(IMAGES), 0)


def test_bootstrap_is_deterministic_and_weights_pixels():
    rmse = np.array([0.1, 0.2, 0.4])
    pixels = np.array([100.0, 1.0, 1.0])
    assert report.pooled_rmse(rmse, pixels) == pytest.approx(math.sqrt((100 * 0.01 + 0.04 + 0.16) / 102))
    assert report.rmse_ci(rmse, pixels) == report.rmse_ci(rmse, pixels)
    lo, hi = report.mean_ci(np.full(10, 0.5))
    assert lo == hi == 0.5


def test_names_are_escaped(page):
    text = page.read_text(encoding="utf-8")
    assert "<x>" not in text and "o'neil" not in text
    assert "o&#x27;neil &amp; &lt;x&gt;.png" in text


def test_missing_pixel_counts_fall_back_to_equal_weights_and_say_so(tmp_path):
    ev_dir = build_eval(tmp_path, pixel_counts=False, fid=12.5)
    text = report.write_report(ev_dir, max_grid_images=2, n_worst=1).read_text(encoding="utf-8")
    assert "no n_hole_pixels column" in text
    assert "12.50" in text and "Inception weights were not given" not in text
    assert len(img_srcs(ev_dir / "report.html")) == 2 + 2 * 4 + 2 * 3


def test_missing_output_and_missing_dataset_still_give_a_page(tmp_path):
    ev_dir = build_eval(tmp_path)
    (ev_dir / "runs" / "ns" / "images" / "cats" / "a.png").unlink()
    text = report.write_report(ev_dir).read_text(encoding="utf-8")
    assert text.count("output missing") >= 1
    shutil.rmtree(tmp_path / "data")
    text = report.write_report(ev_dir).read_text(encoding="utf-8")
    assert "could not be loaded" in text and "Per-image distributions" in text
    assert len(img_srcs(ev_dir / "report.html")) == 2
    assert sorted(p.name for p in (ev_dir / "report_assets").iterdir()) == ["by_area.png", "distributions.png"]


def test_cli_prints_the_path(eval_dir, tmp_path, capsys):
    copy = shutil.copytree(eval_dir, tmp_path / "eval")  # the shared folder's page stays for the browser test
    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    assert report.main(parser.parse_args([str(copy), "--max-grid-images", "1", "--n-worst", "0"])) == 0
    assert capsys.readouterr().out.strip() == str(copy / "report.html")
    assert len(img_srcs(copy / "report.html")) == 2 + 4


def test_missing_or_broken_inputs_are_one_clear_error(tmp_path, eval_dir):
    with pytest.raises(ValueError, match="per_image.csv is missing"):
        report.write_report(tmp_path)
    copy = shutil.copytree(eval_dir, tmp_path / "eval")
    (copy / "summary.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot be parsed") as err:
        report.write_report(copy)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------- browser


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium; installed here when missing (CI runs as root)."""
    found = render_check.find_chromium()
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip("chromium is not installed and cannot be installed here (needs root and apt-get): "
                    "run `apt-get install -y chromium`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            pytest.skip(f"installing chromium failed ({' '.join(cmd)}): {done.stderr.strip()[-300:]}")
    found = render_check.find_chromium()
    if not found:
        pytest.skip("apt-get installed chromium but no binary was found on PATH")
    return found


def test_report_renders_in_chromium_without_errors(page, chromium):
    shots = Path(os.environ.get("REPORT_SCREENSHOT_DIR", Path(__file__).parent / "artifacts"))
    result = render_check.render(page, shots / "report.png", binary=chromium)
    assert result.errors == []
    assert len(result.images) == len(img_srcs(page)) and result.broken_images == []
    with Image.open(result.screenshot) as shot:
        assert shot.width >= 1000 and shot.height > 1500  # the whole page, not just the first screen


def test_render_check_catches_broken_images_and_console_errors(tmp_path, chromium):
    """The checker above can fail: a missing image, a script error and an outside request are all reported."""
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><img src="nope.png"><img src="http://192.0.2.1/x.png">'
                   '<script>console.error("boom"); undefined_fn();</script></body></html>')
    result = render_check.render(bad, binary=chromium)
    assert len(result.broken_images) == 2
    joined = "\n".join(result.errors)
    assert "console.error: boom" in joined and "undefined_fn" in joined and "http://192.0.2.1" in joined


def test_paired_differences_use_the_summary_statistic_and_agree_in_sign(demo_small, tmp_path):
    """The paired table compares the numbers the summary reports (pooled rmse, mean hole ssim, ...), so the sign of
    every difference agrees with the summary; floors are marked."""
    from diffinpaint.cli import main

    out = tmp_path / "ev"
    assert main(["eval", "--models", "grey,ring_mean,telea", "--data", str(demo_small), "--out", str(out),
                 "--no-fid", "--no-text", "--no-progress"]) == 0
    summary = {r["model"]: r for r in json.loads((out / "summary.json").read_text())}
    assert summary["grey"]["floor"] and summary["ring_mean"]["floor"] and not summary["telea"]["floor"]
    ev = report.read_eval_folder(out)
    pairs = report.pairs_table(ev)
    assert len(pairs) == 3
    for p in pairs:
        for name, d in p.diff.items():
            expected = summary[p.a][name] - summary[p.b][name]
            assert d == pytest.approx(expected, rel=1e-6, abs=1e-9), (p.a, p.b, name)
            lo, hi = p.ci[name]
            assert lo <= d <= hi
    page = (out / "report.html").read_text()
    assert "not corrected for multiplicity" in page and ">floor</span>" in page and "Floors (grey, ring_mean)" in page
