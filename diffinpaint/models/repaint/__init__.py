"""RePaint (Lugmayr et al., CVPR 2022) on an unconditional DDPM the toolkit trains: the UNet (nets.py), RePaint
sampling (infer.py), the DDPM training step (step.py)."""
from .infer import RePaintPredictor as Predictor
from .nets import build_network

__all__ = ["Predictor", "build_network"]
