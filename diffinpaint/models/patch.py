"""Patch-based classical baselines: they copy real texture from the photo into the hole, as photo editors'
content-aware fill does, where telea/ns diffuse colours smoothly inwards.

exemplar: exemplar-based inpainting after Criminisi, Pérez & Toyama, "Region Filling and Object Removal by
    Exemplar-Based Image Inpainting" (IEEE TIP 2004). Written here (numpy, the patch search as OpenCV filters):
    no maintained package installs cleanly beside this project (README "Patch-based baselines"). CPU only: the
    fill is one patch at a time, and the search over all candidates costs ~1 ms a step at 256² on one core, so a
    GPU would save little.
patchmatch: patch-based completion after Wexler, Shechtman & Irani, "Space-Time Completion of Video" (TPAMI 2007)
    with PatchMatch nearest-neighbour fields (Barnes, Shechtman, Finkelstein & Goldman, SIGGRAPH 2009), coarse to
    fine over an image pyramid with EM iterations of search and vote: the maintained PyPatchMatch library
    (`pip install pypatchmatch`, C++ with its own static OpenCV; CPU only).

Both are deterministic (no seed reaches them) and fill each image on its own, so a fill does not depend on the
batch. Like cv2.inpaint they work on uint8 pixels; the runner composites in uint8 anyway.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ..util.errors import UserError
from ..util.options import option
from .base import InpaintModel

# patch sides offered: odd (a patch has a centre pixel), up to what stays usable on a 64 px image
ODD_SIDES = tuple(range(3, 32, 2))
# Criminisi's data term divides by alpha, "a normalization factor (e.g., alpha = 255 for a typical grey-level image)"
ALPHA = 255.0


def _uint8(image: torch.Tensor) -> np.ndarray:
    return (image.detach().cpu().permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)


def _tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 255.0


# ================================================================================================= exemplar


def _axis_gradient(grey: np.ndarray, known: np.ndarray, axis: int) -> np.ndarray:
    """d grey / d axis from known pixels only: central differences where both neighbours are known, one-sided where
    one is, 0 where none is or the pixel itself is unknown (a hole has no isophote to continue)."""
    g, k = np.moveaxis(grey, axis, 0), np.moveaxis(known, axis, 0)
    prev_g, next_g = np.zeros_like(g), np.zeros_like(g)
    prev_k, next_k = np.zeros_like(k), np.zeros_like(k)
    prev_g[1:], next_g[:-1] = g[:-1], g[1:]
    prev_k[1:], next_k[:-1] = k[:-1], k[1:]
    out = np.where(k & prev_k & next_k, (next_g - prev_g) / 2.0,
                   np.where(k & next_k, next_g - g, np.where(k & prev_k, g - prev_g, 0.0)))
    return np.moveaxis(out, 0, axis)


class ExemplarFill:
    """One image filled by Criminisi et al.'s algorithm. `run()` fills it; `priorities()` and `step()` are the
    paper's steps, public so tests can check them by hand.

    Arrays are padded by r + 1 (r = patch // 2) with pixels that are neither known nor to fill: a patch centred on
    the image's edge reaches into the padding, which counts as unknown (no colour to match, zero confidence).
    """

    def __init__(self, rgb: np.ndarray, hole: np.ndarray, patch: int = 9):
        if patch % 2 == 0 or patch < 1:
            raise ValueError(f"patch side {patch}: must be odd")
        self.h, self.w = hole.shape
        self.k, self.r = patch, patch // 2
        self.pad = p = self.r + 1
        pad2 = ((p, p), (p, p))
        self.image = np.pad(rgb.astype(np.float64), (*pad2, (0, 0)))  # 0..255, the fill is written here
        self.todo = np.pad(hole.astype(bool), pad2)  # the target region Omega still unfilled
        self.known = np.pad(~hole.astype(bool), pad2)  # I - Omega: source pixels and pixels filled so far
        # Confidence C(p): "during initialization, C(p) = 0 for all p in Omega and C(p) = 1 for all p in I - Omega"
        self.confidence = self.known.astype(np.float64)
        self.grey = self.image @ np.array([0.299, 0.587, 0.114])
        # the front never leaves the hole's bounding box; with the patch around it, this is all step 1 reads
        rows, cols = np.nonzero(hole.any(axis=1))[0], np.nonzero(hole.any(axis=0))[0]
        if rows.size:
            self.area = (slice(rows[0], rows[-1] + 2 * p + 1), slice(cols[0], cols[-1] + 2 * p + 1))
        else:
            self.area = (slice(0, 0), slice(0, 0))
        self.gx = _axis_gradient(self.grey, self.known, 1)
        self.gy = _axis_gradient(self.grey, self.known, 0)
        self._prepare_search(rgb, hole.astype(bool))

    # ------------------------------------------------------------------ the exemplars: patches of the source region
    def _prepare_search(self, rgb: np.ndarray, hole: np.ndarray) -> None:
        """The candidates Psi_q are the k×k patches lying wholly in the source region Phi = I - Omega (the original
        known pixels, which never change). Their SSD to a target patch over its known pixels m is
        sum m q^2 - 2 sum m p q + sum m p^2, i.e. correlations of the image with the target's mask: four k×k
        filters per fill step (cv2.filter2D, direct summation), for every candidate at once."""
        k = self.k
        image = np.where(hole[..., None], 0, rgb).astype(np.float32)
        self.channels = [np.ascontiguousarray(image[..., c]) for c in range(3)]
        self.squares = np.ascontiguousarray((image * image).sum(axis=2))  # sum over channels of q^2
        if self.h >= k and self.w >= k:
            table = cv2.integral(hole.astype(np.uint8))  # hole pixels per k×k window, from a summed-area table
            inside = (table[k:, k:] - table[:-k, k:] - table[k:, :-k] + table[:-k, :-k]) == 0
        else:
            inside = np.zeros((0, 0), bool)
        self.sources = inside  # by top-left corner
        self.excluded = np.where(inside, 0.0, np.inf)
        self.n_sources = int(inside.sum())

    # ------------------------------------------------------------------ step 1a: the fill front
    def front(self) -> tuple[np.ndarray, np.ndarray]:
        """The fill front dOmega: unfilled pixels with a known 8-neighbour (padded coordinates, raster order)."""
        top, left = self.area[0].start, self.area[1].start
        near_known = cv2.dilate(self.known[self.area].astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        ys, xs = np.nonzero(self.todo[self.area] & near_known)
        return ys + top, xs + left

    def _windows(self, array: np.ndarray, ys: np.ndarray, xs: np.ndarray, r: int) -> np.ndarray:
        """array's (2r+1)×(2r+1) window around each (y, x), flattened: F × (2r+1)^2."""
        d = np.arange(-r, r + 1)
        yy = ys[:, None, None] + d[None, :, None]
        xx = xs[:, None, None] + d[None, None, :]
        return array[yy, xx].reshape(len(ys), -1)

    # ------------------------------------------------------------------ step 1b: priorities
    def priorities(self) -> dict[str, np.ndarray]:
        """P(p) = C(p) D(p) for every front pixel p (Criminisi et al., section III-A), with its parts:

        C(p) = sum of C(q) over the known q in Psi_p / |Psi_p|: how much reliable information surrounds p, so that
               patches with more known (and more confidently filled) pixels go first, peeling the hole from its
               corners and thin parts inwards;
        D(p) = |isophote(p) . n_p| / alpha: how strongly a linear structure (an edge) flows into the hole at p,
               so that edges are propagated before flat texture fills around them.

        The isophote is the image gradient rotated by 90 degrees, taken, as is usual for this method, at the known
        pixel of Psi_p where the gradient is strongest; n_p is the unit normal to the front (the Sobel gradient of
        the known mask at p).
        """
        ys, xs = self.front()
        r = self.r
        # C(p) (|Psi_p| = k^2, padding counting as 0), summed window by window in one order, so that equal patches
        # get bit-equal confidences wherever they are (a summed-area table would round by position and split ties)
        confidence = self._windows(self.confidence, ys, xs, r).sum(axis=1) / self.k ** 2
        # n_p: Sobel of the known mask, pointing from the hole into the known region
        known = self._windows(self.known, ys, xs, 1).astype(np.float64)
        sobel_x = np.array([-1, 0, 1, -2, 0, 2, -1, 0, 1], np.float64)
        nx, ny = known @ sobel_x, known @ sobel_x.reshape(3, 3).T.ravel()
        norm = np.hypot(nx, ny)
        nx, ny = np.divide(nx, norm, out=np.zeros_like(nx), where=norm > 0), \
            np.divide(ny, norm, out=np.zeros_like(ny), where=norm > 0)
        # isophote at p: the strongest known gradient in Psi_p (first in raster order on ties), rotated 90 degrees
        gx, gy = self._windows(self.gx, ys, xs, r), self._windows(self.gy, ys, xs, r)
        strongest = np.argmax(np.hypot(gx, gy), axis=1)
        gx, gy = gx[np.arange(len(ys)), strongest], gy[np.arange(len(ys)), strongest]
        isophote_x, isophote_y = -gy, gx
        data = np.abs(isophote_x * nx + isophote_y * ny) / ALPHA
        return {"y": ys - self.pad, "x": xs - self.pad, "confidence": confidence, "data": data,
                "priority": confidence * data}

    # ------------------------------------------------------------------ step 2: the exemplar for the chosen patch
    def best_source(self, y: int, x: int) -> tuple[int, int]:
        """Psi_q^ = argmin over candidate patches Psi_q in Phi of d(Psi_p^, Psi_q): the sum of squared differences
        over the already known pixels of Psi_p^ (y, x = its centre, image coordinates). Returns the candidate's
        centre; ties go to the first in raster order."""
        p, r, k = self.pad, self.r, self.k
        window = (slice(y + p - r, y + p + r + 1), slice(x + p - r, x + p + r + 1))
        mask = self.known[window].astype(np.float32)
        values = self.image[window].astype(np.float32) * mask[..., None]

        def correlate(plane: np.ndarray, kernel: np.ndarray) -> np.ndarray:
            # filter2D correlates; anchor (0, 0) puts a window's sum at its top-left corner. Sums of products of
            # 0..255 integers are exact in float32 while below 2^24, i.e. for patches up to 9×9 (larger ones may
            # round, the same way on every run; OpenCV also switches to a DFT for large kernels)
            out = cv2.filter2D(plane, cv2.CV_32F, kernel, anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)
            return out[: self.h - k + 1, : self.w - k + 1]

        cross = sum(correlate(self.channels[c], values[..., c]) for c in range(3))  # sum m p q, exact below 2^24
        ssd = correlate(self.squares, mask).astype(np.float64)  # sum m q^2
        ssd -= 2.0 * cross
        ssd += self.excluded  # +inf where a candidate would overlap the hole
        ssd += float((values.astype(np.float64) ** 2).sum())  # + sum m p^2: the true SSD, >= 0
        best = int(np.argmin(ssd))  # argmin returns the first minimum
        width = ssd.shape[1]
        return best // width + r, best % width + r

    # ------------------------------------------------------------------ one iteration of the paper's loop
    def step(self) -> tuple[int, int, int, int]:
        """Fill the front patch of highest priority from its best exemplar; returns (y, x) of the filled patch's
        centre and (y, x) of its exemplar's (image coordinates)."""
        found = self.priorities()
        # 1b. p^ = argmax P(p). Where P ties (everywhere 0 on flat regions, D = 0) the more confident patch goes
        # first, then raster order: the order stays onion-peel-like instead of sweeping the hole line by line
        first = np.lexsort((-found["confidence"], -found["priority"]))[0]
        y, x = int(found["y"][first]), int(found["x"][first])
        # 2. the exemplar Psi_q^ minimising the SSD over Psi_p^'s known pixels
        sy, sx = self.best_source(y, x)
        # 2. "copy image data from Psi_q^ to Psi_p^ for all p in Psi_p^ intersect Omega": only unfilled pixels
        p, r = self.pad, self.r
        target = (slice(y + p - r, y + p + r + 1), slice(x + p - r, x + p + r + 1))
        source = (slice(sy + p - r, sy + p + r + 1), slice(sx + p - r, sx + p + r + 1))
        fill = self.todo[target].copy()
        self.image[target][fill] = self.image[source][fill]
        # 3. "update C(p) for all p in Psi_p^ intersect Omega": the filled pixels inherit C(p^), so confidence
        # decays towards the hole's centre and later patches built on filled pixels weigh less
        self.confidence[target][fill] = found["confidence"][first]
        self.todo[target] &= ~fill
        self.known[target] |= fill
        # gradients change only around the pasted pixels: recompute them on the patch plus a 1-pixel margin
        # (computed on 2 more pixels each side, the outermost only as neighbours; the array's own edge is padding)
        self.grey[target] = self.image[target] @ np.array([0.299, 0.587, 0.114])
        top, left = max(y + p - r - 2, 0), max(x + p - r - 2, 0)
        bottom, right = min(y + p + r + 3, self.known.shape[0]), min(x + p + r + 3, self.known.shape[1])
        grey, known = self.grey[top:bottom, left:right], self.known[top:bottom, left:right]
        self.gx[top + 1:bottom - 1, left + 1:right - 1] = _axis_gradient(grey, known, 1)[1:-1, 1:-1]
        self.gy[top + 1:bottom - 1, left + 1:right - 1] = _axis_gradient(grey, known, 0)[1:-1, 1:-1]
        return y, x, sy, sx

    def run(self) -> np.ndarray:
        """Repeat until the hole is filled (each step fills at least p^ itself). Returns the H×W×3 uint8 image."""
        while self.todo.any():
            self.step()
        p = self.pad
        return self.image[p:p + self.h, p:p + self.w].round().clip(0, 255).astype(np.uint8)


def exemplar_inpaint(rgb: np.ndarray, hole: np.ndarray, patch: int = 9) -> np.ndarray:
    """Criminisi et al.'s fill of `hole` (H×W bool) in `rgb` (H×W×3 uint8); known pixels come back unchanged.

    An image with no known pixel is filled mid-grey (there is nothing to copy). An image too small or too holed for
    any whole k×k source patch is filled with the largest odd patch that has one (down to single pixels)."""
    hole = hole.astype(bool)
    if not hole.any():
        return rgb.copy()
    if hole.all():
        return np.full_like(rgb, 128)
    for side in range(patch, 0, -2):
        fill = ExemplarFill(rgb, hole, side)
        if fill.n_sources:
            return fill.run()
    raise AssertionError("unreachable: 1×1 patches always have a source when a pixel is known")


@dataclass
class ExemplarSettings:
    # Criminisi et al. use 9×9 patches ("the default window size is 9×9 pixels")
    exemplar_patch: int = option(9, "exemplar: side in pixels of the square patches Criminisi et al. match and copy "
                                    "(odd, 3-31)", choices=ODD_SIDES, metavar="ODD")


class ExemplarModel(InpaintModel):
    """Exemplar-based inpainting (Criminisi, Pérez & Toyama 2004); see ExemplarFill."""

    name = "exemplar"
    Settings = ExemplarSettings
    deterministic = True  # no randomness: fill order and exemplars are argmax/argmin with raster-order ties

    def __init__(self, settings: ExemplarSettings | None = None, device: str = "cpu"):
        self.settings = settings or ExemplarSettings()  # CPU only, whatever the device (see the module's notes)

    def inpaint(self, images, masks, *, seeds, labels):
        out = []
        for image, mask in zip(images, masks):
            hole = mask[0].detach().cpu().numpy() > 0.5
            out.append(_tensor(exemplar_inpaint(_uint8(image), hole, self.settings.exemplar_patch)))
        return torch.stack(out)


# ================================================================================================= patchmatch


@dataclass
class PatchMatchSettings:
    # 7×7 as in Wexler et al.'s and PyPatchMatch's examples (radius 3); the library's own default, 31×31, is slow
    patchmatch_patch: int = option(7, "patchmatch: side in pixels of the compared patches (odd, 3-31; passed to "
                                      "PyPatchMatch as the radius (side - 1) / 2)", choices=ODD_SIDES, metavar="ODD")


class PatchMatchModel(InpaintModel):
    """Wexler et al.'s completion with PatchMatch fields, by PyPatchMatch (mauwii/PyPatchMatch, continuing
    vacancy/PyPatchMatch and InvokeAI's fork). For each level of an image pyramid, coarsest first: PatchMatch
    (random init, propagation, random search) finds for every patch touching the hole its nearest known patch, in
    both directions; each pixel then takes the similarity-weighted vote of the patches covering it (Wexler's EM:
    E = search, M = vote), 1 + 2·level EM iterations per level, and the result is upsampled as the next level's
    start. The search draws from a fixed seed, so the fill is deterministic."""

    name = "patchmatch"
    Settings = PatchMatchSettings
    deterministic = True
    SEED = 0  # the library's randomised search starts from this seed for every image

    def __init__(self, settings: PatchMatchSettings | None = None, device: str = "cpu"):
        self.settings = settings or PatchMatchSettings()
        try:
            import patchmatch
        except ImportError:
            raise UserError("the patchmatch model needs the PyPatchMatch library: pip install pypatchmatch") from None
        if not patchmatch.patchmatch_available:
            raise UserError("PyPatchMatch is installed without its native library (no wheel for this platform and "
                            "its source build failed); see its README, or use --models exemplar")
        self.library = patchmatch

    def resolved_outputs(self):
        from importlib.metadata import version

        return {"pypatchmatch": version("pypatchmatch"), "patchmatch_seed": self.SEED}

    def inpaint(self, images, masks, *, seeds, labels):
        out = []
        for image, mask in zip(images, masks):
            rgb = _uint8(image)
            hole = (mask[0].detach().cpu().numpy() > 0.5).astype(np.uint8)
            if hole.all():  # nothing known to copy from (the library would leave it black)
                out.append(torch.full_like(image, 0.5))
                continue
            self.library.set_random_seed(self.SEED)  # process-wide state: set before every image
            filled = self.library.inpaint(rgb, hole, patch_size=(self.settings.patchmatch_patch - 1) // 2)
            out.append(_tensor(filled))
        return torch.stack(out)
