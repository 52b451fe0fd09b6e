"""Benchmark training for every model the toolkit trains: the toolkit's trainer against a plain PyTorch loop.

For each model in the registry (`diffinpaint.models.TRAINED`, read at run time, so a newly registered model is
benchmarked without changes here) and each configuration (size, batch, precision), two ways on the same data,
weights and seeds, each in its own fresh process (so peak memory is that configuration's alone):

  toolkit  `diffinpaint.training.trainer.train(...)` end to end, as a user runs it: each step's examples made
           (workers 0: holes drawn, flips, stacking; decoded images cached) and copied to the device one step
           ahead, RNG re-seeded per step, losses read every --log-every steps (log.jsonl, tqdm, the NaN check),
           EMA copies, and a sample grid + checkpoint at the end only (--sample-every = --checkpoint-every =
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
the trainer starts its end-of-run sample grid, i.e. every per-step cost of the trainer after step N included, the
last read of the losses too; on a GPU the device is synchronised only there and at step 2's start, as the plain
loop is at its first and last timed step: neither waits for the device in between;
the end-of-run sample grid + checkpoint are reported separately as a one-off cost, and amortised over the model's
default --steps in one extra column). overhead = time(toolkit) / time(plain) - 1.
How the toolkit run is timed: the model class is subclassed to stamp the clock on entry to train_step, and the
trainer module's write_sample_grid is wrapped to stamp its start; nothing else is changed.
Steps per run: --steps, else 20 on a GPU, 5 on a CPU; with --quick, as many as make about --quick-seconds (3 s)
of timed plain-loop steps (at least 8, at most 200), decided by the first plain run of each row (a tiny model's
12 ms step measured over 7 steps is noise).

Peak memory: CUDA: torch.cuda.max_memory_allocated over the run; CPU: the process's peak resident set size
(VmHWM; includes Python, torch and the libraries), with its value just before the networks are built
(baseline) so the delta is the configuration's own.

On a CPU the runs use one torch thread (two OpenMP threads on a shared 2-core machine stall whenever a neighbour
holds a core: steps became 5-10x slower) and the headline overhead is computed from the process's CPU time, which
counts the work done rather than the time other jobs held the cores; wall-time overheads are reported beside it.
--repeats N runs each way N times in ABBA order and keeps each way's faster run.

Paired runs (--paired; the default of --quick on a CPU): separate processes read ±5-10% apart on identical work on a
shared 2-core VM (the machine's speed drifts over seconds, and each process's memory layout differs), which is more
than the trainer's fixed cost of well under a millisecond per step that --quick exists to show. A paired run puts
both ways in one process, step by step: after each of the trainer's steps the plain loop takes its own step of the
same index (its own networks, batches and RNG stream; torch's generator state is swapped around it, so each way
computes exactly what it computes alone: tests/test_bench_train.py holds it). Plain = its steps' thread CPU time;
toolkit = the timed window's process CPU time minus the plain steps'; the examples' cost = the thread CPU time of the
trainer's own TrainingImages.batch calls in the window. Each repeat is one paired run; the row reports the run with
the median overhead (not the lowest: the least of several differences is the luckiest). CPU only (a GPU's queued
work would cross between the ways); peak memory is not split by way there. Configurations over 5 % are
re-run once under cProfile (not with --quick unless --profile yes) to show where the trainer's time goes.

On a GPU all runs of one model share one child process (peak memory = max_memory_allocated after a reset, so
runs need no process of their own there; this saves a CUDA start per run), and a batch that runs out of memory is
halved until it fits (the row says the batch it ran). --deadline S stops starting new rows after S seconds (a
time-boxed GPU suite); the report is rewritten after every row, so a killed run keeps what it measured.

    python eval/bench_train.py --quick --out eval/results/train_cpu_quick     # every model at 64², batch 2, paired,
                                                                              # median of 3, ~10 min
    python eval/bench_train.py --device cpu --batch-sizes 1,8 --steps 4 --repeats 2 --out eval/results/train_cpu
    python eval/bench_train.py --device cuda --batch-sizes 16 --out eval/results/train_cuda  # fp32 + bf16
    python eval/bench_train.py --models dcgan --batch-sizes 1 --steps 30 --merge --out eval/results/train_cpu
                                                  # add or re-measure rows, keeping the file's other rows

The trainer's own cost: on a CPU the toolkit's timed window also holds the work of making its examples (between its
steps there; a thread ahead on a GPU: holes drawn, the model's augmentation, flips, stacking), which the plain loop
did before its clock started.
That work is measured in the plain process with the trainer's own TrainingImages.batch and reported per step
(`examples ms`); the headline overhead takes it off the toolkit's CPU time (`net of examples`: the trainer's fixed
cost per step, what a plain loop that made the same examples would not pay), and the overhead with it stays in the
table and the JSON (`overhead_with_examples`). On a GPU (wall time) nothing is taken off: the trainer's batch thread
overlaps the steps, so a data path that cannot keep up shows in the headline.

The last lines printed are `trainer_overhead_max_with_examples=<fraction>` and `trainer_overhead_max=<fraction>`: the
worst overhead over the measured configurations, with and net of making the examples.
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
from contextlib import contextmanager, nullcontext
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


@contextmanager
def stamped_end(end: list, device=None):
    """While active, the trainer's end-of-run sample grid first appends (wall, process cpu) to `end` (once; after
    waiting for `device` where given): the end of the timed steps."""
    from diffinpaint.training import trainer

    original_grid = trainer.write_sample_grid

    def stamped_grid(*args, **kwargs):
        if device is not None:
            _sync(device)
        if not end:
            end.append((time.perf_counter(), time.process_time()))
        return original_grid(*args, **kwargs)

    trainer.write_sample_grid = stamped_grid
    try:
        yield
    finally:
        trainer.write_sample_grid = original_grid


def logged_losses(out: str) -> tuple[dict, dict]:
    """The first and the last step's losses as the trainer wrote them to OUT/log.jsonl."""
    rows = [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]
    first, last = ({k: v for k, v in row.items() if k not in ("step", "lr")} for row in (rows[0], rows[-1]))
    return first, last


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
            if len(stamps) == 1:  # the timed steps start: step 1's device work is done (the only sync until the end)
                _sync(device)
            stamps.append((time.perf_counter(), time.process_time()))
            return super().train_step(batch)

    Timed.__name__ = Timed.__qualname__ = cls.__name__
    if spec.get("no_ema"):  # diagnosis only: the same run without the trainer's EMA copies
        Timed.ema = {}
        Timed.describe = lambda self: []  # a model's describe() may name its EMA decay
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    baseline = peak_memory(device)[0]
    profiler = cProfile.Profile() if spec.get("profile") else None
    called = time.perf_counter()
    if profiler:
        profiler.enable()
    try:
        with stamped_end(end, device):
            trainer.train(Timed, cfg, opts)
    finally:
        if profiler:
            profiler.disable()
    _sync(device)
    returned = time.perf_counter()
    peak, kind = peak_memory(device)
    first, last = logged_losses(cfg.out)
    bounds = [*stamps[1:], end[0]]  # step k (k >= 2) runs from its train_step entry to the next one
    per_step = [b[0] - a[0] for a, b in zip(bounds[:-1], bounds[1:])]
    per_step_cpu = [b[1] - a[1] for a, b in zip(bounds[:-1], bounds[1:])]
    result = {"seconds": end[0][0] - stamps[1][0], "cpu_seconds": end[0][1] - stamps[1][1], "per_step": per_step,
              "per_step_cpu": per_step_cpu, "setup_seconds": stamps[0][0] - called,
              "end_seconds": returned - end[0][0], "first_step_losses": first, "last_step_losses": last,
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


class PlainLoop:
    """The plain way's state: the model with networks from build_networks() after the trainer's init seed, its
    optimisers, PlainAccelerator, and the exact examples the trainer draws at steps 0..N-1 (process 0 of 1), made
    with the trainer's own TrainingImages.batch and on the device before any timing."""

    def __init__(self, spec: dict):
        import torch

        from diffinpaint.models.trainable import Batch
        from diffinpaint.training.data import StepBatches, training_samples
        from diffinpaint.training.trainer import training_images

        cls, cfg, opts = _configs(spec)
        self.device = torch.device("cuda" if spec["device"] == "cuda" else "cpu")
        model = cls()
        model.cfg, model.opts = cfg, opts
        model.check()
        images = training_images(model, training_samples(cfg.data, cfg.holes))
        # (decoded images cached, holes, the model's augmentation, flips), each step's cost recorded: the toolkit
        # pays it inside its timed window (between steps on a CPU), this loop here, untimed; reported so the trainer's
        # own cost can be told from the data's. Step 0 is left out of the mean, as the toolkit made it before its
        # clock started.
        self.batches, example_times = [], []
        for positions in StepBatches(0, cfg.steps, cfg.batch_size, 0, 1):
            wall, cpu = time.perf_counter(), time.process_time()
            batch_images, batch_masks = images.batch(positions)
            example_times.append((time.perf_counter() - wall, time.process_time() - cpu))
            self.batches.append(Batch(batch_images.to(self.device), batch_masks.to(self.device)))
        timed_examples = example_times[1:] or example_times
        self.example_wall = sum(w for w, _ in timed_examples) / len(timed_examples)
        self.example_cpu = sum(c for _, c in timed_examples) / len(timed_examples)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        self.baseline_memory = peak_memory(self.device)[0]
        # networks and optimisers as plain PyTorch builds them: seed, build, move, optimise
        built = time.perf_counter()
        torch.manual_seed(cfg.seed)
        nets = {name: net.to(self.device).train() for name, net in model.build_networks().items()}
        model.nets, model.optimizers = nets, model.build_optimizers(nets)
        model.accelerator, model.step = PlainAccelerator(self.device), 0
        self.model, self.seed = model, cfg.seed
        self.autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if spec["precision"] == "bf16"
                         else nullcontext())
        self.setup_seconds = time.perf_counter() - built

    def step(self, step: int) -> dict:
        """One step of the bare loop: train_step on this step's batch (the losses as the step returns them)."""
        self.model.step = step
        with self.autocast:
            return self.model.train_step(self.batches[step])


def run_plain(spec: dict) -> dict:
    """A bare loop over train_step on batches built up front (the trainer's own examples)."""
    import numpy as np
    import torch

    plain = PlainLoop(spec)
    # step 1 draws from the same RNG state as the trainer's step 1 (it re-seeds from (seed, step 0, rank 0));
    # a plain loop seeds once, so later steps draw differently, which changes no cost
    torch.manual_seed(int(np.random.SeedSequence([plain.seed, 2, 0, 0]).generate_state(1)[0]))
    # the device is synchronised before the first timed step and after the last one only: like the trainer, the
    # loop never waits for it in between (per-step times are host times on a GPU)
    stamps, first = [], None
    seconds = spec.get("seconds")  # --quick: stop once this much was timed (at least `min_steps` steps in all)
    for step in range(len(plain.batches)):
        if step == 1:
            _sync(plain.device)
        stamps.append((time.perf_counter(), time.process_time()))
        losses = plain.step(step)
        if step == 0:
            first = {k: float(v) for k, v in losses.items()}  # the one read of the losses (untimed step 1)
        if seconds and step + 1 >= spec.get("min_steps", 8) and time.perf_counter() - stamps[min(1, step)][0] >= seconds:
            break
    _sync(plain.device)
    stamps.append((time.perf_counter(), time.process_time()))
    timed = stamps[1:]
    per_step = [b[0] - a[0] for a, b in zip(timed[:-1], timed[1:])]
    per_step_cpu = [b[1] - a[1] for a, b in zip(timed[:-1], timed[1:])]
    peak, kind = peak_memory(plain.device)
    return {"seconds": timed[-1][0] - timed[0][0], "cpu_seconds": timed[-1][1] - timed[0][1], "per_step": per_step,
            "per_step_cpu": per_step_cpu, "setup_seconds": plain.setup_seconds, "end_seconds": 0.0,
            "steps_run": len(stamps) - 1, "first_step_losses": first,
            "last_step_losses": {k: float(v) for k, v in losses.items()}, "peak_memory_mib": peak,
            "baseline_memory_mib": plain.baseline_memory, "memory_kind": kind,
            "example_seconds_per_step": plain.example_wall, "example_cpu_seconds_per_step": plain.example_cpu}


def run_paired(spec: dict) -> dict:
    """Both ways in this one process, step by step (CPU): after each of the trainer's steps, the plain loop takes
    its own step of the same index, so a slow spell of the shared machine (or a neighbour's burst) falls on both
    ways alike instead of on whichever process ran then. The trainer runs end to end exactly as in run_toolkit; the
    plain step runs inside the timing hook, once the trainer's train_step has returned, on its own networks, batches
    and RNG stream (the generator's state is swapped in and out around it, so the trainer's draws are untouched).

    Timing: plain = the main thread's CPU time (time.thread_time) and the wall time of each plain step; toolkit =
    the timed window's process CPU time (every thread: a batch thread's included) and wall time, minus the plain
    steps' main-thread CPU and wall time. The thread CPU time of each TrainingImages.batch call the trainer makes
    inside the window is recorded (as the toolkit actually pays it) and reported as the examples' cost."""
    import torch

    from diffinpaint.training import trainer
    from diffinpaint.training.data import TrainingImages

    if spec["device"] != "cpu":
        raise ValueError("paired runs are for CPUs (a GPU's queued work would cross between the ways)")
    plain = PlainLoop(spec)
    cls, cfg, opts = _configs(spec)
    entries: list[tuple[float, float]] = []  # (wall, process cpu) at each of the trainer's train_step entries
    windows: list[tuple[float, float, float]] = []  # each plain step's wall, process cpu and main-thread cpu
    plain_rng, plain_losses, end = [None], [], []
    examples: list[tuple[float, float]] = []  # (start wall, thread cpu) of each batch the trainer makes
    make_batch = TrainingImages.batch

    def timed_batch(self, *args, **kwargs):
        began, cpu = time.perf_counter(), time.thread_time()
        made = make_batch(self, *args, **kwargs)
        examples.append((began, time.thread_time() - cpu))
        return made

    class Paired(cls):  # same name, options and step: the clock and the plain loop's step are added
        def train_step(self, batch):
            step = len(entries)
            entries.append((time.perf_counter(), time.process_time()))
            if step == 0:  # the plain loop starts from the trainer's step-0 state, as in run_plain
                plain_rng[0] = torch.get_rng_state()
            losses = super().train_step(batch)
            # the plain step after the trainer's: a batch made ahead (by a thread, `device_batches(thread=True)`)
            # starts as soon as this step's was handed out, so its work (and its contention for the cores) overlaps
            # the trainer's step, as when the trainer runs alone, not the plain loop's
            trainer_rng = torch.get_rng_state()
            torch.set_rng_state(plain_rng[0])
            wall, cpu, own = time.perf_counter(), time.process_time(), time.thread_time()
            plain_losses.append(plain.step(step))
            windows.append((time.perf_counter() - wall, time.process_time() - cpu, time.thread_time() - own))
            plain_rng[0] = torch.get_rng_state()
            torch.set_rng_state(trainer_rng)
            return losses

    Paired.__name__ = Paired.__qualname__ = cls.__name__
    TrainingImages.batch = timed_batch
    called = time.perf_counter()
    try:
        with stamped_end(end):
            trainer.train(Paired, cfg, opts)
    finally:
        TrainingImages.batch = make_batch
    returned = time.perf_counter()
    peak, kind = peak_memory(plain.device)
    first, last = logged_losses(cfg.out)
    # step k >= 1: toolkit = from its train_step's entry to the next one (or to the end-of-run grid), as in
    # run_toolkit, less the main thread's CPU time of the plain step inside it (other threads' work stays with the
    # toolkit); plain = that plain step's main-thread CPU time
    bounds = [*entries[1:], end[0]]
    timed = windows[1:]
    plain_wall = [w for w, _, _ in timed]
    plain_cpu = [own for _, _, own in timed]
    toolkit_wall = [b[0] - a[0] - w for a, b, (w, _, _) in zip(bounds[:-1], bounds[1:], timed)]
    toolkit_cpu = [b[1] - a[1] - own for a, b, (_, _, own) in zip(bounds[:-1], bounds[1:], timed)]
    window_examples = [cpu for began, cpu in examples if began >= entries[1][0]]
    shared = {"peak_memory_mib": peak, "baseline_memory_mib": plain.baseline_memory,
              "memory_kind": f"{kind}, one process for both ways (paired)"}
    plain_result = {"seconds": sum(plain_wall), "cpu_seconds": sum(plain_cpu), "per_step": plain_wall,
                    "per_step_cpu": plain_cpu, "setup_seconds": plain.setup_seconds, "end_seconds": 0.0,
                    "first_step_losses": {k: float(v) for k, v in plain_losses[0].items()},
                    "last_step_losses": {k: float(v) for k, v in plain_losses[-1].items()},
                    # what compare() takes off the toolkit: the examples as the trainer made them in the window
                    "example_cpu_seconds_per_step": sum(window_examples) / len(timed),
                    "example_seconds_per_step": plain.example_wall,
                    "example_alone_cpu_seconds_per_step": plain.example_cpu, **shared}
    toolkit_result = {"seconds": sum(toolkit_wall), "cpu_seconds": sum(toolkit_cpu), "per_step": toolkit_wall,
                      "per_step_cpu": toolkit_cpu, "setup_seconds": entries[0][0] - called,
                      "end_seconds": returned - end[0][0], "first_step_losses": first, "last_step_losses": last,
                      "examples_in_window": len(window_examples), **shared}
    return {"plain": plain_result, "toolkit": toolkit_result}


RUNS = {"toolkit": run_toolkit, "plain": run_plain, "paired": run_paired}


def run_many(specs: list[dict]) -> list[dict]:
    """Several runs in this one process (GPU): each one's peak memory from a reset allocator peak; a run that fails
    (out of memory, say) is reported and the next one runs."""
    import gc
    import traceback

    import torch

    from accelerate.state import AcceleratorState, GradientState

    results = []
    for spec in specs:
        # accelerate keeps one process-wide state (its mixed precision included): each run starts from a fresh one,
        # as in a process of its own
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
        try:
            if spec.get("fake_oom_above") is not None and spec["batch_size"] > spec["fake_oom_above"]:
                raise RuntimeError(f"CUDA out of memory (simulated for batch {spec['batch_size']})")
            results.append({"result": RUNS[spec["impl"]](spec)})
        except Exception as err:  # noqa: BLE001 - reported per run, the others still run
            last = traceback.format_exception_only(type(err), err)[-1].strip()
            results.append({"error": f"failed: {last[:300]}"})
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return results


def _attribute(profiler: cProfile.Profile, timed_steps: int, cls) -> dict:
    """Where train()'s time goes: the cumulative seconds of each function train() calls directly (its loop's
    pieces: the batches made one step ahead, the model's train_step, EMACopies.update, the schedulers, the
    re-seeding, tqdm, the block reads of the losses, the end-of-run sample grid and checkpoint, ...) and, one level
    down, of what EMACopies.update and host_batches (the examples of each step) call. cProfile's own cost inflates
    Python-heavy pieces somewhat."""
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
    out["dataloader_next"] = [{"name": n, "calls": c, "seconds": t}  # the examples of each step (workers 0)
                              for n, c, t in callees("training/data.py", "host_batches")]
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


def write_random_ade20k(path: Path) -> Path:
    """LaMa's HRF perceptual network (the ADE20k dilated ResNet-50 encoder) with random weights, saved as a state
    dict: the same compute as CSAIL's encoder_epoch_20.pth, which cannot be downloaded here."""
    import torch

    from diffinpaint.models.lama.hrf import ResNet50Dilated

    torch.manual_seed(0)
    torch.save(ResNet50Dilated().state_dict(), path)
    return path


# the frozen networks of perceptual losses: option -> what it holds (the real files cannot be downloaded here)
FROZEN_WEIGHTS = {"vgg_weights": "VGG19", "perceptual_weights": "ADE20k ResNet-50"}


def model_plan(name: str, quick: bool, weights_source, size: int | None = None) -> tuple[dict, list[str]]:
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
        options = {**tiny, "size": size or 64}
    else:
        options = {}  # the model's defaults, its own size included (256, or 64 / 32 where that is the model's)
        if size:
            options["size"] = size
    fields = {f.name for f in dataclasses.fields(cls.Options)}
    for field, network in FROZEN_WEIGHTS.items():
        if field in fields and configs_from_options(cls, options)[1].perceptual:
            path = weights_source(network)  # None when the real file is where the model looks by default
            if path is not None:
                options[field] = str(path)
                notes.append(f"{name}: perceptual loss on, with RANDOM {network} weights (the real file is not "
                             "available offline; same compute)")
    cfg, opts = configs_from_options(cls, {**options, "batch_size": 2})
    model = cls()
    model.cfg, model.opts = cfg, opts
    try:
        model.check()
    except UserError as err:
        if quick and "size" in getattr(cls, "tiny", {}):
            notes.append(f"{name}: {options['size']} px refused ({err}); its tiny size {cls.tiny['size']} used")
            options["size"] = cls.tiny["size"]
        else:
            raise
    return options, notes


def run_one(spec: dict, timeout: float) -> tuple[dict | None, str]:
    return run_child(__file__, ["--one", json.dumps(spec)], timeout)


def run_group(specs: list[dict], timeout: float) -> list[tuple[dict | None, str]]:
    """Several runs in one child process (GPU); (result, "") or (None, why) for each."""
    answer, why = run_child(__file__, ["--many", json.dumps(specs)], timeout)
    if answer is None:
        return [(None, why)] * len(specs)
    return [(a.get("result"), a.get("error", "")) for a in answer]


# first-step losses of the two ways may differ by this much at most (|diff| / max(1, |loss|)): bit-identical in fp32
# on a CPU (same examples, weights and RNG state); on a GPU kernels may pick other algorithms (TF32, bf16 autocast)
LOSS_TOLERANCE = {"fp32": 1e-4, "bf16": 5e-2}


def compare(a: dict, b: dict, by_cpu_time: bool) -> dict:
    """Overheads of the toolkit over the plain loop, and the first-step loss difference. `overhead` is the
    headline: from process CPU time where by_cpu_time (one thread on a shared CPU), else from wall time."""
    keys = sorted(set(a["first_step_losses"]) & set(b["first_step_losses"]))
    diff = max((abs(a["first_step_losses"][k] - b["first_step_losses"][k]) for k in keys), default=float("nan"))
    relative = max((abs(a["first_step_losses"][k] - b["first_step_losses"][k]) / max(1.0, abs(b["first_step_losses"][k]))
                    for k in keys), default=float("nan"))
    wall = a["seconds"] / b["seconds"] - 1.0
    cpu = a["cpu_seconds"] / b["cpu_seconds"] - 1.0
    # the trainer's own cost: in CPU time the toolkit's timed window also holds the work of making its examples,
    # which the plain loop did before its clock started; in wall time (a GPU) the trainer's batch thread overlaps
    # the steps, so nothing is taken off
    examples_cpu = b.get("example_cpu_seconds_per_step", 0.0) * len(a["per_step"])
    net = (a["cpu_seconds"] - examples_cpu) / b["cpu_seconds"] - 1.0 if by_cpu_time else wall
    return {"overhead": net, "overhead_with_examples": cpu if by_cpu_time else wall,
            "overhead_basis": ("cpu time, net of making the examples" if by_cpu_time else "wall time"),
            "overhead_wall": wall, "overhead_cpu_time": cpu, "example_ms_per_step": 1e3 * b.get(
                "example_cpu_seconds_per_step" if by_cpu_time else "example_seconds_per_step", 0.0),
            "overhead_median_step": statistics.median(a["per_step"]) / statistics.median(b["per_step"]) - 1.0,
            "first_step_loss_max_abs_diff": diff, "first_step_loss_max_rel_diff": relative}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="every model's tiny configuration at 64 px, batch 2, ~--quick-seconds of steps, 1 thread")
    parser.add_argument("--quick-seconds", type=float, default=3.0,
                        help="--quick without --steps: timed plain-loop seconds that set each row's step count")
    parser.add_argument("--models", default=None, help="comma-separated (default: every model in TRAINED)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--batch-sizes", default=None, help="default 1,8 on a CPU, 16 on a GPU (halved until it "
                        "fits)")
    parser.add_argument("--precisions", default=None, help="default fp32,bf16 on a GPU, fp32 on a CPU (bf16 on a CPU "
                        "only when asked: autocast there is slow and says nothing about GPUs)")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per run; step 1 is a warm-up (default: 20 on a GPU, 5 on a CPU; --quick: "
                             "from --quick-seconds)")
    parser.add_argument("--size", type=int, default=None, help="--size for every model (default: each model's own; "
                        "--quick: 64)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: 1 on CPU, see below)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="runs of each way, in ABBA order, the faster run of each way reported; paired: runs of "
                             "the pair, the one with the median overhead reported (default 3 with --quick, else 1)")
    parser.add_argument("--paired", choices=("auto", "yes", "no"), default="auto",
                        help="both ways in one process, a plain step after each trainer step (CPU only; auto: "
                             "with --quick on a CPU, unless --grouped yes), instead of each way in its own process")
    parser.add_argument("--budget", type=float, default=240.0,
                        help="seconds one configuration (both ways) may take; larger ones are skipped, estimated "
                             "from the model's batch-1 time (default 240)")
    parser.add_argument("--deadline", type=float, default=None,
                        help="start no new row after this many seconds (rows not started are listed as not measured)")
    parser.add_argument("--profile", choices=("auto", "yes", "no"), default="auto",
                        help="re-run the toolkit way under cProfile: auto = configurations over 5%% overhead, "
                             "except with --quick (default auto)")
    parser.add_argument("--data", default=None, help="dataset folder (default: the demo set, made in a temp dir)")
    parser.add_argument("--out", default=None, help="write OUT.json and OUT.md (rewritten after every row)")
    parser.add_argument("--render", default=None, metavar="OUT",
                        help="only rewrite OUT.md from OUT.json (after editing the report code)")
    parser.add_argument("--merge", action="store_true",
                        help="keep OUT.json's rows of the models not measured now (add models one at a time)")
    parser.add_argument("--grouped", choices=("auto", "yes", "no"), default="auto",
                        help="all runs of a model in one child process (auto: on a GPU only; a CPU's peak memory "
                             "needs a process per run)")
    parser.add_argument("--fake-oom-above", type=int, default=None, help=argparse.SUPPRESS)  # tests: batch > N fails
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--many", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 1
    if args.render:
        out = Path(args.render)
        write_markdown(out.with_suffix(".md"), json.loads(out.with_suffix(".json").read_text()))
        return 0

    if args.one or args.many:  # the child: one configuration, one way (or several runs on a GPU)
        specs = json.loads(args.one or args.many)
        import torch

        threads = (specs if args.one else specs[0]).get("threads") if specs else None
        if threads:
            torch.set_num_threads(threads)
        if args.one:
            print(json.dumps(RUNS[specs["impl"]](specs)))
        else:
            print(json.dumps(run_many(specs)))
        return 0

    import torch

    from diffinpaint.models import TRAINED, trainable_class
    from machine import machine_info

    started_at = time.perf_counter()
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device == "cuda"
    grouped = args.grouped == "yes" or (args.grouped == "auto" and cuda)
    paired = args.paired == "yes" or (args.paired == "auto" and args.quick and not cuda and not grouped)
    if paired and (cuda or grouped):
        parser.error("--paired runs both ways in one CPU process: not with --device cuda or --grouped yes")
    # one thread on CPU by default: with two OpenMP threads on a shared 2-core machine, every op waits for the
    # slower thread and a busy neighbour made single steps 5-10x slower (measured); one thread is stable
    threads = args.threads or (1 if device == "cpu" else None)
    # on a CPU with one torch thread the process's CPU time counts the work done, not the time other jobs on the
    # shared machine held the cores: the headline overhead uses it there, and wall time elsewhere
    basis = "cpu_seconds" if device == "cpu" and threads == 1 else "seconds"
    if args.quick:
        batch_sizes = [2]
    else:
        batch_sizes = [int(b) for b in (args.batch_sizes or ("16" if cuda else "1,8")).split(",")]
    adaptive = args.quick and args.steps is None
    default_steps = args.steps or (8 if args.quick else 20 if cuda else 5)
    asked = args.precisions or ("fp32,bf16" if cuda else "fp32")
    precisions = [p for p in asked.split(",") if p == "fp32" or bf16_usable(device) or
                  (device == "cpu" and args.precisions is not None)]
    names = args.models.split(",") if args.models else list(TRAINED)  # read now: models may have been added
    notes = []
    if "bf16" in asked and "bf16" not in precisions:
        notes.append(f"bf16 not measured: this CUDA device has no bf16 ({device})")
    for name in ("dcgan", "transgan"):
        if name not in TRAINED:
            notes.append(f"{name} is not registered in diffinpaint.models.TRAINED at run time: not measured")
    if adaptive:
        notes.append(f"steps per row: as many as make ~{args.quick_seconds:g} s of timed plain-loop steps (8 to 200), "
                     "set by each row's first plain run")
    tmp = tempfile.TemporaryDirectory(prefix="bench_train_")
    work = Path(tmp.name)
    data = args.data
    if data is None:
        from diffinpaint.data.demo import make_demo_dataset

        # 9 real photos at 256 px, two 75×75 holes each (masks.csv): every model resizes them to its size
        data = str(make_demo_dataset(work / "data", size=256, crops_per_photo=1, holes=2, hole_size=75, seed=0))
    weights_cache: dict[str, Path | None] = {}

    def weights_file(network: str) -> Path | None:
        """A weights file for a perceptual loss's frozen network: None when the real one is where the model looks
        by default (VGG19 in torch's hub cache, the ADE20k encoder where LaMa looks), else random weights."""
        if network not in weights_cache:
            import torch.hub

            from diffinpaint.models.lama.hrf import default_hrf_path

            vgg = network == "VGG19"
            cached = Path(torch.hub.get_dir()) / "checkpoints" / "vgg19-dcbb9e9d.pth" if vgg else default_hrf_path()
            if cached.is_file():
                weights_cache[network] = None
            elif vgg:
                weights_cache[network] = write_random_vgg(work / "vgg19_random.pth")
            else:
                weights_cache[network] = write_random_ade20k(work / "ade20k_resnet50_random.pth")
        return weights_cache[network]

    results, skipped = [], []
    command = " ".join(["python", "eval/bench_train.py", *(argv if argv is not None else sys.argv[1:])])
    previous = None
    if args.out and args.merge and Path(args.out).with_suffix(".json").is_file():
        previous = json.loads(Path(args.out).with_suffix(".json").read_text())

    def report() -> dict:
        """The report so far, written to --out (after every row, so a killed run keeps what it measured)."""
        overheads = [r["overhead"] for r in results]
        rep = {"device": device, "quick": args.quick, "steps": default_steps, "repeats": args.repeats,
               "threads": threads or torch.get_num_threads(), "command": command, "machine": machine_info(),
               "results": list(results), "not_measured": list(skipped), "notes": list(notes),
               "elapsed_seconds": time.perf_counter() - started_at}
        if previous is not None:
            merge_previous(rep, previous, ("results", "not_measured"))
        overheads = [r["overhead"] for r in rep["results"]]
        rep["trainer_overhead_max"] = max(overheads) if overheads else float("nan")
        with_examples = [r.get("overhead_with_examples", r["overhead"]) for r in rep["results"]]
        rep["trainer_overhead_max_with_examples"] = max(with_examples) if with_examples else float("nan")
        if args.out:
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.with_suffix(".json").write_text(json.dumps(rep, indent=2) + "\n", encoding="utf-8")
            write_markdown(out.with_suffix(".md"), rep)
        return rep

    def out_of_time() -> bool:
        return args.deadline is not None and time.perf_counter() - started_at > args.deadline

    def spec_for(name, options, batch, precision, impl, r, steps, **extra) -> dict:
        return {"model": name, "impl": impl, "options": options, "data": data, "steps": steps,
                "out": str(work / f"{name}_b{batch}_{precision}_{impl}_{r}_{steps}"), "batch_size": batch,
                "precision": precision, "device": device, "threads": threads,
                "fake_oom_above": args.fake_oom_above, **extra}

    def finish_row(name, options, batch, precision, steps, runs: dict, load_before: float) -> dict:
        row = {"model": name, "code": code_version(), "size": options.get("size"), "batch_size": batch,
               "precision": precision, "repeats": args.repeats, "device": device, "steps": steps,
               "timed_steps": steps - 1, "options": options, "load_average_1min": [load_before, os.getloadavg()[0]]}
        row["repeat_seconds"] = {k: [x["seconds"] for x in v] for k, v in runs.items()}
        row["repeat_cpu_seconds"] = {k: [x["cpu_seconds"] for x in v] for k, v in runs.items()}
        if paired:
            # each run is a like-for-like pair: the run with the median overhead is reported (the upper one of an
            # even count), not the lowest, which would pick the luckiest difference; every run's overhead is kept
            row["repeat_overheads"] = [compare(a, b, basis == "cpu_seconds")["overhead"]
                                       for a, b in zip(runs["toolkit"], runs["plain"])]
            middle = sorted(range(len(runs["plain"])), key=row["repeat_overheads"].__getitem__)[len(runs["plain"]) // 2]
            best = {k: v[middle] for k, v in runs.items()}
        else:  # each way's least disturbed run (the fastest timed steps); all runs' times are kept
            best = {k: min(v, key=lambda x: x[basis]) for k, v in runs.items()}
        row["measured"] = "paired" if paired else "separate processes"
        row["size"] = row["size"] or trainable_class(name).defaults.get("size", 256)
        row.update(runs=best, **compare(best["toolkit"], best["plain"], basis == "cpu_seconds"))
        model_steps = trainable_class(name).defaults.get("steps", 2000)
        per_step_a = best["toolkit"][basis] / (steps - 1)
        row["default_steps"] = model_steps
        row["overhead_with_end_amortised"] = (  # the end cost is wall time (it includes file writes)
            (per_step_a + best["toolkit"]["end_seconds"] / model_steps) / (best["plain"][basis] / (steps - 1)) - 1.0)
        print(f"{name:9s} {row['size']:>3}px batch {batch} {precision}: {steps - 1} timed steps, plain "
              f"{(steps - 1) / best['plain']['seconds']:.3f} steps/s, toolkit "
              f"{(steps - 1) / best['toolkit']['seconds']:.3f} steps/s (wall), overhead {row['overhead']:+.1%} "
              f"({row['overhead_basis']}; with the examples {row['overhead_with_examples']:+.1%}, making them "
              f"{row['example_ms_per_step']:.2f} ms per step; wall {row['overhead_wall']:+.1%}, median wall step "
              f"{row['overhead_median_step']:+.1%}); first-step losses plain "
              f"{_fmt(best['plain']['first_step_losses'])} | toolkit "
              f"{_fmt(best['toolkit']['first_step_losses'])} (max |diff| "
              f"{row['first_step_loss_max_abs_diff']:.3g})", file=sys.stderr)
        if not row["first_step_loss_max_rel_diff"] <= LOSS_TOLERANCE[precision]:
            # the two ways did not train on the same examples and weights: the comparison means nothing
            notes.append(f"{name} batch {batch} {precision}: first-step losses DIFFER between the ways (max |diff| "
                         f"{row['first_step_loss_max_abs_diff']:.3g}): not the same examples or weights, so this "
                         "row's overhead is not a like-for-like comparison")
            print(f"WARNING: {notes[-1]}", file=sys.stderr)
        return row

    def maybe_profile(row: dict, name, options, batch, precision, steps) -> None:
        if args.profile == "yes" or (args.profile == "auto" and not args.quick and row["overhead"] > OVERHEAD_LIMIT):
            spec = spec_for(name, options, batch, precision, "toolkit", "profile", steps, profile=True)
            profiled, why = run_one(spec, timeout=max(120.0, 3 * args.budget))
            row["profile"] = profiled["profile"] if profiled else {"_note": why}
            if profiled:
                _print_profile(row["profile"], steps)

    # ABBA order over the repeats, so a slow spell of the shared machine hits both ways alike
    order = [("plain", "toolkit") if r % 2 == 0 else ("toolkit", "plain") for r in range(args.repeats)]
    for name in names:
        if out_of_time():
            skipped.append({"model": name, "why": f"not started: past the --deadline of {args.deadline:g} s"})
            continue
        try:
            options, model_notes = model_plan(name, args.quick, weights_file, args.size)
        except Exception as err:  # noqa: BLE001 - a model that cannot even be planned is reported, not fatal
            skipped.append({"model": name, "why": f"cannot configure: {err}"})
            continue
        notes += model_notes
        if grouped:
            # every run of this model in one child; an out-of-memory batch is halved and tried again
            todo = [(batch, precision) for batch in batch_sizes for precision in precisions]
            while todo and not out_of_time():
                specs = [spec_for(name, options, b, p, impl, r, default_steps)
                         for b, p in todo for r, pair in enumerate(order) for impl in pair]
                load = os.getloadavg()[0]
                answers = run_group(specs, timeout=max(300.0, 3 * args.budget))
                retry = []
                for i, (b, p) in enumerate(todo):
                    mine = answers[i * 2 * args.repeats:(i + 1) * 2 * args.repeats]
                    mine_specs = specs[i * 2 * args.repeats:(i + 1) * 2 * args.repeats]
                    failed = next((why for result, why in mine if result is None), "")
                    if failed:
                        if "out of memory" in failed.lower() and b > 1:
                            notes.append(f"{name} {p}: batch {b} ran out of GPU memory; tried {b // 2}")
                            retry.append((b // 2, p))
                        else:
                            skipped.append({"model": name, "batch_size": b, "precision": p, "why": failed})
                            print(f"{name} batch {b} {p}: {failed}", file=sys.stderr)
                        continue
                    runs = {"plain": [], "toolkit": []}
                    for spec, (result, _) in zip(mine_specs, mine):
                        runs[spec["impl"]].append(result)
                    row = finish_row(name, options, b, p, default_steps, runs, load)
                    maybe_profile(row, name, options, b, p, default_steps)
                    results.append(row)
                    report()
                todo = retry
            if todo:
                skipped += [{"model": name, "batch_size": b, "precision": p,
                             "why": f"not started: past the --deadline of {args.deadline:g} s"} for b, p in todo]
            continue
        batch1_seconds = None
        for batch in batch_sizes:
            for precision in precisions:
                if out_of_time():
                    skipped.append({"model": name, "batch_size": batch, "precision": precision,
                                    "why": f"not started: past the --deadline of {args.deadline:g} s"})
                    continue
                if batch1_seconds is not None and batch > 1:
                    # the batch-1 runs' wall time with their steps made `batch` times longer
                    fixed, per_step = batch1_seconds
                    estimate = (fixed + per_step * batch) * args.repeats
                    if estimate > args.budget:
                        skipped.append({"model": name, "batch_size": batch, "precision": precision,
                                        "why": f"estimated {estimate:.0f} s from batch 1 (budget {args.budget:.0f} s)"})
                        print(f"skip {name} batch {batch} {precision}: {skipped[-1]['why']}", file=sys.stderr)
                        continue
                load = os.getloadavg()[0]
                runs, failed = {"plain": [], "toolkit": []}, ""
                steps = default_steps
                wall = {"plain": 0.0, "toolkit": 0.0}
                if paired:
                    # (calibration, when the steps are adaptive) then the repeats, each pair in one process
                    todo = [("plain", "calibration")] if adaptive else []
                    todo += [("paired", r) for r in range(args.repeats)]
                else:
                    todo = [(impl, r) for r, pair in enumerate(order) for impl in pair]
                for impl, r in todo:
                    extra = {}
                    if adaptive and not runs["plain"] and impl == "plain":  # this run sets the row's steps
                        steps_max = 200
                        extra = {"seconds": args.quick_seconds, "min_steps": 8}
                    spec = spec_for(name, options, batch, precision, impl, r,
                                    steps_max if extra else steps, **extra)
                    began = time.perf_counter()
                    result, why = run_one(spec, timeout=max(120.0, 3 * args.budget))
                    if result is None:
                        failed = f"{impl} {why}"
                        break
                    if extra:
                        steps = result["steps_run"]
                    if r == "calibration":  # sets the steps only: its times are not one of the repeats
                        continue
                    if impl == "paired":  # both ways at once (only the sum of `wall` is used)
                        wall["toolkit"] += time.perf_counter() - began
                        runs["plain"].append(result["plain"])
                        runs["toolkit"].append(result["toolkit"])
                        continue
                    wall[impl] += time.perf_counter() - began
                    runs[impl].append(result)
                if failed:
                    skipped.append({"model": name, "batch_size": batch, "precision": precision, "why": failed})
                    print(f"{name} batch {batch} {precision}: {failed}", file=sys.stderr)
                    continue
                row = finish_row(name, options, batch, precision, steps, runs, load)
                if batch == 1 and precision == "fp32":
                    best = row["runs"]
                    stepping = steps * (best["toolkit"]["seconds"] + best["plain"]["seconds"]) / (steps - 1)
                    batch1_seconds = ((wall["toolkit"] + wall["plain"]) / args.repeats - stepping, stepping)
                maybe_profile(row, name, options, batch, precision, steps)
                results.append(row)
                report()

    final = report()
    worst = final["trainer_overhead_max"]
    for line in notes + [f"not measured: {s}" for s in skipped]:
        print(f"note: {line}", file=sys.stderr)
    print("GPU users: python eval/bench_train.py --device cuda --batch-sizes 16 --out eval/results/train_cuda")
    print(f"trainer_overhead_max_with_examples={final['trainer_overhead_max_with_examples']:.4f}")
    print(f"trainer_overhead_max={worst:.4f}")
    return 0


def _ms(value) -> str:
    return "—" if value is None else f"{value:.2f}"


def _runs_cell(row: dict, report: dict) -> str:
    repeats = row.get("repeats", report.get("repeats", 1))
    if row.get("measured") != "paired":
        return str(repeats)
    return f"{repeats} paired: " + " / ".join(f"{o:+.1%}" for o in row["repeat_overheads"])


def _memory_cell(row: dict) -> str:
    a, b = row["runs"]["toolkit"], row["runs"]["plain"]
    if row.get("measured") == "paired":
        return f"— (one process: {a['peak_memory_mib']:.0f})"
    return (f"{b['peak_memory_mib']:.0f} / {a['peak_memory_mib']:.0f} ({b['peak_memory_mib'] - b['baseline_memory_mib']:+.0f}"
            f" / {a['peak_memory_mib'] - a['baseline_memory_mib']:+.0f})")


def _fmt(losses: dict) -> str:
    return "{" + ", ".join(f"{k}: {v:.6g}" for k, v in losses.items()) + "}"


def _profile_rows(profile: dict, floor_ms: float = 0.5, top: int = 14) -> list[tuple[str, str, float, int]]:
    """(section, function, total ms, calls) of the profile's largest pieces (at least floor_ms in all)."""
    rows = []
    for section, key in (("train()", "direct"), ("EMACopies.update", "ema_update"),
                         ("data.host_batches", "dataloader_next")):
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
             "diffinpaint.training.trainer.train end to end (batches made one step ahead with workers 0, per-step "
             "re-seed, losses read every --log-every steps for log.jsonl, tqdm and the NaN check, EMA; sample grid + "
             "checkpoint only at the end, reported apart as `end s`). "
             "overhead = toolkit time / plain time − 1 over the timed steps, from the process's CPU time "
             "(user + system; with one torch thread it counts the work done, not the time other jobs held the "
             "shared cores) and from wall time; `median wall step` = the same from the median step; `amortised` "
             "adds the end cost (wall) to the CPU-time overhead (examples included), spread over the model's default --steps. "
             f"Headline (trainer_overhead_max): {report['results'][0]['overhead_basis'] if report['results'] else '?'}"
             ". Steps/s are wall time. "
             "Each way runs in a fresh process (on a GPU all runs of a model share one, each run's peak from a "
             "reset allocator peak; the device is synchronised only at the first timed step and at the end): peak "
             "memory is "
             f"{report['results'][0]['runs']['plain']['memory_kind'] if report['results'] else '?'}"
             " (CPU: whole process incl. Python and libraries; Δ = above the value just before the networks were "
             "built).", "",
             *([] if not any(r.get("measured") == "paired" for r in report["results"]) else [
                 "**Paired rows** (`runs` = `N paired`, the default of --quick on a CPU): both ways in ONE process, "
                 "step by step: after each of the trainer's steps the plain loop takes its own step of the same "
                 "index (own networks, batches and RNG stream; the generator's state is swapped around it, and a test "
                 "holds both ways' losses equal to what each computes alone). A slow spell of the shared machine then "
                 "falls on both ways alike; separate processes read ±5–10% apart on identical work here. plain = the "
                 "main thread's CPU time of its steps; toolkit = the timed window's process CPU time (every thread) "
                 "minus the plain steps'. `examples ms` = the thread CPU time of the TrainingImages.batch calls the "
                 "trainer made inside the window (between its steps: the images' first decoding included). The row "
                 "reported is the run with the MEDIAN overhead; every run's overhead is listed in `runs` and kept in "
                 "the JSON (`repeat_overheads`). Peak memory is not split by way there (one process).", ""]),
             "The machine is shared (2 cores, other jobs running): load average = 1-minute load before/after the "
             "row; at loads above the core count single rows can be off by tens of percent, so read the median "
             "column too.", "",
             "`examples ms` = making one step's examples (TrainingImages.batch, the trainer's own code: cached "
             "images, holes, the model's augmentation, flips), measured in the plain process (paired rows: as the "
             "trainer made them, above); `net of examples` = the headline overhead with that taken off the toolkit's "
             "CPU time (the trainer does this work inside the timed window, between steps on a CPU; the plain loop "
             "did it before its clock started): the trainer's own fixed cost. On wall time (GPU) nothing is taken "
             "off: the trainer's batch thread overlaps the steps.", "",
             "| model | code | size | batch | prec. | timed steps | runs | plain steps/s | toolkit steps/s | overhead (CPU time) "
             "| examples ms | net of examples | overhead (wall) | median wall step | amortised | end s "
             "| peak MiB plain / toolkit (Δ) | first-step loss |diff| | load |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|"]
    for r in report["results"]:
        a, b = r["runs"]["toolkit"], r["runs"]["plain"]
        n = r["timed_steps"]
        lines.append(
            f"| {r['model']} | {r.get('code', '?')} | {r['size']} | {r['batch_size']} | {r['precision']} | {n} | "
            f"{_runs_cell(r, report)} | "
            f"{n / b['seconds']:.3f} | "
            f"{n / a['seconds']:.3f} | {r['overhead_cpu_time']:+.1%} | "
            f"{_ms(r.get('example_ms_per_step'))} | {r['overhead']:+.1%} | {r['overhead_wall']:+.1%} | "
            f"{r['overhead_median_step']:+.1%} | "
            f"{r['overhead_with_end_amortised']:+.1%} | {a['end_seconds']:.2f} | "
            f"{_memory_cell(r)} | {r['first_step_loss_max_abs_diff']:.3g} | "
            f"{r['load_average_1min'][0]:.1f}/{r['load_average_1min'][1]:.1f} |")
    lines += ["", f"trainer_overhead_max = {report['trainer_overhead_max']:+.4f} (the trainer's own cost: "
              f"{report['results'][0]['overhead_basis'] if report['results'] else '?'}); with the examples' making: "
              f"{report.get('trainer_overhead_max_with_examples', float('nan')):+.4f}", "",
              "First-step losses (both ways):", ""]
    for r in report["results"]:
        lines.append(f"- {r['model']} batch {r['batch_size']} {r['precision']}: plain "
                     f"{_fmt(r['runs']['plain']['first_step_losses'])}; toolkit "
                     f"{_fmt(r['runs']['toolkit']['first_step_losses'])}")
    lines += ["", "Options per model: " + "; ".join(
        f"{r['model']} {json.dumps({k: v for k, v in r['options'].items() if k not in FROZEN_WEIGHTS})}"
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
              "", "GPU: `python eval/bench_train.py --device cuda --batch-sizes 16 --out eval/results/train_cuda` "
              "(fp32 and bf16; or the whole eval/gpu_suite.sh)."]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
