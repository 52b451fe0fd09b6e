"""Study files: named variants of registered models in one eval (`eval --config study.toml`)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffinpaint.cli import main
from diffinpaint.evaluation.study import load_study
from diffinpaint.util.errors import UserError


def _eval(*args, data: Path, out: Path) -> int:
    return main(["eval", "--data", str(data), "--out", str(out), "--no-progress", "--no-fid", "--no-text", "--no-report",
                 *map(str, args)])


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


TWO_TELEAS_AND_NS = """
[[model]]
name = "telea-r3"
model = "telea"

[[model]]
name = "telea-r9"
model = "telea"
radius = 9

[[model]]
name = "ns"
model = "ns"
"""


def test_three_named_rows_with_their_own_run_folders(demo_small, tmp_path):
    study = _write(tmp_path / "study.toml", TWO_TELEAS_AND_NS)
    out = tmp_path / "ev"
    assert _eval("--config", study, data=demo_small, out=out) == 0
    summary = {row["model"]: row for row in json.loads((out / "summary.json").read_text())}
    assert list(summary) == ["telea-r3", "telea-r9", "ns"]
    assert summary["telea-r3"]["registry_model"] == summary["telea-r9"]["registry_model"] == "telea"
    assert summary["telea-r3"]["rmse"] != summary["telea-r9"]["rmse"]  # another radius, another fill
    import tomllib

    for name, radius in (("telea-r3", 3), ("telea-r9", 9)):
        config = tomllib.loads((out / "runs" / name / "config.toml").read_text())
        assert config["outputs"]["model.radius"] == radius
    per_image = (out / "per_image.csv").read_text()
    assert "telea-r9," in per_image and "ns," in per_image
    # run again: every variant's finished run folder is reused
    assert _eval("--config", study, data=demo_small, out=out) == 0


def test_command_line_options_apply_where_a_variant_does_not_set_them(tmp_path):
    study = _write(tmp_path / "study.toml", TWO_TELEAS_AND_NS)
    variants = load_study(str(study), {"opt.telea.radius": 5})
    assert [v.options for v in variants] == [{"radius": 5}, {"radius": 9}, {"radius": 5}]
    with pytest.raises(UserError, match=r"--steps is sd's; telea/ns have no such option"):
        load_study(str(study), {"opt.sd.steps": 4})


@pytest.mark.parametrize("text,match", [
    ('[[model]]\nname = "a"\nmodel = "telea"\nradius = 3\nsteps = 4\n', r"\[\[model\]\] 'a': unknown option steps"),
    ('[[model]]\nname = "a"\nmodel = "telea"\nradius = "big"\n', r"\[\[model\]\] 'a': radius 'big': must be a whole"),
    ('[[model]]\nname = "a"\nmodel = "nope"\n', "unknown model 'nope'"),
    ('[[model]]\nname = "a"\nmodel = "telea"\n[[model]]\nname = "a"\nmodel = "ns"\n', "used twice"),
    ('[[model]]\nname = "../x"\nmodel = "telea"\n', "folder-safe"),
    ('title = "x"\n', "unknown top-level key 'title'"),
    ('[[model]\n', "not valid TOML"),
])
def test_bad_study_files_are_refused_in_one_line(demo_small, tmp_path, capsys, text, match):
    study = _write(tmp_path / "study.toml", text)
    assert _eval("--config", study, data=demo_small, out=tmp_path / "ev") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(study) in err[0], err
    import re

    assert re.search(match, err[0]), err[0]
    assert not (tmp_path / "ev").exists()


def test_models_and_config_are_exclusive(demo_small, tmp_path, capsys):
    study = _write(tmp_path / "study.toml", TWO_TELEAS_AND_NS)
    assert _eval("--config", study, "--models", "telea", data=demo_small, out=tmp_path / "ev") == 2
    assert "not both" in capsys.readouterr().err
    assert _eval(data=demo_small, out=tmp_path / "ev") == 2


def test_the_shipped_no_text_study_runs_end_to_end_with_a_tiny_pipeline(demo_small, tmp_path):
    """prompts/studies/no-text-study.toml: four prompt sets of sd beside telea and pix2pix, with a tiny random SD
    pipeline and a tiny Pix2Pix checkpoint (the real numbers come from real weights)."""
    from sd_tiny import save_tiny_pipeline

    from diffinpaint.models import trainable_class
    from diffinpaint.training.trainer import train_from_options

    pipe = save_tiny_pipeline(tmp_path / "pipe")
    ckpt = tmp_path / "p2p"
    train_from_options("pix2pix", {"data": str(demo_small), "out": str(ckpt), "device": "cpu", "steps": 1,
                                   **trainable_class("pix2pix").tiny})
    out = tmp_path / "ev"
    assert _eval("--config", "no-text-study", "--sd-model", pipe, "--steps", 2, "--resolution", 64,
                 "--pix2pix-checkpoint", ckpt, "--allow-in-sample", data=demo_small, out=out) == 0
    summary = {row["model"]: row for row in json.loads((out / "summary.json").read_text())}
    assert list(summary) == ["sd-natural", "sd-no-negative", "sd-animal", "sd-empty", "telea", "pix2pix"]
    manifests = {name: [json.loads(line) for line in (out / "runs" / name / "manifest.jsonl").read_text().splitlines()]
                 for name in ("sd-natural", "sd-no-negative", "sd-animal")}
    assert manifests["sd-natural"][0]["negative_prompt"].startswith("text, letters")
    assert manifests["sd-no-negative"][0]["negative_prompt"] == ""
    assert manifests["sd-animal"][0]["prompt"].startswith("Real image of a ")
