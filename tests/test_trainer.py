"""The one trainer's own behaviour, whatever the model: training on a folder without masks, the refusal of
--holes dataset there, trackers, EMA copies, and the refusal of an --out that is not a training folder."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from diffinpaint.cli import main
from diffinpaint.training.trainer import train_from_options
from diffinpaint.util.checkpoint import checkpoint_dirs
from diffinpaint.util.errors import UserError

TINY = {"size": 32, "ngf": 8, "ndf": 8, "batch_size": 2, "device": "cpu", "steps": 2}


@pytest.fixture()
def images_only(tmp_path, demo_small):
    """A folder of photos with no masks.csv and no masks/: enough for models that generate their holes."""
    root = tmp_path / "photos"
    shutil.copytree(demo_small / "images", root / "images")
    return root


def test_generated_holes_train_on_images_without_masks(images_only, tmp_path):
    final = train_from_options("pix2pix", {"data": str(images_only), "out": str(tmp_path / "o"), "holes": "thick",
                                           **TINY})
    assert final.name == "step_000002"
    record = json.loads((tmp_path / "o" / "training_set.json").read_text())
    assert record["n_images"] == 9 and sorted(r["image"] for r in record["images"])[0] == "astronaut/astronaut_0.png"


def test_holes_dataset_without_masks_is_refused_naming_the_fix(images_only, tmp_path, capsys):
    argv = ["train", "pix2pix", "--data", str(images_only), "--out", str(tmp_path / "o"), "--size", "256"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--holes dataset" in err[0] and "--holes box" in err[0]
    assert not (tmp_path / "o").exists()


def test_holes_a_model_does_not_offer_are_refused(demo_small, tmp_path):
    with pytest.raises(UserError, match="--holes deepfill is not available for pix2pix"):
        train_from_options("pix2pix", {"data": str(demo_small), "out": str(tmp_path / "o"), "holes": "deepfill",
                                       **TINY})


def test_out_holding_other_files_is_refused(demo_small, tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a training folder"):
        train_from_options("pix2pix", {"data": str(demo_small), "out": str(tmp_path / "o"), **TINY})
    assert (tmp_path / "o" / "notes.txt").read_text() == "mine"


def test_report_to_tensorboard_logs_losses_lr_and_samples(demo_small, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "o"
    train_from_options("pix2pix", {"data": str(demo_small), "out": str(out), "report_to": "tensorboard",
                                   "sample_every": 2, **TINY})
    events = list((out / "trackers").rglob("events.out.tfevents.*"))
    assert events
    scalars, images = set(), set()
    for path in events:
        acc = EventAccumulator(str(path.parent))
        acc.Reload()
        scalars |= set(acc.Tags()["scalars"])
        images |= set(acc.Tags()["images"])
    assert {"lr", "G_L1", "D_real"} <= scalars and "samples" in images


def test_ema_copy_is_the_diffusers_average_of_the_weights(demo_small, tmp_path):
    """RePaint declares ema={"unet": 0.9999}: after 2 steps the saved unet_ema equals diffusers' EMAModel run by hand
    over the same weights (decay warm-up (1+t)/(10+t))."""
    from diffusers.training_utils import EMAModel
    from safetensors.torch import load_file

    from diffinpaint.models import trainable_class

    tiny = trainable_class("repaint").tiny
    base = {"data": str(demo_small), "device": "cpu", "checkpoint_every": 1, "keep_checkpoints": 0, **tiny}
    train_from_options("repaint", {**base, "out": str(tmp_path / "o"), "steps": 2})
    folders = [p for _, p in checkpoint_dirs(tmp_path / "o")]
    w1 = load_file(str(folders[0] / "unet.safetensors"))
    w2 = load_file(str(folders[1] / "unet.safetensors"))
    ema_saved = load_file(str(folders[1] / "unet_ema.safetensors"))
    # by hand: EMA starts at the initial weights (step 0 = the seeded init, rebuilt here), then steps at w1, w2
    from diffinpaint.models.repaint import build_network
    from diffinpaint.training.trainer import configs_from_options, flat_config

    cfg, opts = configs_from_options(trainable_class("repaint"), base)
    torch.manual_seed(cfg.seed)
    net = build_network(flat_config(cfg, opts), "unet")
    names = [n for n, _ in net.named_parameters()]
    ema = EMAModel([p.detach().clone() for p in net.parameters()], decay=0.9999)
    for weights in (w1, w2):
        ema.step([torch.nn.Parameter(weights[n]) for n in names])
    for name, value in zip(names, ema.shadow_params):
        assert torch.allclose(ema_saved[name], value, atol=1e-7), name
    state = json.loads((folders[1] / "state.json").read_text())
    assert state["ema"]["unet"]["optimization_step"] == 2
