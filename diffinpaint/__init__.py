"""diffinpaint: diffusion, GAN and classical image inpainting, scored on the masked region only."""
__version__ = "0.1.0"
