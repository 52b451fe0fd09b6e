"""The one surface every inpainting model offers.

A model receives a batch of same-sized images and masks and returns its prediction at the input's resolution.
It does NOT composite: the runner does `out = mask * pred + (1 - mask) * image`, so unmasked pixels are
bit-identical to the input for every model, and a model cannot get that wrong.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from ..util import options

if TYPE_CHECKING:  # torch is imported by the models themselves: the registry and --help stay light
    import torch


class InpaintModel:
    """Base class. Subclasses set `name` and implement `inpaint`.

    Conventions (README "Design"):
      images: float32 N×3×H×W in [0, 1]
      masks:  float32 N×1×H×W in {0, 1}, 1 = hole to fill
      seeds:  one int per image, derived by the runner from (global seed, image id), so a model that draws
              noise must draw it per image from these seeds (never from batch position or process rank).
      labels: one str per image (the dataset's first subfolder) or None when the dataset is unlabelled.
    """

    name: str = "base"
    # the model's inference options, declared once (util/options.py); instances keep theirs in self.settings
    Settings: type
    settings: Any = None
    # True for models that optimise at test time (DCGAN's latent search): the runner then does not wrap
    # `inpaint` in torch.inference_mode(), which would forbid autograd
    needs_grad: bool = False
    # True for the floors (grey, ring_mean): not methods but what "learnt nothing" scores; the report marks them
    floor: bool = False
    # True for models whose output does not depend on the seed (classical, feed-forward GANs): eval --seeds runs
    # them once. Trained models set it per instance from their predictor.
    deterministic: bool = False

    def inpaint(
        self,
        images: torch.Tensor,
        masks: torch.Tensor,
        *,
        seeds: Sequence[int],
        labels: Sequence[str | None],
    ) -> torch.Tensor:
        raise NotImplementedError

    def output_settings(self) -> dict[str, Any]:
        """Every setting that changes this model's outputs (written to config.toml [outputs], compared on resume):
        the declared options marked as changing outputs, then what the model resolved at load time."""
        declared = options.output_values(self.settings) if self.settings is not None else {}
        return {**declared, **self.resolved_outputs()}

    def resolved_outputs(self) -> dict[str, Any]:
        """Values the model resolved that change outputs beyond its options (a checkpoint's hash, the dtype chosen
        for the device, library versions). Overrides a declared value of the same name."""
        return {}

    def manifest_fields(self, index: int, labels: Sequence[str | None]) -> dict[str, Any]:
        """Extra per-image fields for manifest.jsonl (SD adds prompt and negative_prompt)."""
        return {}

    def check_labels(self, labels: Sequence[str | None]) -> None:
        """Raise ValueError before any work when the dataset's labels cannot serve this model."""
