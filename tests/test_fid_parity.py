"""eval's Inception metrics against torch-fidelity itself, end to end: the same image folders and weights file give
the same FID, for whole composited images (fid_full) and for hole crops written out as images (fid); and
torch-fidelity's KID is ours in unpaired mode on the same features (eval's paired KID differs on purpose: its subsets
never put an image and its own output on opposite sides)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from diffinpaint.cli import main
from diffinpaint.data import load_dataset
from diffinpaint.data.demo import make_demo_dataset
from diffinpaint.evaluation import fid as fidlib
from fid_weights import calibrated_inception_weights

RTOL = 1e-3


def torch_fidelity_metrics(input1, input2, weights, **metrics):
    import torch_fidelity

    return torch_fidelity.calculate_metrics(input1=str(input1), input2=str(input2),
                                            feature_extractor_weights_path=str(weights), samples_find_deep=True,
                                            cuda=False, cache=False, save_cpu_ram=True, verbose=False, **metrics)


def folder_images(folder):
    """The images torch-fidelity reads from a folder, in its order (sorted real paths, recursive)."""
    paths = sorted(p.resolve() for p in folder.rglob("*.png"))
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """9 photos (60×60, so the network's own resize to 299 matters), two 16×16 holes each, filled by telea."""
    root = tmp_path_factory.mktemp("parity")
    data = make_demo_dataset(root / "data", size=60, crops_per_photo=1, holes=2, hole_size=16, seed=5)
    weights = calibrated_inception_weights(root / fidlib.WEIGHTS_NAMES[0])
    out = root / "ev"
    assert main(["eval", "--no-text", "--models", "telea", "--data", str(data), "--out", str(out), "--fid-weights", str(weights),
                 "--cache-dir", str(root / "cache"), "--no-progress", "--no-report"]) == 0
    summary = json.loads((out / "summary.json").read_text())[0]
    return root, data, out / "runs" / "telea" / "images", weights, summary


def test_fid_full_equals_torch_fidelity_on_the_image_folders(evaluated):
    root, data, outputs, weights, summary = evaluated
    assert len(list(outputs.rglob("*.png"))) == len(list((data / "images").rglob("*.png"))) == 9
    theirs = torch_fidelity_metrics(outputs, data / "images", weights, fid=True, kid=True, kid_subset_size=4)
    print(f"\nfid_full: ours {summary['fid_full']!r}, torch-fidelity {theirs['frechet_inception_distance']!r}")
    assert summary["fid_full"] > 1  # informative features (see calibrated_inception_weights)
    assert summary["fid_full"] == pytest.approx(theirs["frechet_inception_distance"], rel=RTOL, abs=0)

    # KID: torch-fidelity's own subsets (independent draws) reproduced on our features of the same files
    net = fidlib.InceptionFeatures(weights)
    fake, real = net(folder_images(outputs)), net(folder_images(data / "images"))
    kid, std = fidlib.kernel_inception_distance(fake, real, paired=False)
    print(f"kid (unpaired mode): ours {kid!r} ± {std!r}, torch-fidelity "
          f"{theirs['kernel_inception_distance_mean']!r} ± {theirs['kernel_inception_distance_std']!r}")
    assert std > 0
    assert kid == pytest.approx(theirs["kernel_inception_distance_mean"], rel=RTOL, abs=RTOL * std)
    assert std == pytest.approx(theirs["kernel_inception_distance_std"], rel=RTOL, abs=0)
    assert fidlib.frechet_distance(fake, real) == pytest.approx(summary["fid_full"], rel=1e-5, abs=0)


def test_hole_fid_equals_torch_fidelity_on_the_crops_as_images(evaluated):
    root, data, outputs, weights, summary = evaluated
    for side in ("real", "fake"):
        (root / f"crops_{side}").mkdir()
    for i, sample in enumerate(load_dataset(data).samples):
        real = sample.load_image()
        fake = np.asarray(Image.open(outputs / sample.output_relpath).convert("RGB"))
        for k, (x, y, w, h) in enumerate(sample.boxes):
            Image.fromarray(real[y : y + h, x : x + w]).save(root / "crops_real" / f"{i:03d}_{k}.png")
            Image.fromarray(fake[y : y + h, x : x + w]).save(root / "crops_fake" / f"{i:03d}_{k}.png")
    theirs = torch_fidelity_metrics(root / "crops_fake", root / "crops_real", weights, fid=True)
    print(f"\nfid (hole crops): ours {summary['fid']!r}, torch-fidelity {theirs['frechet_inception_distance']!r}")
    assert summary["n_fid_crops"] == 18
    assert summary["fid"] > 1
    assert summary["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=RTOL, abs=0)
