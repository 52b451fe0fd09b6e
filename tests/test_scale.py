"""Real processes: two-process sharding under `accelerate launch`, and SIGKILL at several points + resume."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diffinpaint.models import TRAINED, trainable_class
from test_contract import tiny_flags
from test_runner import manifest, outputs

TESTS = Path(__file__).parent
CLI_WITH_TEST_MODELS = [sys.executable, str(TESTS / "slow_models.py")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_launch(num_processes: int, *args) -> subprocess.CompletedProcess:
    """Two CPU processes need the torchrun path: with accelerate 1.15, `--cpu --num_processes 2` starts one
    process (multi-CPU wants MPI), while `--multi_gpu` with no visible GPU and ACCELERATE_USE_CPU=true starts
    real gloo ranks."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
               str(num_processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), *map(str, args)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_two_processes_share_the_work_and_match_one_process(demo_medium, tmp_path):
    one = tmp_path / "one"
    two = tmp_path / "two"
    single = subprocess.run([*CLI_WITH_TEST_MODELS, "run", "--model", "seeded_noise", "--data", demo_medium,
                             "--out", one, "--no-progress"], capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    result = accelerate_launch(2, TESTS / "slow_models.py", "run", "--model", "seeded_noise", "--data",
                               demo_medium, "--out", two, "--no-progress", "--batch-size", 2)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = manifest(two)
    processes = {r["process"] for r in rows}
    assert processes == {0, 1}, "both processes must have made images"
    assert len(rows) == len({r["image"] for r in rows}) == len(outputs(one))
    assert outputs(two) == outputs(one)
    assert not (two / "manifest.parts").exists()


def test_two_process_eval_gathers_every_image_once(demo_medium, tmp_path):
    from diffinpaint.cli import main

    assert main(["eval", "--models", "telea,ns", "--data", str(demo_medium), "--out", str(tmp_path / "one"),
                 "--no-fid", "--no-text", "--no-report", "--no-progress"]) == 0
    result = accelerate_launch(2, "-m", "diffinpaint", "eval", "--models", "telea,ns", "--data", demo_medium,
                               "--out", tmp_path / "two", "--no-fid", "--no-text", "--no-report", "--no-progress")
    assert result.returncode == 0, result.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert [r["n_images"] for r in two] == [r["n_images"] for r in one]
    for a, b in zip(one, two):
        assert a["rmse"] == pytest.approx(b["rmse"], abs=1e-12) and a["ssim"] == pytest.approx(b["ssim"], abs=1e-9)
    per_image = (tmp_path / "two" / "per_image.csv").read_text().splitlines()
    assert per_image == (tmp_path / "one" / "per_image.csv").read_text().splitlines()
    assert {r["process"] for r in manifest(tmp_path / "two" / "runs" / "telea")} == {0, 1}


def _lines(run_dir: Path) -> int:
    parts = run_dir / "manifest.parts"
    return sum(len(p.read_text().splitlines()) for p in parts.glob("*.jsonl")) if parts.is_dir() else 0


def test_sigkill_at_several_points_then_resume_is_byte_identical(demo_medium, tmp_path):
    command = [*CLI_WITH_TEST_MODELS, "run", "--model", "slow_telea", "--data", str(demo_medium), "--no-progress",
               "--batch-size", "2"]
    reference = tmp_path / "reference"
    done = subprocess.run([*command, "--out", str(reference)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "killed"
    kills = 0
    # kill before the first image, after 3 and after 9 images, and once at an arbitrary moment
    for target_lines, delay in [(0, 0.0), (3, 0.0), (9, 0.0), (None, 0.07)]:
        process = subprocess.Popen([*command, "--out", str(out)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if target_lines is None and _lines(out) > 10:
                time.sleep(delay)
                break
            if target_lines is not None and (out / "config.toml").exists() and _lines(out) >= target_lines:
                break
            time.sleep(0.005)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
    assert kills >= 3, "the run finished before it could be killed; the test model is too fast"
    assert not (out / "manifest.jsonl").exists() or len(manifest(out)) < len(outputs(reference))
    final = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    assert outputs(out) == outputs(reference)
    rows = manifest(out)
    assert sorted(r["image"] for r in rows) == sorted({r["image"] for r in rows})
    assert len(rows) == len(outputs(reference))
    leftovers = [p for p in out.rglob("*") if ".tmp-" in p.name or p.name == "manifest.parts"]
    assert leftovers == []


def test_pix2pix_trains_on_two_processes(demo_medium, tmp_path):
    """`accelerate launch -m diffinpaint train pix2pix` with two real (gloo) processes: a checkpoint that
    records both processes, a finite loss log, and a model that `run` can use."""
    out = tmp_path / "p2p"
    result = accelerate_launch(2, "-m", "diffinpaint", "train", "pix2pix", "--data", demo_medium, "--out", out,
                               "--size", 32, "--ngf", 8, "--ndf", 8, "--steps", 4, "--batch-size", 2,
                               "--device", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "processes: 2" in result.stdout + result.stderr
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2, 3, 4]
    assert all(all(v == v and abs(v) < 1e6 for k, v in row.items() if k != "step") for row in log)
    assert (out / "checkpoints" / "step_000004" / "generator.safetensors").is_file()
    from diffinpaint.cli import main

    assert main(["run", "--model", "pix2pix", "--checkpoint", str(out), "--data", str(demo_medium),
                 "--out", str(tmp_path / "run"), "--no-progress"]) == 0


@pytest.mark.parametrize("name", list(TRAINED))
def test_every_trained_model_keeps_its_replicas_identical_on_two_processes(name, demo_medium, tmp_path):
    """Every trained model under `accelerate launch` with two real (gloo) processes, its tiny configuration: before
    each checkpoint the trainer checks that both processes hold bit-identical weights (a gradient DDP did not
    average, e.g. a penalty taken through an unwrapped network, would leave them apart: the trainer then raises).
    Gradient penalties through DDP included (TransGAN's WGAN-GP, LaMa's R1)."""
    out = tmp_path / name
    result = accelerate_launch(2, "-m", "diffinpaint", "train", name, "--data", demo_medium, "--out", out,
                               *tiny_flags(trainable_class(name)), "--steps", 2, "--checkpoint-every", 1,
                               "--sample-every", 2, "--device", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "processes: 2" in result.stdout + result.stderr
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2]
    assert (out / "checkpoints" / "step_000002").is_dir()


def test_replica_check_names_the_network_that_drifted():
    import torch

    from diffinpaint.training.trainer import diverged_networks, parameter_checksums

    torch.manual_seed(0)
    nets = {"generator": torch.nn.Linear(3, 2), "discriminator": torch.nn.Linear(2, 1)}
    same = parameter_checksums(nets)
    with torch.no_grad():
        nets["discriminator"].weight[0, 0] += 1e-6  # one weight, one ulp-scale step apart
    drifted = parameter_checksums(nets)
    assert diverged_networks(list(nets), torch.stack([same, same])) == []
    assert diverged_networks(list(nets), torch.stack([same, drifted])) == ["discriminator"]
    nets["generator"].register_buffer("running", torch.ones(1))  # buffers are per process by design: not compared
    assert torch.equal(parameter_checksums(nets), drifted)
