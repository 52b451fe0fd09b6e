"""Shared fixtures: small real-photo datasets built in tmp folders (no downloads)."""
from __future__ import annotations

import os

# Tests are offline and CPU-only on every machine, and must not depend on the host's thread count.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFINPAINT_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

from diffinpaint.data.demo import make_demo_dataset


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny networks: one thread is faster than two fighting over the cores, and results do not depend on the
    host's thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def demo_small(tmp_path_factory):
    """9 real photos (scikit-image), 64×64 crops, two 16×16 holes each, labels as subfolders."""
    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "data", size=64, crops_per_photo=1, holes=2,
                             hole_size=16, seed=0)


@pytest.fixture(scope="session")
def demo_medium(tmp_path_factory):
    """18 crops of 96×96 with two 24×24 holes: enough for runner/eval tests, still fast."""
    return make_demo_dataset(tmp_path_factory.mktemp("demo_medium") / "data", size=96, crops_per_photo=2,
                             holes=2, hole_size=24, seed=1)


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory):
    """torchvision's AlexNet with random weights, saved as LPIPS reads it (no download possible here)."""
    import torch
    import torchvision

    path = tmp_path_factory.mktemp("alex") / "alexnet-owt-7be5be79.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    return path
