"""The patch-based baselines (models/patch.py): exemplar (Criminisi et al. 2004, written here) and patchmatch
(Wexler et al. 2007 with PatchMatch, through PyPatchMatch).

Periodic textures with a hole: both copy the texture back (hole RMSE at most half of Telea's, which can only blur
it), through the runner, known pixels identical, the same bytes on a rerun. Criminisi's steps by hand on a small
image: confidence, data term and priority of each front pixel, the patch filled first, the exemplar chosen (SSD over
the known pixels only, checked against a brute-force search). The registry's contract tests (tests/test_contract.py)
cover both models as well.
"""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from PIL import Image

from diffinpaint.cli import main
from diffinpaint.data import load_dataset
from diffinpaint.models import build_model
from diffinpaint.models.patch import ExemplarFill, exemplar_inpaint
from diffinpaint.runner import RunSettings, run

COLOURS = np.array([[30, 90, 200], [230, 180, 40]], np.uint8)  # two colours, different in every channel


def _stripes(h: int, w: int, period: int = 8) -> np.ndarray:
    x = np.arange(w)
    return COLOURS[np.broadcast_to((x // (period // 2)) % 2, (h, w))]


def _checkerboard(h: int, w: int, period: int = 8) -> np.ndarray:
    y, x = np.mgrid[:h, :w]
    return COLOURS[((y // (period // 2)) + (x // (period // 2))) % 2]


def _diagonal(h: int, w: int, period: int = 8) -> np.ndarray:
    y, x = np.mgrid[:h, :w]
    return COLOURS[((x + y) // (period // 2)) % 2]


TEXTURES = {"stripes": _stripes, "checkerboard": _checkerboard, "diagonal": _diagonal}
HOLES = [(30, 28, 24, 20), (60, 62, 18, 16)]  # x, y, width, height in a 96×96 image


@pytest.fixture(scope="module")
def textures(tmp_path_factory):
    """A dataset of the periodic textures (96×96, two holes each, masks.csv)."""
    data = tmp_path_factory.mktemp("textures")
    (data / "images").mkdir()
    with open(data / "masks.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["image", "x", "y", "width", "height"])
        for name, make in TEXTURES.items():
            Image.fromarray(make(96, 96)).save(data / "images" / f"{name}.png")
            writer.writerows([(f"{name}.png", *box) for box in HOLES])
    return data


@pytest.fixture(scope="module")
def runs(textures, tmp_path_factory):
    """model -> its run folder over the textures (telea, exemplar, patchmatch), plus a second exemplar and
    patchmatch run for the rerun check."""
    out = tmp_path_factory.mktemp("texture_runs")
    dataset = load_dataset(textures)
    folders = {}
    for name in ("telea", "exemplar", "patchmatch"):
        folders[name] = out / name
        run(build_model(name), dataset, folders[name], RunSettings(batch_size=2, progress=False))
    for name in ("exemplar", "patchmatch"):
        folders[name + "-again"] = out / f"{name}-again"
        run(build_model(name), dataset, folders[name + "-again"], RunSettings(batch_size=1, progress=False))
    return folders


def _hole_rmse(folder, textures, image: str) -> float:
    produced = np.asarray(Image.open(folder / "images" / image), np.float64)
    truth = np.asarray(Image.open(textures / "images" / image), np.float64)
    hole = _hole_mask(96, 96)
    return float(np.sqrt(((produced - truth)[hole] ** 2).mean()) / 255.0)


def _hole_mask(h: int, w: int) -> np.ndarray:
    hole = np.zeros((h, w), bool)
    for x, y, width, height in HOLES:
        hole[y:y + height, x:x + width] = True
    return hole


@pytest.mark.parametrize("texture", list(TEXTURES))
@pytest.mark.parametrize("name", ["exemplar", "patchmatch"])
def test_periodic_textures_are_copied_back_far_better_than_telea(name, texture, runs, textures):
    image = f"{texture}.png"
    telea, patch = _hole_rmse(runs["telea"], textures, image), _hole_rmse(runs[name], textures, image)
    print(f"{name} {texture}: hole RMSE {patch:.4f} vs telea {telea:.4f}")
    assert telea > 0.2  # Telea blurs the two colours into each other
    assert patch <= 0.5 * telea, (name, texture, patch, telea)


@pytest.mark.parametrize("name", ["exemplar", "patchmatch"])
def test_known_pixels_untouched_and_same_bytes_on_a_rerun(name, runs, textures):
    hole = _hole_mask(96, 96)
    for texture in TEXTURES:
        image = f"{texture}.png"
        produced = np.asarray(Image.open(runs[name] / "images" / image))
        original = np.asarray(Image.open(textures / "images" / image))
        assert np.array_equal(produced[~hole], original[~hole]), (name, texture)
        # deterministic, and batch 2 vs batch 1 made no difference
        assert (runs[name] / "images" / image).read_bytes() == (runs[name + "-again"] / "images" / image).read_bytes()


def test_exemplar_copies_stripes_exactly():
    """On a texture with exact repeats the best exemplar always has SSD 0: the fill is the texture itself."""
    rgb = _stripes(64, 64)
    hole = np.zeros((64, 64), bool)
    hole[20:44, 22:42] = True
    assert np.array_equal(exemplar_inpaint(rgb, hole, 9), rgb)


# ------------------------------------------------------------------------------------------------ Criminisi by hand


def _edge_example() -> tuple[np.ndarray, np.ndarray]:
    """7×11 grey image: black left of column 5, white from column 5 on; the hole is rows 4-6 × columns 3-7, on the
    bottom edge, so the vertical black/white edge enters the hole from above between columns 4 and 5.

        col: 0 1 2 3 4 5 6 7 8 9 10
        row 3: . . . . . # # # # # #        . = 0, # = 255
        row 4: . . . H H H H H # # #        H = hole
        row 5: . . . H H H H H # # #
        row 6: . . . H H H H H # # #
    """
    grey = np.where(np.arange(11)[None, :] >= 5, 255, 0).repeat(7, axis=0).astype(np.uint8)
    hole = np.zeros((7, 11), bool)
    hole[4:7, 3:8] = True
    return np.repeat(grey[..., None], 3, axis=2), hole


def test_criminisi_priorities_by_hand():
    """Patch 3×3 (r = 1). The only non-zero known gradients near the hole are at (3,4) and (3,5): central
    differences across the edge, (255 - 0) / 2 = 127.5 along x, 0 along y (one-sided (3,x) - (2,x) = 0, as (4,x) is
    a hole). Their isophote (-gy, gx) = (0, 127.5) runs down the edge into the hole.

    Front pixel (4,4): Psi = rows 3-5 × columns 3-5; known: row 3, 3 of 9 pixels with C = 1 -> C = 3/9. The known
    mask's Sobel there is (0, -4) -> n = (0, -1); the strongest gradient in Psi is (3,4)'s -> D = |0·0 + 127.5·(-1)|
    / 255 = 1/2 -> P = 1/6. Same for (4,5) and (4,6) (whose Psi holds (3,5)).
    Corner (4,3): Psi = rows 3-5 × columns 2-4; known: row 3 and (4,2), (5,2) -> C = 5/9. Sobel of the known mask:
    x = (-1 + 1) + (-2) + (-1) = -3, y = -(1 + 2 + 1) + 1 = -3 -> n = -(1, 1)/sqrt 2; isophote (0, 127.5) from (3,4)
    -> D = 127.5 / sqrt 2 / 255 = sqrt 2 / 4 -> P = 5/9 · sqrt 2 / 4 ≈ 0.196: the highest, so filled first.
    Corner (4,7): C = 5/9 but every gradient in its patch is 0 (white on both sides) -> D = 0, P = 0.
    Side (5,3): C = 3/9 (column 2), D = 0. Corner (6,3) on the image's edge: known (5,2), (6,2); the row below is
    outside the image and counts as unknown -> C = 2/9, D = 0.
    Pixels (5,4)-(6,6) have no known neighbour: not on the front.
    """
    rgb, hole = _edge_example()
    found = ExemplarFill(rgb, hole, patch=3).priorities()
    at = {(int(y), int(x)): i for i, (y, x) in enumerate(zip(found["y"], found["x"]))}
    assert set(at) == {(4, 3), (4, 4), (4, 5), (4, 6), (4, 7), (5, 3), (5, 7), (6, 3), (6, 7)}
    expected = {  # (y, x): (C, D)
        (4, 3): (5 / 9, math.sqrt(2) / 4), (4, 4): (3 / 9, 0.5), (4, 5): (3 / 9, 0.5), (4, 6): (3 / 9, 0.5),
        (4, 7): (5 / 9, 0.0), (5, 3): (3 / 9, 0.0), (5, 7): (3 / 9, 0.0), (6, 3): (2 / 9, 0.0), (6, 7): (2 / 9, 0.0),
    }
    for pixel, (c, d) in expected.items():
        i = at[pixel]
        assert found["confidence"][i] == pytest.approx(c), pixel
        assert found["data"][i] == pytest.approx(d), pixel
        assert found["priority"][i] == pytest.approx(c * d), pixel
    assert max(at, key=lambda p: found["priority"][at[p]]) == (4, 3)


def test_criminisi_first_step_fills_the_top_priority_patch_from_its_best_exemplar():
    """Step 1 picks (4,3). Its known pixels (row 3 columns 2-4, (4,2), (5,2)) are all black; every all-black source
    patch matches them exactly (SSD 0) and the first in raster order is the top-left one, centred at (1,1). Its
    pixels go into the hole pixels of Psi(4,3) only, which inherit C(4,3) = 5/9."""
    rgb, hole = _edge_example()
    fill = ExemplarFill(rgb, hole, patch=3)
    assert fill.step() == (4, 3, 1, 1)
    p = fill.pad
    filled = np.zeros_like(hole)
    filled[4:6, 3:5] = True  # Psi(4,3) ∩ hole: rows 4-5 × columns 3-4
    assert np.array_equal(~fill.todo[p:p + 7, p:p + 11], ~hole | filled)
    assert np.allclose(fill.confidence[p:p + 7, p:p + 11][filled], 5 / 9)
    assert np.all(fill.image[p:p + 7, p:p + 11][filled] == 0)
    # the rest of the image is as it was
    assert np.array_equal(fill.image[p:p + 7, p:p + 11][~hole], rgb[~hole].astype(np.float64))
    # and the whole fill ends with the hole filled, the known pixels unchanged
    out = fill.run()
    assert not fill.todo.any() and np.array_equal(out[~hole], rgb[~hole])


def test_exemplar_search_is_the_ssd_over_known_pixels_only():
    """best_source against a brute-force search over every wholly known 5×5 patch of a random image; the target's
    unknown pixels (set to garbage) must not count."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (30, 34, 3), dtype=np.uint8)
    hole = np.zeros((30, 34), bool)
    hole[10:18, 12:21] = True
    fill = ExemplarFill(rgb, hole, patch=5)
    fill.image[fill.pad:fill.pad + 30, fill.pad:fill.pad + 34][hole] = 255  # garbage where the hole is
    for y, x in [(10, 12), (9, 15), (17, 20), (13, 11)]:  # centres on and around the hole's edge
        window = (slice(y - 2, y + 3), slice(x - 2, x + 3))
        known = ~hole[window]
        best, where = math.inf, None
        for sy in range(2, 28):
            for sx in range(2, 32):
                if hole[sy - 2:sy + 3, sx - 2:sx + 3].any():
                    continue
                d = ((rgb[sy - 2:sy + 3, sx - 2:sx + 3].astype(np.int64) - rgb[window]) ** 2)[known].sum()
                if d < best:
                    best, where = d, (sy, sx)
        assert fill.best_source(y, x) == where, (y, x)


def test_exemplar_edge_cases():
    rgb = _checkerboard(20, 20)
    nothing = np.zeros((20, 20), bool)
    assert np.array_equal(exemplar_inpaint(rgb, nothing, 9), rgb)
    assert np.all(exemplar_inpaint(rgb, ~nothing, 9) == 128)  # nothing known: mid-grey
    # a 10×10 image with a hole in the middle has no wholly known 9×9 patch: smaller patches take over
    small = rgb[:10, :10]
    hole = np.zeros((10, 10), bool)
    hole[3:7, 3:7] = True
    out = exemplar_inpaint(small, hole, 9)
    assert np.array_equal(out[~hole], small[~hole])


# ------------------------------------------------------------------------------------------------ options, eval


def test_patchmatch_patch_side_is_the_library_radius(monkeypatch):
    import patchmatch

    calls = []
    real = patchmatch.inpaint
    monkeypatch.setattr(patchmatch, "inpaint", lambda *a, **k: calls.append(k) or real(*a, **k))
    images = torch.from_numpy(_checkerboard(40, 40)).permute(2, 0, 1)[None].float() / 255
    masks = torch.zeros(1, 1, 40, 40)
    masks[..., 10:20, 12:24] = 1
    for side in (3, 7, 11):
        build_model("patchmatch", {"patchmatch_patch": side}).inpaint(images, masks, seeds=[0], labels=[None])
    assert [c["patch_size"] for c in calls] == [1, 3, 5]
    assert "pypatchmatch" in build_model("patchmatch").resolved_outputs()


@pytest.mark.parametrize("flag", ["--exemplar-patch", "--patchmatch-patch"])
def test_even_patch_sides_are_refused(flag, tmp_path, capsys):
    model = flag.split("-")[2]
    with pytest.raises(SystemExit) as exc:  # argparse's own refusal of a value outside the choices
        main(["run", "--model", model, flag, "8", "--data", str(tmp_path), "--out", str(tmp_path / "o")])
    assert exc.value.code == 2 and f"{flag}: invalid choice: 8" in capsys.readouterr().err


def test_eval_runs_telea_exemplar_patchmatch_on_photos(demo_small, tmp_path, capsys):
    out = tmp_path / "ev"
    assert main(["eval", "--models", "telea,exemplar,patchmatch", "--data", str(demo_small), "--out", str(out),
                 "--no-fid", "--no-text", "--no-report", "--no-progress"]) == 0
    table = capsys.readouterr().out
    for name in ("telea", "exemplar", "patchmatch"):
        assert any(line.split()[:1] == [name] for line in table.splitlines()), (name, table)
