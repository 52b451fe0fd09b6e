"""Semantic image inpainting (Yeh et al. 2017) on a DCGAN: networks (nets.py), test-time latent search
(infer.py), training of the unconditional GAN (step.py)."""
from .infer import DCGANPredictor as Predictor
from .nets import build_network

__all__ = ["Predictor", "build_network"]
