"""Inception metrics with torch-fidelity's Inception-v3 (the standard FID network): FID and KID on hole crops
(`fid`, `kid`) and on whole composited images (`fid_full`, `kid_full`), CoModGAN's paired / unpaired Inception
discriminative scores (`pids`, `uids`) from the same whole-image features, and image-bootstrap intervals for all six
from those cached features (no second Inception pass).

Feature pipeline (README "Metrics"; torch-fidelity's protocol): each whole image or hole crop goes into torch-fidelity's
FeatureExtractorInceptionV3 as uint8 at its own size; the network resizes to 299×299 inside (TF1-style bilinear, as
the TensorFlow FID graph did) and returns feature '2048' (pool3). Images of one size are batched together; batch
size changes the features only by float noise. So `fid_full` equals `torch_fidelity.calculate_metrics(input1=outputs,
input2=originals, fid=True)` on the same weights (tests/test_fid_parity.py), and hole FID is the same rule applied to
crops. Free-form masks use the bounding box of each image's hole. eval computes each image's and each crop's
features once and every metric reuses them.

KID (hole and whole) is the unbiased MMD² with the cubic kernel (x·y/d + 1)³ averaged over 100 random subsets of
min(1000, n/2). Our sets are paired (row i of each = image i, or crop i), so each subset's real and fake sides are
drawn from disjoint images: a fake next to its own original is a near-copy, and letting such pairs into the cross
term (as independent draws from each side do) pulls KID below zero. `kid_std` is the standard deviation of the subset
values (how much a subset of that size varies, not the standard error of the mean).

Intervals (`set_metric_intervals`): percentile bootstrap over images (the crops of one image resample together),
each resample scored with the same statistic on the cached features; see resampled_set_metrics for counts and costs.
With several seeds (`seed_averaged_intervals`) every seed's outputs are scored on the same resampled images and
the per-seed values averaged per resample, as the summary averages the seeds' values.

Weights: `--fid-weights PATH` names the standard file (pt_inception-2015-12-05-6726825d.pth as pytorch-fid
distributes it, or weights-inception-2015-12-05-6726825d.pth as torch-fidelity does: the same tensors). It is
read with `torch.load(weights_only=True)`, which cannot run pickled code; torch-fidelity's own loader unpickles
freely, so the state dict is handed to it through its download hook instead. Without a path, the torch hub cache
is tried, then the usual download; when neither works FID/KID are reported missing, with one warning.

Ground-truth features are cached under a key that names everything that changes them: the protocol, the extractor,
the weights' SHA-256, the resize rule, the crop rule and the dataset's content (image bytes and holes).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence
from unittest import mock

import numpy as np
import torch

from ..util.errors import UserError
from ..util.weights import find_weights
from ..util.files import sha256_file

WEIGHTS_NAMES = ("pt_inception-2015-12-05-6726825d.pth", "weights-inception-2015-12-05-6726825d.pth")
PROTOCOL = "torch-fidelity"  # uint8 at own size into the extractor; what calculate_metrics computes on folders
EXTRACTOR = "torch-fidelity FeatureExtractorInceptionV3 feature 2048 (pool3)"
RESIZE_RULE = "none outside the network: uint8 at its own size; the extractor resizes to 299x299 (TF1 bilinear)"
CROP_RULE = "box holes: each hole's rectangle; free-form masks: bounding box of the image's hole pixels"
WHOLE_RULE = "whole image"
FEATURE_DIM = 2048

KID_SUBSETS = 100  # torch-fidelity's default
KID_SUBSET_CAP = 1000  # torch-fidelity's default subset size; ours is min(this, n/2) so that subsets really differ
KID_SEED = 2020
FULL_KERNEL_MAX = 4096  # up to this many rows the three n×n kernel matrices are computed once (≤ 400 MB float64)
# Bootstrap: percentile intervals over image resamples, drawn exactly as report.bootstrap draws them (seed 0, index
# rows in chunks of 250), so a set metric and a per-image metric see the same first resamples.
BOOTSTRAP_SEED = 0
N_RESAMPLES = 200  # KID (a resample costs nothing extra) and FID on up to LARGE_ROWS rows per side
LARGE_ROWS = 512  # FID with more rows: an eigenproblem of ~0.63 x rows (up to 2048) per resample, ~1-3 s on a CPU...
N_RESAMPLES_LARGE = 50  # ...so fewer resamples there (rougher bounds)
N_RESAMPLES_IDS = 20  # P-IDS/U-IDS refit the SVM per resample (each fit as slow as the point estimate)...
IDS_CI_MAX_IMAGES = 256  # ...so only up to this many images (a fit takes ~3 s at 200 images on 2 cores, minutes at 2048)
CI_METRICS = ("fid", "kid", "fid_full", "kid_full", "pids", "uids")


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
    def __call__(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """uint8 H×W×3 images or crops (any sizes) -> float64 N×2048 features, in input order.

        Each goes in at its own size (the network resizes inside, as torch-fidelity does with folders); only images
        of one size can share a batch, so they are grouped by size and the rows put back in order."""
        out = torch.zeros(len(images), FEATURE_DIM, dtype=torch.float64)
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"Inception features need uint8 H×W×3 images, got {image.dtype} {image.shape}")
            by_size.setdefault(image.shape, []).append(i)
        for rows in by_size.values():
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start : start + self.batch_size]
                batch = torch.from_numpy(np.stack([images[i] for i in chunk])).permute(0, 3, 1, 2).contiguous()
                (feats,) = self.model(batch.to(self.device))
                out[chunk] = feats.double().cpu()
        return out


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
    f1, f2 = torch.as_tensor(features_1).double(), torch.as_tensor(features_2).double()
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


def weighted_frechet_distance(features_1: torch.Tensor, features_2: torch.Tensor, weights: torch.Tensor) -> float:
    """FID of two paired sets in which row i appears weights[i] times on both sides (a bootstrap resample given
    by its counts): equal to frechet_distance on the repeated rows, without building them."""
    return float(resampled_frechet_distances(features_1, features_2, torch.as_tensor(weights)[None])[0])


def resampled_frechet_distances(features_1: torch.Tensor, features_2: torch.Tensor, weights: torch.Tensor
                                ) -> torch.Tensor:
    """weighted_frechet_distance for every row of `weights` (resamples × n), sharing the work between resamples.

    With A_k the features centred on the whole set's mean, a resample's mean is mu_k + δ_k (δ_k = wᵀA_k / Σw) and
    its covariance S_k = (A_kᵀ diag(w) A_k - Σw δ_k δ_kᵀ) / (Σw - 1), so the traces and the mean term cost O(n d).
    Tr((S1 S2)^1/2): with fewer rows than dimensions, the nuclear norm of the m×m matrix
    diag(√w)(A1 - δ1)(A2 - δ2)ᵀdiag(√w) / (Σw - 1) over the m rows drawn (as in frechet_distance), built from
    A1 A2ᵀ computed once, its singular values as √eigenvalues of M Mᵀ (far faster than torch's CPU SVD); otherwise
    Tr((R1ᵀ S2 R1)^1/2) with S1 = R1 R1ᵀ (Cholesky, or eigh when S1 is singular): symmetric problems, cheaper and
    steadier than the general eigenvalues of S1 S2, but two 2048² factorisations per resample."""
    f1, f2 = torch.as_tensor(features_1).double(), torch.as_tensor(features_2).double()
    w_all = torch.as_tensor(weights, dtype=torch.float64, device=f1.device)
    n, d = f1.shape
    a1, a2 = f1 - f1.mean(0), f2 - f2.mean(0)
    norms_1, norms_2 = a1.square().sum(1), a2.square().sum(1)
    gram = a1 @ a2.T if n < d else None
    out = torch.empty(len(w_all), dtype=torch.float64)
    for r, w in enumerate(w_all):
        total = w.sum()
        if total < 2:
            raise ValueError("FID needs at least 2 crops on each side")
        delta_1, delta_2 = w @ a1 / total, w @ a2 / total
        trace_1 = (w @ norms_1 - total * delta_1.square().sum()) / (total - 1)
        trace_2 = (w @ norms_2 - total * delta_2.square().sum()) / (total - 1)
        mean_term = (f1.mean(0) + delta_1 - f2.mean(0) - delta_2).square().sum()
        keep = w > 0
        if gram is not None:
            root = w[keep].sqrt()
            m = (gram[keep][:, keep] - (a1[keep] @ delta_2)[:, None] - (a2[keep] @ delta_1)[None, :]
                 + delta_1 @ delta_2) * root[:, None] * root[None, :]
            tr_covmean = torch.linalg.eigvalsh(m @ m.T).clamp(min=0).sqrt().sum() / (total - 1)
        else:
            b1, b2 = a1[keep] * w[keep].sqrt()[:, None], a2[keep] * w[keep].sqrt()[:, None]
            s1 = (b1.T @ b1 - total * torch.outer(delta_1, delta_1)) / (total - 1)
            s2 = (b2.T @ b2 - total * torch.outer(delta_2, delta_2)) / (total - 1)
            r1, info = torch.linalg.cholesky_ex(s1)
            if info.item() != 0:  # singular S1 (e.g. collinear features): a square root that needs no inverse
                values, vectors = torch.linalg.eigh(s1)
                r1 = vectors * values.clamp(min=0).sqrt()
            tr_covmean = torch.linalg.eigvalsh(r1.T @ s2 @ r1).clamp(min=0).sqrt().sum()
        out[r] = mean_term + trace_1 + trace_2 - 2 * tr_covmean
    return out


def kid_subset_size(n: int, cap: int = KID_SUBSET_CAP, largest_group: int = 1) -> int:
    """min(cap, n // 2): subsets of the whole set all hold the same points, so the spread over subsets would be
    ~0 and say nothing; half the set gives subsets that really differ, and leaves room for a disjoint fake side.
    With groups (the crops of one image), the real side may end inside a group that the fake side must then skip:
    min(cap, (n - largest_group + 1) // 2); and each side must span two groups (same-image pairs are left out of the
    within-side terms), so 0 (too few) unless that exceeds the largest group."""
    size = min(cap, (n - largest_group + 1) // 2)
    return size if largest_group == 1 or size > largest_group else 0


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """torch-fidelity's (and the KID paper's) cubic kernel: (x·y / d + 1)^3."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _disjoint_split(rng: np.random.RandomState, n: int, size: int, groups: np.ndarray | None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of a real subset and a fake subset, `size` each, sharing no image (no group)."""
    order = rng.permutation(n)
    if groups is None:
        return order[:size], order[size : 2 * size]
    _, group_index = np.unique(groups, return_inverse=True)
    rank = rng.permutation(group_index.max() + 1)[group_index]  # a random order of the groups
    order = order[np.argsort(rank[order], kind="stable")]  # rows grouped, groups in that random order
    real = order[:size]
    rest = order[size:]
    rest = rest[rank[rest] != rank[real[-1]]]  # the rest of the last real group goes to neither side
    return real, rest[:size]


def _unbiased_mmd2(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray, groups_x: np.ndarray | None = None,
                   groups_y: np.ndarray | None = None) -> float:
    """Mean k over pairs within X + within Y - 2 x mean over cross pairs, each over pairs of different rows, and with
    groups of different groups (two crops of one image are not independent draws)."""
    if groups_x is None:
        m = len(k_xx)
        within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    else:
        within = (k_xx[groups_x[:, None] != groups_x[None, :]].mean()
                  + k_yy[groups_y[:, None] != groups_y[None, :]].mean())
    return float(within - 2 * k_xy.mean())


def kernel_inception_distance(real: torch.Tensor, fake: torch.Tensor, *, paired: bool = True,
                              groups: np.ndarray | None = None, subsets: int = KID_SUBSETS,
                              subset_size: int = KID_SUBSET_CAP, seed: int = KID_SEED) -> tuple[float, float]:
    """Unbiased MMD² with the cubic polynomial kernel over `subsets` random subsets of min(subset_size, n/2)
    features; returns (mean, std over subsets).

    paired=True (eval's case: row i of `real` and of `fake` = the same image): each subset's real side and fake side
    come from disjoint rows, and with `groups` (an image id per row: its crops) from disjoint images, so no image
    meets its own output in the cross term; with groups, pairs of crops of one image are also left out of the
    within-side terms. Each subset value is then an unbiased estimate of MMD² between the two distributions, and
    their mean estimates the all-pairs U-statistic over pairs of different images (kid_resampled).
    paired=False: torch-fidelity's KID exactly (independent draws from each side; sets may differ in size).
    """
    r = torch.as_tensor(real).double().cpu().numpy()
    f = torch.as_tensor(fake).double().cpu().numpy()
    if not paired:
        from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

        size = kid_subset_size(min(len(r), len(f)), subset_size)
        if size < 2:
            raise ValueError("KID needs at least 4 features on each side (subsets of half the set, at least 2)")
        out = kid_features_to_metric(torch.from_numpy(r), torch.from_numpy(f), kid_subsets=subsets,
                                     kid_subset_size=size, kid_kernel="poly", kid_kernel_poly_degree=3,
                                     kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1, rng_seed=seed,
                                     verbose=False)
        return out[KEY_METRIC_KID_MEAN], out[KEY_METRIC_KID_STD]
    if r.shape != f.shape:
        raise ValueError(f"paired KID needs one fake row per real row, got {r.shape} and {f.shape}")
    n = len(r)
    largest = 1 if groups is None else int(np.unique(groups, return_counts=True)[1].max())
    size = kid_subset_size(n, subset_size, largest)
    if size < 2:
        raise ValueError("KID needs at least 4 features on each side (subsets of half the set, at least 2; with "
                         "groups, more rows than the largest group)")
    full = n <= FULL_KERNEL_MAX
    if full:  # every kernel value once; the subsets then only gather
        k_rr, k_ff, k_rf = _poly_kernel(r, r), _poly_kernel(f, f), _poly_kernel(r, f)
    rng = np.random.RandomState(seed)
    values = np.zeros(subsets)
    for i in range(subsets):
        x, y = _disjoint_split(rng, n, size, groups)
        gx, gy = (None, None) if groups is None else (groups[x], groups[y])
        if full:
            values[i] = _unbiased_mmd2(k_rr[np.ix_(x, x)], k_ff[np.ix_(y, y)], k_rf[np.ix_(x, y)], gx, gy)
        else:
            values[i] = _unbiased_mmd2(_poly_kernel(r[x], r[x]), _poly_kernel(f[y], f[y]), _poly_kernel(r[x], f[y]),
                                       gx, gy)
    return float(values.mean()), float(values.std())


def inception_discriminative_scores(real: torch.Tensor, fake: torch.Tensor, weights: np.ndarray | None = None
                                    ) -> tuple[float, float, bool]:
    """CoModGAN's (P-IDS, U-IDS, converged) from paired real/fake features (row i of each = image i).

    A linear SVM (scikit-learn's LinearSVC, primal solver, as co-mod-gan's metrics/inception_discriminative_score
    .py) is fit to tell real (1) from fake (0) on all features. U-IDS = its error rate on them; P-IDS = the share
    of pairs where the fake image scores as more real than its own ground truth. Both are 0 for outputs the SVM
    tells apart perfectly and approach 0.5 for outputs it cannot. `weights` (a bootstrap resample's counts) weight
    each pair as if it were repeated that often (for the squared hinge loss, sample weights = repetition).
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    if len(real) != len(fake) or len(real) < 2:
        raise ValueError("P-IDS/U-IDS need at least 2 paired real and fake images")
    real_np, fake_np = torch.as_tensor(real).double().numpy(), torch.as_tensor(fake).double().numpy()
    w = np.ones(len(real_np)) if weights is None else np.asarray(weights, dtype=np.float64)
    keep = w > 0
    real_np, fake_np, w = real_np[keep], fake_np[keep], w[keep]
    inputs = np.concatenate([real_np, fake_np])
    targets = np.array([1] * len(real_np) + [0] * len(fake_np))
    svm = LinearSVC(dual=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        svm.fit(inputs, targets, sample_weight=None if weights is None else np.concatenate([w, w]))
    converged = not any(issubclass(warning.category, ConvergenceWarning) for warning in caught)
    correct = svm.predict(inputs) == targets
    uids = 1.0 - float(np.average(correct, weights=np.concatenate([w, w])))
    pids = float(np.average(svm.decision_function(fake_np) > svm.decision_function(real_np), weights=w))
    return pids, uids, converged


# ---------------------------------------------------------------------------------------------- intervals


def bootstrap_counts(n: int, n_resamples: int, seed: int = BOOTSTRAP_SEED, chunk: int = 250) -> np.ndarray:
    """n_resamples × n: how often each image appears in each resample (drawn as report.bootstrap draws indices)."""
    rng = np.random.default_rng(seed)
    counts = []
    for start in range(0, n_resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_resamples - start), n))
        block = np.zeros(idx.shape, dtype=np.int64)
        np.add.at(block, (np.arange(len(idx))[:, None], idx), 1)
        counts.append(block)
    return np.concatenate(counts) if counts else np.zeros((0, n), dtype=np.int64)


def kid_resampled(real: np.ndarray, fake: np.ndarray, weights: np.ndarray, groups: np.ndarray | None = None,
                  block: int = 1024) -> np.ndarray:
    """The paired KID's all-pairs U-statistic over distinct images, on every resample (rows of `weights`).

    With h_ij = k(r_i,r_j) + k(f_i,f_j) - k(r_i,f_j) - k(r_j,f_i) for rows of different images (0 otherwise), a
    resample's value is Σ w_i w_j h_ij / Σ_{g(i)≠g(j)} w_i w_j: the mean of h over pairs of distinct images in the
    resample, which is what the subset average of kernel_inception_distance estimates. Computed in row blocks
    (memory block × n) against all resamples at once: one O(n² d) pass whatever the number of resamples."""
    r, f = np.asarray(real, dtype=np.float64), np.asarray(fake, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    n = len(r)
    g = np.arange(n) if groups is None else np.unique(groups, return_inverse=True)[1]
    numerator = np.zeros(len(w))
    for start in range(0, n, block):
        rows = slice(start, min(start + block, n))
        h = (_poly_kernel(r[rows], r) + _poly_kernel(f[rows], f) - _poly_kernel(r[rows], f)
             - _poly_kernel(f[rows], r))
        h[g[rows][:, None] == g[None, :]] = 0.0
        numerator += np.einsum("rb,rb->r", w[:, rows], w @ h.T)
    group_totals = np.zeros((len(w), g.max() + 1))
    np.add.at(group_totals.T, g, w.T)
    denominator = w.sum(1) ** 2 - (group_totals**2).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def _ci95(values: Sequence[float]) -> tuple[float, float] | None:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return None
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def resampled_set_metrics(real_whole: np.ndarray, fake_whole: np.ndarray, real_crops: np.ndarray,
                          fake_crops: np.ndarray, crop_image: np.ndarray, *, estimates: dict | None = None,
                          metrics: Iterable[str] = CI_METRICS, seed: int = BOOTSTRAP_SEED,
                          n_resamples: int = N_RESAMPLES, n_resamples_large: int = N_RESAMPLES_LARGE,
                          n_resamples_ids: int = N_RESAMPLES_IDS, ids_max_images: int = IDS_CI_MAX_IMAGES
                          ) -> dict[str, np.ndarray]:
    """Each of fid, kid (hole crops), fid_full, kid_full, pids, uids on every bootstrap resample of the images: the
    raw material of set_metric_intervals (one seed) and seed_averaged_intervals (several).

    Rows of real_whole / fake_whole are images (paired); rows of real_crops / fake_crops are crops (paired) and
    crop_image[k] is the image row crop k comes from, so an image's crops resample together. Every resample draws
    n images with replacement (the same draws for all six metrics, as report.bootstrap draws them) and recomputes the
    statistic from the cached features, each image counted as often as drawn. The draws depend only on n and `seed`,
    so two seeds' outputs on the same images get the same draws, row for row:
    - FID exactly (resampled_frechet_distances), n_resamples resamples, or n_resamples_large when a side has more
      than LARGE_ROWS rows. FID's small-sample bias grows when a resample holds fewer distinct images (~63%), so on
      small sets the interval can sit above the estimate: one more reason to compare by KID there.
    - KID as the all-pairs U-statistic over distinct images that the subset average estimates (kid_resampled),
      n_resamples resamples, shifted by (estimates[kid] - the all-pairs value on all images) so it brackets the
      reported subset average; the average's own Monte-Carlo error (~kid_std / √subsets) is not in the interval.
    - P-IDS/U-IDS by refitting the SVM with the counts as sample weights on the first n_resamples_ids resamples
      (rough bounds), and only up to ids_max_images images; an empty array (no interval) above.
    Metrics not in `metrics` are left out. Measured on 2 busy CPU cores (README): 9 images / 18 crops ~3 s in all;
    200 images / 400 crops: FID ~40 s, KID < 1 s, P-IDS/U-IDS ~60 s. A CUDA device, when present, runs the FID
    resamples.
    """
    wanted = set(metrics)
    estimates = estimates or {}
    n = len(real_whole)
    counts = bootstrap_counts(n, max(n_resamples, n_resamples_large, n_resamples_ids), seed)
    crop_image = np.asarray(crop_image, dtype=np.int64)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out: dict[str, np.ndarray] = {}
    for prefix, real, fake, weights, groups in (("", real_crops, fake_crops, counts[:, crop_image], crop_image),
                                                 ("_full", real_whole, fake_whole, counts, None)):
        if f"fid{prefix}" in wanted:
            r = torch.as_tensor(real, dtype=torch.float64).to(device)
            f = torch.as_tensor(fake, dtype=torch.float64).to(device)
            count = n_resamples if len(r) <= LARGE_ROWS else n_resamples_large
            out[f"fid{prefix}"] = resampled_frechet_distances(f, r, torch.from_numpy(weights[:count])
                                                              .to(device)).numpy()
        if f"kid{prefix}" in wanted:
            values = kid_resampled(real, fake, np.concatenate([np.ones((1, len(real))), weights[:n_resamples]]),
                                   groups)
            shift = estimates[f"kid{prefix}"] - values[0] if estimates.get(f"kid{prefix}") is not None else 0.0
            out[f"kid{prefix}"] = values[1:] + shift
    if {"pids", "uids"} & wanted:
        scores = ([inception_discriminative_scores(torch.as_tensor(real_whole), torch.as_tensor(fake_whole), w)[:2]
                   for w in counts[:n_resamples_ids]] if n <= ids_max_images else [])
        out["pids"] = np.array([s[0] for s in scores], dtype=np.float64)
        out["uids"] = np.array([s[1] for s in scores], dtype=np.float64)
    return {k: v for k, v in out.items() if k in wanted}


def set_metric_intervals(real_whole: np.ndarray, fake_whole: np.ndarray, real_crops: np.ndarray,
                         fake_crops: np.ndarray, crop_image: np.ndarray, **options
                         ) -> dict[str, tuple[float, float] | None]:
    """95% percentile-bootstrap intervals (low, high) of fid, kid, fid_full, kid_full, pids, uids for one set of
    outputs (one seed): the 2.5th..97.5th percentiles of resampled_set_metrics (same arguments); None where fewer
    than two resamples gave a finite value."""
    return {name: _ci95(values)
            for name, values in resampled_set_metrics(real_whole, fake_whole, real_crops, fake_crops, crop_image,
                                                      **options).items()}


def seed_averaged_intervals(per_seed: Sequence[Mapping[str, np.ndarray]]) -> dict[str, tuple[float, float] | None]:
    """95% intervals of the seed-averaged set metrics (the summary's value is the mean of the per-seed values).

    `per_seed` holds one seed's resampled_set_metrics each, all on the same images, so resample r drew the same
    images in every seed; resample r's seed-averaged statistic is the mean of the seeds' values on it, and the
    interval is the percentiles of that. Images are the resampled unit and each carries all its seeds' outputs,
    and a seed is drawn per (seed, image) independently of the other images: so the spread reflects both which
    images were drawn and how the outputs vary from seed to seed. With one seed this is set_metric_intervals
    exactly. A metric missing from any seed has no interval (None)."""
    if not per_seed:
        return {}
    out: dict[str, tuple[float, float] | None] = {}
    for name in per_seed[0]:
        if not all(name in seed for seed in per_seed):
            out[name] = None
            continue
        lengths = {len(seed[name]) for seed in per_seed}
        if len(lengths) != 1:  # different draws: averaging them row by row would pair unrelated resamples
            raise ValueError(f"{name}: the seeds' resamples differ in number ({sorted(lengths)}); they must come "
                             "from the same images and bootstrap settings")
        out[name] = _ci95(np.mean([np.asarray(seed[name], dtype=np.float64) for seed in per_seed], axis=0))
    return out


# ---------------------------------------------------------------------------------------------- cache


def dataset_fingerprint(samples: Iterable) -> str:
    """The dataset's content: every image's id and input key (image bytes + holes, see Sample.input_key)."""
    digest = hashlib.sha256()
    for s in samples:
        digest.update(f"{s.image_id}\0{s.input_key}\0".encode())
    return digest.hexdigest()


def feature_cache_key(weights_sha256: str, fingerprint: str) -> str:
    spec = {"protocol": PROTOCOL, "extractor": EXTRACTOR, "weights_sha256": weights_sha256, "resize": RESIZE_RULE,
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
                                  metadata={"protocol": PROTOCOL, "extractor": EXTRACTOR, "resize": RESIZE_RULE,
                                            "crop": CROP_RULE, "whole": WHOLE_RULE}))
