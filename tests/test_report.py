"""The HTML report over a tiny eval folder built here: structure, statistics, escaping, and a real render in
headless Chromium (no console errors, every image decodes, nothing fetched from the network)."""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import structural_similarity

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


def _ssim_holes(gt: np.ndarray, out: np.ndarray, boxes) -> list[float]:
    values = []
    for x, y, w, h in boxes:
        values.append(structural_similarity(gt[y:y + h, x:x + w] / 255.0, out[y:y + h, x:x + w] / 255.0,
                                            channel_axis=-1, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                            use_sample_covariance=False))
    return values


def build_eval(root: Path, *, pixel_counts: bool = True, fid: float | None = None) -> Path:
    """DATA/ (6 images, masks.csv) and EVAL/ (runs, per_image.csv, summary.json/csv, config.toml)."""
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
        sq_err, pixels, holes_ssim = 0.0, 0, []
        for sample in dataset.samples:
            gt, mask = sample.load_image(), sample.load_mask()
            noise = np.random.default_rng(zlib.crc32(sample.image_id.encode())).standard_normal(gt.shape)
            out = gt.copy()
            out[mask] = np.clip(gt.astype(np.float64) + NOISE[model] * noise, 0, 255).round().astype(np.uint8)[mask]
            dest = ev / "runs" / model / "images" / sample.output_relpath
            dest.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(out).save(dest)
            err = (out[mask].astype(np.float64) - gt[mask]) / 255.0
            ssims = _ssim_holes(gt, out, sample.boxes)
            row = {"model": model, "image": sample.image_id, "label": sample.label, "n_holes": len(sample.boxes),
                   "rmse": math.sqrt(np.mean(err**2)), "ssim": float(np.mean(ssims))}
            if pixel_counts:
                row["n_hole_pixels"] = int(mask.sum())
            per_image.append(row)
            sq_err, pixels, holes_ssim = sq_err + np.sum(err**2), pixels + err.size, holes_ssim + ssims
        summary.append({"model": model, "n_images": len(dataset.samples), "n_holes": len(holes_ssim),
                        "rmse": math.sqrt(sq_err / pixels), "ssim": float(np.mean(holes_ssim)),
                        "fid": fid, "kid": None if fid is None else fid / 100, "kid_std": None if fid is None else 0.001,
                        "n_fid_crops": len(holes_ssim)})
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
                                    f'runs_dir = {json.dumps(str(ev / "runs"))}\n')
    return ev


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])


def img_srcs(page: Path) -> list[str]:
    parser = _Images()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.srcs


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
    assert len(srcs) == 1 + 6 * 4 + 2 * 3 * 3
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
    assert len(img_srcs(ev_dir / "report.html")) == 1 + 2 * 4 + 2 * 3


def test_missing_output_and_missing_dataset_still_give_a_page(tmp_path):
    ev_dir = build_eval(tmp_path)
    (ev_dir / "runs" / "ns" / "images" / "cats" / "a.png").unlink()
    text = report.write_report(ev_dir).read_text(encoding="utf-8")
    assert text.count("output missing") >= 1
    shutil.rmtree(tmp_path / "data")
    text = report.write_report(ev_dir).read_text(encoding="utf-8")
    assert "could not be loaded" in text and "Per-image distributions" in text
    assert len(img_srcs(ev_dir / "report.html")) == 1
    assert sorted(p.name for p in (ev_dir / "report_assets").iterdir()) == ["distributions.png"]  # no stale files


def test_cli_prints_the_path(eval_dir, tmp_path, capsys):
    copy = shutil.copytree(eval_dir, tmp_path / "eval")  # the shared folder's page stays for the browser test
    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    assert report.main(parser.parse_args([str(copy), "--max-grid-images", "1", "--n-worst", "0"])) == 0
    assert capsys.readouterr().out.strip() == str(copy / "report.html")
    assert len(img_srcs(copy / "report.html")) == 1 + 4


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
