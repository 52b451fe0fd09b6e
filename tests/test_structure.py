"""The package's shape: no import cycles, inference never imports training, the report never imports torch, and
the CLI's error contract (bad input: one line, exit 2; a bug: its traceback, exit 1, finished work kept)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "diffinpaint"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the diffinpaint modules it imports anywhere (top level or inside functions)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                submodules = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules]
                # `from . import families` imports the submodule (its package is already being imported)
                candidates = submodules if submodules and len(submodules) == len(node.names) else \
                    [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module" and node.args \
                    and isinstance(node.args[0], ast.Constant):
                candidates = [node.args[0].value]
            else:
                continue
            edges |= {c for c in candidates if c in modules and c != name}
        graph[name] = edges
    return graph


def test_no_import_cycles_inside_the_package():
    graph = import_graph()
    assert len(graph) > 30
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_layers_point_one_way():
    """util <- data <- models <- training / runner <- evaluation <- cli; no exception for a model's step.py."""
    rank = {"diffinpaint.util": 0, "diffinpaint.data": 1, "diffinpaint.models": 2, "diffinpaint.training": 3,
            "diffinpaint.runner": 3, "diffinpaint.evaluation": 4, "diffinpaint.cli": 5, "diffinpaint.__main__": 6}

    def layer(module: str) -> int:
        for prefix, value in sorted(rank.items(), key=lambda kv: -len(kv[0])):
            if module == prefix or module.startswith(prefix + "."):
                return value
        return -1  # diffinpaint/__init__, configs

    for module, targets in import_graph().items():
        for target in targets:
            assert layer(target) <= layer(module), f"{module} (layer {layer(module)}) imports {target}"


def test_no_model_imports_the_trainer():
    """Models sit below the trainer: nothing under diffinpaint/models imports diffinpaint.training (lazily either)."""
    for module, targets in import_graph().items():
        if module.startswith("diffinpaint.models"):
            bad = [t for t in targets if t.startswith("diffinpaint.training")]
            assert not bad, f"{module} imports {bad}"


def _fresh_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_inference_never_imports_training(tmp_path):
    # build a trained model from a checkpoint and run it: no diffinpaint.training module may be loaded
    from diffinpaint.training.trainer import train_from_options
    from test_pix2pix import _write_dataset

    data = _write_dataset(tmp_path / "data", n=2)
    train_from_options("pix2pix", {"data": str(data), "out": str(tmp_path / "ck"), "size": 32, "ngf": 8, "ndf": 8,
                                   "steps": 1, "device": "cpu"})
    out = _fresh_python(
        "import sys, torch\n"
        "from diffinpaint.models import build_model, MODELS, TRAINED\n"
        f"m = build_model('pix2pix', {{'checkpoint': {str(tmp_path / 'ck')!r}}})\n"
        "m.inpaint(torch.rand(1, 3, 32, 32), torch.ones(1, 1, 32, 32), seeds=[0], labels=[None])\n"
        "import importlib\n"
        "for name in TRAINED: importlib.import_module(f'diffinpaint.models.{name}')\n"
        "print(sorted(k for k in sys.modules if k.startswith('diffinpaint.training') or k.endswith('.step')))\n")
    assert out.strip() == "[]"


def test_the_report_does_not_import_torch():
    out = _fresh_python("import sys\nimport diffinpaint.evaluation.report\nprint('torch' in sys.modules)\n")
    assert out.strip() == "False"


# ------------------------------------------------------------------------------------------------ error contract


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    from diffinpaint.cli import main

    assert main(["train", "pix2pix", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"),
                 "--size", "48"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --size 48") and "power of two" in err[0]


def test_a_bug_keeps_its_traceback_and_the_work_done(tmp_path, demo_small):
    """A ValueError from deep inside a model is a bug, not bad input: exit 1 with the traceback, and the images
    finished before it stay in the run folder."""
    script = tmp_path / "buggy.py"
    script.write_text(
        "import sys\n"
        "from diffinpaint.models import MODELS\n"
        "from diffinpaint.models.classical import TeleaModel\n"
        "class Buggy(TeleaModel):\n"
        "    name = 'buggy'\n"
        "    calls = 0\n"
        "    def inpaint(self, images, masks, **kw):\n"
        "        Buggy.calls += 1\n"
        "        if Buggy.calls == 3:\n"
        "            raise ValueError('shapes do not broadcast (a bug deep in a model)')\n"
        "        return super().inpaint(images, masks, **kw)\n"
        "sys.modules['buggy'] = sys.modules[__name__]\n"
        "MODELS['buggy'] = 'buggy:Buggy'\n"
        "from diffinpaint.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, str(script), "run", "--model", "buggy", "--data", str(demo_small),
                             "--out", str(out), "--no-progress"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "shapes do not broadcast" in result.stderr
    assert len(list((out / "images").rglob("*.png"))) == 2  # the two images finished before the bug


def test_data_masks_replace_swaps_in_a_complete_source(tmp_path, demo_small, monkeypatch):
    import shutil

    from diffinpaint.data import load_dataset
    from diffinpaint.data import maskfiles

    data = tmp_path / "data"
    shutil.copytree(demo_small, data)
    before = (data / "masks.csv").read_text()
    # a crash while the new source is being written: the old one is untouched
    real = maskfiles.atomic_write_bytes
    calls = {"n": 0}

    def crash(path, payload):
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError(28, "No space left on device")
        real(path, payload)

    monkeypatch.setattr(maskfiles, "atomic_write_bytes", crash)
    with pytest.raises(OSError):
        maskfiles.write_masks(data, "thin", replace=True)
    assert (data / "masks.csv").read_text() == before and not (data / "masks").exists()
    assert load_dataset(data).mask_source == "csv"
    monkeypatch.setattr(maskfiles, "atomic_write_bytes", real)
    # a crash between the two renames: the next call restores the old source first, then swaps
    (data / "masks.csv").rename(data / ".masks.csv.old-999")
    assert maskfiles.write_masks(data, "thin", replace=True) == "masks/"
    assert load_dataset(data).mask_source == "png" and not (data / "masks.csv").exists()
    assert not list(data.glob(".masks*"))
