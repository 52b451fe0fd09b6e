"""Benchmark inference of every model the toolkit trains, through the public entry point
`diffinpaint.models.build_model(name, {"checkpoint": DIR, ...})` and `model.inpaint(...)`.

Two checkpoints per model (registry `diffinpaint.models.TRAINED`, read at run time), both written by the toolkit's
own trainer in a temp folder:
  tiny   the model's `tiny` training options (the registry's contract configuration), 2 steps;
  full   the model's DEFAULT options (its own size: 256 px, or 64 / 32 px where that is the model's), 1 step at
         batch 1: the weights are as good as random, which costs the same as trained ones. (Batch 1 only to keep
         the one step cheap; the batch size changes no network.) A model whose training needs a frozen VGG19
         (dmfn's perceptual loss) gets random VGG19 weights offline; inference never uses it.
Inputs: 256×256 images (smooth random colour fields) with two 75×75 holes each; `inpaint` resizes them to the
trained size and back, as in a real run, so the resizes are part of the cost. Seeds per image, as the runner.

What is measured (each checkpoint's inference in its own fresh process, so its peak memory is its own):
  one-pass models        seconds per image and images/s at batch 1 and 8 (warm-up call, then repeated calls)
  dcgan                  latent search: two runs at --dcgan-iterations I1 < I2 (default restarts 4) fitted as
                         a + b·iterations -> seconds per 100 iterations (b·100) and the fixed part a (start codes,
                         final pass, Poisson blend); the default (1500 iterations) cost is a + 1500·b
  repaint                two runs with the paper's jump structure (jump_length 10, jump_n_sample 10) at 20 and 30
                         reverse steps (110 and 210 UNet evaluations) fitted as a + b·evaluations -> seconds per
                         100 UNet evaluations; the defaults (250/10/10 = 2,410 evaluations + 2,160 noise-only undo
                         steps) cost a + 2410·b (the undo steps ride along in the same proportion)
Peak memory: CUDA max_memory_allocated, or the process's peak RSS (CPU; Python and libraries included).

    python eval/bench_sample.py --out eval/results/sample_cpu                  # CPU, 1 thread: ~25 min on a shared 2-core box
    python eval/bench_sample.py --device cuda --kinds full --batch-sizes 1,16 --out eval/results/sample_cuda

On a GPU (or with --grouped yes) one child process per checkpoint trains it and then measures every batch size
(peak memory from a reset allocator peak), which saves a CUDA start per measurement; on a CPU each measurement has
its own process (its peak RSS is its own). --deadline S starts no new checkpoint after S seconds; the report is
rewritten after every checkpoint, so a killed run keeps what it measured.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))  # eval/machine.py, eval/bench_train.py
from machine import code_version, merge_previous, peak_memory, run_child  # noqa: E402  (eval/machine.py)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFINPAINT_OFFLINE", "1")

INPUT_SIZE = 256  # the harness's image size; inpaint() resizes to the trained size and back


# models with a loop whose length is an inference setting: name -> (setting, values to fit on, default value)
LOOPS = {
    "dcgan": {"unit": "latent-search iterations", "fits": [{"iterations": 10}, {"iterations": 40}],
              "warmup": {"iterations": 2},
              "count": lambda s, config: s["iterations"], "default": {"iterations": 1500}},
    "repaint": {"unit": "UNet evaluations",
                "fits": [{"repaint_steps": 20, "jump_length": 10, "jump_n_sample": 10},
                         {"repaint_steps": 30, "jump_length": 10, "jump_n_sample": 10}],
                "warmup": {"repaint_steps": 2, "jump_length": 1, "jump_n_sample": 1},
                "count": lambda s, config: _repaint_evaluations(config, s),
                "default": {"repaint_steps": 250, "jump_length": 10, "jump_n_sample": 10}},
}


def _repaint_evaluations(config: dict, settings: dict) -> int:
    from diffinpaint.models.repaint.infer import RePaintSettings, make_scheduler, unet_evaluations

    fields = {k: v for k, v in settings.items() if k in RePaintSettings.__dataclass_fields__}
    return unet_evaluations(make_scheduler(config, RePaintSettings(**fields)).timesteps.tolist())


# ============================================================================================ children


def make_checkpoint(spec: dict) -> dict:
    """Train `steps` steps with the toolkit's trainer; the training folder is the checkpoint."""
    import torch

    from diffinpaint.training.trainer import train_from_options

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    started = time.perf_counter()
    folder = train_from_options(spec["model"], {"data": spec["data"], "out": spec["out"], "device": spec["device"],
                                                "steps": spec["steps"], "checkpoint_every": spec["steps"],
                                                "sample_every": spec["steps"], **spec["options"]})
    size = sum(p.stat().st_size for p in Path(folder).glob("*.safetensors"))
    return {"checkpoint": str(folder), "seconds": time.perf_counter() - started, "bytes": size}


def _inputs(n: int, seed: int = 0):
    import numpy as np
    import torch

    from diffinpaint.data.masks import box_mask

    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 6, 6, generator=g)
    images = torch.nn.functional.interpolate(coarse, size=(INPUT_SIZE, INPUT_SIZE), mode="bicubic",
                                             align_corners=False).clamp(0, 1)
    rng = np.random.default_rng(seed)
    masks = torch.stack([torch.from_numpy(box_mask(INPUT_SIZE, INPUT_SIZE, 2, 75, rng))[None].float()
                         for _ in range(n)])
    return images, masks


def measure(spec: dict) -> dict:
    """Build the model from the checkpoint with the given settings and time inpaint() calls."""
    import torch

    from diffinpaint.models import build_model

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if "settings_list" in spec:  # a loop model: a short warm-up run, then one timed call per setting
        results = []
        for settings in spec["settings_list"]:
            results.append(measure({**{k: v for k, v in spec.items() if k != "settings_list"}, "settings": settings,
                                    "warmup": False, "min_calls": 1, "min_seconds": 0.0}))
        return {"runs": results[1:]}
    started = time.perf_counter()
    model = build_model(spec["model"], {"checkpoint": spec["checkpoint"], **spec["settings"]},
                        device=spec["device"])
    load_seconds = time.perf_counter() - started
    images, masks = _inputs(spec["batch_size"])
    seeds, labels = list(range(spec["batch_size"])), [None] * spec["batch_size"]

    def call():
        with torch.enable_grad() if model.needs_grad else torch.inference_mode():
            out = model.inpaint(images, masks, seeds=seeds, labels=labels)
        sync()
        return out

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if spec.get("warmup", True):
        call()
    times = []
    while len(times) < spec.get("min_calls", 2) or (sum(times) < spec.get("min_seconds", 3.0)
                                                     and len(times) < spec.get("max_calls", 20)):
        t = time.perf_counter()
        out = call()
        times.append(time.perf_counter() - t)
    assert out.shape == images.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    peak, kind = peak_memory(device)
    per_call = sorted(times)[len(times) // 2]  # median call
    return {"load_seconds": load_seconds, "calls": len(times), "seconds_per_call": per_call,
            "seconds_per_image": per_call / spec["batch_size"], "images_per_second": spec["batch_size"] / per_call,
            "peak_memory_mib": peak, "memory_kind": kind, "size": model.size,
            "output_settings": {k: v for k, v in model.output_settings().items() if not k.endswith("sha256")
                                and k != "checkpoint"}}


def checkpoint_and_measure(spec: dict) -> dict:
    """The grouped child: write the checkpoint, then run every measurement spec on it in this process."""
    import gc

    import torch

    made = make_checkpoint(spec["checkpoint_spec"])
    answers = []
    for measure_spec in spec["measures"]:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        try:
            answers.append({"result": measure(measure_spec)})
        except Exception as err:  # noqa: BLE001 - reported per measurement (out of memory, say)
            answers.append({"error": f"failed: {type(err).__name__}: {str(err).splitlines()[0][:300]}"})
    return {"checkpoint": made, "measures": answers}


# ============================================================================================ parent


def run_child_mode(mode: str, spec: dict, timeout: float) -> tuple[dict | None, str]:
    return run_child(__file__, ["--child", mode, json.dumps(spec)], timeout)


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(a, b) of y = a + b·x through two points (or least squares through more)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b


def plan_measures(name: str, kind: str, checkpoint: str, args, device: str, threads) -> list[dict]:
    """The measurement specs of one checkpoint: one per batch size, or the loop fit (one spec) for dcgan /
    repaint, plus the Predictor's tiny settings for a tiny loop checkpoint."""
    from diffinpaint.models import model_class

    predictor = model_class(name).package.Predictor
    base = {"model": name, "checkpoint": checkpoint, "device": device, "threads": threads}
    if name in LOOPS:
        loop = LOOPS[name]
        # one process: a very short warm-up run (first-call costs), then one timed call per fit setting
        specs = [{**base, "settings_list": [loop["warmup"], *loop["fits"]], "batch_size": 1}]
        if predictor.tiny and kind == "tiny":  # the contract's settings, for reference
            specs.append({**base, "settings": dict(predictor.tiny), "batch_size": 1})
        return specs
    return [{**base, "settings": {}, "batch_size": batch} for batch in args.batch_sizes]


def rows_from(name: str, kind: str, config: dict, specs: list[dict], answers: list[tuple[dict | None, str]]) -> list[dict]:
    """Report rows of one checkpoint from its measurements ((result, "") or (None, why) per spec)."""
    rows = []
    if name in LOOPS:
        loop = LOOPS[name]
        result, why = answers[0]
        if result is None:
            return [{"model": name, "checkpoint_kind": kind, "error": why}]
        points = []
        for settings, run in zip(loop["fits"], result["runs"]):
            run["count"] = loop["count"](settings, config)
            points.append((settings, run))
        a, b = fit_line([p[1]["count"] for p in points], [p[1]["seconds_per_image"] for p in points])
        default_count = loop["count"](loop["default"], config)
        rows.append({"model": name, "checkpoint_kind": kind, "size": points[0][1]["size"], "batch_size": 1,
                     "loop": loop["unit"], "points": [{"settings": s, "count": r["count"],
                                                       "seconds_per_image": r["seconds_per_image"]}
                                                      for s, r in points],
                     "seconds_per_100": 100 * b, "fixed_seconds": a, "default_count": default_count,
                     "default_seconds_per_image": a + b * default_count,
                     "peak_memory_mib": max(r["peak_memory_mib"] for _, r in points),
                     "memory_kind": points[0][1]["memory_kind"], "load_seconds": points[0][1]["load_seconds"],
                     "output_settings": points[-1][1]["output_settings"]})
        for spec, (extra, _) in zip(specs[1:], answers[1:]):
            if extra:
                rows.append({"model": name, "checkpoint_kind": kind, "batch_size": 1, "settings": spec["settings"],
                             **extra})
        return rows
    for spec, (result, why) in zip(specs, answers):
        if result is None:
            rows.append({"model": name, "checkpoint_kind": kind, "batch_size": spec["batch_size"], "error": why})
            continue
        rows.append({"model": name, "checkpoint_kind": kind, "batch_size": spec["batch_size"], "settings": {},
                     **result})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=None, help="comma-separated (default: every model in TRAINED)")
    parser.add_argument("--kinds", default="tiny,full", help="checkpoints to measure: tiny, full or both")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: 1 on CPU, torch's on GPU)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per child process")
    parser.add_argument("--data", default=None, help="training images for the checkpoints (default: demo set)")
    parser.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    parser.add_argument("--render", default=None, metavar="OUT",
                        help="only rewrite OUT.md from OUT.json (after editing the report code)")
    parser.add_argument("--merge", action="store_true",
                        help="keep OUT.json's rows of the models not measured now (add models one at a time)")
    parser.add_argument("--grouped", choices=("auto", "yes", "no"), default="auto",
                        help="one child per checkpoint for training and every measurement (auto: on a GPU only)")
    parser.add_argument("--deadline", type=float, default=None,
                        help="start no new checkpoint after this many seconds")
    parser.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.render:
        out = Path(args.render)
        write_markdown(out.with_suffix(".md"), json.loads(out.with_suffix(".json").read_text()))
        return 0
    if args.child:
        mode, spec = args.child[0], json.loads(args.child[1])
        run = {"checkpoint": make_checkpoint, "measure": measure, "all": checkpoint_and_measure}[mode]
        print(json.dumps(run(spec)))
        return 0
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    import torch

    from bench_train import write_random_vgg
    from diffinpaint.models import TRAINED, trainable_class
    from machine import machine_info

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    names = args.models.split(",") if args.models else list(TRAINED)  # read now: models may have been added
    notes = [f"{n} is not registered in diffinpaint.models.TRAINED at run time: not measured"
             for n in ("dcgan", "transgan") if n not in TRAINED]
    work_dir = tempfile.TemporaryDirectory(prefix="bench_sample_")
    work = Path(work_dir.name)
    data = args.data
    if data is None:
        from diffinpaint.data.demo import make_demo_dataset

        data = str(make_demo_dataset(work / "data", size=256, crops_per_photo=1, holes=2, hole_size=75, seed=0))
    vgg = None
    rows, checkpoints = [], []
    started_at = time.perf_counter()
    grouped = args.grouped == "yes" or (args.grouped == "auto" and device == "cuda")
    # one thread on CPU by default: two OpenMP threads on a shared 2-core machine stall on every op while a
    # neighbour holds a core (measured: tiny pix2pix 0.35 s instead of 2 ms per image)
    threads = args.threads or (1 if device == "cpu" else None)
    previous = None
    if args.out and args.merge and Path(args.out).with_suffix(".json").is_file():
        previous = json.loads(Path(args.out).with_suffix(".json").read_text())

    def report() -> dict:
        """The report so far, written to --out after every checkpoint (a killed run keeps what it measured)."""
        rep = {"device": device, "input_size": INPUT_SIZE, "code": code_version(),
               "threads": args.threads or (1 if device == "cpu" else torch.get_num_threads()),
               "command": " ".join(["python", "eval/bench_sample.py", *(argv if argv is not None else sys.argv[1:])]),
               "machine": machine_info(), "checkpoints": list(checkpoints), "results": list(rows),
               "notes": list(notes), "elapsed_seconds": time.perf_counter() - started_at}
        if previous is not None:
            merge_previous(rep, previous, ("results", "checkpoints"))
        if args.out:
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.with_suffix(".json").write_text(json.dumps(rep, indent=2, default=str) + "\n", encoding="utf-8")
            write_markdown(out.with_suffix(".md"), rep)
        return rep

    for name in names:
        cls = trainable_class(name)
        for kind in args.kinds.split(","):
            if args.deadline is not None and time.perf_counter() - started_at > args.deadline:
                notes.append(f"{name} {kind}: not started, past the --deadline of {args.deadline:g} s")
                continue
            if kind == "tiny":
                options, steps = dict(getattr(cls, "tiny", {}) or {}), 2
                if not options:
                    notes.append(f"{name} has no `tiny` configuration: tiny checkpoint not measured")
                    continue
            else:
                options, steps = {"batch_size": 1}, 1
                fields = cls.Options.__dataclass_fields__
                if "vgg_weights" in fields and getattr(cls.Options(), "perceptual", False):
                    cached = Path(torch.hub.get_dir()) / "checkpoints" / "vgg19-dcbb9e9d.pth"
                    if not cached.is_file():
                        vgg = vgg or write_random_vgg(work / "vgg19_random.pth")
                        options["vgg_weights"] = str(vgg)
                        notes.append(f"{name} full checkpoint: trained its 1 step with RANDOM VGG19 weights for the "
                                     "perceptual loss (no ImageNet file offline); inference does not use VGG19")
            out = work / f"{name}_{kind}"
            checkpoint_spec = {"model": name, "data": data, "out": str(out), "device": device, "steps": steps,
                               "options": options, "threads": args.threads}
            specs = plan_measures(name, kind, str(out), args, device, threads)
            load = os.getloadavg()[0]
            if grouped:
                answer, why = run_child_mode("all", {"checkpoint_spec": checkpoint_spec, "measures": specs},
                                             args.timeout * (1 + len(specs)))
                made = answer["checkpoint"] if answer else None
                answers = [(a.get("result"), a.get("error", "")) for a in answer["measures"]] if answer else []
            else:
                made, why = run_child_mode("checkpoint", checkpoint_spec, args.timeout)
                answers = [run_child_mode("measure", spec, args.timeout) for spec in specs] if made else []
            if made is None:
                rows.append({"model": name, "checkpoint_kind": kind, "error": f"checkpoint {why}"})
                print(f"{name} {kind}: checkpoint {why}", file=sys.stderr)
                report()
                continue
            config = json.loads((Path(made["checkpoint"]) / "config.json").read_text())
            checkpoints.append({"model": name, "kind": kind, "size": config["size"], "options": options,
                                "steps": steps, "train_seconds": made["seconds"], "weights_mib": made["bytes"] / 2**20})
            for row in rows_from(name, kind, config, specs, answers):
                row["threads"] = threads or torch.get_num_threads()
                row["load_average_1min"] = [load, os.getloadavg()[0]]
                rows.append(row)
                print(_line(row), file=sys.stderr)
            report()

    report()
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print("GPU users: python eval/bench_sample.py --device cuda --kinds full --batch-sizes 1,16 --out "
          "eval/results/sample_cuda")
    return 0


def _line(row: dict) -> str:
    if "error" in row:
        return f"{row['model']:9s} {row['checkpoint_kind']:4s}: {row['error']}"
    if "loop" in row:
        return (f"{row['model']:9s} {row['checkpoint_kind']:4s} {row['size']}px: {row['seconds_per_100']:.2f} s per 100 "
                f"{row['loop']} (+{row['fixed_seconds']:.2f} s fixed); defaults ({row['default_count']} "
                f"{row['loop']}) ≈ {row['default_seconds_per_image']:.1f} s per image")
    return (f"{row['model']:9s} {row['checkpoint_kind']:4s} {row['size']}px batch {row['batch_size']}: "
            f"{row['seconds_per_image']:.4f} s/image, {row['images_per_second']:.2f} images/s, peak "
            f"{row['peak_memory_mib']:.0f} MiB" + (f" (settings {row['settings']})" if row.get("settings") else ""))


def write_markdown(path: Path, report: dict) -> None:
    m = report["machine"]
    rows = report["results"]
    kind = rows[0]["memory_kind"] if rows and "memory_kind" in rows[0] else "?"
    lines = [f"# Inference benchmark of the trained models ({report['device']})", "",
             f"Machine: {m['cpu']}, {m['cpu_cores']} cores ({report['threads']} torch thread(s))"
             + (f", GPU {m['gpu']} (CUDA {m['cuda']})" if "gpu" in m else "")
             + f"; torch {m['torch']}, diffusers {m.get('diffusers', '?')}, Python {m['python']}; code "
             f"{report.get('code', '?')}.", "",
             "Through `diffinpaint.models.build_model(name, {'checkpoint': DIR})` and `inpaint()`, inputs "
             f"{report['input_size']}×{report['input_size']} with two 75×75 holes (resized to the trained size and "
             "back inside inpaint). `tiny` = a checkpoint of the model's tiny training options (2 steps); `full` = "
             "the model's default options at its own size, 1 training step at batch 1 (random-quality weights, "
             "full cost). Each measurement in a fresh process; seconds per image = median call / batch. Peak "
             f"memory: {kind}. The machine is shared (2 cores, other jobs running): load average before/after.", "",
             "## One-pass models", "",
             "| model | checkpoint | size | batch | s / image | images / s | peak MiB | load |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if "error" in r or "loop" in r or r.get("settings"):
            continue
        lines.append(f"| {r['model']} | {r['checkpoint_kind']} | {r['size']} | {r['batch_size']} | "
                     f"{r['seconds_per_image']:.4f} | {r['images_per_second']:.2f} | {r['peak_memory_mib']:.0f} | "
                     f"{r['load_average_1min'][0]:.1f}/{r['load_average_1min'][1]:.1f} |")
    loops = [r for r in rows if "loop" in r]
    if loops:
        lines += ["", "## Iterative models (batch 1)", "",
                  "Two runs at different loop lengths (one process, after a very short warm-up run), fitted as "
                  "fixed + per-unit cost, and the defaults multiplied out two ways: `fit` = fixed + per-unit × "
                  "default units; `proportional` = the longer run's seconds per unit × default units (its fixed "
                  "part scaled up too, so an upper-side estimate). On the shared machine the fixed part of a "
                  "two-point fit is within noise (it can come out negative); the per-unit cost is the number "
                  "to use.", "",
                  "| model | checkpoint | size | unit | s per 100 units | fixed s | default units | "
                  "s / image at defaults: fit | proportional | measured points | peak MiB |",
                  "|---|---|---:|---|---:|---:|---:|---:|---:|---|---:|"]
        for r in loops:
            points = "; ".join(f"{p['count']} → {p['seconds_per_image']:.2f} s" for p in r["points"])
            longest = max(r["points"], key=lambda p: p["count"])
            proportional = longest["seconds_per_image"] / longest["count"] * r["default_count"]
            lines.append(f"| {r['model']} | {r['checkpoint_kind']} | {r['size']} | {r['loop']} | "
                         f"{r['seconds_per_100']:.3f} | {r['fixed_seconds']:.2f} | {r['default_count']:,} | "
                         f"{r['default_seconds_per_image']:.1f} | {proportional:.1f} | "
                         f"{points} | {r['peak_memory_mib']:.0f} |")
    extra = [r for r in rows if r.get("settings") and "error" not in r]
    if extra:
        lines += ["", "With the Predictor's `tiny` settings (the contract test's):", ""]
        lines += [f"- {r['model']} {r['checkpoint_kind']} {r['settings']}: {r['seconds_per_image']:.3f} s per image"
                  for r in extra]
    lines += ["", "## Checkpoints", "", "Written by the toolkit's trainer; `train s` includes process start-up, the end-of-run sample grid (RePaint: 50 DDPM steps on 4 images) and the checkpoint write; `files MiB` = all safetensors of the checkpoint (networks, optimiser states, EMA copies).", "", "| model | kind | size | training options | steps | train s "
              "| files MiB |", "|---|---|---:|---|---:|---:|---:|"]
    for c in report["checkpoints"]:
        shown = {k: v for k, v in c["options"].items() if k != "vgg_weights"}
        lines.append(f"| {c['model']} | {c['kind']} | {c['size']} | `{json.dumps(shown)}` | {c['steps']} | "
                     f"{c['train_seconds']:.1f} | {c['weights_mib']:.0f} |")
    errors = [r for r in rows if "error" in r]
    if errors or report["notes"]:
        lines += ["", "## Not measured / notes", ""]
        lines += [f"- {r['model']} {r['checkpoint_kind']} batch {r.get('batch_size', '-')}: {r['error']}"
                  for r in errors]
        lines += [f"- {n}" for n in report["notes"]]
    lines += ["", f"Command: `{report['command']}`", "",
              "GPU: `python eval/bench_sample.py --device cuda --kinds full --batch-sizes 1,16 --out "
              "eval/results/sample_cuda` (or the whole eval/gpu_suite.sh)."]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
