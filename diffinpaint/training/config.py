"""The shared training options (every model has them; each model sets its paper's defaults and a quick preset).

Declared once (util/options.py): the flags of `diffinpaint train NAME`, their validation, config.json and
--resume's comparison come from these fields. `outputs=False` marks what only steers this invocation (where the
data is, how often to write, which device): free to change on --resume. Everything else shapes the weights or the
random stream and must stay as it was.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..util.options import option

PRESETS = ("paper", "quick")
REPORT_TO = ("none", "tensorboard", "wandb")


@dataclass
class TrainConfig:
    model: str = ""  # registry name of the model being trained
    data: str = ""  # dataset folder (README: dataset folder); its images are the training targets
    out: str = ""  # training folder: checkpoints/, samples/, log.jsonl, training_set.json
    # which configuration the defaults come from: the paper's (its batch, optimiser and training length) or the
    # small CPU configuration of `make demo`; options given on the command line override either
    preset: str = option("paper", "defaults: paper = the reference's configuration, quick = the small CPU "
                         "configuration of `make demo`", choices=PRESETS, outputs=False)
    size: int = option(256, "training resolution (square); images are resized to it", minimum=1)
    steps: int = option(2000, "total optimiser steps (the LR schedule spans them)", minimum=1)
    batch_size: int = option(1, "images per step, per process", minimum=1)
    lr: float = option(2e-4, "learning rate of every optimiser", above=0)
    decay_start: float = option(1.0, "fraction of --steps after which the LR decays linearly to 0 (1 = constant)",
                                minimum=0, maximum=1)
    holes: str = option("dataset", "where training holes come from: dataset = the dataset's masks; box = two 75x75 "
                        "at 256 px, thin/medium/thick = LaMa's masks, generated per sample; a model's own name = "
                        "its generator")
    flip: bool = option(True, "random horizontal flips", flag="--no-flip")
    sample_every: int = option(500, "steps between sample grids (and one at the end)", minimum=1, outputs=False)
    checkpoint_every: int = option(500, "steps between checkpoints (and one at the end)", minimum=1, outputs=False)
    keep_checkpoints: int = option(2, "newest checkpoints kept; older ones are deleted (0 = keep all)", minimum=0,
                                   outputs=False)
    log_every: int = option(10, "steps between reads of the losses from the device (log.jsonl keeps one line per "
                            "step, written in blocks; progress bar, trackers and the NaN/inf check follow it: a "
                            "divergence is noticed within this many steps, the last good checkpoint is kept)",
                            minimum=1, outputs=False)
    ema_every: int = option(1, "update the EMA copies (models that keep them) every this many steps, with the decay "
                            "raised to that power (the same time constant, fewer passes over the weights)", minimum=1)
    seed: int = option(0, "seeds init, data order, flips, holes and every random draw of a step")
    workers: int = option(0, "DataLoader worker processes (0 = load in the training process)", minimum=0,
                          outputs=False)
    device: str = option("auto", "auto (cuda when available), cpu or cuda", choices=("auto", "cpu", "cuda"),
                         outputs=False)
    # autocast through accelerate; weights stay fp32
    mixed_precision: str = option("no", "autocast dtype", choices=("no", "bf16", "fp16"))
    report_to: str = option("none", "log losses, LR and sample grids to tensorboard or wandb (extras)",
                            choices=REPORT_TO, outputs=False)
    stop_at: int | None = option(None, "end this invocation after this step, writing a checkpoint (continue with "
                                 "--resume); the schedule keeps --steps", type=int, minimum=1, outputs=False)
    resume: bool = field(default=False)  # continue from the newest checkpoint in --out
    dry_run: bool = field(default=False)  # print the configuration, networks and parameter counts, then exit
