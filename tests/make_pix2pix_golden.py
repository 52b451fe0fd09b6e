"""Generate the pix2pix golden run (before the trainer refactor)."""
import json, sys, hashlib
from pathlib import Path
import numpy as np, torch
from PIL import Image
sys.path.insert(0, "tests")
torch.set_num_threads(1)
from test_pix2pix import _write_dataset
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
for name, kw in {"dataset": dict(holes="dataset"), "box": dict(holes="box", hole_weight=3.0, gan_mode="lsgan")}.items():
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
