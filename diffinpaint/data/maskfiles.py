"""`diffinpaint data masks`: give a dataset folder a mask source (masks.csv or masks/*.png) from a protocol.

Replacing a source never leaves the folder without a complete one: the new source is written whole under a
hidden temporary name, the old one is renamed aside, the new one renamed into place, and only then is the old
one deleted. If a crash hits between the two renames, the next call puts the old source back first.
"""
from __future__ import annotations

import csv
import io
import os
import shutil
from pathlib import Path

import numpy as np

from ..util.errors import UserError
from ..util.files import atomic_write_bytes, atomic_write_text, png_bytes
from ..util.seeds import derive_seed
from .dataset import discover_images
from .masks import PROTOCOLS, box_holes, boxes_to_mask, irregular_mask

SOURCES = ("masks.csv", "masks")


def _restore_interrupted_swap(root: Path) -> None:
    """A source renamed aside by a swap that died before the new one took its place: put it back."""
    if any((root / name).exists() for name in SOURCES):
        return
    for name in SOURCES:
        for old in sorted(root.glob(f".{name}.old-*")):
            old.rename(root / name)
            return


def _remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


def write_masks(root, protocol: str, *, seed: int = 0, holes: int = 2, hole_size: int = 75,
                fmt: str | None = None, replace: bool = False) -> str:
    """Box holes (masks.csv by default) or irregular mask PNGs (masks/), each image's holes from (seed, image id).
    Returns the path written, relative to the dataset folder."""
    if protocol not in PROTOCOLS:
        raise UserError(f"--protocol {protocol}: choose from {', '.join(PROTOCOLS)}")
    fmt = fmt or ("csv" if protocol == "box" else "png")
    if fmt == "csv" and protocol != "box":
        raise UserError(f"--protocol {protocol} makes free-form masks, which masks.csv cannot hold; use --format png")
    root = Path(root)
    samples = discover_images(root)  # validates the images first; nothing is written on a problem
    _restore_interrupted_swap(root)
    existing = [root / name for name in SOURCES if (root / name).exists()]
    if existing and not replace:
        raise UserError(f"{root} already has {existing[0].name}; pass --replace to overwrite its mask source")
    masks = {}
    for s in samples:
        rng = np.random.default_rng(derive_seed(seed, s.image_id))
        if protocol == "box":
            try:
                masks[s.image_id] = box_holes(s.height, s.width, holes, hole_size, rng)
            except ValueError as err:
                raise UserError(f"images/{s.image_id}: {err}") from None
        else:
            masks[s.image_id] = irregular_mask(s.height, s.width, protocol, rng)

    # 1. the new source, complete, under a hidden name
    final = root / ("masks.csv" if fmt == "csv" else "masks")
    tmp = root / f".{final.name}.tmp-{os.getpid()}"
    if tmp.exists():
        _remove(tmp)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["image", "x", "y", "width", "height"])
        for image_id, boxes in masks.items():
            writer.writerows((image_id, *box) for box in boxes)
        atomic_write_text(tmp, buffer.getvalue())
    else:
        for s in samples:
            mask = masks[s.image_id]
            if isinstance(mask, list):
                mask = boxes_to_mask(s.height, s.width, mask)
            path = tmp / s.output_relpath
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, png_bytes(mask.astype(np.uint8) * 255))
    # 2. swap: old sources aside, the new one into place, then the old ones deleted
    aside = []
    for path in existing:
        old = root / f".{path.name}.old-{os.getpid()}"
        path.rename(old)
        aside.append(old)
    tmp.rename(final)
    for old in aside:
        _remove(old)
    return "masks.csv" if fmt == "csv" else "masks/"
