"""The one trainer: `diffinpaint train NAME` for every trainable model in the registry.

A model supplies its networks, optimisers and one training step (models/trainable.py); this file owns, once:
accelerate (processes, mixed precision), the RNG as a function of (seed, step, rank), data order, flips, holes,
the LR schedule, EMA copies, the NaN/inf stop, log.jsonl, sample grids, trackers, checkpoints, --resume,
--dry-run and --stop-at.

One process (CPU or one GPU):
    diffinpaint train pix2pix --data DATA --out runs/p2p --steps 2000
Several GPUs (one process each; --batch-size is per process):
    accelerate launch --multi_gpu --num_processes 4 -m diffinpaint train deepfill --data DATA --out runs/df
Continue an interrupted run:
    diffinpaint train pix2pix --data DATA --out runs/p2p --resume

Reproducibility: every random choice is a function of (seed, step, rank) (training/data.py), and torch's RNG is
re-seeded from (seed, step, rank) before each step, so a resumed run draws exactly what the uninterrupted run
would have drawn, with no RNG state in the checkpoint.

The host never waits for the device inside the loop: train_step returns its losses as tensors left on the device,
read once per --log-every steps (and before every sample grid and checkpoint, so a NaN/inf never reaches a
checkpoint); each step's batch is made and copied (pinned memory, non-blocking) one step ahead; EMA copies are
updated with fused foreach kernels, every --ema-every steps. --resume refuses any change of an option that shapes the
weights or the random stream, naming it; --steps may only change when the LR schedule is constant (with a
decaying LR a new --steps would move the schedule under the run: the LR would jump back up).

Training folder (README "Training (every model)"):
    OUT/checkpoints/step_N/    training/checkpoints.py
    OUT/samples/step_N.png     rows of masked input | output | target, networks in eval mode
    OUT/log.jsonl              losses and learning rate per step (written every --log-every steps)
    OUT/training_set.json      content fingerprints of every training image (eval's leakage check)
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..util.checkpoint import checkpoint_dirs
from ..util.errors import UserError
from ..util.files import atomic_write_bytes, atomic_write_text, png_bytes, write_json
from ..util.seeds import stream_seed
from .checkpoints import (load_training_state, prune_checkpoints, remove_leftovers, optimizer_from_safetensors,
                          save_checkpoint)
from ..util import options
from .config import TrainConfig
from .data import TOOLKIT_HOLES, StepBatches, TrainingImages, device_batches, training_samples, training_set_record
from ..models.trainable import Batch, TrainableModel, flat_config
from .setup import prepare_model

# what a training folder holds before its first checkpoint (a run killed early may be started again)
OWN_FILES = {"checkpoints", "samples", "log.jsonl", "training_set.json", "trackers"}


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


# ---------------------------------------------------------------------------------------------------- CLI


def model_defaults(model_cls: type[TrainableModel], preset: str = "paper") -> dict[str, Any]:
    """The model's defaults (its paper's configuration) with `preset` applied on top (shared and own options)."""
    if preset != "paper" and preset not in model_cls.presets:
        raise UserError(f"--preset {preset}: {model_cls.name} has {', '.join(['paper', *model_cls.presets])}")
    return {**model_cls.defaults, **model_cls.presets.get(preset, {})}


def add_arguments(parser: argparse.ArgumentParser, model_cls: type[TrainableModel]) -> None:
    """The shared options with this model's paper defaults, then the model's own options: all generated from their
    declarations (training/config.py, the model's Options). Only what the user types lands in the namespace."""
    defaults = model_defaults(model_cls)
    if model_cls.paper_note:
        parser.description = f"{parser.description or ''} Defaults: {model_cls.paper_note}. --preset quick: " \
                             f"{', '.join(f'{k}={v}' for k, v in model_cls.presets.get('quick', {}).items())}."
    shared = parser.add_argument_group("training options (every model; defaults are this model's paper's)")
    shared.add_argument("--data", required=True, help="dataset folder (images/; masks.csv or masks/ for --holes "
                        "dataset)")
    shared.add_argument("--out", required=True, help="training folder for checkpoints, samples and the log")
    options.add_flags(shared, TrainConfig, defaults=defaults)
    for action in shared._group_actions:  # the model's hole generators
        if action.dest == "holes":
            action.choices = model_cls.hole_choices
    shared.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    shared.add_argument("--dry-run", action="store_true", help="print the configuration, networks and parameter "
                        "counts, then exit")
    options.add_flags(parser.add_argument_group(f"{model_cls.name} options"), model_cls.Options, defaults=defaults)


# invocation arguments that are TrainConfig fields without being declared options
_INVOCATION = ("data", "out", "resume", "dry_run")


def configs_from_options(model_cls: type[TrainableModel], values: dict[str, Any]) -> tuple[TrainConfig, Any]:
    """(shared TrainConfig, model Options) from option values (field name -> value): the declared defaults, then
    the model's paper defaults, then the preset's, then `values`. Unknown names and bad values are refused."""
    values = {k: v for k, v in values.items() if k != "model"}
    shared = options.by_name(TrainConfig)
    own = options.by_name(model_cls.Options)
    unknown = sorted(set(values) - set(shared) - set(own) - set(_INVOCATION))
    if unknown:
        raise UserError(f"{model_cls.name} has no training option {', '.join(unknown)}; see "
                        f"`diffinpaint train {model_cls.name} --help`")
    preset = values.get("preset", "paper")
    layered = {**model_defaults(model_cls, options.check_value(shared["preset"], preset)), **values}
    cfg = options.build(TrainConfig, {k: v for k, v in layered.items() if k in shared})
    cfg = dataclasses.replace(cfg, model=model_cls.name,
                              **{k: v for k, v in layered.items() if k in _INVOCATION})
    opts = options.build(model_cls.Options, {k: v for k, v in layered.items() if k in own})
    return cfg, opts


def check_config(cfg: TrainConfig, model: TrainableModel) -> None:
    """Types and ranges were checked from the declarations; the rules that involve the model are here."""
    options.validate(cfg)
    options.validate(model.opts)
    if cfg.holes not in model.hole_choices:
        raise UserError(f"--holes {cfg.holes} is not available for {model.name}; choose from "
                        f"{', '.join(model.hole_choices)}")
    if cfg.report_to != "none":
        import importlib.util

        package = "tensorboard" if cfg.report_to == "tensorboard" else "wandb"
        if importlib.util.find_spec(package) is None:
            raise UserError(f"--report-to {cfg.report_to} needs the {package} package: "
                            f"pip install 'diffinpaint[{package}]'")
    model.check()


def resume_compared(model_cls: type[TrainableModel]) -> dict[str, options.Option]:
    """Options --resume must find unchanged (name -> option): every declared option that shapes the weights or the
    random stream (outputs=True), shared and the model's own. --steps is handled apart (see _check_resume)."""
    declared = [*options.declared(TrainConfig), *options.declared(model_cls.Options)]
    return {o.name: o for o in declared if o.outputs and o.name != "steps"}


def main(args: argparse.Namespace) -> int:
    from ..models import trainable_class

    model_cls = trainable_class(args.train_verb)
    typed = {k: v for k, v in vars(args).items() if k not in ("verb", "train_verb")}
    cfg, opts = configs_from_options(model_cls, typed)
    try:
        train(model_cls, cfg, opts)
    except TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def train_from_options(name: str, options: dict[str, Any]) -> Path | None:
    """Library entry point: `train_from_options("pix2pix", {"data": ..., "out": ..., "steps": 10})`."""
    from ..models import trainable_class

    model_cls = trainable_class(name)
    cfg, opts = configs_from_options(model_cls, options)
    return train(model_cls, cfg, opts)


# ---------------------------------------------------------------------------------------------------- pieces


def lr_factor(step: int, steps: int, decay_start: float) -> float:
    """Constant, then linear decay (the pix2pix reference's 'linear' policy counted in steps instead of epochs);
    decay_start 1 = constant."""
    start = int(round(decay_start * steps))
    return 1.0 - max(0, step - start) / float(steps - start + 1)


def parameter_counts(nets: dict[str, torch.nn.Module]) -> dict[str, int]:
    return {name: sum(p.numel() for p in net.parameters()) for name, net in nets.items()}


def describe(model: TrainableModel, nets: dict[str, torch.nn.Module], n_images: int, processes: int = 1) -> str:
    cfg = model.cfg
    lines = [f"{model.name} training on {n_images} images from {cfg.data} -> {cfg.out}"]
    lines += [f"  {k}: {v}" for k, v in flat_config(cfg, model.opts).items() if k not in ("model", "data", "out")]
    if cfg.preset == "paper" and model.paper_note:
        lines.append(f"  defaults in force: the paper's ({model.paper_note})")
    else:
        lines.append(f"  defaults in force: --preset {cfg.preset} (the small CPU configuration of `make demo`)")
    for name, count in parameter_counts(nets).items():
        lines.append(f"  {name}: {type(nets[name]).__name__}, {count:,} parameters ({count / 1e6:.2f} M)")
    lines += [f"  {line}" for line in model.describe()]
    lines.append(f"  processes: {processes}, images per step: {cfg.batch_size * processes}")
    return "\n".join(lines)


def _make_accelerator(cfg: TrainConfig):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA device is visible; use --device cpu or auto")
    cpu = cfg.device == "cpu" or not torch.cuda.is_available()
    if cfg.mixed_precision == "fp16" and cpu:
        raise UserError("--mixed-precision fp16 needs a GPU; use bf16 or no on CPU")
    # broadcast_buffers=False: D runs twice per step; re-broadcasting its batch-norm buffers in between is the
    # classic in-place error of GANs under DDP. Each process keeps its own running statistics; rank 0's are saved.
    return Accelerator(cpu=cpu, mixed_precision=cfg.mixed_precision,
                       log_with=None if cfg.report_to == "none" else cfg.report_to,
                       project_dir=str(Path(cfg.out) / "trackers"),
                       kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)])


def _check_resume(saved: dict, model: TrainableModel, folder: Path, processes: int, state: dict) -> None:
    cfg, opts = model.cfg, model.opts
    now = flat_config(cfg, opts)
    for name, option in resume_compared(type(model)).items():
        value, flag = now[name], option.flag
        # a folder saved before the option existed was made with the option's `absent` behaviour
        before = name not in saved and option.absent is not options.NOT_RECORDED
        was = option.absent if before else saved.get(name, value)
        if was != value:
            if isinstance(value, bool):
                fix = f"{'drop' if (flag.startswith('--no-') != value) else 'pass'} {flag}"
            else:
                fix = f"pass {flag} {was}"
            when = " (before the option existed)" if before else ""
            raise UserError(f"{folder} was trained with {name}={was!r}{when} but this run has {value!r}; {fix} to "
                            "resume, or a new --out")
    if saved.get("steps") != cfg.steps and cfg.decay_start < 1.0:
        raise UserError(f"{folder} was trained with --steps {saved.get('steps')} and an LR that decays from "
                        f"{cfg.decay_start:g} of them; resuming with --steps {cfg.steps} would move the schedule "
                        f"(the LR would jump): pass --steps {saved.get('steps')} (pause with --stop-at), or a new "
                        "--out")
    if state.get("processes", 1) != processes:
        raise UserError(f"{folder} was trained with {state.get('processes')} processes but this run has "
                        f"{processes}; resume with the same number (the data order depends on it)")


def _rewrite_log(path: Path, keep_until: int) -> None:
    """Drop log lines after the resumed step, so the log reads as one uninterrupted run."""
    if not path.exists():
        return
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
        if isinstance(row, dict) and row.get("step", 0) <= keep_until:
            lines.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def _grid_uint8(images: torch.Tensor, masks: torch.Tensor, outputs: torch.Tensor) -> np.ndarray:
    """Rows of masked input | output | target as uint8 H×W×3."""
    masked = images * (1.0 - masks) + 0.5 * masks
    rows = [torch.cat([m, o, t], dim=2) for m, o, t in zip(masked, outputs, images)]
    grid = torch.cat(rows, dim=1)
    return (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


@torch.no_grad()
def write_sample_grid(path: Path, model: TrainableModel, batch: Batch) -> np.ndarray:
    """The model's outputs on fixed examples, every network in eval mode as at inference."""
    modes = {name: net.training for name, net in model.nets.items()}
    for net in model.nets.values():
        net.eval()
    try:
        outputs = model.sample(batch).float().cpu()
    finally:
        for name, net in model.nets.items():
            net.train(modes[name])
    grid = _grid_uint8(batch.images.cpu(), batch.masks.cpu(), outputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, png_bytes(grid))
    return grid


class EMACopies:
    """The EMA copies a model declares (`ema = {"generator": 0.999}`), saved as "<network>_ema".

    The average follows diffusers' EMAModel (decay warm-up min(decay, (1 + t) / (10 + t)) at its t-th update, the
    first update copying the weights), computed in place with fused foreach kernels (`torch._foreach_lerp_`: one
    pass over the weights, no temporaries) into the copy's own parameters, so a step pays for one pass over the
    weights and nothing else. With --ema-every k the copies are updated at every k-th step with the decay raised to
    the k-th power (the same time constant); k = 1 is diffusers' average exactly up to float rounding."""

    def __init__(self, model: TrainableModel, accelerator, saved_state: dict | None, saved_tensors: dict | None,
                 every: int = 1):
        self.items = {}
        self.every = every
        for name, decay in model.ema.items():
            live = accelerator.unwrap_model(model.nets[name])
            copy_ = copy.deepcopy(live).eval().requires_grad_(False)
            if saved_tensors:
                copy_.load_state_dict(saved_tensors[f"{name}_ema.safetensors"])
            # optimization_step counts steps (diffusers counts updates; the same with --ema-every 1)
            done = int(saved_state["ema"][name]["optimization_step"]) if saved_state else 0
            self.items[name] = {"live": live, "copy": copy_, "decay": float(decay), "optimization_step": done,
                                "live_params": list(live.parameters()), "shadow": list(copy_.parameters())}

    def decay_at(self, decay: float, optimization_step: int) -> float:
        """diffusers' EMAModel.get_decay (no update_after_step, no inv_gamma warm-up), per step."""
        t = optimization_step - 1
        return 0.0 if t <= 0 else min(decay, (1 + t) / (10 + t))

    def update(self, step: int) -> None:
        """After optimiser step `step` (1-based): at every k-th step, average the live weights in."""
        if not self.items or step % self.every:
            return
        with torch.no_grad():
            self._average(step)

    def _average(self, step: int) -> None:
        for item in self.items.values():
            item["optimization_step"] = step
            keep = self.decay_at(item["decay"], step) ** self.every
            trained = [(s, p) for s, p in zip(item["shadow"], item["live_params"]) if p.requires_grad]
            frozen = [(s, p) for s, p in zip(item["shadow"], item["live_params"]) if not p.requires_grad]
            if trained:
                torch._foreach_lerp_([s for s, _ in trained], [p.detach() for _, p in trained], 1.0 - keep)
            if frozen:  # parameters that do not train are copied, as diffusers does
                torch._foreach_copy_([s for s, _ in frozen], [p.detach() for _, p in frozen])

    def networks(self) -> dict[str, torch.nn.Module]:
        """The averaged modules with their buffers (batch-norm statistics) brought up from the live network."""
        with torch.no_grad():
            for item in self.items.values():
                for mine, theirs in zip(item["copy"].buffers(), item["live"].buffers()):
                    mine.copy_(theirs)
        return {f"{name}_ema": item["copy"] for name, item in self.items.items()}

    def state(self) -> dict:
        return {name: {"decay": item["decay"], "optimization_step": int(item["optimization_step"])}
                for name, item in self.items.items()}


class PendingLosses:
    """Each step's losses, left where train_step made them (0-dim tensors on the device) until read: reading
    waits for the device, so it happens once per block of steps, with one transfer per device and dtype."""

    def __init__(self):
        self.rows: list[tuple[int, float, dict[str, Any]]] = []

    def add(self, step: int, lr: float, losses: dict[str, Any]) -> None:
        # detached here too, so a model returning a loss with its graph does not keep the graph alive until read
        self.rows.append((step, lr, {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in losses.items()}))

    def read(self) -> list[tuple[int, float, dict[str, float]]]:
        """(step, lr, {name: Python number}) for every pending step, in order; the block is emptied. Values are
        exactly what `.item()` would have given (grouped by device and dtype, nothing is converted)."""
        rows, self.rows = self.rows, []
        values = [dict(losses) for _, _, losses in rows]
        groups: dict[tuple, list[tuple[int, str, torch.Tensor]]] = {}
        for i, (_, _, losses) in enumerate(rows):
            for key, value in losses.items():
                if isinstance(value, torch.Tensor):
                    groups.setdefault((value.device, value.dtype), []).append((i, key, value))
        for items in groups.values():
            numbers = torch.stack([v.reshape(()) for _, _, v in items]).tolist()
            for (i, key, _), number in zip(items, numbers):
                values[i][key] = number
        return [(step, lr, v) for (step, lr, _), v in zip(rows, values)]


class LeanAccelerator:
    """The accelerator a model's train_step talks to: accelerate's own, except that `backward` is a plain
    `loss.backward()` where accelerate's would only divide by 1 first (no gradient scaler, no DeepSpeed or
    Megatron, no gradient accumulation: the gradients are bit-identical). Everything else is accelerate's."""

    def __init__(self, accelerator):
        from accelerate.utils import DistributedType

        self._accelerator = accelerator
        self._plain = (accelerator.scaler is None and accelerator.gradient_accumulation_steps == 1
                       and accelerator.distributed_type not in (DistributedType.DEEPSPEED,
                                                                DistributedType.MEGATRON_LM))

    def backward(self, loss, **kwargs) -> None:
        if self._plain and not kwargs:
            loss.backward()
        else:
            self._accelerator.backward(loss, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._accelerator, name)


def _reseeder(device: torch.device):
    """reseed(s) = torch.manual_seed(s) for the generators a step can draw from (the CPU's, and CUDA's when training
    on a GPU) without torch.manual_seed's per-call checks of every other backend (~0.1 ms per call)."""
    generators = [torch.default_generator]
    if device.type == "cuda":
        torch.cuda.init()
        generators += list(torch.cuda.default_generators)

    def reseed(seed: int) -> None:
        for generator in generators:
            generator.manual_seed(seed)

    return reseed


def training_images(model: TrainableModel, samples: list) -> TrainingImages:
    """The examples a model trains on (the trainer's, and eval/bench_train.py's plain loop's): its holes (the model's
    own generator for --holes NAME) and its image augmentation, from (seed, position)."""
    cfg = model.cfg
    own_holes = None if cfg.holes in (*TOOLKIT_HOLES, "dataset", "none") else model.make_holes
    return TrainingImages(samples, cfg.size, cfg.holes, cfg.flip, cfg.seed, own_holes,
                          augment=model.augmentation())


def parameter_checksums(nets: dict[str, torch.nn.Module]) -> torch.Tensor:
    """Per network, the float64 sum and sum of squares of its trained parameters (not buffers: batch-norm running
    statistics are per process by design). Replicas that took the same averaged gradients hold bit-identical
    weights, so these agree exactly across processes."""
    rows = []
    for net in nets.values():
        values = torch.cat([p.detach().reshape(-1).double() for p in net.parameters()])
        rows.append(torch.stack([values.sum(), values.square().sum()]))
    return torch.stack(rows)


def diverged_networks(names: list[str], gathered: torch.Tensor) -> list[str]:
    """The networks whose checksums differ between processes (gathered: processes × networks × 2)."""
    return [name for i, name in enumerate(names) if not bool((gathered[:, i] == gathered[0, i]).all())]


def check_replicas(accelerator, nets: dict[str, torch.nn.Module], step: int) -> None:
    """Every process must hold the same weights before a checkpoint is written from rank 0's copy. A gradient that
    DDP did not average (a loss taken through an unwrapped network, an unused parameter) leaves the replicas apart
    silently; this makes it a loud error. A bug, not bad input: it raises with a traceback."""
    mine = parameter_checksums(nets).to(accelerator.device)
    gathered = accelerator.gather(mine[None]).cpu()  # processes × networks × 2
    diverged = diverged_networks(list(nets), gathered)
    if diverged:
        raise RuntimeError(f"after step {step} the processes hold different weights for {', '.join(diverged)}: a "
                           "gradient was not averaged across processes (checksums per process: "
                           f"{gathered.tolist()})")


def _log_trackers(accelerator, step: int, values: dict, grid: np.ndarray | None) -> None:
    if values:
        accelerator.log(values, step=step)
    if grid is None:
        return
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_image("samples", grid, step, dataformats="HWC")
        elif tracker.name == "wandb":
            import wandb

            tracker.log({"samples": [wandb.Image(grid)]}, step=step)


# ---------------------------------------------------------------------------------------------------- train


def train(model_cls: type[TrainableModel], cfg: TrainConfig, opts) -> Path | None:
    """Train (or continue) and return the last checkpoint folder (None for --dry-run). Raises UserError on bad
    input, TrainingDiverged when a loss stops being finite."""
    from tqdm.auto import tqdm

    # 1. Check inputs before any work
    model = model_cls()
    model.cfg, model.opts = cfg, opts
    check_config(cfg, model)
    out = Path(cfg.out)
    samples = training_samples(cfg.data, cfg.holes)
    if cfg.dry_run:
        torch.manual_seed(cfg.seed)
        with torch.device("meta"):  # counts without allocating (the largest networks have tens of millions)
            nets = model.build_networks()
        _check_dataset_size(len(samples), cfg, processes=1)
        print(describe(model, nets, len(samples)))
        return None
    accelerator = _make_accelerator(cfg)
    rank, processes = accelerator.process_index, accelerator.num_processes
    _check_dataset_size(len(samples), cfg, processes)
    existing = checkpoint_dirs(out)
    if cfg.resume and not existing:
        raise UserError(f"--resume but {out} holds no checkpoint (checkpoints/step_*/); drop --resume to start fresh")
    if not cfg.resume and existing:
        raise UserError(f"{out} already holds checkpoints (newest: step {existing[-1][0]}); pass --resume to "
                        "continue, or choose another --out")
    if not cfg.resume and out.is_dir() and any(p.name not in OWN_FILES for p in out.iterdir()):
        raise UserError(f"--out {out} is a non-empty folder that is not a training folder; choose a new --out")
    resume_from = existing[-1][1] if cfg.resume else None
    saved_state = saved_tensors = None

    # 2. Networks, optimisers (the same seeded init on every process), schedulers, EMA copies
    prepare_model(model, accelerator)
    if accelerator.scaler is None:
        # accelerate's optimiser wrapper only matters with a gradient scaler (fp16); without one its step and
        # zero_grad run the plain optimiser's after per-call checks (a package lookup per step): use it directly
        model.optimizers = {name: getattr(opt, "optimizer", opt) for name, opt in model.optimizers.items()}
    model.accelerator = LeanAccelerator(accelerator)
    if resume_from:
        files = [f"{n}.safetensors" for n in model.nets] + [f"{n}.safetensors" for n in model.optimizers] + \
                [f"{n}_ema.safetensors" for n in model.ema]
        saved_config, saved_state, saved_tensors = load_training_state(resume_from, model.name, files)
        _check_resume(saved_config, model, resume_from, processes, saved_state)
        for name, net in model.nets.items():
            accelerator.unwrap_model(net).load_state_dict(saved_tensors[f"{name}.safetensors"])
        for name, optimizer in model.optimizers.items():
            optimizer.load_state_dict(optimizer_from_safetensors(saved_tensors[f"{name}.safetensors"],
                                                                 saved_state["optimizers"][name]))
    start = saved_state["step"] if saved_state else 0
    stop = min(cfg.steps, cfg.stop_at) if cfg.stop_at else cfg.steps
    # plain LambdaLR, deliberately not prepared: accelerate would step it once per process
    schedule = lambda step: lr_factor(step, cfg.steps, cfg.decay_start)  # noqa: E731
    schedulers = {name: torch.optim.lr_scheduler.LambdaLR(getattr(opt, "optimizer", opt), schedule)
                  for name, opt in model.optimizers.items()}
    if saved_state:
        for name, scheduler in schedulers.items():
            scheduler.load_state_dict(saved_state["schedulers"][name])
            for group, lr in zip(scheduler.optimizer.param_groups, scheduler.get_last_lr()):
                group["lr"] = lr
        if accelerator.scaler is not None and saved_state.get("scaler"):
            accelerator.scaler.load_state_dict(saved_state["scaler"])
    ema = EMACopies(model, accelerator, saved_state, saved_tensors, every=cfg.ema_every)
    if accelerator.is_main_process:
        print(describe(model, {n: accelerator.unwrap_model(v) for n, v in model.nets.items()}, len(samples),
                       processes))
        if resume_from:
            print(f"  resuming from {resume_from} (step {start})")
    if start >= stop:
        if accelerator.is_main_process:
            print(f"nothing to do: the checkpoint is at step {start}, this run stops at step {stop}")
        return resume_from

    # 3. Data: each step's batch is a function of (seed, step, rank), made and copied to the device one step ahead
    images = training_images(model, samples)
    batches = device_batches(images, StepBatches(start, stop, cfg.batch_size, rank, processes), cfg.workers,
                             accelerator.device)
    n_grid = min(4, len(samples))
    grid = [images.example(i, np.random.default_rng([cfg.seed, 4, i]), False) for i in range(n_grid)]
    grid_batch = Batch(torch.stack([g[0] for g in grid]).to(accelerator.device),
                       torch.stack([g[1] for g in grid]).to(accelerator.device))
    log_path = out / "log.jsonl"
    config = flat_config(cfg, opts)
    main_process = accelerator.is_main_process
    if main_process:
        out.mkdir(parents=True, exist_ok=True)
        remove_leftovers(out)
        _rewrite_log(log_path, start)
        if not (out / "training_set.json").exists() or not resume_from:
            write_json(out / "training_set.json", training_set_record(samples))
        if cfg.report_to != "none":
            accelerator.init_trackers(out.name or "diffinpaint", config={k: str(v) if v is None else v
                                                                         for k, v in config.items()})

    # 4. Train. Nothing in the loop waits for the device except `read_losses`, once per --log-every steps and
    # before every sample grid and checkpoint (all processes at the same steps)
    last_good = resume_from
    progress = tqdm(total=stop, initial=start, desc=model.name, disable=not accelerator.is_local_main_process,
                    dynamic_ncols=True, mininterval=0.5)
    pending = PendingLosses()
    reseed = _reseeder(accelerator.device)
    first_optimizer = next(iter(model.optimizers.values()))
    # with a constant LR (--decay-start 1) stepping the schedulers changes no LR: they are brought up to date in
    # one go before a checkpoint, which leaves them exactly as per-step stepping would
    constant_lr, schedulers_behind = cfg.decay_start >= 1.0, 0

    def step_schedulers(times: int) -> None:
        for _ in range(times):
            for scheduler in schedulers.values():
                scheduler.step()

    def read_losses() -> None:
        """The pending steps' losses to the host: the NaN/inf check, log.jsonl, trackers, the progress bar."""
        rows = pending.read()
        bad = next((i for i, (_, _, values) in enumerate(rows)
                    if not all(math.isfinite(v) for v in values.values())), None)
        first_bad = rows[bad][0] if bad is not None else 0
        if processes > 1:  # the earliest bad step on any process
            found = accelerator.gather(torch.tensor([first_bad or stop + 1], device=accelerator.device))
            first_bad = int(found.min()) if int(found.min()) <= stop else 0
        good = [row for row in rows if not first_bad or row[0] < first_bad]
        if main_process and good:
            with open(log_path, "a", encoding="utf-8") as f:
                f.write("".join(json.dumps({"step": s, "lr": lr, **values}) + "\n" for s, lr, values in good))
            if cfg.report_to != "none":
                for s, lr, values in good:
                    _log_trackers(accelerator, s, {"lr": lr, **values}, None)
        if good:
            progress.set_postfix({k: f"{v:.3f}" for k, v in good[-1][2].items()}, refresh=False)
        if first_bad:
            progress.close()
            mine = next((values for s, _, values in rows if s == first_bad), None)
            shown = ", ".join(f"{k}={v:.4g}" for k, v in mine.items()) if mine else "on another process"
            kept = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written yet"
            raise TrainingDiverged(f"a loss is not finite at step {first_bad} ({shown}); training stopped and {kept} "
                                   "(resume with --resume, perhaps with a lower --lr or --mixed-precision no)")

    step = start
    try:
        for batch_images, batch_masks in batches:
            reseed(stream_seed(cfg.seed, 2, step, rank))  # every draw of the step from (seed, step, rank)
            model.step = step
            losses = model.train_step(Batch(batch_images, batch_masks))
            lr = first_optimizer.param_groups[0]["lr"]
            step += 1
            ema.update(step)
            if constant_lr:
                schedulers_behind += 1
            else:
                step_schedulers(1)
            pending.add(step, lr, losses)
            sample_now = step % cfg.sample_every == 0 or step == stop
            checkpoint_now = step % cfg.checkpoint_every == 0 or step == stop
            if step % cfg.log_every == 0 or sample_now or checkpoint_now:
                read_losses()
            progress.update(1)
            if main_process and sample_now:
                with torch.random.fork_rng(devices=[]):  # unconditional samples must not move the training stream
                    torch.manual_seed(stream_seed(cfg.seed, 5, step))
                    sample_grid = write_sample_grid(out / "samples" / f"step_{step:06d}.png", model, grid_batch)
                if cfg.report_to != "none":
                    _log_trackers(accelerator, step, {}, sample_grid)
            if checkpoint_now:
                step_schedulers(schedulers_behind)
                schedulers_behind = 0
                if processes > 1:
                    check_replicas(accelerator, model.nets, step)
                accelerator.wait_for_everyone()
                if main_process:
                    networks = {n: accelerator.unwrap_model(v) for n, v in model.nets.items()} | ema.networks()
                    extra = {"processes": processes,
                             "schedulers": {k: s.state_dict() for k, s in schedulers.items()},
                             "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
                             "ema": ema.state()}
                    last_good = save_checkpoint(out, step, config, networks, model.optimizers, extra)
                    prune_checkpoints(out, cfg.keep_checkpoints)
                else:
                    last_good = out / "checkpoints" / f"step_{step:06d}"
                accelerator.wait_for_everyone()
    finally:
        # stops the thread making batches ahead where there is one, gives OpenCV's threads back (also after an error)
        batches.close()
    progress.close()
    if cfg.report_to != "none":
        accelerator.end_training()
    return last_good


def _check_dataset_size(n_images: int, cfg: TrainConfig, processes: int) -> None:
    if n_images < cfg.batch_size * processes:
        raise UserError(f"{cfg.data} has {n_images} usable images, fewer than one batch "
                        f"({cfg.batch_size} x {processes} processes); add images or lower --batch-size")
