"""The GPU suite: one prepared command that measures the toolkit's main jobs on one borrowed GPU in under 8 minutes
and writes eval/results/*_cuda.{json,md} with the machine.

    bash eval/gpu_wheels.sh                 # here, once, where pip reaches its index: wheels/ (ignored by git)
    bash eval/gpu_suite.sh                  # there: installs wheels/ offline, runs every part, bundles results
    python eval/gpu_suite.py --smoke --device cpu   # here: every part at tiny sizes (tests/test_gpu_suite.py)

Parts, in order, each in its own process with its own time budget (a part that fails or runs out of time is
recorded and the next one runs; time a part leaves unused goes to the parts after it; --budget caps the whole):
  setup       the packages the GPU machine lacks, installed from wheels/ without an index (pip --target, then on
              PYTHONPATH for every part), and the project itself (pip install --no-deps -e .)
  sd_flops    FLOPs of one 512² SD 1.5 inpainting image at 50 steps with guidance, counted by
              torch.utils.flop_counter on the architecture (meta tensors: no weights, no GPU; runs beside the
              next part): 50 UNet calls at batch 2, one VAE encode and decode, the text encoder on 2 prompts
  sd          eval/bench_sd.py: SD 1.5 inpainting at full size with random weights (diffinpaint/configs), 512²,
              50 steps, guidance, batch 8, bf16, sdpa, against a plain diffusers pipeline call
  sd_compile  the same with --compile (ours only)
  train       eval/bench_train.py --device cuda: every trained model at full size, batch 16 (halved until it fits),
              bf16 and fp32, toolkit trainer vs a plain loop
  sample      eval/bench_sample.py --device cuda: inference seconds per image of every trained model at batch 1
              and 16 (full-size checkpoints written by the trainer)
  metrics     eval/bench_metrics.py --device cuda: every metric against its reference implementation
Then gpu_suite_<device>.{json,md}: every part's status and time, the headline numbers, and the fraction of the
physical limit: images/s × counted FLOPs per image / the card's dense bf16 peak (PEAK_BF16_TFLOPS, by device name).

--smoke runs the same parts at tiny sizes (a tiny SD pipeline, one or two tiny models, a few images) so that a GPU
run never fails on a typo; it writes to a temporary folder unless --out-dir is given.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT / "eval"

# dense (no sparsity) bf16 tensor-core peak, TFLOP/s, by a substring of torch.cuda.get_device_name (first match)
PEAK_BF16_TFLOPS = [
    ("H200", 989.0),  # SXM; the NVL part is 835
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
]

# what the GPU machine lacks (module to import -> distribution); eval/gpu_wheels.sh downloads these wheels
NEEDED = {"diffusers": "diffusers", "torch_fidelity": "torch-fidelity", "spandrel": "spandrel",
          "imagehash": "ImageHash", "pywt": "PyWavelets", "tomli_w": "tomli-w", "open_clip": "open-clip-torch",
          "ftfy": "ftfy", "wcwidth": "wcwidth",
          # LaMa's training augmentation (models/lama/augment.py) and what albumentations needs beyond that machine's
          "albumentations": "albumentations", "albucore": "albucore", "pydantic": "pydantic",
          "pydantic_core": "pydantic-core", "annotated_types": "annotated-types",
          "typing_inspection": "typing-inspection", "stringzilla": "stringzilla", "simsimd": "simsimd"}

SITE = Path(tempfile.gettempdir()) / "diffinpaint-gpu-site"  # where the wheels are installed (pip --target)


def peak_bf16_tflops(device_name: str) -> float | None:
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in device_name), None)


# ============================================================================================ the parts


def part_commands(args, out: Path) -> dict[str, list[str]]:
    """name -> command line of every part after setup (the smoke's tiny versions with --smoke)."""
    py, dev = sys.executable, args.device
    if args.smoke:
        sd = [py, str(EVAL / "bench_sd.py"), "--model", "tiny", "--size", "64", "--resolution", "64", "--steps",
              "2", "--batch", "1", "--dtype", "fp32", "--device", dev, "--no-reference", "--out",
              str(out / f"sd_{dev}.json")]
        return {
            "sd_flops": [py, __file__, "--count-sd-flops", str(out / f"sd_flops_{dev}.json"), "--tiny-sd"],
            "sd": sd,
            "sd_compile": sd + ["--compile"],
            "train": [py, str(EVAL / "bench_train.py"), "--device", dev, "--quick", "--models", "dcgan",
                      "--steps", "3", "--repeats", "1", "--size", "32", "--precisions", "fp32,bf16", "--grouped", "yes",
                      "--fake-oom-above", "1", "--out", str(out / f"train_{dev}")],
            "sample": [py, str(EVAL / "bench_sample.py"), "--device", dev, "--kinds", "tiny", "--models",
                       "pix2pix,dcgan", "--batch-sizes", "1,2", "--grouped", "yes", "--out",
                       str(out / f"sample_{dev}")],
            "metrics": [py, str(EVAL / "bench_metrics.py"), "--device", dev, "--images", "4", "--lpips-images", "2",
                        "--fid-crops", "2", "--ids-features", "50", "--repeats", "1", "--out",
                        str(out / f"metrics_{dev}")],
        }
    sd = [py, str(EVAL / "bench_sd.py"), "--model", "full", "--size", "512", "--steps", "50", "--batch", "8",
          "--dtype", "bf16", "--attention", "sdpa", "--device", dev, "--warmup", "1", "--repeats", "1",
          "--out", str(out / f"sd_{dev}.json")]
    return {
        "sd_flops": [py, __file__, "--count-sd-flops", str(out / f"sd_flops_{dev}.json")],
        "sd": sd,
        "sd_compile": sd + ["--compile", "--no-reference"],
        "train": [py, str(EVAL / "bench_train.py"), "--device", dev, "--batch-sizes", "16", "--precisions",
                  "bf16,fp32", "--steps", "20", "--out", str(out / f"train_{dev}")],
        "sample": [py, str(EVAL / "bench_sample.py"), "--device", dev, "--kinds", "full", "--batch-sizes", "1,16",
                   "--out", str(out / f"sample_{dev}")],
        "metrics": [py, str(EVAL / "bench_metrics.py"), "--device", dev, "--repeats", "1", "--out",
                    str(out / f"metrics_{dev}")],
    }


# seconds per part on the GPU (sd_flops runs beside sd and has its own limit); they sum to the 8-minute budget
BUDGETS = {"setup": 40, "sd": 80, "sd_compile": 130, "train": 130, "sample": 70, "metrics": 30}
SMOKE_BUDGETS = {"setup": 60, "sd": 120, "sd_compile": 120, "train": 240, "sample": 240, "metrics": 120}
DEADLINE_MARGIN = 15  # seconds a benchmark with --deadline keeps for finishing its row and writing its report


def _env(smoke: bool, part: str) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(SITE)] if SITE.is_dir() else []
    env["PYTHONPATH"] = os.pathsep.join(paths + [str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("DIFFINPAINT_OFFLINE", "1")
    env["PYTHONUNBUFFERED"] = "1"
    if smoke and part == "sd_compile":
        env["TORCHDYNAMO_DISABLE"] = "1"  # the --compile path runs; compiling itself is for the GPU
    return env


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])


def run_part(name: str, command: list[str], timeout: float, env: dict) -> dict:
    """Run one part; never raises. Records the command, status, seconds and the output's tail."""
    print(f"== {name} (up to {timeout:.0f} s): {' '.join(command)}", flush=True)
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        status = "ok" if done.returncode == 0 else "failed"
        rc, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as err:
        status, rc = "timed out", None
        output = (err.stdout or b"").decode(errors="replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
        output += (err.stderr or b"").decode(errors="replace") if isinstance(err.stderr, bytes) else (err.stderr or "")
    except OSError as err:
        status, rc, output = "failed", None, str(err)
    seconds = time.perf_counter() - started
    print(f"   {status} in {seconds:.1f} s", flush=True)
    if status != "ok":
        print("   " + _tail(output).replace("\n", "\n   "), flush=True)
    return {"name": name, "command": " ".join(command), "status": status, "returncode": rc, "seconds": seconds,
            "budget_seconds": timeout, "output_tail": _tail(output, 30)}


def setup(args, timeout: float) -> dict:
    """Install what the machine lacks from the wheels folder (no index), and the project (editable, no deps)."""
    import importlib.util

    started = time.perf_counter()
    steps, status = [], "ok"
    missing = [module for module in NEEDED if importlib.util.find_spec(module) is None
               and not (SITE / module).exists()]
    wheels = Path(args.wheels)
    commands = []
    if missing:
        found = sorted(p.name for p in wheels.glob("*.whl")) if wheels.is_dir() else []
        if not found:
            status = "failed"
            steps.append(f"missing {', '.join(NEEDED[m] for m in missing)} and no wheels in {wheels} (run "
                         "`bash eval/gpu_wheels.sh` where pip reaches its index, then carry wheels/)")
        else:
            commands.append([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                             "--no-compile", "--upgrade", "--target", str(SITE), "--find-links", str(wheels),
                             *sorted({NEEDED[m] for m in NEEDED})])
    else:
        steps.append("every needed package imports already: nothing to install")
    if not args.smoke and not args.no_install:
        # the project itself, editable; every part also finds it on PYTHONPATH should this fail
        commands.append([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                         "--no-index", "-e", str(ROOT)])
    else:
        steps.append("project install skipped (--smoke / --no-install): parts import it from PYTHONPATH")
    for command in commands:
        left = timeout - (time.perf_counter() - started)
        try:
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=max(5.0, left))
            ok = done.returncode == 0
            steps.append(f"{' '.join(command[2:6])} ...: {'ok' if ok else 'failed: ' + _tail(done.stderr, 3)}")
            if not ok and "--target" in command:
                status = "failed"
        except subprocess.TimeoutExpired:
            steps.append(f"{' '.join(command[2:6])} ...: timed out")
            status = "failed"
    check = subprocess.run([sys.executable, "-c", "import " + ", ".join(NEEDED) + "; import diffinpaint"],
                           cwd=ROOT, env=_env(args.smoke, "setup"), capture_output=True, text=True)
    if check.returncode != 0:
        status = "failed"
        steps.append("imports still failing: " + _tail(check.stderr, 2))
    for line in steps:
        print(f"   setup: {line}", flush=True)
    return {"name": "setup", "command": "; ".join(" ".join(c) for c in commands) or "(nothing to install)",
            "status": status, "returncode": 0 if status == "ok" else 1, "seconds": time.perf_counter() - started,
            "budget_seconds": timeout, "output_tail": "\n".join(steps)}


# ============================================================================================ SD FLOPs


def count_sd_flops(out: Path, tiny: bool = False, resolution: int = 512, steps: int = 50) -> dict:
    """FLOPs of one inpainted image (50 steps, classifier-free guidance) counted on the architecture: the shipped
    SD 1.5 inpainting configs (or the tiny test pipeline's) built on the meta device, so no weights and no GPU are
    needed; the counts are those of the real model (flop_counter counts matmuls and convolutions by shape)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if tiny:
        sys.path.insert(0, str(ROOT / "tests"))
        from sd_tiny import TINY_CONFIGS

        configs = {name: dict(TINY_CONFIGS[name]) for name in ("unet", "vae", "text_encoder")}
    else:
        from diffinpaint.models.sd import CONFIG_DIR

        configs = {name: json.loads((Path(CONFIG_DIR) / f"{name}.json").read_text())
                   for name in ("unet", "vae", "text_encoder")}
    text_cfg = {k: v for k, v in configs["text_encoder"].items() if not k.startswith("_")}
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(configs["unet"])
        vae = AutoencoderKL.from_config(configs["vae"])
        text_encoder = CLIPTextModel(CLIPTextConfig(**text_cfg))
    latent = resolution // 2 ** (len(vae.config.block_out_channels) - 1)
    tokens = text_cfg.get("max_position_embeddings", 77)

    def flops(fn) -> int:
        with FlopCounterMode(display=False) as counter:
            fn()
        return int(counter.get_total_flops())

    with torch.no_grad(), torch.device("meta"):
        unet_call = flops(lambda: unet(torch.randn(2, unet.config.in_channels, latent, latent),
                                       torch.tensor([500, 500]),
                                       encoder_hidden_states=torch.randn(2, tokens, unet.config.cross_attention_dim)))
        vae_encode = flops(lambda: vae.encode(torch.randn(1, 3, resolution, resolution)))
        vae_decode = flops(lambda: vae.decode(torch.randn(1, vae.config.latent_channels, latent, latent)))
        text = flops(lambda: text_encoder(torch.zeros(2, tokens, dtype=torch.long)))
    per_image = steps * unet_call + vae_encode + vae_decode + text
    result = {"model": "tiny test pipeline" if tiny else "SD 1.5 inpainting (diffinpaint/configs/sd15_inpainting)",
              "resolution": resolution, "steps": steps, "guidance": True,
              "unet_call_batch2_flops": unet_call, "vae_encode_flops": vae_encode, "vae_decode_flops": vae_decode,
              "text_encoder_2_prompts_flops": text, "flops_per_image": per_image,
              "unet_parameters": sum(p.numel() for p in unet.parameters()),
              "note": "torch.utils.flop_counter on meta tensors: one UNet call on the guided batch of 2 (x steps), "
                      "one VAE encode of the masked image, one decode, the text encoder on 2 prompts; "
                      "1 multiply-add = 2 FLOPs"}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"flops_per_image={per_image / 1e12:.3f} TFLOP (UNet call {unet_call / 1e12:.3f} x {steps})")
    return result


# ============================================================================================ summary


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def summarise(out: Path, dev: str, parts: list[dict], started: float, args) -> dict:
    """gpu_suite_<dev>.{json,md}: parts, machine, and the headline numbers read back from each part's results."""
    sys.path.insert(0, str(EVAL))
    from machine import code_version, machine_info

    machine = machine_info()
    gpu = machine.get("gpu", "")
    peak = peak_bf16_tflops(gpu) if gpu else None
    flops = _load(out / f"sd_flops_{dev}.json")
    sd_rows = []
    for record in _load(out / f"sd_{dev}.json") or []:
        for path in ("ours", "reference"):
            run = record.get(path)
            if not isinstance(run, dict):
                continue
            row = {"path": path, "compile": record["config"]["compile"], "batch": record["config"]["batch"],
                   "steps": record["config"]["steps"], "dtype": record["config"]["dtype"],
                   "images_per_second": run["images_per_second"], "seconds_per_unet_step": run["seconds_per_step"],
                   "peak_gpu_memory_gib": run.get("peak_gpu_memory_gib"),
                   "fraction_bench_sd": run.get("fraction_of_physical_limit")}
            if flops and peak:
                row["fraction_of_physical_limit"] = run["images_per_second"] * flops["flops_per_image"] / (peak * 1e12)
            sd_rows.append(row)
    train = _load(out / f"train_{dev}.json") or {}
    sample = _load(out / f"sample_{dev}.json") or {}
    metrics = _load(out / f"metrics_{dev}.json") or {}
    summary = {"device": dev, "smoke": args.smoke, "code": code_version(), "machine": machine,
               "peak_bf16_tflops": peak, "budget_seconds": args.budget,
               "seconds": time.perf_counter() - started, "parts": parts, "sd_flops": flops, "sd": sd_rows,
               "train": [{k: r.get(k) for k in ("model", "size", "batch_size", "precision", "overhead_wall",
                                                 "overhead")}
                         | {"plain_steps_per_s": r["timed_steps"] / r["runs"]["plain"]["seconds"],
                            "toolkit_steps_per_s": r["timed_steps"] / r["runs"]["toolkit"]["seconds"],
                            "peak_mib_toolkit": r["runs"]["toolkit"]["peak_memory_mib"]}
                         for r in train.get("results", [])],
               "train_not_measured": train.get("not_measured", []),
               "sample": [{k: r.get(k) for k in ("model", "checkpoint_kind", "size", "batch_size", "seconds_per_image",
                                                  "default_seconds_per_image", "seconds_per_100", "loop", "error")}
                          for r in sample.get("results", [])],
               "metrics": {k: {"ratio": v.get("ratio"), "images_per_s_ours": v.get("images_per_s_ours")}
                           for k, v in (metrics.get("rows") or {}).items()}}
    (out / f"gpu_suite_{dev}.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    (out / f"gpu_suite_{dev}.md").write_text(render(summary) + "\n", encoding="utf-8")
    return summary


def render(s: dict) -> str:
    m = s["machine"]
    lines = [f"# GPU suite ({s['device']}{', smoke' if s['smoke'] else ''})", "",
             f"Machine: {m.get('gpu', 'no GPU')}" + (f" (CUDA {m['cuda']})" if m.get("cuda") else "")
             + f", {m['cpu']} ({m['cpu_cores']} cores); torch {m['torch']}, diffusers {m.get('diffusers', '?')}, "
             f"Python {m['python']}; code {s['code']}. Whole suite {s['seconds']:.0f} s (budget {s['budget_seconds']:.0f} s).",
             "", "| part | status | seconds | budget s |", "|---|---|---:|---:|"]
    lines += [f"| {p['name']} | {p['status']} | {p['seconds']:.1f} | {p['budget_seconds']:.0f} |" for p in s["parts"]]
    flops = s.get("sd_flops")
    if flops:
        lines += ["", f"SD FLOPs per image ({flops['model']}, {flops['resolution']}², {flops['steps']} steps, guidance), "
                  f"counted by torch.utils.flop_counter: {flops['flops_per_image'] / 1e12:.2f} TFLOP (UNet call on the "
                  f"guided batch {flops['unet_call_batch2_flops'] / 1e12:.3f} TFLOP × {flops['steps']}, VAE encode "
                  f"{flops['vae_encode_flops'] / 1e12:.2f}, decode {flops['vae_decode_flops'] / 1e12:.2f}, text "
                  f"encoder {flops['text_encoder_2_prompts_flops'] / 1e9:.0f} GFLOP)."]
    if s["sd"]:
        peak = s.get("peak_bf16_tflops")
        lines += ["", "## Stable Diffusion", "",
                  f"Peak assumed: {f'{peak:g} TFLOP/s dense bf16' if peak else 'unknown for this device: no fraction'}.",
                  "", "| path | compile | batch | steps | dtype | images/s | s per UNet step | peak GiB | "
                  "fraction of the physical limit |", "|---|---|---:|---:|---|---:|---:|---:|---:|"]
        for r in s["sd"]:
            frac = r.get("fraction_of_physical_limit")
            mem = r.get("peak_gpu_memory_gib")
            lines.append(f"| {r['path']} | {r['compile']} | {r['batch']} | {r['steps']} | {r['dtype']} | "
                         f"{r['images_per_second']:.3f} | {r['seconds_per_unet_step']:.4f} | "
                         f"{'—' if mem is None else f'{mem:.1f}'} | {'—' if frac is None else f'{frac:.1%}'} |")
    if s["train"]:
        lines += ["", "## Training step (toolkit trainer vs a plain loop)", "",
                  "| model | size | batch | precision | plain steps/s | toolkit steps/s | overhead (wall) | "
                  "peak MiB |", "|---|---:|---:|---|---:|---:|---:|---:|"]
        lines += [f"| {r['model']} | {r['size']} | {r['batch_size']} | {r['precision']} | "
                  f"{r['plain_steps_per_s']:.2f} | {r['toolkit_steps_per_s']:.2f} | {r['overhead_wall']:+.1%} | "
                  f"{r['peak_mib_toolkit']:.0f} |" for r in s["train"]]
        lines += [f"- not measured: {n}" for n in s["train_not_measured"]]
    if s["sample"]:
        lines += ["", "## Inference", "", "| model | checkpoint | size | batch | s / image |", "|---|---|---:|---:|---|"]
        for r in s["sample"]:
            if r.get("error"):
                value = f"error: {r['error']}"
            elif r.get("loop"):
                value = f"{r['seconds_per_100']:.3f} s per 100 {r['loop']}; defaults ≈ {r['default_seconds_per_image']:.1f}"
            else:
                value = f"{r['seconds_per_image']:.4f}"
            lines.append(f"| {r['model']} | {r['checkpoint_kind']} | {r.get('size') or '—'} | "
                         f"{r.get('batch_size') or '—'} | {value} |")
    if s["metrics"]:
        lines += ["", "## Metrics", "", "| metrics | diffinpaint images/s | ratio vs reference |", "|---|---:|---:|"]
        lines += [f"| {k} | {v['images_per_s_ours']:.0f} | {v['ratio']:.1f}× |" for k, v in s["metrics"].items()]
    lines += ["", "Each part's own report (same folder) has the details: sd_*, sd_flops_*, train_*, sample_*, "
              "metrics_*."]
    return "\n".join(lines)


# ============================================================================================ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--smoke", action="store_true", help="every part at tiny sizes (CPU test of the suite)")
    parser.add_argument("--out-dir", default=None, help="results folder (default eval/results; --smoke: a temp "
                        "folder)")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for the whole suite (default 480)")
    parser.add_argument("--parts", default=None, help="comma-separated subset, e.g. sd,train (setup always runs)")
    parser.add_argument("--wheels", default=str(ROOT / "wheels"), help="wheels folder (eval/gpu_wheels.sh)")
    parser.add_argument("--no-install", action="store_true", help="skip the project's editable install")
    parser.add_argument("--bundle", default=None, metavar="TAR_GZ", help="also pack every result file of this run "
                        "into this .tar.gz (eval/gpu_suite.sh: $OUT/gpu_results.tar.gz, which the device tool brings "
                        "back)")
    parser.add_argument("--count-sd-flops", default=None, metavar="OUT_JSON", help=argparse.SUPPRESS)
    parser.add_argument("--tiny-sd", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.count_sd_flops:
        sys.path.insert(0, str(ROOT))
        count_sd_flops(Path(args.count_sd_flops), tiny=args.tiny_sd)
        return 0

    started = time.perf_counter()
    if args.out_dir:
        out = Path(args.out_dir)
    elif args.smoke:
        out = Path(tempfile.mkdtemp(prefix="gpu_suite_smoke_"))
    else:
        out = ROOT / "eval" / "results"
    out.mkdir(parents=True, exist_ok=True)
    budgets = SMOKE_BUDGETS if args.smoke else BUDGETS
    wanted = set(args.parts.split(",")) if args.parts else None
    print(f"GPU suite on {args.device}{' (smoke)' if args.smoke else ''}: results in {out}", flush=True)

    def left() -> float:
        return args.budget - (time.perf_counter() - started)

    parts = [setup(args, min(budgets["setup"], left()))]
    commands = part_commands(args, out)
    flops_job = None
    if wanted is None or "sd_flops" in wanted:  # CPU only (meta tensors): beside the GPU parts
        print(f"== sd_flops (beside the next parts): {' '.join(commands['sd_flops'])}", flush=True)
        flops_log = tempfile.TemporaryFile(mode="w+")
        process = subprocess.Popen(commands["sd_flops"], cwd=ROOT, env=_env(args.smoke, "sd_flops"),
                                   stdout=flops_log, stderr=subprocess.STDOUT, text=True)
        ended: list[float] = []
        waiter = threading.Thread(target=lambda: (process.wait(), ended.append(time.perf_counter())), daemon=True)
        waiter.start()
        flops_job = (process, time.perf_counter(), flops_log, ended)
    carry = max(0.0, budgets["setup"] - parts[0]["seconds"])
    for name in ("sd", "sd_compile", "train", "sample", "metrics"):
        if wanted is not None and name not in wanted:
            continue
        timeout = min(budgets[name] + carry, left())
        if timeout < 10:
            parts.append({"name": name, "command": " ".join(commands[name]), "status": "skipped", "returncode": None,
                          "seconds": 0.0, "budget_seconds": max(timeout, 0.0),
                          "output_tail": "the suite's --budget was spent"})
            print(f"== {name}: skipped (the suite's budget is spent)", flush=True)
            continue
        command = list(commands[name])
        if name in ("train", "sample"):  # stop starting rows in time to write the report
            command += ["--deadline", f"{max(5.0, timeout - DEADLINE_MARGIN):.0f}"]
        result = run_part(name, command, timeout, _env(args.smoke, name))
        parts.append(result)
        carry = max(0.0, budgets[name] + carry - result["seconds"])
    if flops_job is not None:
        process, began, log, ended = flops_job
        try:
            process.wait(timeout=max(5.0, min(120.0, left() + 30)))
            status = "ok" if process.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            status = "timed out"
        log.seek(0)
        output = log.read()
        parts.insert(1, {"name": "sd_flops", "command": " ".join(commands["sd_flops"]), "status": status,
                         "returncode": process.returncode, "seconds": (ended or [time.perf_counter()])[0] - began,
                         "budget_seconds": None, "output_tail": _tail(output, 30)})
        print(f"== sd_flops: {status}" + ("" if status == "ok" else "\n   " + _tail(output)), flush=True)
    for part in parts:
        part["budget_seconds"] = part["budget_seconds"] if part["budget_seconds"] is not None else 0.0
    summary = summarise(out, args.device, parts, started, args)
    print(render(summary), flush=True)
    if args.bundle:
        import tarfile

        names = [f"{stem}_{args.device}{suffix}" for stem in ("gpu_suite", "sd", "sd_flops", "train", "sample",
                                                              "metrics") for suffix in (".json", ".md")]
        Path(args.bundle).parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(args.bundle, "w:gz") as tar:
            for name in names:
                if (out / name).is_file():
                    tar.add(out / name, arcname=name)
        print(f"bundled into {args.bundle} (unpack: tar xzf {Path(args.bundle).name} -C eval/results)", flush=True)
    bad = [p["name"] for p in parts if p["status"] != "ok"]
    print(f"gpu_suite_seconds={summary['seconds']:.1f} parts_ok={len(parts) - len(bad)}/{len(parts)}"
          + (f" not ok: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
