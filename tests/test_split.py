"""`diffinpaint data split`: disjoint by content, deterministic, masks carried along, bad input refused untouched."""
from __future__ import annotations

import csv
import json
import shutil

import pytest
from PIL import Image

from diffinpaint.cli import main
from diffinpaint.data import load_dataset
from diffinpaint.data.split import split_dataset
from diffinpaint.util.files import pixel_fingerprint


def tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def fingerprints(root):
    return {s.image_id: pixel_fingerprint(s.load_image()) for s in load_dataset(root).samples}


@pytest.fixture
def with_duplicates(demo_medium, tmp_path):
    """demo_medium (18 images, masks.csv) plus one of its photos twice more, under other names and another label,
    as PNG and as lossless WebP (other bytes, same pixels), each with its own holes."""
    data = tmp_path / "data"
    shutil.copytree(demo_medium, data)
    first = load_dataset(data).samples[0]
    pixels = first.load_image()
    (data / "images" / "copies").mkdir()
    Image.fromarray(pixels).save(data / "images" / "copies" / "renamed.png")
    Image.fromarray(pixels).save(data / "images" / "copies" / "again.webp", lossless=True)
    with open(data / "masks.csv", "a", newline="") as f:
        csv.writer(f).writerows([["copies/renamed.png", 0, 0, 20, 20], ["copies/again.webp", 5, 5, 30, 30]])
    return data, first.image_id


def test_sides_are_disjoint_by_content_and_duplicates_stay_together(with_duplicates, tmp_path):
    data, original = with_duplicates
    n_train, n_test = split_dataset(data, 0.3, 0, tmp_path / "train", tmp_path / "test")
    assert n_train + n_test == 20 and n_test == pytest.approx(0.3 * 20, abs=2)
    train, test = fingerprints(tmp_path / "train"), fingerprints(tmp_path / "test")
    assert not set(train.values()) & set(test.values())
    assert set(train) | set(test) == set(fingerprints(data)) and not set(train) & set(test)
    side = train if original in train else test
    assert {"copies/renamed.png", "copies/again.webp"} <= set(side)  # the same photo: one side


def test_mask_rows_and_mask_pngs_are_carried_along_and_both_sides_pass_data_check(with_duplicates, tmp_path, capsys):
    data, _ = with_duplicates
    assert main(["data", "split", str(data), "--test-fraction", "0.25", "--seed", "3", "--out-train",
                 str(tmp_path / "tr"), "--out-test", str(tmp_path / "te")]) == 0
    source = {s.image_id: s for s in load_dataset(data).samples}
    for side in ("tr", "te"):
        assert main(["data", "check", str(tmp_path / side)]) == 0
        for s in load_dataset(tmp_path / side).samples:
            assert s.boxes == source[s.image_id].boxes and s.label == source[s.image_id].label
            assert s.path.read_bytes() == source[s.image_id].path.read_bytes()  # copied byte for byte
        record = json.loads((tmp_path / side / "split.json").read_text())
        assert record["seed"] == 3 and record["test_fraction"] == 0.25
    # free-form masks (masks/*.png) travel with their images
    assert main(["data", "masks", "--data", str(data), "--protocol", "thick", "--replace"]) == 0
    assert split_dataset(data, 0.5, 1, tmp_path / "tr2", tmp_path / "te2")
    for side in ("tr2", "te2"):
        for s in load_dataset(tmp_path / side).samples:
            assert s.mask_path.read_bytes() == (data / "masks" / s.output_relpath).read_bytes()


def test_split_is_deterministic_and_the_seed_matters(demo_medium, tmp_path):
    split_dataset(demo_medium, 0.3, 0, tmp_path / "a" / "tr", tmp_path / "a" / "te")
    split_dataset(demo_medium, 0.3, 0, tmp_path / "b" / "tr", tmp_path / "b" / "te")
    assert tree(tmp_path / "a" / "te") == tree(tmp_path / "b" / "te")
    split_dataset(demo_medium, 0.3, 1, tmp_path / "c" / "tr", tmp_path / "c" / "te")
    assert set(tree(tmp_path / "a" / "te")) != set(tree(tmp_path / "c" / "te"))


def test_the_side_follows_content_not_names(demo_small, tmp_path):
    """Renaming every file keeps every photo on its side."""
    renamed = tmp_path / "renamed"
    shutil.copytree(demo_small, renamed)
    rows = (renamed / "masks.csv").read_text().splitlines()
    for path in sorted((renamed / "images").rglob("*.png")):
        path.rename(path.with_name("x_" + path.name))
    rows = [rows[0]] + [r.replace("/", "/x_", 1) for r in rows[1:]]
    (renamed / "masks.csv").write_text("\n".join(rows) + "\n")
    split_dataset(demo_small, 0.4, 0, tmp_path / "tr1", tmp_path / "te1")
    split_dataset(renamed, 0.4, 0, tmp_path / "tr2", tmp_path / "te2")
    assert sorted(fingerprints(tmp_path / "te1").values()) == sorted(fingerprints(tmp_path / "te2").values())


@pytest.mark.parametrize("case", ["fraction-0", "fraction-1", "empty-side", "non-empty-out", "same-out",
                                  "out-inside-data"])
def test_bad_input_is_one_line_exit_2_and_nothing_written(demo_small, tmp_path, capsys, case):
    data = tmp_path / "data"
    shutil.copytree(demo_small, data)
    before = tree(data)
    train, test = tmp_path / "tr", tmp_path / "te"
    fraction = {"fraction-0": "0", "fraction-1": "1", "empty-side": "0.01"}.get(case, "0.3")
    if case == "non-empty-out":
        test.mkdir()
        (test / "thesis.tex").write_text("precious")
    if case == "same-out":
        test = train
    if case == "out-inside-data":
        train = data / "train"
    argv = ["data", "split", str(data), "--test-fraction", fraction, "--out-train", str(train), "--out-test", str(test)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    expected = {"fraction-0": "between 0 and 1", "fraction-1": "between 0 and 1", "empty-side": "test side empty",
                "non-empty-out": "not empty", "same-out": "two different folders",
                "out-inside-data": "overlaps the dataset"}[case]
    assert expected in err[0]
    assert tree(data) == before
    assert not train.exists() or case == "same-out" and not any(train.iterdir())
    if case == "non-empty-out":
        assert sorted(p.name for p in test.iterdir()) == ["thesis.tex"]
    else:
        assert not test.exists()
    assert not list(tmp_path.glob(".*split-*"))


def test_a_folder_without_masks_splits_into_image_folders(tmp_path, demo_small):
    images = tmp_path / "plain"
    shutil.copytree(demo_small / "images", images / "images")
    n_train, n_test = split_dataset(images, 0.5, 0, tmp_path / "tr", tmp_path / "te")
    assert n_train + n_test == 9 and n_train and n_test
    assert not (tmp_path / "tr" / "masks.csv").exists() and not (tmp_path / "tr" / "masks").exists()
    assert len(list((tmp_path / "te" / "images").rglob("*.png"))) == n_test
