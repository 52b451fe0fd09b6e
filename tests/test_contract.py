"""One contract over the registry: every model, classical, Stable Diffusion (a tiny random pipeline) and every
model the toolkit trains (its `tiny` configuration), is held to the same promises. A new model gets all of these
checks by being registered.

Every model: output at the input's size and in [0, 1]; after the runner composites, every pixel outside the holes
is bit-identical to the input; an image's fill does not depend on the other images in its batch nor on its
position there (per-image seeds).
Every trained model: 2 steps + --resume to 4 equals 4 straight steps (weights, optimisers, EMA copies, log);
checkpoints hold safetensors and JSON only; --dry-run prints each network's parameter count.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffinpaint.cli import main
from diffinpaint.data import load_dataset
from diffinpaint.models import MODELS, TRAINED, build_model, model_class, trainable_class
from diffinpaint.runner import RunSettings, run
from diffinpaint.training.trainer import train_from_options
from diffinpaint.util.checkpoint import checkpoint_dirs

# the product's registry only: test modules register stand-ins (tests/slow_models.py's oom_above_2 fails on purpose)
# into MODELS when imported, which must not enter this contract whatever order the test files are collected in
ALL = [name for name, spec in {**MODELS, **TRAINED}.items() if spec.startswith("diffinpaint.")]


def _train(name: str, data: Path, out: Path, **options) -> Path:
    tiny = trainable_class(name).tiny
    return train_from_options(name, {"data": str(data), "out": str(out), "device": "cpu", "steps": 4,
                                     "checkpoint_every": 2, "sample_every": 4, "keep_checkpoints": 0,
                                     **tiny, **options})


@pytest.fixture(scope="module")
def trained_dirs(tmp_path_factory, demo_small) -> dict[str, Path]:
    """name -> a training folder trained 4 straight steps (made on first use)."""
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            out = tmp_path_factory.mktemp(f"contract_{name}") / "straight"
            _train(name, demo_small, out)
            cache[name] = out
        return cache[name]

    return get


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory) -> str:
    from sd_tiny import save_tiny_pipeline

    return str(save_tiny_pipeline(tmp_path_factory.mktemp("contract_sd") / "pipe"))


@pytest.fixture(scope="module")
def built(trained_dirs, sd_folder):
    cache = {}

    def get(name: str):
        if name not in cache:
            if name in TRAINED:
                predictor = model_class(name).package.Predictor
                options = {"checkpoint": str(trained_dirs(name)), **predictor.tiny}
            elif name == "sd":
                options = {"sd_model": sd_folder, "steps": 2, "resolution": 64}
            else:
                options = {}
            cache[name] = build_model(name, options, device="cpu")
        return cache[name]

    return get


def _smooth_images(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)


def _masks(n: int, h: int, w: int) -> torch.Tensor:
    masks = torch.zeros(n, 1, h, w)
    for i in range(n):
        masks[i, :, 5 + i : 17 + i, 8 + 2 * i : 22 + 2 * i] = 1
    return masks


@pytest.mark.parametrize("name", ALL)
def test_output_size_range_and_untouched_pixels(name, built, demo_small, tmp_path):
    model = built(name)
    images, masks = _smooth_images(2, 40, 52, 0), _masks(2, 40, 52)
    with torch.enable_grad() if model.needs_grad else torch.inference_mode():
        out = model.inpaint(images, masks, seeds=[1, 2], labels=["cat", "cat"])
    assert out.shape == images.shape and out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    # through the runner: outputs at the input size, every pixel outside the holes bit-identical to the input
    dataset = load_dataset(demo_small)
    run(model, dataset, tmp_path / "run", RunSettings(batch_size=3, progress=False))
    for sample in dataset.samples:
        produced = np.asarray(Image.open(tmp_path / "run" / "images" / sample.output_relpath))
        original, hole = sample.load_image(), sample.load_mask()
        assert produced.shape == original.shape
        assert np.array_equal(produced[~hole], original[~hole]), sample.image_id


@pytest.mark.parametrize("name", ALL)
def test_fill_does_not_depend_on_the_batch_or_the_position(name, built):
    model = built(name)
    images, masks = _smooth_images(3, 40, 52, 1), _masks(3, 40, 52)
    seeds, labels = [11, 22, 33], ["cat", "dog", "cat"]

    def fill(idx):
        with torch.enable_grad() if model.needs_grad else torch.inference_mode():
            return model.inpaint(images[idx], masks[idx], seeds=[seeds[i] for i in idx],
                                 labels=[labels[i] for i in idx])

    batch = fill([0, 1, 2])
    reordered = fill([2, 0, 1])
    for position, i in enumerate([2, 0, 1]):
        assert torch.allclose(reordered[position], batch[i], atol=2e-4), (name, "position", i)
    for i in range(3):
        alone = fill([i])[0]
        assert torch.allclose(alone, batch[i], atol=2e-4), (name, "alone", i)


@pytest.mark.parametrize("name", list(TRAINED))
def test_two_steps_then_resume_equals_four_straight(name, trained_dirs, demo_small, tmp_path):
    from safetensors.torch import load_file

    straight = trained_dirs(name)
    _train(name, demo_small, tmp_path / "parts", steps=4, stop_at=2)
    assert [s for s, _ in checkpoint_dirs(tmp_path / "parts")] == [2]
    _train(name, demo_small, tmp_path / "parts", steps=4, resume=True)
    a, b = checkpoint_dirs(straight)[-1][1], checkpoint_dirs(tmp_path / "parts")[-1][1]
    files = sorted(p.name for p in a.glob("*.safetensors"))
    assert files == sorted(p.name for p in b.glob("*.safetensors"))
    for file in files:
        ta, tb = load_file(str(a / file)), load_file(str(b / file))
        assert ta.keys() == tb.keys()
        for key in ta:
            assert torch.equal(ta[key], tb[key]), (name, file, key)
    sa, sb = (json.loads((p / "state.json").read_text()) for p in (a, b))
    for key in ("optimizers", "schedulers", "ema", "step"):
        assert sa[key] == sb[key], key
    assert (straight / "log.jsonl").read_text() == (tmp_path / "parts" / "log.jsonl").read_text()


@pytest.mark.parametrize("name", list(TRAINED))
def test_checkpoints_hold_safetensors_and_json_only(name, trained_dirs):
    out = trained_dirs(name)
    folders = [p for _, p in checkpoint_dirs(out)]
    assert [p.name for p in folders] == ["step_000002", "step_000004"]
    for folder in folders:
        for path in folder.iterdir():
            assert path.suffix in (".safetensors", ".json"), path
            if path.suffix == ".safetensors":  # a real safetensors header: 8-byte length, then JSON
                raw = path.read_bytes()
                header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
                assert isinstance(header, dict)
        state = json.loads((folder / "state.json").read_text())
        assert state["model"] == name and json.loads((folder / "config.json").read_text())["model"] == name
    record = json.loads((out / "training_set.json").read_text())
    assert record["n_images"] == 9 and len(record["images"]) == 9
    assert (out / "samples" / "step_000004.png").is_file()


def tiny_flags(model_cls) -> list[str]:
    """A trained model's `tiny` configuration as `train` flags (False booleans are store_false `--no-...` flags)."""
    argv = []
    for key, value in model_cls.tiny.items():
        argv += [f"--no-{key.replace('_', '-')}"] if value is False else ["--" + key.replace("_", "-"), str(value)]
    return argv


@pytest.mark.parametrize("name", list(TRAINED))
def test_dry_run_prints_every_network_and_its_parameter_count(name, demo_small, tmp_path, capsys):
    model_cls = trainable_class(name)
    argv = ["train", name, "--dry-run", "--data", str(demo_small), "--out", str(tmp_path / "never"),
            *tiny_flags(model_cls)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    model = model_cls()
    from diffinpaint.training.trainer import configs_from_options

    model.cfg, model.opts = configs_from_options(model_cls, dict(model_cls.tiny))
    torch.manual_seed(0)
    for net_name, net in model.build_networks().items():
        count = sum(p.numel() for p in net.parameters())
        assert f"{net_name}: {type(net).__name__}, {count:,} parameters" in text
    assert not (tmp_path / "never").exists()


# ------------------------------------------------------------------------------------------------ options


def _another_value(o, current=None):
    """A valid value other than `current` (default: the declared default), for an option declared with
    util.options."""
    current = o.default if current is None else current
    if o.type is bool:
        return not current
    if o.choices:
        return next(c for c in o.choices if c != current)
    if o.type is int:
        return (current or o.minimum or 1) + 1
    if o.type is float:
        upper = o.maximum if o.maximum is not None else float("inf")
        value = (current or 0.25) * 0.5
        return value if value <= upper else upper
    return f"{current}-other"


@pytest.mark.parametrize("name", ALL)
def test_every_output_option_reaches_outputs_and_resume_refuses_a_change(name, built, demo_small, tmp_path):
    """Each option declared as changing outputs is in config.toml [outputs], under its own name, with the value in
    force; a run folder made with another value of it is refused on resume, naming the option."""
    import tomllib

    import tomli_w

    from diffinpaint.runner import SettingsChanged, check_config, toml_safe, write_config
    from diffinpaint.util.options import declared

    model = built(name)
    settings = RunSettings(progress=False)
    write_config(tmp_path, model, load_dataset(demo_small), settings, num_processes=1)
    config = tomllib.loads((tmp_path / "config.toml").read_text())
    outputs = config["outputs"]
    declared_outputs = [o for o in declared(model.Settings) if o.outputs]
    resolved = model.resolved_outputs()
    for o in declared_outputs:
        key = f"model.{o.name}"
        assert key in outputs, (name, o.name)
        if o.name not in resolved:  # a resolved value (e.g. the prompt set's texts) stands for the option
            assert outputs[key] == toml_safe(getattr(model.settings, o.name)), (name, o.name)
        changed = dict(config)
        changed["outputs"] = {**outputs, key: toml_safe(_another_value(o, getattr(model.settings, o.name)))}
        (tmp_path / "config.toml").write_text(tomli_w.dumps(changed))
        with pytest.raises(SettingsChanged, match=o.name):
            check_config(tmp_path, model, settings)
    for o in declared(model.Settings):  # and nothing else: options that do not change outputs stay out
        if not o.outputs:
            assert f"model.{o.name}" not in outputs or o.name in resolved, (name, o.name)


@pytest.mark.parametrize("name", ALL)
def test_a_flag_of_another_model_is_refused_naming_its_owner(name, capsys, tmp_path):
    from diffinpaint.util.options import declared

    mine = {o.flag for o in declared(model_class(name).Settings)}
    for other in ALL:
        theirs = [o for o in declared(model_class(other).Settings) if o.flag not in mine]
        if not theirs:
            continue
        o = theirs[0]  # one flag of each other model is enough
        value = [] if o.type is bool else [str(_another_value(o))]
        argv = ["run", "--model", name, o.flag, *value, "--data", str(tmp_path / "no"), "--out", str(tmp_path)]
        assert main(argv) == 2, (name, o.flag)
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and o.flag in err[0] and other in err[0], (name, o.flag, err)


def test_flag_refusal_names_the_equivalent_flag():
    from diffinpaint.models import given_options
    from diffinpaint.util.errors import UserError

    args = {"opt.sd.steps": 20}
    with pytest.raises(UserError, match=r"--steps is sd's; for repaint use --repaint-steps"):
        given_options(args, ["repaint"])
    with pytest.raises(UserError, match=r"--steps is sd's; telea has no such option"):
        given_options(args, ["telea"])
    assert given_options({"opt.telea.radius": 5}, ["telea", "ns"]) == {"telea": {"radius": 5}, "ns": {"radius": 5}}
    with pytest.raises(UserError, match=r"--radius is telea/ns"):  # (+ models tests register on telea)
        given_options({"opt.telea.radius": 5}, ["sd"])


@pytest.mark.parametrize("name", ALL)
def test_deterministic_models_say_so(name, built):
    """A model that calls itself deterministic gives the same fill for different seeds; one that does not, differs
    (so `eval --seeds` may run the first kind once)."""
    model = built(name)
    images, masks = _smooth_images(1, 40, 52, 3), _masks(1, 40, 52)
    with torch.enable_grad() if model.needs_grad else torch.inference_mode():
        a = model.inpaint(images, masks, seeds=[1], labels=["cat"])
        b = model.inpaint(images, masks, seeds=[2], labels=["cat"])
    hole = masks.bool().expand_as(a)
    same = torch.equal(a[hole], b[hole])
    assert same == bool(model.deterministic), name
    expected = {"pix2pix": True, "deepfill": True, "dmfn": True, "transgan": True, "dcgan": False,
                "repaint": False, "telea": True, "ns": True, "grey": True, "ring_mean": True, "sd": False,
                "exemplar": True, "patchmatch": True, "lama": True}
    if name in expected:  # models the tests register themselves are held to their own claim above
        assert model.deterministic == expected[name]


@pytest.mark.parametrize("name", ["deepfill", "dmfn"])
def test_train_defaults_are_the_papers_and_quick_is_the_demos(name, demo_medium, tmp_path, capsys):
    """`train NAME` with no options trains the reference configuration (batch 16 for DeepFill v2 and DMFN);
    --preset quick prints the small CPU configuration make demo uses; --dry-run says which is in force."""
    base = ["train", name, "--dry-run", "--data", str(demo_medium), "--out", str(tmp_path / "never")]  # 18 images
    extra = ["--no-perceptual"] if name == "dmfn" else []
    assert main([*base, *extra]) == 0
    text = capsys.readouterr().out
    assert "  batch_size: 16\n" in text and "defaults in force: the paper's" in text
    assert main([*base, *extra, "--preset", "quick"]) == 0
    text = capsys.readouterr().out
    quick = trainable_class(name).presets["quick"]
    assert f"  batch_size: {quick['batch_size']}\n" in text and f"  size: {quick['size']}\n" in text
    assert "defaults in force: --preset quick" in text
    assert main([*base, *extra, "--preset", "quick", "--batch-size", "2"]) == 0  # typed options win
    assert "  batch_size: 2\n" in capsys.readouterr().out
