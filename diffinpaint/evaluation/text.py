"""text_rate: does a model write text into its holes? An OCR model reads every output and every original.

The study this toolkit grew from told Stable Diffusion "no text" because it wrote letters into the holes, and judged
the prompts by eye. This module measures it with a real OCR model: rapidocr's PP-OCR (detection, angle classifier,
recognition), whose ONNX models ship inside the rapidocr wheel, so it runs offline out of the box (onnxruntime's
CUDA provider when it is installed and eval runs on a GPU, else the CPU).

The rule (one hole at a time):
  * the OCR reads the whole image (text straddling the hole's edge is read as one line, with its context), with
    rapidocr's own defaults (detector input scaled so its shorter side is at least 736 px, DB box threshold 0.5);
  * a detection counts when its recognised string is not blank and its recognition score is >= the threshold
    (`--text-threshold`, default 0.5, rapidocr's own default `text_score`);
  * it belongs to a hole when at least INSIDE_FRACTION (half) of the pixels of its detected box (the quadrilateral
    rapidocr returns, filled at the image's own resolution) are pixels of that hole: the rectangle of a masks.csv
    row, or for a masks/*.png dataset the image's whole mask (one hole per image, as every free-form metric);
  * a hole "has text" when at least one detection belongs to it. Overlapping holes are judged independently.

text_rate = holes whose output has text / holes; text_rate_gt = the same on the originals (the reference: a model
that rebuilds a sign that was really there is not inventing text). Per image: n_text_holes / n_text_holes_gt and
the per-image rates, which pool over holes exactly like ssim (columns.py), so the summary and the report's bootstrap
interval use the same statistic.

The model is loaded once per eval. rapidocr's detector takes one image per call (its DB post-processing reads one
probability map), so images go through one at a time; recognition runs batched over the lines of an image
(rapidocr's rec_batch_num). rapidocr's log lines are silenced (its logger is set to errors only).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

DEFAULT_THRESHOLD = 0.5  # rapidocr's own text_score default
INSIDE_FRACTION = 0.5  # share of a detected box's pixels that must lie in the hole
REC_BATCH = 16  # text lines per recognition batch (rapidocr's default is 6)


class TextUnavailable(RuntimeError):
    """rapidocr or onnxruntime cannot be imported or loaded: the text columns are reported missing."""


@dataclass
class Detection:
    text: str
    score: float  # recognition score in [0, 1]
    polygon: list[list[float]]  # the detected box: 4 (x, y) corners in image pixels
    inside: float = math.nan  # share of the box's pixels inside the hole it was counted for

    def as_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _use_cuda(device: str) -> bool:
    if not str(device).startswith("cuda"):
        return False
    try:
        import onnxruntime

        return "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    except Exception:  # pragma: no cover - onnxruntime missing: the constructor says so
        return False


class TextDetector:
    """`detector(images)` -> for each uint8 H×W×3 RGB image, every detection rapidocr returns (blank strings and
    scores below the threshold already dropped)."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, device: str = "cpu"):
        if not 0.0 <= threshold <= 1.0:
            from ..util.errors import UserError

            raise UserError(f"--text-threshold {threshold}: give a recognition score between 0 and 1 (default "
                            f"{DEFAULT_THRESHOLD})")
        try:
            from rapidocr import RapidOCR
        except Exception as err:  # ImportError, or onnxruntime failing to load its library
            raise TextUnavailable(f"rapidocr could not be imported ({type(err).__name__}: {err}); "
                                  "pip install rapidocr onnxruntime") from None
        self.threshold = float(threshold)
        self.cuda = _use_cuda(device)
        index = str(device).split(":")[1] if ":" in str(device) else "0"
        params = {"Global.log_level": "error", "Global.text_score": self.threshold,
                  "Rec.rec_batch_num": REC_BATCH,
                  "EngineConfig.onnxruntime.use_cuda": self.cuda}
        if self.cuda:
            params["EngineConfig.onnxruntime.cuda_ep_cfg.device_id"] = int(index) if index.isdigit() else 0
        try:
            self.engine = RapidOCR(params=params)
            # load the three models now (rapidocr loads them lazily): a broken install fails before any run
            for name in ("_load_det_model", "_load_cls_model", "_load_rec_model"):
                load = getattr(self.engine, name, None)
                if load is not None:
                    load()
        except Exception as err:
            raise TextUnavailable(f"rapidocr's models could not be loaded ({type(err).__name__}: {err})") from None
        self._silence()

    @staticmethod
    def _silence() -> None:
        """rapidocr logs every image without text as a warning; keep only its errors."""
        import logging

        logging.getLogger("RapidOCR").setLevel(logging.ERROR)

    @property
    def provider(self) -> str:
        return "CUDAExecutionProvider" if self.cuda else "CPUExecutionProvider"

    def detect(self, image: np.ndarray) -> list[Detection]:
        result = self.engine(np.ascontiguousarray(image[..., ::-1]))  # rapidocr reads arrays as BGR
        boxes, texts, scores = (getattr(result, name, None) for name in ("boxes", "txts", "scores"))
        if boxes is None or texts is None or scores is None:
            return []
        return [Detection(str(text), float(score), np.asarray(box, dtype=np.float64).tolist())
                for box, text, score in zip(boxes, texts, scores)
                if str(text).strip() and float(score) >= self.threshold]

    def __call__(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        return [self.detect(image) for image in images]


# ---------------------------------------------------------------------------------------------- holes


def hole_masks(shape: tuple[int, int], boxes: Sequence[tuple[int, int, int, int]] | None,
               mask: np.ndarray | None) -> list[np.ndarray]:
    """One bool H×W per hole: each masks.csv rectangle, or the whole mask of a free-form image (one hole)."""
    h, w = shape
    if boxes:
        out = []
        for x, y, bw, bh in boxes:
            m = np.zeros((h, w), dtype=bool)
            m[y : y + bh, x : x + bw] = True
            out.append(m)
        return out
    return [np.asarray(mask, dtype=bool)] if mask is not None and np.asarray(mask).any() else []


def polygon_mask(polygon: Sequence[Sequence[float]], shape: tuple[int, int]) -> np.ndarray:
    """The detected box filled at the image's resolution (a degenerate box still covers the pixels it touches)."""
    import cv2

    canvas = np.zeros(shape, dtype=np.uint8)
    points = np.round(np.asarray(polygon, dtype=np.float64)).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(canvas, [points], 1)
    cv2.polylines(canvas, [points], True, 1)
    return canvas.astype(bool)


def inside_fraction(polygon: Sequence[Sequence[float]], hole: np.ndarray) -> float:
    box = polygon_mask(polygon, hole.shape)
    area = int(box.sum())
    return float((box & hole).sum() / area) if area else 0.0


def text_in_holes(detections: Sequence[Detection], holes: Sequence[np.ndarray],
                  min_inside: float = INSIDE_FRACTION) -> list[list[Detection]]:
    """For each hole, the detections at least `min_inside` of whose box lies in it (each with its `inside`)."""
    out = []
    for hole in holes:
        mine = []
        for d in detections:
            share = inside_fraction(d.polygon, hole)
            if share >= min_inside:
                mine.append(Detection(d.text, d.score, d.polygon, share))
        out.append(mine)
    return out


def hole_records(per_hole: Sequence[Sequence[Detection]]) -> list[dict]:
    """The holes that have text, as JSON-ready records: {hole: index, detections: [...]}."""
    return [{"hole": k, "detections": [d.as_dict() for d in found]} for k, found in enumerate(per_hole) if found]
