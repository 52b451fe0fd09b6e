"""What every benchmark shares: what it ran on (CPU model, cores, GPU, library versions, the commit measured), the
peak memory of a measuring child process, running such a child, and merging a new report into an earlier one."""
from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def machine_info() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    for dist in ("diffusers", "transformers", "accelerate", "scikit-image", "torch-fidelity", "numpy"):
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return info


def code_version() -> str:
    """The commit measured: `git rev-parse --short HEAD`, plus '+edits' when diffinpaint/ differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "diffinpaint"], cwd=ROOT, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        return (head or "unknown") + ("+edits" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def process_peak_rss_mib() -> float:
    """This process's peak resident set size (MiB): VmHWM from /proc/self/status, which belongs to the address
    space execve creates. (ru_maxrss is NOT usable in a child: Linux carries the parent's high-water mark over
    fork and execve, so a child started by a large parent reports the parent's peak.)"""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # other systems: KiB on Linux, best effort


def peak_memory(device) -> tuple[float, str]:
    """(MiB, what it is): CUDA's allocator peak on a GPU, else the process's peak RSS."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20, "cuda max_memory_allocated"
    return process_peak_rss_mib(), "process peak RSS (VmHWM)"


def run_child(script: str, args: list[str], timeout: float) -> tuple[dict | None, str]:
    """Run `python script *args` in a fresh process (its own peak memory, no state carried over); its last stdout
    line is its JSON result. Returns (result, "") or (None, why it failed)."""
    try:
        done = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s"
    if done.returncode != 0:
        tail = [line for line in done.stderr.strip().splitlines() if line.strip()][-1:] or ["?"]
        return None, f"failed: {tail[0][:300]}"
    return json.loads(done.stdout.strip().splitlines()[-1]), ""


def _row_key(row: dict) -> tuple:
    """What a row measured: model, batch size, precision, checkpoint kind (those it has)."""
    return tuple(row.get(k) for k in ("model", "batch_size", "precision", "checkpoint_kind", "kind"))


def merge_previous(report: dict, previous: dict, keys: tuple[str, str]) -> None:
    """Put the previous report's rows (under `keys`) back in, except those this run measured again (same model,
    batch size, precision / checkpoint kind); notes about models now measured are dropped."""
    now = {_row_key(r) for key in keys for r in report[key]}
    for key in keys:
        report[key] = [r for r in previous.get(key, []) if _row_key(r) not in now] + report[key]
    have = {r.get("model") for r in report["results"] if "error" not in r}
    notes = previous.get("notes", []) + [n for n in report["notes"] if n not in previous.get("notes", [])]
    report["notes"] = [n for n in notes if not (n.endswith("at run time: not measured") and n.split()[0] in have)]
    report["command"] = previous.get("command", "") + " ; then " + report["command"]
