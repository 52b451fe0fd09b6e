"""Writes tests/data/pix2pix_golden.json: the losses and weights of two small Pix2Pix runs, made with the code
before the one-trainer refactor (commit 6b1b4cf). test_pix2pix.py checks today's trainer reproduces them.

    python tests/make_pix2pix_golden.py OUT.json
"""
import json, sys, hashlib
from pathlib import Path
import numpy as np, torch
from PIL import Image
torch.set_num_threads(1)
def _write_dataset(root: Path, n: int = 5, mask_pngs: bool = False) -> Path:
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


import tempfile
tmp = Path(tempfile.mkdtemp())
data = _write_dataset(tmp / "data")
out = {}
try:
    from diffinpaint import train as tr
    def train(**kw):
        cfg = tr.TrainConfig(data=str(data), out=str(tmp / kw.pop("name")), **kw)
        return tr.train(cfg)
except ImportError:
    from diffinpaint.training.trainer import train_from_options
    def train(**kw):
        name = kw.pop("name")
        return train_from_options("pix2pix", dict(data=str(data), out=str(tmp / name), **kw))
from safetensors.torch import load_file
for name, kw in {"dataset": dict(holes="dataset"), "box": dict(holes="box", gan_mode="lsgan")}.items():
    final = train(name=name, size=32, ngf=8, ndf=8, batch_size=2, device="cpu", steps=6, sample_every=5, checkpoint_every=3, **kw)
    log = [json.loads(l) for l in (tmp / name / "log.jsonl").read_text().splitlines()]
    w = {}
    for net in ("generator", "discriminator"):
        t = load_file(str(final / f"{net}.safetensors"))
        w[net] = {k: [float(v.double().sum()), float(v.double().abs().sum())] for k, v in sorted(t.items())}
        w[net + "_sha256"] = hashlib.sha256(b"".join(t[k].numpy().tobytes() for k in sorted(t))).hexdigest()
    out[name] = {"options": kw, "log": log, "weights": w}
json.dump(out, open(sys.argv[1], "w"), indent=1, sort_keys=True)
print("ok")
