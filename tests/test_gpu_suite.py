"""eval/gpu_suite.sh, the one command for a borrowed GPU, run here on the CPU at tiny sizes (--smoke): every part runs
(the setup's checks, the SD FLOP count, a tiny SD pipeline with and without --compile, the training benchmark in
its GPU mode (all runs of a model in one process, an out-of-memory batch halved), the inference benchmark in its
GPU mode, the metrics benchmark) and the results come back bundled, so a GPU run never fails on a typo."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "eval"))

import gpu_suite  # noqa: E402  (eval/gpu_suite.py)

PARTS = ["setup", "sd_flops", "sd", "sd_compile", "train", "sample", "metrics"]


def test_smoke_runs_every_part_and_bundles_the_results(tmp_path):
    out, back = tmp_path / "results", tmp_path / "back"
    back.mkdir()
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(back)}
    done = subprocess.run(["bash", str(ROOT / "eval" / "gpu_suite.sh"), "--smoke", "--device", "cpu", "--out-dir",
                           str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = json.loads((out / "gpu_suite_cpu.json").read_text())
    assert [p["name"] for p in summary["parts"]] == PARTS
    assert all(p["status"] == "ok" for p in summary["parts"]), [(p["name"], p["output_tail"]) for p in
                                                                 summary["parts"] if p["status"] != "ok"]
    assert sorted(r["compile"] for r in summary["sd"]) == [False, True]
    assert all(r["images_per_second"] > 0 for r in summary["sd"])
    assert summary["sd_flops"]["flops_per_image"] > 0
    # the training benchmark's GPU path: batch 2 "ran out of memory" (simulated) and was halved; bf16 and fp32
    train = json.loads((out / "train_cpu.json").read_text())
    assert sorted((r["batch_size"], r["precision"]) for r in train["results"]) == [(1, "bf16"), (1, "fp32")]
    assert any("ran out of GPU memory" in n for n in train["notes"])
    sample = json.loads((out / "sample_cpu.json").read_text())
    measured = {(r["model"], r.get("batch_size")) for r in sample["results"] if "error" not in r}
    assert {("pix2pix", 1), ("pix2pix", 2), ("dcgan", 1)} <= measured
    assert any(r.get("loop") for r in sample["results"])  # the latent-search fit (an iterative model)
    metrics = json.loads((out / "metrics_cpu.json").read_text())
    assert {"rmse + ssim", "lpips + lpips_full"} <= set(metrics["rows"])
    text = (out / "gpu_suite_cpu.md").read_text()
    assert "## Stable Diffusion" in text and "## Training step" in text and "## Inference" in text
    with tarfile.open(back / "gpu_results.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"gpu_suite_cpu.json", "gpu_suite_cpu.md", "sd_cpu.json", "sd_flops_cpu.json", "train_cpu.json",
            "sample_cpu.json", "metrics_cpu.json"} <= names
    assert "gpu_suite_seconds=" in (back / "gpu_suite.log").read_text()


def test_sd15_flops_per_image_counted_from_the_architecture(tmp_path):
    """torch.utils.flop_counter on the shipped configs (meta tensors): ~84 TFLOP per 512² image at 50 guided steps,
    1.61 TFLOP per UNet call on the guided batch of 2."""
    pytest.importorskip("diffusers")
    result = gpu_suite.count_sd_flops(tmp_path / "flops.json")
    assert 83e12 < result["flops_per_image"] < 85e12
    assert 1.55e12 < result["unet_call_batch2_flops"] < 1.65e12
    assert result["unet_parameters"] == 859_535_364 or result["unet_parameters"] > 8e8


def test_peak_table_by_device_name():
    assert gpu_suite.peak_bf16_tflops("NVIDIA H200") == 989.0
    assert gpu_suite.peak_bf16_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert gpu_suite.peak_bf16_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu_suite.peak_bf16_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert gpu_suite.peak_bf16_tflops("Some Other GPU") is None


def test_the_wheels_script_downloads_what_the_suite_installs():
    script = (ROOT / "eval" / "gpu_wheels.sh").read_text()
    pinned = {name.lower() for name in re.findall(r"([A-Za-z][A-Za-z0-9_.-]*)==[0-9]", script)}
    assert pinned == {name.lower() for name in gpu_suite.NEEDED.values()}
    for script_name in ("gpu_wheels.sh", "gpu_suite.sh"):
        assert subprocess.run(["bash", "-n", str(ROOT / "eval" / script_name)]).returncode == 0
    assert "/wheels/" in (ROOT / ".gitignore").read_text().splitlines()
