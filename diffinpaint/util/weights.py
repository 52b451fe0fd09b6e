"""Finding a pretrained weights file the way torch does: the path given, else torch's hub cache, else (when not
offline) torch's own download into that cache. Files are then read with `torch.load(weights_only=True)` by the caller,
so no pickled code ever runs."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import torch

from .errors import UserError

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "DIFFINPAINT_OFFLINE")


def offline() -> bool:
    truthy = {"1", "true", "yes", "on"}
    return bool({os.environ.get(v, "").strip().lower() for v in OFFLINE_VARIABLES} & truthy)


def find_weights(given: str | Path | None, *, flag: str, names: Sequence[str], url: Callable[[], str], what: str,
                 unavailable: type[Exception]) -> Path:
    """`given` (UserError when it does not exist), else the first of `names` in the hub cache, else a download of
    `url()` (raises `unavailable`, not UserError: the metric is then reported missing and everything else runs)."""
    if given is not None:
        path = Path(given)
        if not path.is_file():
            raise UserError(f"{flag} {path}: no such file; pass the path of {names[0]} (or leave it out to report "
                            f"{what} as missing)")
        return path
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    for name in names:
        if (hub / name).is_file():
            return hub / name
    if offline():
        raise unavailable(f"no {what} weights in the torch hub cache and offline mode is on")
    try:  # the usual download into the torch hub cache (weights_only: plain tensors)
        torch.hub.load_state_dict_from_url(url(), progress=False, weights_only=True)
    except Exception as err:
        raise unavailable(f"the {what} weights could not be downloaded ({type(err).__name__})") from None
    return hub / Path(url()).name


def check_state_dict(state: dict, expected: dict, mismatch: Callable[[str, str, tuple], str]) -> None:
    """Every expected tensor present with its shape, else UserError(mismatch(key, what was found, wanted shape))."""
    for key, want in expected.items():
        got = state.get(key)
        if got is None or tuple(got.shape) != tuple(want.shape):
            found = "missing" if got is None else f"shape {tuple(got.shape)}"
            raise UserError(mismatch(key, found, tuple(want.shape)))


def required_weights(given: str | None, default: Path, *, flag: str, what: str, url: str, fallback: str) -> Path:
    """A frozen network's weights a training run cannot do without (DMFN's VGG19, LaMa's ADE20k ResNet-50): `given`,
    else `default` (torch's cache folder the reference uses); one-line UserError naming the download and `fallback`
    (the flag that trains without it) when missing."""
    path = Path(given).expanduser() if given else default
    if not path.is_file():
        where = f"{flag} {given} does not exist" if given else f"no {what} weights at {path}"
        raise UserError(f"{where}: download {url} into {default.parent} or pass {flag} FILE, or {fallback}")
    return path
