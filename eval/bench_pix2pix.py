"""Benchmark one Pix2Pix training step: diffinpaint's (accelerate) against the reference's.

The reference is a faithful re-statement of junyanz/pytorch-CycleGAN-and-pix2pix `Pix2PixModel.optimize_parameters`
(plain PyTorch, `loss.backward()`, `set_requires_grad`, GANLoss with registered label buffers, nn.L1Loss), run on
the same networks (same init, same weights) and the same batch. Both start from identical weights and seeds, so
their first-step losses must agree: the bench records the largest difference as a fidelity check.

Measured: optimiser steps per second (after warm-up steps, data loading excluded: both get the same tensors) and
peak memory (CUDA: torch.cuda.max_memory_allocated; CPU: the process's peak resident set size, ru_maxrss, which
includes the Python interpreter and torch itself). Every configuration runs in its own process so peaks don't mix.
At 256², batch 1 and 8, fp32 and bf16 (autocast; the reference gets a plain torch.autocast around its step);
channels_last on GPU.

    python eval/bench_pix2pix.py --device cpu --large-precisions fp32 --large-steps 1 \
        --out eval/results/pix2pix_cpu                                                 # ~6 minutes on 2 cores
    python eval/bench_pix2pix.py --device cuda --steps 20 --out eval/results/pix2pix_gpu
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

sys.path.insert(0, str(Path(__file__).parent))  # eval/machine.py
from machine import machine_info  # noqa: E402
from diffinpaint import train as tr  # noqa: E402
from diffinpaint.data.masks import box_mask  # noqa: E402
from diffinpaint.pix2pix_nets import build_discriminator, build_generator, generator_input, init_weights  # noqa: E402


# ------------------------------------------------------------------------------------------- the reference step


class ReferenceGANLoss(nn.Module):
    def __init__(self, gan_mode, target_real_label=1.0, target_fake_label=0.0):
        super().__init__()
        self.register_buffer("real_label", torch.tensor(target_real_label))
        self.register_buffer("fake_label", torch.tensor(target_fake_label))
        self.loss = nn.MSELoss() if gan_mode == "lsgan" else nn.BCEWithLogitsLoss()

    def get_target_tensor(self, prediction, target_is_real):
        target_tensor = self.real_label if target_is_real else self.fake_label
        return target_tensor.expand_as(prediction)

    def __call__(self, prediction, target_is_real):
        return self.loss(prediction, self.get_target_tensor(prediction, target_is_real))


class ReferencePix2Pix:
    """junyanz's Pix2PixModel training step, without its options/visualiser machinery."""

    def __init__(self, netG, netD, device, gan_mode="vanilla", lambda_L1=100.0, lr=2e-4, beta1=0.5):
        self.netG, self.netD, self.device = netG, netD, device
        self.criterionGAN = ReferenceGANLoss(gan_mode).to(device)
        self.criterionL1 = torch.nn.L1Loss()
        self.lambda_L1 = lambda_L1
        self.optimizer_G = torch.optim.Adam(self.netG.parameters(), lr=lr, betas=(beta1, 0.999))
        self.optimizer_D = torch.optim.Adam(self.netD.parameters(), lr=lr, betas=(beta1, 0.999))

    def set_input(self, input):
        self.real_A = input["A"].to(self.device)
        self.real_B = input["B"].to(self.device)

    def forward(self):
        self.fake_B = self.netG(self.real_A)

    def backward_D(self):
        fake_AB = torch.cat((self.real_A, self.fake_B), 1)
        pred_fake = self.netD(fake_AB.detach())
        self.loss_D_fake = self.criterionGAN(pred_fake, False)
        real_AB = torch.cat((self.real_A, self.real_B), 1)
        pred_real = self.netD(real_AB)
        self.loss_D_real = self.criterionGAN(pred_real, True)
        self.loss_D = (self.loss_D_fake + self.loss_D_real) * 0.5
        self.loss_D.backward()

    def backward_G(self):
        fake_AB = torch.cat((self.real_A, self.fake_B), 1)
        pred_fake = self.netD(fake_AB)
        self.loss_G_GAN = self.criterionGAN(pred_fake, True)
        self.loss_G_L1 = self.criterionL1(self.fake_B, self.real_B) * self.lambda_L1
        self.loss_G = self.loss_G_GAN + self.loss_G_L1
        self.loss_G.backward()

    @staticmethod
    def set_requires_grad(nets, requires_grad=False):
        for net in nets if isinstance(nets, list) else [nets]:
            for param in net.parameters():
                param.requires_grad = requires_grad

    def optimize_parameters(self):
        self.forward()
        self.set_requires_grad(self.netD, True)
        self.optimizer_D.zero_grad()
        self.backward_D()
        self.optimizer_D.step()
        self.set_requires_grad(self.netD, False)
        self.optimizer_G.zero_grad()
        self.backward_G()
        self.optimizer_G.step()
        return {"D_real": self.loss_D_real.item(), "D_fake": self.loss_D_fake.item(),
                "G_GAN": self.loss_G_GAN.item(), "G_L1": self.loss_G_L1.item()}


# ------------------------------------------------------------------------------------------- one configuration


def _batch(batch_size: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth seeded images (so L1 and the GAN see structure) with the box protocol's two holes."""
    rng = np.random.default_rng(0)
    low = torch.from_numpy(rng.random((batch_size, 3, 8, 8), dtype=np.float32))
    images = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    side = round(75 * size / 256)
    masks = torch.stack([torch.from_numpy(box_mask(size, size, 2, side, rng))[None].float()
                         for _ in range(batch_size)])
    return images, masks


def _nets(size: int, device, channels_last: bool):
    torch.manual_seed(0)
    netG = init_weights(build_generator(size, 64)).to(device)
    netD = init_weights(build_discriminator(64)).to(device)
    if channels_last:
        netG.to(memory_format=torch.channels_last)
        netD.to(memory_format=torch.channels_last)
    return netG.train(), netD.train()


def run_one(impl: str, batch_size: int, precision: str, device_name: str, steps: int, warmup: int,
            size: int) -> dict:
    load_before = os.getloadavg()[0]
    device = torch.device(device_name)
    cuda = device.type == "cuda"
    channels_last = cuda
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    images, masks = _batch(batch_size, size)
    netG, netD = _nets(size, device, channels_last)
    if impl == "diffinpaint":
        from accelerate import Accelerator

        cfg = tr.TrainConfig(size=size, batch_size=batch_size, mixed_precision="bf16" if precision == "bf16" else "no",
                             device=device.type)
        accelerator = tr._make_accelerator(cfg)
        opt_G = torch.optim.Adam(netG.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
        opt_D = torch.optim.Adam(netD.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
        netG, netD, opt_G, opt_D = accelerator.prepare(netG, netD, opt_G, opt_D)
        model = tr.Pix2Pix(netG, netD, opt_G, opt_D, cfg, accelerator, channels_last=channels_last)
        model.set_input(images, masks)
        autocast = nullcontext()
        assert isinstance(accelerator, Accelerator)
    else:
        model = ReferencePix2Pix(netG, netD, device)
        model.set_input({"A": generator_input(images, masks).contiguous(memory_format=memory_format),
                         "B": (images * 2 - 1).contiguous(memory_format=memory_format)})
        autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if precision == "bf16"
                    else nullcontext())

    def step():
        with autocast:
            return model.optimize_parameters()

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(1)
    first = step()  # warm-up 1; its losses are the fidelity check
    for _ in range(warmup - 1):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        losses = step()
    sync()
    seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)  # Linux: KiB
    return {"impl": impl, "batch_size": batch_size, "precision": precision, "size": size, "device": device_name,
            "channels_last": channels_last, "warmup_steps": warmup, "timed_steps": steps,
            "seconds": seconds, "steps_per_second": steps / seconds,
            "images_per_second": steps * batch_size / seconds,
            "peak_memory_mib": peak / 2**20, "load_average_1min": [load_before, os.getloadavg()[0]],
            "peak_memory_kind": "cuda max_memory_allocated" if cuda else "process peak RSS (ru_maxrss)",
            "first_step_losses": first, "last_step_losses": losses}


def interleaved_ab(size: int = 64, steps: int = 10) -> dict:
    """Both steps in one process, one thread, alternating A/B/B/A, so machine load hits both alike: isolates the
    per-step overhead of diffinpaint's step (accelerate wrappers) from noise on a shared machine."""
    torch.set_num_threads(1)
    images, masks = _batch(1, size)
    gR, dR = _nets(size, "cpu", False)
    reference = ReferencePix2Pix(gR, dR, torch.device("cpu"))
    reference.set_input({"A": generator_input(images, masks), "B": images * 2 - 1})
    cfg = tr.TrainConfig(size=size, device="cpu")
    accelerator = tr._make_accelerator(cfg)
    gO, dO = _nets(size, "cpu", False)
    opt_G = torch.optim.Adam(gO.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    opt_D = torch.optim.Adam(dO.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    gO, dO, opt_G, opt_D = accelerator.prepare(gO, dO, opt_G, opt_D)
    ours = tr.Pix2Pix(gO, dO, opt_G, opt_D, cfg, accelerator)
    ours.set_input(images, masks)
    reference.optimize_parameters(), ours.optimize_parameters()
    seconds = {"reference": 0.0, "diffinpaint": 0.0}
    for i in range(steps):
        order = (("reference", reference), ("diffinpaint", ours))
        for name, model in (order if i % 2 == 0 else order[::-1]):
            start = time.perf_counter()
            model.optimize_parameters()
            seconds[name] += time.perf_counter() - start
    return {"size": size, "batch_size": 1, "threads": 1, "steps_each": steps, "seconds": seconds,
            "diffinpaint_over_reference": seconds["diffinpaint"] / seconds["reference"]}


# ------------------------------------------------------------------------------------------- driver


def machine(device_name: str) -> dict:
    return machine_info()  # eval/machine.py: one description of the machine for every benchmark


def bf16_supported(device_name: str) -> bool:
    if device_name.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.nn.functional.conv2d(torch.randn(1, 1, 4, 4), torch.randn(1, 1, 3, 3))
        return True
    except Exception:
        return False


def write_markdown(path: Path, report: dict) -> None:
    m = report["machine"]
    lines = [f"# Pix2Pix training step benchmark ({report['device']})", "",
             f"Machine: {m['cpu']}, {m['cpu_cores']} cores ({m['torch_threads']} torch threads)"
             + (f", GPU {m['gpu']} (CUDA {m['cuda']})" if "gpu" in m else "")
             + f"; torch {m['torch']}, accelerate {m['accelerate']}, Python {m['python']}.", "",
             f"One optimiser step = G forward, D step, G step (default nets: unet_{report['size']} ngf 64, "
             f"70x70 PatchGAN ndf 64) at {report['size']}x{report['size']}; {report['warmup']} warm-up step(s), "
             f"then {report['steps']} timed step(s) per row (batch > 1: {report['large_steps'] or report['steps']}). `reference` = junyanz's optimize_parameters re-stated "
             "(plain PyTorch); `diffinpaint` = diffinpaint.train.Pix2Pix through accelerate. Peak memory: "
             f"{report['results'][0]['peak_memory_kind'] if report['results'] else ''}.", "",
             "Load average = the machine's 1-minute load before/after the row: above the core count means other "
             "processes shared the CPU and the row's speed is understated (compare rows only at similar load).", "",
             "| impl | batch | precision | steps/s | images/s | peak memory (MiB) | load before/after |",
             "|---|---:|---|---:|---:|---:|---|"]
    for r in report["results"]:
        lines.append(f"| {r['impl']} | {r['batch_size']} | {r['precision']} | {r['steps_per_second']:.3f} | "
                     f"{r['images_per_second']:.3f} | {r['peak_memory_mib']:.0f} | "
                     f"{r['load_average_1min'][0]:.1f} / {r['load_average_1min'][1]:.1f} |")
    ab = report.get("interleaved_ab")
    if ab:
        lines += ["", f"Interleaved A/B in one process ({ab['size']}x{ab['size']}, batch 1, 1 thread, "
                  f"{ab['steps_each']} alternating steps each): reference {ab['seconds']['reference']:.2f} s, "
                  f"diffinpaint {ab['seconds']['diffinpaint']:.2f} s (ratio {ab['diffinpaint_over_reference']:.3f}): "
                  "the overhead of diffinpaint's step itself, free of load noise."]
    lines += ["", f"Command: `{report['command']}`"]
    lines += ["", "Fidelity: largest |difference| of first-step losses between the two implementations "
              "(same weights, batch and seed), per configuration:", ""]
    for key, value in report["fidelity"].items():
        lines.append(f"- {key}: {value:.3g}")
    if report.get("notes"):
        lines += ["", *[f"Note: {n}" for n in report["notes"]]]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--large-precisions", default=None,
                        help="precisions for batch sizes > 1 (default: --precisions); CPU runs keep fp32 for time")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per configuration")
    parser.add_argument("--large-steps", type=int, default=None, help="timed steps for batch sizes > 1")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    parser.add_argument("--ab", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--one", nargs=3, metavar=("IMPL", "BATCH", "PRECISION"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.ab:
        print(json.dumps(interleaved_ab()))
        return 0
    if args.one:
        impl, batch, precision = args.one
        print(json.dumps(run_one(impl, int(batch), precision, args.device, args.steps, args.warmup, args.size)))
        return 0

    notes = []
    precisions = args.precisions.split(",")
    if "bf16" in precisions and not bf16_supported(args.device):
        precisions.remove("bf16")
        notes.append(f"bf16 autocast is not supported on {args.device}; skipped")
    results = []
    large = [p for p in (args.large_precisions or ",".join(precisions)).split(",") if p in precisions]
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        steps = args.steps if batch == 1 or args.large_steps is None else args.large_steps
        if batch > 1 and large != precisions:
            notes.append(f"batch {batch}: only {','.join(large)} measured (--large-precisions), to bound the run time")
        for precision in (precisions if batch == 1 else large):
            for impl in ("reference", "diffinpaint"):
                command = [sys.executable, __file__, "--one", impl, str(batch), precision, "--device", args.device,
                           "--steps", str(steps), "--warmup", str(args.warmup), "--size", str(args.size)]
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode != 0:
                    tail = done.stderr.strip().splitlines()[-1:] or ["?"]
                    notes.append(f"{impl} batch {batch} {precision} failed: {tail[0]}")
                    print(notes[-1], file=sys.stderr)
                    continue
                result = json.loads(done.stdout.strip().splitlines()[-1])
                results.append(result)
                print(f"{impl:12s} batch {batch} {precision}: {result['steps_per_second']:.3f} steps/s, "
                      f"peak {result['peak_memory_mib']:.0f} MiB", file=sys.stderr)
    ab = None
    if args.device == "cpu":
        done = subprocess.run([sys.executable, __file__, "--ab"], capture_output=True, text=True)
        ab = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else None
    fidelity = {}
    for r in results:
        if r["impl"] != "diffinpaint":
            continue
        ref = next((x for x in results if x["impl"] == "reference" and x["batch_size"] == r["batch_size"]
                    and x["precision"] == r["precision"]), None)
        if ref:
            fidelity[f"batch {r['batch_size']} {r['precision']}"] = max(
                abs(r["first_step_losses"][k] - ref["first_step_losses"][k]) for k in r["first_step_losses"])
    report = {"device": args.device, "size": args.size, "steps": args.steps, "large_steps": args.large_steps,
              "warmup": args.warmup, "command": " ".join(["python", "eval/bench_pix2pix.py", *(argv or sys.argv[1:])]),
              "machine": machine(args.device), "results": results, "interleaved_ab": ab, "fidelity": fidelity, "notes": notes}
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        write_markdown(out.with_suffix(".md"), report)
    print(json.dumps({k: v for k, v in report.items() if k != "results"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
