"""One inference class for every model the toolkit trains (pix2pix, deepfill, dmfn, dcgan, transgan, repaint, lama).

    diffinpaint run --model deepfill --checkpoint runs/df --data DATA --out RUN
    diffinpaint eval --models deepfill,pix2pix,telea --deepfill-checkpoint runs/df --pix2pix-checkpoint runs/p2p ...

The checkpoint is a training --out folder (its newest checkpoint is used) or one OUT/checkpoints/step_N folder.
Only safetensors and JSON are read. The policy is written once here for every model (as IOPaint's base model does):
  1. resize image and mask to the trained size (bicubic with antialiasing; a resized pixel touching a hole is a
     hole, so holes never shrink);
  2. the model's Predictor fills the holes at that size (models/<name>/infer.py);
  3. resize the prediction back to the input size. The runner composites, so known pixels stay bit-identical.
A model whose Predictor names a `pretrained` setting (LaMa: --lama-weights FILE) runs published weights instead of a
checkpoint, through the same networks and steps: its Predictor builds them from the file (one of the two is given;
LaMa reads safetensors, or a state dict with torch.load(weights_only=True): never code). The file's sha256 is
recorded as a checkpoint's weights are.
A Predictor with `own_resolution` gets each batch at its own size: steps 1 and 3 are skipped.
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
        predictor_cls = self.package.Predictor
        checkpoint = settings.checkpoint
        # a pretrained weights file instead of a checkpoint, for models that take one (None for the others)
        weights = getattr(settings, predictor_cls.pretrained) if predictor_cls.pretrained else None
        weights_flag = f"--{predictor_cls.pretrained.replace('_', '-')}" if predictor_cls.pretrained else ""
        if checkpoint and weights:
            raise UserError(f"{name}: pass --{name}-checkpoint (a training folder) or {weights_flag} (pretrained "
                            "weights), not both")
        if not checkpoint and not weights:
            alternative = f", or pretrained weights with {weights_flag} FILE" if weights_flag else ""
            raise UserError(f"{name} needs a trained checkpoint: pass --{name}-checkpoint DIR (run: --checkpoint DIR), "
                            f"the --out folder of `diffinpaint train {name}`{alternative}")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.needs_grad = predictor_cls.needs_grad
        self.deterministic = predictor_cls.deterministic
        if weights:
            self.folder, self.step, path = None, -1, Path(weights).expanduser()
            if not path.is_file():
                raise UserError(f"{weights_flag} {path}: no such file")
            self.config, nets = predictor_cls.load_pretrained(path)
            self.weights_sha256 = {"pretrained": sha256_file(path)}
        else:
            self.folder = resolve_checkpoint(checkpoint, name)
            self.config, state = read_checkpoint_state(self.folder, name)
            self.step = int(state.get("step", -1))
            nets, self.weights_sha256 = {}, {}
            for net_name in predictor_cls.networks:
                path = self.folder / f"{net_name}.safetensors"
                net = self.package.build_network(self.config, net_name.removesuffix("_ema"))
                try:
                    net.load_state_dict(load_tensors(path), strict=True)
                except RuntimeError:
                    raise UserError(f"{path} does not fit the configuration in its config.json; the folder mixes "
                                    f"files of different runs: retrain or restore it") from None
                nets[net_name] = net
                self.weights_sha256[net_name] = sha256_file(path)
        self.size = int(self.config["size"])
        nets = {k: net.to(self.device).eval().requires_grad_(False) for k, net in nets.items()}
        own = predictor_cls.Settings
        predictor_settings = None if own is None else own(**{f.name: getattr(settings, f.name)
                                                             for f in dataclasses.fields(own)})
        self.predictor = predictor_cls(self.config, nets, predictor_settings, self.device)
        self.predictor.check()

    @property
    def training_set_path(self) -> Path | None:
        """OUT/training_set.json of the training folder this checkpoint came from (None for older checkpoints).
        Pretrained weights have no training folder: the attribute is then absent (AttributeError), so eval's leakage
        check treats them as it treats models the toolkit does not train."""
        if self.folder is None:
            raise AttributeError("pretrained weights have no training folder")
        path = self.folder.parent.parent / "training_set.json"
        return path if path.is_file() else None

    def inpaint(self, images: torch.Tensor, masks: torch.Tensor, *, seeds: Sequence[int],
                labels: Sequence[str | None]) -> torch.Tensor:
        # 1. Check inputs
        if images.ndim != 4 or images.shape[1] != 3 or masks.shape != (images.shape[0], 1, *images.shape[2:]):
            raise ValueError(f"{self.name} expects images N×3×H×W and masks N×1×H×W, got {tuple(images.shape)} and "
                             f"{tuple(masks.shape)}")
        height, width = images.shape[-2:]
        if self.predictor.own_resolution:  # the predictor handles sizes itself
            prediction = self.predictor.predict(images.to(self.device, torch.float32),
                                                (masks.to(self.device, torch.float32) > 0.5).float(), list(seeds))
            return prediction.float().clamp(0.0, 1.0).to(images.device)
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
        training_set = self.training_set_path if self.folder is not None else None
        source = str(self.folder.resolve()) if self.folder is not None else "none (pretrained weights)"
        return {"checkpoint": source, "step": self.step, "size": self.size,
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
