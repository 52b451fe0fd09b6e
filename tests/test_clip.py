"""clip_i / clip_i_bbox / clip_t with random open_clip weights (no pretrained weights here): the toolkit's numbers
equal the formula applied to open_clip's own encode_image / encode_text, and clip_t equals torchmetrics' own
`clip_score` run on the same open_clip model (handed to it as a callable); the default model's resolution (OpenAI's
ViT-B/32 with QuickGELU), the Hugging Face cache lookup, and null with one warning without weights."""
from __future__ import annotations

import json
import math
import shutil
import types
from pathlib import Path

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch
from PIL import Image

from diffinpaint.cli import main
from diffinpaint.data import load_dataset
from diffinpaint.evaluation import clip as cliplib
from diffinpaint.models import MODELS
from diffinpaint.models.classical import TeleaModel

TINY = "tiny-test-clip"  # an open_clip architecture small enough for a CPU test, ViT-B-32's image size and tokenizer
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
PROMPT = "Natural looking seamless image of a {label}, no text"


class PromptedTelea(TeleaModel):
    """Telea that records a prompt per image in the manifest, as SD does."""

    name = "prompted_telea"

    def manifest_fields(self, index, labels):
        return {"prompt": PROMPT.replace("{label}", labels[index] or ""), "negative_prompt": "text"}


class EmptyPromptTelea(TeleaModel):
    name = "empty_prompt_telea"

    def manifest_fields(self, index, labels):
        return {"prompt": "", "negative_prompt": ""}


MODELS.update({"prompted_telea": "test_clip:PromptedTelea", "empty_prompt_telea": "test_clip:EmptyPromptTelea"})


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """The tiny architecture registered with open_clip and random weights saved as open_clip's safetensors."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("clip")
    (root / f"{TINY}.json").write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(root / f"{TINY}.json")
    torch.manual_seed(0)
    model = open_clip.create_model(TINY, pretrained=None)
    path = root / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def reference_model(path: Path):
    """open_clip's own model, transform and tokenizer, loading the file the way open_clip does."""
    model, _, preprocess = open_clip.create_model_and_transforms(TINY, pretrained=str(path))
    return model.eval(), preprocess, open_clip.get_tokenizer(TINY)


def encode_image(reference, rgb: np.ndarray) -> torch.Tensor:
    model, preprocess, _ = reference
    with torch.no_grad():
        return model.encode_image(preprocess(Image.fromarray(rgb))[None])[0].double()


def encode_text(reference, text: str) -> torch.Tensor:
    model, _, tokenizer = reference
    with torch.no_grad():
        return model.encode_text(tokenizer([text]))[0].double()


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def eval_cli(*args, data: Path, out: Path) -> int:
    return main(["eval", "--data", str(data), "--out", str(out), "--no-progress", "--no-fid", "--no-text",
                 *map(str, args)])


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


# ---------------------------------------------------------------------------------------------- the model


def test_default_is_openais_vit_b32_with_quickgelu():
    arch, tag = cliplib.parse_model(cliplib.DEFAULT_MODEL)
    assert (arch, tag) == ("ViT-B-32", "openai")
    assert cliplib._pretrained_cfg(arch, tag)["quick_gelu"] is True
    assert cliplib.hub_repo(arch, tag) == "timm/vit_base_patch32_clip_224.openai"
    assert cliplib.parse_model("ViT-B-32:laion2b_s34b_b79k") == ("ViT-B-32", "laion2b_s34b_b79k")


@pytest.mark.parametrize("spec, message", [("ViT-Q-99", "not an open_clip architecture"),
                                           ("ViT-B-32:nope", "no weights tagged nope")])
def test_unknown_models_and_tags_are_refused(spec, message):
    from diffinpaint.util.errors import UserError

    with pytest.raises(UserError, match=message):
        cliplib.parse_model(spec)


def test_embeddings_equal_open_clips_own_encoders(tiny_weights):
    clip = cliplib.CLIP(TINY, tiny_weights)
    reference = reference_model(tiny_weights)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((16, 16), (40, 24), (300, 200))]
    ours = clip.encode_images(images)
    for k, image in enumerate(images):
        expected = encode_image(reference, image)
        np.testing.assert_allclose(ours[k], (expected / expected.norm()).numpy(), atol=1e-5)
    texts = ["a cat", PROMPT]
    ours = clip.encode_texts(texts)
    for k, text in enumerate(texts):
        expected = encode_text(reference, text)
        np.testing.assert_allclose(ours[k], (expected / expected.norm()).numpy(), atol=1e-5)


def test_weights_are_found_in_the_hugging_face_cache_with_the_tags_activation(tiny_weights, tmp_path, monkeypatch):
    import huggingface_hub.constants
    from open_clip.pretrained import _PRETRAINED, _pcfg

    monkeypatch.setitem(_PRETRAINED, TINY, {"mytag": _pcfg(hf_hub="test-org/tiny-clip/", quick_gelu=True)})
    snapshot = tmp_path / "hub" / "models--test-org--tiny-clip" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    shutil.copy(tiny_weights, snapshot / cliplib.WEIGHTS_NAME)
    (tmp_path / "hub" / "models--test-org--tiny-clip" / "refs").mkdir()
    (tmp_path / "hub" / "models--test-org--tiny-clip" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    clip = cliplib.CLIP(f"{TINY}:mytag")
    assert clip.name == f"{TINY}:mytag"
    assert type(clip.model.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(cliplib.CLIPUnavailable, match="test-org/tiny-clip"):
        cliplib.CLIP(f"{TINY}:mytag")


# ---------------------------------------------------------------------------------------------- eval


@pytest.fixture(scope="module")
def clip_eval(demo_small, tiny_weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("clip_eval") / "ev"
    assert eval_cli("--models", "telea,prompted_telea,empty_prompt_telea", "--clip-model", TINY, "--clip-weights",
                    tiny_weights, "--no-report", data=demo_small, out=out) == 0
    return demo_small, out


def test_clip_i_is_the_cosine_of_open_clips_crop_embeddings(clip_eval, tiny_weights):
    data, out = clip_eval
    reference = reference_model(tiny_weights)
    per_image = pd.read_csv(out / "per_image.csv")
    rows = per_image[per_image["model"] == "telea"].set_index("image")
    for sample in load_dataset(data).samples:
        gt = sample.load_image()
        pred = load_rgb(out / "runs" / "telea" / "images" / sample.output_relpath)
        expected = np.mean([cos(encode_image(reference, pred[y:y + h, x:x + w]),
                                encode_image(reference, gt[y:y + h, x:x + w])) for x, y, w, h in sample.boxes])
        assert rows.loc[sample.image_id, "clip_i"] == pytest.approx(expected, abs=1e-5)
        assert math.isnan(rows.loc[sample.image_id, "clip_i_bbox"])  # rectangular holes: clip_i is the crop
    summary = {r["model"]: r for r in json.loads((out / "summary.json").read_text())}
    # summary = mean over holes (every image has two)
    assert summary["telea"]["clip_i"] == pytest.approx(rows["clip_i"].mean(), abs=1e-12)
    assert summary["telea"]["clip_i_bbox"] is None and summary["telea"]["clip_note"] == ""


class _OpenClipForTorchmetrics:
    """open_clip's model behind the two calls torchmetrics' clip_score makes on a Hugging Face CLIPModel."""

    def __init__(self, model):
        self.model, self.config = model, types.SimpleNamespace()

    def to(self, device):
        return self

    def get_image_features(self, pixel_values):
        return self.model.encode_image(pixel_values)

    def get_text_features(self, input_ids, attention_mask=None):
        return self.model.encode_text(input_ids)


class _OpenClipProcessor:
    def __init__(self, preprocess, tokenizer):
        self.preprocess, self.tokenizer = preprocess, tokenizer

    def __call__(self, images=None, text=None, return_tensors="pt", padding=True):
        if images is not None:
            pil = [Image.fromarray(i.permute(1, 2, 0).numpy()) for i in images]
            return {"pixel_values": torch.stack([self.preprocess(p) for p in pil])}
        ids = self.tokenizer(text)
        return {"input_ids": ids, "attention_mask": (ids != 0).long()}


def test_clip_t_equals_torchmetrics_clip_score_and_the_formula(clip_eval, tiny_weights):
    from torchmetrics.functional.multimodal import clip_score

    data, out = clip_eval
    reference = reference_model(tiny_weights)
    model, preprocess, tokenizer = reference
    handed = lambda: (_OpenClipForTorchmetrics(model), _OpenClipProcessor(preprocess, tokenizer))  # noqa: E731
    per_image = pd.read_csv(out / "per_image.csv")
    rows = per_image[per_image["model"] == "prompted_telea"].set_index("image")
    manifest = {json.loads(line)["image"]: json.loads(line)["prompt"]
                for line in (out / "runs" / "prompted_telea" / "manifest.jsonl").read_text().splitlines()}
    values = []
    for sample in load_dataset(data).samples:
        pred = load_rgb(out / "runs" / "prompted_telea" / "images" / sample.output_relpath)
        prompt = manifest[sample.image_id]
        assert prompt == PROMPT.replace("{label}", sample.label)
        formula = max(100 * cos(encode_image(reference, pred), encode_text(reference, prompt)), 0.0)
        with torch.no_grad():
            theirs = float(clip_score(torch.from_numpy(pred.copy()).permute(2, 0, 1), prompt, handed))
        assert rows.loc[sample.image_id, "clip_t"] == pytest.approx(formula, abs=1e-4)
        assert rows.loc[sample.image_id, "clip_t"] == pytest.approx(theirs, abs=1e-4)
        values.append(formula)
    summary = {r["model"]: r for r in json.loads((out / "summary.json").read_text())}
    assert summary["prompted_telea"]["clip_t"] == pytest.approx(np.mean(values), abs=1e-4)
    # unprompted (telea) and empty-prompt models: no clip_t; clip_i still computed for both
    for model_name in ("telea", "empty_prompt_telea"):
        assert summary[model_name]["clip_t"] is None
        assert summary[model_name]["clip_i"] is not None
    # the same outputs (telea vs prompted telea are the same fill): the same clip_i
    assert summary["prompted_telea"]["clip_i"] == pytest.approx(summary["telea"]["clip_i"], abs=1e-9)


def test_free_form_masks_get_clip_i_bbox_on_the_bounding_box(demo_small, tiny_weights, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(demo_small / "images", data / "images")
    rng = np.random.default_rng(0)
    for path in sorted((data / "images").rglob("*.png")):
        mask = np.zeros((64, 64), dtype=np.uint8)
        cy, cx = rng.integers(16, 48, 2)
        yy, xx = np.mgrid[:64, :64]
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 < 100] = 255  # a disc: its bounding box holds known pixels too
        target = data / "masks" / path.relative_to(data / "images")
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(target)
    out = tmp_path / "ev"
    assert eval_cli("--models", "telea", "--clip-model", TINY, "--clip-weights", tiny_weights, "--no-report",
                    data=data, out=out) == 0
    reference = reference_model(tiny_weights)
    rows = pd.read_csv(out / "per_image.csv").set_index("image")
    for sample in load_dataset(data).samples:
        mask = sample.load_mask().astype(bool)
        ys, xs = np.nonzero(mask)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        gt = sample.load_image()
        pred = load_rgb(out / "runs" / "telea" / "images" / sample.output_relpath)
        expected = cos(encode_image(reference, pred[y0:y1, x0:x1]), encode_image(reference, gt[y0:y1, x0:x1]))
        assert rows.loc[sample.image_id, "clip_i_bbox"] == pytest.approx(expected, abs=1e-5)
        assert math.isnan(rows.loc[sample.image_id, "clip_i"])
    summary = json.loads((out / "summary.json").read_text())[0]
    assert summary["clip_i"] is None and summary["clip_i_bbox"] is not None


def test_without_weights_every_clip_column_is_null_with_one_warning(demo_small, tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    assert eval_cli("--models", "prompted_telea", "--no-report", data=demo_small, out=tmp_path / "ev") == 0
    err = capsys.readouterr().err
    assert err.count("warning: CLIP missing") == 1 and "--clip-weights" in err
    row = json.loads((tmp_path / "ev" / "summary.json").read_text())[0]
    assert row["clip_i"] is None and row["clip_i_bbox"] is None and row["clip_t"] is None
    assert "timm/vit_base_patch32_clip_224.openai" in row["clip_note"]
    assert row["rmse"] is not None  # everything else still runs


@pytest.mark.parametrize("what", ["missing", "pickle", "other-architecture"])
def test_bad_clip_weights_are_refused_before_any_run(demo_small, tiny_weights, tmp_path, capsys, what):
    if what == "missing":
        path = tmp_path / "nope.safetensors"
    elif what == "pickle":
        path = tmp_path / "open_clip_pytorch_model.bin"
        torch.save({"x": torch.zeros(1)}, path)
    else:
        path = tiny_weights  # tiny weights for ViT-B-32: shapes differ
    spec = TINY if what != "other-architecture" else "ViT-B-32"
    assert eval_cli("--models", "telea", "--clip-model", spec, "--clip-weights", path, data=demo_small,
                    out=tmp_path / "ev") == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("warning: ")]
    assert len(err) == 1 and "--clip-weights" in err[0], err  # (the warnings: LPIPS weights missing)
    assert not (tmp_path / "ev" / "runs").exists()
