"""Scoring a model on the images it was trained on: found by content, refused unless the user asks for it.

Every training folder holds training_set.json (training/data.py `training_set_record`): per training image the
SHA-256 of its decoded RGB pixels (`util.files.pixel_fingerprint`) and two perceptual hashes, of the image and of
its mirror image (`data.near_duplicates`). eval computes the same for the images it scores and counts an evaluated
image as a training image when
  * identical: the same pixels (a photo renamed, moved to another label or re-saved losslessly), or
  * near-duplicate: its pHash within NEAR_DISTANCE bits (of 64) of a training image's or its mirror's (a JPEG
    re-save, a re-crop by a few pixels, a resize, a horizontal flip).
The refusal says how many of each and names an example. A record written before the hashes existed (version 1)
still gives the exact check, with a warning that near-duplicates are not looked for; its summary field
`training_set` is then "exact only" (otherwise "checked", "no record" or "not trained").
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..data.near_duplicates import HASH_NAME, NEAR_DISTANCE, ImageKey, from_hex, image_key, nearest
from ..util.errors import UserError


@dataclass
class TrainingSetCheck:
    training_set: str  # "checked", "exact only" (a record without perceptual hashes), "no record" or "not trained"
    n_train_overlap: int | None = None  # evaluated images that are training images (identical or near-duplicate)
    in_sample: bool | None = None  # None when it could not be checked

    def summary_fields(self) -> dict:
        return {"in_sample": self.in_sample, "n_train_overlap": self.n_train_overlap,
                "training_set": self.training_set}


@dataclass
class TrainingSet:
    """What training_set.json says: image names, exact fingerprints, and perceptual hashes when recorded."""

    images: list[str]
    fingerprints: list[str]
    phashes: list[int] | None = None  # None: an older record, exact check only
    phash_flips: list[int] | None = None
    exact: set[str] = field(init=False)

    def __post_init__(self):
        self.exact = set(self.fingerprints)


def read_training_set(path: Path) -> TrainingSet:
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
        entries = record["images"]
        images = [str(entry.get("image", "?")) for entry in entries]
        fingerprints = [str(entry["fingerprint"]) for entry in entries]
        hashed = record.get("perceptual_hash") == HASH_NAME and all("phash" in e for e in entries)
        phashes = [from_hex(str(e["phash"])) for e in entries] if hashed else None
        flips = [from_hex(str(e["phash_flip"])) for e in entries] if hashed else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise UserError(f"{path} is not a training-set record ({type(err).__name__}); restore it from the training "
                        "folder or retrain") from None
    return TrainingSet(images, fingerprints, phashes, flips)


def dataset_fingerprints(samples, state) -> dict[str, ImageKey]:
    """image id -> ImageKey (pixel fingerprint + perceptual hashes), each process decoding its shard (gathered:
    every process gets all)."""
    from accelerate.utils import gather_object

    with state.split_between_processes(list(samples)) as shard:
        local = [(s.image_id, image_key(s.load_image())) for s in shard]
    pairs = gather_object(local) if state.num_processes > 1 else local
    return dict(pairs)


def find_overlap(evaluated: dict[str, ImageKey], trained_on: TrainingSet
                 ) -> tuple[list[str], list[tuple[str, str, int]]]:
    """(evaluated images identical to a training image, [(evaluated image, nearest training image, distance)] for
    the others within NEAR_DISTANCE; empty when the record has no hashes)."""
    exact = [image for image, key in evaluated.items() if key.fingerprint in trained_on.exact]
    if trained_on.phashes is None:
        return exact, []
    exact_set = set(exact)
    rest = [image for image in evaluated if image not in exact_set]
    distances, where = nearest([evaluated[i].phash for i in rest], trained_on.phashes, trained_on.phash_flips)
    near = [(image, trained_on.images[int(j)], int(d)) for image, d, j in zip(rest, distances, where)
            if d <= NEAR_DISTANCE]
    return exact, near


def check_training_set(name: str, model, fingerprints, *, allow_in_sample: bool, log) -> TrainingSetCheck:
    """`fingerprints()` gives the evaluated images' ImageKeys (computed on first use, then reused)."""
    if not hasattr(model, "training_set_path"):
        return TrainingSetCheck("not trained")
    path = model.training_set_path
    if path is None:
        log(f"warning: {name}: its training folder has no training_set.json (an older checkpoint), so eval cannot "
            "tell whether it was trained on these images")
        return TrainingSetCheck("no record")
    trained_on = read_training_set(path)
    if trained_on.phashes is None:
        log(f"warning: {name}: {path} has no perceptual hashes (written by an older version), so eval checks for "
            "identical images only: JPEG re-saves, re-crops, resizes or flips of training images are not found; "
            "retrain to record them")
    evaluated = fingerprints()
    exact, near = find_overlap(evaluated, trained_on)
    overlap = len(exact) + len(near)
    kinds = f"{len(exact)} identical, {len(near)} near-duplicate"
    if near:
        image, train_image, d = near[0]
        kinds += (f": perceptual hash within {NEAR_DISTANCE} of 64 bits, a re-save, re-crop, resize or flip, e.g. "
                  f"{image} ~ training image {train_image} at distance {d}")
    if overlap and not allow_in_sample:
        raise UserError(f"{name} was trained on {overlap} of the {len(evaluated)} images to evaluate ({kinds}; "
                        f"{path}); hold out a test set with `diffinpaint data split DATA --test-fraction 0.1 "
                        "--out-train TRAIN --out-test TEST`, train on TRAIN and evaluate on TEST, or pass "
                        "--allow-in-sample to score it anyway, marked in-sample")
    if overlap:
        log(f"warning: {name} was trained on {overlap} of the {len(evaluated)} evaluated images ({kinds}); its rows "
            "are marked in_sample (--allow-in-sample)")
    return TrainingSetCheck("checked" if trained_on.phashes is not None else "exact only", overlap, overlap > 0)
