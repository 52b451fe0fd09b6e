"""FID/KID/P-IDS: the Fréchet distance against scipy, paired KID's bias, the bootstrap's resampled statistics against
the same statistics on explicitly repeated rows, and eval's feature pipeline against torch-fidelity's extractor +
scipy (tests/test_fid_parity.py holds eval to torch_fidelity.calculate_metrics itself)."""
from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import torch
from PIL import Image

from diffinpaint.evaluation import fid as fidlib
from diffinpaint.cli import main
from diffinpaint.data import load_dataset
from fid_weights import calibrated_inception_weights


def scipy_frechet(f1: np.ndarray, f2: np.ndarray) -> float:
    """The textbook formula with scipy.linalg.sqrtm (pytorch-fid's reference computation)."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("dim,n", [(8, 500), (32, 200), (64, 20)])  # the last: fewer samples than dimensions
def test_frechet_distance_matches_scipy_on_gaussians(dim, n):
    rng = np.random.default_rng(dim)
    a = rng.normal(0, 1, (n, dim))
    mixing = rng.normal(0, 0.3, (dim, dim)) + np.eye(dim)
    b = rng.normal(0.5, 1, (n, dim)) @ mixing
    mine = fidlib.frechet_distance(torch.from_numpy(a), torch.from_numpy(b))
    assert mine == pytest.approx(scipy_frechet(a, b), rel=1e-6)
    assert fidlib.frechet_distance(torch.from_numpy(a), torch.from_numpy(a)) == pytest.approx(0, abs=1e-8)


def test_kid_subsets_hold_half_the_set_so_their_spread_is_real():
    """Subsets as large as the set all hold the same points (std ~0, meaningless); n/2 makes them differ."""
    rng = np.random.default_rng(1)
    a, b = torch.from_numpy(rng.normal(0, 1, (40, 16))), torch.from_numpy(rng.normal(0.3, 1, (40, 16)))
    assert fidlib.kid_subset_size(40) == 20 and fidlib.kid_subset_size(5000) == 1000
    assert fidlib.kid_subset_size(40, largest_group=3) == 19
    assert fidlib.kid_subset_size(6, largest_group=2) == 0  # a side could hold both crops of one image only
    with pytest.raises(ValueError, match="at least 4"):
        fidlib.kernel_inception_distance(a[:6], b[:6], groups=np.repeat(np.arange(3), 2))
    _, std = fidlib.kernel_inception_distance(a, b)
    assert std > 1e-3
    with pytest.raises(ValueError, match="at least 4"):
        fidlib.kernel_inception_distance(a[:3], b[:3])
    with pytest.raises(ValueError, match="one fake row per real row"):
        fidlib.kernel_inception_distance(a, b[:30])


def _paired(n=400, dim=32, noise=0.05, seed=0):
    """Features of n originals and of near-copies (an inpainting that barely changed them): row i = image i."""
    rng = np.random.default_rng(seed)
    real = rng.normal(0, 1, (n, dim))
    return real, real + rng.normal(0, noise, (n, dim))


def test_paired_kid_of_near_copies_is_zero_within_its_spread():
    """Each subset draws its real and fake side from disjoint images, so no image meets its own near-copy in the
    cross term: KID sits at 0. Independent draws from each side (torch-fidelity's, for unpaired sets) let those pairs
    in and push KID far below 0; that is what the disjoint draw fixes."""
    real, fake = _paired()
    kid, std = fidlib.kernel_inception_distance(real, fake)
    assert abs(kid) <= 3 * std and std > 0
    unpaired_kid, unpaired_std = fidlib.kernel_inception_distance(real, fake, paired=False)
    assert unpaired_kid < -3 * unpaired_std


def test_kid_of_unpaired_sets_from_one_distribution_is_zero_within_its_spread():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 1, (400, 32)), rng.normal(0, 1, (400, 32))
    for paired in (True, False):
        kid, std = fidlib.kernel_inception_distance(a, b, paired=paired)
        assert abs(kid) <= 3 * std


def test_kid_is_clearly_positive_for_different_distributions():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, (300, 16)), rng.normal(0, 1, (300, 16))
    same, _ = fidlib.kernel_inception_distance(torch.from_numpy(a), torch.from_numpy(b), subset_size=100)
    shifted, std = fidlib.kernel_inception_distance(torch.from_numpy(a), torch.from_numpy(b + 1), subset_size=100)
    assert abs(same) < 0.05 < shifted and shifted > 10 * std


def test_kid_subsets_never_split_an_image_between_the_two_sides():
    groups = np.repeat(np.arange(30), [1, 2, 3] * 10)  # 60 crops of 30 images, 1-3 crops each
    size = fidlib.kid_subset_size(len(groups), largest_group=3)
    rng = np.random.RandomState(0)
    for _ in range(50):
        real, fake = fidlib._disjoint_split(rng, len(groups), size, groups)
        assert len(real) == len(fake) == size
        assert not set(groups[real]) & set(groups[fake])


def _brute_paired_u_statistic(real, fake, counts, groups):
    """The mean over ordered pairs of rows from different images of the repeated set of
    h = k(r_i,r_j) + k(f_i,f_j) - k(r_i,f_j) - k(r_j,f_i)."""
    idx = np.repeat(np.arange(len(real)), counts)
    r, f, g = real[idx], fake[idx], groups[idx]
    k = lambda x, y: (x @ y.T / x.shape[1] + 1) ** 3  # noqa: E731
    h = k(r, r) + k(f, f) - k(r, f) - k(r, f).T
    other = g[:, None] != g[None, :]
    return h[other].mean()


def test_resampled_kid_is_the_u_statistic_of_the_repeated_rows():
    real, fake = _paired(n=40, dim=8, noise=0.5)
    groups = np.repeat(np.arange(20), 2)
    counts = fidlib.bootstrap_counts(20, 3)[:, groups]
    mine = fidlib.kid_resampled(real, fake, counts, groups, block=7)
    for row, value in zip(counts, mine):
        assert value == pytest.approx(_brute_paired_u_statistic(real, fake, row, groups), rel=1e-10)
    # and on all rows it is what the subset average estimates
    everything = fidlib.kid_resampled(real, fake + 0.3, np.ones((1, 40)), groups)[0]
    kid, std = fidlib.kernel_inception_distance(real, fake + 0.3, groups=groups, subsets=2000)
    assert everything == pytest.approx(kid, abs=4 * std / 2000**0.5)


@pytest.mark.parametrize("n,dim", [(30, 64), (200, 16)])  # Gram route (rows < dim) and covariance route
def test_weighted_frechet_distance_is_fid_of_the_repeated_rows(n, dim):
    rng = np.random.default_rng(n)
    a = rng.normal(0, 1, (n, dim))
    b = rng.normal(0.3, 1.2, (n, dim))
    for counts in fidlib.bootstrap_counts(n, 3):
        idx = np.repeat(np.arange(n), counts)
        mine = fidlib.weighted_frechet_distance(torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(counts))
        assert mine == pytest.approx(fidlib.frechet_distance(torch.from_numpy(a[idx]), torch.from_numpy(b[idx])),
                                     rel=1e-8)


def test_weighted_ids_is_ids_of_the_repeated_rows():
    rng = np.random.default_rng(4)
    real = rng.normal(0, 1, (60, 6))
    fake = real + rng.normal(0.4, 1, (60, 6))
    counts = fidlib.bootstrap_counts(60, 1)[0]
    idx = np.repeat(np.arange(60), counts)
    weighted = fidlib.inception_discriminative_scores(torch.from_numpy(real), torch.from_numpy(fake), counts)
    repeated = fidlib.inception_discriminative_scores(torch.from_numpy(real[idx]), torch.from_numpy(fake[idx]))
    assert weighted[:2] == pytest.approx(repeated[:2], abs=1e-9)


def test_bootstrap_draws_are_the_reports():
    from diffinpaint.evaluation.report import bootstrap

    counts = fidlib.bootstrap_counts(7, 300)
    drawn = bootstrap(lambda idx: np.stack([np.bincount(i, minlength=7) for i in idx]), 7, n_resamples=300)
    assert (counts == drawn).all()


def test_set_metric_intervals_resample_images_with_their_crops():
    rng = np.random.default_rng(5)
    n = 60
    real_whole = rng.normal(0, 1, (n, 24))
    fake_whole = real_whole + rng.normal(0.5, 1, (n, 24))
    crop_image = np.repeat(np.arange(n), 2)
    real_crops = rng.normal(0, 1, (2 * n, 24))
    fake_crops = real_crops + rng.normal(0.5, 1, (2 * n, 24))
    estimates = {"kid": fidlib.kernel_inception_distance(real_crops, fake_crops, groups=crop_image)[0],
                 "kid_full": fidlib.kernel_inception_distance(real_whole, fake_whole)[0],
                 "fid": fidlib.frechet_distance(torch.from_numpy(fake_crops), torch.from_numpy(real_crops)),
                 "fid_full": fidlib.frechet_distance(torch.from_numpy(fake_whole), torch.from_numpy(real_whole))}
    ci = fidlib.set_metric_intervals(real_whole, fake_whole, real_crops, fake_crops, crop_image,
                                     estimates=estimates, n_resamples=100, n_resamples_ids=10)
    assert set(ci) == set(fidlib.CI_METRICS)
    for name in ("kid", "kid_full"):  # centred on the reported subset average
        assert ci[name][0] < estimates[name] < ci[name][1]
    for name in ("fid", "fid_full"):  # resamples hold ~63% distinct images, so FID's bias pushes them up
        assert ci[name][0] < ci[name][1] and ci[name][1] > estimates[name]
    assert 0 <= ci["pids"][0] <= ci["pids"][1] <= 1 and 0 <= ci["uids"][0] <= ci["uids"][1] <= 1
    few = fidlib.set_metric_intervals(real_whole, fake_whole, real_crops, fake_crops, crop_image,
                                      metrics=["fid_full", "pids", "uids"], n_resamples=5, ids_max_images=10)
    assert set(few) == {"fid_full", "pids", "uids"} and few["pids"] is None and few["uids"] is None


def test_cache_key_names_the_protocol(monkeypatch):
    key = fidlib.feature_cache_key("w", "d")
    monkeypatch.setattr(fidlib, "PROTOCOL", "clean-fid")
    assert fidlib.feature_cache_key("w", "d") != key


@pytest.fixture(scope="module")
def fid_data(tmp_path_factory):
    """9 real photos, one 16×16 hole each: few crops, because Inception runs at ~10 crops/s on 2 cores."""
    from diffinpaint.data.demo import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("fid") / "data", size=48, crops_per_photo=1, holes=1,
                             hole_size=16, seed=3)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return calibrated_inception_weights(tmp_path_factory.mktemp("w") / fidlib.WEIGHTS_NAMES[0])


def test_weights_are_read_without_unpickling_objects(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"x": Evil()}, fh)
    with pytest.raises(ValueError, match="not a plain PyTorch state dict"):
        fidlib.InceptionFeatures(path)


def test_wrong_state_dict_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="not the FID Inception-v3 weights"):
        fidlib.InceptionFeatures(path)


def test_project_fid_equals_torch_fidelity_features_plus_scipy(fid_data, weights, tmp_path):
    """Same weights file and crops: eval's FID = torch-fidelity's own extractor (uint8 at the crop's own size) + the
    scipy formula; every set metric has its bootstrap interval; the ground truth's features are cached once."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    out = tmp_path / "ev"
    rc = main(["eval", "--no-text", "--models", "telea", "--data", str(fid_data), "--out", str(out), "--fid-weights",
               str(weights), "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--no-report"])
    assert rc == 0
    import json

    summary = json.loads((out / "summary.json").read_text())[0]

    reference_net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                                feature_extractor_weights_path=str(weights)).eval()
    dataset = load_dataset(fid_data)

    def features(load, whole=False):
        crops = []
        for s in dataset.samples:
            image = load(s)
            for x, y, w, h in [(0, 0, s.width, s.height)] if whole else s.boxes:
                crops.append(image[y : y + h, x : x + w])  # all one size here, so one batch
        batch = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()
        with torch.no_grad():
            return reference_net(batch)[0].double().numpy()

    real = features(lambda s: s.load_image())
    fake = features(lambda s: np.asarray(Image.open(out / "runs" / "telea" / "images" / s.output_relpath)))
    assert summary["n_fid_crops"] == len(fake) == len(dataset.samples)
    assert summary["fid"] > 1 and summary["fid_full"] > 1  # informative features
    assert summary["fid"] == pytest.approx(scipy_frechet(fake, real), rel=1e-4, abs=1e-6)
    # whole images (LaMa's fid): the same pipeline on the composited output, no crop
    real_full = features(lambda s: s.load_image(), whole=True)
    fake_full = features(lambda s: np.asarray(Image.open(out / "runs" / "telea" / "images" / s.output_relpath)),
                         whole=True)
    # (the formula is held to scipy above; one 2048-d sqrtm per test is slow enough)
    assert summary["fid_full"] == pytest.approx(
        fidlib.frechet_distance(torch.from_numpy(fake_full), torch.from_numpy(real_full)), rel=1e-4, abs=1e-6)
    assert summary["kid"] is not None and np.isfinite(summary["kid"])
    for name in fidlib.CI_METRICS:
        low, high = summary[f"{name}_ci_low"], summary[f"{name}_ci_high"]
        assert low <= high, name
    assert summary["kid_ci_low"] <= summary["kid"] <= summary["kid_ci_high"]
    header = (out / "summary.csv").read_text().splitlines()[0].split(",")
    assert {"fid_ci_low", "fid_ci_high", "kid_full_ci_low", "uids_ci_high"} <= set(header)
    # the ground-truth features were cached once, under a key naming the weights
    assert len(list((tmp_path / "cache").glob("gt-*.safetensors"))) == 1


def test_fid_batch_size_does_not_change_features(fid_data, weights):
    """Images of several sizes in one call: grouped by size, batched, put back in order; batch size is float noise."""
    dataset = load_dataset(fid_data)
    images = [s.load_image() for s in dataset.samples[:3]]
    mixed = [c for image, s in zip(images, dataset.samples) for c in [image, *fidlib.hole_crops(image, s.boxes, None)]]
    mixed.append(images[0][:20, :31])
    net = fidlib.InceptionFeatures(weights, batch_size=1)
    one = net(mixed)
    net.batch_size = 3
    many = net(mixed)
    assert torch.allclose(one, many, rtol=1e-4, atol=1e-5)
    assert torch.equal(net(mixed[-1:])[0], one[-1])  # alone, not mixed up with the others


def test_without_weights_fid_is_missing_with_one_warning_and_the_rest_runs(demo_small, tmp_path, capsys):
    rc = main(["eval", "--no-text", "--models", "ns", "--data", str(demo_small), "--out", str(tmp_path / "ev"),
               "--no-progress", "--no-report"])
    assert rc == 0
    err = capsys.readouterr().err
    assert err.count("warning: FID/KID missing") == 1
    import json

    row = json.loads((tmp_path / "ev" / "summary.json").read_text())[0]
    assert row["fid"] is None and row["kid"] is None and row["rmse"] > 0 and 0 < row["ssim"] < 1


# ---------------------------------------------------------------------------------------------- per bin, seeds


def _binned_rows(rng, seed, real_whole, real_crops, crop_image, fractions, shift):
    """One seed's scored rows as eval holds them (hole_fraction, Inception features in the private keys), fakes
    = originals + noise."""
    rows = []
    for i, fraction in enumerate(fractions):
        mine = crop_image == i
        rows.append({"model": "m", "image": f"img{i}", "seed": seed, "hole_fraction": fraction,
                     "_whole_features": real_whole[i] + rng.normal(shift, 1, real_whole.shape[1]),
                     "_crop_features": real_crops[mine] + rng.normal(shift, 1, (int(mine.sum()), real_crops.shape[1]))})
    return rows


def test_per_bin_fid_and_kid_are_those_of_the_bins_own_images():
    """Three bins: 12 images (1-2 crops each), 3 images (FID yes, KID no: subsets of 2 need 4 images), 1 image
    (neither). Each bin's value is the statistic on that bin's features only, per seed, averaged over the two seeds; FID also
    against scipy's sqrtm (an independent formula)."""
    from diffinpaint.evaluation.columns import BIN_NAMES, PER_BIN_SET, PER_IMAGE, per_bin_table
    from diffinpaint.evaluation.evaluate import per_bin_set_metrics

    rng = np.random.default_rng(11)
    dim = 5
    fractions = [0.05] * 12 + [0.45] * 3 + [0.95]
    counts = [1, 2] * 6 + [1, 1, 1, 1]
    crop_image = np.repeat(np.arange(len(fractions)), counts)
    real_whole, real_crops = rng.normal(0, 1, (len(fractions), dim)), rng.normal(0, 1, (len(crop_image), dim))
    rows = [r for seed, shift in ((0, 0.3), (1, 0.6))
            for r in _binned_rows(rng, seed, real_whole, real_crops, crop_image, fractions, shift)]
    rows = rows[::-1]  # the order rows arrive in must not matter
    order = {f"img{i}": i for i in range(len(fractions))}
    bins = per_bin_set_metrics(rows, (real_whole, real_crops, crop_image), order)

    def expected(images, metric):
        per_seed = []
        for seed in (0, 1):
            mine = sorted((r for r in rows if r["seed"] == seed and order[r["image"]] in images),
                          key=lambda r: order[r["image"]])
            crops = np.isin(crop_image, images)
            if metric.endswith("_full"):
                fake, real, groups = np.stack([r["_whole_features"] for r in mine]), real_whole[images], None
            else:
                fake, real = np.concatenate([r["_crop_features"] for r in mine]), real_crops[crops]
                groups = crop_image[crops]
            if metric.startswith("fid"):
                value = fidlib.frechet_distance(torch.from_numpy(fake), torch.from_numpy(real))
                if len(fake) > dim:  # a full-rank covariance: scipy's sqrtm is reliable there
                    assert value == pytest.approx(scipy_frechet(fake, real), rel=1e-6)
            else:
                value = fidlib.kernel_inception_distance(real, fake, groups=groups)[0]
            per_seed.append(value)
        return float(np.mean(per_seed))

    big, small, single = BIN_NAMES[0], BIN_NAMES[4], BIN_NAMES[9]
    for metric in PER_BIN_SET:
        assert bins[big][metric] == pytest.approx(expected(np.arange(12), metric), rel=1e-10), metric
    assert bins[big]["n_fid_crops"] == 18
    assert bins[small]["fid"] == pytest.approx(expected(np.arange(12, 15), "fid"), rel=1e-10)
    assert bins[small]["fid_full"] == pytest.approx(expected(np.arange(12, 15), "fid_full"), rel=1e-10)
    assert bins[small]["kid"] is None and bins[small]["kid_full"] is None  # 3 images: no KID, never a made-up one
    assert all(bins[single][m] is None for m in PER_BIN_SET) and bins[single]["n_fid_crops"] == 1
    assert all(bins[name][m] is None for name in BIN_NAMES[1:4] for m in PER_BIN_SET)

    # per_bin.csv: the per-image columns are those of the table without set metrics; the set columns come after
    frame = pd.DataFrame.from_records([{k: v for k, v in r.items() if not k.startswith("_")}
                                       | {"rmse": float(order[r["image"]]), "n_hole_pixels": 10, "n_holes": 1}
                                       for r in rows])
    plain, full = per_bin_table(frame, ["m"]), per_bin_table(frame, ["m"], {"m": bins})
    assert list(full.columns[-5:]) == ["n_fid_crops", *PER_BIN_SET]
    per_image_columns = ["model", "bin", "n_images", *PER_IMAGE]
    pd.testing.assert_frame_equal(full[per_image_columns], plain[per_image_columns])
    assert plain[PER_BIN_SET].isna().all().all()  # without features: empty, never zero
    assert full.loc[0, "n_images"] == 12 and full.loc[0, "fid"] == bins[big]["fid"]
    assert pd.isna(full.loc[4, "kid"]) and full.loc[4, "n_images"] == 3


def _seed_scores(rng, real_whole, real_crops, crop_image, shift):
    from diffinpaint.evaluation.evaluate import set_metrics

    fake_whole = real_whole + rng.normal(shift, 1, real_whole.shape)
    fake_crops = real_crops + rng.normal(shift, 1, real_crops.shape)
    return set_metrics(fake_whole, fake_crops, real_whole, real_crops, crop_image), fake_whole


def test_set_metric_intervals_with_several_seeds_are_those_of_the_seed_average():
    """One seed: the summary's interval is that seed's own (set_metric_intervals, unchanged). Two seeds: each
    resample draws the same images for both seeds and the two values are averaged, so changing only the second
    seed's outputs changes the interval."""
    from diffinpaint.evaluation.evaluate import seed_intervals

    rng = np.random.default_rng(3)
    n, dim = 24, 6
    real_whole, real_crops = rng.normal(0, 1, (n, dim)), rng.normal(0, 1, (2 * n, dim))
    crop_image = np.repeat(np.arange(n), 2)
    first, fake_whole_0 = _seed_scores(rng, real_whole, real_crops, crop_image, 0.2)
    second, fake_whole_1 = _seed_scores(rng, real_whole, real_crops, crop_image, 0.5)
    other, _ = _seed_scores(rng, real_whole, real_crops, crop_image, 0.9)
    fields = [f"{m}_ci_{end}" for m in fidlib.CI_METRICS for end in ("low", "high")]

    one = seed_intervals([first])
    assert all(one[k] == first[k] and one[k] is not None for k in fields)
    counts = torch.from_numpy(fidlib.bootstrap_counts(n, fidlib.N_RESAMPLES))
    alone = fidlib.resampled_frechet_distances(torch.from_numpy(fake_whole_0), torch.from_numpy(real_whole), counts)
    assert (first["fid_full_ci_low"], first["fid_full_ci_high"]) == pytest.approx(
        tuple(np.percentile(alone.numpy(), [2.5, 97.5])), rel=1e-12)

    two = seed_intervals([first, second])
    averaged = (fidlib.resampled_frechet_distances(torch.from_numpy(fake_whole_0), torch.from_numpy(real_whole), counts)
                + fidlib.resampled_frechet_distances(torch.from_numpy(fake_whole_1), torch.from_numpy(real_whole),
                                                     counts)).numpy() / 2
    low, high = np.percentile(averaged, [2.5, 97.5])
    assert (two["fid_full_ci_low"], two["fid_full_ci_high"]) == pytest.approx((low, high), rel=1e-12)
    for name in ("fid", "fid_full", "kid", "kid_full"):
        assert two[f"{name}_ci_low"] != first[f"{name}_ci_low"], name
    for name in ("kid", "kid_full"):  # placed around the reported value, now the mean over seeds
        assert two[f"{name}_ci_low"] < (first[name] + second[name]) / 2 < two[f"{name}_ci_high"]
    changed = seed_intervals([first, other])
    assert all(changed[k] != two[k] for k in fields if k.startswith(("fid", "kid")))
    assert all(two[k] is not None for k in fields)  # P-IDS/U-IDS too (up to 256 images: refit per resample)
    # a seed that could not compute the set metrics leaves the intervals null, not one seed's
    assert all(v is None for v in seed_intervals([first, {"fid": None}]).values())
