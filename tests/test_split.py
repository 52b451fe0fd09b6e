"""`diffinpaint data split`: disjoint by content, deterministic, masks carried along, bad input refused untouched."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
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
    groups = (renamed / "groups.csv").read_text().splitlines()  # the demo's photo groups, renamed with them
    (renamed / "groups.csv").write_text("\n".join([groups[0]] + [r.replace("/", "/x_", 1) for r in groups[1:]]))
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


# ---------------------------------------------------------------------------------------------- groups


def scene_of(image_id: str) -> str:
    """The demo photo a crop was cut from (the two motorcycle photos are one stereo scene)."""
    photo = image_id.split("/")[-1].rsplit("_", 1)[0]
    return "motorcycle" if photo.startswith("motorcycle") else photo


def image_ids(root):
    return {p.relative_to(root / "images").as_posix() for p in (root / "images").rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def demo_three(tmp_path_factory):
    """The demo's layout: 3 crops of each of 9 photos (48 px), groups.csv written by `data demo`."""
    from diffinpaint.data.demo import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("demo3") / "data", size=48, crops_per_photo=3, hole_size=12)


@pytest.mark.parametrize("seed,fraction", [(0, 0.34), (1, 0.34), (2, 0.2), (3, 0.5)])
def test_demo_split_puts_no_photo_on_both_sides(demo_three, tmp_path, capsys, seed, fraction):
    assert main(["data", "split", str(demo_three), "--test-fraction", str(fraction), "--seed", str(seed),
                 "--out-train", str(tmp_path / "tr"), "--out-test", str(tmp_path / "te")]) == 0  # no option
    train, test = image_ids(tmp_path / "tr"), image_ids(tmp_path / "te")
    assert len(train) + len(test) == 27 and train and test
    assert not {scene_of(i) for i in train} & {scene_of(i) for i in test}
    assert "groups.csv (recorded): 27 images in 8 groups" in capsys.readouterr().out
    for side, ids in (("tr", train), ("te", test)):  # each side carries its rows of groups.csv
        rows = list(csv.DictReader(open(tmp_path / side / "groups.csv")))
        assert {r["image"] for r in rows} == ids and all(r["group"] == scene_of(r["image"]) for r in rows)
        assert json.loads((tmp_path / side / "split.json").read_text())["groups"]["n_groups"] == 8


def test_the_default_demo_split_is_18_and_9_with_whole_photos(demo_three, tmp_path):
    n_train, n_test = split_dataset(demo_three, 0.34, 0, tmp_path / "tr", tmp_path / "te")
    assert (n_train, n_test) == (18, 9)


def photo_crops(root, names, size=64):
    """images/<name>.png: centre crops of different scikit-image photos, no mask source."""
    from diffinpaint.data.demo import demo_crops

    crops = {stem.rsplit("_", 1)[0]: crop for _, stem, crop in demo_crops(size, 1)}
    for name, source in names.items():
        path = root / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(crops[source]).save(path, **({"quality": 80} if name.endswith(".jpg") else {}))
    return root


def sides(tmp_path, data, seed, fraction=0.5, group_by=()):
    tr, te = tmp_path / f"tr{seed}", tmp_path / f"te{seed}"
    split_dataset(data, fraction, seed, tr, te, group_by=group_by)
    return image_ids(tr), image_ids(te)


def test_near_duplicates_stay_on_one_side_without_any_option(tmp_path):
    """JPEG re-save, 2-px re-crop, 0.8x resize and mirrored copy of one photo, under other names and labels."""
    data = photo_crops(tmp_path / "data", {"a/chelsea.png": "chelsea", "a/astronaut.png": "astronaut",
                                           "b/coffee.png": "coffee", "b/rocket.png": "rocket",
                                           "c/ihc.png": "ihc", "c/retina.png": "retina",
                                           "web/cat.jpg": "chelsea"})
    cat = np.asarray(Image.open(data / "images" / "a" / "chelsea.png"))
    Image.fromarray(cat[2:, 2:]).save(data / "images" / "web" / "cat_crop.png")
    Image.fromarray(cat).resize((51, 51), Image.BICUBIC).save(data / "images" / "small.png")
    (data / "images" / "z").mkdir()
    Image.fromarray(np.ascontiguousarray(cat[:, ::-1])).save(data / "images" / "z" / "mirror.png")
    copies = {"a/chelsea.png", "web/cat.jpg", "web/cat_crop.png", "small.png", "z/mirror.png"}
    for seed in range(4):
        train, test = sides(tmp_path, data, seed)
        assert copies <= train or copies <= test, (seed, train, test)
        record = json.loads((tmp_path / f"te{seed}" / "split.json").read_text())["groups"]
        assert record["n_groups"] == 6
    near = record["near_duplicates"] + json.loads((tmp_path / "tr3" / "split.json").read_text())["groups"][
        "near_duplicates"]
    assert {frozenset(p[:2]) for p in near} >= {frozenset({"a/chelsea.png", "web/cat.jpg"}),
                                               frozenset({"a/chelsea.png", "z/mirror.png"})}


def test_group_by_label_regex_and_csv_keep_groups_on_one_side(tmp_path, capsys):
    # patients: two different photos each, flat folder, named p<patient>_<n>.png
    names = {"p1_0.png": "chelsea", "p1_1.png": "rocket", "p2_0.png": "astronaut", "p2_1.png": "ihc",
             "p3_0.png": "coffee", "p3_1.png": "retina", "p4_0.png": "hubble_deep_field",
             "p4_1.png": "motorcycle_left"}
    data = photo_crops(tmp_path / "data", names)
    patient = lambda ids: {i.split("_")[0] for i in ids}  # noqa: E731
    for seed in range(5):
        train, test = sides(tmp_path / "regex", data, seed, group_by=[r"regex:^p(\d+)_"])
        assert not patient(train) & patient(test) and len(test) in (2, 4, 6)
    # the same groups from a CSV file
    (tmp_path / "groups.csv").write_text("image,group\n" + "".join(f"{n},{n[:2]}\n" for n in names))
    for seed in range(5):
        train, test = sides(tmp_path / "csv", data, seed, group_by=[str(tmp_path / "groups.csv")])
        assert not patient(train) & patient(test)
    # label = first folder under images/
    labelled = photo_crops(tmp_path / "labelled", {f"{n[:2]}/{n}": s for n, s in names.items()})
    for seed in range(5):
        train, test = sides(tmp_path / "label", labelled, seed, group_by=["label"])
        assert not {i.split("/")[0] for i in train} & {i.split("/")[0] for i in test}
    # through the CLI, repeatable, with what each rule did
    joined = r"regex:^p[12]/.*_(0)"  # joins patients 1 and 2 through their first images
    assert main(["data", "split", str(labelled), "--test-fraction", "0.5", "--out-train", str(tmp_path / "t1"),
                 "--out-test", str(tmp_path / "t2"), "--group-by", "label", "--group-by", joined]) == 0
    out = capsys.readouterr().out
    assert "--group-by label: 8 images in 4 groups" in out
    assert f"--group-by {joined}: 2 images in 1 groups, 6 on their own" in out and "8 images in 3 groups" in out
    train, test = image_ids(tmp_path / "t1"), image_ids(tmp_path / "t2")
    assert {i[:2] for i in test} in ({"p1", "p2"}, {"p3", "p4"}) and len(train) == len(test) == 4


@pytest.mark.parametrize("case", ["unknown-rule", "bad-regex", "regex-matches-nothing", "csv-unknown-image",
                                  "csv-no-group-column", "csv-missing", "one-big-group", "no-labels"])
def test_bad_group_by_is_one_line_exit_2_and_nothing_written(demo_small, tmp_path, capsys, case):
    data = demo_small
    if case == "no-labels":  # a flat folder: every image straight under images/
        data = photo_crops(tmp_path / "flat", {"a.png": "chelsea", "b.png": "rocket"})
    table = tmp_path / "g.csv"
    table.write_text({"csv-unknown-image": "image,group\ncat/chelsea_0.png,a\ncat/typo.png,a\n",
                      "csv-no-group-column": "image,patient\ncat/chelsea_0.png,a\n"}.get(case, "image,group\n"))
    rule = {"unknown-rule": "folder", "bad-regex": "regex:(", "regex-matches-nothing": "regex:^nothing/",
            "csv-unknown-image": str(table), "csv-no-group-column": f"csv:{table}",
            "csv-missing": str(tmp_path / "nope.csv"), "one-big-group": "regex:png", "no-labels": "label"}[case]
    argv = ["data", "split", str(data), "--test-fraction", "0.3", "--out-train", str(tmp_path / "tr"),
            "--out-test", str(tmp_path / "te"), "--group-by", rule]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    expected = {"unknown-rule": "not a grouping rule", "bad-regex": "not a regular expression",
                "regex-matches-nothing": "matches none of the 9 image paths",
                "csv-unknown-image": "1 row(s) name images that are not in the dataset (e.g. 'cat/typo.png')",
                "csv-no-group-column": "columns image,group", "csv-missing": "no such file",
                "one-big-group": "(1 groups that stay on one side, the largest 9 images) leaves the test side empty",
                "no-labels": "none of the 2 images is in a label folder"}
    assert expected[case] in err[0]
    assert not (tmp_path / "tr").exists() and not (tmp_path / "te").exists()
