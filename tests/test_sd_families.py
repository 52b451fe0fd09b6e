"""Every diffusion family the `sd` model drives, offline: a tiny random pipeline per family (tests/sd_tiny.py: SD 1.5
inpainting, a base 4-channel SD, SDXL inpainting, a base SDXL, SD3, FLUX.1 Fill, Kandinsky 2.2), saved with
save_pretrained and driven through `diffinpaint run --model sd --sd-model FOLDER`:

  - every pixel outside the holes untouched, outputs at the input's size;
  - the same seed gives the same bytes; batch 1 vs 3 only float noise in the holes;
  - the holes equal a direct call of the family's diffusers pipeline on the documented inputs (re-implemented here);
  - config.toml [outputs] holds the family's defaults; the manifest says latent blending / negative prompt use.
Plus `eval --models sd`, `--lora` (a tiny LoRA made here with peft), `--variant fp16`, guidance off for the empty
prompt set, and the refusals of options a family cannot honour.
"""
from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sd_tiny import SAVERS, save_tiny_kandinsky, save_tiny_lora, tiny_pipeline  # noqa: E402

from test_sd import _reference_inputs  # noqa: E402
from diffinpaint.cli import main  # noqa: E402
from diffinpaint.models.sd import FAMILIES, Settings, StableDiffusionModel  # noqa: E402
from diffinpaint.models.sd.families import detect  # noqa: E402
from diffinpaint.models.sd.prompts import load_prompt_set  # noqa: E402

FAMILY_KEYS = list(SAVERS)  # sd, sd-base, sdxl, sdxl-base, sd3, flux-fill, kandinsky2.2
RES = 64
# the defaults each family must resolve to (model cards, else diffusers): steps, guidance, strength, multiple
DEFAULTS = {"sd": (50, 7.5, 1.0, 8), "sd-base": (50, 7.5, 1.0, 8), "sdxl": (20, 8.0, 0.99, 8),
            "sdxl-base": (50, 7.5, 0.9999, 8), "sd3": (28, 7.0, 1.0, 16), "flux-fill": (50, 30.0, 1.0, 16),
            "kandinsky2.2": (150, 4.0, None, 64)}
# inpainting by the model's own mask channels, or by latent blending (a base checkpoint)
BLENDING = {"sd": False, "sd-base": True, "sdxl": False, "sdxl-base": True, "sd3": True, "flux-fill": False,
            "kandinsky2.2": False}


@pytest.fixture(scope="session")
def folder(tmp_path_factory):
    """family -> its tiny pipeline folder (made on first use; Kandinsky's prior beside it as FOLDER-prior)."""
    root = tmp_path_factory.mktemp("families")
    made: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in made:
            made[family] = Path(SAVERS[family](root / family))
        return made[family]

    return get


def family_options(family: str, folder_path: Path) -> list[str]:
    extra = ["--kandinsky-prior", f"{folder_path}-prior"] if family == "kandinsky2.2" else []
    return ["--sd-model", str(folder_path), "--steps", "2", "--resolution", str(RES), *extra]


def build(family: str, folder_path: Path, **values) -> StableDiffusionModel:
    if family == "kandinsky2.2":
        values.setdefault("kandinsky_prior", f"{folder_path}-prior")
    return StableDiffusionModel(Settings(sd_model=str(folder_path), **{"steps": 2, "resolution": RES, **values}))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Three smooth non-square photos (48x64) with one box hole each, labelled."""
    root = tmp_path_factory.mktemp("family_data")
    rng = np.random.default_rng(0)
    rows = ["image,x,y,width,height"]
    for k, rel in enumerate(["cat/a.png", "cat/b.png", "dog/c.png"]):
        coarse = torch.from_numpy(rng.random((1, 3, 4, 5))).float()
        photo = F.interpolate(coarse, size=(48, 64), mode="bilinear", align_corners=False)[0]
        (root / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((photo.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(root / "images" / rel)
        rows.append(f"{rel},{8 + 6 * k},{6 + 4 * k},{20 + 3 * k},{16}")
    (root / "masks.csv").write_text("\n".join(rows) + "\n")
    return root


def run(family, folder_path, data, out, *extra) -> Path:
    argv = ["run", "--model", "sd", *family_options(family, folder_path), "--data", str(data), "--out", str(out),
            "--device", "cpu", "--no-progress", *map(str, extra)]
    assert main(argv) == 0
    return out


def read(folder: Path, rel: str) -> np.ndarray:
    return np.array(Image.open(folder / rel))


def holes(data: Path) -> dict[str, np.ndarray]:
    rows = [line.split(",") for line in (data / "masks.csv").read_text().splitlines()[1:]]
    out = {}
    for rel, x, y, w, h in rows:
        mask = np.zeros((48, 64), bool)
        mask[int(y):int(y) + int(h), int(x):int(x) + int(w)] = True
        out[rel] = mask
    return out


# ---------------------------------------------------------------------------------------------- the reference
def reference_inputs(images, masks, size, cell=8):
    """The documented conditioning, re-implemented independently of the model (test_sd.py's): (conditioning, hole)."""
    return _reference_inputs(images, masks, size, cell)[:2]


def direct_call(family: str, folder_path: Path, images, masks, prompts, negatives, seeds) -> torch.Tensor:
    """The family's diffusers pipeline called directly, as its documentation shows, at the model size the README
    promises (short side 64, each side a multiple of the family's), then resized back."""
    import diffusers

    multiple = DEFAULTS[family][3]
    h, w = images.shape[-2:]
    size = (round(h * RES / min(h, w) / multiple) * multiple, round(w * RES / min(h, w) / multiple) * multiple)
    image_in, mask_in = reference_inputs(images, masks, size)
    steps, guidance, strength, _ = DEFAULTS[family]
    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    common = dict(image=image_in, mask_image=mask_in, height=size[0], width=size[1], num_inference_steps=2)
    if family in ("sd", "sd-base"):
        pipe = diffusers.StableDiffusionInpaintPipeline.from_pretrained(folder_path, safety_checker=None,
                                                                        requires_safety_checker=False)
    elif family in ("sdxl", "sdxl-base"):
        pipe = diffusers.StableDiffusionXLInpaintPipeline.from_pretrained(folder_path)
    elif family == "sd3":
        pipe = diffusers.StableDiffusion3InpaintPipeline.from_pretrained(folder_path)
    elif family == "flux-fill":
        pipe = diffusers.FluxFillPipeline.from_pretrained(folder_path)
    if family == "kandinsky2.2":
        decoder = diffusers.KandinskyV22InpaintPipeline.from_pretrained(folder_path)
        prior = diffusers.KandinskyV22PriorPipeline.from_pretrained(f"{folder_path}-prior")
        pipe = diffusers.KandinskyV22InpaintCombinedPipeline(
            **decoder.components, **{f"prior_{k}": v for k, v in prior.components.items()})
        pipe.set_progress_bar_config(disable=True)
        outs = []
        for i in range(len(seeds)):  # one image per call (diffusers' decoder blends a batch with image 0's latents)
            out = pipe(prompt=prompts[i], negative_prompt=negatives[i] or None, image=image_in[i:i + 1] * 2 - 1,
                       mask_image=mask_in[i:i + 1], height=size[0], width=size[1], num_inference_steps=2,
                       guidance_scale=guidance, prior_guidance_scale=4.0, prior_num_inference_steps=25,
                       generator=generators[i], output_type="np").images
            outs.append(torch.from_numpy(out).permute(0, 3, 1, 2))
        out = torch.cat(outs)
    else:
        pipe.set_progress_bar_config(disable=True)
        kwargs = dict(prompt=list(prompts), guidance_scale=guidance, generator=generators, output_type="pt", **common)
        if family != "flux-fill":  # Flux Fill has no negative prompt
            kwargs.update(negative_prompt=list(negatives), strength=strength)
        out = pipe(**kwargs).images
    return F.interpolate(out.float(), size=(h, w), mode="bicubic", antialias=True).clamp(0, 1)


# ---------------------------------------------------------------------------------------------- every family
@pytest.mark.parametrize("family", FAMILY_KEYS)
def test_family_through_the_cli(family, folder, dataset, tmp_path, capsys):
    path = folder(family)
    a = run(family, path, dataset, tmp_path / "a", "--batch-size", "3")
    b = run(family, path, dataset, tmp_path / "b", "--batch-size", "3")
    one = run(family, path, dataset, tmp_path / "one", "--batch-size", "1")
    capsys.readouterr()
    masks = holes(dataset)
    rels = sorted(masks)
    ours = {}
    for rel in rels:
        src, out_a, out_b, out_1 = (read(f, rel) for f in (dataset / "images", a / "images", b / "images",
                                                            one / "images"))
        hole = masks[rel]
        assert out_a.shape == src.shape
        assert np.array_equal(out_a[~hole], src[~hole])  # every unmasked pixel untouched
        assert out_a.tobytes() == out_b.tobytes()  # same seed, same bytes
        assert np.abs(out_a[hole].astype(int) - src[hole].astype(int)).mean() > 1  # the hole was filled
        diff = np.abs(out_a[hole].astype(int) - out_1[hole].astype(int))  # batch 3 vs 1: float noise only
        assert diff.max() <= 2 and (diff > 0).mean() <= 0.01, (family, rel, diff.max(), (diff > 0).mean())
        ours[rel] = out_a

    # the holes equal the family's own pipeline called directly on the documented inputs
    manifest = {r["image"]: r for r in map(json.loads, (a / "manifest.jsonl").read_text().splitlines())}
    images = torch.stack([torch.from_numpy(read(dataset / "images", rel)).permute(2, 0, 1).float() / 255
                          for rel in rels])
    mask_t = torch.stack([torch.from_numpy(masks[rel])[None].float() for rel in rels])
    prompts = [manifest[rel]["prompt"] for rel in rels]
    negatives = [manifest[rel]["negative_prompt"] for rel in rels]
    reference = direct_call(family, path, images, mask_t, prompts, negatives, [manifest[r]["seed"] for r in rels])
    for k, rel in enumerate(rels):
        expected = (reference[k].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        hole = masks[rel]
        diff = np.abs(ours[rel][hole].astype(int) - expected[hole].astype(int))
        assert diff.max() <= 1, (family, rel, diff.max())

    # config.toml [outputs]: the family and what its options resolved to; the manifest says how it inpaints
    outputs = tomllib.loads((a / "config.toml").read_text())["outputs"]
    steps, guidance, strength, multiple = DEFAULTS[family]
    assert outputs["model.family"] == family and outputs["model.steps"] == 2
    assert outputs["model.guidance"] == guidance and outputs["model.size_multiple"] == multiple
    assert outputs["model.strength"] == ("none" if strength is None else strength)
    assert outputs["model.inpainting"] == ("latent blending" if BLENDING[family] else "inpainting model")
    row = manifest[rels[0]]
    assert row["family"] == family and row["inpainting"] == outputs["model.inpainting"]
    assert row["negative_prompt_used"] is (family != "flux-fill")


@pytest.mark.parametrize("family", FAMILY_KEYS)
def test_family_defaults_resolved(family, folder):
    """Without --steps/--guidance/--strength/--resolution the family's defaults are in force and recorded."""
    path = folder(family)
    extra = {"kandinsky_prior": f"{path}-prior"} if family == "kandinsky2.2" else {}
    m = StableDiffusionModel(Settings(sd_model=str(path), **extra))
    steps, guidance, strength, multiple = DEFAULTS[family]
    r = m.resolved_outputs()
    assert (r["steps"], r["guidance"], r["strength"], r["size_multiple"]) == (steps, guidance, strength, multiple)
    assert r["resolution"] == FAMILIES[family].resolution or r["resolution"] == m.resolution
    assert r["dtype"] == "fp32" and FAMILIES[family].cuda_dtype == ("bf16" if family in ("sd3", "flux-fill")
                                                                     else "fp16")
    assert m.resolution % multiple == 0


def test_eval_with_a_family(folder, demo_small, tmp_path, capsys, monkeypatch):
    """`eval --models sd` with FLUX.1 Fill: the run folder, scores, and the unused negative prompt said once."""
    from diffinpaint.models.sd import pipeline

    monkeypatch.setattr(pipeline, "_SAID", set())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # LPIPS / CLIP weights: reported missing at once, no download tried
    path = folder("flux-fill")
    out = tmp_path / "ev"
    rc = main(["eval", "--models", "sd", *family_options("flux-fill", path), "--data", str(demo_small), "--out",
               str(out), "--no-fid", "--no-text", "--no-report", "--no-progress", "--device", "cpu"])
    assert rc == 0
    err = capsys.readouterr().err
    assert sum("negative prompt" in line and "not used" in line for line in err.splitlines()) == 1
    (row,) = json.loads((out / "summary.json").read_text())
    assert row["model"] == "sd" and row["n_images"] == 9 and row["rmse"] > 0 and row["psnr_full"] > 0
    manifest = (out / "runs" / "sd" / "manifest.jsonl").read_text().splitlines()
    assert len(manifest) == 9 and all(json.loads(line)["negative_prompt_used"] is False for line in manifest)
    outputs = tomllib.loads((out / "runs" / "sd" / "config.toml").read_text())["outputs"]
    assert outputs["model.family"] == "flux-fill" and outputs["model.guidance"] == 30.0


# ---------------------------------------------------------------------------------------------- options
def _fill(model, seed=5):
    g = torch.Generator().manual_seed(0)
    images = F.interpolate(torch.rand(1, 3, 4, 4, generator=g), size=(64, 64), mode="bilinear")
    masks = torch.zeros(1, 1, 64, 64)
    masks[..., 16:48, 16:48] = 1
    return model.inpaint(images, masks, seeds=[seed], labels=[None])[..., 16:48, 16:48]


@pytest.mark.parametrize("family", ["sd", "sdxl", "sd3", "flux-fill"])
def test_lora_changes_the_fill_and_scale_zero_does_not(family, folder, tmp_path):
    path = folder(family)
    lora = save_tiny_lora(path, tmp_path / "lora" / "tiny_lora.safetensors")
    plain = _fill(build(family, path))
    with_lora = build(family, path, lora=str(lora))
    assert (_fill(with_lora) - plain).abs().max() > 1e-3
    record = with_lora.resolved_outputs()["lora"]
    assert record == [{"ref": str(lora), "scale": 1.0, "sha256": record[0]["sha256"]}]
    assert len(record[0]["sha256"]) == 16
    off = build(family, path, lora=f"{lora}:0")
    torch.testing.assert_close(_fill(off), plain, atol=1e-5, rtol=0)
    # two LoRAs (a folder and a file), comma-separated, with scales
    both = build(family, path, lora=f"{lora.parent}:0.5,{lora}:0.5")
    assert [r["scale"] for r in both.resolved_outputs()["lora"]] == [0.5, 0.5]
    torch.testing.assert_close(_fill(both), _fill(with_lora), atol=1e-4, rtol=0)


def test_lora_refusals(folder, tmp_path):
    path = folder("sd")
    pickle = tmp_path / "lora.bin"
    pickle.write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="only .safetensors"):
        build("sd", path, lora=str(pickle))
    with pytest.raises(ValueError, match="no such file or folder"):
        build("sd", path, lora=str(tmp_path / "missing.safetensors"))
    with pytest.raises(ValueError, match="no LoRA loader for Kandinsky"):
        build("kandinsky2.2", folder("kandinsky2.2"), lora=str(pickle))


def test_variant_fp16(tmp_path):
    """--variant fp16 loads the *.fp16.safetensors files (half the download); the fill is the fp32 checkpoint's
    within fp16 rounding of the weights."""
    from sd_tiny import save_tiny_pipeline

    full = save_tiny_pipeline(tmp_path / "full")
    half = tmp_path / "half"
    tiny_pipeline().to(torch.float16).save_pretrained(half, safe_serialization=True, variant="fp16")
    assert list(half.glob("unet/*.fp16.safetensors"))
    m = StableDiffusionModel(Settings(sd_model=str(half), variant="fp16", steps=2, resolution=RES))
    assert m.pipe.unet.dtype == torch.float32  # fp16 files, computed in fp32 on the CPU
    assert m.output_settings()["variant"] == "fp16"
    reference = _fill(StableDiffusionModel(Settings(sd_model=str(full), steps=2, resolution=RES)))
    assert (_fill(m) - reference).abs().max() < 0.05


@pytest.mark.parametrize("family", ["sd", "sd3", "kandinsky2.2", "flux-fill"])
def test_empty_prompt_set_runs_without_guidance(family, folder):
    """The empty prompt set has nothing to guide towards: classifier-free guidance is off (one denoiser pass per
    step) unless --guidance is given. Flux Fill's guidance is a distilled input, not CFG: kept."""
    path = folder(family)
    m = build(family, path, prompt_set="empty")
    expected = FAMILIES[family].guidance if family == "flux-fill" else 1.0
    assert m.guidance == expected and m.resolved_outputs()["guidance"] == expected
    if family == "kandinsky2.2":
        assert m.prior_guidance == 1.0
    denoiser = m.pipe.unet if hasattr(m.pipe, "unet") and m.pipe.unet is not None else m.pipe.transformer
    batches = []
    denoiser.register_forward_pre_hook(lambda mod, args, kwargs: batches.append(
        (args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))).shape[0]), with_kwargs=True)
    _fill(m)
    assert batches and set(batches) == {1}  # one image, no unconditional copy
    given = build(family, path, prompt_set="empty", guidance=3.0)
    assert given.guidance == 3.0


def test_negative_prompt_unused_is_said_once(folder, capsys, monkeypatch):
    from diffinpaint.models.sd import pipeline

    monkeypatch.setattr(pipeline, "_SAID", set())  # what this process has said already
    flux, sd = folder("flux-fill"), folder("sd")
    capsys.readouterr()
    build("flux-fill", flux)
    build("flux-fill", flux)  # a second build (eval builds twice) says nothing new
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "negative prompt" in err[0] and "not used" in err[0] and "FluxFillPipeline" in err[0]
    m = build("sd", sd, guidance=1.0)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--guidance 1 turns classifier-free guidance off" in err[0]
    assert m.manifest_fields(0, [None])["negative_prompt_used"] is False
    build("sd", sd)
    build("flux-fill", flux, prompt_set="empty")  # nothing to drop, nothing said
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("family, values, match", [
    ("kandinsky2.2", {"strength": 0.5}, "has no strength"),
    ("flux-fill", {"scheduler": "ddim"}, "flow-matching"),
    ("sd3", {"tiny_vae": "x"}, "SD 1.5/2 and SDXL only"),
    ("sd", {"kandinsky_prior": "x"}, "not Kandinsky"),
    ("flux-fill", {"resolution": 72}, "multiple of 16"),
    ("kandinsky2.2", {"resolution": 96}, "multiple of 64"),
])
def test_options_a_family_cannot_honour_are_refused(family, values, match, folder):
    with pytest.raises(ValueError, match=match):
        build(family, folder(family), **values)


def test_region_crop_with_a_16_multiple_family(folder):
    """--region crop for Flux: every crop sized like a photo (aspect kept, sides multiples of 16), only crops
    touched."""
    m = build("flux-fill", folder("flux-fill"), region="crop", crop_margin=8)
    h, w = 80, 300
    images, masks = torch.rand(1, 3, h, w), torch.zeros(1, 1, h, w)
    masks[..., 10:30, 10:40] = 1
    masks[..., 40:70, 230:290] = 1
    pred = m.inpaint(images, masks, seeds=[1], labels=[None])
    assert pred.shape == images.shape
    from diffinpaint.models.sd import hole_crop_boxes

    boxes = hole_crop_boxes(masks[0, 0], RES, 8)
    assert len(boxes) == 2
    outside = torch.ones(h, w, dtype=torch.bool)
    for y0, x0, y1, x1 in boxes:
        outside[y0:y1, x0:x1] = False
        assert all(side % 16 == 0 for side in m.model_size(y1 - y0, x1 - x0))
    assert torch.equal(pred[0][:, outside], images[0][:, outside])


def test_kandinsky_combined_folder_needs_no_prior_and_fills_the_same(folder, tmp_path):
    combined, _ = save_tiny_kandinsky(tmp_path / "combined", combined=True)
    a = _fill(StableDiffusionModel(Settings(sd_model=str(combined), steps=2, resolution=RES)))
    b = _fill(build("kandinsky2.2", folder("kandinsky2.2")))  # same seeds -> same weights, decoder + prior folders
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_detect_families_from_model_index():
    sd3 = {"in_channels": 16, "sample_size": 128}
    assert detect("StableDiffusion3Pipeline", sd3, "x").key == "sd3"
    assert detect("StableDiffusion3Pipeline", {**sd3, "qk_norm": "rms_norm"}, "x").key == "sd3.5-large"
    assert detect("StableDiffusion3Pipeline", {**sd3, "qk_norm": "rms_norm", "dual_attention_layers": [0, 1]},
                  "x").key == "sd3.5-medium"
    assert detect("FluxFillPipeline", {"in_channels": 384}, "x").key == "flux-fill"
    assert detect("StableDiffusionXLPipeline", {"in_channels": 4, "sample_size": 128}, "x").key == "sdxl-base"
    assert detect("StableDiffusionInpaintPipeline", {"in_channels": 9, "sample_size": 64}, "x").key == "sd"
    assert detect("KandinskyV22InpaintCombinedPipeline", {"in_channels": 9}, "x").key == "kandinsky2.2"
    for name, config, match in [("FluxPipeline", {"in_channels": 64}, "FLUX.1-Fill-dev"),
                                ("KandinskyV22Pipeline", {"in_channels": 4}, "decoder-inpaint"),
                                ("StableDiffusionUpscalePipeline", {"in_channels": 7, "sample_size": 96},
                                 "7 input channels"),
                                ("PixArtAlphaPipeline", {"in_channels": 4}, "not a diffusion inpainter")]:
        with pytest.raises(ValueError, match=match):
            detect(name, config, "x")


def test_prompt_reaches_kandinsky_through_the_prior(folder):
    """Kandinsky's decoder takes no text: the prompt changes the fill only through the prior's image embedding."""
    path = folder("kandinsky2.2")
    m = build("kandinsky2.2", path)
    natural = _fill(m)
    m.prompts = load_prompt_set("empty")
    assert (_fill(m) - natural).abs().max() > 1e-4
