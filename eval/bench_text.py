"""Seconds per image of the text metric (rapidocr's PP-OCR, evaluation/text.py) and of the CLIP encoder.

    python eval/bench_text.py [--sizes 128,256,512,1024] [--images 18] [--device cpu|cuda] [--repeats 3]

Data: the demo's real photos (scikit-image) cut to square crops of each size; every other one with a word
printed (DejaVu Sans Bold, as tests/test_text_rate.py) inside a box of about a third of the image, since found
lines cost recognition time. Each image is read once per repeat, as eval reads every output and every original
(an eval costs this per image and per run, plus once per original). Reported: the median over repeats of the mean
seconds per image, and how many of the printed words were found in their box (a sanity check that the timing is
of working OCR). The CLIP row times open_clip ViT-B-32's image encoder on 224² inputs with random weights (the
speed does not depend on them): one hole crop or whole image each.

Results go to eval/results/text_<device>.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from machine import machine_info  # noqa: E402

from diffinpaint.data.demo import demo_crops  # noqa: E402
from diffinpaint.evaluation.text import TextDetector, hole_masks, text_in_holes  # noqa: E402

WORDS = ["OPEN", "SALE", "HELLO", "BANK", "CAFE", "STOP", "BOOK", "MILK", "PARK"]


def printed(image: np.ndarray, word: str) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    from matplotlib import font_manager
    from PIL import Image, ImageDraw, ImageFont

    size = image.shape[0]
    box = (size // 8, size // 8, size // 2, size // 4)
    font = ImageFont.truetype(font_manager.findfont("DejaVu Sans:bold"), max(8, size // 8))
    im = Image.fromarray(image)
    draw = ImageDraw.Draw(im)
    left, top, right, bottom = draw.textbbox((0, 0), word, font=font, stroke_width=2)
    x, y, w, h = box
    draw.text((x + (w - (right - left)) / 2 - left, y + (h - (bottom - top)) / 2 - top), word, font=font,
              fill=(255, 255, 255), stroke_width=2, stroke_fill=(0, 0, 0))
    return np.asarray(im), box


def bench_ocr(detector: TextDetector, size: int, n: int, repeats: int) -> dict:
    crops = [c for _, _, c in demo_crops(size, 2)][:n]
    images, boxes = [], []
    for k, crop in enumerate(crops):
        if k % 2 == 0:
            image, box = printed(crop, WORDS[(k // 2) % len(WORDS)])
            images.append(image), boxes.append(box)
        else:
            images.append(crop), boxes.append(None)
    detector(images[:1])  # warm-up
    means, cpu, found = [], [], 0
    for r in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        results = detector(images)
        means.append((time.perf_counter() - start) / len(images))
        cpu.append((time.process_time() - start_cpu) / len(images))
        if r == 0:
            for detections, box in zip(results, boxes):
                if box is not None:
                    found += bool(text_in_holes(detections, hole_masks((size, size), [box], None))[0])
    return {"size": size, "images": len(images), "seconds_per_image": statistics.median(means),
            "cpu_seconds_per_image": statistics.median(cpu),
            "words": sum(b is not None for b in boxes), "words_found": found}


def bench_clip(device: str, n: int, repeats: int) -> dict:
    import open_clip
    import torch

    import logging

    logging.disable(logging.WARNING)  # open_clip's "initialized randomly" warning: random weights are the point
    model = open_clip.create_model("ViT-B-32", pretrained=None, force_quick_gelu=True).to(device).eval()
    logging.disable(logging.NOTSET)
    batch = torch.rand(n, 3, 224, 224, device=device)
    with torch.no_grad():
        model.encode_image(batch[:2])
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model.encode_image(batch)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append((time.perf_counter() - start) / n)
    return {"images": n, "seconds_per_image": statistics.median(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="128,256,512,1024")
    parser.add_argument("--images", type=int, default=18)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    detector = TextDetector(device=args.device)
    load_seconds = time.perf_counter() - start
    rows = [bench_ocr(detector, int(s), args.images, args.repeats) for s in args.sizes.split(",")]
    clip = bench_clip(args.device, 16, args.repeats)
    load_after = os.getloadavg()[0]
    report = {"machine": machine_info(), "provider": detector.provider, "ocr_load_seconds": load_seconds,
              "load_average_1min": [load_before, load_after],
              "ocr": rows, "clip_vit_b32": clip}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"text_{args.device.split(':')[0]}.json").write_text(json.dumps(report, indent=2) + "\n")
    m = report["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cpu_cores']} cores, torch {m['torch']} ({m['torch_threads']} threads); "
             f"onnxruntime provider {detector.provider}",
             "",
             f"OCR (rapidocr {_version('rapidocr')}, onnxruntime {_version('onnxruntime')}; PP-OCR detection + angle "
             "classifier + recognition, rapidocr's defaults: the detector sees the image scaled so its shorter side "
             f"is at least 736 px). Model load: {load_seconds:.2f} s once per eval. Demo photo crops, every other "
             "one with a printed word; median over "
             f"{args.repeats} repeats of the mean per image. Load average (1 min) at start / end: "
             f"{load_before:.1f} / {load_after:.1f} on {os.cpu_count()} cores: with other jobs on the machine wall "
             "time runs above CPU time (onnxruntime's CPU time summed over its threads).",
             "",
             "| image size | images | wall seconds per image | CPU seconds per image | printed words found |",
             "|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['size']}×{r['size']} | {r['images']} | {r['seconds_per_image']:.3f} | "
              f"{r['cpu_seconds_per_image']:.3f} | {r['words_found']} / {r['words']} |" for r in rows]
    lines += ["", f"An eval reads each original once and each output once: seconds per image × (1 + runs). "
              f"CLIP ViT-B-32 image encoder ({args.device}, batch 16, 224²): {clip['seconds_per_image']:.3f} s "
              "per crop or image."]
    (args.out / f"text_{args.device.split(':')[0]}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    main()
