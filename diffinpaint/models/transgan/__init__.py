"""A conditional TransGAN for inpainting (after Jiang, Chang, Wang 2021): networks (nets.py), inference with the
EMA generator (infer.py), WGAN-GP + L1 training step (step.py)."""
from .infer import TransGANPredictor as Predictor
from .nets import build_network

__all__ = ["Predictor", "build_network"]
