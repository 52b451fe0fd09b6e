"""Held-out means held out: a JPEG re-save, a 2-px re-crop, a resize or a mirrored copy of a training photo is the
same photo (perceptual hash within NEAR_DISTANCE), crops of other photos are not; eval refuses a model on such
copies of its training images, says exact vs near, and still runs on untouched other photos."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from diffinpaint.cli import main
from diffinpaint.data import load_dataset
from diffinpaint.data.near_duplicates import NEAR_DISTANCE, distance, image_key, nearest, near_pairs
from diffinpaint.evaluation.leakage import check_training_set, find_overlap, read_training_set
from diffinpaint.training.data import training_set_record

TRAINED = ["astronaut", "coffee", "chelsea", "rocket"]  # the photos the model is trained on
# ten other photos (skimage.data.cat is chelsea again, so it is not among them)
OTHERS = ["camera", "moon", "coins", "page", "text", "clock", "hubble_deep_field", "immunohistochemistry",
          "retina", "gravel"]
SIZE = 96


def photo(name: str, size: int = SIZE) -> np.ndarray:
    """Centre square of a scikit-image photo at size × size, RGB uint8."""
    array = np.asarray(getattr(skimage.data, name)())
    if array.ndim == 2:
        array = np.stack([array] * 3, -1)
    image = Image.fromarray(array[..., :3])
    scale = size / min(image.size)
    image = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))),
                         Image.BICUBIC)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)))


def jpeg_bytes(rgb: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def resized(rgb: np.ndarray, factor: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    return np.asarray(Image.fromarray(rgb).resize((round(w * factor), round(h * factor)), Image.BICUBIC))


TRANSFORMS = {
    "jpeg q75": lambda a: decoded(jpeg_bytes(a, 75)),
    "jpeg q90": lambda a: decoded(jpeg_bytes(a, 90)),
    "2-px re-crop top-left": lambda a: a[2:, 2:],
    "2-px re-crop bottom-right": lambda a: a[:-2, :-2],
    "2-px re-crop left-right": lambda a: a[:, 2:-2],
    "resize 0.8x": lambda a: resized(a, 0.8),
    "resize 0.5x": lambda a: resized(a, 0.5),
    "horizontal flip": lambda a: a[:, ::-1],
    "flip + 2-px re-crop + jpeg q80": lambda a: decoded(jpeg_bytes(a[:, ::-1][2:, 2:], 80)),
}


@pytest.fixture(scope="module")
def photos():
    return {name: photo(name) for name in TRAINED + OTHERS}


@pytest.mark.parametrize("transform", list(TRANSFORMS))
def test_transformed_copies_of_a_photo_are_near_duplicates(photos, transform):
    for name in TRAINED:
        original = image_key(photos[name])
        copy = image_key(np.ascontiguousarray(TRANSFORMS[transform](photos[name])))
        assert copy.fingerprint != original.fingerprint or transform.startswith("jpeg")  # not the exact check
        assert distance(original, copy) <= NEAR_DISTANCE, (name, transform, distance(original, copy))


def test_crops_of_different_photos_are_not(photos):
    keys = {name: image_key(a) for name, a in photos.items()}
    for name in OTHERS:
        nearest_trained = min(distance(keys[name], keys[t]) for t in TRAINED)
        assert nearest_trained > NEAR_DISTANCE + 4, (name, nearest_trained)  # a margin, not just the threshold
    names = list(keys)
    assert near_pairs([keys[n].phash for n in names], [keys[n].phash_flip for n in names]) == []


def test_vectorised_distances_match_the_pairwise_ones(photos):
    keys = [image_key(a) for a in photos.values()]
    flipped = [image_key(np.ascontiguousarray(a[:, ::-1])) for a in photos.values()]
    best, where = nearest([k.phash for k in flipped], [k.phash for k in keys], [k.phash_flip for k in keys])
    assert list(where) == list(range(len(keys))) and (best <= 2).all()  # each flip finds its own photo
    d = [[distance(a, b) for b in keys] for a in keys]
    pairs = near_pairs([k.phash for k in keys], [k.phash_flip for k in keys], threshold=64)
    assert {(i, j): dist for i, j, dist in pairs} == {(i, j): d[i][j] for i in range(len(keys))
                                                      for j in range(i + 1, len(keys))}


# ---------------------------------------------------------------------------------------------- eval


def write_dataset(root: Path, images: dict[str, bytes]) -> Path:
    """images/<name> = the given file bytes; one 16×16 hole per image in masks.csv."""
    rows = []
    for name, data in images.items():
        path = root / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        rows.append([name, 8, 8, 16, 16])
    with open(root / "masks.csv", "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([["image", "x", "y", "width", "height"], *rows])
    return root


def png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def pix2pix_ckpt(tmp_path_factory, photos):
    """A tiny pix2pix trained (2 steps) on the four TRAINED photos."""
    from diffinpaint.models import trainable_class
    from diffinpaint.training.trainer import train_from_options

    root = tmp_path_factory.mktemp("near")
    train = write_dataset(root / "train", {f"{n}.png": png(photos[n]) for n in TRAINED})
    ckpt = root / "ckpt"
    train_from_options("pix2pix", {"data": str(train), "out": str(ckpt), "device": "cpu", "steps": 2,
                                   "checkpoint_every": 2, "sample_every": 2, "keep_checkpoints": 0,
                                   **trainable_class("pix2pix").tiny})
    return ckpt


def eval_pix2pix(ckpt: Path, data: Path, out: Path, *extra) -> int:
    return main(["eval", "--models", "pix2pix", "--pix2pix-checkpoint", str(ckpt), "--data", str(data), "--out",
                 str(out), "--no-progress", "--no-fid", "--no-text", "--no-report", *extra])


def test_training_set_json_records_perceptual_hashes(pix2pix_ckpt, photos):
    record = json.loads((pix2pix_ckpt / "training_set.json").read_text())
    assert record["version"] == 2 and record["near_distance"] == NEAR_DISTANCE
    by_image = {e["image"]: e for e in record["images"]}
    key = image_key(photos["astronaut"])
    assert by_image["astronaut.png"]["phash"] == f"{key.phash:016x}"
    assert by_image["astronaut.png"]["phash_flip"] == f"{key.phash_flip:016x}"


@pytest.mark.parametrize("copies", ["jpeg re-saves", "2-px re-crops"])
def test_eval_refuses_a_model_on_near_duplicates_of_its_training_photos(pix2pix_ckpt, photos, tmp_path, capsys,
                                                                        copies):
    made = {"jpeg re-saves": lambda n, q: (f"web/{n}.jpg", jpeg_bytes(photos[n], q)),
            "2-px re-crops": lambda n, q: (f"web/{n}_crop.png", png(photos[n][2:, :-2]))}[copies]
    images = dict(made(n, q) for n, q in (("astronaut", 75), ("coffee", 90)))
    images |= {f"other/{n}.png": png(photos[n]) for n in OTHERS[:3]}
    data = write_dataset(tmp_path / "data", images)
    assert eval_pix2pix(pix2pix_ckpt, data, tmp_path / "ev") == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning: ")]
    assert len(err) == 1 and err[0].startswith("error: ")
    assert "pix2pix was trained on 2 of the 5 images to evaluate (0 identical, 2 near-duplicate" in err[0]
    assert "training image astronaut.png" in err[0] or "training image coffee.png" in err[0]
    assert "diffinpaint data split" in err[0] and "--allow-in-sample" in err[0]
    assert not (tmp_path / "ev").exists()
    # --allow-in-sample scores it, marked, with both kinds counted
    assert eval_pix2pix(pix2pix_ckpt, data, tmp_path / "ev2", "--allow-in-sample") == 0
    row = json.loads((tmp_path / "ev2" / "summary.json").read_text())[0]
    assert row["in_sample"] is True and row["n_train_overlap"] == 2 and row["training_set"] == "checked"


def test_eval_runs_on_untouched_other_photos(pix2pix_ckpt, photos, tmp_path, capsys):
    data = write_dataset(tmp_path / "data", {f"{n}.png": png(photos[n]) for n in OTHERS})
    assert eval_pix2pix(pix2pix_ckpt, data, tmp_path / "ev") == 0
    row = json.loads((tmp_path / "ev" / "summary.json").read_text())[0]
    assert row["in_sample"] is False and row["n_train_overlap"] == 0 and row["training_set"] == "checked"
    assert "near-duplicate" not in capsys.readouterr().err


def test_exact_and_near_are_told_apart(photos, tmp_path):
    train = write_dataset(tmp_path / "train", {f"{n}.png": png(photos[n]) for n in TRAINED})
    record = training_set_record(load_dataset(train).samples)
    (tmp_path / "training_set.json").write_text(json.dumps(record))
    evaluated = {"same.png": image_key(photos["rocket"]),  # identical pixels
                 "flipped.png": image_key(np.ascontiguousarray(photos["chelsea"][:, ::-1])),
                 "smaller.png": image_key(resized(photos["coffee"], 0.8)),
                 "other.png": image_key(photos["camera"])}
    exact, near = find_overlap(evaluated, read_training_set(tmp_path / "training_set.json"))
    assert exact == ["same.png"]
    assert {(image, train_image) for image, train_image, _ in near} == {("flipped.png", "chelsea.png"),
                                                                       ("smaller.png", "coffee.png")}


class _Trained:
    def __init__(self, path):
        self.training_set_path = path


def test_an_old_record_without_hashes_still_gives_the_exact_check_with_a_warning(photos, tmp_path):
    train = write_dataset(tmp_path / "train", {f"{n}.png": png(photos[n]) for n in TRAINED})
    record = training_set_record(load_dataset(train).samples)
    old = {"format": record["format"], "version": 1, "fingerprint": record["fingerprint"],
           "n_images": record["n_images"],
           "images": [{"image": e["image"], "fingerprint": e["fingerprint"]} for e in record["images"]]}
    path = tmp_path / "training_set.json"
    path.write_text(json.dumps(old))
    logged = []
    near_only = {"a.jpg": image_key(decoded(jpeg_bytes(photos["astronaut"], 80))), "b.png": image_key(photos["moon"])}
    check = check_training_set("old", _Trained(path), lambda: near_only, allow_in_sample=False, log=logged.append)
    assert check.training_set == "exact only" and check.n_train_overlap == 0 and check.in_sample is False
    assert len(logged) == 1 and "no perceptual hashes" in logged[0] and "identical images only" in logged[0]
    with pytest.raises(ValueError, match=r"trained on 1 of the 2 images to evaluate \(1 identical, 0 near"):
        check_training_set("old", _Trained(path), lambda: {"a.png": image_key(photos["astronaut"]),
                                                             "b.png": image_key(photos["moon"])},
                           allow_in_sample=False, log=logged.append)
