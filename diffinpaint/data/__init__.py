"""Dataset folders: discovery and validation (dataset), hole generators (masks), mask files, demo data, splits."""
from .dataset import (DEFAULT_MAX_PIXELS, Dataset, DatasetError, Problem, Sample, discover_images, load_dataset,
                      load_mask_png, load_rgb, printable)

__all__ = ["DEFAULT_MAX_PIXELS", "Dataset", "DatasetError", "Problem", "Sample", "discover_images", "load_dataset",
           "load_mask_png", "load_rgb", "printable"]
