"""Demo data with no download: real colour photos that scikit-image ships inside its wheel.

Each photo is scaled so its shorter side is one of a few sizes and cut into deterministic square crops;
every crop gets two 75×75 holes in masks.csv (the Kaggle photo-reconstruction layout) placed from
(seed, image id). Labels are subfolders, so prompt sets with {label} work on it. groups.csv records the scene each
crop was cut from (the two motorcycle photos are one stereo pair: one scene), and `data split` keeps a scene's
crops on one side with no option: crops of one photo on both sides would be a test set the models have seen.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image

from ..util.files import atomic_write_bytes, atomic_write_text, png_bytes
from ..util.seeds import derive_seed
from .masks import box_holes
from ..util.errors import UserError

# skimage.data file -> label (the noun a prompt like "Real image of a {label}" needs)
PHOTOS = {
    "chelsea.png": "cat",
    "astronaut.png": "astronaut",
    "coffee.png": "coffee",
    "rocket.jpg": "rocket",
    "motorcycle_left.png": "motorcycle",
    "motorcycle_right.png": "motorcycle",
    "hubble_deep_field.jpg": "galaxy",
    "ihc.png": "tissue",
    "retina.jpg": "retina",
}
# photo -> scene, where two photos show one scene (groups.csv; otherwise the scene is the photo's own name)
SCENES = {"motorcycle_left": "motorcycle", "motorcycle_right": "motorcycle"}


def scene(crop_stem: str) -> str:
    """The scene a crop ("motorcycle_left_2") was cut from ("motorcycle")."""
    photo = crop_stem.rsplit("_", 1)[0]
    return SCENES.get(photo, photo)


def _photo(name: str) -> np.ndarray:
    import skimage

    path = Path(skimage.__file__).parent / "data" / name
    return np.asarray(Image.open(path).convert("RGB"))


def demo_crops(size: int, crops_per_photo: int) -> list[tuple[str, str, np.ndarray]]:
    """(label, file stem, uint8 size×size×3) crops, the same on every machine."""
    out = []
    for name, label in PHOTOS.items():
        photo = Image.fromarray(_photo(name))
        for k in range(crops_per_photo):
            short = int(size * (1.0 + 0.5 * k))  # 1x, 1.5x, 2x: whole-photo view first, then closer views
            scale = short / min(photo.size)
            resized = photo.resize((max(size, round(photo.width * scale)), max(size, round(photo.height * scale))),
                                   Image.BICUBIC)
            # crop positions walk along the longer axis: centre, then towards either end
            fx, fy = [(0.5, 0.5), (0.25, 0.4), (0.75, 0.6), (0.4, 0.25), (0.6, 0.75)][k % 5]
            left = round((resized.width - size) * fx)
            top = round((resized.height - size) * fy)
            crop = np.asarray(resized.crop((left, top, left + size, top + size)))
            out.append((label, f"{Path(name).stem}_{k}", crop))
    return out


def make_demo_dataset(out: str | Path, *, size: int = 256, crops_per_photo: int = 3, holes: int = 2,
                      hole_size: int = 75, seed: int = 0) -> Path:
    out = Path(out)
    if not 0 < hole_size <= size:
        raise UserError(f"--hole-size {hole_size} does not fit --size {size}; choose a hole size from 1 to {size}")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty; choose a new --out folder")
    rows, groups = [], []
    for label, stem, crop in demo_crops(size, crops_per_photo):
        image_id = f"{label}/{stem}.png"
        path = out / "images" / image_id
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, png_bytes(crop))
        rng = np.random.default_rng(derive_seed(seed, image_id))
        rows += [(image_id, *box) for box in box_holes(size, size, holes, hole_size, rng)]
        groups.append((image_id, scene(stem)))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "x", "y", "width", "height"])
    writer.writerows(rows)
    atomic_write_text(out / "masks.csv", buffer.getvalue())
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "group"])
    writer.writerows(groups)
    atomic_write_text(out / "groups.csv", buffer.getvalue())
    return out
