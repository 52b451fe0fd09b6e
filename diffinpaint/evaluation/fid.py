"""Masked FID and KID on hole crops, with torch-fidelity's Inception-v3 (the standard FID network).

Feature pipeline (DESIGN.md): each hole crop (uint8) -> PIL bicubic resize to 299×299 -> torch-fidelity's
FeatureExtractorInceptionV3, feature '2048' (pool3). Free-form masks use the bounding box of each image's hole.

Weights: `--fid-weights PATH` names the standard file (pt_inception-2015-12-05-6726825d.pth as pytorch-fid
distributes it, or weights-inception-2015-12-05-6726825d.pth as torch-fidelity does: the same tensors). It is
read with `torch.load(weights_only=True)`, which cannot run pickled code; torch-fidelity's own loader unpickles
freely, so the state dict is handed to it through its download hook instead. Without a path, the torch hub cache
is tried, then the usual download; when neither works FID/KID are reported missing, with one warning.

Ground-truth features are cached under a key that names everything that changes them: the extractor, the
weights' SHA-256, the resize rule, the crop rule and the dataset's content (image bytes and holes).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Sequence
from unittest import mock

import numpy as np
import torch
from PIL import Image
from ..util.errors import UserError

WEIGHTS_NAMES = ("pt_inception-2015-12-05-6726825d.pth", "weights-inception-2015-12-05-6726825d.pth")
EXTRACTOR = "torch-fidelity FeatureExtractorInceptionV3 feature 2048 (pool3)"
RESIZE_RULE = "PIL bicubic to 299x299 from uint8"
CROP_RULE = "box holes: each hole's rectangle; free-form masks: bounding box of the image's hole pixels"
FEATURE_DIM = 2048


class FIDUnavailable(RuntimeError):
    """No Inception weights: FID/KID are reported missing, everything else still runs."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _find_weights(weights: str | Path | None) -> Path:
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise UserError(f"--fid-weights {path}: no such file; pass the path of "
                             f"{WEIGHTS_NAMES[0]} (or leave it out to report FID as missing)")
        return path
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    for name in WEIGHTS_NAMES:
        if (hub / name).is_file():
            return hub / name
    truthy = {"1", "true", "yes", "on"}
    if {os.environ.get(v, "").strip().lower() for v in ("HF_HUB_OFFLINE", "DIFFINPAINT_OFFLINE")} & truthy:
        raise FIDUnavailable("no Inception weights in the torch hub cache and offline mode is on")
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    try:  # the usual download into the torch hub cache (weights_only: plain tensors)
        torch.hub.load_state_dict_from_url(URL_INCEPTION_V3, progress=False, weights_only=True)
    except Exception as err:
        raise FIDUnavailable(f"the Inception weights could not be downloaded ({type(err).__name__})") from None
    return hub / WEIGHTS_NAMES[1]


class InceptionFeatures:
    """torch-fidelity's FID Inception-v3, built from a weights file read without unpickling objects."""

    def __init__(self, weights: str | Path | None = None, device: str = "cpu", batch_size: int = 32):
        from torch_fidelity import feature_extractor_inceptionv3 as fe

        path = _find_weights(weights)
        try:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise UserError(f"--fid-weights {path}: not a plain PyTorch state dict ({str(err).splitlines()[0]}); "
                             f"pass {WEIGHTS_NAMES[0]}") from None
        with mock.patch.object(fe, "load_state_dict_from_url", lambda *a, **k: state_dict):
            try:
                self.model = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
            except RuntimeError as err:
                raise UserError(f"--fid-weights {path}: not the FID Inception-v3 weights "
                                 f"({str(err).splitlines()[0][:120]}); pass {WEIGHTS_NAMES[0]}") from None
        self.model.to(device)
        self.device = device
        self.batch_size = batch_size
        self.weights_sha256 = sha256_file(path)

    @torch.inference_mode()
    def __call__(self, crops: Sequence[np.ndarray]) -> torch.Tensor:
        """uint8 H×W×3 crops (any sizes) -> float64 N×2048 features."""
        features = []
        for start in range(0, len(crops), self.batch_size):
            batch = torch.from_numpy(np.stack([resize_299(c) for c in crops[start : start + self.batch_size]]))
            (feats,) = self.model(batch.permute(0, 3, 1, 2).contiguous().to(self.device))
            features.append(feats.double().cpu())
        return torch.cat(features) if features else torch.zeros(0, FEATURE_DIM, dtype=torch.float64)


def resize_299(crop: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(crop).resize((299, 299), Image.BICUBIC))


def hole_crops(image: np.ndarray, boxes: Sequence[tuple[int, int, int, int]], mask: np.ndarray | None
               ) -> list[np.ndarray]:
    if boxes:
        return [image[y : y + h, x : x + w] for x, y, w, h in boxes]
    rows, cols = np.nonzero(mask)
    return [image[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]]


# ---------------------------------------------------------------------------------------------- distances


def frechet_distance(features_1: torch.Tensor, features_2: torch.Tensor) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2), in float64.

    Tr((S1 S2)^1/2) is the sum of square roots of the eigenvalues of S1 S2 (real and >= 0 in exact arithmetic
    since S1 S2 is similar to a PSD matrix); this avoids scipy's sqrtm, which is slow and unstable for the
    rank-deficient covariances of small sets. The tests hold it to scipy.linalg.sqrtm.
    """
    f1, f2 = features_1.double(), features_2.double()
    if len(f1) < 2 or len(f2) < 2:
        raise ValueError("FID needs at least 2 crops on each side")
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = torch.cov(f1.T), torch.cov(f2.T)
    eigenvalues = torch.linalg.eigvals(s1 @ s2)
    tr_covmean = eigenvalues.sqrt().real.sum()
    return float((mu1 - mu2).square().sum() + s1.trace() + s2.trace() - 2 * tr_covmean)


def kernel_inception_distance(features_1: torch.Tensor, features_2: torch.Tensor, subsets: int = 100,
                              subset_size: int = 1000, seed: int = 2020) -> tuple[float, float]:
    """Unbiased MMD² with the cubic polynomial kernel over random subsets (torch-fidelity's KID)."""
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    size = min(subset_size, len(features_1), len(features_2))
    if size < 2:
        raise ValueError("KID needs at least 2 crops on each side")
    out = kid_features_to_metric(features_1.double(), features_2.double(), kid_subsets=subsets,
                                 kid_subset_size=size, kid_kernel="poly", kid_degree=3, kid_gamma=None,
                                 kid_coef0=1, rng_seed=seed, verbose=False)
    return out[KEY_METRIC_KID_MEAN], out[KEY_METRIC_KID_STD]


# ---------------------------------------------------------------------------------------------- cache


def dataset_fingerprint(samples: Iterable) -> str:
    """The dataset's content: every image's id and input key (image bytes + holes, see Sample.input_key)."""
    digest = hashlib.sha256()
    for s in samples:
        digest.update(f"{s.image_id}\0{s.input_key}\0".encode())
    return digest.hexdigest()


def feature_cache_key(weights_sha256: str, fingerprint: str) -> str:
    spec = {"extractor": EXTRACTOR, "weights_sha256": weights_sha256, "resize": RESIZE_RULE,
            "crop": CROP_RULE, "dataset": fingerprint}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "diffinpaint" / "features"


def cached_features(cache_dir: Path, key: str, compute) -> torch.Tensor:
    from safetensors.torch import load_file, save

    from ..util.files import atomic_write_bytes

    path = Path(cache_dir) / f"gt-{key}.safetensors"
    if path.is_file():
        try:
            return load_file(path)["features"]
        except Exception:
            pass  # a damaged cache entry is recomputed
    features = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save({"features": features.contiguous()},
                                  metadata={"extractor": EXTRACTOR, "resize": RESIZE_RULE, "crop": CROP_RULE}))
    return features
