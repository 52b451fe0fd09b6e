"""LaMa (Suvorov et al., WACV 2022, "Resolution-robust Large Mask Inpainting with Fourier Convolutions"): networks
(nets.py: spandrel's FFC ResNet generator + pix2pixHD's N-layer discriminator), inference for trained checkpoints
and published weights alike (infer.py), the training step (step.py), the frozen ADE20k ResNet-50 of its
perceptual loss (hrf.py) and its training augmentation (augment.py); only training imports the last three."""
from .infer import LaMaPredictor as Predictor
from .nets import build_network

__all__ = ["Predictor", "build_network"]
