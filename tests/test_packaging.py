"""The wheel a user installs holds every registered model, the prompt sets and the shipped configs: packages are
found, not listed (setup.py), so a new model's folder cannot be silently left out."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from diffinpaint.models import MODELS, TRAINED

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_ships_every_registered_model(tmp_path):
    source = tmp_path / "src"
    for name in ("diffinpaint", "prompts"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, source / name)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                             "--quiet", "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "dist").glob("diffinpaint-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for target in [*MODELS.values(), *TRAINED.values()]:
        module = target.split(":")[0]
        if not module.startswith("diffinpaint."):
            continue  # a model some test registered for itself
        assert module.replace(".", "/") + ".py" in names, module
    for name in TRAINED:  # the inference side of each trained model, its package and networks
        for part in ("__init__", "nets", "infer", "step"):
            assert f"diffinpaint/models/{name}/{part}.py" in names, (name, part)
    for package in {p.parent for p in (ROOT / "diffinpaint").rglob("*.py")}:  # every package folder
        relative = package.relative_to(ROOT).as_posix()
        assert f"{relative}/__init__.py" in names, relative
    assert "diffinpaint/prompts/natural.toml" in names
    assert any(n.startswith("diffinpaint/configs/sd15_inpainting/") and n.endswith(".json") for n in names)
