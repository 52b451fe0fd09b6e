"""Training checkpoints: OUT/checkpoints/step_N/ holds, for any model,

    config.json                 the flat training config: "model", the shared options, the model's Options
    <network>.safetensors       weights + buffers (batch-norm statistics, spectral-norm vectors), fp32
    <network>_ema.safetensors   EMA copies the trainer keeps (models that declare `ema`)
    <optimizer>.safetensors     optimiser moments and step counts
    state.json                  step, process count, optimiser param groups, LR schedulers, grad scaler, EMA counters

Never pickles. Each folder is written under a temporary name, fsync'd and renamed into place, so a kill at any
moment leaves only complete checkpoints (and temporary folders the next run deletes).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from ..util.checkpoint import (FORMAT, FORMAT_VERSION, checkpoint_dirs, load_tensors, plain_json,
                               read_checkpoint_state, save_tensors)
from ..util.errors import UserError
from ..util.files import sha256_file



def optimizer_to_safetensors(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimiser state_dict into tensors ('state.<param>.<key>') and a JSON-able rest."""
    tensors, scalars = {}, {}
    for index, state in state_dict["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"state.{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state_dict["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_from_safetensors(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    for name, value in meta["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def save_checkpoint(out: Path, step: int, config: dict, networks: dict[str, torch.nn.Module],
                    optimizers: dict[str, torch.optim.Optimizer], extra_state: dict) -> Path:
    """Write OUT/checkpoints/step_N atomically. `networks` are unwrapped modules (EMA copies included)."""
    root = Path(out) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:06d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    files = []
    for name, net in networks.items():
        save_tensors(net.state_dict(), tmp / f"{name}.safetensors")
        files.append(f"{name}.safetensors")
    optim_meta = {}
    for name, optimizer in optimizers.items():
        tensors, optim_meta[name] = optimizer_to_safetensors(optimizer.state_dict())
        save_tensors(tensors, tmp / f"{name}.safetensors")
        files.append(f"{name}.safetensors")
    plain_json(tmp / "config.json", config)
    plain_json(tmp / "state.json", {
        "format": FORMAT, "version": FORMAT_VERSION, "model": config["model"], "step": step,
        "networks": list(networks), "optimizers": optim_meta, **extra_state,
        "rng": "derived from (seed, step, rank) at every step; nothing to restore",
        "sha256": {name: sha256_file(tmp / name) for name in files},
    })
    for name in files + ["config.json", "state.json"]:
        with open(tmp / name, "rb") as f:
            os.fsync(f.fileno())
    if final.exists():  # the same step written again (e.g. --stop-at then an identical rerun): replace it whole
        trash = root / f".old-{final.name}-{os.getpid()}"
        final.rename(trash)
        tmp.rename(final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        tmp.rename(final)
    return final


def prune_checkpoints(out: Path, keep: int) -> None:
    """Delete all but the newest `keep`; each is first renamed away, so no half-deleted step_N is ever seen."""
    if keep <= 0:
        return
    for _, path in checkpoint_dirs(out)[:-keep]:
        trash = path.with_name(f".old-{path.name}-{os.getpid()}")
        path.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)


def remove_leftovers(out: Path) -> None:
    """Temporary folders left by a run that was killed while writing or deleting a checkpoint."""
    root = Path(out) / "checkpoints"
    if root.is_dir():
        for path in root.iterdir():
            if path.name.startswith((".tmp-", ".old-")):
                shutil.rmtree(path, ignore_errors=True)


def load_training_state(folder: Path, model: str, files: list[str]) -> tuple[dict, dict, dict]:
    """For --resume: (config.json, state.json, tensors by file name) of a complete checkpoint."""
    for name in files + ["config.json", "state.json"]:
        if not (folder / name).is_file():
            raise UserError(f"{folder / name} is missing; the checkpoint is incomplete: delete {folder} (an older "
                            "one is then used) or start a new --out")
    config, state = read_checkpoint_state(folder, model)
    tensors = {name: load_tensors(folder / name) for name in files}
    return config, state, tensors
