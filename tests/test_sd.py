"""Stable Diffusion model: offline, on a tiny random inpainting pipeline saved to a folder (tests/sd_tiny.py).

Invariants rather than pixel slices: output size, determinism, batch-size independence, parity with a direct
diffusers call, and clear errors for bad checkpoints, prompt sets and options.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sd_tiny import save_tiny_pipeline, save_tiny_vae  # noqa: E402

from diffinpaint.util.imageops import resize_masks  # noqa: E402
from diffinpaint.runner import toml_safe  # noqa: E402
from diffinpaint.util.options import add_flags, build, declared, given  # noqa: E402
from diffinpaint.models.sd import (  # noqa: E402
    Settings,
    StableDiffusionModel,
    build_clip_tokenizer,
    hole_crop_boxes,
)
from diffinpaint.models.sd.prompts import available_prompt_sets, load_prompt_set  # noqa: E402

STEPS = 2


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> str:
    return str(save_tiny_pipeline(tmp_path_factory.mktemp("sd_tiny") / "pipe"))


@pytest.fixture(scope="session")
def model(tiny_folder) -> StableDiffusionModel:
    """The default settings (512 px), as a user gets them."""
    return StableDiffusionModel(Settings(sd_model=tiny_folder, steps=STEPS), device="cpu")


@pytest.fixture(scope="session")
def model256(tiny_folder) -> StableDiffusionModel:
    """Same at --resolution 256: 4x less work for tests that run many images."""
    return StableDiffusionModel(Settings(sd_model=tiny_folder, steps=STEPS, resolution=256), device="cpu")


def make_inputs(n: int, h: int = 192, w: int = 256, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    # smooth images (a random model turns pure noise into pure noise; gradients are more telling)
    base = torch.rand(n, 3, h // 16, w // 16, generator=g)
    images = F.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
    masks = torch.zeros(n, 1, h, w)
    for i in range(n):
        y, x = 20 + 10 * i, 30 + 15 * i
        masks[i, :, y:y + 60, x:x + 80] = 1
    return images, masks


def composite(pred, images, masks):
    return masks * pred + (1 - masks) * images


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


# ---------------------------------------------------------------------------------------------- core behaviour
def test_output_has_input_size_and_is_an_image(model):
    images, masks = make_inputs(2, 150, 230)  # odd, non-square size: resized to 512 and back
    pred = model.inpaint(images, masks, seeds=[1, 2], labels=[None, None])
    assert pred.shape == images.shape and pred.dtype == torch.float32
    assert torch.isfinite(pred).all() and pred.min() >= 0 and pred.max() <= 1
    hole = masks.expand_as(images) > 0
    assert (pred[hole] - images[hole]).abs().mean() > 1e-3  # the hole was actually filled


def test_same_seed_same_bytes_other_seed_other_fill(model256):
    model = model256
    images, masks = make_inputs(1)
    a = to_uint8(composite(model.inpaint(images, masks, seeds=[7], labels=[None]), images, masks))
    b = to_uint8(composite(model.inpaint(images, masks, seeds=[7], labels=[None]), images, masks))
    c = to_uint8(composite(model.inpaint(images, masks, seeds=[8], labels=[None]), images, masks))
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


def test_batch_size_does_not_change_the_fill(model256):
    model = model256
    images, masks = make_inputs(3)
    seeds = [11, 12, 13]
    batched = model.inpaint(images, masks, seeds=seeds, labels=[None] * 3)
    single = torch.cat([model.inpaint(images[i:i + 1], masks[i:i + 1], seeds=[seeds[i]], labels=[None])
                        for i in range(3)])
    a, b = to_uint8(composite(batched, images, masks)), to_uint8(composite(single, images, masks))
    hole = np.broadcast_to(masks.numpy() > 0, a.shape)
    assert (a[~hole] == b[~hole]).all()
    diff = np.abs(a[hole].astype(int) - b[hole].astype(int))
    # README (reproducibility): only float noise, at most ±2 grey levels on at most 1% of hole values
    assert diff.max() <= 2 and (diff > 0).mean() <= 0.01


def _reference_inputs(images, masks, size, cell=8):
    """The documented conditioning, re-implemented here independently of the model's helpers: photo resized
    (bicubic, antialias), hole = model pixels whose bicubic footprint reads a hole pixel (hole widened by the kernel's
    reach, area-resized, > 0), grown to whole 8x8 latent cells, painted grey after the resize."""
    h, w = images.shape[-2:]
    reach = [0 if a == b else int(np.ceil(2 * max(a / b, 1))) + 1 for a, b in zip((h, w), size)]
    wide = F.max_pool2d(masks, (2 * reach[0] + 1, 2 * reach[1] + 1), stride=1, padding=tuple(reach))
    hole = (F.interpolate(wide, size=size, mode="area") > 0).float()
    hole = F.interpolate(F.max_pool2d(hole, cell), scale_factor=cell, mode="nearest")
    photo = F.interpolate(images, size=size, mode="bicubic", antialias=True).clamp(0, 1)
    return photo * (1 - hole) + 0.5 * hole, hole, photo


def test_parity_with_a_direct_diffusers_call(model, tiny_folder):
    """The hole equals a plain StableDiffusionInpaintPipeline call after the documented resize and composite,
    both re-implemented here independently of the model's helpers. 300x200 keeps its aspect: 768x512."""
    from diffusers import StableDiffusionInpaintPipeline

    images, masks = make_inputs(2, 300, 200)
    seeds = [3, 4]
    ours = composite(model.inpaint(images, masks, seeds=seeds, labels=[None, None]), images, masks)

    pipe = StableDiffusionInpaintPipeline.from_pretrained(tiny_folder, safety_checker=None,
                                                          requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    image_in, mask_in, _ = _reference_inputs(images, masks, (768, 512))
    prompt = load_prompt_set("natural")
    out = pipe(prompt=[prompt.prompt] * 2, negative_prompt=[prompt.negative_prompt] * 2, image=image_in,
               mask_image=mask_in, height=768, width=512, num_inference_steps=STEPS, guidance_scale=7.5, strength=1.0,
               generator=[torch.Generator("cpu").manual_seed(s) for s in seeds], output_type="pt").images
    back = F.interpolate(out.float(), size=(300, 200), mode="bicubic", antialias=True).clamp(0, 1)
    reference = composite(back, images, masks)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


def _spy_calls(monkeypatch):
    """Records the keyword arguments of every pipeline call the model makes (through families.call)."""
    from diffinpaint.models.sd import families

    calls, real = [], families.call

    def spy(family, pipe, **kwargs):
        calls.append(kwargs)
        return real(family, pipe, **kwargs)

    monkeypatch.setattr(families, "call", spy)
    return calls


@pytest.mark.parametrize("size, resolution", [((150, 230), 256), ((300, 200), 256), ((256, 384), 256),
                                              ((64, 64), 64)])
def test_known_pixels_seen_are_the_resized_photo_and_hold_nothing_of_the_hole(tiny_folder, monkeypatch, size,
                                                                              resolution):
    """No grey halo: every pixel outside the model's hole is the resized photo, bit for bit. No leak: the hole's own
    pixels (what the model must predict) change nothing the pipeline is given."""
    m = StableDiffusionModel(Settings(sd_model=tiny_folder, steps=1, resolution=resolution))
    calls = _spy_calls(monkeypatch)
    images, masks = make_inputs(1, *size)
    m.inpaint(images, masks, seeds=[0], labels=[None])
    seen, hole = calls[0]["images"], calls[0]["masks"]
    expected_image, expected_hole, photo = _reference_inputs(images, masks, tuple(seen.shape[-2:]))
    assert torch.equal(hole, expected_hole)
    known = (hole == 0).expand_as(seen)
    assert known.any() and torch.equal(seen[known], photo[known])  # the resized photo, no grey mixed in
    assert (seen[~known] == 0.5).all()
    torch.testing.assert_close(seen, expected_image, atol=0, rtol=0)
    # the hole's content does not reach the pipeline
    other = images.clone()
    other[masks.expand_as(images) > 0] = torch.rand(int(masks.sum()) * 3)
    m.inpaint(other, masks, seeds=[0], labels=[None])
    assert torch.equal(calls[1]["images"], seen) and torch.equal(calls[1]["masks"], hole)


def test_non_square_photo_keeps_its_aspect(tiny_folder, monkeypatch):
    """A 256x384 photo is inpainted at 256x384 (--resolution 256: no resize at all) and at 512x768 by default; it
    comes back 256x384 and, where the model's output is a smooth ramp, unsquashed."""
    calls = _spy_calls(monkeypatch)
    images, masks = make_inputs(1, 256, 384)
    for resolution, expected in [(256, (256, 384)), (None, (512, 768))]:
        m = StableDiffusionModel(Settings(sd_model=tiny_folder, steps=1, resolution=resolution))
        out = m.inpaint(images, masks, seeds=[0], labels=[None])
        assert out.shape == images.shape
        assert tuple(calls[-1]["images"].shape[-2:]) == expected
    # the pipeline output is resized back uniformly: a horizontal ramp from the model stays a ramp of the same slope
    from diffinpaint.models.sd import families

    ramp = torch.linspace(0, 1, 768).expand(1, 3, 512, 768).clone()
    monkeypatch.setattr(families, "call", lambda *a, **k: ramp)
    out = m.inpaint(images, masks, seeds=[0], labels=[None])
    assert (out[0, :, 100, 40:300].diff(dim=-1) - 1 / 383).abs().max() < 2e-3


def test_model_size_keeps_aspect_and_multiples():
    from diffinpaint.models.sd import model_size

    assert model_size(256, 384, 512, 8) == (512, 768)
    assert model_size(384, 256, 256, 8) == (384, 256)
    assert model_size(300, 200, 512, 8) == (768, 512)
    assert model_size(1000, 777, 1024, 16) == (1312, 1024)  # 1318 -> 1312: each side a multiple of 16
    assert model_size(500, 1000, 768, 64) == (768, 1536)
    for h, w in [(37, 1000), (999, 1001), (64, 64)]:
        H, W = model_size(h, w, 512, 16)
        assert H % 16 == 0 and W % 16 == 0 and min(H, W) in (512, 496, 528) and abs(H / W - h / w) < 0.1 * h / w


def test_empty_mask_returns_the_input(model256):
    model = model256
    images, _ = make_inputs(1)
    masks = torch.zeros(1, 1, *images.shape[-2:])
    assert torch.equal(model.inpaint(images, masks, seeds=[0], labels=[None]), images)


def test_region_crop_keeps_size_and_only_touches_crops(tiny_folder):
    m = StableDiffusionModel(Settings(sd_model=tiny_folder, steps=STEPS, region="crop", crop_margin=16,
                                      resolution=256))
    h, w = 500, 1000
    images = torch.rand(1, 3, h, w)
    masks = torch.zeros(1, 1, h, w)
    masks[..., 40:90, 50:120] = 1  # two holes far apart -> two crops
    masks[..., 400:450, 900:980] = 1
    pred = m.inpaint(images, masks, seeds=[5], labels=[None])
    assert pred.shape == images.shape
    boxes = hole_crop_boxes(masks[0, 0], 256, 16)
    assert len(boxes) == 2
    outside = torch.ones(h, w, dtype=torch.bool)
    for y0, x0, y1, x1 in boxes:
        outside[y0:y1, x0:x1] = False
    assert torch.equal(pred[0][:, outside], images[0][:, outside])
    assert not torch.equal(pred[0][:, 40:90, 50:120], images[0][:, 40:90, 50:120])
    assert m.output_settings()["region"] == "crop"


def test_hole_crop_boxes_cover_every_hole_without_overlap():
    rng = np.random.default_rng(0)
    for _ in range(20):
        h, w = rng.integers(300, 1500, size=2)
        mask = torch.zeros(h, w)
        for _ in range(rng.integers(1, 6)):
            y, x = rng.integers(0, h - 40), rng.integers(0, w - 40)
            mask[y:y + rng.integers(5, 40), x:x + rng.integers(5, 40)] = 1
        boxes = hole_crop_boxes(mask, 256, 32)
        covered = torch.zeros(h, w, dtype=torch.int32)
        for y0, x0, y1, x1 in boxes:
            assert 0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w
            assert y1 - y0 >= min(256, h) and x1 - x0 >= min(256, w)  # at least the model's resolution
            covered[y0:y1, x0:x1] += 1
        assert covered.max() <= 1  # no overlap: each hole pixel is painted by one crop
        assert (covered[mask > 0] == 1).all()


def test_resized_mask_never_loses_a_hole():
    for size in [(1000, 777), (300, 200), (512, 512)]:
        for _ in range(10):
            m = torch.zeros(1, 1, *size)
            y, x = np.random.randint(0, size[0]), np.random.randint(0, size[1])
            m[..., y, x] = 1  # a single hole pixel must survive any resize
            small = resize_masks(m, (512, 512))
            assert small.sum() >= 1 and set(small.unique().tolist()) <= {0.0, 1.0}
    m = torch.zeros(1, 1, 1024, 1024)
    m[..., 100:301, 100:301] = 1
    assert resize_masks(m, (512, 512)).sum() >= (201 / 2) ** 2  # never shrinks in area


# ---------------------------------------------------------------------------------------------- prompts
def test_prompt_sets_shipped_and_recorded(model):
    assert {"natural", "animal", "empty"} <= set(available_prompt_sets())
    natural = load_prompt_set("natural")
    assert natural.prompt == "Natural looking seamless image, no text"
    assert "watermark" in natural.negative_prompt and "text" in natural.negative_prompt
    assert load_prompt_set("animal").for_label("cat")[0] == "Real image of a cat, no text"
    assert load_prompt_set("empty").for_label(None) == ("", "")
    fields = model.manifest_fields(0, [None])
    assert fields == {"prompt": natural.prompt, "negative_prompt": natural.negative_prompt,
                      "negative_prompt_used": True, "family": "sd", "inpainting": "inpainting model"}


def test_label_prompt_needs_labels(tiny_folder):
    m = StableDiffusionModel(Settings(sd_model=tiny_folder, steps=STEPS, prompt_set="animal"))
    m.check_labels(["cat", "dog"])
    with pytest.raises(ValueError, match=r"animal\.toml.*\{label\}.*1 of 2"):
        m.check_labels(["cat", None])
    assert m.manifest_fields(1, ["cat", "dog"])["prompt"] == "Real image of a dog, no text"


def test_prompt_set_errors_name_the_file(tmp_path, tiny_folder):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ValueError, match="nope.toml"):
        StableDiffusionModel(Settings(sd_model=tiny_folder, prompt_set=str(missing)))
    with pytest.raises(ValueError, match="unknown prompt set 'nope'"):
        load_prompt_set("nope")
    bad = tmp_path / "bad.toml"
    for text, why in [('prompt = "unclosed', "not valid TOML"), ('negative_prompt = "x"', "needs a string"),
                      ('prompt = "a {animal}"', "unknown placeholder"), ('prompt = "a"\ncolour = 1', "unknown keys")]:
        bad.write_text(text)
        with pytest.raises(ValueError, match=f"bad.toml.*{why}") as err:
            load_prompt_set(str(bad))
        assert "\n" not in str(err.value)
    bad.write_text('prompt = "A photo of a {label}"\nnegative_prompt = "blur"')
    custom = load_prompt_set(str(bad))
    assert custom.uses_label and custom.for_label("fox") == ("A photo of a fox", "blur")


# ---------------------------------------------------------------------------------------------- checkpoint errors
def test_not_an_inpainting_unet_is_refused(tmp_path):
    folder = save_tiny_pipeline(tmp_path / "depth", unet_in_channels=5)  # e.g. a depth-to-image UNet
    with pytest.raises(ValueError, match="not an inpainting checkpoint.*5 input channels"):
        StableDiffusionModel(Settings(sd_model=str(folder)))


def test_uncached_hub_id_offline_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError) as err:
        StableDiffusionModel(Settings(sd_model="nobody-here/no-such-inpainting-model"))
    msg = str(err.value)
    assert "\n" not in msg and "not in the Hugging Face cache" in msg and "--sd-model DIR" in msg


def test_folder_without_pipeline_and_bad_paths(tmp_path):
    with pytest.raises(ValueError, match="model_index.json"):
        StableDiffusionModel(Settings(sd_model=str(tmp_path)))
    with pytest.raises(ValueError, match="no such folder"):
        StableDiffusionModel(Settings(sd_model=str(tmp_path / "missing" / "pipe")))


@pytest.mark.parametrize("change, match", [
    ({"attention": "xformers"}, "xformers"),
    ({"dtype": "fp16"}, "fp16 on cpu"),
    ({"cpu_offload": True}, "CUDA"),
    ({"steps": 0}, "--steps 0"),
    ({"strength": 1.5}, "--strength"),
    ({"steps": 1, "strength": 0.5}, "leaves no denoising step"),
    ({"scheduler": "nope"}, "--scheduler nope"),
    ({"resolution": 500}, "multiple of 8"),
])
def test_bad_options_are_value_errors(tiny_folder, change, match):
    with pytest.raises(ValueError, match=match):
        StableDiffusionModel(Settings(sd_model=tiny_folder, **change), device="cpu")


def test_lcm_lora_without_peft_is_a_clear_error(tiny_folder):
    try:
        import peft  # noqa: F401
        pytest.skip("peft is installed")
    except ImportError:
        pass
    with pytest.raises(ValueError, match="--lcm-lora needs the peft package"):
        StableDiffusionModel(Settings(sd_model=tiny_folder, lcm_lora="latent-consistency/lcm-lora-sdv1-5"))


# ---------------------------------------------------------------------------------------------- options
def test_scheduler_resolution_and_tiny_vae(tiny_folder, tmp_path):
    vae = save_tiny_vae(tmp_path / "taesd")
    m = StableDiffusionModel(Settings(sd_model=tiny_folder, steps=STEPS, scheduler="euler_a", resolution=256,
                                      tiny_vae=str(vae)))
    assert type(m.pipe.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    assert type(m.pipe.vae).__name__ == "AutoencoderTiny"
    images, masks = make_inputs(2)
    a = m.inpaint(images, masks, seeds=[1, 2], labels=[None, None])
    b = m.inpaint(images[1:], masks[1:], seeds=[2], labels=[None])  # ancestral noise is per image too
    assert a.shape == images.shape
    assert (to_uint8(a[1:]).astype(int) - to_uint8(b).astype(int)).__abs__().max() <= 2
    settings = m.output_settings()
    assert settings["resolution"] == 256 and settings["scheduler"] == "euler_a" and settings["tiny_vae"] == str(vae)


def test_output_settings_complete_and_toml_safe(model, tiny_folder):
    s = model.output_settings()
    for key in ["sd_model", "weights_fingerprint", "prompt_set", "steps", "guidance", "strength", "scheduler",
                "dtype", "resolution", "region", "diffusers"]:
        assert key in s, key
    assert s["sd_model"] == tiny_folder and s["dtype"] == "fp32" and s["resolution"] == 512
    assert s["prompt_set"]["prompt"] == "Natural looking seamless image, no text"

    def no_none(v):
        return all(no_none(x) for x in v.values()) if isinstance(v, dict) else v is not None
    assert no_none(toml_safe(s))  # config.toml has no null: unset options are written as "none"
    assert s["tiny_vae"] is None and toml_safe(s)["tiny_vae"] == "none"


def test_add_arguments_match_settings_fields():
    parser = argparse.ArgumentParser()
    add_flags(parser, Settings)
    fields = {f.name for f in dataclasses.fields(Settings)}
    assert {o.name for o in declared(Settings)} == fields  # every setting is a declared option with a flag
    args = parser.parse_args(["--sd-model", "x/y", "--steps", "4", "--compile", "--scheduler", "dpm++",
                              "--region", "crop", "--prompt-set", "animal"])
    typed = given(args)  # only what was typed; the declaration keeps the defaults
    assert typed == {"sd_model": "x/y", "steps": 4, "compile": True, "scheduler": "dpm++", "region": "crop",
                     "prompt_set": "animal"}
    settings = build(Settings, typed)
    assert settings.cpu_offload is False and settings.guidance is None  # None = the family's default


def test_clip_tokenizer_matches_open_clip():
    import open_clip

    ours = build_clip_tokenizer()
    reference = open_clip.get_tokenizer("ViT-L-14")
    for text in ["Natural looking seamless image, no text", "Real image of a golden retriever!", "naïve café"]:
        ids = ours(text).input_ids
        ref = reference([text])[0].tolist()
        assert ids == ref[: len(ids)] and len(ours) == 49408


# ---------------------------------------------------------------------------------------------- through the CLI
def _dataset(root: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for rel, size in [("cat/a.png", (120, 160)), ("cat/b.png", (96, 96)), ("dog/c.png", (120, 160))]:
        (root / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / "images" / rel)
    (root / "masks.csv").write_text("image,x,y,width,height\ncat/a.png,10,20,40,30\ncat/b.png,5,5,30,30\n"
                                    "dog/c.png,60,50,40,40\n")
    return root


def test_cli_run(tmp_path, tiny_folder):
    cli = pytest.importorskip("diffinpaint.cli")
    from PIL import Image

    data = _dataset(tmp_path / "data")
    out = tmp_path / "run"
    argv = ["run", "--model", "sd", "--sd-model", tiny_folder, "--data", str(data), "--out", str(out),
            "--steps", "2", "--resolution", "256", "--prompt-set", "animal", "--device", "cpu", "--batch-size", "2",
            "--no-progress"]
    assert cli.main(argv) == 0
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert {r["image"]: r["prompt"] for r in lines} == {"cat/a.png": "Real image of a cat, no text",
                                                        "cat/b.png": "Real image of a cat, no text",
                                                        "dog/c.png": "Real image of a dog, no text"}
    assert all("watermark" in r["negative_prompt"] for r in lines)
    for rel in ["cat/a.png", "cat/b.png", "dog/c.png"]:
        src, res = Image.open(data / "images" / rel), Image.open(out / "images" / rel)
        assert src.size == res.size
        a, b = np.asarray(src), np.asarray(res)
        assert (a[:5] == b[:5]).all()  # outside the holes: the input, bit for bit (runner composite)


@pytest.mark.slow
def test_full_size_random_sd15_architecture():
    """The shipped configs build the real SD 1.5 inpainting architecture (parameter counts of the release)."""
    from diffinpaint.models.sd import build_random_pipeline

    pipe = build_random_pipeline()
    count = {name: sum(p.numel() for p in getattr(pipe, name).parameters()) for name in ["unet", "vae",
                                                                                        "text_encoder"]}
    assert count["unet"] == 859_535_364 and count["vae"] == 83_653_863 and count["text_encoder"] == 123_060_480


def test_a_hole_narrower_than_a_latent_cell_reaches_the_unet(tiny_folder):
    """A 2-px stroke at model resolution: the pipeline samples one pixel per 8x8 latent cell, so without growing the
    mask to whole cells the UNet's mask channel would be empty while the image there is grey."""
    from diffinpaint.models.sd.pipeline import grow_to_latent_cells

    model = StableDiffusionModel(Settings(sd_model=tiny_folder, steps=1, resolution=64), device="cpu")
    seen = []
    unet_forward = model.pipe.unet.forward

    def spy(sample, *args, **kwargs):
        seen.append(sample[:, 4].detach().clone())  # 9 channels: latents (4), mask (1), masked-image latents (4)
        return unet_forward(sample, *args, **kwargs)

    model.pipe.unet.forward = spy
    images, masks = make_inputs(1, 64, 64)
    masks.zero_()
    masks[..., 10:50, 3:5] = 1  # columns 3-4: the nearest sample of cell 0 is column 0, of cell 1 column 8
    model.inpaint(images, masks, seeds=[0], labels=[None])
    mask_channel = seen[0][0]
    assert mask_channel.shape == (8, 8)
    assert mask_channel[1:7, 0].min() == 1 and mask_channel.sum() > 0
    # without the growth the same stroke disappears from the latent grid (what the pipeline would do to it)
    nearest = F.interpolate(masks, size=(8, 8))
    assert nearest.sum() == 0
    grown = grow_to_latent_cells(masks, 8)
    assert grown[..., 8:56, 0:8].min() == 1 and grown[..., :, 8:].sum() == 0
