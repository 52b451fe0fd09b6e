"""`diffinpaint data split`: one dataset folder -> a training folder and a test folder that share no photo.

    diffinpaint data split DATA --test-fraction 0.1 --seed 0 --out-train TRAIN --out-test TEST [--group-by ...]

Images are first joined into groups that must stay on one side (union-find, so groups that share an image merge):
  * the same pixels: the fingerprint of the decoded image (`util.files.pixel_fingerprint`, as training_set.json
    records), so one photo saved under two names or in two formats is one group;
  * near-duplicates, always: perceptual hashes within `near_duplicates.NEAR_DISTANCE` (JPEG re-saves, small
    re-crops, resizes, mirrored copies), the same test eval's leakage check applies, so a split never trips it;
  * DATA/groups.csv (header image,group) when present: `data demo` writes it (the photo each crop was cut from),
    so the demo's crops of one photo stay together with no option; rows naming absent images are ignored;
  * each --group-by: `label` (first folder under images/), `regex:PATTERN` (searched in the path under images/;
    its first group, or the whole match, names the group) or a CSV file of image,group (`csv:FILE` or FILE.csv).
    Images a rule does not cover (no label, no match, no row) stay on their own unless another rule joins them.
Each group's place in the order is its first member's SHA-256(seed, fingerprint); groups are taken in that order
whenever one brings the test side closer to round(fraction × images) (a group that would overshoot more than it
fills is skipped). Deterministic for a seed, independent of file names and of the order images were found in;
for a folder of distinct, ungrouped images it is the plain cut in that order.

Each side is a complete dataset folder: images copied byte for byte at the same relative path (labels = first
subfolder, kept), the mask source carried along (masks.csv rows of its images, or their masks/*.png files), the
rows of groups.csv for its images, and split.json saying where it came from and how images were grouped. A folder
without a mask source splits into two image folders (training folders for models that make their own holes). Both
sides are built under temporary names beside the targets and renamed into place at the end, so a failure leaves no
half-written folder; bad input writes nothing.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..util.errors import UserError
from ..util.files import atomic_write_text
from .dataset import CSV_COLUMNS, Sample, discover_images, load_dataset
from .near_duplicates import NEAR_DISTANCE, ImageKey, image_key, near_pairs

GROUPS_FILE = "groups.csv"  # DATA/groups.csv: image,group (written by `data demo`, read by every split)
GROUP_BY_HELP = ("give `label` (first folder under images/), `regex:PATTERN` (its first group or the whole match "
                 "names the group, e.g. regex:^([^/]+/[^_]+)_) or a CSV file of image,group (csv:FILE or FILE.csv)")


def split_key(seed: int, fingerprint: str) -> str:
    return hashlib.sha256(f"{seed}:{fingerprint}".encode()).hexdigest()


# ---------------------------------------------------------------------------------------------- grouping rules


@dataclass
class GroupRule:
    """One source of groups: `label`, `regex:PATTERN`, a CSV file (given), or DATA/groups.csv (recorded)."""

    kind: str  # "label" | "regex" | "csv" | "recorded"
    spec: str  # as the user wrote it (or the recorded file's name)
    pattern: re.Pattern | None = None
    path: Path | None = None
    rows: list[tuple[str, str]] = field(default_factory=list)  # (image, group) of a CSV

    def describe(self) -> str:
        return f"{GROUPS_FILE} (recorded)" if self.kind == "recorded" else f"--group-by {self.spec}"


def _read_group_csv(path: Path, what: str) -> list[tuple[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            if "image" not in columns or "group" not in columns:
                raise UserError(f"{what} {path} needs a header with the columns image,group (found "
                                f"{','.join(columns) or 'nothing'}); one row per image: its path under images/ "
                                "and a group name")
            reader.fieldnames = columns
            return [(str(row["image"] or "").strip(), str(row["group"] or "").strip()) for row in reader]
    except OSError as err:
        raise UserError(f"{what} {path} cannot be read ({err.strerror or type(err).__name__}); give a CSV file "
                        "of image,group") from None
    except (csv.Error, UnicodeDecodeError) as err:
        raise UserError(f"{what} {path} is not a readable CSV ({type(err).__name__}); give a UTF-8 CSV of "
                        "image,group") from None


def parse_group_by(spec: str) -> GroupRule:
    """A --group-by value, checked before any image is read."""
    if spec == "label":
        return GroupRule("label", spec)
    if spec.startswith("regex:"):
        try:
            pattern = re.compile(spec[len("regex:"):])
        except re.error as err:
            raise UserError(f"--group-by {spec}: not a regular expression ({err}); {GROUP_BY_HELP}") from None
        if not pattern.pattern:
            raise UserError(f"--group-by {spec}: the pattern is empty; {GROUP_BY_HELP}")
        return GroupRule("regex", spec, pattern=pattern)
    if spec.startswith("csv:") or spec.lower().endswith(".csv"):
        path = Path(spec[len("csv:"):] if spec.startswith("csv:") else spec)
        if not path.is_file():
            raise UserError(f"--group-by {spec}: no such file {path}; {GROUP_BY_HELP}")
        return GroupRule("csv", spec, path=path, rows=_read_group_csv(path, "--group-by"))
    raise UserError(f"--group-by {spec}: not a grouping rule; {GROUP_BY_HELP}")


def rule_groups(rule: GroupRule, samples: list[Sample]) -> tuple[list[tuple[str, str]], str]:
    """(image id, group name) pairs under one rule (an image in two groups joins them), and a line saying what the
    rule did."""
    ids = {s.image_id for s in samples}
    pairs: list[tuple[str, str]] = []
    note = ""
    if rule.kind == "label":
        pairs = [(s.image_id, s.label) for s in samples if s.label is not None]
        if not pairs:
            raise UserError(f"--group-by label: none of the {len(samples)} images is in a label folder (images/"
                            f"LABEL/...), so there is nothing to group by; {GROUP_BY_HELP}")
    elif rule.kind == "regex":
        for s in samples:
            match = rule.pattern.search(s.image_id)
            value = None if match is None else match.group(1) if rule.pattern.groups else match.group(0)
            if value is not None:
                pairs.append((s.image_id, value))
        if not pairs:
            raise UserError(f"--group-by {rule.spec} matches none of the {len(samples)} image paths (e.g. "
                            f"{samples[0].image_id}); it is searched in the path under images/: check the pattern, "
                            f"or {GROUP_BY_HELP}")
    else:
        unknown = [image for image, _ in rule.rows if image not in ids]
        if unknown and rule.kind == "csv":
            raise UserError(f"--group-by {rule.spec}: {len(unknown)} row(s) name images that are not in the "
                            f"dataset (e.g. {unknown[0]!r}); use paths under images/, as in masks.csv")
        if unknown:
            note = f"; {len(unknown)} row(s) name images not in this folder, ignored"
        pairs = [(image, group) for image, group in rule.rows if image in ids and group]
    covered = {image for image, _ in pairs}
    alone = len(samples) - len(covered)
    return pairs, (f"{rule.describe()}: {len(covered)} images in {len({g for _, g in pairs})} groups"
                   + (f", {alone} on their own" if alone else "") + note)


# ---------------------------------------------------------------------------------------------- union-find


class _Groups:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)

    def members(self) -> list[list[int]]:
        out: dict[int, list[int]] = {}
        for i in range(len(self.parent)):
            out.setdefault(self.find(i), []).append(i)
        return list(out.values())


@dataclass
class Grouping:
    groups: list[list[int]]  # sample indices, each group in dataset order
    near: list[tuple[int, int, int]]  # near-duplicate pairs (i, j, distance)
    notes: list[str]  # one line per rule


def group_samples(samples: list[Sample], keys: list[ImageKey], rules: Sequence[GroupRule]) -> Grouping:
    """Union of every rule: identical pixels, near-duplicates, each recorded or given rule."""
    union = _Groups(len(samples))
    index = {s.image_id: i for i, s in enumerate(samples)}
    first_with: dict[str, int] = {}
    for i, key in enumerate(keys):
        union.join(first_with.setdefault(key.fingerprint, i), i)
    near = near_pairs([k.phash for k in keys], [k.phash_flip for k in keys], NEAR_DISTANCE)
    for i, j, _ in near:
        union.join(i, j)
    n_exact = len(samples) - len(set(k.fingerprint for k in keys))
    notes = [f"near-duplicates (perceptual hash within {NEAR_DISTANCE} of 64 bits): {len(near)} pair(s)"
             + (f", e.g. {samples[near[0][0]].image_id} ~ {samples[near[0][1]].image_id} (distance {near[0][2]})"
                if near else "") + (f"; identical pixels: {n_exact} extra copies" if n_exact else "")]
    for rule in rules:
        pairs, note = rule_groups(rule, samples)
        notes.append(note)
        first_in: dict[str, int] = {}
        for image, group in pairs:
            i = index[image]
            union.join(first_in.setdefault(group, i), i)
    return Grouping(union.members(), near, notes)


def assign(samples: list[Sample], grouping: Grouping, keys: list[ImageKey], test_fraction: float, seed: int
           ) -> tuple[list[Sample], list[Sample]]:
    """(train, test), in dataset order; every group on one side."""
    target = round(test_fraction * len(samples))
    order = sorted(grouping.groups, key=lambda g: min(split_key(seed, keys[i].fingerprint) for i in g))
    test: set[int] = set()
    for group in order:
        if len(test) < target and len(group) < 2 * (target - len(test)):  # brings the test side closer
            test.update(group)
    return ([s for i, s in enumerate(samples) if i not in test], [s for i, s in enumerate(samples) if i in test])


# ---------------------------------------------------------------------------------------------- writing


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


def _groups_csv(rows: list[tuple[str, str]], samples: list[Sample]) -> str:
    ids = {s.image_id for s in samples}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "group"])
    writer.writerows(row for row in rows if row[0] in ids)
    return buffer.getvalue()


def _write_side(tmp: Path, samples: list[Sample], mask_source: str | None, record: dict,
                recorded: GroupRule | None) -> None:
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
    if recorded is not None:
        atomic_write_text(tmp / GROUPS_FILE, _groups_csv(recorded.rows, samples))
    atomic_write_text(tmp / "split.json", json.dumps(record, indent=2) + "\n")


def split_dataset(data: str | Path, test_fraction: float, seed: int, out_train: str | Path, out_test: str | Path,
                  group_by: Sequence[str] = (), log: Callable[[str], None] | None = None) -> tuple[int, int]:
    """Write the two folders; returns (train images, test images). `log` gets one line per grouping rule."""
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
    rules = [parse_group_by(spec) for spec in group_by]
    recorded = None
    if (data / GROUPS_FILE).is_file():
        recorded = GroupRule("recorded", GROUPS_FILE, path=data / GROUPS_FILE,
                             rows=_read_group_csv(data / GROUPS_FILE, "the recorded groups"))
        rules.insert(0, recorded)
    has_masks = (data / "masks.csv").exists() or (data / "masks").exists()
    if has_masks:
        dataset = load_dataset(data)  # validates every image and mask; a problem stops here, nothing written
        samples, mask_source = dataset.samples, dataset.mask_source
    else:
        samples, mask_source = discover_images(data), None

    # 2. Group images that must stay together, then decide each group's side
    keys = [image_key(s.load_image()) for s in samples]
    grouping = group_samples(samples, keys, rules)
    train, test = assign(samples, grouping, keys, test_fraction, seed)
    largest = max(len(g) for g in grouping.groups)
    if not train or not test:
        empty = "test" if not test else "training"
        raise UserError(f"--test-fraction {test_fraction} of {len(samples)} images ({len(grouping.groups)} groups "
                        f"that stay on one side, the largest {largest} images) leaves the {empty} side empty; "
                        "choose a fraction that puts images on both sides, or group less")
    if log is not None:
        for note in grouping.notes:
            log(note)
        log(f"{len(samples)} images in {len(grouping.groups)} groups (the largest {largest} images); test side "
            f"{len(test)} images (target {round(test_fraction * len(samples))})")

    # 3. Write both sides under temporary names, then rename them into place
    side_of = {s.image_id: "test" for s in test}
    made = []
    try:
        for side, chosen, out in (("train", train, out_train), ("test", test, out_test)):
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.parent / f".{out.name}.split-{os.getpid()}"
            if tmp.exists():
                shutil.rmtree(tmp)
            made.append(tmp)
            near = [[samples[i].image_id, samples[j].image_id, d] for i, j, d in grouping.near
                    if side_of.get(samples[i].image_id, "train") == side]
            record = {"format": "diffinpaint-split", "version": 2, "source": str(data.resolve()), "side": side,
                      "seed": seed, "test_fraction": test_fraction, "n_images": len(chosen),
                      "n_source_images": len(samples),
                      "rule": "groups (union of: identical pixels, near-duplicates, recorded groups.csv, --group-by) "
                              "on one side; groups ordered by sha256(seed:pixel fingerprint) of their first member",
                      "groups": {"n_groups": len(grouping.groups), "largest": largest,
                                 "near_distance": NEAR_DISTANCE, "rules": grouping.notes,
                                 "near_duplicates": near[:1000], "n_near_duplicates": len(near)}}
            _write_side(tmp, chosen, mask_source, record, recorded)
        for tmp, out in zip(made, (out_train, out_test)):
            if out.is_dir():
                out.rmdir()  # checked empty above; rename needs the name free
            os.replace(tmp, out)
    finally:
        for tmp in made:
            if tmp.exists():
                shutil.rmtree(tmp)
    return len(train), len(test)
