"""The one trainer's own behaviour, whatever the model: training on a folder without masks, the refusal of
--holes dataset there, trackers, EMA copies (--ema-every), the refusal of an --out that is not a training folder,
and the loop that never waits on the device: losses kept as tensors and read every --log-every steps (the same
log.jsonl, NaN/inf noticed within the block), batches made one step ahead exactly as the DataLoader's."""
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


# ------------------------------------------------------------------------------------------------ the loop


@pytest.mark.parametrize("holes,thread", [("dataset", False), ("none", False), ("box", True), ("thick", False),
                                          ("deepfill", True)])
def test_batches_are_the_examples_stacked(demo_small, holes, thread):
    """TrainingImages.batch (the trainer's path with --workers 0, inline on a CPU or in a thread ahead on a GPU) and
    device_batches give exactly what a DataLoader collating the examples one by one gives (the path of --workers N),
    flips and generated holes included."""
    from diffinpaint.models import trainable_class
    from diffinpaint.training.data import StepBatches, TrainingImages, device_batches, training_samples

    own = trainable_class("deepfill")().make_holes if holes == "deepfill" else None
    images = TrainingImages(training_samples(demo_small, holes), 32, holes, True, 3, own)
    sampler = StepBatches(2, 9, 3, 0, 1)  # 21 positions: two epochs of the 9 images, both flips
    ours = list(device_batches(images, sampler, 0, torch.device("cpu"), thread=thread))
    theirs = list(torch.utils.data.DataLoader(images, batch_sampler=sampler, num_workers=0))
    assert len(ours) == len(theirs) == 7
    for (a_img, a_mask), (b_img, b_mask) in zip(ours, theirs):
        assert a_img.dtype == b_img.dtype and a_mask.dtype == b_mask.dtype
        assert torch.equal(a_img, b_img) and torch.equal(a_mask, b_mask)
    if holes != "none":
        assert any(m.sum() > 0 for _, m in ours)


def _pix2pix(data, out, **kw):
    return train_from_options("pix2pix", {"data": str(data), "out": str(out), **TINY, **kw})


def test_log_every_reads_losses_in_blocks_and_changes_nothing(demo_small, tmp_path, monkeypatch):
    """--log-every 4 over 10 steps reads the losses 3 times (steps 4, 8 and the end), and log.jsonl and the weights
    are exactly those of --log-every 1."""
    from safetensors.torch import load_file

    from diffinpaint.training import trainer

    reads = []
    original = trainer.PendingLosses.read
    monkeypatch.setattr(trainer.PendingLosses, "read", lambda self: reads.append([r[0] for r in self.rows])
                        or original(self))
    common = {"steps": 10, "checkpoint_every": 10, "sample_every": 10}
    _pix2pix(demo_small, tmp_path / "blocks", log_every=4, **common)
    assert reads == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]
    _pix2pix(demo_small, tmp_path / "each", log_every=1, **common)
    log = (tmp_path / "blocks" / "log.jsonl").read_text()
    assert log == (tmp_path / "each" / "log.jsonl").read_text()
    assert [json.loads(line)["step"] for line in log.splitlines()] == list(range(1, 11))
    a = load_file(str(checkpoint_dirs(tmp_path / "blocks")[-1][1] / "generator.safetensors"))
    b = load_file(str(checkpoint_dirs(tmp_path / "each")[-1][1] / "generator.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_nan_is_noticed_within_log_every_steps_and_no_checkpoint_holds_it(demo_small, tmp_path, monkeypatch,
                                                                              capsys):
    """A loss (a tensor, as train_step returns them) turns NaN at step 6; the losses are read at steps 4 and 8
    (--log-every 4, also a checkpoint): training stops at the read of step 8 naming step 6, the checkpoint of step
    4 is the last, and log.jsonl ends at step 5."""
    from diffinpaint.models.pix2pix.step import Pix2PixTraining

    real = Pix2PixTraining.train_step

    def diverging(self, batch):
        losses = real(self, batch)
        return {**losses, "G_L1": losses["G_L1"] * float("nan")} if self.step == 5 else losses

    monkeypatch.setattr(Pix2PixTraining, "train_step", diverging)
    argv = ["train", "pix2pix", "--data", str(demo_small), "--out", str(tmp_path / "o"), "--size", "32", "--ngf", "8",
            "--ndf", "8", "--batch-size", "2", "--device", "cpu", "--steps", "12", "--checkpoint-every", "4",
            "--log-every", "4"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "not finite at step 6" in err and "G_L1=nan" in err and "step_000004" in err
    assert [s for s, _ in checkpoint_dirs(tmp_path / "o")] == [4]
    steps = [json.loads(line)["step"] for line in (tmp_path / "o" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]


def test_every_train_step_returns_detached_0dim_tensors(demo_small):
    """The protocol (models/trainable.py): losses stay on the device as 0-dim tensors, so the trainer can read them
    once per --log-every steps instead of waiting for the device at every step."""
    from accelerate import Accelerator

    from diffinpaint.models import TRAINED, trainable_class
    from diffinpaint.models.trainable import Batch
    from diffinpaint.training.data import TrainingImages, training_samples
    from diffinpaint.training.setup import make_model, prepare_model
    from diffinpaint.training.trainer import configs_from_options

    for name in TRAINED:
        cls = trainable_class(name)
        cfg, opts = configs_from_options(cls, {"data": str(demo_small), "out": "unused", "device": "cpu", **cls.tiny})
        model = make_model(cls, cfg, opts)
        prepare_model(model, Accelerator(cpu=True))
        holes = cfg.holes if cfg.holes in ("dataset", "none", "box", "thin", "medium", "thick") else "box"
        images = TrainingImages(training_samples(demo_small, holes), cfg.size, holes, False, 0)
        batch = Batch(*images.batch(list(range(cfg.batch_size))))
        torch.manual_seed(0)
        losses = model.train_step(batch)
        assert losses, name
        for key, value in losses.items():
            assert isinstance(value, torch.Tensor) and value.dim() == 0, (name, key, type(value))
            assert not value.requires_grad, (name, key)


def test_ema_every_k_updates_at_every_kth_step_with_the_decay_to_the_kth(demo_small, tmp_path):
    """--ema-every 2: no update after step 1 (the copy is still the initial weights), and after step 2 the copy is
    the initial weights moved towards step 2's by 1 - d² with d = diffusers' warm-up decay at step 2 (2/11)."""
    from safetensors.torch import load_file

    from diffinpaint.models import trainable_class
    from diffinpaint.models.repaint import build_network
    from diffinpaint.training.trainer import configs_from_options, flat_config

    tiny = trainable_class("repaint").tiny
    base = {"data": str(demo_small), "device": "cpu", "checkpoint_every": 1, "keep_checkpoints": 0, **tiny}
    train_from_options("repaint", {**base, "out": str(tmp_path / "o"), "steps": 3, "ema_every": 2})
    folders = [p for _, p in checkpoint_dirs(tmp_path / "o")]
    cfg, opts = configs_from_options(trainable_class("repaint"), base)
    torch.manual_seed(cfg.seed)
    initial = build_network(flat_config(cfg, opts), "unet").state_dict()
    ema1 = load_file(str(folders[0] / "unet_ema.safetensors"))
    w2 = load_file(str(folders[1] / "unet.safetensors"))
    ema2 = load_file(str(folders[1] / "unet_ema.safetensors"))
    ema3 = load_file(str(folders[2] / "unet_ema.safetensors"))
    weight = 1 - (2 / 11) ** 2
    names = [n for n, _ in build_network(flat_config(cfg, opts), "unet").named_parameters()]
    for name in names:
        assert torch.equal(ema1[name], initial[name]), name
        assert torch.allclose(ema2[name], initial[name] + weight * (w2[name] - initial[name]), atol=1e-7), name
        assert torch.equal(ema3[name], ema2[name]), name  # step 3 is not an update step
    states = [json.loads((f / "state.json").read_text())["ema"]["unet"]["optimization_step"] for f in folders]
    assert states == [0, 2, 2]


def test_log_every_may_change_on_resume_ema_every_may_not(demo_small, tmp_path):
    from diffinpaint.models import trainable_class
    from diffinpaint.training.trainer import resume_compared

    compared = resume_compared(trainable_class("pix2pix"))
    assert "ema_every" in compared and "log_every" not in compared
    _pix2pix(demo_small, tmp_path / "o", steps=4, stop_at=2, log_every=1)
    assert _pix2pix(demo_small, tmp_path / "o", steps=4, resume=True, log_every=3).name == "step_000004"
    with pytest.raises(UserError, match="ema_every"):
        _pix2pix(demo_small, tmp_path / "o", steps=6, resume=True, ema_every=2)


def test_batches_are_made_inline_on_a_cpu_and_by_a_thread_ahead_on_an_accelerator(demo_small):
    """On a CPU the step runs on the main thread and a batch thread beside it costs more than it saves (paired
    benchmark runs); on an accelerator the host has slack while the device computes. The meta device stands in for
    one here (no GPU in tests): the batches arrive there, made ahead by the thread, which stops when closed."""
    import threading
    import time

    from diffinpaint.training.data import StepBatches, TrainingImages, device_batches, training_samples

    def batch_threads() -> int:
        return sum(t.name == "diffinpaint-batches" for t in threading.enumerate())

    images = TrainingImages(training_samples(demo_small, "box"), 32, "box", True, 3)
    on_cpu = device_batches(images, StepBatches(0, 4, 2, 0, 1), 0, torch.device("cpu"))
    assert next(on_cpu)[0].shape == (2, 3, 32, 32) and batch_threads() == 0
    on_cpu.close()
    ahead = device_batches(images, StepBatches(0, 4, 2, 0, 1), 0, torch.device("meta"))
    first = next(ahead)
    assert first[0].is_meta and first[0].shape == (2, 3, 32, 32) and batch_threads() == 1
    ahead.close()
    deadline = time.time() + 5
    while batch_threads() and time.time() < deadline:
        time.sleep(0.05)
    assert batch_threads() == 0


def test_opencv_runs_on_the_training_thread_while_a_cpu_trains(demo_small, tmp_path):
    """With the examples made between a CPU's steps, OpenCV's worker threads (LaMa's augmentation warps) would spin
    beside the step: the trainer holds OpenCV to one thread while it trains, and gives the setting back after."""
    import cv2

    from diffinpaint.models import trainable_class
    from diffinpaint.training.trainer import configs_from_options, train

    base, seen = trainable_class("pix2pix"), []

    class Watched(base):
        def train_step(self, batch):
            seen.append(cv2.getNumThreads())
            return super().train_step(batch)

    Watched.__name__ = Watched.__qualname__ = base.__name__
    before = cv2.getNumThreads()
    cv2.setNumThreads(2)
    try:
        cfg, opts = configs_from_options(Watched, {"data": str(demo_small), "out": str(tmp_path / "run"), **TINY})
        train(Watched, cfg, opts)
        assert seen == [1, 1] and cv2.getNumThreads() == 2
    finally:
        cv2.setNumThreads(before)


def test_batches_made_ahead_by_a_thread_raise_its_errors_and_stop_when_closed():
    import threading
    import time

    from diffinpaint.training.data import batches_ahead

    def source():
        yield 1
        yield 2
        raise ValueError("a corrupt image")

    got = []
    with pytest.raises(ValueError, match="a corrupt image"):
        for item in batches_ahead(source()):
            got.append(item)
    assert got == [1, 2]

    endless = batches_ahead(iter(range(10**9)), depth=2)
    assert [next(endless) for _ in range(3)] == [0, 1, 2]
    endless.close()
    deadline = time.time() + 5
    while any(t.name == "diffinpaint-batches" for t in threading.enumerate()) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "diffinpaint-batches" for t in threading.enumerate())
