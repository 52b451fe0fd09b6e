"""Inception metrics with torch-fidelity's Inception-v3 (the standard FID network): FID and KID on hole crops
(`fid`, `kid`) and on whole composited images (`fid_full`, `kid_full`), and CoModGAN's paired / unpaired
Inception discriminative scores (`pids`, `uids`) from the same whole-image features.

Feature pipeline (DESIGN.md): each hole crop or whole image (uint8) -> PIL bicubic resize to 299×299 ->
torch-fidelity's FeatureExtractorInceptionV3, feature '2048' (pool3). Free-form masks use the bounding box of
each image's hole. eval computes each image's and each crop's features once and every metric reuses them.

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
from ..util.weights import find_weights
from ..util.files import sha256_file

WEIGHTS_NAMES = ("pt_inception-2015-12-05-6726825d.pth", "weights-inception-2015-12-05-6726825d.pth")
EXTRACTOR = "torch-fidelity FeatureExtractorInceptionV3 feature 2048 (pool3)"
RESIZE_RULE = "PIL bicubic to 299x299 from uint8"
CROP_RULE = "box holes: each hole's rectangle; free-form masks: bounding box of the image's hole pixels"
WHOLE_RULE = "whole image"
FEATURE_DIM = 2048


class FIDUnavailable(RuntimeError):
    """No Inception weights: FID/KID are reported missing, everything else still runs."""


def _inception_url() -> str:
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    return URL_INCEPTION_V3


def _find_weights(weights: str | Path | None) -> Path:
    return find_weights(weights, flag="--fid-weights", names=WEIGHTS_NAMES, url=_inception_url,
                        what="Inception", unavailable=FIDUnavailable)


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
    rank-deficient covariances of small sets. With fewer samples than dimensions it is cheaper still: with
    centred features A1, A2 (n×d), S1 S2 = A1ᵀ(A1 A2ᵀ)A2 / ((n1-1)(n2-1)) has the same non-zero eigenvalues as
    M Mᵀ / ((n1-1)(n2-1)) with M = A1 A2ᵀ (n1×n2), so the trace is M's singular values summed: an n1×n2 SVD
    instead of a 2048×2048 eigenproblem. The tests hold both routes to scipy.linalg.sqrtm.
    """
    f1, f2 = features_1.double(), features_2.double()
    n1, n2 = len(f1), len(f2)
    if n1 < 2 or n2 < 2:
        raise ValueError("FID needs at least 2 crops on each side")
    mu1, mu2 = f1.mean(0), f2.mean(0)
    a1, a2 = f1 - mu1, f2 - mu2
    trace_1, trace_2 = a1.square().sum() / (n1 - 1), a2.square().sum() / (n2 - 1)
    if min(n1, n2) < f1.shape[1]:
        tr_covmean = torch.linalg.svdvals(a1 @ a2.T).sum() / ((n1 - 1) * (n2 - 1)) ** 0.5
    else:
        s1, s2 = a1.T @ a1 / (n1 - 1), a2.T @ a2 / (n2 - 1)
        tr_covmean = torch.linalg.eigvals(s1 @ s2).sqrt().real.sum()
    return float((mu1 - mu2).square().sum() + trace_1 + trace_2 - 2 * tr_covmean)


def kid_subset_size(n: int, cap: int = 1000) -> int:
    """min(cap, n // 2): subsets of the whole set (today's old rule) all hold the same points, so the spread
    over subsets is ~0 and says nothing; half the set gives subsets that really differ."""
    return min(cap, n // 2)


def kernel_inception_distance(features_1: torch.Tensor, features_2: torch.Tensor, subsets: int = 100,
                              subset_size: int = 1000, seed: int = 2020) -> tuple[float, float]:
    """Unbiased MMD² with the cubic polynomial kernel over random subsets of min(subset_size, n/2) features
    (torch-fidelity's KID); returns (mean, std over subsets)."""
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    size = kid_subset_size(min(len(features_1), len(features_2)), subset_size)
    if size < 2:
        raise ValueError("KID needs at least 4 features on each side (subsets of half the set, at least 2)")
    out = kid_features_to_metric(features_1.double(), features_2.double(), kid_subsets=subsets,
                                 kid_subset_size=size, kid_kernel="poly", kid_degree=3, kid_gamma=None,
                                 kid_coef0=1, rng_seed=seed, verbose=False)
    return out[KEY_METRIC_KID_MEAN], out[KEY_METRIC_KID_STD]


def inception_discriminative_scores(real: torch.Tensor, fake: torch.Tensor) -> tuple[float, float, bool]:
    """CoModGAN's (P-IDS, U-IDS, converged) from paired real/fake features (row i of each = image i).

    A linear SVM (scikit-learn's LinearSVC, primal solver, as co-mod-gan's metrics/inception_discriminative_score
    .py) is fit to tell real (1) from fake (0) on all features. U-IDS = its error rate on them; P-IDS = the share
    of pairs where the fake image scores as more real than its own ground truth. Both are 0 for outputs the SVM
    tells apart perfectly and approach 0.5 for outputs it cannot.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    if len(real) != len(fake) or len(real) < 2:
        raise ValueError("P-IDS/U-IDS need at least 2 paired real and fake images")
    real_np, fake_np = real.double().numpy(), fake.double().numpy()
    inputs = np.concatenate([real_np, fake_np])
    targets = np.array([1] * len(real_np) + [0] * len(fake_np))
    svm = LinearSVC(dual=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        svm.fit(inputs, targets)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    uids = 1.0 - float(svm.score(inputs, targets))
    pids = float(np.mean(svm.decision_function(fake_np) > svm.decision_function(real_np)))
    return pids, uids, converged


# ---------------------------------------------------------------------------------------------- cache


def dataset_fingerprint(samples: Iterable) -> str:
    """The dataset's content: every image's id and input key (image bytes + holes, see Sample.input_key)."""
    digest = hashlib.sha256()
    for s in samples:
        digest.update(f"{s.image_id}\0{s.input_key}\0".encode())
    return digest.hexdigest()


def feature_cache_key(weights_sha256: str, fingerprint: str) -> str:
    spec = {"extractor": EXTRACTOR, "weights_sha256": weights_sha256, "resize": RESIZE_RULE,
            "crop": CROP_RULE, "whole": WHOLE_RULE, "dataset": fingerprint}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "diffinpaint" / "features"


def cache_path(cache_dir: Path | None, key: str) -> Path:
    return Path(cache_dir or default_cache_dir()) / f"gt-{key}.safetensors"


def load_cached(path: Path) -> dict[str, torch.Tensor] | None:
    """The cached ground-truth features, or None when absent or damaged (then they are recomputed)."""
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    try:
        return load_file(path)
    except Exception:
        return None


def save_cached(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save

    from ..util.files import atomic_write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save({k: v.contiguous() for k, v in tensors.items()},
                                  metadata={"extractor": EXTRACTOR, "resize": RESIZE_RULE, "crop": CROP_RULE,
                                            "whole": WHOLE_RULE}))
