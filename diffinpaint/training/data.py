"""Training examples: each step's batch is a pure function of (seed, step, rank).

The images of step s on process r are the sample positions (s·P + r)·B + i of a per-epoch permutation; flips,
generated holes and a model's own augmentation come from (seed, position). A resumed run therefore draws exactly what
the uninterrupted run would have drawn, with no RNG state in the checkpoint, and the DataLoader's worker count changes
nothing.

One example: the image decoded and resized to --size (cached), then the model's augmentation if it has one
(`TrainableModel.augmentation`, e.g. LaMa's distortions; image only), then the holes (drawn independently of the
image), then the flip of image and mask together. Numpy streams of `np.random.default_rng([seed, k, position])`:
k = 0 the epoch's order (per epoch), 1 the flip, 3 the holes, 4 the sample grid's holes, 6 the augmentation.
"""
from __future__ import annotations

import queue
import threading
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from ..data import Sample, discover_images, load_dataset
from ..data.masks import box_mask, irregular_mask
from ..util.errors import UserError
from ..util.imageops import resize_images, resize_masks

TOOLKIT_HOLES = ("box", "thin", "medium", "thick")  # the toolkit's own generators (data/masks.py)
CACHE_BYTES = 1 << 30  # decoded training images kept in memory per process (1 GiB: ~1,300 images at 256 px)
AUGMENT_STREAM = 6  # the numpy stream k of a model's augmentation (see the module docstring)

# a model's per-example augmentation: (image 3×S×S float32 in [0, 1], read-only; rng) -> new 3×S×S float32 in [0, 1]
Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]


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
                 cache_bytes: int = CACHE_BYTES, augment: Augment | None = None):
        self.samples, self.size, self.holes, self.flip, self.seed = samples, size, holes, flip, seed
        self.make_holes = make_holes  # the model's own generator, for --holes <its name>
        # the model's augmentation of the image (None: resize and flip only). It runs per example on the cached
        # image, so every epoch sees a new draw; without one nothing is drawn for it (other models' examples are
        # exactly what they were before the hook existed)
        self.augment = augment
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
        # the holes' generator only where holes are drawn (building one costs as much as the rest of an example)
        drawn = self.holes not in ("dataset", "none")
        return self.example(index, np.random.default_rng([self.seed, 3, position]) if drawn else None, flip,
                            self.augment_rng(position))

    def augment_rng(self, position: int) -> np.random.Generator | None:
        """The generator of the augmentation at `position` (None without one: nothing is drawn)."""
        return np.random.default_rng([self.seed, AUGMENT_STREAM, position]) if self.augment is not None else None

    def augmented(self, image: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        """The model's augmentation of a cached image (3×S×S float32; the cache is never written), or the image."""
        if rng is None:
            return image
        out = self.augment(image, rng)
        if out.shape != image.shape or out.dtype != np.float32:
            raise RuntimeError(f"the augmentation returned {out.dtype} {out.shape} for float32 {image.shape}")
        return out

    def example(self, index: int, rng: np.random.Generator | None, flip: bool,
                augment_rng: np.random.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """3×S×S image in [0, 1] and 1×S×S mask (1 = hole) for sample `index` (`rng` draws generated holes; with
        `augment_rng` the model's augmentation is applied, drawing from it; the sample grid's examples have none)."""
        image, dataset_mask = self.resized(index)
        if augment_rng is not None:
            image = torch.from_numpy(self.augmented(image.numpy(), augment_rng))
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

    def batch(self, positions: list[int], pin: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The examples at `positions` stacked: images N×3×S×S and masks N×1×S×S, exactly `torch.stack` of
        `self[p]` for each p, written straight into the two batch tensors (in pinned memory when `pin`); the
        per-example tensor operations are what a small network's step would otherwise wait for."""
        n, size = len(positions), self.size
        images = torch.empty((n, 3, size, size), pin_memory=pin)
        masks = torch.zeros((n, 1, size, size), pin_memory=pin)
        images_np, masks_np = images.numpy(), masks.numpy()
        drawn = self.holes not in ("dataset", "none")
        for i, position in enumerate(positions):
            epoch, offset = divmod(int(position), len(self.samples))
            index = int(self.order(epoch)[offset])
            flip = self.flip and np.random.default_rng([self.seed, 1, position]).random() < 0.5
            image, dataset_mask = self.resized(index)
            if self.holes == "dataset":
                mask = dataset_mask.numpy()[0]
            elif drawn:
                rng = np.random.default_rng([self.seed, 3, position])
                mask = generated_holes(size, self.holes, rng) if self.holes in TOOLKIT_HOLES else \
                    np.asarray(self.make_holes(size, rng), dtype=bool)
            else:
                mask = None
            image = self.augmented(image.numpy(), self.augment_rng(position))
            images_np[i] = image[..., ::-1] if flip else image
            if mask is not None:
                masks_np[i, 0] = mask[..., ::-1] if flip else mask
        return images, masks

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


def host_batches(images: TrainingImages, sampler: StepBatches, workers: int, pin: bool):
    """Each step's (images N×3×S×S, masks N×1×S×S) on the host, in pinned memory when `pin` (so the copy to the GPU
    can run asynchronously). With workers 0 the batch is written here directly (TrainingImages.batch: the
    DataLoader's per-batch machinery and per-example tensors cost more than the writing on small networks); else a
    DataLoader's worker processes make them. Both give the same tensors: examples are functions of (seed,
    position) alone."""
    if workers > 0:
        yield from torch.utils.data.DataLoader(images, batch_sampler=sampler, num_workers=workers,
                                               persistent_workers=False, pin_memory=pin)
        return
    for positions in sampler:
        yield images.batch(positions, pin)


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


_END = object()


def batches_ahead(batches: Iterator, depth: int = 2) -> Iterator:
    """The items of `batches`, made by a background thread up to `depth` items ahead. The examples are functions of
    (seed, position) alone (numpy generators made from them; no torch RNG), so which thread makes them changes no
    value. The thread runs while the step's kernels run (they release the GIL), on another core where there is
    one, with its caches warm: on a CPU a batch costs several times less there than between two steps. An error in
    it is raised here; closing this generator stops it."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not put(batch):
                    return
            put(_END)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, which raises it
            put(_Failed(err))

    thread = threading.Thread(target=produce, name="diffinpaint-batches", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()


def device_batches(images: TrainingImages, sampler: StepBatches, workers: int, device: torch.device,
                   thread: bool | None = None):
    """Each step's batch on `device`, ahead of the step, and the next batch's copy started (pinned memory,
    non-blocking) before the current one is handed out, so on a GPU the copy overlaps the step and the host never
    waits for it. With workers N the DataLoader's processes make the host batches; with workers 0 they are made
    here: on an accelerator by a background thread two steps ahead (batches_ahead: the host has slack while the
    device computes), on a CPU in this thread (`thread` overrides either): there the model's step runs on this
    thread, and a batch thread beside it slowed each step by more than the examples cost, in CPU and in wall time
    (paired runs of eval/bench_train.py with and without it: README, Benchmarks). Made in this thread, OpenCV is
    held to it until this generator is closed (opencv_in_this_thread)."""
    cuda = device.type == "cuda"
    source = host_batches(images, sampler, workers, pin=cuda)
    in_this_thread = workers == 0 and not (thread if thread is not None else device.type != "cpu")
    if workers == 0 and not in_this_thread:
        source = batches_ahead(source)
    source = iter(source)
    restore_opencv = opencv_in_this_thread() if in_this_thread else None

    def ahead():
        batch = next(source, None)
        return None if batch is None else tuple(t.to(device, non_blocking=cuda) for t in batch)

    try:
        upcoming = ahead()
        while upcoming is not None:
            current, upcoming = upcoming, ahead()
            yield current
    finally:
        if hasattr(source, "close"):
            source.close()
        if restore_opencv:
            restore_opencv()


def opencv_in_this_thread() -> Callable[[], None]:
    """Hold OpenCV's calls (LaMa's augmentation warps, the hole drawing) to the calling thread; returns the function
    that restores the previous setting. For examples made between a CPU's steps (device_batches): OpenCV's worker
    threads keep spinning on the other core after each call and cost more CPU time than they save on batch-sized
    images (paired runs of eval/bench_train.py: LaMa's trainer cost over a plain loop 5.1% → 1.3% of CPU time)."""
    import cv2

    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    return lambda: cv2.setNumThreads(previous)


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
