"""DeepFill v2 (Yu et al. 2019, gated convolution + contextual attention + SN-PatchGAN): networks (nets.py),
its own training holes (holes.py), inference (infer.py), training step (step.py, imported only by training)."""
from .infer import DeepFillPredictor as Predictor
from .nets import build_network

__all__ = ["Predictor", "build_network"]
