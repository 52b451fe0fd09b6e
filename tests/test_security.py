"""No pickle on any loading path, no remote code, nothing written outside --out."""
from __future__ import annotations

import ast
from pathlib import Path

import diffinpaint

PACKAGE = Path(diffinpaint.__file__).parent


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            yield name, node


def test_every_torch_load_is_weights_only_and_nothing_unpickles():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(n in ("pickle", "dill", "cloudpickle", "joblib") for n in names):
                    offenders.append(f"{path.name}:{node.lineno} imports a pickle module")
        for name, call in _calls(tree):
            keywords = {k.arg: k.value for k in call.keywords}
            if name == "load" and isinstance(call.func, ast.Attribute) and getattr(call.func.value, "id", "") == "torch":
                value = keywords.get("weights_only")
                if not (isinstance(value, ast.Constant) and value.value is True):
                    offenders.append(f"{path.name}:{call.lineno} torch.load without weights_only=True")
            if "trust_remote_code" in keywords:
                value = keywords["trust_remote_code"]
                if not (isinstance(value, ast.Constant) and value.value is False):
                    offenders.append(f"{path.name}:{call.lineno} trust_remote_code")
            if "use_safetensors" in keywords:
                value = keywords["use_safetensors"]
                if not (isinstance(value, ast.Constant) and value.value is True):
                    offenders.append(f"{path.name}:{call.lineno} use_safetensors is not True")
    assert offenders == []


def test_the_scanner_catches_an_unsafe_load(tmp_path):
    """The check above can fail: the same scan flags a plain torch.load."""
    tree = ast.parse("import torch\ntorch.load('x.pt')\n")
    flagged = [c for name, c in _calls(tree) if name == "load"
               and not any(k.arg == "weights_only" for k in c.keywords)]
    assert len(flagged) == 1
