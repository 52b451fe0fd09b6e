"""`diffinpaint export kaggle`: a run folder's hole pixels as the Kaggle photo-reconstruction submission CSV.

    diffinpaint export kaggle RUN --data DATA --out submission.csv

Format (README "Commands": export): header `id,value`; one row per hole pixel and channel; within a hole, pixels in row-major
order with the channel fastest (R, G, B of the top-left pixel, then the next pixel to its right, ...);
id = `<image path without extension>_<hole index>_<pixel index>`, where the hole index is the hole's place
among the image's rows of masks.csv (from 0) and the pixel index counts values in that order (from 0, so pixel
(row r, column c), channel k of a w-wide hole is (r·w + c)·3 + k). value = the output's uint8 value / 255,
six decimals (the metrics' [0, 1] scale; rounding moves a value by at most 5e-7).

The run must match the dataset: every image's output present, decodable and of the input's size, and (where the
run's manifest says which input made it) made from these very image bytes and holes. Anything else is refused
before a byte is written; the CSV appears whole (temporary name + rename).
"""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import numpy as np

from ..data import Dataset, load_dataset, load_rgb
from ..util.errors import UserError

HEADER = "id,value"
VALUES = [f"{k / 255:.6f}" for k in range(256)]  # every uint8 value, formatted once


def _check_run(run_dir: Path, dataset: Dataset) -> None:
    from ..runner import read_manifest

    if not (run_dir / "images").is_dir():
        raise UserError(f"{run_dir} is not a run folder (no images/); pass the --out folder of `diffinpaint run`")
    made_from = {row["image"]: row.get("input") for row in read_manifest(run_dir / "manifest.jsonl")}
    missing = [s for s in dataset.samples if not (run_dir / "images" / s.output_relpath).is_file()]
    if missing:
        raise UserError(f"{run_dir} lacks outputs for {len(missing)} of {len(dataset.samples)} images (first: "
                        f"images/{missing[0].output_relpath}); finish the run with `diffinpaint run ... --data "
                        f"{dataset.root} --out {run_dir}`")
    other = [s for s in dataset.samples if made_from.get(s.image_id) not in (None, s.input_key)]
    if other:
        raise UserError(f"{run_dir} made images/{other[0].output_relpath} from another image or other holes than "
                        f"{dataset.root} has ({len(other)} such images); rerun the model on this dataset")


def _check_out(out: Path) -> None:
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name such as submission.csv")
    if out.exists():
        with open(out, "rb") as fh:
            first = fh.readline().strip()
        if first != HEADER.encode():
            raise UserError(f"--out {out} exists and is not a Kaggle export (its first line is not {HEADER}); "
                            "choose a new file name")


def hole_rows(stem: str, image: np.ndarray, boxes) -> list[str]:
    """The CSV rows of one image's holes."""
    lines = []
    for index, (x, y, w, h) in enumerate(boxes):
        values = image[y : y + h, x : x + w].reshape(-1).tolist()  # row-major, channel fastest (H×W×3 order)
        prefix = f"{stem}_{index}_"
        lines.extend(f"{prefix}{p},{VALUES[v]}" for p, v in enumerate(values))
    return lines


def export_kaggle(run_dir: str | Path, data: str | Path, out: str | Path) -> int:
    """Write the submission CSV; returns the number of value rows."""
    run_dir, out = Path(run_dir), Path(out)
    # 1. Check everything before writing
    dataset = load_dataset(data)
    if dataset.mask_source != "csv":
        raise UserError(f"{dataset.root} has masks/*.png; the Kaggle format numbers pixels inside rectangular holes, "
                        "so it needs masks.csv (`diffinpaint data masks --protocol box` writes one)")
    _check_run(run_dir, dataset)
    _check_out(out)
    for s in dataset.samples:
        image = load_rgb(run_dir / "images" / s.output_relpath, s.max_pixels)
        if image.shape[:2] != (s.height, s.width):
            raise UserError(f"{run_dir}/images/{s.output_relpath} is {image.shape[1]}x{image.shape[0]} but "
                            f"images/{s.image_id} is {s.width}x{s.height}; the run was made from other images")

    # 2. Write under a temporary name, then rename
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    rows = 0
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(HEADER + "\n")
            for s in dataset.samples:
                image = load_rgb(run_dir / "images" / s.output_relpath, s.max_pixels)  # checked above
                lines = hole_rows(str(PurePosixPath(s.image_id).with_suffix("")), image, s.boxes)
                fh.write("\n".join(lines) + "\n")
                rows += len(lines)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return rows
