"""The shared training options (every model has them; each model may change their defaults)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainConfig:
    model: str = ""  # registry name of the model being trained
    data: str = ""  # dataset folder (DESIGN.md contract); its images are the training targets
    out: str = ""  # training folder: checkpoints/, samples/, log.jsonl, training_set.json
    size: int = 256  # training resolution (square); images are resized to it
    steps: int = 2000  # total optimiser steps (the LR schedule spans them)
    batch_size: int = 1  # per process
    lr: float = 2e-4  # learning rate of every optimiser (models set their paper's value as the default)
    decay_start: float = 1.0  # fraction of --steps after which the LR decays linearly to 0 (1.0 = constant)
    holes: str = "dataset"  # hole source: the dataset's masks, a generator (box/thin/medium/thick/own) or none
    flip: bool = True  # random horizontal flips
    sample_every: int = 500  # steps between sample grids (and one at the end)
    checkpoint_every: int = 500  # steps between checkpoints (and one at the end)
    keep_checkpoints: int = 2  # newest checkpoints kept; older ones are deleted (0 = keep all)
    seed: int = 0  # seeds init, data order, flips, holes and every random draw of a step
    workers: int = 0  # DataLoader worker processes (0 = load in the training process)
    device: str = "auto"  # auto (cuda when available), cpu or cuda
    mixed_precision: str = "no"  # no, bf16 or fp16 (autocast through accelerate; weights stay fp32)
    report_to: str = "none"  # none, tensorboard or wandb (accelerate's trackers; the packages are extras)
    stop_at: int | None = None  # end this invocation after this step (with a checkpoint); the schedule keeps --steps
    resume: bool = False  # continue from the newest checkpoint in --out
    dry_run: bool = False  # print the configuration, networks and parameter counts, then exit


# options that only steer this invocation (not the weights or the random stream): free to change on --resume
RUN_ONLY = ("data", "out", "sample_every", "checkpoint_every", "keep_checkpoints", "workers", "device",
            "report_to", "stop_at", "resume", "dry_run")
