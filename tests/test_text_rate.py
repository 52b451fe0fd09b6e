"""text_rate with the OCR model rapidocr ships in its wheel (PP-OCR, offline): words printed in DejaVu (the font that
ships with matplotlib) inside holes are read, Telea's fills of the scikit-image demo photos are not, a word outside
a hole or mostly outside it does not count, and an eval over photos with words in 10 of 40 holes reports
text_rate_gt >= 0.2, Telea's text_rate <= 0.1 and shows the detections in the report."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw, ImageFont

from diffinpaint.cli import main
from diffinpaint.data import load_dataset
from diffinpaint.data.demo import demo_crops
from diffinpaint.evaluation import text as textlib
from diffinpaint.evaluation.text import Detection, TextDetector, hole_masks, inside_fraction, text_in_holes
from diffinpaint.models import MODELS
from diffinpaint.models.classical import TeleaModel
from test_report import img_attributes

WORDS = ["OPEN", "SALE", "HELLO", "BANK", "CAFE", "STOP", "BOOK", "MILK", "PARK", "MAIN"]
SIZE = 128
HOLE = (10, 14, 76, 34)  # x, y, w, h of every image's first hole: room for one word
SECOND = (70, 80, 44, 36)  # the second hole, below and to the right (never holds a word)


def dejavu(size: int) -> ImageFont.FreeTypeFont:
    from matplotlib import font_manager

    return ImageFont.truetype(font_manager.findfont("DejaVu Sans:bold"), size)


def print_word(image: np.ndarray, word: str, box: tuple[int, int, int, int], size: int = 17) -> np.ndarray:
    """The word in DejaVu Sans Bold, white with a black outline (legible on any photo), centred in `box`."""
    im = Image.fromarray(image)
    draw = ImageDraw.Draw(im)
    font = dejavu(size)
    left, top, right, bottom = draw.textbbox((0, 0), word, font=font, stroke_width=2)
    x, y, w, h = box
    assert right - left <= w and bottom - top <= h, (word, right - left, bottom - top)
    draw.text((x + (w - (right - left)) / 2 - left, y + (h - (bottom - top)) / 2 - top), word, font=font,
              fill=(255, 255, 255), stroke_width=2, stroke_fill=(0, 0, 0))
    return np.asarray(im)


def write_dataset(root: Path, n_images: int = 20, n_words: int = 10) -> list[str]:
    """n_images real photo crops (scikit-image, 128 px) with two holes each; a word printed inside the first hole
    of the first n_words images. Returns the ids of the images with a word."""
    crops = demo_crops(SIZE, 3)
    crops = [crops[(k * 9) % len(crops) + (k * 9) // len(crops)] for k in range(n_images)]  # photos interleaved
    rows, worded = [], []
    for k, (label, stem, crop) in enumerate(crops):
        image = print_word(crop, WORDS[k % len(WORDS)], HOLE) if k < n_words else crop
        path = root / "images" / label / f"{stem}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
        rows += [(f"{label}/{stem}.png", *HOLE), (f"{label}/{stem}.png", *SECOND)]
        worded += [f"{label}/{stem}.png"] if k < n_words else []
    with open(root / "masks.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["image", "x", "y", "width", "height"])
        writer.writerows(rows)
    return worded


class Scribble(TeleaModel):
    """Telea, then a word printed into the first hole: a model that writes text, as SD did in the study."""

    name = "scribble"

    def inpaint(self, images, masks, *, seeds, labels):
        import torch

        filled = super().inpaint(images, masks, seeds=seeds, labels=labels)
        out = []
        for image in filled:
            rgb = (image.permute(1, 2, 0).clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
            out.append(torch.from_numpy(print_word(rgb, "SALE", HOLE).copy()).permute(2, 0, 1).float() / 255)
        return torch.stack(out).to(filled.device)


MODELS.update({"scribble": "test_text_rate:Scribble"})


@pytest.fixture(scope="module")
def detector():
    return TextDetector()


# ---------------------------------------------------------------------------------------------- the rule


def test_inside_fraction_is_the_share_of_the_detected_box_in_the_hole():
    hole = hole_masks((40, 60), [(10, 10, 20, 10)], None)[0]
    assert inside_fraction([[12, 12], [25, 12], [25, 18], [12, 18]], hole) == 1.0
    assert inside_fraction([[40, 12], [55, 12], [55, 18], [40, 18]], hole) == 0.0
    straddling = inside_fraction([[20, 12], [39, 12], [39, 17], [20, 17]], hole)  # x 20..39: 10 of 20 columns in
    assert straddling == pytest.approx(0.5)
    mostly_out = inside_fraction([[24, 12], [43, 12], [43, 17], [24, 17]], hole)  # 6 of 20 columns in
    assert mostly_out == pytest.approx(0.3)
    found = text_in_holes([Detection("in", 0.9, [[20, 12], [39, 12], [39, 17], [20, 17]]),
                           Detection("out", 0.9, [[24, 12], [43, 12], [43, 17], [24, 17]])], [hole])
    assert [d.text for d in found[0]] == ["in"] and found[0][0].inside == pytest.approx(0.5)


def test_a_free_form_image_is_one_hole_its_whole_mask():
    mask = np.zeros((30, 30), dtype=bool)
    mask[5:10, 5:10] = mask[20:25, 20:25] = True
    holes = hole_masks(mask.shape, [], mask)
    assert len(holes) == 1 and (holes[0] == mask).all()
    assert hole_masks(mask.shape, [], np.zeros_like(mask)) == []


def test_a_threshold_outside_zero_to_one_is_refused():
    from diffinpaint.util.errors import UserError

    with pytest.raises(UserError, match="--text-threshold"):
        TextDetector(threshold=1.5)


# ---------------------------------------------------------------------------------------------- the OCR model


def test_words_printed_in_dejavu_inside_holes_are_found(detector):
    crops = demo_crops(SIZE, 1)  # the nine photos
    holes = hole_masks((SIZE, SIZE), [HOLE, SECOND], None)
    exact = []
    for k, (_, stem, crop) in enumerate(crops):
        word = WORDS[k]
        found = text_in_holes(detector([print_word(crop, word, HOLE)])[0], holes)
        assert found[0] and all(d.inside >= 0.5 for d in found[0]), (stem, found)  # the hole has text
        assert not found[1], (stem, found[1])
        exact.append([d.text.upper() for d in found[0]] == [word])
    assert sum(exact) >= 7, exact  # and the OCR reads the word itself (measured: see the failure message)


def test_a_word_outside_the_hole_is_read_but_does_not_count(detector):
    _, _, crop = demo_crops(SIZE, 1)[0]
    outside = (10, 80, 76, 30)  # below the hole, not touching it
    image = print_word(crop, "SALE", outside)
    detections = detector([image])[0]
    assert any(d.text.upper() == "SALE" for d in detections)  # the OCR sees it ...
    assert text_in_holes(detections, hole_masks((SIZE, SIZE), [HOLE], None)) == [[]]  # ... but no hole has it
    # the same word with a hole over its right third only: less than half of its box inside
    box = next(d for d in detections if d.text.upper() == "SALE").polygon
    x0, x1 = min(p[0] for p in box), max(p[0] for p in box)
    third = (round(x1 - (x1 - x0) / 3), 70, SIZE - round(x1 - (x1 - x0) / 3), 50)
    assert text_in_holes(detections, hole_masks((SIZE, SIZE), [third], None)) == [[]]
    two_thirds = (round(x0 + (x1 - x0) / 3), 70, SIZE - round(x0 + (x1 - x0) / 3), 50)
    assert [d.text.upper() for d in text_in_holes(detections, hole_masks((SIZE, SIZE), [two_thirds], None))[0]] \
        == ["SALE"]


def test_rapidocr_logs_nothing(detector, capfd):
    _, _, crop = demo_crops(SIZE, 1)[1]
    detector([crop, print_word(crop, "OPEN", HOLE)])  # an image without text is what rapidocr warns about
    out, err = capfd.readouterr()
    assert "RapidOCR" not in out + err and "[WARNING]" not in out + err and "[INFO]" not in out + err


# ---------------------------------------------------------------------------------------------- eval


def eval_cli(*args, data: Path, out: Path) -> int:
    return main(["eval", "--data", str(data), "--out", str(out), "--no-progress", "--no-fid", *map(str, args)])


def test_telea_fills_of_the_demo_photos_have_no_text(demo_small, tmp_path):
    assert eval_cli("--models", "telea", "--no-report", data=demo_small, out=tmp_path / "ev") == 0
    row = json.loads((tmp_path / "ev" / "summary.json").read_text())[0]
    assert row["text_rate"] == 0.0 and row["n_text_holes"] == 0 and row["text_note"] == ""
    per_image = pd.read_csv(tmp_path / "ev" / "per_image.csv")
    assert (per_image["n_text_holes"] == 0).all() and (per_image["text_rate"] == 0).all()
    assert not any(json.loads(line)["source"] == "output"
                   for line in (tmp_path / "ev" / "text_detections.jsonl").read_text().splitlines())


def test_no_text_skips_the_ocr(demo_small, tmp_path):
    with mock.patch.object(textlib, "TextDetector", side_effect=AssertionError("OCR loaded")):
        assert eval_cli("--models", "telea", "--no-report", "--no-text", data=demo_small, out=tmp_path / "ev") == 0
    row = json.loads((tmp_path / "ev" / "summary.json").read_text())[0]
    assert row["text_rate"] is None and row["text_rate_gt"] is None and "--no-text" in row["text_note"]
    assert not (tmp_path / "ev" / "text_detections.jsonl").exists()
    assert pd.read_csv(tmp_path / "ev" / "per_image.csv")["n_text_holes"].isna().all()


@pytest.fixture(scope="module")
def words_eval(tmp_path_factory):
    """Done-when: 20 photos, 40 holes, a word printed inside 10 of them; telea, ns and scribble (a word in every
    first hole) evaluated with the OCR on. Counts how often the OCR model is built and how many images it reads."""
    root = tmp_path_factory.mktemp("words")
    data = root / "data"
    worded = write_dataset(data)
    built, read = [], []
    original_init, original_detect = TextDetector.__init__, TextDetector.detect

    def init(self, *args, **kwargs):
        built.append(1)
        original_init(self, *args, **kwargs)

    def detect(self, image):
        read.append(image.shape)
        return original_detect(self, image)

    with mock.patch.object(TextDetector, "__init__", init), mock.patch.object(TextDetector, "detect", detect):
        assert eval_cli("--models", "telea,ns,scribble", "--seeds", "0,1", data=data, out=root / "ev") == 0
    return data, root / "ev", len(built), len(read), worded


def test_words_in_10_of_40_holes_give_the_reference_rate_and_telea_removes_them(words_eval):
    data, ev, *_ = words_eval
    summary = {r["model"]: r for r in json.loads((ev / "summary.json").read_text())}
    assert summary["telea"]["n_holes"] == 40
    for model in ("telea", "ns"):
        row = summary[model]
        assert row["text_rate_gt"] >= 0.2, row  # the reference sees (nearly) every printed word
        assert row["text_rate"] <= 0.1, row  # diffusion-free fills from the border: the words are gone
        assert row["n_text_holes_gt"] == round(row["text_rate_gt"] * 40)
    assert summary["scribble"]["text_rate"] >= 0.45  # its word in the first hole of (nearly) every image
    assert summary["scribble"]["text_rate_gt"] == summary["telea"]["text_rate_gt"]  # one reference for all
    print({m: (r["text_rate"], r["text_rate_gt"]) for m, r in summary.items()})
    header = (ev / "summary.csv").read_text().splitlines()[0].split(",")
    assert {"text_rate", "text_rate_gt", "n_text_holes", "n_text_holes_gt", "text_note"} <= set(header)


def test_per_image_counts_and_per_bin_rates(words_eval):
    data, ev, _, _, worded = words_eval
    per_image = pd.read_csv(ev / "per_image.csv")
    telea = per_image[per_image["model"] == "telea"].set_index("image")
    assert len(worded) == 10 and telea.loc[worded, "n_text_holes_gt"].sum() >= 8
    assert (telea["text_rate_gt"] == telea["n_text_holes_gt"] / telea["n_holes"]).all()
    bins = pd.read_csv(ev / "per_bin.csv")
    telea_bins = bins[(bins["model"] == "telea") & (bins["n_images"] > 0)]
    assert len(telea_bins) == 1  # every image has the same two holes: one bin
    assert telea_bins["text_rate_gt"].iloc[0] == pytest.approx(telea["n_text_holes_gt"].sum() / 40)


def test_the_ocr_model_is_built_once_and_reads_each_original_once(words_eval):
    data, _, built, read, _ = words_eval
    n = len(load_dataset(data).samples)
    # originals once, then telea, ns and scribble once each (deterministic: one run whatever --seeds)
    assert built == 1 and read == n * (1 + 3)


def test_the_report_shows_the_detections_with_a_bootstrap_interval(words_eval):
    data, ev, *_ = words_eval
    page = (ev / "report.html").read_text()
    assert "<h2>Text in the holes</h2>" in page
    alts = [image.get("alt", "") for image in img_attributes(page)]
    originals = [a for a in alts if a.endswith("original")]
    assert len(originals) >= 8  # each original hole with a word, as a crop
    scribbled = [a for a in alts if a.endswith("hole 0 scribble")]
    assert len(scribbled) >= 18  # each output hole where text appeared, beside its original
    assert "<h3>telea: 0 hole(s) with text</h3>" in page
    for src in [s for s in page.split('src="')[1:]]:
        path = ev / src.split('"')[0]
        if path.suffix == ".png":
            assert path.is_file()
    assert any(w in page for w in WORDS)  # the strings read are listed
    detections = [json.loads(line) for line in (ev / "text_detections.jsonl").read_text().splitlines()]
    gt = [d for d in detections if d["source"] == "original"]
    assert gt and all(d["hole"] == 0 and d["detections"][0]["inside"] >= 0.5 for d in gt)
    # text_rate and text_rate_gt get a bootstrap interval in the summary, like every per-image metric
    summary_html = page.split("<h2>Summary</h2>")[1].split("</table>")[0]
    assert "text_rate_gt (originals)" in summary_html and "text_rate ↓" in summary_html
    row = summary_html.split("<td class=l>telea")[1].split("</tr>")[0]
    assert row.count('class="ci"') >= 4


def test_text_rate_holds_up_on_free_form_masks(tmp_path):
    """masks/*.png: one hole per image (its mask); a word inside the mask counts, one outside does not."""
    data = tmp_path / "data"
    crops = demo_crops(SIZE, 1)[:4]
    for k, (label, stem, crop) in enumerate(crops):
        mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
        x, y, w, h = HOLE
        mask[y : y + h, x : x + w] = 255
        mask[90:110, 20:60] = 255  # a second blob: the same hole
        image = print_word(crop, WORDS[k], HOLE if k < 2 else (10, 60, 76, 26))  # k >= 2: outside the mask
        for folder, array in (("images", image), ("masks", mask)):
            path = data / folder / label / f"{stem}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path)
    assert eval_cli("--models", "telea", "--no-report", data=data, out=tmp_path / "ev") == 0
    per_image = pd.read_csv(tmp_path / "ev" / "per_image.csv")
    assert list(per_image["n_holes"]) == [1, 1, 1, 1]
    assert list(per_image["n_text_holes_gt"]) == [1, 1, 0, 0]
    assert list(per_image["n_text_holes"]) == [0, 0, 0, 0]
