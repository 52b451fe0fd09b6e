"""Writes tests/data/pix2pix_golden.json: the losses and weights of two small Pix2Pix runs. The file in the
repository was made with the code before the one-trainer refactor (commit 6b1b4cf, where the trainer was
`diffinpaint.train`); test_pix2pix.py checks that today's trainer reproduces it. Running this script against
today's code must give the same file (it did, byte for byte, on the machine that made it).

    python tests/make_pix2pix_golden.py OUT.json
"""
from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

# the two pinned runs: tiny networks, 6 steps, two hole sources and both GAN losses
RUNS = {"dataset": {"holes": "dataset"}, "box": {"holes": "box", "gan_mode": "lsgan"}}
COMMON = {"size": 32, "ngf": 8, "ndf": 8, "batch_size": 2, "device": "cpu", "steps": 6, "sample_every": 5,
          "checkpoint_every": 3}


def write_dataset(root: Path, n: int = 5, mask_pngs: bool = False) -> Path:
    """n synthetic images of different heights under images/cats/, one 18x14 hole each (masks.csv or mask PNGs)."""
    (root / "images" / "cats").mkdir(parents=True)
    rows = ["image,x,y,width,height"]
    for i in range(n):
        h, w = 40 + 8 * i, 48
        yy, xx = np.mgrid[0:h, 0:w]
        image = np.stack([(xx * 4 + i * 30) % 256, (yy * 5) % 256, ((xx + yy) * 3) % 256], -1).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / "cats" / f"{i}.png")
        if mask_pngs:
            mask = np.zeros((h, w), np.uint8)
            mask[10:24, 12:30] = 255
            (root / "masks" / "cats").mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(root / "masks" / "cats" / f"{i}.png")
        else:
            rows.append(f"cats/{i}.png,12,10,18,14")
    if not mask_pngs:
        (root / "masks.csv").write_text("\n".join(rows) + "\n")
    return root


def _trainer(data: Path, tmp: Path):
    """train(name, **options) -> final checkpoint folder, with whichever trainer this checkout has."""
    try:
        from diffinpaint import train as old  # before the refactor

        return lambda name, **kw: old.train(old.TrainConfig(data=str(data), out=str(tmp / name), **kw))
    except ImportError:
        from diffinpaint.training.trainer import train_from_options

        return lambda name, **kw: train_from_options("pix2pix", {"data": str(data), "out": str(tmp / name), **kw})


def main(out_path: str) -> None:
    import torch
    from safetensors.torch import load_file

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp())
    train = _trainer(write_dataset(tmp / "data"), tmp)
    golden = {}
    for name, options in RUNS.items():
        final = train(name, **COMMON, **options)
        log = [json.loads(line) for line in (tmp / name / "log.jsonl").read_text().splitlines()]
        weights = {}
        for net in ("generator", "discriminator"):
            tensors = load_file(str(final / f"{net}.safetensors"))
            weights[net] = {k: [float(v.double().sum()), float(v.double().abs().sum())] for k, v in sorted(tensors.items())}
            weights[net + "_sha256"] = hashlib.sha256(b"".join(tensors[k].numpy().tobytes()
                                                              for k in sorted(tensors))).hexdigest()
        golden[name] = {"options": options, "log": log, "weights": weights}
    Path(out_path).write_text(json.dumps(golden, indent=1, sort_keys=True))
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main(sys.argv[1])
