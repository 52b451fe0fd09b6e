"""Dataset folders (README "Dataset folders"): discovery, validation before any work, image and mask loading.

    DATA/images/**.{png,jpg,jpeg,webp}   first folder under images/ = the image's label
    DATA/masks.csv                        image,x,y,width,height — one row per rectangular hole
 or DATA/masks/**.png                     one mask per image, same relative path; white (>=128) = hole

`load_dataset` checks everything (every image decoded once, every CSV row, every mask) and raises one
`DatasetError` listing every problem with its file, CSV line and the fix, so a run never starts on bad data.
With `skip_invalid=True` problems that concern single images drop those images instead (they are returned in
`Dataset.skipped`); problems with the dataset as a whole (both mask sources, a malformed CSV header) stay fatal.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageOps

from .masks import boxes_to_mask
from ..util.errors import UserError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp"}
CSV_COLUMNS = ["image", "x", "y", "width", "height"]
# PIL's own decompression-bomb threshold; an image beyond it is refused before it is decoded
DEFAULT_MAX_PIXELS = 89_478_485
# what Image.open may decode, whatever the file is called: PIL sniffs ~40 formats (EPS even runs Ghostscript)
# (PIL's JPEG opener also returns the multi-picture MPO files many phones write)
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")


@dataclass(frozen=True)
class Problem:
    file: str  # path as the user knows it (relative to the dataset folder when inside it)
    message: str  # what is wrong and what to do, one line
    line: int | None = None  # CSV line number (1 = header)
    image: str | None = None  # the image this problem disqualifies; None = the whole dataset is unusable

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return printable(f"{where}: {self.message}")


def printable(text: str) -> str:
    """One terminal line whatever a file name or CSV cell holds: newlines, NULs, undecodable bytes escaped."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape", "backslashreplace").decode("ascii")
                   for ch in text)


class DatasetError(UserError):
    def __init__(self, root: Path, problems: list[Problem]):
        self.root = root
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass
class Sample:
    image_id: str  # path under images/, posix separators, exactly as in masks.csv ("cats/a.jpg")
    path: Path
    label: str | None
    width: int  # of the upright image (EXIF orientation applied)
    height: int
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)  # (x, y, w, h) when masks.csv
    mask_path: Path | None = None  # when masks/ PNGs
    max_pixels: int = DEFAULT_MAX_PIXELS  # the limit it was validated under (--max-pixels)

    @property
    def output_relpath(self) -> str:
        """Where the run writes this image's output, under RUN/images/ (extension replaced by .png)."""
        return str(PurePosixPath(self.image_id).with_suffix(".png"))

    @cached_property
    def input_key(self) -> str:
        """Fingerprint of everything the output depends on in the input: image bytes and holes. A run folder
        only counts an image as finished when its manifest row carries the same key (new masks = redo); the
        FID feature cache keys on it too. Read once per sample."""
        digest = hashlib.sha256(self.path.read_bytes())
        digest.update(json.dumps(self.boxes).encode())
        if self.mask_path is not None:
            digest.update(self.mask_path.read_bytes())
        return digest.hexdigest()[:16]

    def load_image(self) -> np.ndarray:
        return load_rgb(self.path, self.max_pixels)

    def load_mask(self) -> np.ndarray:
        """H×W bool, True = hole."""
        if self.mask_path is not None:
            return load_mask_png(self.mask_path, self.max_pixels)
        return boxes_to_mask(self.height, self.width, self.boxes)


@dataclass
class Dataset:
    root: Path
    samples: list[Sample]
    mask_source: str  # "csv" or "png"
    skipped: list[Problem] = field(default_factory=list)

    @property
    def labels(self) -> list[str | None]:
        return [s.label for s in self.samples]

    @property
    def n_holes(self) -> int:
        return sum(len(s.boxes) for s in self.samples) if self.mask_source == "csv" else len(self.samples)

    def summary(self) -> dict:
        sizes = defaultdict(int)
        labels = defaultdict(int)
        for s in self.samples:
            sizes[f"{s.width}x{s.height}"] += 1
            labels[s.label or "(none)"] += 1
        return {
            "root": str(self.root),
            "images": len(self.samples),
            "holes": self.n_holes,
            "mask_source": "masks.csv" if self.mask_source == "csv" else "masks/*.png",
            "labels": dict(sorted(labels.items())),
            "sizes": dict(sorted(sizes.items(), key=lambda kv: -kv[1])),
            "skipped": len(self.skipped),
        }


# ---------------------------------------------------------------------------------------------- loading


def _open_upright(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open, refuse decompression bombs before decoding, decode fully (catches truncation), apply EXIF.

    PIL's own bomb check (Image.MAX_IMAGE_PIXELS) is off while opening: `max_pixels` replaces it, so a raised
    --max-pixels is honoured and a lowered one is the only limit."""
    pil_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        image = Image.open(path, formats=IMAGE_FORMATS)
    finally:
        Image.MAX_IMAGE_PIXELS = pil_limit
    if image.width * image.height > max_pixels:
        raise UserError(
            f"{image.width}x{image.height} pixels is over the limit of {max_pixels} (decompression bomb?); "
            "shrink the image or raise --max-pixels"
        )
    image.load()
    return ImageOps.exif_transpose(image)


def to_rgb(image: Image.Image) -> np.ndarray:
    """Any PIL mode -> uint8 H×W×3.

    16-bit grayscale (I;16*, I) is scaled 65535 -> 255 (PIL's own convert would clip it); alpha is dropped
    (the colour values are kept, not composited over a background); CMYK uses PIL's plain conversion;
    palette images go through their palette.
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode != "I" or values.max() > 255 else 255.0
        grey = np.clip(np.round(values * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode == "F":
        grey = np.clip(np.round(np.asarray(image) * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode == "P":
        image = image.convert("RGBA")
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))


def load_rgb(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    return to_rgb(_open_upright(Path(path), max_pixels))


def load_mask_png(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    image = _open_upright(Path(path), max_pixels)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        grey = to_rgb(image)[:, :, 0]
    else:
        grey = np.asarray(image.convert("L"))
    return grey >= 128


# ---------------------------------------------------------------------------------------------- discovery


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _walk_files(top: Path, root: Path, problems: list[Problem], image_of=lambda rel: rel) -> list[Path]:
    """All files under `top` (sorted), refusing symlinks that lead outside the dataset folder and folders seen
    twice (a symlink loop, or a second link to a folder). `image_of(path under top)` = the image that a refused
    file disqualifies."""
    real_root = Path(os.path.realpath(root))
    found = []
    seen: dict[Path, Path] = {}  # real folder -> the path it was first walked as
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        dirnames.sort()
        here = Path(dirpath)
        real_here = Path(os.path.realpath(here))
        if real_here != real_root and real_root not in real_here.parents:
            problems.append(Problem(_relative(here, root), "is a symlink that leads outside the dataset folder; "
                                    "copy the files into the dataset instead", image=None))
            dirnames[:] = []
            continue
        if real_here in seen:
            problems.append(Problem(_relative(here, root), f"is the same folder as {_relative(seen[real_here], root)} "
                                    "(a symlink loop or a second link); remove the link", image=None))
            dirnames[:] = []
            continue
        seen[real_here] = here
        for name in sorted(filenames):
            if name.startswith("."):
                continue  # hidden files (.DS_Store, editor swap files) are not data
            path = here / name
            real = Path(os.path.realpath(path))
            if real_root not in real.parents:
                problems.append(Problem(_relative(path, root), "is a symlink that leads outside the dataset "
                                        "folder; copy the file into the dataset instead",
                                        image=image_of(_relative(path, top).replace(os.sep, "/"))))
                continue
            found.append(path)
    return found


def _unsafe_relpath(text: str) -> str | None:
    """Why a path from masks.csv may not be used, or None when it is a plain relative path."""
    if not text:
        return "empty image path"
    if text.startswith(("/", "\\")) or (len(text) > 1 and text[1] == ":"):
        return f"absolute path {text!r}; write the path relative to images/"
    if ".." in PurePosixPath(text.replace("\\", "/")).parts:
        return f"path {text!r} climbs out of images/ with '..'; write the path relative to images/"
    return None


def load_dataset(root: str | Path, *, skip_invalid: bool = False,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> Dataset:
    """Discover and validate a dataset folder; raise DatasetError listing every problem."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(root, [Problem(str(root), "is not a folder; pass a dataset folder that holds "
                                          "images/ and masks.csv or masks/")])
    problems: list[Problem] = []
    images_dir = root / "images"
    _require_images_dir(root)
    csv_path, masks_dir = root / "masks.csv", root / "masks"
    if csv_path.exists() and masks_dir.exists():
        raise DatasetError(root, [Problem(str(root), "has both masks.csv and masks/; keep exactly one mask source")])
    if not csv_path.exists() and not masks_dir.is_dir():
        raise DatasetError(root, [Problem(str(root), "has no mask source; add masks.csv (image,x,y,width,height) "
                                          "or masks/ with one PNG per image (`diffinpaint data masks` writes them)")])

    samples = _discover_images(root, images_dir, problems, max_pixels)
    if csv_path.exists():
        _attach_csv_boxes(root, csv_path, samples, problems)
        mask_source = "csv"
    else:
        _attach_mask_pngs(root, masks_dir, samples, problems)
        mask_source = "png"

    if not samples and not problems:
        problems.append(Problem(str(images_dir), "holds no images (.png .jpg .jpeg .webp); add some"))

    fatal = [p for p in problems if p.image is None]
    per_image = [p for p in problems if p.image is not None]
    if fatal or (per_image and not skip_invalid):
        raise DatasetError(root, problems)
    bad = {p.image for p in per_image}
    kept = [s for s in samples.values() if s.image_id not in bad]
    if not kept:
        raise DatasetError(root, problems + [Problem(str(root), "no valid image left after skipping")])
    return Dataset(root=root, samples=kept, mask_source=mask_source, skipped=per_image)


def _require_images_dir(root: Path) -> None:
    if not (root / "images").is_dir():
        raise DatasetError(root, [Problem(str(root), "has no images/ folder; put the photos in "
                                          f"{root}/images/ (subfolders = labels)")])


def _discover_images(root: Path, images_dir: Path, problems: list[Problem], max_pixels: int) -> dict[str, Sample]:
    samples: dict[str, Sample] = {}
    outputs: dict[str, str] = {}  # lower-cased output name -> image id, to catch a.jpg/a.png and A.png/a.png
    for path in _walk_files(images_dir, root, problems):
        rel = path.relative_to(images_dir)
        image_id = rel.as_posix()
        shown = f"images/{image_id}"
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            problems.append(Problem(shown, "is not an image this toolkit reads (.png .jpg .jpeg .webp); "
                                    "convert it or move it out of images/", image=image_id))
            continue
        output_key = str(PurePosixPath(image_id).with_suffix(".png")).lower()
        if output_key in outputs:
            problems.append(Problem(shown, f"would share its output name with images/{outputs[output_key]} "
                                    "(names differ only by extension or case); rename one of them",
                                    image=image_id))
            continue
        outputs[output_key] = image_id
        try:
            if path.stat().st_size == 0:
                raise UserError("empty (0-byte) file")
            upright = _open_upright(path, max_pixels)
        except Image.DecompressionBombError as err:
            problems.append(Problem(shown, f"refused as a decompression bomb ({err}); shrink it or remove it",
                                    image=image_id))
            continue
        except Exception as err:  # PIL raises many types for corrupt, truncated or unreadable files
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            problems.append(Problem(shown, f"cannot be read as an image ({reason}); re-export or remove it",
                                    image=image_id))
            continue
        label = rel.parts[0] if len(rel.parts) > 1 else None
        samples[image_id] = Sample(image_id, path, label, upright.width, upright.height, max_pixels=max_pixels)
    return samples


def _read_text(path: Path, root: Path, problems: list[Problem]) -> str | None:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        problems.append(Problem(_relative(path, root), f"is not UTF-8 (byte {err.start}); save it as UTF-8"))
    except OSError as err:
        problems.append(Problem(_relative(path, root), f"cannot be read ({err.strerror}); check permissions"))
    return None


def _attach_csv_boxes(root: Path, csv_path: Path, samples: dict[str, Sample], problems: list[Problem]) -> None:
    name = _relative(csv_path, root)
    if Path(os.path.realpath(root)) not in Path(os.path.realpath(csv_path)).parents:
        problems.append(Problem(name, "is a symlink that leads outside the dataset folder; copy the file into the "
                                "dataset instead"))
        return
    text = _read_text(csv_path, root, problems)
    if text is None:
        return
    reader = csv.reader(io.StringIO(text, newline=""))  # newline="": \r, \n and \r\n all end a row, as in open()
    try:
        header = next(reader, None)
        numbered = [(reader.line_num, row) for row in reader]
    except csv.Error as err:  # not a ValueError: would escape the CLI as a traceback
        problems.append(Problem(name, f"is not valid CSV ({err}); save it again as plain comma-separated text",
                                line=reader.line_num))
        return
    if header is None:
        problems.append(Problem(name, "is empty; write the header image,x,y,width,height and one row per hole"))
        return
    header = [h.strip() for h in header]
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        problems.append(Problem(name, f"header lacks column(s) {', '.join(missing)}; "
                                "the header must be image,x,y,width,height", line=1))
        return
    column = {c: header.index(c) for c in CSV_COLUMNS}
    seen_rows: dict[tuple, int] = {}
    reported = {p.image for p in problems}  # images already refused (unreadable, not an image, ...)
    refused_dirs = tuple(p.file + "/" for p in problems if p.image is None)  # folders symlinked out, loops
    n_rows = 0
    for line, row in numbered:
        if not row or all(not cell.strip() for cell in row):
            continue
        n_rows += 1
        if len(row) < len(header):
            problems.append(Problem(name, f"has {len(row)} fields, the header has {len(header)}; fix the row",
                                    line=line,
                                    image=row[column["image"]].strip() if len(row) > column["image"] else None))
            continue
        image_id = row[column["image"]].strip().replace("\\", "/")
        unsafe = _unsafe_relpath(image_id)
        if unsafe:
            problems.append(Problem(name, unsafe, line=line, image=image_id or None))
            continue
        image_id = str(PurePosixPath(image_id))  # "./cats/a.jpg" -> "cats/a.jpg"
        try:
            x, y, w, h = (int(row[column[c]].strip()) for c in ("x", "y", "width", "height"))
        except ValueError:
            values = ",".join(row[column[c]] for c in ("x", "y", "width", "height"))
            problems.append(Problem(name, f"x,y,width,height must be whole numbers of pixels, got {values}",
                                    line=line, image=image_id))
            continue
        sample = samples.get(image_id)
        if sample is None:
            if image_id not in reported and not f"images/{image_id}".startswith(refused_dirs):
                what = ("is a folder or hidden file, not an image" if (root / "images" / image_id).exists()
                        else "does not exist")
                problems.append(Problem(name, f"names images/{image_id}, which {what}; fix the path "
                                        "(relative to images/) or drop the row", line=line, image=image_id))
            continue
        key = (image_id, x, y, w, h)
        if key in seen_rows:
            problems.append(Problem(name, f"repeats line {seen_rows[key]}; remove the duplicate row",
                                    line=line, image=image_id))
            continue
        seen_rows[key] = line
        if w <= 0 or h <= 0:
            problems.append(Problem(name, f"hole of size {w}x{h}; width and height must be positive",
                                    line=line, image=image_id))
            continue
        if x < 0 or y < 0 or x + w > sample.width or y + h > sample.height:
            problems.append(Problem(name, f"hole x={x} y={y} {w}x{h} does not fit inside images/{image_id} "
                                    f"({sample.width}x{sample.height}); holes must lie inside the image",
                                    line=line, image=image_id))
            continue
        sample.boxes.append((x, y, w, h))
    if n_rows == 0:
        problems.append(Problem(name, "has a header but no rows; add one row per hole"))
        return
    for sample in samples.values():
        if not sample.boxes and not any(p.image == sample.image_id for p in problems):
            problems.append(Problem(name, f"has no hole for images/{sample.image_id}; add a row for it or "
                                    "move the image out of images/", image=sample.image_id))


def _attach_mask_pngs(root: Path, masks_dir: Path, samples: dict[str, Sample], problems: list[Problem]) -> None:
    wanted = {s.output_relpath: s for s in samples.values()}
    found = set()
    for path in _walk_files(masks_dir, root, problems,
                            image_of=lambda rel: wanted[rel].image_id if rel in wanted else None):
        rel = path.relative_to(masks_dir).as_posix()
        found.add(rel)
        if rel not in wanted:
            problems.append(Problem(f"masks/{rel}", "has no matching image under images/ (same relative path, "
                                    "any extension); remove it or fix its name"))
    for rel, sample in wanted.items():
        path = masks_dir / rel
        shown = f"masks/{rel}"
        if rel not in found:  # absent, or a symlink out of the dataset (reported by _walk_files, never read)
            if not any(p.file == shown for p in problems):
                problems.append(Problem(shown, f"is missing: every image needs a mask (for images/{sample.image_id})",
                                        image=sample.image_id))
            continue
        try:
            if path.stat().st_size == 0:
                raise UserError("empty (0-byte) file")
            mask = load_mask_png(path, sample.max_pixels)
        except Exception as err:
            problems.append(Problem(shown, f"cannot be read as an image ({str(err).splitlines()[0]}); "
                                    "re-export it", image=sample.image_id))
            continue
        if mask.shape != (sample.height, sample.width):
            problems.append(Problem(shown, f"is {mask.shape[1]}x{mask.shape[0]} but images/{sample.image_id} is "
                                    f"{sample.width}x{sample.height}; masks must match their image's size",
                                    image=sample.image_id))
            continue
        if not mask.any():
            problems.append(Problem(shown, "has no hole (no pixel >= 128); paint the hole white or remove "
                                    "the image", image=sample.image_id))
            continue
        sample.mask_path = path


def discover_images(root: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[Sample]:
    """The images of a dataset folder, validated, without looking at any mask source."""
    root = Path(root)
    _require_images_dir(root)
    problems: list[Problem] = []
    samples = _discover_images(root, root / "images", problems, max_pixels)
    if not samples and not problems:
        problems.append(Problem(f"{root}/images", "holds no images (.png .jpg .jpeg .webp); add some"))
    if problems:
        raise DatasetError(root, problems)
    return list(samples.values())
