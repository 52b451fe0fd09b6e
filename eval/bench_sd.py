"""Speed of the `sd` model: images/second, seconds per denoising step, peak memory; compared with a plain
diffusers pipeline call on the same inputs (the reference), so the toolkit's own overhead shows.

No weights needed: `--model full` builds SD 1.5 inpainting with random weights from the architecture configs in
diffinpaint/configs/sd15_inpainting (same shapes, hence the same speed, as the real checkpoint); `--model tiny`
is the test pipeline (tests/sd_tiny.py); anything else is a hub id or pipeline folder, loaded as `--sd-model`.

    python eval/bench_sd.py --model full --steps 2 --batch 1 --device cpu --out eval/results/sd_cpu.json
    python eval/bench_sd.py --model full --steps 50 --batch 4 --device cuda --dtype fp16 --compile \
        --out eval/results/sd_gpu.json

On a GPU it also reports the fraction of the physical limit: SD 1.5 at 512x512 costs about 84 TFLOP per image
for 50 steps with classifier-free guidance (UNet on a batch of 2, ~1.7 TFLOP per step); the limit is
images/s x 84 TFLOP x steps/50 x (resolution/512)^2 divided by the GPU's dense peak (PEAK_TFLOPS below, or
--peak-tflops). Each run appends (or replaces) one record in --out and rewrites the .md table next to it.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

sys.path.insert(0, str(Path(__file__).parent))  # eval/machine.py
from machine import machine_info  # noqa: E402
from diffinpaint.models.sd import Settings, StableDiffusionModel, build_random_pipeline, conditioning  # noqa: E402

FLOP_PER_IMAGE_50_STEPS = 84e12  # SD 1.5, 512x512, classifier-free guidance
# dense (no sparsity) peak TFLOPS by GPU name substring and dtype; fp32 = plain FP32 (diffusers leaves TF32 off)
PEAK_TFLOPS = {
    "H200": {"fp16": 989.0, "bf16": 989.0, "fp32": 67.0},
    "H100": {"fp16": 989.0, "bf16": 989.0, "fp32": 67.0},  # SXM; PCIe is 756 / 51: pass --peak-tflops
    "A100": {"fp16": 312.0, "bf16": 312.0, "fp32": 19.5},
    "L40S": {"fp16": 362.0, "bf16": 362.0, "fp32": 91.6},
}


def machine() -> dict:
    return machine_info()  # eval/machine.py: one description of the machine for every benchmark


class UNetTimer:
    """Times every UNet call (one denoising evaluation of the whole batch, both CFG halves) via hooks."""

    def __init__(self, unet, sync):
        self.calls, self.seconds, self.sync = 0, 0.0, sync
        unet.register_forward_pre_hook(self._pre)
        unet.register_forward_hook(self._post)

    def _pre(self, *_):
        self.sync()
        self._t = time.perf_counter()

    def _post(self, *_):
        self.sync()
        self.seconds += time.perf_counter() - self._t
        self.calls += 1

    def reset(self):
        self.calls, self.seconds = 0, 0.0


def inputs(batch: int, size: int):
    g = torch.Generator().manual_seed(0)
    images = F.interpolate(torch.rand(batch, 3, size // 32, size // 32, generator=g), size=(size, size),
                           mode="bilinear", align_corners=False)
    masks = torch.zeros(batch, 1, size, size)
    masks[..., size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1  # a centred hole, a quarter of the area
    return images, masks


def measure(fn, timer: UNetTimer, device: str, repeats: int, sync) -> dict:
    times = []
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    timer.reset()
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t)
    total = sum(times)
    result = {"seconds_per_batch": total / repeats, "unet_calls_per_batch": timer.calls / repeats,
              "seconds_per_step": timer.seconds / max(timer.calls, 1),
              "seconds_outside_unet_per_batch": (total - timer.seconds) / repeats}
    if device.startswith("cuda"):
        result["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    result["peak_process_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB
    return result, out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="full", help="full | tiny | hub id | pipeline folder (default full)")
    p.add_argument("--size", type=int, default=512, help="input image side (default 512)")
    p.add_argument("--resolution", type=int, default=None, help="model resolution (default: checkpoint's)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], default=None)
    p.add_argument("--attention", choices=["sdpa", "xformers"], default="sdpa")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=1, help="timed batches (default 1)")
    p.add_argument("--warmup", type=int, default=None, help="untimed batches first (default 1 on cuda, 0 on cpu)")
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak for the physical-limit fraction")
    p.add_argument("--no-reference", action="store_true", help="skip the plain diffusers call")
    p.add_argument("--out", type=Path, default=None, help="JSON file collecting records (a .md table is written "
                   "next to it)")
    args = p.parse_args(argv)
    device = args.device
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    warmup = args.warmup if args.warmup is not None else (1 if cuda else 0)

    load_before = os.getloadavg()[0]  # other processes on the machine skew CPU timings: recorded with them

    # 1. The pipeline
    t = time.perf_counter()
    if args.model == "full":
        pipe = build_random_pipeline()
    elif args.model == "tiny":
        sys.path.insert(0, str(REPO / "tests"))
        from sd_tiny import tiny_pipeline

        pipe = tiny_pipeline()
    else:
        pipe = None
    settings = Settings(sd_model=args.model, steps=args.steps, dtype=args.dtype, attention=args.attention,
                        compile=args.compile, resolution=args.resolution)
    model = StableDiffusionModel(settings, device=device, pipeline=pipe)
    build_s = time.perf_counter() - t
    timer = UNetTimer(model.pipe.unet, sync)
    res = model.resolution

    # 2. Inputs: the same tensors for both paths; the reference gets them prepared the documented way (aspect kept,
    #    hole grey after the resize), not timed
    images, masks = inputs(args.batch, args.size)
    seeds = list(range(args.batch))
    labels = [None] * args.batch
    prompt, negative = model.prompts.for_label(None)
    size = model.model_size(args.size, args.size)
    prepared = [conditioning(images[i], masks[i], size, model.cell) for i in range(args.batch)]
    image_res, mask_res = torch.stack([x for x, _ in prepared]), torch.stack([m for _, m in prepared])

    def ours():
        return model.inpaint(images, masks, seeds=seeds, labels=labels)

    def reference():
        return model.pipe(prompt=[prompt] * args.batch, negative_prompt=[negative] * args.batch, image=image_res,
                          mask_image=mask_res, height=size[0], width=size[1], num_inference_steps=model.steps,
                          guidance_scale=model.guidance, strength=model.strength, output_type="pt",
                          generator=[torch.Generator("cpu").manual_seed(s) for s in seeds]).images

    # 3. Measure
    with torch.inference_mode():
        for _ in range(warmup):
            ours()
        ours_result, ours_out = measure(ours, timer, device, args.repeats, sync)
        runs = {"ours": ours_result}
        if not args.no_reference:
            for _ in range(warmup):
                reference()
            runs["reference"], ref_out = measure(reference, timer, device, args.repeats, sync)
            back = F.interpolate(ref_out.float().cpu(), size=(args.size, args.size), mode="bicubic",
                                 antialias=True).clamp(0, 1)
            hole = masks.expand_as(images) > 0
            runs["max_abs_diff_in_hole_vs_reference"] = float((ours_out[hole] - back[hole]).abs().max())

    for name in ("ours", "reference"):
        if name in runs:
            r = runs[name]
            r["images_per_second"] = args.batch / r["seconds_per_batch"]
    info = machine()
    peak = args.peak_tflops
    if peak is None and cuda:
        gpu = info.get("gpu", "")
        peak = next((v[model.dtype_name] for k, v in PEAK_TFLOPS.items() if k in gpu), None)
    sd15 = args.model == "full" or (pipe is None and model.pipe.unet.config.block_out_channels[0] == 320
                                    and model.pipe.unet.config.cross_attention_dim == 768)
    if peak and sd15:
        flop = FLOP_PER_IMAGE_50_STEPS * args.steps / 50 * (res / 512) ** 2
        for name in ("ours", "reference"):
            if name in runs:
                runs[name]["fraction_of_physical_limit"] = runs[name]["images_per_second"] * flop / (peak * 1e12)

    record = {
        "config": {"model": args.model, "size": args.size, "resolution": res, "steps": args.steps,
                   "batch": args.batch, "dtype": model.dtype_name, "attention": args.attention,
                   "compile": args.compile, "device": device, "scheduler": type(model.pipe.scheduler).__name__,
                   "repeats": args.repeats, "warmup": warmup},
        "peak_tflops_assumed": peak,
        "build_seconds": build_s,
        "load_average_1min": {"start": load_before, "end": os.getloadavg()[0]},
        **runs,
        "machine": info,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    print(json.dumps(record, indent=2))
    if args.out:
        write(args.out, record)
    return 0


def write(path: Path, record: dict) -> None:
    records = json.loads(path.read_text()) if path.exists() else []
    records = [r for r in records if r["config"] != record["config"]] + [record]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=2) + "\n")
    m = records[-1]["machine"]
    lines = [f"# sd speed ({path.stem})", "",
             f"Machine: {m['cpu']}, {m['cpu_cores']} cores ({m['torch_threads']} torch threads)"
             + (f", GPU {m['gpu']} (CUDA {m['cuda']})" if "gpu" in m else ", no GPU")
             + f"; Python {m['python']}, torch {m['torch']}, diffusers {m['diffusers']}, "
             f"transformers {m['transformers']}.", "",
             "Random weights (`full` = SD 1.5 inpainting architecture from diffinpaint/configs, `tiny` = test "
             "pipeline); speed does not depend on the weights' values. `ours` = `StableDiffusionModel.inpaint` "
             "(resize, blank, pipeline, resize back); `reference` = a plain diffusers pipeline call on the "
             "same inputs already at the model's resolution. s/step = mean time of one UNet call (one "
             "denoising step for the whole batch, both guidance halves).", "",
             "| model | size→res | steps | batch | dtype | attention | compile | device | path | images/s | "
             "s/batch | s/step | s outside UNet | peak mem GiB | limit fraction | load avg start/end |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        c = r["config"]
        for name in ("ours", "reference"):
            if name not in r:
                continue
            x = r[name]
            mem = x.get("peak_gpu_memory_gib", x["peak_process_rss_gib"])
            mem_s = f"{mem:.2f}" + ("" if "peak_gpu_memory_gib" in x else " (RSS)")
            frac = x.get("fraction_of_physical_limit")
            load = r.get("load_average_1min", {})
            lines.append(f"| {c['model']} | {c['size']}→{c['resolution']} | {c['steps']} | {c['batch']} | "
                         f"{c['dtype']} | {c['attention']} | {c['compile']} | {c['device']} | {name} | "
                         f"{x['images_per_second']:.4f} | {x['seconds_per_batch']:.2f} | "
                         f"{x['seconds_per_step']:.3f} | {x['seconds_outside_unet_per_batch']:.2f} | {mem_s} | "
                         f"{'—' if frac is None else f'{frac:.1%}'} | "
                         f"{load.get('start', float('nan')):.1f}/{load.get('end', float('nan')):.1f} |")
        if "max_abs_diff_in_hole_vs_reference" in r:
            lines.append(f"| | | | | | | | | ours vs reference: max abs diff in hole "
                         f"{r['max_abs_diff_in_hole_vs_reference']:.2e} | | | | | | | |")
    peaks = {r["peak_tflops_assumed"] for r in records if r.get("peak_tflops_assumed")}
    lines += ["", "Physical limit: 84 TFLOP per 512² image at 50 steps with classifier-free guidance; peak "
              + (f"assumed {', '.join(f'{p:g}' for p in sorted(peaks))} TFLOPS (dense)." if peaks else
                 "TFLOPS not known for this device (pass --peak-tflops), so no fraction is given."),
              "Peak memory on CPU is the process's peak RSS (model build included), not per path.",
              "Load average: the machine's 1-minute load when the run started/ended; above the core count, "
              "other processes shared the CPU and the timings are pessimistic."]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
