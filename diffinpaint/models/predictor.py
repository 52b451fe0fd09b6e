"""The inference side of a trained model: what models/trained.py (the one inference class for every model the
toolkit trains) asks of a model package. It never imports training code.

models/trained.py does, for every trained model alike:
  1. read CKPT/config.json (the flat training config: shared options + the model's Options + "model": name),
     refuse a checkpoint of another model with one line;
  2. build each network named in `Predictor.networks` with the package's `build_network(config, name)` and load
     its safetensors ("<name>_ema" files load into `build_network(config, "<name>")`), eval mode, on the device;
  3. per batch: resize images (bicubic, antialiased) and masks (a resized pixel touching a hole is a hole) to the
     trained size, call `predict`, resize the prediction back. The runner composites, so known pixels are
     untouched whatever `predict` returns there.
Two hooks, off by default, for models that need them (LaMa):
  - `pretrained` names a Settings field holding a pretrained weights file the model can run instead of a training
    checkpoint; `load_pretrained` then builds the config and networks from that file (step 1–2 above);
  - `own_resolution`: step 3 passes each batch at its own size (fully convolutional networks that handle any size
    themselves, as LaMa's evaluation runs it), with no resizing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import torch
from torch import nn


class Predictor:
    # checkpoint files inference needs, e.g. ("generator",) or ("generator_ema",)
    networks: ClassVar[tuple[str, ...]] = ("generator",)
    # True for models that optimise at test time (DCGAN latent search): the runner must not use inference_mode
    needs_grad: ClassVar[bool] = False
    # False for models whose fill depends on the per-image seed (latent search, diffusion sampling); eval --seeds
    # runs deterministic models once
    deterministic: ClassVar[bool] = True
    # the model's inference options: a dataclass of util.options `option(...)` fields, declared once (flags,
    # validation, [outputs] and study-file keys come from it); None when it has none
    Settings: ClassVar[type | None] = None
    # inference settings that make a tiny checkpoint answer in seconds (the registry's contract test)
    tiny: ClassVar[dict[str, Any]] = {}
    # the Settings field naming a pretrained weights file to run instead of a training checkpoint (e.g.
    # "lama_weights"); None: checkpoints only. The file's sha256 is recorded in [outputs] as a checkpoint's is.
    pretrained: ClassVar[str | None] = None
    # True: `predict` gets every batch at its own size and handles sizes itself (no resize to the trained size)
    own_resolution: ClassVar[bool] = False

    def __init__(self, config: Mapping[str, Any], nets: dict[str, nn.Module], settings: Any, device: torch.device):
        self.config, self.nets, self.settings, self.device = config, nets, settings, device

    @classmethod
    def load_pretrained(cls, path: Path) -> tuple[dict[str, Any], dict[str, nn.Module]]:
        """For models with `pretrained`: (config, networks) from a pretrained weights file, the config holding what
        a checkpoint's config.json would (at least `size`), the networks named in `networks`, loaded (models/
        trained.py puts them in eval mode on the device). Raise UserError for a file that cannot serve."""
        raise NotImplementedError

    def check(self) -> None:
        """Raise UserError for inference settings that cannot work with this checkpoint (types and ranges are
        checked from the declaration before)."""

    def predict(self, images: torch.Tensor, masks: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        """images N×3×S×S in [0, 1] at the trained size S (at the batch's own size with `own_resolution`), masks
        N×1×S×S {0, 1} (1 = hole), one seed per image. Returns N×3×S×S in [0, 1]. Each image's result must not
        depend on the others in its batch: draw noise per image from its seed (torch.Generator().manual_seed(seed)),
        use running statistics (eval mode)."""
        raise NotImplementedError

    def resolved_outputs(self) -> dict[str, Any]:
        """What changes the outputs beyond the declared settings (which models/trained.py records itself): values
        read from the checkpoint's config, the network used."""
        return {}
