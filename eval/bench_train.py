"""Benchmark training for every model the toolkit trains: the toolkit's trainer against a plain PyTorch loop.

For each model in the registry (`diffinpaint.models.TRAINED`, read at run time, so a newly registered model is
benchmarked without changes here) and each configuration (size, batch, precision), two ways on the same data,
weights and seeds, each in its own fresh process (so peak memory is that configuration's alone):

  toolkit  `diffinpaint.training.trainer.train(...)` end to end, as a user runs it: DataLoader (workers 0: images
           decoded, resized and given holes every step), RNG re-seeded per step, log.jsonl, tqdm, EMA copies, the
           NaN check, and a sample grid + checkpoint at the end only (--sample-every = --checkpoint-every =
           --steps, as with long runs).
  plain    a bare for-loop over the model's own `train_step`: networks from the class's `build_networks()` after
           torch.manual_seed(seed) (the trainer's init seed), moved to the device, optimisers from
           `build_optimizers()`, and a minimal stand-in for accelerate (backward = loss.backward(), no_sync = a
           null context, unwrap_model = identity, clip_grad_norm_ = torch's). Its batches are the exact examples
           the trainer draws (training/data.py's TrainingImages + StepBatches), built BEFORE the loop and already
           on the device: data loading is outside the plain loop's timing, inside the toolkit's.

Both start from the same weights and the same RNG state for step 1 (the trainer's per-step seed), so their
first-step losses must agree: the toolkit's are read back from its log.jsonl, and both are printed.

Timing: step 1 is a warm-up; steps 2..N are timed (toolkit: from the start of step 2's train_step to the moment
the trainer starts its end-of-run sample grid, i.e. every per-step cost of the trainer after step N included;
the end-of-run sample grid + checkpoint are reported separately as a one-off cost, and amortised over the model's
default --steps in one extra column). overhead = time(toolkit) / time(plain) - 1.
How the toolkit run is timed: the model class is subclassed to stamp the clock on entry to train_step, and the
trainer module's write_sample_grid is wrapped to stamp its start; nothing else is changed.

Peak memory: CUDA: torch.cuda.max_memory_allocated over the run; CPU: the process's peak resident set size
(VmHWM; includes Python, torch and the libraries), with its value just before the networks are built
(baseline) so the delta is the configuration's own.

On a CPU the runs use one torch thread (two OpenMP threads on a shared 2-core machine stall whenever a neighbour
holds a core: steps became 5-10x slower) and the headline overhead is computed from the process's CPU time, which
counts the work done rather than the time other jobs held the cores; wall-time overheads are reported beside it.
--repeats N runs each way N times in ABBA order and keeps each way's faster run. Configurations over 5 % are
re-run once under cProfile (not with --quick unless --profile yes) to show where the trainer's time goes.

    python eval/bench_train.py --quick --out eval/results/train_cpu_quick     # every model at 64², batch 2, ~3 min
    python eval/bench_train.py --device cpu --batch-sizes 1,8 --steps 4 --repeats 2 --out eval/results/train_cpu
    python eval/bench_train.py --device cuda --steps 20 --out eval/results/train_gpu   # batch 1 and 8, fp32 + bf16
    python eval/bench_train.py --models dcgan --batch-sizes 1 --steps 30 --merge --out eval/results/train_cpu
                                                  # add or re-measure rows, keeping the file's other rows

The last line printed is `trainer_overhead_max=<fraction>`: the worst overhead over the measured configurations.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))  # eval/machine.py
from machine import code_version, merge_previous, peak_memory, run_child  # noqa: E402  (eval/machine.py)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFINPAINT_OFFLINE", "1")

OVERHEAD_LIMIT = 0.05  # above this the bench profiles the toolkit run and names where the time goes


# ============================================================================================ the child: one run


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _configs(spec: dict):
    """(model class, TrainConfig, Options) of one configuration; identical for both ways."""
    from diffinpaint.models import trainable_class
    from diffinpaint.training.trainer import configs_from_options

    cls = trainable_class(spec["model"])
    steps = spec["steps"]
    options = {**spec["options"], "data": spec["data"], "out": spec["out"], "steps": steps,
               "batch_size": spec["batch_size"], "device": spec["device"],
               "mixed_precision": "bf16" if spec["precision"] == "bf16" else "no",
               # the end only, as with long runs; the one-off end cost is reported on its own
               "sample_every": steps, "checkpoint_every": steps, "keep_checkpoints": 1}
    cfg, opts = configs_from_options(cls, options)
    return cls, cfg, opts


def run_toolkit(spec: dict) -> dict:
    """The trainer end to end; the clock is stamped at each train_step entry and at the end-of-run sample grid."""
    import torch

    from diffinpaint.training import trainer

    cls, cfg, opts = _configs(spec)
    device = torch.device("cuda" if spec["device"] == "cuda" else "cpu")
    stamps: list[float] = []
    end: list[float] = []

    class Timed(cls):  # same name, options and step: only the clock is added
        def train_step(self, batch):
            _sync(device)
            stamps.append((time.perf_counter(), time.process_time()))
            return super().train_step(batch)

    Timed.__name__ = Timed.__qualname__ = cls.__name__
    if spec.get("no_ema"):  # diagnosis only: the same run without the trainer's EMA copies
        Timed.ema = {}
        Timed.describe = lambda self: []  # a model's describe() may name its EMA decay
    original_grid = trainer.write_sample_grid

    def stamped_grid(*args, **kwargs):
        _sync(device)
        if not end:
            end.append((time.perf_counter(), time.process_time()))
        return original_grid(*args, **kwargs)

    trainer.write_sample_grid = stamped_grid
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    baseline = peak_memory(device)[0]
    profiler = cProfile.Profile() if spec.get("profile") else None
    called = time.perf_counter()
    if profiler:
        profiler.enable()
    trainer.train(Timed, cfg, opts)
    if profiler:
        profiler.disable()
    _sync(device)
    returned = time.perf_counter()
    peak, kind = peak_memory(device)
    rows = [json.loads(line) for line in (Path(cfg.out) / "log.jsonl").read_text().splitlines()]
    first = {k: v for k, v in rows[0].items() if k not in ("step", "lr")}
    bounds = [*stamps[1:], end[0]]  # step k (k >= 2) runs from its train_step entry to the next one
    per_step = [b[0] - a[0] for a, b in zip(bounds[:-1], bounds[1:])]
    per_step_cpu = [b[1] - a[1] for a, b in zip(bounds[:-1], bounds[1:])]
    result = {"seconds": end[0][0] - stamps[1][0], "cpu_seconds": end[0][1] - stamps[1][1], "per_step": per_step,
              "per_step_cpu": per_step_cpu, "setup_seconds": stamps[0][0] - called,
              "end_seconds": returned - end[0][0], "first_step_losses": first,
              "peak_memory_mib": peak, "baseline_memory_mib": baseline, "memory_kind": kind}
    if profiler:
        result["profile"] = _attribute(profiler, spec["steps"] - 1, cls)
    return result


class PlainAccelerator:
    """What a model's train_step asks of accelerate, in plain PyTorch (one process, no wrapping)."""

    sync_gradients = True  # every step is an optimiser step (no gradient accumulation)

    def __init__(self, device):
        self.device = device

    @staticmethod
    def backward(loss):
        loss.backward()

    @staticmethod
    def no_sync(net):
        return nullcontext()

    @staticmethod
    def unwrap_model(net):
        return net

    @staticmethod
    def clip_grad_norm_(parameters, max_norm, norm_type=2):
        import torch

        return torch.nn.utils.clip_grad_norm_(parameters, max_norm, norm_type=norm_type)


def run_plain(spec: dict) -> dict:
    """A bare loop over train_step on batches built up front (the trainer's own examples)."""
    import numpy as np
    import torch

    from diffinpaint.training.data import TOOLKIT_HOLES, StepBatches, TrainingImages, training_samples
    from diffinpaint.models.trainable import Batch

    cls, cfg, opts = _configs(spec)
    device = torch.device("cuda" if spec["device"] == "cuda" else "cpu")
    model = cls()
    model.cfg, model.opts = cfg, opts
    model.check()
    # the exact examples the trainer draws at steps 0..N-1 (process 0 of 1), on the device before any timing
    own_holes = None if cfg.holes in (*TOOLKIT_HOLES, "dataset", "none") else model.make_holes
    images = TrainingImages(training_samples(cfg.data, cfg.holes), cfg.size, cfg.holes, cfg.flip, cfg.seed,
                            own_holes)
    batches = []
    for positions in StepBatches(0, cfg.steps, cfg.batch_size, 0, 1):
        examples = [images[p] for p in positions]
        batches.append(Batch(torch.stack([e[0] for e in examples]).to(device),
                             torch.stack([e[1] for e in examples]).to(device)))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    baseline = peak_memory(device)[0]
    # networks and optimisers as plain PyTorch builds them: seed, build, move, optimise
    built = time.perf_counter()
    torch.manual_seed(cfg.seed)
    nets = {name: net.to(device).train() for name, net in model.build_networks().items()}
    model.nets, model.optimizers = nets, model.build_optimizers(nets)
    model.accelerator, model.step = PlainAccelerator(device), 0
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if spec["precision"] == "bf16" else nullcontext()
    setup = time.perf_counter() - built
    # step 1 draws from the same RNG state as the trainer's step 1 (it re-seeds from (seed, step 0, rank 0));
    # a plain loop seeds once, so later steps draw differently, which changes no cost
    torch.manual_seed(int(np.random.SeedSequence([cfg.seed, 2, 0, 0]).generate_state(1)[0]))
    times, cpu_times, first = [], [], None
    for step, batch in enumerate(batches):
        model.step = step
        _sync(device)
        started, cpu_started = time.perf_counter(), time.process_time()
        with autocast:
            losses = model.train_step(batch)
        _sync(device)
        times.append(time.perf_counter() - started)
        cpu_times.append(time.process_time() - cpu_started)
        first = first or losses
    peak, kind = peak_memory(device)
    return {"seconds": sum(times[1:]), "cpu_seconds": sum(cpu_times[1:]), "per_step": times[1:],
            "per_step_cpu": cpu_times[1:], "setup_seconds": setup, "end_seconds": 0.0,
            "first_step_losses": first, "peak_memory_mib": peak, "baseline_memory_mib": baseline,
            "memory_kind": kind}


def _attribute(profiler: cProfile.Profile, timed_steps: int, cls) -> dict:
    """Where train()'s time goes: the cumulative seconds of each function train() calls directly (its loop's
    pieces: the DataLoader's __next__, the model's train_step, EMACopies.update, the schedulers, manual_seed,
    tqdm, json.dumps, open, .item(), the end-of-run sample grid and checkpoint, ...) and, one level down, of what
    EMACopies.update and the DataLoader call. cProfile's own cost inflates Python-heavy pieces somewhat."""
    stats = pstats.Stats(profiler).stats  # (file, line, name) -> (cc, nc, tt, ct, callers)

    def callees(caller_file: str, caller_name: str) -> list[tuple[str, int, float]]:
        found = []
        for (file, line, func), (_cc, _nc, _tt, _ct, callers) in stats.items():
            for (c_file, _c_line, c_func), (_c_cc, c_nc, _c_tt, c_ct) in callers.items():
                if c_func == caller_name and c_file.replace("\\", "/").endswith(caller_file):
                    where = f"{Path(file).parent.name}/{Path(file).name}:{line}" if line else "built-in"
                    found.append((f"{func} ({where})", c_nc, c_ct))
        return sorted(found, key=lambda x: -x[2])

    out = {"direct": [], "ema_update": [], "dataloader_next": [], "train_seconds": 0.0}
    for (file, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.items():
        if func == "train" and file.replace("\\", "/").endswith("training/trainer.py"):
            out["train_seconds"] = ct
    out["direct"] = [{"name": n, "calls": c, "seconds": t} for n, c, t in callees("training/trainer.py", "train")]
    out["ema_update"] = [{"name": n, "calls": c, "seconds": t} for n, c, t in callees("training/trainer.py", "update")]
    out["dataloader_next"] = [{"name": n, "calls": c, "seconds": t}
                              for n, c, t in callees("utils/data/dataloader.py", "_next_data")]
    out["_note"] = (f"cProfile over the whole train() call ({timed_steps + 1} steps; setup and end included): "
                    "cumulative seconds of each function train() calls directly")
    return out


# ============================================================================================ the parent


def bf16_usable(device: str) -> bool:
    import torch

    return device == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def write_random_vgg(path: Path) -> Path:
    """torchvision's VGG19 architecture with random weights, saved as a state dict: a model whose perceptual
    loss needs the (unavailable offline) ImageNet VGG19 file pays the same compute with it."""
    import torch
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    torch.save(make_layers(cfgs["E"])[:30].state_dict(), path)  # vgg19().features[:30], without the classifier
    return path


def model_plan(name: str, quick: bool, vgg_source) -> tuple[dict, list[str]]:
    """The options of one model's configuration, and notes on what was changed from the brief's sizes."""
    import dataclasses

    from diffinpaint.models import trainable_class
    from diffinpaint.training.trainer import configs_from_options
    from diffinpaint.util.errors import UserError

    cls = trainable_class(name)
    notes = []
    if quick:
        tiny = dict(getattr(cls, "tiny", {}) or {})
        if not tiny:
            notes.append(f"{name} has no `tiny` configuration: its defaults are used at 64 px")
        options = {**tiny, "size": 64}
    else:
        options = {}  # the model's defaults, its own size included (256, or 64 / 32 where that is the model's)
    fields = {f.name for f in dataclasses.fields(cls.Options)}
    if "vgg_weights" in fields and configs_from_options(cls, options)[1].perceptual:
        vgg_file = vgg_source()  # None when the real file is in torch's hub cache
        if vgg_file is not None:
            options["vgg_weights"] = str(vgg_file)
            notes.append(f"{name}: VGG19 perceptual loss on, with RANDOM VGG19 weights (no ImageNet file offline; "
                         "same compute)")
    cfg, opts = configs_from_options(cls, {**options, "batch_size": 2})
    model = cls()
    model.cfg, model.opts = cfg, opts
    try:
        model.check()
    except UserError as err:
        if quick and "size" in getattr(cls, "tiny", {}):
            notes.append(f"{name}: 64 px refused ({err}); its tiny size {cls.tiny['size']} used")
            options["size"] = cls.tiny["size"]
        else:
            raise
    return options, notes


def run_one(spec: dict, timeout: float) -> tuple[dict | None, str]:
    return run_child(__file__, ["--one", json.dumps(spec)], timeout)


def compare(a: dict, b: dict, by_cpu_time: bool) -> dict:
    """Overheads of the toolkit over the plain loop, and the first-step loss difference. `overhead` is the
    headline: from process CPU time where by_cpu_time (one thread on a shared CPU), else from wall time."""
    keys = sorted(set(a["first_step_losses"]) & set(b["first_step_losses"]))
    diff = max((abs(a["first_step_losses"][k] - b["first_step_losses"][k]) for k in keys), default=float("nan"))
    wall = a["seconds"] / b["seconds"] - 1.0
    cpu = a["cpu_seconds"] / b["cpu_seconds"] - 1.0
    return {"overhead": cpu if by_cpu_time else wall, "overhead_basis": "cpu time" if by_cpu_time else "wall time",
            "overhead_wall": wall, "overhead_cpu_time": cpu,
            "overhead_median_step": statistics.median(a["per_step"]) / statistics.median(b["per_step"]) - 1.0,
            "first_step_loss_max_abs_diff": diff}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="every model's tiny configuration at 64 px, batch 2, a few steps, 1 thread")
    parser.add_argument("--models", default=None, help="comma-separated (default: every model in TRAINED)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--precisions", default="fp32,bf16", help="bf16 is measured only where CUDA is available")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per run; step 1 is a warm-up (default 5, --quick 8)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: 1 on CPU, see below)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of each way, in ABBA order; the faster run of each way is reported (default 1)")
    parser.add_argument("--budget", type=float, default=240.0,
                        help="seconds one configuration (both ways) may take; larger ones are skipped, estimated "
                             "from the model's batch-1 time (default 240)")
    parser.add_argument("--profile", choices=("auto", "yes", "no"), default="auto",
                        help="re-run the toolkit way under cProfile: auto = configurations over 5%% overhead, "
                             "except with --quick (default auto)")
    parser.add_argument("--data", default=None, help="dataset folder (default: the demo set, made in a temp dir)")
    parser.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    parser.add_argument("--render", default=None, metavar="OUT",
                        help="only rewrite OUT.md from OUT.json (after editing the report code)")
    parser.add_argument("--merge", action="store_true",
                        help="keep OUT.json's rows of the models not measured now (add models one at a time)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.render:
        out = Path(args.render)
        write_markdown(out.with_suffix(".md"), json.loads(out.with_suffix(".json").read_text()))
        return 0

    if args.one:  # the child: one configuration, one way
        spec = json.loads(args.one)
        import torch

        if spec.get("threads"):
            torch.set_num_threads(spec["threads"])
        result = (run_toolkit if spec["impl"] == "toolkit" else run_plain)(spec)
        print(json.dumps(result))
        return 0

    import torch

    from diffinpaint.models import TRAINED, trainable_class
    from machine import machine_info

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    steps = args.steps or (8 if args.quick else 5)
    # one thread on CPU by default: with two OpenMP threads on a shared 2-core machine, every op waits for the
    # slower thread and a busy neighbour made single steps 5-10x slower (measured); one thread is stable
    threads = args.threads or (1 if device == "cpu" else None)
    # on a CPU with one torch thread the process's CPU time counts the work done, not the time other jobs on the
    # shared machine held the cores: the headline overhead uses it there, and wall time elsewhere
    basis = "cpu_seconds" if device == "cpu" and threads == 1 else "seconds"
    batch_sizes = [2] if args.quick else [int(b) for b in args.batch_sizes.split(",")]
    precisions = [p for p in args.precisions.split(",") if p == "fp32" or bf16_usable(device)]
    names = args.models.split(",") if args.models else list(TRAINED)  # read now: models may have been added
    notes = []
    if "bf16" in args.precisions and "bf16" not in precisions:
        notes.append(f"bf16 not measured: only with CUDA (device here: {device})")
    for name in ("dcgan", "transgan"):
        if name not in TRAINED:
            notes.append(f"{name} is not registered in diffinpaint.models.TRAINED at run time: not measured")
    tmp = tempfile.TemporaryDirectory(prefix="bench_train_")
    work = Path(tmp.name)
    data = args.data
    if data is None:
        from diffinpaint.data.demo import make_demo_dataset

        # 9 real photos at 256 px, two 75×75 holes each (masks.csv): every model resizes them to its size
        data = str(make_demo_dataset(work / "data", size=256, crops_per_photo=1, holes=2, hole_size=75, seed=0))
    vgg_cache: list[Path | None] = []

    def vgg_file() -> Path | None:
        """A VGG19 weights file for a perceptual loss: torch's hub cache when it holds one, else random weights."""
        if not vgg_cache:
            import torch.hub

            cached = Path(torch.hub.get_dir()) / "checkpoints" / "vgg19-dcbb9e9d.pth"
            vgg_cache.append(None if cached.is_file() else write_random_vgg(work / "vgg19_random.pth"))
        return vgg_cache[0]

    results, skipped = [], []
    for name in names:
        try:
            options, model_notes = model_plan(name, args.quick, vgg_file)
        except Exception as err:  # noqa: BLE001 - a model that cannot even be planned is reported, not fatal
            skipped.append({"model": name, "why": f"cannot configure: {err}"})
            continue
        notes += model_notes
        batch1_seconds = None
        for batch in batch_sizes:
            for precision in precisions:
                if batch1_seconds is not None and batch > 1:
                    # the batch-1 runs' wall time with their steps made `batch` times longer
                    fixed, per_step = batch1_seconds
                    estimate = (fixed + per_step * batch) * args.repeats
                    if estimate > args.budget:
                        skipped.append({"model": name, "batch_size": batch, "precision": precision,
                                        "why": f"estimated {estimate:.0f} s from batch 1 (budget {args.budget:.0f} s)"})
                        print(f"skip {name} batch {batch} {precision}: {skipped[-1]['why']}", file=sys.stderr)
                        continue
                row = {"model": name, "code": code_version(), "size": options.get("size"), "batch_size": batch,
                       "precision": precision, "repeats": args.repeats,
                       "device": device, "steps": steps, "timed_steps": steps - 1, "options": options,
                       "load_average_1min": [os.getloadavg()[0]]}
                runs, failed = {"plain": [], "toolkit": []}, ""
                # ABBA order over the repeats, so a slow spell of the shared machine hits both ways alike
                order = [("plain", "toolkit") if r % 2 == 0 else ("toolkit", "plain") for r in range(args.repeats)]
                for r, impl in ((r, impl) for r, pair in enumerate(order) for impl in pair):
                    spec = {"model": name, "impl": impl, "options": options, "data": data, "steps": steps,
                            "out": str(work / f"{name}_b{batch}_{precision}_{impl}_{r}"), "batch_size": batch,
                            "precision": precision, "device": device, "threads": threads}
                    started = time.perf_counter()
                    result, why = run_one(spec, timeout=max(120.0, 3 * args.budget))
                    if result is None:
                        failed = f"{impl} {why}"
                        break
                    result["wall_seconds"] = time.perf_counter() - started
                    runs[impl].append(result)
                if not failed:
                    # each way's least disturbed run (the fastest timed steps); all runs' times are kept
                    row["repeat_seconds"] = {k: [x["seconds"] for x in v] for k, v in runs.items()}
                    row["repeat_cpu_seconds"] = {k: [x["cpu_seconds"] for x in v] for k, v in runs.items()}
                    runs = {k: min(v, key=lambda x: x[basis]) for k, v in runs.items()}
                row["load_average_1min"].append(os.getloadavg()[0])
                if failed:
                    skipped.append({"model": name, "batch_size": batch, "precision": precision, "why": failed})
                    print(f"{name} batch {batch} {precision}: {failed}", file=sys.stderr)
                    continue
                row["size"] = row["size"] or trainable_class(name).defaults.get("size", 256)
                row.update(runs=runs, **compare(runs["toolkit"], runs["plain"], basis == "cpu_seconds"))
                default_steps = trainable_class(name).defaults.get("steps", 2000)
                per_step_a = runs["toolkit"][basis] / (steps - 1)
                row["default_steps"] = default_steps
                row["overhead_with_end_amortised"] = (  # the end cost is wall time (it includes file writes)
                    (per_step_a + runs["toolkit"]["end_seconds"] / default_steps)
                    / (runs["plain"][basis] / (steps - 1)) - 1.0)
                if batch == 1 and precision == "fp32":
                    stepping = steps * (runs["toolkit"]["seconds"] + runs["plain"]["seconds"]) / (steps - 1)
                    batch1_seconds = (runs["toolkit"]["wall_seconds"] + runs["plain"]["wall_seconds"] - stepping,
                                      stepping)
                print(f"{name:9s} {row['size']:>3}px batch {batch} {precision}: plain "
                      f"{(steps - 1) / runs['plain']['seconds']:.3f} steps/s, toolkit "
                      f"{(steps - 1) / runs['toolkit']['seconds']:.3f} steps/s (wall), overhead {row['overhead']:+.1%} "
                      f"({row['overhead_basis']}; wall {row['overhead_wall']:+.1%}, median wall step "
                      f"{row['overhead_median_step']:+.1%}); first-step losses plain "
                      f"{_fmt(runs['plain']['first_step_losses'])} | toolkit "
                      f"{_fmt(runs['toolkit']['first_step_losses'])} (max |diff| "
                      f"{row['first_step_loss_max_abs_diff']:.3g})", file=sys.stderr)
                if args.profile == "yes" or (args.profile == "auto" and not args.quick
                                             and row["overhead"] > OVERHEAD_LIMIT):
                    spec = {"model": name, "impl": "toolkit", "options": options, "data": data, "steps": steps,
                            "out": str(work / f"{name}_b{batch}_{precision}_profile"), "batch_size": batch,
                            "precision": precision, "device": device, "threads": threads, "profile": True}
                    profiled, why = run_one(spec, timeout=max(120.0, 3 * args.budget))
                    row["profile"] = profiled["profile"] if profiled else {"_note": why}
                    if profiled:
                        _print_profile(row["profile"], steps)
                results.append(row)

    overheads = [r["overhead"] for r in results]
    worst = max(overheads) if overheads else float("nan")
    report = {"device": device, "quick": args.quick, "steps": steps, "repeats": args.repeats, "threads": threads or torch.get_num_threads(),
              "command": " ".join(["python", "eval/bench_train.py", *(argv if argv is not None else sys.argv[1:])]),
              "machine": machine_info(), "results": results, "not_measured": skipped, "notes": notes,
              "trainer_overhead_max": worst}
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if args.merge and out.with_suffix(".json").is_file():
            merge_previous(report, json.loads(out.with_suffix(".json").read_text()), ("results", "not_measured"))
            overheads = [r["overhead"] for r in report["results"]]
            worst = report["trainer_overhead_max"] = max(overheads) if overheads else float("nan")
        out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        write_markdown(out.with_suffix(".md"), report)
    for line in notes + [f"not measured: {s}" for s in skipped]:
        print(f"note: {line}", file=sys.stderr)
    print("GPU users: python eval/bench_train.py --device cuda --steps 20 --out eval/results/train_gpu")
    print(f"trainer_overhead_max={worst:.4f}")
    return 0


def _fmt(losses: dict) -> str:
    return "{" + ", ".join(f"{k}: {v:.6g}" for k, v in losses.items()) + "}"


def _profile_rows(profile: dict, floor_ms: float = 0.5, top: int = 14) -> list[tuple[str, str, float, int]]:
    """(section, function, total ms, calls) of the profile's largest pieces (at least floor_ms in all)."""
    rows = []
    for section, key in (("train()", "direct"), ("EMACopies.update", "ema_update"),
                         ("DataLoader._next_data", "dataloader_next")):
        entries = [e for e in profile.get(key, []) if 1000 * e["seconds"] >= floor_ms][:top]
        rows += [(section, e["name"], 1000 * e["seconds"], e["calls"]) for e in entries]
    return rows


def _print_profile(profile: dict, steps: int) -> None:
    print(f"  profile of the toolkit run ({steps} steps; train() {profile.get('train_seconds', 0):.2f} s in all; "
          "per-step pieces have calls = steps):", file=sys.stderr)
    for section, name, ms, calls in _profile_rows(profile):
        print(f"    {section:22s} {name[:76]:76s} {ms:10.1f} ms total, {calls:3d} calls, {ms / calls:9.2f} ms/call",
              file=sys.stderr)


# ============================================================================================ report


def write_markdown(path: Path, report: dict) -> None:
    m = report["machine"]
    title = "quick (tiny configurations at 64 px)" if report["quick"] else "full size"
    lines = [f"# Training benchmark, {title} ({report['device']}): toolkit trainer vs a plain PyTorch loop", "",
             f"Machine: {m['cpu']}, {m['cpu_cores']} cores ({report['threads']} torch threads)"
             + (f", GPU {m['gpu']} (CUDA {m['cuda']})" if "gpu" in m else "")
             + f"; torch {m['torch']}, accelerate {m.get('accelerate', '?')}, diffusers {m.get('diffusers', '?')}, "
             f"Python {m['python']}.", "",
             "Each row: step 1 of each run is a warm-up, steps 2..N are timed (`timed steps` = N − 1); `runs` = "
             "runs of each way, in ABBA order, the faster run of each way reported (all runs' times are in the "
             "JSON). "
             "`plain` = a bare loop over the model's train_step on batches prepared up front (data loading NOT "
             "timed), networks from build_networks() after the same seed; `toolkit` = "
             "diffinpaint.training.trainer.train end to end (DataLoader with workers 0, per-step re-seed, log.jsonl, "
             "tqdm, EMA, NaN check; sample grid + checkpoint only at the end, reported apart as `end s`). "
             "overhead = toolkit time / plain time − 1 over the timed steps, from the process's CPU time "
             "(user + system; with one torch thread it counts the work done, not the time other jobs held the "
             "shared cores) and from wall time; `median wall step` = the same from the median step; `amortised` "
             "adds the end cost (wall) to the headline basis, spread over the model's default --steps. "
             f"Headline (trainer_overhead_max): {report['results'][0]['overhead_basis'] if report['results'] else '?'}"
             ". Steps/s are wall time. "
             "Each way runs in a fresh process: peak memory is "
             f"{report['results'][0]['runs']['plain']['memory_kind'] if report['results'] else '?'}"
             " (CPU: whole process incl. Python and libraries; Δ = above the value just before the networks were "
             "built).", "",
             "The machine is shared (2 cores, other jobs running): load average = 1-minute load before/after the "
             "row; at loads above the core count single rows can be off by tens of percent, so read the median "
             "column too.", "",
             "| model | code | size | batch | prec. | timed steps | runs | plain steps/s | toolkit steps/s | overhead (CPU time) "
             "| overhead (wall) | median wall step | amortised | end s | peak MiB plain / toolkit (Δ) "
             "| first-step loss |diff| | load |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|"]
    for r in report["results"]:
        a, b = r["runs"]["toolkit"], r["runs"]["plain"]
        n = r["timed_steps"]
        lines.append(
            f"| {r['model']} | {r.get('code', '?')} | {r['size']} | {r['batch_size']} | {r['precision']} | {n} | "
            f"{r.get('repeats', report.get('repeats', 1))} | "
            f"{n / b['seconds']:.3f} | "
            f"{n / a['seconds']:.3f} | {r['overhead_cpu_time']:+.1%} | {r['overhead_wall']:+.1%} | "
            f"{r['overhead_median_step']:+.1%} | "
            f"{r['overhead_with_end_amortised']:+.1%} | {a['end_seconds']:.2f} | "
            f"{b['peak_memory_mib']:.0f} / {a['peak_memory_mib']:.0f} "
            f"({b['peak_memory_mib'] - b['baseline_memory_mib']:+.0f} / "
            f"{a['peak_memory_mib'] - a['baseline_memory_mib']:+.0f}) | {r['first_step_loss_max_abs_diff']:.3g} | "
            f"{r['load_average_1min'][0]:.1f}/{r['load_average_1min'][1]:.1f} |")
    lines += ["", f"trainer_overhead_max = {report['trainer_overhead_max']:+.4f}", "", "First-step losses (both ways):", ""]
    for r in report["results"]:
        lines.append(f"- {r['model']} batch {r['batch_size']} {r['precision']}: plain "
                     f"{_fmt(r['runs']['plain']['first_step_losses'])}; toolkit "
                     f"{_fmt(r['runs']['toolkit']['first_step_losses'])}")
    lines += ["", "Options per model: " + "; ".join(
        f"{r['model']} {json.dumps({k: v for k, v in r['options'].items() if k != 'vgg_weights'})}"
        for r in report["results"] if r["batch_size"] == min(x["batch_size"] for x in report["results"]
                                                              if x["model"] == r["model"])
        and r["precision"] == "fp32")]
    profiled = [r for r in report["results"] if "profile" in r]
    if profiled:
        lines += ["", "## Where the overhead goes (configurations over 5%)", "",
                  "cProfile of one more toolkit run (the whole train() call: one-off setup and end pieces have 1 "
                  "call; per-step pieces have calls = steps; cProfile's own cost inflates Python-heavy pieces):",
                  ""]
        for r in profiled:
            lines += [f"**{r['model']} {r['size']} px batch {r['batch_size']} {r['precision']}** (overhead "
                      f"{r['overhead']:+.1%}; profiled run: train() {r['profile'].get('train_seconds', 0):.2f} s for "
                      f"{r['steps']} steps, setup and end included):", "",
                      "| called from | function | total ms | calls | ms per call |", "|---|---|---:|---:|---:|"]
            for section, name, ms, calls in _profile_rows(r["profile"]):
                lines.append(f"| {section} | `{name}` | {ms:.1f} | {calls} | {ms / calls:.2f} |")
            lines.append("")
    if report["not_measured"]:
        lines += ["", "## Not measured", ""]
        for s in report["not_measured"]:
            what = " ".join(str(s[k]) for k in ("model", "batch_size", "precision") if k in s)
            lines.append(f"- {what}: {s['why']}")
    if report["notes"]:
        lines += ["", "## Notes", "", *[f"- {n}" for n in report["notes"]]]
    lines += ["", f"Command: `{report['command']}`",
              "", "GPU: `python eval/bench_train.py --device cuda --steps 20 --out eval/results/train_gpu` "
              "(batch 1 and 8, fp32 and bf16)."]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
