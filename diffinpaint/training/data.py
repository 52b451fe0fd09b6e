"""Training examples: each step's batch is a pure function of (seed, step, rank).

The images of step s on process r are the sample positions (s·P + r)·B + i of a per-epoch permutation; flips and
generated holes come from (seed, position). A resumed run therefore draws exactly what the uninterrupted run would
have drawn, with no RNG state in the checkpoint, and the DataLoader's worker count changes nothing.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..data import Sample, discover_images, load_dataset
from ..data.masks import box_mask, irregular_mask
from ..util.errors import UserError
from ..util.imageops import resize_images, resize_masks

TOOLKIT_HOLES = ("box", "thin", "medium", "thick")  # the toolkit's own generators (data/masks.py)
CACHE_BYTES = 1 << 30  # decoded training images kept in memory per process (1 GiB: ~1,300 images at 256 px)


def training_samples(data: str | Path, holes: str) -> list[Sample]:
    """The training images. With --holes dataset the dataset's masks are validated and used; with generated holes
    (or none) a folder of images is enough: no masks.csv or masks/ needed."""
    root = Path(data)
    if holes != "dataset":
        return discover_images(root)
    if root.is_dir() and (root / "images").is_dir() and not (root / "masks.csv").exists() \
            and not (root / "masks").is_dir():
        raise UserError(f"{root} has no mask source (masks.csv or masks/), so --holes dataset has no holes to "
                        "train on; pass --holes box|thin|medium|thick (generated per sample) or add masks with "
                        "`diffinpaint data masks`")
    return load_dataset(root).samples


def generated_holes(size: int, protocol: str, rng: np.random.Generator) -> np.ndarray:
    if protocol == "box":  # the box protocol: two 75x75 holes at 256 px, scaled with the image
        return box_mask(size, size, 2, max(1, int(round(75 * size / 256))), rng)
    return irregular_mask(size, size, protocol, rng)


class TrainingImages(torch.utils.data.Dataset):
    """Index = global sample position; the example at a position depends only on (seed, position)."""

    def __init__(self, samples: list[Sample], size: int, holes: str, flip: bool, seed: int,
                 make_holes: Callable[[int, np.random.Generator], np.ndarray] | None = None,
                 cache_bytes: int = CACHE_BYTES):
        self.samples, self.size, self.holes, self.flip, self.seed = samples, size, holes, flip, seed
        self.make_holes = make_holes  # the model's own generator, for --holes <its name>
        # decoded and resized images (and dataset masks) kept in memory up to this budget: every epoch after the
        # first then skips PNG/JPEG decoding and resizing, which on small networks costs as much as the step
        self.cache: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self.cache_left = cache_bytes

    def __len__(self) -> int:
        return len(self.samples)

    @lru_cache(maxsize=4)
    def order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, 0, epoch]).permutation(len(self.samples))

    def __getitem__(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, offset = divmod(int(position), len(self.samples))
        index = int(self.order(epoch)[offset])
        flip = self.flip and np.random.default_rng([self.seed, 1, position]).random() < 0.5
        return self.example(index, np.random.default_rng([self.seed, 3, position]), flip)

    def example(self, index: int, rng: np.random.Generator, flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """3×S×S image in [0, 1] and 1×S×S mask (1 = hole) for sample `index`."""
        image, dataset_mask = self.resized(index)
        if self.holes == "dataset":
            mask = dataset_mask
        elif self.holes == "none":
            mask = torch.zeros(1, self.size, self.size)
        elif self.holes in TOOLKIT_HOLES:
            mask = torch.from_numpy(generated_holes(self.size, self.holes, rng))[None].float()
        else:
            mask = torch.from_numpy(np.asarray(self.make_holes(self.size, rng), dtype=bool))[None].float()
        if flip:
            image, mask = image.flip(-1), mask.flip(-1)
        return image.contiguous(), mask.contiguous()


    def resized(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Sample `index` at the training size: image 3×S×S in [0, 1], its dataset mask 1×S×S (with --holes dataset)."""
        if index in self.cache:
            return self.cache[index]
        sample = self.samples[index]
        shape = (self.size, self.size)
        image = torch.tensor(sample.load_image()).permute(2, 0, 1)[None].float() / 255.0  # copies the read-only array
        image = resize_images(image, shape)[0]
        mask = resize_masks(torch.tensor(sample.load_mask())[None, None], shape)[0] if self.holes == "dataset" else None
        cost = image.nbytes + (mask.nbytes if mask is not None else 0)
        if cost <= self.cache_left:
            self.cache[index] = (image, mask)
            self.cache_left -= cost
        return image, mask


class StepBatches(torch.utils.data.Sampler):
    """The positions of each step's batch on this process, for steps [start, stop)."""

    def __init__(self, start: int, stop: int, batch_size: int, rank: int, processes: int):
        self.start, self.stop, self.batch_size, self.rank, self.processes = start, stop, batch_size, rank, processes

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self):
        for step in range(self.start, self.stop):
            first = (step * self.processes + self.rank) * self.batch_size
            yield list(range(first, first + self.batch_size))


def training_set_record(samples: list[Sample]) -> dict:
    """CKPT/training_set.json: the content fingerprint of every training image (decoded pixels, so a re-saved copy
    of the same photo is recognised) and its perceptual hashes, of the image and of its mirror image (so a JPEG
    re-save, a small re-crop, a resize or a flip is recognised too); `diffinpaint eval` compares it with the
    images it scores (evaluation/leakage.py)."""
    from ..data.near_duplicates import HASH_NAME, NEAR_DISTANCE, image_key, to_hex

    images = []
    for s in samples:
        key = image_key(s.load_image())
        images.append({"image": s.image_id, "fingerprint": key.fingerprint, "phash": to_hex(key.phash),
                       "phash_flip": to_hex(key.phash_flip)})
    return {"format": "diffinpaint-training-set", "version": 2, "fingerprint": "sha256 of decoded RGB pixels",
            "perceptual_hash": HASH_NAME, "near_distance": NEAR_DISTANCE, "n_images": len(samples),
            "images": images}
