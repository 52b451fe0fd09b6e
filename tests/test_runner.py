"""The run-folder contract: compositing, seeds, determinism, resume, refusal of mixed settings, OOM halving."""
from __future__ import annotations

import json
import tomllib

import numpy as np
import pytest
from PIL import Image

import slow_models
from diffinpaint.cli import main
from diffinpaint.data import load_dataset
from diffinpaint.data.masks import derive_seed
from diffinpaint.runner import composite

slow_models.register()


def run_cli(*args) -> int:
    return main(["run", *map(str, args), "--no-progress"])


def outputs(run_dir):
    return {p.relative_to(run_dir).as_posix(): p.read_bytes() for p in sorted((run_dir / "images").rglob("*.png"))}


def manifest(run_dir):
    return [json.loads(line) for line in (run_dir / "manifest.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("model", ["telea", "ns", "seeded_noise"])
def test_outputs_keep_every_unmasked_pixel_and_the_input_size(demo_small, tmp_path, model):
    out = tmp_path / "run"
    assert run_cli("--model", model, "--data", demo_small, "--out", out) == 0
    dataset = load_dataset(demo_small)
    for sample in dataset.samples:
        result = np.asarray(Image.open(out / "images" / sample.output_relpath))
        image, mask = sample.load_image(), sample.load_mask()
        assert result.shape == image.shape
        assert np.array_equal(result[~mask], image[~mask])
        assert not np.array_equal(result[mask], image[mask])  # the hole was actually filled
    rows = manifest(out)
    assert [r["image"] for r in rows] == [s.image_id for s in dataset.samples]
    assert all(r["seed"] == derive_seed(0, r["image"]) and r["process"] == 0 for r in rows)
    config = tomllib.loads((out / "config.toml").read_text())
    assert config["outputs"]["model"] == model and "torch" in config["versions"]
    assert not (out / "manifest.parts").exists()


def test_same_settings_give_the_same_bytes_and_batch_size_does_not_change_the_fill(demo_medium, tmp_path):
    for name, batch in [("a", 1), ("b", 1), ("c", 4)]:
        assert run_cli("--model", "seeded_noise", "--data", demo_medium, "--out", tmp_path / name,
                       "--batch-size", batch) == 0
    assert outputs(tmp_path / "a") == outputs(tmp_path / "b")
    assert outputs(tmp_path / "a") == outputs(tmp_path / "c")  # per-image seeds: batch position is irrelevant
    assert run_cli("--model", "seeded_noise", "--data", demo_medium, "--out", tmp_path / "d", "--seed", 7) == 0
    assert outputs(tmp_path / "a") != outputs(tmp_path / "d")


def test_rerun_skips_finished_images_and_redoes_missing_ones(demo_medium, tmp_path):
    out = tmp_path / "run"
    assert run_cli("--model", "telea", "--data", demo_medium, "--out", out, "--batch-size", 3) == 0
    reference = outputs(out)
    # lose two outputs and one manifest line, as a crash might
    rows = manifest(out)
    (out / "images" / rows[0]["output"]).unlink()
    (out / "images" / rows[5]["output"]).unlink()
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:-1]) + '{"image": "trunc')
    before = {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")}
    assert run_cli("--model", "telea", "--data", demo_medium, "--out", out, "--batch-size", 3) == 0
    assert outputs(out) == reference
    images = [r["image"] for r in manifest(out)]
    assert sorted(images) == sorted(set(images)) and len(images) == len(reference)
    untouched = [p for p, t in before.items() if p.stat().st_mtime_ns == t]
    assert len(untouched) >= len(reference) - 4  # finished images were not redone


def test_rerun_with_settings_that_change_outputs_is_refused(demo_small, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli("--model", "telea", "--data", demo_small, "--out", out) == 0
    before = outputs(out)
    assert run_cli("--model", "telea", "--data", demo_small, "--out", out, "--seed", 3) == 2
    err = capsys.readouterr().err
    assert "seed" in err and "was 0, now 3" in err and "another --out" in err
    assert run_cli("--model", "ns", "--data", demo_small, "--out", out) == 2
    assert "model" in capsys.readouterr().err
    assert outputs(out) == before
    # batch size only moves float noise (README: reproducibility), so it may change on resume
    assert run_cli("--model", "telea", "--data", demo_small, "--out", out, "--batch-size", 2) == 0


def test_out_of_memory_halves_the_batch_once_and_keeps_results(demo_medium, tmp_path, capsys):
    slow_models.OutOfMemoryAbove2.calls.clear()
    assert run_cli("--model", "oom_above_2", "--data", demo_medium, "--out", tmp_path / "big", "--batch-size", 8) == 0
    err = capsys.readouterr().err
    assert err.count("out of GPU memory") == 1
    assert slow_models.OutOfMemoryAbove2.calls[:3] == [8, 4, 2]
    assert run_cli("--model", "seeded_noise", "--data", demo_medium, "--out", tmp_path / "one") == 0
    assert outputs(tmp_path / "big") == outputs(tmp_path / "one")


def test_feather_blends_inside_the_hole_only():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 40, 3)).astype(np.uint8)
    fill = np.full_like(image, 255)
    mask = np.zeros((40, 40), bool)
    mask[10:30, 10:30] = True
    hard = composite(image, fill, mask, 0)
    soft = composite(image, fill, mask, 6)
    assert np.array_equal(soft[~mask], image[~mask]) and np.array_equal(hard[~mask], image[~mask])
    assert np.all(hard[mask] == 255)
    assert np.all(soft[20, 20] == 255)  # deep inside: the fill
    edge = soft[10, 20].astype(int)  # on the hole's border: mostly the original
    assert np.all(np.abs(edge - image[10, 20]) < np.abs(255 - image[10, 20].astype(int)) + 1)
    assert not np.array_equal(soft[mask], hard[mask])


def test_unlabelled_dataset_and_unknown_model_fail_cleanly(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--model", "nope", "--data", str(tmp_path), "--out", str(tmp_path / "o")])
    assert exc.value.code == 2


def test_changed_holes_make_finished_images_redo(demo_small, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(demo_small, data)
    out = tmp_path / "run"
    assert run_cli("--model", "telea", "--data", data, "--out", out) == 0
    before = outputs(out)
    lines = (data / "masks.csv").read_text().splitlines()
    image, x, y, w, h = lines[1].split(",")
    lines[1] = ",".join([image, str(int(x) // 2), str(int(y) // 2), w, h])  # move one hole of the first image
    (data / "masks.csv").write_text("\n".join(lines) + "\n")
    assert run_cli("--model", "telea", "--data", data, "--out", out) == 0
    after = outputs(out)
    changed = [k for k in before if before[k] != after[k]]
    assert changed == [f"images/{image.rsplit('.', 1)[0]}.png"]  # only the image whose holes moved was redone
    assert len(manifest(out)) == len(before)


@pytest.mark.parametrize("where", ["inside-data", "non-empty-folder", "a-file"])
def test_out_folders_that_would_damage_data_are_refused(demo_small, tmp_path, capsys, where):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(demo_small, data)
    out = {"inside-data": data / "runs", "non-empty-folder": tmp_path / "mine", "a-file": tmp_path / "f"}[where]
    if where == "non-empty-folder":
        out.mkdir()
        (out / "thesis.tex").write_text("precious")
    if where == "a-file":
        out.write_text("x")
    assert run_cli("--model", "telea", "--data", data, "--out", out) == 2
    assert "--out" in capsys.readouterr().err
    assert not (data / "runs").exists()
    if where == "non-empty-folder":
        assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]


def test_a_torn_manifest_line_does_not_swallow_the_next_row(tmp_path):
    from diffinpaint.runner import append_line, read_manifest

    part = tmp_path / "part.jsonl"
    part.write_text('{"image": "a.png"}\n{"image": "b.pn')  # killed mid-write
    append_line(part, json.dumps({"image": "c.png"}))
    assert [r["image"] for r in read_manifest(part)] == ["a.png", "c.png"]


def test_eval_refuses_feather_and_too_small_holes_before_any_work(demo_small, tmp_path, capsys):
    import shutil

    assert main(["eval", "--no-text", "--models", "telea", "--data", str(demo_small), "--out", str(tmp_path / "ev"),
                 "--feather", "4", "--no-progress"]) == 2
    assert "--feather" in capsys.readouterr().err
    data = tmp_path / "data"
    shutil.copytree(demo_small, data)
    lines = (data / "masks.csv").read_text().splitlines()
    image, x, y, *_ = lines[1].split(",")
    lines[1] = ",".join([image, x, y, "8", "8"])
    (data / "masks.csv").write_text("\n".join(lines) + "\n")
    assert main(["eval", "--no-text", "--models", "telea", "--data", str(data), "--out", str(tmp_path / "ev2"),
                 "--no-progress"]) == 2
    assert "11x11" in capsys.readouterr().err
    assert not (tmp_path / "ev").exists() and not (tmp_path / "ev2").exists()


def test_eval_names_the_stale_run_folder_and_the_fix(demo_small, tmp_path, capsys):
    args = ["eval", "--data", str(demo_small), "--out", str(tmp_path / "ev"), "--no-fid", "--no-text", "--no-report",
            "--no-progress"]
    assert main([*args, "--models", "telea"]) == 0
    assert main([*args, "--models", "telea", "--radius", "5"]) == 2
    err = capsys.readouterr().err
    assert "model.radius: was 3, now 5" in err and "delete that folder to redo telea" in err


def test_mixed_sizes_are_batched_by_size_and_match_batch_size_one(tmp_path):
    from diffinpaint.data.demo import make_demo_dataset
    from diffinpaint.runner import make_batches

    import shutil

    data = tmp_path / "data"
    small = make_demo_dataset(tmp_path / "s", size=48, crops_per_photo=1, hole_size=12)
    large = make_demo_dataset(tmp_path / "l", size=64, crops_per_photo=1, hole_size=12, seed=5)
    shutil.copytree(small, data)
    rows = (small / "masks.csv").read_text().splitlines()
    for path in sorted((large / "images").rglob("*.png")):  # interleave 64-px images among the 48-px ones
        rel = path.relative_to(large / "images")
        target = data / "images" / rel.parent / f"big_{rel.name}"
        shutil.copy(path, target)
        rows += [f"{rel.parent}/big_{rel.name}," + line.split(",", 1)[1]
                 for line in (large / "masks.csv").read_text().splitlines()[1:] if line.startswith(str(rel.as_posix()))]
    (data / "masks.csv").write_text("\n".join(rows) + "\n")
    dataset = load_dataset(data)
    batches = make_batches(dataset.samples, 4)
    assert all(len({(s.width, s.height) for s in b}) == 1 for b in batches)
    assert len(batches) == 6  # 9 + 9 images of two sizes: 4+4+1 each, not 18 batches of one
    assert run_cli("--model", "seeded_noise", "--data", data, "--out", tmp_path / "b4", "--batch-size", 4) == 0
    assert run_cli("--model", "seeded_noise", "--data", data, "--out", tmp_path / "b1") == 0
    assert outputs(tmp_path / "b4") == outputs(tmp_path / "b1")
