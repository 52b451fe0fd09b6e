"""Benchmark LaMa: inference seconds per image through the public entry point and one training step at full size.

Inference: `build_model("lama", {"lama_weights": FILE})` + `inpaint()`, on random LaMa-Fourier (9 FFC blocks,
27.0M parameters) and big-lama (18 blocks, 51.0M) generators saved as safetensors in big-lama's layout (random
weights cost what trained ones cost). Square inputs of 256 and 512 px (smooth colour fields, one box of a third of
the side as the hole) at each image's own size, as LaMa's evaluation runs them; batch 1 (a warm-up call, then the
median of --repeats calls) and batch 8 (one call after the warm-up). Seconds per image = call time / batch.

Training: one `train_step` of the default configuration at 256 px (LaMa-Fourier, pix2pixHD discriminator, every
loss: the HRF perceptual loss runs on a RANDOM ADE20k-shaped ResNet-50, which costs what the real one costs), at
batch 1 and LaMa's batch 10, built as the trainer builds it (CPU accelerate); warm-up step, then the median of
--train-steps steps. Also big-lama at batch 1, and LaMa-Fourier without the perceptual loss.

Each measurement runs in a fresh process (its own peak memory: process peak RSS on a CPU, CUDA's allocator peak on
a GPU). The machine's load average is recorded beside each row: on a shared machine it is most of the noise.

    python eval/bench_lama.py --out eval/results/lama_cpu                    # CPU, 1 torch thread
    python eval/bench_lama.py --device cuda --out eval/results/lama_gpu      # a GPU (bf16 autocast where supported)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from machine import code_version, machine_info, peak_memory, run_child  # noqa: E402  (eval/machine.py)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFINPAINT_OFFLINE", "1")

GENERATORS = {"fourier": 9, "big": 18}


def _load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg()[:2])


def _images(n: int, side: int):
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(side + n)
    images = F.interpolate(torch.rand(n, 3, 6, 6, generator=g), size=(side, side), mode="bilinear",
                           align_corners=False)
    masks = torch.zeros(n, 1, side, side)
    masks[..., side // 3: 2 * side // 3, side // 4: side // 4 + side // 3] = 1
    return images, masks


def child_weights(spec: dict) -> dict:
    import torch
    from safetensors.torch import save_file

    from diffinpaint.models.lama.nets import build_network

    torch.manual_seed(0)
    net = build_network({"generator": spec["generator"]}, "generator")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, spec["path"])
    return {"parameters": sum(p.numel() for p in net.parameters())}


def child_infer(spec: dict) -> dict:
    import torch

    from diffinpaint.models import build_model

    torch.set_num_threads(spec["threads"])
    model = build_model("lama", {"lama_weights": spec["path"]}, device=spec["device"])
    device = model.device
    side, batch = spec["side"], spec["batch"]
    images, masks = _images(batch, side)
    seeds, labels = list(range(batch)), [None] * batch

    def call() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            model.inpaint(images, masks, seeds=seeds, labels=labels)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    load_before = _load()
    warm = [call()] if spec["warmup"] else []
    if spec["warmup_batch1"]:  # batch 8 rows: warm up on one image (cheaper), then time one batch
        one_images, one_masks = images[:1], masks[:1]
        with torch.inference_mode():
            model.inpaint(one_images, one_masks, seeds=[0], labels=[None])
    times = [call() for _ in range(spec["repeats"])]
    memory, what = peak_memory(device)
    return {"generator": spec["generator"], "side": side, "batch": batch, "calls": times, "warmup": warm,
            "s_per_image": statistics.median(times) / batch, "peak_mib": round(memory, 1), "memory": what,
            "dtype": model.output_settings()["dtype"], "load": f"{load_before} -> {_load()}"}


def child_train(spec: dict) -> dict:
    import torch
    from accelerate import Accelerator

    from diffinpaint.models.lama.hrf import ResNet50Dilated
    from diffinpaint.models.lama.step import LaMaTraining
    from diffinpaint.models.trainable import Batch
    from diffinpaint.training.setup import make_model, prepare_model
    from diffinpaint.training.trainer import configs_from_options

    torch.set_num_threads(spec["threads"])
    options = {"generator": spec["generator"], "batch_size": spec["batch"], "perceptual": spec["perceptual"],
               "device": spec["device"]}
    if spec["perceptual"]:  # a random ResNet-50 of the ADE20k encoder's shape: the real one's cost
        torch.manual_seed(0)
        path = Path(spec["tmp"]) / "encoder_random.pth"
        torch.save(ResNet50Dilated().state_dict(), path)
        options["perceptual_weights"] = str(path)
    cfg, opts = configs_from_options(LaMaTraining, options)
    model = make_model(LaMaTraining, cfg, opts)
    model.check()
    accelerator = Accelerator(cpu=spec["device"] == "cpu")
    prepare_model(model, accelerator)
    images, masks = _images(spec["batch"], cfg.size)
    batch = Batch(images.to(accelerator.device), masks.to(accelerator.device))

    def step() -> float:
        start = time.perf_counter()
        model.train_step(batch)
        if accelerator.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    load_before = _load()
    warm = step()
    times = [step() for _ in range(spec["steps"])]
    memory, what = peak_memory(accelerator.device)
    return {"generator": spec["generator"], "size": cfg.size, "batch": spec["batch"],
            "perceptual": spec["perceptual"], "warmup": warm, "steps": times,
            "s_per_step": statistics.median(times), "peak_mib": round(memory, 1), "memory": what,
            "load": f"{load_before} -> {_load()}"}


CHILDREN = {"weights": child_weights, "infer": child_infer, "train": child_train}


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"# LaMa benchmark ({report['device']})", "",
             f"Machine: {m['cpu']}, {m['cpu_cores']} cores ({report['threads']} torch thread(s)); torch "
             f"{m['torch']}, Python {m['python']}; code {report['code']}.", "",
             "Random weights (they cost what trained ones cost), fresh process per row; load average before -> "
             "after each row (a shared machine: most of the noise).", "",
             "## Inference (`build_model('lama', {'lama_weights': FILE})` + `inpaint`, each image at its own size)",
             "", "| generator | parameters | side | batch | s / image | images / s | peak MiB | dtype | load |",
             "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in report["inference"]:
        if "error" in r:
            lines.append(f"| {r['generator']} | | {r['side']} | {r['batch']} | {r['error']} | | | | |")
            continue
        params = report["parameters"].get(r["generator"], 0)
        lines.append(f"| {r['generator']} | {params:,} | {r['side']} | {r['batch']} | {r['s_per_image']:.3f} | "
                     f"{1 / r['s_per_image']:.2f} | {r['peak_mib']:.0f} | {r['dtype']} | {r['load']} |")
    lines += ["", "## Training step (`train_step`, 256 px, the default losses and optimisers)", "",
              "| generator | batch | perceptual | s / step | s / image | peak MiB | load |",
              "|---|---:|---|---:|---:|---:|---|"]
    for r in report["training"]:
        if "error" in r:
            lines.append(f"| {r['generator']} | {r['batch']} | {r['perceptual']} | {r['error']} | | | |")
            continue
        lines.append(f"| {r['generator']} | {r['batch']} | {'HRF (random ResNet-50)' if r['perceptual'] else 'off'} "
                     f"| {r['s_per_step']:.2f} | {r['s_per_step'] / r['batch']:.2f} | {r['peak_mib']:.0f} | "
                     f"{r['load']} |")
    lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    lines += ["", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="eval/results/lama_cpu", help="writes OUT.json and OUT.md")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads on a CPU (default 1: see README)")
    parser.add_argument("--sides", default="256,512")
    parser.add_argument("--generators", default="fourier,big")
    parser.add_argument("--repeats", type=int, default=2, help="timed batch-1 calls per row (median)")
    parser.add_argument("--train-steps", type=int, default=2, help="timed training steps per row (median)")
    parser.add_argument("--no-train", action="store_true")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(CHILDREN[args.child[0]](json.loads(args.child[1]))))
        return 0

    def child(kind: str, spec: dict):
        return run_child(__file__, ["--child", kind, json.dumps(spec)], args.timeout)

    report = {"device": args.device, "threads": args.threads, "code": code_version(), "machine": machine_info(),
              "parameters": {}, "inference": [], "training": [], "notes": [],
              "command": "python eval/bench_lama.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    base = {"device": args.device, "threads": args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        for generator in args.generators.split(","):
            path = str(Path(tmp) / f"{generator}.safetensors")
            made, why = child("weights", {"generator": generator, "path": path})
            if made is None:
                report["notes"].append(f"{generator}: weights not written ({why})")
                continue
            report["parameters"][generator] = made["parameters"]
            for side in map(int, args.sides.split(",")):
                for batch, repeats in ((1, args.repeats), (8, 1)):
                    spec = {**base, "generator": generator, "path": path, "side": side, "batch": batch,
                            "repeats": repeats, "warmup": batch == 1, "warmup_batch1": batch > 1}
                    result, why = child("infer", spec)
                    row = result or {"generator": generator, "side": side, "batch": batch, "error": why}
                    report["inference"].append(row)
                    print(json.dumps(row), flush=True)
        if not args.no_train:
            for generator, batch, perceptual in (("fourier", 1, True), ("fourier", 10, True), ("big", 1, True),
                                                 ("fourier", 1, False)):
                spec = {**base, "generator": generator, "batch": batch, "perceptual": perceptual,
                        "steps": args.train_steps, "tmp": tmp}
                result, why = child("train", spec)
                row = result or {"generator": generator, "batch": batch, "perceptual": perceptual, "error": why}
                report["training"].append(row)
                print(json.dumps(row), flush=True)
    report["notes"].append("a training step runs the generator twice (LaMa's Lightning module makes a forward per "
                           "optimiser: D judges the prediction of the generator it just updated), D four times, "
                           "R1's double backward, and the HRF ResNet-50 (dilated: its last stages at 1/8 of the "
                           "image with up to 2048 channels) on prediction and target")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(f"wrote {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
