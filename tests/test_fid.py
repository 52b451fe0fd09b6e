"""FID/KID: the Fréchet distance against scipy, the whole feature pipeline against torch-fidelity + scipy."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from diffinpaint.evaluation import fid as fidlib
from diffinpaint.cli import main
from diffinpaint.data import load_dataset
from fid_weights import write_random_inception_weights


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
    _, std = fidlib.kernel_inception_distance(a, b)
    assert std > 1e-3
    with pytest.raises(ValueError, match="at least 4"):
        fidlib.kernel_inception_distance(a[:3], b[:3])


def test_kid_is_near_zero_for_the_same_distribution_and_positive_for_a_shift():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, (300, 16)), rng.normal(0, 1, (300, 16))
    same, _ = fidlib.kernel_inception_distance(torch.from_numpy(a), torch.from_numpy(b), subset_size=100)
    shifted, _ = fidlib.kernel_inception_distance(torch.from_numpy(a), torch.from_numpy(b + 1), subset_size=100)
    assert abs(same) < 0.05 < shifted


@pytest.fixture(scope="module")
def fid_data(tmp_path_factory):
    """9 real photos, one 16×16 hole each: few crops, because Inception runs at ~10 crops/s on 2 cores."""
    from diffinpaint.data.demo import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("fid") / "data", size=48, crops_per_photo=1, holes=1,
                             hole_size=16, seed=3)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_random_inception_weights(tmp_path_factory.mktemp("w") / fidlib.WEIGHTS_NAMES[0])


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
    """Same weights file and crops: eval's FID = torch-fidelity's own extractor + the scipy formula."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    out = tmp_path / "ev"
    rc = main(["eval", "--models", "telea", "--data", str(fid_data), "--out", str(out), "--fid-weights",
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
                crop = Image.fromarray(image[y : y + h, x : x + w]).resize((299, 299), Image.BICUBIC)
                crops.append(np.asarray(crop))
        batch = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()
        with torch.no_grad():
            return reference_net(batch)[0].double().numpy()

    real = features(lambda s: s.load_image())
    fake = features(lambda s: np.asarray(Image.open(out / "runs" / "telea" / "images" / s.output_relpath)))
    assert summary["n_fid_crops"] == len(fake) == len(dataset.samples)
    assert summary["fid"] == pytest.approx(scipy_frechet(fake, real), rel=1e-4, abs=1e-6)
    # whole images (LaMa's fid): the same pipeline on the composited output, no crop
    real_full = features(lambda s: s.load_image(), whole=True)
    fake_full = features(lambda s: np.asarray(Image.open(out / "runs" / "telea" / "images" / s.output_relpath)),
                         whole=True)
    # (the formula is held to scipy above; one 2048-d sqrtm per test is slow enough)
    assert summary["fid_full"] == pytest.approx(
        fidlib.frechet_distance(torch.from_numpy(fake_full), torch.from_numpy(real_full)), rel=1e-4, abs=1e-6)
    assert summary["kid"] is not None and np.isfinite(summary["kid"])
    # the ground-truth features were cached once, under a key naming the weights
    assert len(list((tmp_path / "cache").glob("gt-*.safetensors"))) == 1


def test_fid_batch_size_does_not_change_features(fid_data, weights):
    dataset = load_dataset(fid_data)
    crops = [c for s in dataset.samples[:3] for c in fidlib.hole_crops(s.load_image(), s.boxes, None)]
    one = fidlib.InceptionFeatures(weights, batch_size=1)(crops)
    many = fidlib.InceptionFeatures(weights, batch_size=3)(crops)
    assert torch.allclose(one, many, rtol=1e-4, atol=1e-5)


def test_without_weights_fid_is_missing_with_one_warning_and_the_rest_runs(demo_small, tmp_path, capsys):
    rc = main(["eval", "--models", "ns", "--data", str(demo_small), "--out", str(tmp_path / "ev"),
               "--no-progress", "--no-report"])
    assert rc == 0
    err = capsys.readouterr().err
    assert err.count("warning: FID/KID missing") == 1
    import json

    row = json.loads((tmp_path / "ev" / "summary.json").read_text())[0]
    assert row["fid"] is None and row["kid"] is None and row["rmse"] > 0 and 0 < row["ssim"] < 1
