"""Stable Diffusion inpainting through diffusers (pipeline.py) with prompt sets (prompts.py)."""
from .pipeline import (CONFIG_DIR, Settings, StableDiffusionModel, build_clip_tokenizer, build_random_pipeline,
                       hole_crop_boxes)

__all__ = ["CONFIG_DIR", "Settings", "StableDiffusionModel", "build_clip_tokenizer", "build_random_pipeline",
           "hole_crop_boxes"]
