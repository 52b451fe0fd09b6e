"""Hostile input through the real CLI: every bad dataset ends in exit code 2, one `error:` line per problem naming
the file (and CSV line) and the fix, no traceback, and nothing written anywhere; odd but valid images are
converted to upright RGB PNGs; --skip-invalid runs the good images and lists the others in RUN/skipped.csv;
nothing is ever written outside --out, whatever the dataset's paths and symlinks say.

The corpus is built at test time by tests/hostile_corpus.py (no binary files in git).
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffinpaint.cli import main

try:  # tests/ is on sys.path under pytest's default import mode; a package layout needs the other spelling
    import hostile_corpus as corpus
except ImportError:
    from tests import hostile_corpus as corpus

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

# ---------------------------------------------------------------------------------------------- helpers


def snapshot(top: Path, skip: Path | None = None) -> dict[str, tuple]:
    """Every entry under `top` (symlinks not followed): kind, size, mtime, link target."""
    entries = {}
    for dirpath, dirnames, filenames in os.walk(top):
        here = Path(dirpath)
        if skip is not None and (here == skip or skip in here.parents):
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            path = here / name
            if skip is not None and path == skip:
                continue
            st = path.lstat()
            target = os.readlink(path) if path.is_symlink() else None
            entries[str(path.relative_to(top))] = (st.st_mode, st.st_size, st.st_mtime_ns, target)
    return entries


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def run_cli(capsys, data: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    return cli(capsys, "run", "--model", "telea", "--data", data, "--out", out, "--no-progress", *extra)


def assert_refused(rc: int, err: str, expect: list[tuple[str, str]], root: Path, *, exact: bool = True) -> None:
    """Exit 2; only `error:` lines; a header line, then one line per expected problem naming the file (and CSV
    line), holding the expected fragment and a fix ("...; do this", "... must ...", "... needs ...")."""
    assert "Traceback" not in err, err
    assert not any(ch != "\n" and not ch.isprintable() for ch in err), f"control characters in stderr: {err!r}"
    assert rc == 2, f"exit code {rc}, stderr:\n{err}"
    lines = err.splitlines()
    assert lines, "no error message"
    assert all(line.startswith("error: ") for line in lines), f"a line without 'error: ':\n{err}"
    assert "problem" in lines[0] and "nothing was written" in lines[0], lines[0]
    problems = lines[1:]
    for file, fragment in expect:
        file = file.replace("ROOT", str(root))
        naming = [line for line in problems if line.startswith(f"error: {file}")]
        assert naming, f"no error line names {file!r}:\n{err}"
        assert any(fragment in line and any(fix in line.split(file, 1)[1] for fix in ("; ", " must ", " needs "))
                   for line in naming), (
            f"no line for {file!r} says {fragment!r} and a fix:\n{err}")
    if exact:
        assert len(problems) == len(expect), f"expected {len(expect)} problem line(s), got:\n{err}"


def output_files(out: Path) -> set[str]:
    images = out / "images"
    return {p.relative_to(images).as_posix() for p in images.rglob("*") if p.is_file()} if images.is_dir() else set()


def read_skipped(out: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO((out / "skipped.csv").read_text(encoding="utf-8"))))


def case_params(cases: dict[str, corpus.Case]):
    params = []
    for case_id, case in cases.items():
        marks = []
        if case.needs == "non-root":
            marks.append(pytest.mark.skipif(IS_ROOT, reason="root reads chmod-000 files; needs an unprivileged user"))
        params.append(pytest.param(case, id=case_id, marks=marks))
    return params


@pytest.fixture
def built(request, tmp_path):
    """(dataset root, outside folder, run folder) for the case in request.param."""
    case: corpus.Case = request.param
    root, outside, out = tmp_path / "data", tmp_path / "outside", tmp_path / "run"
    outside.mkdir()
    case.build(root, outside)
    return case, root, out


# ---------------------------------------------------------------------------------------------- refused


@pytest.mark.parametrize("built", case_params(corpus.BAD_CASES), indirect=True)
def test_run_refuses_bad_dataset_and_writes_nothing(built, capsys, tmp_path):
    case, root, out = built
    before = snapshot(tmp_path)
    rc, _, err = run_cli(capsys, root, out)
    assert_refused(rc, err, case.expect, root)
    assert not out.exists(), "the run folder was created for a refused dataset"
    assert snapshot(tmp_path) == before, "something was written although the dataset was refused"


@pytest.mark.parametrize("built", case_params(corpus.BAD_CASES), indirect=True)
def test_data_check_reports_the_same_problem(built, capsys):
    case, root, _ = built
    rc, out, err = cli(capsys, "data", "check", root)
    assert_refused(rc, err, case.expect, root)
    assert out == ""


@pytest.mark.parametrize("built", case_params(corpus.BAD_CASES), indirect=True)
def test_skip_invalid_drops_bad_images_but_not_bad_datasets(built, capsys, tmp_path):
    case, root, out = built
    before = snapshot(tmp_path)
    rc, stdout, err = run_cli(capsys, root, out, "--skip-invalid")
    if case.fatal:
        assert_refused(rc, err, case.expect, root, exact=False)
        assert not out.exists() and snapshot(tmp_path) == before
        return
    assert "Traceback" not in err
    assert rc == 0, err
    made = output_files(out)
    assert "a.png" in made, "the good image was not run"
    skipped = read_skipped(out)
    listed = {row["image"] for row in skipped}
    for bad in case.bad_images:
        assert bad in listed, f"{bad} not in skipped.csv: {skipped}"
    assert all(row["reason"] and row["file"] for row in skipped), skipped
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert {row["image"] for row in manifest}.isdisjoint(case.bad_images)
    assert "invalid skipped" in stdout


# ---------------------------------------------------------------------------------------------- accepted


@pytest.mark.parametrize("kind", list(corpus.GOOD_IMAGES), ids=list(corpus.GOOD_IMAGES))
def test_odd_but_valid_images_become_upright_rgb_png(kind, capsys, tmp_path):
    good = corpus.GOOD_IMAGES[kind]
    root, out = tmp_path / "data", tmp_path / "run"
    path = corpus.write(root / "images" / good.name, good.data())
    x, y, w, h = good.box
    corpus.write(root / "masks.csv", corpus.csv_text(f"{good.name},{x},{y},{w},{h}"))
    rc, _, err = run_cli(capsys, root, out)
    assert rc == 0, err
    result = Image.open(out / "images" / Path(good.name).with_suffix(".png").as_posix())
    assert result.format == "PNG" and result.mode == "RGB"
    assert result.size == (corpus.W, corpus.H), "output size is not the upright image size"
    pixels = np.asarray(result)
    keep = np.ones((corpus.H, corpus.W), bool)
    keep[y : y + h, x : x + w] = False
    expected = good.expected(path)
    assert expected.shape == pixels.shape
    np.testing.assert_array_equal(pixels[keep], expected[keep])


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_helper_really_rotates(orientation, tmp_path):
    """Guards the corpus itself: the stored JPEG is the rotated picture, and our independent un-rotation gives
    back the upright blocks (so the EXIF test above cannot pass by doing nothing)."""
    path = corpus.write(tmp_path / "r.jpg", corpus.exif_jpeg(corpus.blocky(), orientation))
    stored = np.asarray(Image.open(path).convert("RGB"))
    assert stored.shape[:2] == (corpus.W, corpus.H)  # stored tall, shown wide
    error = {o: np.abs(corpus.upright_from_stored(stored, o).astype(int) - corpus.blocky().astype(int)).mean()
             for o in (6, 8)}
    assert error[orientation] < 10 and error[14 - orientation] > 3 * error[orientation], error


def test_gray16_scaling_values():
    """The 16-bit expectation itself: 65535 -> 255, 32768 -> 128, 0 -> 0 (not clipped, not truncated)."""
    expected = dict(zip(corpus.GRAY16[0, :8].tolist(), corpus.GRAY16_EXPECTED[0, :8].tolist()))
    assert expected[65535] == 255 and expected[32768] == 128 and expected[0] == 0 and expected[257] == 1


@pytest.mark.parametrize("ending", [
    pytest.param("\n", id="LF"),
    pytest.param("\r\n", id="CRLF"),
    pytest.param("\r", id="CR-old-mac"),
])
@pytest.mark.parametrize("bom", [False, True], ids=["no-bom", "utf8-bom"])
def test_masks_csv_line_endings_and_bom_are_accepted(ending, bom, capsys, tmp_path):
    root, out = tmp_path / "data", tmp_path / "run"
    corpus.write(root / "images" / "a.png", corpus.png())
    corpus.write(root / "images" / "b.png", corpus.png(seed=1))
    text = ending.join([corpus.HEADER, corpus.GOOD_ROW, "b.png,1,1,4,4", "b.png,20,20,4,4"]) + ending
    corpus.write(root / "masks.csv", ("\ufeff" if bom else "") + text)
    rc, _, err = run_cli(capsys, root, out)
    assert rc == 0 and "Traceback" not in err, err
    assert output_files(out) == {"a.png", "b.png"}
    b = np.asarray(Image.open(out / "images" / "b.png"))
    original = corpus.rgb_array(seed=1)
    assert (b[20:24, 20:24] != original[20:24, 20:24]).any(), "the second hole of b.png was not filled"


def test_large_image_under_the_pixel_limit(capsys, tmp_path):
    root, out = tmp_path / "data", tmp_path / "run"
    big = corpus.large_gradient(3000, 2000)
    corpus.write(root / "images" / "big.png", corpus.encode(big, compress_level=1))
    corpus.write(root / "masks.csv", corpus.csv_text("big.png,2980,1980,16,16"))
    rc, _, err = run_cli(capsys, root, out)
    assert rc == 0, err
    result = np.asarray(Image.open(out / "images" / "big.png"))
    assert result.shape == (2000, 3000, 3)
    np.testing.assert_array_equal(result[:1980], big[:1980])


# ---------------------------------------------------------------------------------------------- pixel limit


def test_max_pixels_refuses_a_real_image(capsys, tmp_path):
    root, out = corpus.base_dataset(tmp_path / "data"), tmp_path / "run"
    corpus.write(root / "images" / "b.png", corpus.png(seed=1))
    corpus.write(root / "images" / "small.png", corpus.png(8, 8, seed=2))
    corpus.write(root / "masks.csv", corpus.csv_text(corpus.GOOD_ROW, "b.png,1,1,4,4", "small.png,1,1,4,4"))
    limit = corpus.W * corpus.H - 1
    rc, _, err = run_cli(capsys, root, out, "--max-pixels", str(limit))
    assert_refused(rc, err, [("images/a.png", "--max-pixels"), ("images/b.png", "--max-pixels")], root)
    assert not out.exists()
    rc, _, err = run_cli(capsys, root, out, "--max-pixels", str(limit), "--skip-invalid")
    assert rc == 0, err
    assert output_files(out) == {"small.png"}
    rc, _, err = run_cli(capsys, root, tmp_path / "run2", "--max-pixels", str(limit + 1))
    assert rc == 0, err


def test_only_image_invalid_reports_just_that(capsys, tmp_path):
    root, out = tmp_path / "data", tmp_path / "run"
    corpus.write(root / "images" / "bad.png", corpus.corrupt_bytes())
    corpus.write(root / "masks.csv", corpus.csv_text("bad.png,1,1,4,4"))
    rc, _, err = run_cli(capsys, root, out)
    assert_refused(rc, err, [("images/bad.png", "cannot be read")], root)


def test_raising_max_pixels_above_pils_limit_is_honoured(capsys, tmp_path, monkeypatch):
    """An image between PIL's bomb limit (89 Mpx) and a raised --max-pixels must run. Simulated cheaply by
    lowering PIL's limit below a 48×32 image instead of decoding 100 Mpx."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    root, out = corpus.base_dataset(tmp_path / "data"), tmp_path / "run"
    rc, _, err = run_cli(capsys, root, out, "--max-pixels", "100000")
    assert rc == 0, err
    assert output_files(out) == {"a.png"}


# ---------------------------------------------------------------------------------------------- --skip-invalid


def _mixed_dataset(root: Path) -> tuple[set[str], set[str]]:
    """2 good images + several bad ones; returns (good outputs, bad image ids)."""
    w = corpus.write
    w(root / "images" / "a.png", corpus.png(seed=0))
    w(root / "images" / "cats" / "b.jpg", corpus.jpeg(seed=1))
    w(root / "images" / "bad.png", corpus.corrupt_bytes())
    w(root / "images" / "cut.jpg", corpus.truncated(corpus.jpeg(seed=2)))
    w(root / "images" / "empty.png", b"")
    w(root / "images" / "notes.txt", "not an image\n")
    w(root / "images" / "outside.png", corpus.png(seed=3))
    w(root / "images" / "norow.png", corpus.png(seed=4))
    w(root / "images" / "twin.jpg", corpus.jpeg(seed=5))
    w(root / "images" / "twin.png", corpus.png(seed=5))
    w(root / "masks.csv", corpus.csv_text(
        "a.png,4,4,8,8", "cats/b.jpg,1,1,4,4", "bad.png,1,1,4,4", "cut.jpg,1,1,4,4", "empty.png,1,1,4,4",
        f"outside.png,{corpus.W - 2},0,4,4", "twin.jpg,1,1,4,4", "twin.png,1,1,4,4"))
    return ({"a.png", "cats/b.png"},
            {"bad.png", "cut.jpg", "empty.png", "notes.txt", "outside.png", "norow.png", "twin.png"})


def test_skip_invalid_runs_the_good_images_and_lists_the_bad(capsys, tmp_path):
    root, out = tmp_path / "data", tmp_path / "run"
    good, bad = _mixed_dataset(root)
    rc, _, err = run_cli(capsys, root, out)
    assert_refused(rc, err, [(f"images/{b}", "") for b in sorted(bad - {"outside.png", "norow.png"})]
                   + [("masks.csv:7", "inside"), ("masks.csv", "images/norow.png")], root)
    assert not out.exists()

    rc, stdout, err = run_cli(capsys, root, out, "--skip-invalid")
    assert rc == 0, err
    made = output_files(out)
    assert made == good | {"twin.png"}, made  # twin.png is twin.jpg's output; the twin.png file was skipped
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert {row["image"] for row in manifest} == {"a.png", "cats/b.jpg", "twin.jpg"}
    skipped = read_skipped(out)
    assert {row["image"] for row in skipped} == bad, skipped
    assert all(row["reason"].strip() for row in skipped)
    assert "7 invalid skipped" in stdout


@pytest.mark.parametrize("extra", [
    pytest.param(lambda root: corpus.write(root / "masks" / "a.png", corpus.mask_png()), id="both-mask-sources"),
    pytest.param(lambda root: corpus.write(root / "masks.csv", "image,x,y\na.png,1,1\n"), id="csv-bad-header"),
    pytest.param(lambda root: (root / "masks.csv").unlink(), id="no-mask-source"),
])
def test_skip_invalid_keeps_dataset_level_problems_fatal(extra, capsys, tmp_path):
    root, out = tmp_path / "data", tmp_path / "run"
    _mixed_dataset(root)
    extra(root)
    rc, _, err = run_cli(capsys, root, out, "--skip-invalid")
    assert rc == 2 and "Traceback" not in err, err
    assert all(line.startswith("error: ") for line in err.splitlines())
    assert not out.exists()


def test_skip_invalid_with_nothing_valid_left_is_an_error(capsys, tmp_path):
    root, out = tmp_path / "data", tmp_path / "run"
    corpus.write(root / "images" / "bad.png", corpus.corrupt_bytes())
    corpus.write(root / "masks.csv", corpus.csv_text("bad.png,1,1,4,4"))
    rc, _, err = run_cli(capsys, root, out, "--skip-invalid")
    assert rc == 2 and "Traceback" not in err, err
    assert "no valid image" in err
    assert not out.exists()


# ---------------------------------------------------------------------------------------------- security


def _escape_attempts(root: Path, outside: Path) -> None:
    """Every per-image way to point outside the dataset, in one dataset that --skip-invalid still runs."""
    corpus.base_dataset(root, csv=corpus.csv_text(
        corpus.GOOD_ROW, "evil.png,1,1,4,4", "../../outside/x.png,1,1,4,4", f"{outside}/y.png,1,1,4,4",
        "..\\..\\outside\\z.png,1,1,4,4", "ok/../../../w.png,1,1,4,4"))
    corpus.write(outside / "x.png", corpus.png(seed=1))
    corpus.write(outside / "y.png", corpus.png(seed=2))
    os.symlink(corpus.write(outside / "secret.png", corpus.png(seed=3)), root / "images" / "evil.png")


@pytest.mark.parametrize("skip_invalid", [False, True], ids=["strict", "skip-invalid"])
def test_nothing_written_outside_out(skip_invalid, capsys, tmp_path):
    root, outside, out = tmp_path / "data", tmp_path / "outside", tmp_path / "run"
    outside.mkdir()
    _escape_attempts(root, outside)
    before = snapshot(tmp_path)
    rc, _, err = run_cli(capsys, root, out, *(["--skip-invalid"] if skip_invalid else []))
    assert "Traceback" not in err
    assert snapshot(tmp_path, skip=out) == before, "a file outside --out was created or changed"
    if not skip_invalid:
        assert rc == 2 and not out.exists()
        assert len([line for line in err.splitlines() if "masks.csv:" in line]) == 4, err
        return
    assert rc == 0, err
    assert output_files(out) == {"a.png"}
    real_out = out.resolve()
    for path in out.rglob("*"):
        assert not path.is_symlink() and real_out in path.resolve().parents, path
    skipped = {row["image"] for row in read_skipped(out)}
    assert "evil.png" in skipped and len(skipped) == 5, skipped


# ---------------------------------------------------------------------------------------------- data check


def test_data_check_summarises_a_good_dataset(capsys, tmp_path):
    root = tmp_path / "data"
    corpus.write(root / "images" / "cats" / "a.png", corpus.png(seed=0))
    corpus.write(root / "images" / "cats" / "b.jpg", corpus.jpeg(seed=1))
    corpus.write(root / "images" / "dogs" / "c.webp", corpus.encode(corpus.rgb_array(seed=2), "WEBP"))
    corpus.write(root / "masks.csv", corpus.csv_text(
        "cats/a.png,1,1,4,4", "cats/a.png,10,10,4,4", "cats/b.jpg,1,1,4,4", "dogs/c.webp,1,1,4,4"))
    before = snapshot(tmp_path)
    rc, out, err = cli(capsys, "data", "check", root)
    assert rc == 0, err
    assert "3 images, 4 holes" in out
    assert "cats 2" in out and "dogs 1" in out
    assert snapshot(tmp_path) == before, "data check wrote something"
    rc, out, err = cli(capsys, "data", "check", root, "--json")
    summary = json.loads(out)
    assert (summary["images"], summary["holes"], summary["labels"]) == (3, 4, {"cats": 2, "dogs": 1})


def test_data_check_lists_every_problem_at_once(capsys, tmp_path):
    root = tmp_path / "data"
    corpus.write(root / "images" / "a.png", corpus.png(seed=0))
    corpus.write(root / "images" / "bad.png", corpus.corrupt_bytes())
    corpus.write(root / "images" / "notes.txt", "x")
    corpus.write(root / "images" / "twin.jpg", corpus.jpeg(seed=1))
    corpus.write(root / "images" / "twin.png", corpus.png(seed=1))
    corpus.write(root / "images" / "norow.png", corpus.png(seed=2))
    corpus.write(root / "masks.csv", corpus.csv_text(
        "a.png,4,4,8,8", "a.png,4,4,8,8", f"a.png,{corpus.W},0,1,1", "bad.png,1,1,4,4", "ghost.png,1,1,4,4",
        "twin.jpg,1,1,x,4", "../up.png,1,1,4,4"))
    rc, _, err = cli(capsys, "data", "check", root)
    assert_refused(rc, err, [
        ("images/bad.png", "cannot be read"), ("images/notes.txt", "not an image"), ("images/twin.png", "name"),
        ("masks.csv:3", "line 2"), ("masks.csv:4", "inside"), ("masks.csv:6", "does not exist"),
        ("masks.csv:7", "whole numbers"), ("masks.csv:8", ".."), ("masks.csv", "images/norow.png"),
    ], root)
    assert err.splitlines()[0].startswith("error: 9 problems")
