"""Pix2Pix (Isola et al. 2017) for inpainting: networks (nets.py), inference (infer.py), training step (step.py)."""
from .infer import Pix2PixPredictor as Predictor
from .nets import build_network

__all__ = ["Predictor", "build_network"]
