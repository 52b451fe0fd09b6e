"""Scoring a model on the images it was trained on: found by content, refused unless the user asks for it.

Every training folder holds training_set.json (training/data.py `training_set_record`): one fingerprint per
training image, the SHA-256 of its decoded RGB pixels (`util.files.pixel_fingerprint`). eval fingerprints the
images it scores the same way, so a photo renamed, moved to another label or re-saved as PNG is still found.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..util.errors import UserError
from ..util.files import pixel_fingerprint


@dataclass
class TrainingSetCheck:
    training_set: str  # "checked", "no record" (an older checkpoint) or "not trained" (nothing to check)
    n_train_overlap: int | None = None  # evaluated images whose pixels are in the training set
    in_sample: bool | None = None  # None when it could not be checked

    def summary_fields(self) -> dict:
        return {"in_sample": self.in_sample, "n_train_overlap": self.n_train_overlap,
                "training_set": self.training_set}


def read_training_fingerprints(path: Path) -> set[str]:
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
        fingerprints = {str(entry["fingerprint"]) for entry in record["images"]}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path} is not a training-set record ({type(err).__name__}); restore it from the training "
                        "folder or retrain") from None
    return fingerprints


def dataset_fingerprints(samples, state) -> dict[str, str]:
    """image id -> pixel fingerprint, each process decoding its shard (gathered: every process gets all)."""
    from accelerate.utils import gather_object

    with state.split_between_processes(list(samples)) as shard:
        local = [(s.image_id, pixel_fingerprint(s.load_image())) for s in shard]
    pairs = gather_object(local) if state.num_processes > 1 else local
    return dict(pairs)


def check_training_set(name: str, model, fingerprints, *, allow_in_sample: bool, log) -> TrainingSetCheck:
    """`fingerprints()` gives the evaluated images' fingerprints (computed on first use, then reused)."""
    if not hasattr(model, "training_set_path"):
        return TrainingSetCheck("not trained")
    path = model.training_set_path
    if path is None:
        log(f"warning: {name}: its training folder has no training_set.json (an older checkpoint), so eval cannot "
            "tell whether it was trained on these images")
        return TrainingSetCheck("no record")
    trained_on = read_training_fingerprints(path)
    evaluated = fingerprints()
    overlap = sum(1 for fp in evaluated.values() if fp in trained_on)
    if overlap and not allow_in_sample:
        raise UserError(f"{name} was trained on {overlap} of the {len(evaluated)} images to evaluate ({path}); "
                        "hold out a test set with `diffinpaint data split DATA --test-fraction 0.1 --out-train "
                        "TRAIN --out-test TEST`, train on TRAIN and evaluate on TEST, or pass --allow-in-sample "
                        "to score it anyway, marked in-sample")
    if overlap:
        log(f"warning: {name} was trained on {overlap} of the {len(evaluated)} evaluated images; its rows are "
            "marked in_sample (--allow-in-sample)")
    return TrainingSetCheck("checked", overlap, overlap > 0)
