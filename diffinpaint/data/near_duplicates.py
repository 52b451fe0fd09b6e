"""Near-duplicate images by perceptual hash: the same photo re-saved as JPEG, re-cropped by a few pixels, resized
or mirrored, which an exact pixel fingerprint (`util.files.pixel_fingerprint`) cannot see.

The hash is imagehash's pHash (Hacker Factor's DCT hash): the image in grey, resized to 32×32 (Lanczos), its 2-D
DCT, and the 8×8 lowest frequencies compared with their median: 64 bits. Every image gets two: its own and its
mirror image's (the horizontal flip training applies), so a flipped copy is found by comparing one image's hash
with the other's mirror hash. Two images are near-duplicates when the smaller of those Hamming distances is at
most NEAR_DISTANCE. `data split` joins near-duplicates into one group (they land on one side), training writes
both hashes into training_set.json, and eval flags evaluated images within NEAR_DISTANCE of a training image.

Measured on crops of scikit-image's photos (tests/test_near_duplicates.py; README "Training-set leakage"): JPEG
re-saves (quality 75-90) 0-4 bits, resizes (0.5-0.8×) 0-2, a mirrored copy 0 (against the mirror hash), a 2-px
re-crop 0-6 at 128-256 px (0-10 at 64 px; up to 12-18 on fine textures and synthetic images); crops of different
photos 16 or more (6,840 pairs, median 28).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
from PIL import Image

HASH_NAME = "imagehash.phash, 8x8 DCT (64 bits), of the image and of its mirror image"
NEAR_DISTANCE = 10  # Hamming distance (of 64 bits) at or below which two images count as the same photo
_BLOCK_ELEMENTS = 1 << 22  # distances computed per block (32 MiB of uint64)


@dataclass(frozen=True)
class ImageKey:
    """What the leakage checks compare: the exact pixel fingerprint and the perceptual hashes (64-bit ints)."""

    fingerprint: str
    phash: int
    phash_flip: int


def perceptual_hashes(rgb: np.ndarray) -> tuple[int, int]:
    """(pHash of the image, pHash of its mirror image) of a decoded uint8 H×W×3 image, as 64-bit ints.

    The mirror hash is taken from the mirrored 32×32 grey thumbnail, which equals the thumbnail of the mirrored
    image up to rounding (Lanczos resizing is symmetric); the image itself is resized once."""
    import imagehash

    small = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).convert("L").resize((32, 32),
                                                                                         Image.LANCZOS)
    return (int(str(imagehash.phash(small)), 16),
            int(str(imagehash.phash(small.transpose(Image.FLIP_LEFT_RIGHT))), 16))


def image_key(rgb: np.ndarray) -> ImageKey:
    from ..util.files import pixel_fingerprint

    return ImageKey(pixel_fingerprint(rgb), *perceptual_hashes(rgb))


def to_hex(value: int) -> str:
    return f"{value:016x}"


def from_hex(text: str) -> int:
    value = int(text, 16)
    if not 0 <= value < 1 << 64 or len(text) != 16:
        raise ValueError(f"not a 64-bit hash: {text!r}")
    return value


def _array(values: Iterable[int]) -> np.ndarray:
    return np.fromiter((int(v) for v in values), dtype=np.uint64)


_BITS = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x).astype(np.int16)
    return _BITS[x.view(np.uint8)].reshape(*x.shape, 8).sum(-1, dtype=np.int16)


def distance(a: ImageKey, b: ImageKey) -> int:
    """Hamming distance between two images, mirrored copies included (the smallest of the three comparisons)."""
    return min(bin(a.phash ^ b.phash).count("1"), bin(a.phash_flip ^ b.phash).count("1"),
               bin(a.phash ^ b.phash_flip).count("1"))


def nearest(query: Iterable[int], reference: Iterable[int], reference_flip: Iterable[int]
            ) -> tuple[np.ndarray, np.ndarray]:
    """For each query hash: (smallest distance to any reference image or its mirror, that image's index).
    Empty reference: distance 65 (more than any 64-bit distance), index -1."""
    q, r, rf = _array(query), _array(reference), _array(reference_flip)
    best = np.full(len(q), 65, dtype=np.int16)
    where = np.full(len(q), -1, dtype=np.int64)
    if not len(r):
        return best, where
    rows = max(1, _BLOCK_ELEMENTS // len(r))
    for start in range(0, len(q), rows):
        block = q[start:start + rows, None]
        d = np.minimum(_popcount(block ^ r[None]), _popcount(block ^ rf[None]))
        where[start:start + rows] = d.argmin(1)
        best[start:start + rows] = d.min(1)
    return best, where


def near_pairs(hashes: Iterable[int], flips: Iterable[int], threshold: int = NEAR_DISTANCE
               ) -> list[tuple[int, int, int]]:
    """(i, j, distance) with i < j for every pair of images within `threshold` (mirrored copies included).
    Compares every pair once: n²/2 distances, about 1.5 s per 10^8 pairs on one core (10,000 images: under a
    second; 100,000: about a minute)."""
    h, f = _array(hashes), _array(flips)
    pairs: list[tuple[int, int, int]] = []
    n = len(h)
    if n < 2:
        return pairs
    rows = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, n, rows):
        block, block_f = h[start:start + rows, None], f[start:start + rows, None]
        rest, rest_f = h[None, start:], f[None, start:]  # the pairs with j >= start: each pair once
        d = np.minimum(np.minimum(_popcount(block ^ rest), _popcount(block_f ^ rest)), _popcount(block ^ rest_f))
        i, j = np.nonzero(d <= threshold)
        keep = j > i
        pairs += [(int(a) + start, int(b) + start, int(c)) for a, b, c in zip(i[keep], j[keep], d[i[keep], j[keep]])]
    return sorted(pairs)
