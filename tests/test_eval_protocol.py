"""The eval protocol a paper can cite: leakage refused, --out guarded, one model in memory at a time, seeds,
whole-image metrics (LaMa / CoModGAN) with features computed once, LaMa's area bins, and the Kaggle export."""
from __future__ import annotations

import csv
import html
import json
import math
import shutil
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from diffinpaint.cli import main
from diffinpaint.data import load_dataset
from diffinpaint.data.demo import make_demo_dataset
from diffinpaint.evaluation import fid as fidlib
from diffinpaint.evaluation.columns import (BIN_NAMES, PER_BIN_COLUMNS, PER_BIN_SET, PER_IMAGE, area_bin,
                                           per_bin_table)
from diffinpaint.models import MODELS
from diffinpaint.models.classical import TeleaModel
from diffinpaint.training.data import training_set_record
from fid_weights import write_random_inception_weights

SK = dict(channel_axis=-1, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)


# ---------------------------------------------------------------------------------------------- test models


class Counting(TeleaModel):
    """Seeded noise in the holes; counts how many instances are alive while any of them runs."""

    name = "count_a"
    deterministic = False  # stands in for a seeded model (Telea itself runs once)
    live = 0
    most_alive_while_running = 0
    calls: list[str] = []

    def __init__(self, settings=None, device="cpu"):
        super().__init__(settings, device)
        Counting.live += 1

    def __del__(self):
        Counting.live -= 1

    def inpaint(self, images, masks, *, seeds, labels):
        Counting.most_alive_while_running = max(Counting.most_alive_while_running, Counting.live)
        Counting.calls.append(self.name)
        return torch.stack([torch.rand(image.shape, generator=torch.Generator().manual_seed(seed))
                            for image, seed in zip(images, seeds)])


class CountingB(Counting):
    name = "count_b"


class Leaky(TeleaModel):
    """Telea that says it was trained on `Leaky.record` (a training_set.json), as trained models do."""

    name = "leaky"
    record: Path | None = None

    @property
    def training_set_path(self):
        return Leaky.record


MODELS.update({"count_a": "test_eval_protocol:Counting", "count_b": "test_eval_protocol:CountingB",
               "leaky": "test_eval_protocol:Leaky"})


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def eval_cli(*args, out: Path, data: Path) -> int:
    return main(["eval", "--data", str(data), "--out", str(out), "--no-progress", "--no-fid", "--no-text",
                 *map(str, args)])


# ---------------------------------------------------------------------------------------------- leakage


def test_a_model_trained_on_the_evaluated_images_is_refused_with_the_fix(demo_small, tmp_path, capsys):
    Leaky.record = tmp_path / "training_set.json"
    samples = load_dataset(demo_small).samples
    Leaky.record.write_text(json.dumps(training_set_record(samples[:4])))
    out = tmp_path / "ev"
    assert eval_cli("--models", "telea,leaky", out=out, data=demo_small) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning: ")]
    assert len(err) == 1 and err[0].startswith("error: ")
    assert "leaky was trained on 4 of the 9 images" in err[0] and "diffinpaint data split" in err[0]
    assert "--allow-in-sample" in err[0]
    assert not out.exists()  # refused before any run


def test_allow_in_sample_runs_and_marks_the_rows(demo_small, tmp_path, capsys):
    Leaky.record = tmp_path / "training_set.json"
    samples = load_dataset(demo_small).samples
    # a re-saved copy under another name is the same photo: found by pixels, not names
    renamed = [s for s in samples[:3]]
    record = training_set_record(renamed)
    for entry in record["images"]:
        entry["image"] = "elsewhere/" + entry["image"].replace("/", "_")
    Leaky.record.write_text(json.dumps(record))
    out = tmp_path / "ev"
    assert eval_cli("--models", "telea,leaky", "--allow-in-sample", out=out, data=demo_small) == 0
    summary = {r["model"]: r for r in json.loads((out / "summary.json").read_text())}
    assert summary["leaky"]["in_sample"] is True and summary["leaky"]["n_train_overlap"] == 3
    assert summary["leaky"]["training_set"] == "checked"
    assert summary["telea"]["in_sample"] is None and summary["telea"]["training_set"] == "not trained"
    page = (out / "report.html").read_text(encoding="utf-8")
    assert 'class="banner"' in page and "leaky was scored on 3 image(s) it was trained on" in page
    assert "leaky*" in capsys.readouterr().out  # the printed table flags it too


def test_a_checkpoint_without_a_training_set_record_warns_and_runs(demo_small, tmp_path, capsys):
    Leaky.record = None
    out = tmp_path / "ev"
    assert eval_cli("--models", "leaky", "--no-report", out=out, data=demo_small) == 0
    err = capsys.readouterr().err
    assert err.count("leaky: its training folder has no training_set.json") == 1
    row = json.loads((out / "summary.json").read_text())[0]
    assert row["in_sample"] is None and row["training_set"] == "no record"


def test_real_pix2pix_trained_on_a_split_passes_and_on_everything_is_refused(demo_medium, tmp_path, capsys):
    """The whole workflow: split, train on TRAIN, eval on TEST; the same checkpoint on all images is refused."""
    from diffinpaint.models import trainable_class
    from diffinpaint.training.trainer import train_from_options

    assert main(["data", "split", str(demo_medium), "--test-fraction", "0.3", "--seed", "0", "--out-train",
                 str(tmp_path / "train"), "--out-test", str(tmp_path / "test")]) == 0
    ckpt = tmp_path / "ckpt"
    train_from_options("pix2pix", {"data": str(tmp_path / "train"), "out": str(ckpt), "device": "cpu", "steps": 2,
                                   "checkpoint_every": 2, "sample_every": 2, "keep_checkpoints": 0,
                                   **trainable_class("pix2pix").tiny})
    args = ["--models", "pix2pix", "--pix2pix-checkpoint", ckpt, "--no-report"]
    assert eval_cli(*args, out=tmp_path / "ev", data=tmp_path / "test") == 0
    row = json.loads((tmp_path / "ev" / "summary.json").read_text())[0]
    assert row["in_sample"] is False and row["n_train_overlap"] == 0 and row["training_set"] == "checked"
    capsys.readouterr()
    assert eval_cli(*args, out=tmp_path / "ev2", data=demo_medium) == 2
    n_train = len(load_dataset(tmp_path / "train").samples)
    assert f"pix2pix was trained on {n_train} of the 18 images" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- --out


def test_out_that_eval_did_not_write_is_refused_untouched(demo_small, tmp_path, capsys):
    mine = tmp_path / "mine"
    (mine / "report_assets").mkdir(parents=True)
    for name in ("config.toml", "summary.csv", "report.html", "per_image.csv"):
        (mine / name).write_text(f"my own {name}")
    (mine / "report_assets" / "figure.png").write_bytes(b"precious")
    before = tree(mine)
    assert eval_cli("--models", "telea", out=mine, data=demo_small) == 2
    assert "did not write" in capsys.readouterr().err
    assert tree(mine) == before


def test_an_eval_folder_is_marked_and_may_be_reused(demo_small, tmp_path):
    out = tmp_path / "ev"
    assert eval_cli("--models", "telea", "--no-report", out=out, data=demo_small) == 0
    assert json.loads((out / ".diffinpaint-eval").read_text())["format"] == "diffinpaint-eval"
    assert eval_cli("--models", "telea,ns", "--no-report", out=out, data=demo_small) == 0  # reuses runs/telea
    assert [r["model"] for r in json.loads((out / "summary.json").read_text())] == ["telea", "ns"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert eval_cli("--models", "telea", "--no-report", out=empty, data=demo_small) == 0


def test_a_file_as_out_is_refused(demo_small, tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    assert eval_cli("--models", "telea", out=target, data=demo_small) == 2
    assert "is a file" in capsys.readouterr().err and target.read_text() == "mine"


# ---------------------------------------------------------------------------------------------- one at a time


def test_models_are_built_run_and_freed_one_at_a_time(demo_small, tmp_path):
    Counting.live, Counting.most_alive_while_running, Counting.calls = 0, 0, []
    assert eval_cli("--models", "count_a,count_b", "--no-report", out=tmp_path / "ev", data=demo_small) == 0
    assert set(Counting.calls) == {"count_a", "count_b"}
    assert Counting.most_alive_while_running == 1  # never two models in memory while one runs
    assert Counting.live == 0


def test_every_model_is_checked_before_the_first_run(demo_small, tmp_path, capsys):
    Counting.calls = []
    # pix2pix without a checkpoint: its construction fails; count_a, named first, must not have run
    assert eval_cli("--models", "count_a,pix2pix", out=tmp_path / "ev", data=demo_small) == 2
    assert "--pix2pix-checkpoint" in capsys.readouterr().err
    assert Counting.calls == [] and not (tmp_path / "ev").exists()


# ---------------------------------------------------------------------------------------------- seeds


def test_seeds_run_every_model_once_per_seed_and_report_the_spread(demo_small, tmp_path):
    out = tmp_path / "ev"
    assert eval_cli("--models", "count_a,telea", "--seeds", "0,1,2", out=out, data=demo_small) == 0
    runs = out / "runs"
    assert sorted(p.name for p in (runs / "count_a").iterdir()) == ["seed_0", "seed_1", "seed_2"]
    assert (runs / "telea" / "config.toml").is_file()  # deterministic: one run, in runs/<model>
    per_image = pd.read_csv(out / "per_image.csv")
    assert sorted(per_image[per_image["model"] == "count_a"]["seed"].unique()) == [0, 1, 2]
    assert list(per_image[per_image["model"] == "telea"]["seed"].unique()) == [0]
    summary = {r["model"]: r for r in json.loads((out / "summary.json").read_text())}
    rows = per_image[per_image["model"] == "count_a"]
    per_seed = []
    for seed in (0, 1, 2):
        mine = rows[rows["seed"] == seed]
        per_seed.append(math.sqrt((mine["rmse"] ** 2 * mine["n_hole_pixels"]).sum() / mine["n_hole_pixels"].sum()))
    assert summary["count_a"]["rmse"] == pytest.approx(np.mean(per_seed), rel=1e-12)
    assert summary["count_a"]["rmse_seed_sd"] == pytest.approx(np.std(per_seed, ddof=1), rel=1e-9)
    assert summary["count_a"]["rmse_seed_sd"] > 0 and summary["count_a"]["n_seeds"] == 3
    assert summary["telea"]["n_seeds"] == 1 and summary["telea"]["deterministic"] is True
    assert summary["telea"]["rmse_seed_sd"] is None
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "seeds ±" in page and "(3 seeds)" in page and "(deterministic: one run)" in page


def test_a_deterministic_trained_model_runs_once_whatever_the_seeds(demo_small, tmp_path):
    """Pix2Pix's fill does not depend on the seed (its predictor says so): eval --seeds 0,1 runs it once."""
    from diffinpaint.models import trainable_class
    from diffinpaint.training.trainer import train_from_options

    ckpt = tmp_path / "p2p"
    train_from_options("pix2pix", {"data": str(demo_small), "out": str(ckpt), "device": "cpu", "steps": 1,
                                   **trainable_class("pix2pix").tiny})
    out = tmp_path / "ev"
    assert eval_cli("--models", "pix2pix", "--pix2pix-checkpoint", ckpt, "--seeds", "0,1", "--allow-in-sample",
                    "--no-report", out=out, data=demo_small) == 0
    summary = json.loads((out / "summary.json").read_text())[0]
    assert summary["deterministic"] is True and summary["n_seeds"] == 1
    assert (out / "runs" / "pix2pix" / "config.toml").is_file() and not (out / "runs" / "pix2pix" / "seed_1").exists()


@pytest.mark.parametrize("argv,message", [(["--seeds", "0,1,0"], "given twice"), (["--seeds", "a,b"], "whole numbers"),
                                          (["--seeds", "1,2", "--seed", "3"], "pass one of them")])
def test_bad_seeds_are_refused(demo_small, tmp_path, capsys, argv, message):
    assert eval_cli("--models", "telea", *argv, out=tmp_path / "ev", data=demo_small) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "ev").exists()


# ---------------------------------------------------------------------------------------------- all metrics


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(1)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), root / "alexnet-owt-7be5be79.pth")
    return write_random_inception_weights(root / fidlib.WEIGHTS_NAMES[0]), root / "alexnet-owt-7be5be79.pth"


@pytest.fixture(scope="module")
def full_eval(tmp_path_factory, weights):
    """6 photos of 48 px with one hole each: 16 px in the first five (11% of the image), 32 px in the last (44%), so
    two of LaMa's area bins hold images; telea (deterministic) and count_a over seeds 0,1, every metric on.
    Counts the items Inception sees (Inception is the slow part on a CPU: ~0.3 s per item)."""
    root = tmp_path_factory.mktemp("full")
    data = make_demo_dataset(root / "data", size=48, crops_per_photo=1, holes=1, hole_size=16, seed=3)
    keep = [s.image_id for s in load_dataset(data).samples][:6]
    for path in (data / "images").rglob("*.png"):
        if path.relative_to(data / "images").as_posix() not in keep:
            path.unlink()
    rows = (data / "masks.csv").read_text().splitlines()
    # the dataset's last image gets a 32 px hole: alone in the 40-50% bin
    kept = [r if r.split(",")[0] != keep[-1] else f"{keep[-1]},8,8,32,32" for r in rows[1:] if r.split(",")[0] in keep]
    (data / "masks.csv").write_text("\n".join([rows[0]] + kept) + "\n")
    seen = []
    original = fidlib.InceptionFeatures.__call__

    def counting(self, crops):
        seen.append(len(crops))
        return original(self, crops)

    with mock.patch.object(fidlib.InceptionFeatures, "__call__", counting):
        assert main(["eval", "--no-text", "--models", "telea,count_a", "--seeds", "0,1", "--data", str(data), "--out",
                     str(root / "ev"), "--fid-weights", str(weights[0]), "--lpips-weights", str(weights[1]),
                     "--cache-dir", str(root / "cache"), "--no-progress"]) == 0
    return data, root / "ev", sum(seen)


def test_inception_sees_each_image_and_crop_once(full_eval):
    data, out, items = full_eval
    n = len(load_dataset(data).samples)
    # ground truth (whole + crop) once, then whole + crop per run: telea once, count_a twice
    assert items == 2 * n * (1 + 1 + 2)


def test_whole_image_metrics_match_skimage_per_image(full_eval):
    data, out, _ = full_eval
    per_image = pd.read_csv(out / "per_image.csv")
    for sample in load_dataset(data).samples:
        gt = sample.load_image()
        for (model, seed), run in [(("telea", 0), out / "runs" / "telea"),
                                   (("count_a", 1), out / "runs" / "count_a" / "seed_1")]:
            pred = np.asarray(Image.open(run / "images" / sample.output_relpath))
            row = per_image[(per_image["model"] == model) & (per_image["seed"] == seed)
                            & (per_image["image"] == sample.image_id)].iloc[0]
            assert row["psnr_full"] == pytest.approx(peak_signal_noise_ratio(gt, pred), abs=1e-9)
            assert row["ssim_full"] == pytest.approx(structural_similarity(gt / 255.0, pred / 255.0, **SK), abs=1e-4)
            _, full = structural_similarity(gt / 255.0, pred / 255.0, full=True, **SK)
            (x, y, w, h), = sample.boxes
            assert row["ssim"] == pytest.approx(full[y:y + h, x:x + w].mean(), abs=1e-4)
            assert row["hole_fraction"] == pytest.approx(w * h / gt.shape[0] / gt.shape[1])


def test_lpips_columns_match_torchmetrics_on_the_same_weights(full_eval, weights):
    from torchmetrics.functional.image import lpips as tm_lpips
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    data, out, _ = full_eval

    def features(net, pretrained=False):  # torchmetrics' backbone, filled from the same weights file
        alexnet = torchvision.models.alexnet(weights=None)
        alexnet.load_state_dict(torch.load(weights[1], weights_only=True))
        return alexnet.features

    with mock.patch.object(tm_lpips, "_get_tv_model_features", features):
        reference = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True)
    per_image = pd.read_csv(out / "per_image.csv")
    for sample in load_dataset(data).samples[:4]:
        gt = sample.load_image()
        pred = np.asarray(Image.open(out / "runs" / "telea" / "images" / sample.output_relpath))
        row = per_image[(per_image["model"] == "telea") & (per_image["image"] == sample.image_id)].iloc[0]
        as_tensor = lambda a: torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float() / 255.0  # noqa: E731
        reference.reset()
        reference.update(as_tensor(pred), as_tensor(gt))
        assert row["lpips_full"] == pytest.approx(reference.compute().item(), abs=1e-5)
        (x, y, w, h), = sample.boxes
        crop = lambda a: torch.nn.functional.interpolate(  # noqa: E731  (16 px holes: stretched to 32, the rule)
            as_tensor(a[y:y + h, x:x + w]), size=(32, 32), mode="bilinear", align_corners=False)
        reference.reset()
        reference.update(crop(pred), crop(gt))
        assert row["lpips"] == pytest.approx(reference.compute().item(), abs=1e-5)


def test_summary_has_every_whole_image_and_set_metric(full_eval):
    _, out, _ = full_eval
    summary = {r["model"]: r for r in json.loads((out / "summary.json").read_text())}
    for model in ("telea", "count_a"):
        row = summary[model]
        for key in ("rmse", "ssim", "ssim_crop", "lpips", "fid", "kid", "psnr_full", "ssim_full", "lpips_full",
                    "fid_full", "kid_full", "pids", "uids"):
            assert isinstance(row[key], float) and math.isfinite(row[key]), (model, key)
        assert 0.0 <= row["pids"] <= 1.0 and 0.0 <= row["uids"] <= 0.5 + 1e-9
        assert row["kid_std"] > 0  # subsets of n/2: they differ, so the spread is real
        assert row["n_fid_crops"] == 6 and row["n_fid_images"] == 6
    assert summary["count_a"]["fid_full_seed_sd"] is not None and summary["telea"]["fid_full_seed_sd"] is None
    header = (out / "summary.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["model", "n_images", "n_holes"] and "pids" in header and "in_sample" in header
    per_image_header = (out / "per_image.csv").read_text().splitlines()[0]
    assert per_image_header.startswith("model,image,rmse,ssim,ssim_crop,lpips,psnr_full,ssim_full,lpips_full,label")


def test_per_bin_has_lamas_ten_bins_per_model(full_eval):
    _, out, _ = full_eval
    bins = pd.read_csv(out / "per_bin.csv")
    assert list(bins.columns[:3]) == ["model", "bin", "n_images"]
    assert list(bins[bins["model"] == "telea"]["bin"]) == BIN_NAMES
    per_image = pd.read_csv(out / "per_image.csv")
    telea = per_image[per_image["model"] == "telea"]
    index = area_bin(float(telea["hole_fraction"].iloc[0]))  # 16²/48² = 11%: the 10-20% bin
    row = bins[(bins["model"] == "telea") & (bins["bin"] == BIN_NAMES[index])].iloc[0]
    assert BIN_NAMES[index] == "10-20%" and row["n_images"] == len(telea) - 1  # the last image: 32²/48², 40-50%
    assert row["psnr_full"] == pytest.approx(telea["psnr_full"].iloc[:-1].mean(), rel=1e-12)
    # the per-image columns are those recomputed from per_image.csv alone (the FID/KID columns come after them)
    recomputed = per_bin_table(per_image, ["telea", "count_a"])
    columns = ["model", "bin", "n_images", *PER_IMAGE]
    assert list(bins.columns) == PER_BIN_COLUMNS and bins.columns[-5:].tolist() == ["n_fid_crops", *PER_BIN_SET]
    pd.testing.assert_frame_equal(bins[columns], recomputed[columns].astype({c: float for c in PER_IMAGE}),
                                  check_dtype=False, rtol=1e-12)


def _features_of(net, samples, folder: Path | None):
    """(whole, crops) Inception features of the originals (folder None) or of a run's outputs, as eval holds them
    (float32)."""
    images = [s.load_image() if folder is None else np.asarray(Image.open(folder / s.output_relpath))
              for s in samples]
    whole = net(images).float().numpy()
    crops = net([c for image, s in zip(images, samples) for c in fidlib.hole_crops(image, s.boxes, None)])
    return whole, crops.float().numpy()


@pytest.fixture(scope="module")
def full_eval_features(full_eval, weights):
    """The outputs' Inception features recomputed apart from eval (telea; count_a seeds 0 and 1) and the originals'
    as eval cached them."""
    data, out, _ = full_eval
    samples = load_dataset(data).samples
    net = fidlib.InceptionFeatures(weights[0])
    cache, = out.parent.joinpath("cache").glob("gt-*.safetensors")
    cached = fidlib.load_cached(cache)
    real = cached["whole"].numpy(), cached["crops"].numpy(), cached["crop_image"].numpy()
    fakes = {("telea", 0): _features_of(net, samples, out / "runs" / "telea" / "images"),
             **{("count_a", s): _features_of(net, samples, out / "runs" / "count_a" / f"seed_{s}" / "images")
                for s in (0, 1)}}
    return samples, real, fakes


def test_per_bin_fid_and_kid_are_those_of_each_bins_images(full_eval, full_eval_features):
    """per_bin.csv's fid/kid (hole crops) and fid_full/kid_full (whole images) of the 10-20% bin equal the module's
    FID/KID on the features of that bin's five images only (originals from the cache, outputs recomputed here), per
    seed then averaged; the 40-50% bin holds one image: null, with its count, in per_bin.csv and in the report."""
    from diffinpaint.evaluation.columns import PER_BIN_NOTE
    from diffinpaint.evaluation.evaluate import inception_distances

    _, out, _ = full_eval
    samples, (real_whole, real_crops, crop_image), fakes = full_eval_features
    assert len(real_crops) == len(samples) and (crop_image == np.arange(len(samples))).all()  # one hole per image
    assert [s.boxes[0][2] for s in samples] == [16] * 5 + [32]
    bins = pd.read_csv(out / "per_bin.csv")
    five = np.arange(5)
    for model, seeds in (("telea", [0]), ("count_a", [0, 1])):
        row = bins[(bins["model"] == model) & (bins["bin"] == "10-20%")].iloc[0]
        assert row["n_images"] == 5 and row["n_fid_crops"] == 5
        per_seed = [inception_distances(fakes[(model, s)][0][five], fakes[(model, s)][1][five], real_whole[five],
                                        real_crops[five], five) for s in seeds]
        assert per_seed[0]["fid"] == pytest.approx(fidlib.frechet_distance(
            torch.from_numpy(fakes[(model, seeds[0])][1][five]).double(), torch.from_numpy(real_crops[five]).double()))
        for metric in ("fid", "kid", "fid_full", "kid_full"):
            expected = np.mean([s[metric] for s in per_seed])
            assert row[metric] == pytest.approx(expected, rel=1e-3, abs=1e-6), (model, metric)
        lone = bins[(bins["model"] == model) & (bins["bin"] == "40-50%")].iloc[0]
        assert lone["n_images"] == 1 and lone[["fid", "kid", "fid_full", "kid_full"]].isna().all()
        assert bins[(bins["model"] == model) & (bins["n_images"] == 0)][["fid", "kid"]].isna().all().all()
    page = (out / "report.html").read_text(encoding="utf-8")
    assert html.escape(PER_BIN_NOTE, quote=True) in page and ">too few</span>" in page
    telea = bins[(bins["model"] == "telea") & (bins["bin"] == "10-20%")].iloc[0]
    assert f"<td>{telea['fid']:.2f}</td>" in page


def test_set_metric_intervals_over_seeds_use_every_seed(full_eval, full_eval_features):
    """count_a's summary intervals are those of its two seeds' average on shared resamples of the images, not its
    first seed's; telea (one run) keeps its own interval. Recomputed from the features (outputs recomputed here)."""
    from diffinpaint.evaluation.evaluate import seed_intervals, set_metrics

    _, out, _ = full_eval
    _, real, fakes = full_eval_features
    summary = {r["model"]: r for r in json.loads((out / "summary.json").read_text())}
    scores = {key: set_metrics(whole, crops, real[0], real[1], real[2]) for key, (whole, crops) in fakes.items()}
    both = seed_intervals([scores[("count_a", 0)], scores[("count_a", 1)]])
    for model, expected in (("count_a", both), ("telea", seed_intervals([scores[("telea", 0)]]))):
        for name in ("fid", "kid", "fid_full", "kid_full"):
            for end in ("low", "high"):
                key = f"{name}_ci_{end}"
                assert summary[model][key] == pytest.approx(expected[key], rel=1e-3, abs=1e-6), (model, key)
        assert summary[model]["pids_ci_low"] is not None and summary[model]["uids_ci_high"] is not None
    first_only = scores[("count_a", 0)]
    assert any(both[k] != pytest.approx(first_only[k], rel=1e-3) for k in ("fid_full_ci_low", "fid_full_ci_high"))
    page = (out / "report.html").read_text(encoding="utf-8")
    low, high = summary["count_a"]["fid_full_ci_low"], summary["count_a"]["fid_full_ci_high"]
    assert f"[{low:.2f}, {high:.2f}]" in page and "each resample takes the same images from every seed" in page


def test_pids_uids_follow_comodgans_definition():
    rng = np.random.default_rng(0)
    real = rng.normal(0, 1, (60, 8))
    far = real + 5.0  # fakes the SVM separates perfectly: no fake looks more real than its pair
    pids, uids, _ = fidlib.inception_discriminative_scores(torch.from_numpy(real), torch.from_numpy(far))
    assert pids == 0.0 and uids == 0.0
    same = rng.normal(0, 1, (60, 8))  # indistinguishable fakes: the SVM errs often, fakes beat their pair often
    pids, uids, _ = fidlib.inception_discriminative_scores(torch.from_numpy(real), torch.from_numpy(same))
    assert 0.2 < pids < 0.8 and 0.15 < uids <= 0.5
    # the formula, written out as co-mod-gan's metrics/inception_discriminative_score.py does it
    from sklearn.svm import LinearSVC

    svm = LinearSVC(dual=False).fit(np.concatenate([real, same]), np.array([1] * 60 + [0] * 60))
    assert uids == pytest.approx(1 - svm.score(np.concatenate([real, same]), np.array([1] * 60 + [0] * 60)))
    assert pids == pytest.approx(np.mean(svm.decision_function(same) > svm.decision_function(real)))


def test_missing_lpips_weights_leave_lpips_null_with_one_warning(demo_small, tmp_path, capsys):
    assert eval_cli("--models", "telea", "--no-report", out=tmp_path / "ev", data=demo_small) == 0
    assert capsys.readouterr().err.count("warning: LPIPS missing") == 1
    row = json.loads((tmp_path / "ev" / "summary.json").read_text())[0]
    assert row["lpips"] is None and row["lpips_full"] is None and row["lpips_note"]
    assert row["psnr_full"] > 0 and 0 < row["ssim_full"] <= 1


@pytest.mark.parametrize("what", ["inception", "vgg", "pickle"])
def test_wrong_lpips_weights_are_refused_before_any_run(demo_small, tmp_path, capsys, what):
    path = tmp_path / "w.pth"
    if what == "inception":
        write_random_inception_weights(path)
    elif what == "vgg":
        state = {f"features.{i}.weight": torch.zeros(3) for i in (0, 3, 6, 8, 10)}
        state.update({f"features.{i}.bias": torch.zeros(3) for i in (0, 3, 6, 8, 10)})
        torch.save(state, path)
    else:
        import pickle

        path.write_bytes(pickle.dumps({"x": print}))
    assert eval_cli("--models", "telea", "--lpips-weights", path, out=tmp_path / "ev", data=demo_small) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--lpips-weights" in err[0] and "alexnet-owt-7be5be79.pth" in err[0]
    assert not (tmp_path / "ev" / "runs").exists()


# ---------------------------------------------------------------------------------------------- export


def test_kaggle_export_writes_every_hole_value_in_order(demo_small, tmp_path):
    run = tmp_path / "run"
    assert main(["run", "--model", "telea", "--data", str(demo_small), "--out", str(run), "--no-progress"]) == 0
    out = tmp_path / "sub" / "submission.csv"
    assert main(["export", "kaggle", str(run), "--data", str(demo_small), "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "id,value"
    dataset = load_dataset(demo_small)
    assert len(lines) - 1 == sum(w * h * 3 for s in dataset.samples for *_, w, h in s.boxes)
    values = dict(line.split(",") for line in lines[1:])
    sample = dataset.samples[2]
    pred = np.asarray(Image.open(run / "images" / sample.output_relpath))
    stem = sample.image_id.rsplit(".", 1)[0]
    x, y, w, h = sample.boxes[1]
    for r, c, k in [(0, 0, 0), (0, 0, 2), (0, 1, 0), (3, 5, 1), (h - 1, w - 1, 2)]:
        expected = pred[y + r, x + c, k] / 255.0
        assert float(values[f"{stem}_1_{(r * w + c) * 3 + k}"]) == pytest.approx(expected, abs=5e-7)
    assert f"{stem}_2_0" not in values and f"{stem}_1_{w * h * 3}" not in values
    assert main(["export", "kaggle", str(run), "--data", str(demo_small), "--out", str(out)]) == 0  # re-export ok


@pytest.mark.parametrize("case", ["missing-output", "other-size", "free-form", "other-inputs", "foreign-file"])
def test_kaggle_export_refuses_a_run_that_does_not_match(demo_small, tmp_path, capsys, case):
    data = tmp_path / "data"
    shutil.copytree(demo_small, data)
    run = tmp_path / "run"
    assert main(["run", "--model", "telea", "--data", str(data), "--out", str(run), "--no-progress"]) == 0
    out = tmp_path / "submission.csv"
    first = load_dataset(data).samples[0]
    expected = {"missing-output": "lacks outputs for 1 of 9", "other-size": "is 32x32 but",
                "free-form": "needs masks.csv", "other-inputs": "another image or other holes",
                "foreign-file": "not a Kaggle export"}[case]
    if case == "missing-output":
        (run / "images" / first.output_relpath).unlink()
    elif case == "other-size":
        Image.new("RGB", (32, 32)).save(run / "images" / first.output_relpath)
    elif case == "free-form":
        assert main(["data", "masks", "--data", str(data), "--protocol", "thin", "--replace"]) == 0
    elif case == "other-inputs":
        lines = (data / "masks.csv").read_text().splitlines()
        image, x, y, w, h = lines[1].split(",")
        lines[1] = ",".join([image, "0", "0", w, h])
        (data / "masks.csv").write_text("\n".join(lines) + "\n")
    else:
        out.write_text("my notes\n")
    before = out.read_bytes() if out.exists() else None
    assert main(["export", "kaggle", str(run), "--data", str(data), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[-1]
    assert (out.read_bytes() if out.exists() else None) == before
    assert not list(tmp_path.glob(".submission.csv.tmp-*"))


def test_per_image_and_summary_tables_are_written_with_pandas(demo_small, tmp_path):
    """Empty cells for missing values, full float precision, one row per model and image."""
    out = tmp_path / "ev"
    assert eval_cli("--models", "telea", "--no-report", out=out, data=demo_small) == 0
    text = (out / "per_image.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    assert len(rows) == 9 and rows[0]["lpips"] == "" and len(rows[0]["rmse"]) > 10
    assert float(rows[0]["rmse"]) == float(repr(float(rows[0]["rmse"])))
