"""Seconds per image of the classical models (the patch-based exemplar and patchmatch beside telea, ns and the
ring_mean floor) at 256² and 512², two 75×75 holes per image, as the demo's photos have them.

Inputs: the demo's 9 scikit-image photos (data/demo.py's crops, one per photo) at each size; holes placed by
data/masks.py's `box_holes` from the image's seed, as `data demo` does. Each model through the public entry point
(`build_model(name).inpaint`), one image per call, timed per image (wall clock); the table gives the median and the
slowest, and the mean hole RMSE (the fill vs the photo, on hole pixels only; 9 images: indicative, not a result).
torch and OpenCV held to one thread (`--threads`).

    python eval/bench_patch.py --out eval/results/patch_cpu      # ~3 min on one core of this project's CPU box
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from machine import code_version, machine_info  # noqa: E402  (eval/machine.py)

MODELS = ["telea", "ns", "ring_mean", "exemplar", "patchmatch"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--photos", type=int, default=9, help="how many of the demo's photos")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="eval/results/patch_cpu", help="writes OUT.json and OUT.md")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import cv2
    import numpy as np
    import torch

    from diffinpaint.data.demo import demo_crops
    from diffinpaint.data.masks import box_holes, boxes_to_mask
    from diffinpaint.models import build_model
    from diffinpaint.util.seeds import derive_seed

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        crops = demo_crops(size, 1)[: args.photos]
        inputs = []
        for label, stem, crop in crops:
            image_id = f"{label}/{stem}.png"
            boxes = box_holes(size, size, 2, 75, np.random.default_rng(derive_seed(0, image_id)))
            hole = boxes_to_mask(size, size, boxes)
            image = torch.from_numpy(crop.copy()).permute(2, 0, 1).float()[None] / 255
            inputs.append((image_id, crop, hole, image, torch.from_numpy(hole).float()[None, None]))
        for name in args.models.split(","):
            model = build_model(name)
            seconds, errors = [], []
            with torch.inference_mode():
                model.inpaint(inputs[0][3], inputs[0][4], seeds=[0], labels=[None])  # warm-up (imports, caches)
                for image_id, crop, hole, image, mask in inputs:
                    start = time.perf_counter()
                    out = model.inpaint(image, mask, seeds=[0], labels=[None])
                    seconds.append(time.perf_counter() - start)
                    fill = (out[0].permute(1, 2, 0).numpy() * 255).round().clip(0, 255)
                    errors.append(float(np.sqrt(((fill - crop)[hole] ** 2).mean()) / 255))
            row = {"model": name, "size": size, "images": len(inputs), "median_s": float(np.median(seconds)),
                   "max_s": float(np.max(seconds)), "hole_rmse": float(np.mean(errors)),
                   "hole_fraction": float(np.mean([h.mean() for _, _, h, _, _ in inputs]))}
            rows.append(row)
            print(json.dumps(row), flush=True)
    report = {"machine": machine_info(), "code": code_version(), "threads": args.threads, "rows": rows,
              "load": os.getloadavg()}
    out = ROOT / args.out if not Path(args.out).is_absolute() else Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    m = report["machine"]
    lines = [f"# Classical models: seconds per image ({'cuda' if 'gpu' in m else 'cpu'})", "",
             f"Machine: {m['cpu']}, {m['cpu_cores']} cores ({args.threads} thread(s) for torch and OpenCV); "
             f"Python {m['python']}, torch {m['torch']}; code {report['code']}; load average after the run "
             f"{report['load'][0]:.1f}.", "",
             "The demo's photos (one crop each) with two 75×75 holes placed as `data demo` does; one image per "
             "`inpaint` call after a warm-up call; wall clock. Hole RMSE: mean over the images, hole pixels only "
             "(indicative: few images).", "",
             "| model | size | images | median s / image | slowest s | hole RMSE | hole fraction |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['size']} | {r['images']} | {r['median_s']:.3f} | {r['max_s']:.3f} | "
                     f"{r['hole_rmse']:.4f} | {r['hole_fraction']:.3f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
