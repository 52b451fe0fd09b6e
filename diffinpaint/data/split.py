"""`diffinpaint data split`: one dataset folder -> a training folder and a test folder that share no image.

    diffinpaint data split DATA --test-fraction 0.1 --seed 0 --out-train TRAIN --out-test TEST

The split is by image *content*: images are grouped by the fingerprint of their decoded pixels
(`util.files.pixel_fingerprint`, the same one training_set.json records), so the same photo saved under two
names or in two formats lands on one side, never both. Groups are ordered by SHA-256(seed, fingerprint) and
the test side takes groups in that order until it holds round(fraction × images) images: deterministic for a
seed, independent of file names and of the order images were found in, and an image's side only changes when
the cut moves past it.

Each side is a complete dataset folder: images copied byte for byte at the same relative path (labels = first
subfolder, kept), the mask source carried along (masks.csv rows of its images, or their masks/*.png files), and
split.json saying where it came from. A folder without a mask source splits into two image folders (training
folders for models that make their own holes). Both sides are built under temporary names beside the targets
and renamed into place at the end, so a failure leaves no half-written folder; bad input writes nothing.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
from pathlib import Path

from ..util.errors import UserError
from ..util.files import atomic_write_text, pixel_fingerprint
from .dataset import CSV_COLUMNS, Sample, discover_images, load_dataset


def split_key(seed: int, fingerprint: str) -> str:
    return hashlib.sha256(f"{seed}:{fingerprint}".encode()).hexdigest()


def assign(samples: list[Sample], fingerprints: dict[str, str], test_fraction: float, seed: int
           ) -> tuple[list[Sample], list[Sample]]:
    """(train, test), in dataset order; duplicates by content stay together."""
    groups: dict[str, list[Sample]] = {}
    for s in samples:
        groups.setdefault(fingerprints[s.image_id], []).append(s)
    target = round(test_fraction * len(samples))
    test_ids: set[str] = set()
    for fingerprint in sorted(groups, key=lambda fp: split_key(seed, fp)):
        if len(test_ids) >= target:
            break
        test_ids.update(s.image_id for s in groups[fingerprint])
    return [s for s in samples if s.image_id not in test_ids], [s for s in samples if s.image_id in test_ids]


def _check_out(path: Path, name: str, data: Path) -> None:
    resolved, root = path.resolve(), data.resolve()
    if resolved == root or root in resolved.parents or resolved in root.parents:
        raise UserError(f"{name} {path} overlaps the dataset folder {data}; choose a folder outside it")
    if path.exists() and not path.is_dir():
        raise UserError(f"{name} {path} is a file; choose a new folder")
    if path.is_dir() and any(path.iterdir()):
        raise UserError(f"{name} {path} exists and is not empty; choose a new folder")


def _masks_csv(samples: list[Sample]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for s in samples:
        for x, y, w, h in s.boxes:
            writer.writerow([s.image_id, x, y, w, h])
    return buffer.getvalue()


def _write_side(tmp: Path, samples: list[Sample], mask_source: str | None, record: dict) -> None:
    for s in samples:
        dest = tmp / "images" / s.image_id
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(s.path, dest)
        if mask_source == "png":
            mask_dest = tmp / "masks" / s.output_relpath
            mask_dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(s.mask_path, mask_dest)
    if mask_source == "csv":
        atomic_write_text(tmp / "masks.csv", _masks_csv(samples))
    atomic_write_text(tmp / "split.json", json.dumps(record, indent=2) + "\n")


def split_dataset(data: str | Path, test_fraction: float, seed: int, out_train: str | Path, out_test: str | Path
                  ) -> tuple[int, int]:
    """Write the two folders; returns (train images, test images)."""
    data, out_train, out_test = Path(data), Path(out_train), Path(out_test)
    # 1. Check everything before writing anything
    if not 0.0 < test_fraction < 1.0:
        raise UserError(f"--test-fraction {test_fraction}: must lie strictly between 0 and 1, e.g. 0.1")
    if out_train.resolve() == out_test.resolve():
        raise UserError(f"--out-train and --out-test are both {out_train}; give two different folders")
    for path, name in ((out_train, "--out-train"), (out_test, "--out-test")):
        _check_out(path, name, data)
        other = out_test if path is out_train else out_train
        if path.resolve() in other.resolve().parents:
            raise UserError(f"{name} {path} contains the other output folder; give two separate folders")
    has_masks = (data / "masks.csv").exists() or (data / "masks").exists()
    if has_masks:
        dataset = load_dataset(data)  # validates every image and mask; a problem stops here, nothing written
        samples, mask_source = dataset.samples, dataset.mask_source
    else:
        samples, mask_source = discover_images(data), None

    # 2. Decide each image's side by content
    fingerprints = {s.image_id: pixel_fingerprint(s.load_image()) for s in samples}
    train, test = assign(samples, fingerprints, test_fraction, seed)
    if not train or not test:
        empty = "test" if not test else "training"
        raise UserError(f"--test-fraction {test_fraction} of {len(samples)} images ({len(set(fingerprints.values()))} "
                        f"distinct) leaves the {empty} side empty; choose a fraction that puts images on both sides")

    # 3. Write both sides under temporary names, then rename them into place
    made = []
    try:
        for side, chosen, out in (("train", train, out_train), ("test", test, out_test)):
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.parent / f".{out.name}.split-{os.getpid()}"
            if tmp.exists():
                shutil.rmtree(tmp)
            made.append(tmp)
            record = {"format": "diffinpaint-split", "version": 1, "source": str(data.resolve()), "side": side,
                      "seed": seed, "test_fraction": test_fraction, "n_images": len(chosen),
                      "n_source_images": len(samples), "rule": "sha256(seed:pixel fingerprint) order; "
                      "duplicates by content on one side"}
            _write_side(tmp, chosen, mask_source, record)
        for tmp, out in zip(made, (out_train, out_test)):
            if out.is_dir():
                out.rmdir()  # checked empty above; rename needs the name free
            os.replace(tmp, out)
    finally:
        for tmp in made:
            if tmp.exists():
                shutil.rmtree(tmp)
    return len(train), len(test)
