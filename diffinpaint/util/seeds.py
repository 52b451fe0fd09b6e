"""Seeds as pure functions of their inputs, so results never depend on order, batch position or process rank."""
from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(global_seed: int, key: str) -> int:
    """A per-item seed from (global seed, item id): independent of order, batch size and process rank."""
    digest = hashlib.sha256(f"{global_seed}:{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF  # fits numpy, cv2 and torch seeds


def stream_seed(*parts: int) -> int:
    """One 32-bit seed from a tuple of integers (e.g. (seed, stream, step, rank)) through numpy's SeedSequence."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])
