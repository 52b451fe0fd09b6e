"""What a benchmark ran on: CPU model, cores, GPU, library versions (written next to every result)."""
from __future__ import annotations

import os
import platform


def machine_info() -> dict:
    import torch

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    for name in ("diffusers", "skimage", "torch_fidelity", "numpy"):
        try:
            info[name] = __import__(name).__version__
        except Exception:
            pass
    return info
