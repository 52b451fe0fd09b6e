"""DMFN ("Image Fine-grained Inpainting", Hui et al. 2020): networks (nets.py), inference (infer.py), training
step (step.py) and its frozen VGG19 (vgg.py); only training imports the last two."""
from .infer import DMFNPredictor as Predictor
from .nets import build_network

__all__ = ["Predictor", "build_network"]
