"""Diffusion inpainting through diffusers: the families it drives (families.py), loading (loading.py), the model
(pipeline.py) and prompt sets (prompts.py)."""
from .families import FAMILIES, Family
from .loading import CONFIG_DIR, build_clip_tokenizer, build_random_pipeline
from .pipeline import Settings, StableDiffusionModel, conditioning, hole_crop_boxes, model_size

__all__ = ["CONFIG_DIR", "FAMILIES", "Family", "Settings", "StableDiffusionModel", "build_clip_tokenizer",
           "build_random_pipeline", "conditioning", "hole_crop_boxes", "model_size"]
