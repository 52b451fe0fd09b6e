"""eval/bench_train.py compares the trainer with a plain loop; the comparison only means something when both ways
train on the same examples from the same weights. LaMa is the model with the most of its own data path (its hole
generator and its image augmentation), so its two ways must agree on the first step's losses exactly."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("paired", ["yes", "no"])
def test_plain_loop_and_trainer_see_the_same_first_step(tmp_path, paired):
    out = tmp_path / "bench"
    done = subprocess.run([sys.executable, str(ROOT / "eval" / "bench_train.py"), "--quick", "--models", "lama",
                           "--steps", "2", "--repeats", "1", "--paired", paired, "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.with_suffix(".json").read_text())
    (row,) = report["results"]
    assert row["model"] == "lama" and row["options"].get("augment", "distortions") == "distortions"
    assert row["first_step_loss_max_abs_diff"] == 0.0
    assert not any("DIFFER" in note for note in report["notes"])
    assert row["measured"] == ("paired" if paired == "yes" else "separate processes")


def test_paired_run_leaves_both_ways_streams_as_they_are_alone(tmp_path):
    """A paired run interleaves a plain step before each trainer step in one process; each way must still compute
    exactly what it computes alone. pix2pix draws dropout noise from torch's generator every step, so a plain step
    that moved the trainer's RNG stream (or the other way round) changes the third step's losses."""
    sys.path.insert(0, str(ROOT / "eval"))
    import bench_train
    from diffinpaint.data.demo import make_demo_dataset

    data = make_demo_dataset(tmp_path / "data", size=64, crops_per_photo=1, holes=2, hole_size=20, seed=0)
    options, _ = bench_train.model_plan("pix2pix", True, lambda network: None)
    specs = [{"model": "pix2pix", "impl": impl, "options": options, "data": str(data), "steps": 3,
              "out": str(tmp_path / impl), "batch_size": 2, "precision": "fp32", "device": "cpu", "threads": 1}
             for impl in ("toolkit", "plain", "paired")]
    done = subprocess.run([sys.executable, str(ROOT / "eval" / "bench_train.py"), "--many", json.dumps(specs)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    toolkit, plain, paired = (answer["result"] for answer in json.loads(done.stdout.strip().splitlines()[-1]))
    assert paired["toolkit"]["last_step_losses"] == toolkit["last_step_losses"]
    assert paired["plain"]["last_step_losses"] == plain["last_step_losses"]
    assert paired["plain"]["first_step_losses"] == paired["toolkit"]["first_step_losses"]
    # the two ways' streams differ after step 1 (the trainer re-seeds per step, the plain loop does not): the
    # comparison above would be empty if they did not
    assert paired["plain"]["last_step_losses"] != paired["toolkit"]["last_step_losses"]
    # two timed steps each; the toolkit's time is what is left of the window once the plain steps are taken off
    for way in ("plain", "toolkit"):
        assert len(paired[way]["per_step"]) == 2 and all(t > 0 for t in paired[way]["per_step_cpu"])
        assert paired[way]["cpu_seconds"] == sum(paired[way]["per_step_cpu"])
