"""eval/bench_train.py compares the trainer with a plain loop; the comparison only means something when both ways
train on the same examples from the same weights. LaMa is the model with the most of its own data path (its hole
generator and its image augmentation), so its two ways must agree on the first step's losses exactly."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_plain_loop_and_trainer_see_the_same_first_step(tmp_path):
    out = tmp_path / "bench"
    done = subprocess.run([sys.executable, str(ROOT / "eval" / "bench_train.py"), "--quick", "--models", "lama",
                           "--steps", "2", "--repeats", "1", "--out", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.with_suffix(".json").read_text())
    (row,) = report["results"]
    assert row["model"] == "lama" and row["options"].get("augment", "distortions") == "distortions"
    assert row["first_step_loss_max_abs_diff"] == 0.0
    assert not any("DIFFER" in note for note in report["notes"])
