"""Reading and writing checkpoint files: safetensors for tensors, JSON for the rest, never pickles.

Used by the trainer (writing, resuming) and by inference (reading); knows nothing about any model.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from .errors import UserError

STEP_DIR = re.compile(r"step_(\d{6,})")
FORMAT = "diffinpaint-checkpoint"
FORMAT_VERSION = 2
LEGACY_FORMATS = ("diffinpaint-pix2pix",)  # version 1, written before the one trainer (pix2pix only)


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise UserError(f"{path} is missing; the checkpoint is incomplete: delete its folder (an older one is then "
                        "used) or start a new --out")
    try:
        return load_file(str(path))
    except Exception as err:  # SafetensorError, or OSError for unreadable files
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"{path} is not a readable safetensors file ({reason}); checkpoints are read from "
                        "safetensors only: pass a folder written by `diffinpaint train`") from None


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path} is missing; the checkpoint is incomplete: delete its folder (an older one is then "
                        "used) or start a new --out")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path} is not valid JSON ({err}); the checkpoint is damaged: delete its folder") from None
    if not isinstance(value, dict):
        raise UserError(f"{path} is not a JSON object; the checkpoint is damaged: delete its folder")
    return value


def plain_json(path: Path, value: Any) -> None:
    """Written inside a checkpoint folder that is itself renamed into place whole (so no temp file here)."""
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def checkpoint_dirs(out: Path) -> list[tuple[int, Path]]:
    """Complete checkpoint folders in OUT/checkpoints, oldest first."""
    found = []
    root = Path(out) / "checkpoints"
    if root.is_dir():
        for path in root.iterdir():
            match = STEP_DIR.fullmatch(path.name)
            if match and path.is_dir():
                found.append((int(match.group(1)), path))
    return sorted(found)


def resolve_checkpoint(path: str | Path, model: str) -> Path:
    """A training --out folder (-> its newest checkpoint), a checkpoint folder, or a file inside one."""
    path = Path(path)
    train = f"`diffinpaint train {model} --data DATA --out {path}`"
    if not path.exists():
        raise UserError(f"{model} checkpoint {path} does not exist; pass the --out folder of {train}")
    if path.is_file():
        if path.suffix != ".safetensors" or not (path.parent / "config.json").is_file():
            raise UserError(f"{path} is not a {model} checkpoint (safetensors only, never pickles); pass the --out "
                            f"folder of `diffinpaint train {model}`")
        return path.parent
    if (path / "config.json").exists() or (path / "state.json").exists():
        return path
    found = checkpoint_dirs(path)
    if not found:
        raise UserError(f"{path} holds no {model} checkpoint (checkpoints/step_*/); train one with {train}")
    return found[-1][1]


def read_checkpoint_state(folder: Path, model: str) -> tuple[dict, dict]:
    """(config.json, state.json) of a checkpoint folder, refusing one of another model."""
    state = read_json(folder / "state.json")
    config = read_json(folder / "config.json")
    if state.get("format") in LEGACY_FORMATS:
        config = {**config, "model": "pix2pix"}
    elif state.get("format") != FORMAT:
        raise UserError(f"{folder / 'state.json'} is not a diffinpaint checkpoint; pass a folder written by "
                        f"`diffinpaint train {model}`")
    found = config.get("model")
    if found != model:
        raise UserError(f"{folder} is a {found} checkpoint, not {model}; pass a folder written by "
                        f"`diffinpaint train {model}` (or use --model {found})")
    return config, state
