"""Demo data, mask generators and `data masks`, and free-form masks through eval."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from diffinpaint.cli import main
from diffinpaint.data import load_dataset
from diffinpaint.data.demo import make_demo_dataset
from diffinpaint.data.masks import box_mask, derive_seed, irregular_mask


def tree_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_demo_dataset_is_deterministic_real_and_in_the_kaggle_layout(tmp_path):
    a = make_demo_dataset(tmp_path / "a", size=64, crops_per_photo=2, hole_size=16)
    b = make_demo_dataset(tmp_path / "b", size=64, crops_per_photo=2, hole_size=16)
    assert tree_bytes(a) == tree_bytes(b)
    dataset = load_dataset(a)
    assert len(dataset.samples) == 18 and dataset.n_holes == 36
    assert {s.label for s in dataset.samples} >= {"cat", "astronaut", "coffee", "rocket"}
    assert all(len(s.boxes) == 2 and all(w == h == 16 for *_, w, h in s.boxes) for s in dataset.samples)
    pixels = np.stack([s.load_image() for s in dataset.samples])
    assert pixels.std() > 30  # real photos, not flat fills
    assert make_demo_dataset(tmp_path / "c", crops_per_photo=1).joinpath("masks.csv").is_file()


def test_demo_refuses_a_non_empty_folder(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    assert main(["data", "demo", "--out", str(tmp_path / "x")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"


def test_seeds_depend_on_seed_and_id_only():
    assert derive_seed(0, "cats/a.jpg") == derive_seed(0, "cats/a.jpg")
    assert derive_seed(0, "cats/a.jpg") != derive_seed(1, "cats/a.jpg")
    assert derive_seed(0, "cats/a.jpg") != derive_seed(0, "cats/b.jpg")
    assert 0 <= derive_seed(5, "x") < 2**31


def test_box_masks_have_the_asked_holes():
    mask = box_mask(256, 256, 2, 75, np.random.default_rng(0))
    assert 75 * 75 <= mask.sum() <= 2 * 75 * 75
    with pytest.raises(ValueError, match="does not fit"):
        box_mask(50, 50, 1, 75, np.random.default_rng(0))


def test_irregular_protocols_are_never_empty_nor_over_half():
    # LaMa's own means (thin 0.29 > thick 0.26 at 256 px, as LaMa's generator gives) are pinned in test_lama_masks
    for protocol in ("thin", "medium", "thick"):
        masks = [irregular_mask(256, 256, protocol, np.random.default_rng(seed)) for seed in range(30)]
        assert all(m.any() and m.mean() <= 0.5 for m in masks)
    with pytest.raises(ValueError, match="unknown mask protocol"):
        irregular_mask(64, 64, "huge", np.random.default_rng(0))


def test_data_masks_writes_a_valid_source_and_eval_scores_free_form_holes(demo_small, tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(demo_small, data)
    assert main(["data", "masks", "--data", str(data), "--protocol", "thick", "--seed", "3"]) == 2
    assert "--replace" in capsys.readouterr().err  # masks.csv is there: refused, nothing changed
    assert (data / "masks.csv").exists() and not (data / "masks").exists()
    assert main(["data", "masks", "--data", str(data), "--protocol", "medium", "--seed", "3", "--replace"]) == 0
    dataset = load_dataset(data)
    assert dataset.mask_source == "png" and not (data / "masks.csv").exists()
    first = Image.open(data / "masks" / dataset.samples[0].output_relpath)
    assert first.size == (64, 64) and set(np.unique(np.asarray(first))) <= {0, 255}
    assert main(["eval", "--models", "telea", "--data", str(data), "--out", str(tmp_path / "ev"), "--no-fid", "--no-text",
                 "--no-report", "--no-progress"]) == 0
    row = json.loads((tmp_path / "ev" / "summary.json").read_text())[0]
    assert row["n_holes"] == len(dataset.samples) and 0 < row["ssim"] < 1 and row["rmse"] > 0
    # box protocol back to masks.csv, with the asked count and size
    assert main(["data", "masks", "--data", str(data), "--protocol", "box", "--holes", "3", "--hole-size", "20",
                 "--replace"]) == 0
    assert load_dataset(data).n_holes == 3 * len(dataset.samples)


def test_data_check_prints_a_summary(demo_small, capsys):
    assert main(["data", "check", str(demo_small)]) == 0
    out = capsys.readouterr().out
    assert "9 images, 18 holes (masks.csv)" in out and "cat 1" in out and "64x64 9" in out


# ------------------------------------------------------------------------------ training examples (training/data.py)


def _shift_colours(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A toy model augmentation: one random brightness offset per example (module level: picklable)."""
    return np.clip(image + np.float32(rng.uniform(-0.3, 0.3)), 0, 1).astype(np.float32)


def test_training_examples_without_augmentation_are_the_resized_photo_and_flip(demo_small):
    """Every model but LaMa supplies no augmentation: an example is the photo resized to --size, the holes drawn
    from (seed, 3, position), both flipped when (seed, 1, position) says so, nothing drawn for an augmentation."""
    import torch

    from diffinpaint.data import discover_images
    from diffinpaint.models import TRAINED, trainable_class
    from diffinpaint.training.data import TrainingImages, generated_holes
    from diffinpaint.util.imageops import resize_images

    samples = discover_images(demo_small)
    images = TrainingImages(samples, 32, "box", True, 5)
    assert images.augment is None and images.augment_rng(0) is None
    flips = []
    for position in range(12):
        image, mask = images[position]
        index = int(images.order(position // len(samples))[position % len(samples)])
        photo = torch.tensor(samples[index].load_image()).permute(2, 0, 1)[None].float() / 255.0
        expected_image = resize_images(photo, (32, 32))[0]
        expected_mask = torch.from_numpy(generated_holes(32, "box", np.random.default_rng([5, 3, position])))[None]
        flip = np.random.default_rng([5, 1, position]).random() < 0.5
        flips.append(flip)
        if flip:
            expected_image, expected_mask = expected_image.flip(-1), expected_mask.flip(-1)
        assert torch.equal(image, expected_image) and torch.equal(mask, expected_mask.float())
    assert any(flips) and not all(flips)
    assert all(trainable_class(name)().augmentation() is None for name in TRAINED if name != "lama")


def test_a_models_augmentation_runs_per_example_on_the_cached_image_before_the_flip(demo_small):
    import pickle

    import torch

    from diffinpaint.data import discover_images
    from diffinpaint.training.data import AUGMENT_STREAM, TrainingImages

    samples = discover_images(demo_small)
    plain = TrainingImages(samples, 32, "thick", True, 2)
    shifted = TrainingImages(samples, 32, "thick", True, 2, augment=_shift_colours)
    positions = list(range(9, 18))
    batch, masks = shifted.batch(positions)
    plain_batch, plain_masks = plain.batch(positions)
    assert torch.equal(masks, plain_masks)  # the holes and the flips are drawn as without it
    for i, position in enumerate(positions):
        offset = np.float32(np.random.default_rng([2, AUGMENT_STREAM, position]).uniform(-0.3, 0.3))
        assert torch.equal(batch[i], torch.clamp(plain_batch[i] + offset, 0, 1)), position  # flip commutes here
        assert torch.equal(shifted[position][0], batch[i])  # the DataLoader's path: the same example
    copy = pickle.loads(pickle.dumps(shifted))
    assert torch.equal(copy.batch(positions)[0], batch)
    # the cache holds the resized photo; the sample grid's examples (no augment rng) are not augmented
    assert all(torch.equal(shifted.cache[k][0], plain.cache[k][0]) for k in plain.cache)
    grid = shifted.example(0, np.random.default_rng([2, 4, 0]), False)
    assert torch.equal(grid[0], plain.example(0, np.random.default_rng([2, 4, 0]), False)[0])
    # an augmentation that breaks the contract is stopped at once
    broken = TrainingImages(samples, 32, "thick", True, 2, augment=lambda image, rng: image[:, :16])
    with pytest.raises(RuntimeError, match="augmentation returned"):
        broken.batch([0])
