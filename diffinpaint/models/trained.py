"""One inference class for every model the toolkit trains (pix2pix, deepfill, dmfn, dcgan, transgan, repaint).

    diffinpaint run --model deepfill --checkpoint runs/df --data DATA --out RUN
    diffinpaint eval --models deepfill,pix2pix,telea --deepfill-checkpoint runs/df --pix2pix-checkpoint runs/p2p ...

The checkpoint is a training --out folder (its newest checkpoint is used) or one OUT/checkpoints/step_N folder.
Only safetensors and JSON are read. The policy is written once here for every model (as IOPaint's base model does):
  1. resize image and mask to the trained size (bicubic with antialiasing; a resized pixel touching a hole is a
     hole, so holes never shrink);
  2. the model's Predictor fills the holes at that size (models/<name>/infer.py);
  3. resize the prediction back to the input size. The runner composites, so known pixels stay bit-identical.
"""
from __future__ import annotations

import dataclasses
import importlib
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import torch

from ..util.checkpoint import load_tensors, read_checkpoint_state, resolve_checkpoint
from ..util.errors import UserError
from ..util.files import sha256_file
from ..util.imageops import resize_images, resize_masks
from ..util.options import option, validate
from .base import InpaintModel


class TrainedModel(InpaintModel):
    """Subclassed once per trained model by `trained_model_class` (which sets name, package and Settings)."""

    package: Any = None

    def __init__(self, settings, device: str = "cpu"):
        name = self.name
        validate(settings)  # types and ranges from the declaration (settings built in Python skip the CLI's check)
        self.settings = settings
        checkpoint = settings.checkpoint
        if not checkpoint:
            raise UserError(f"{name} needs a trained checkpoint: pass --{name}-checkpoint DIR (run: --checkpoint DIR), "
                            f"the --out folder of `diffinpaint train {name}`")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.folder = resolve_checkpoint(checkpoint, name)
        self.config, state = read_checkpoint_state(self.folder, name)
        self.step = int(state.get("step", -1))
        self.size = int(self.config["size"])
        predictor_cls = self.package.Predictor
        self.needs_grad = predictor_cls.needs_grad
        self.deterministic = predictor_cls.deterministic
        nets, self.weights_sha256 = {}, {}
        for net_name in predictor_cls.networks:
            path = self.folder / f"{net_name}.safetensors"
            net = self.package.build_network(self.config, net_name.removesuffix("_ema"))
            try:
                net.load_state_dict(load_tensors(path), strict=True)
            except RuntimeError:
                raise UserError(f"{path} does not fit the configuration in its config.json; the folder mixes files "
                                f"of different runs: retrain or restore it") from None
            nets[net_name] = net.to(self.device).eval().requires_grad_(False)
            self.weights_sha256[net_name] = sha256_file(path)
        own = predictor_cls.Settings
        predictor_settings = None if own is None else own(**{f.name: getattr(settings, f.name)
                                                             for f in dataclasses.fields(own)})
        self.predictor = predictor_cls(self.config, nets, predictor_settings, self.device)
        self.predictor.check()

    @property
    def training_set_path(self) -> Path | None:
        """OUT/training_set.json of the training folder this checkpoint came from (None for older checkpoints)."""
        path = self.folder.parent.parent / "training_set.json"
        return path if path.is_file() else None

    def inpaint(self, images: torch.Tensor, masks: torch.Tensor, *, seeds: Sequence[int],
                labels: Sequence[str | None]) -> torch.Tensor:
        # 1. Check inputs
        if images.ndim != 4 or images.shape[1] != 3 or masks.shape != (images.shape[0], 1, *images.shape[2:]):
            raise ValueError(f"{self.name} expects images N×3×H×W and masks N×1×H×W, got {tuple(images.shape)} and "
                             f"{tuple(masks.shape)}")
        height, width = images.shape[-2:]
        trained = (self.size, self.size)
        # 2. Resize to the trained size
        x = resize_images(images.to(self.device, torch.float32), trained)
        m = resize_masks(masks.to(self.device, torch.float32), trained)
        # 3. The model's fill at that size
        prediction = self.predictor.predict(x, m, list(seeds)).float()
        # 4. Back to the input size
        return resize_images(prediction.clamp(0.0, 1.0), (height, width)).clamp(0.0, 1.0).to(images.device)

    def resolved_outputs(self) -> dict[str, Any]:
        """The checkpoint's identity (folder, step, weights' hashes, training set) and what its predictor reads
        from it; the declared inference options are added by the base class."""
        training_set = self.training_set_path
        return {"checkpoint": str(self.folder.resolve()), "step": self.step, "size": self.size,
                **{f"{k}_sha256": v for k, v in self.weights_sha256.items()},
                "training_set_sha256": sha256_file(training_set) if training_set else "none",
                **self.predictor.resolved_outputs()}


@lru_cache(maxsize=None)
def trained_model_class(name: str) -> type[TrainedModel]:
    """The inference class of trained model `name`: TrainedModel with its package and a Settings dataclass made of
    `checkpoint` (flag --NAME-checkpoint) and the Predictor's own declared settings."""
    package = importlib.import_module(f"diffinpaint.models.{name}")
    own = package.Predictor.Settings
    checkpoint = option(None, f"{name}: the --out folder of `diffinpaint train {name}` (newest checkpoint used) or "
                        "one of its checkpoints/step_N folders", flag=f"--{name}-checkpoint", type=str,
                        metavar="CKPT", outputs=False)  # its weights' hashes are recorded instead of the path
    fields = [("checkpoint", str | None, checkpoint)]
    if own is not None:
        fields += [(f.name, f.type, dataclasses.field(default=f.default, metadata=f.metadata))
                   for f in dataclasses.fields(own)]
    settings = dataclasses.make_dataclass(f"{name.title()}Settings", fields)
    return type(f"Trained{name.title()}", (TrainedModel,), {"name": name, "package": package, "Settings": settings})
