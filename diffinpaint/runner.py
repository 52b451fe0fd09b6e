"""Batch runner: one model over one dataset into one run folder (README "Run folders and eval folders").

    RUN/config.toml          resolved settings + library versions; [outputs] = what changes the pixels
    RUN/images/<rel>.png     composited output: every pixel outside the holes equals the input
    RUN/manifest.jsonl       one JSON line per finished image
    RUN/skipped.csv          with --skip-invalid: images left out and why

Under `accelerate launch` every process takes a contiguous shard of the (sorted) images; seeds come from
(global seed, image id), so an image's output does not depend on which process or batch made it. Each process
appends to its own manifest part; the main process merges the parts at the end. Files appear atomically
(temp name + rename), so a run killed at any moment and started again skips finished images, redoes the rest,
and ends with the same bytes as an uninterrupted run.
"""
from __future__ import annotations

import contextlib
import csv
import datetime
import io
import json
import platform
import re
import sys
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import Dataset, Sample
from .models.base import InpaintModel
from .util.errors import UserError
from .util.files import TEMP_MARK, append_line, atomic_write_bytes, atomic_write_text, png_bytes
from .util.seeds import derive_seed

MANIFEST = "manifest.jsonl"
PARTS_DIR = "manifest.parts"


@dataclass
class RunSettings:
    seed: int = 0  # global seed; each image's seed = derive_seed(seed, image id)
    batch_size: int = 1  # images per model call (same-size images only); halved automatically on GPU OOM
    device: str = "auto"  # "auto" = cuda when available, else cpu; under accelerate each process's own device
    feather: int = 0  # pixels over which the fill fades into the original, inside the hole only (0 = hard)
    progress: bool = True  # tqdm bar on the main process


@dataclass
class RunResult:
    out_dir: Path
    n_images: int  # in the dataset (this run folder's scope)
    n_done_now: int  # made by this process in this call
    n_skipped_finished: int  # already finished before this call (this process's shard)


# ---------------------------------------------------------------------------------------------- helpers


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in ("diffinpaint", "torch", "diffusers", "transformers", "accelerate", "numpy", "pillow",
                 "opencv-python-headless", "scikit-image", "torch-fidelity", "safetensors"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return versions


def toml_safe(value: Any) -> Any:
    """TOML has no null and no tuples: None -> "none", tuples -> lists, paths -> str (also used to compare)."""
    if value is None:
        return "none"
    if isinstance(value, dict):
        return {str(k): toml_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [toml_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return value








def feather_alpha(mask: np.ndarray, feather: int) -> np.ndarray:
    """Blend weight for the fill: 1 deep inside the hole, ramping to ~0 at its border, exactly 0 outside."""
    if feather <= 0:
        return mask.astype(np.float64)
    import cv2

    distance = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)  # to the nearest non-hole pixel
    return np.clip(distance / float(feather), 0.0, 1.0).astype(np.float64) * mask


def composite(image: np.ndarray, prediction: np.ndarray, mask: np.ndarray, feather: int = 0) -> np.ndarray:
    """uint8 H×W×3: the prediction inside the hole, the input bit-for-bit outside it."""
    alpha = feather_alpha(mask, feather)[:, :, None]
    blended = np.round(alpha * prediction.astype(np.float64) + (1.0 - alpha) * image.astype(np.float64))
    out = np.clip(blended, 0, 255).astype(np.uint8)
    out[~mask] = image[~mask]  # belt and braces: outside the hole is the input, whatever the arithmetic
    return out




def read_manifest(path: Path) -> list[dict]:
    """Valid lines only: a line cut short by a kill is dropped (its image is simply redone)."""
    rows = []
    if not path.exists():
        return rows
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "image" in row:
            rows.append(row)
    return rows


def finished_rows(out_dir: Path, input_keys: dict[str, str] | None = None) -> dict[str, dict]:
    """image id -> manifest row, for every image whose row AND output file exist, and (given input_keys)
    whose row was made from the same image bytes and holes as now."""
    rows = read_manifest(out_dir / MANIFEST)
    for part in sorted((out_dir / PARTS_DIR).glob("*.jsonl")) if (out_dir / PARTS_DIR).is_dir() else []:
        rows.extend(read_manifest(part))
    done = {}
    for row in rows:
        if input_keys is not None and row.get("input") != input_keys.get(row["image"]):
            continue
        if (out_dir / "images" / row.get("output", "")).is_file():
            done[row["image"]] = row  # the last row wins: a redone image's newest row
    return done


TEMP_NAME = re.compile(r"\..+" + re.escape(TEMP_MARK) + r"\d+")


def remove_stray_temp_files(out_dir: Path) -> int:
    """Temp files a killed run left behind: only our own names (.NAME.tmp-PID), only in the run folder."""
    removed = 0
    for folder in (out_dir, out_dir / PARTS_DIR, *(out_dir / "images").rglob("*")):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if path.is_file() and TEMP_NAME.fullmatch(path.name):
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def make_batches(samples: list[Sample], batch_size: int) -> list[list[Sample]]:
    """Same-size images, at most batch_size each, grouped by size (so mixed-size datasets still batch):
    fixed by the shard, not by what is already done, so a resumed run makes the same batches."""
    batches: list[list[Sample]] = []
    for sample in sorted(samples, key=lambda s: (s.width, s.height, s.image_id)):
        last = batches[-1] if batches else None
        if last and len(last) < batch_size and (last[0].width, last[0].height) == (sample.width, sample.height):
            last.append(sample)
        else:
            batches.append([sample])
    return batches


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA GPU is visible here; use --device cpu")
    return device


def process_state(device: str = "auto"):
    """accelerate's PartialState, told cpu=True when there is no GPU: a bare PartialState() under a torchrun
    launch with ACCELERATE_USE_CPU=true would otherwise leave every rank thinking it is alone."""
    from accelerate import PartialState

    use_cpu = resolve_device(device) == "cpu"
    # ranks wait at barriers while others finish a shard (or the main rank computes FID): far longer than
    # the 10-minute NCCL default on big jobs
    return PartialState(cpu=use_cpu, timeout=datetime.timedelta(hours=24))


def model_device(state, device: str) -> str:
    """The device a model should use: an explicit --device cuda:N in a single process, else the process's."""
    if state.num_processes == 1 and device not in ("auto", "cuda"):
        resolved = resolve_device(device)
        if resolved.startswith("cuda:"):
            torch.cuda.set_device(torch.device(resolved))
        return resolved
    if state.num_processes > 1 and device.startswith("cuda:"):
        raise UserError(f"--device {device} with {state.num_processes} processes: each process takes its own GPU; "
                         "use --device cuda or auto")
    return str(state.device)


def check_out_dir(out_dir: Path, dataset: Dataset) -> None:
    """Refuse an --out that would overwrite the dataset or mix with unrelated files."""
    data, out = dataset.root.resolve(), out_dir.resolve()
    if out == data or data in out.parents:
        raise UserError(f"--out {out_dir} is inside the dataset folder {dataset.root}; choose an --out outside it")
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file; choose a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "config.toml").exists():
        raise UserError(f"--out {out_dir} is a non-empty folder that is not a run folder; choose a new --out")


# ---------------------------------------------------------------------------------------------- config


def output_settings(model: InpaintModel, settings: RunSettings) -> dict[str, Any]:
    """Everything that changes an output image. Batch size and process count only move float noise
    (README "Run folders and eval folders": reproducibility), so a run may resume with another batch size or process count."""
    return toml_safe({"model": model.name, "seed": settings.seed, "feather": settings.feather,
                      **{f"model.{k}": v for k, v in model.output_settings().items()}})


class SettingsChanged(UserError):
    """A run folder made with other output-changing settings (never mixed, never silently overwritten)."""

    def __init__(self, out_dir: Path, details: str):
        self.out_dir, self.details = out_dir, details
        super().__init__(f"{out_dir} was made with other settings ({details}); rerun with the same settings "
                         "to resume, or choose another --out")


def check_config(out_dir: Path, model: InpaintModel, settings: RunSettings) -> None:
    """Refuse to resume a run folder made with settings that change the outputs, naming each difference."""
    import tomllib

    wanted = output_settings(model, settings)
    path = out_dir / "config.toml"
    if not path.exists():
        return
    try:
        previous = tomllib.loads(path.read_text(encoding="utf-8")).get("outputs", {})
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        raise UserError(f"{path} is not valid TOML; delete the run folder or choose another --out") from None
    differing = sorted(k for k in set(wanted) | set(previous) if wanted.get(k) != previous.get(k))
    if differing:
        details = "; ".join(f"{k}: was {previous.get(k, '(unset)')!r}, now {wanted.get(k, '(unset)')!r}"
                            for k in differing)
        raise SettingsChanged(out_dir, details)


def write_config(out_dir: Path, model: InpaintModel, dataset: Dataset, settings: RunSettings,
                 num_processes: int) -> None:
    import tomli_w

    config = {
        "run": toml_safe({"model": model.name, "data": str(dataset.root.resolve()), "out": str(out_dir.resolve()),
                          **asdict(settings), "num_processes": num_processes, "command": " ".join(sys.argv),
                          "images": len(dataset.samples)}),
        "outputs": output_settings(model, settings),
        "versions": library_versions(),
    }
    atomic_write_text(out_dir / "config.toml", tomli_w.dumps(config))


def write_skipped(out_dir: Path, dataset: Dataset) -> None:
    if not dataset.skipped:
        (out_dir / "skipped.csv").unlink(missing_ok=True)  # a clean rerun must not keep an old list
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "file", "line", "reason"])
    for problem in dataset.skipped:
        writer.writerow([problem.image, problem.file, problem.line or "", problem.message])
    atomic_write_text(out_dir / "skipped.csv", buffer.getvalue())


# ---------------------------------------------------------------------------------------------- the run


class _BatchRunner:
    """Runs batches, halving the batch size once per GPU out-of-memory (said once, results unchanged)."""

    def __init__(self, model: InpaintModel, out_dir: Path, settings: RunSettings, rank: int, part_path: Path,
                 log, input_keys: dict[str, str]):
        self.model, self.out_dir, self.settings, self.rank = model, out_dir, settings, rank
        self.input_keys = input_keys
        self.part_path, self.log = part_path, log
        self.max_batch = settings.batch_size
        self.warned_oom = False

    def run(self, batch: list[Sample], done: set[str]) -> None:
        start = 0
        while start < len(batch):
            chunk = batch[start : start + self.max_batch]
            try:
                self._run_chunk(chunk, done)
            except torch.OutOfMemoryError:
                if len(chunk) == 1:
                    raise
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                self.max_batch = max(1, len(chunk) // 2)
                if not self.warned_oom:
                    self.log(f"out of GPU memory with a batch of {len(chunk)}; continuing with {self.max_batch}")
                    self.warned_oom = True
                continue  # retry the same images in a smaller batch; per-image seeds keep the results
            start += len(chunk)

    def _run_chunk(self, chunk: list[Sample], done: set[str]):
        todo_ids = {s.image_id for s in chunk} - done
        if not todo_ids:
            return
        started = time.perf_counter()
        images = [s.load_image() for s in chunk]
        masks = [s.load_mask() for s in chunk]
        image_t = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255.0)
        mask_t = torch.from_numpy(np.stack(masks)).unsqueeze(1).float()
        seeds = [derive_seed(self.settings.seed, s.image_id) for s in chunk]
        labels = [s.label for s in chunk]
        with contextlib.nullcontext() if self.model.needs_grad else torch.inference_mode():
            prediction = self.model.inpaint(image_t, mask_t, seeds=seeds, labels=labels)
        prediction = prediction.detach().float().cpu()
        if prediction.shape != image_t.shape:
            raise RuntimeError(f"model {self.model.name} returned {tuple(prediction.shape)} for input "
                               f"{tuple(image_t.shape)}; models must return the input's resolution")
        pred_u8 = (prediction.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        seconds = (time.perf_counter() - started) / len(chunk)
        images_root = (self.out_dir / "images").resolve()
        for index, sample in enumerate(chunk):
            if sample.image_id not in todo_ids:
                continue
            out_path = (images_root / sample.output_relpath).resolve()
            if images_root not in out_path.parents:  # data.py already refuses such paths; never write outside
                raise ValueError(f"refusing to write {out_path}: outside {images_root}")
            out_path.parent.mkdir(parents=True, exist_ok=True)
            rgb = composite(images[index], pred_u8[index], masks[index], self.settings.feather)
            atomic_write_bytes(out_path, png_bytes(rgb))
            row = {"image": sample.image_id, "output": sample.output_relpath, "seed": seeds[index],
                   "seconds": round(seconds, 4), "process": self.rank, "model": self.model.name,
                   "input": self.input_keys[sample.image_id], **self.model.manifest_fields(index, labels)}
            append_line(self.part_path, json.dumps(row))
            done.add(sample.image_id)


def run(model: InpaintModel, dataset: Dataset, out_dir: str | Path, settings: RunSettings | None = None,
        *, state=None, log=None) -> RunResult:
    """Run `model` over `dataset` into `out_dir`; safe to call again to resume (skips finished images)."""
    from tqdm.auto import tqdm

    settings = settings or RunSettings()
    out_dir = Path(out_dir)
    state = state or process_state(settings.device)
    log = log or (lambda message: print(message, file=sys.stderr) if state.is_main_process else None)
    if settings.batch_size < 1:
        raise UserError(f"--batch-size {settings.batch_size}: must be at least 1")

    # 1. Check inputs before touching the folder. Every rank checks the same untouched folder, so all ranks
    #    fail together (a rank failing alone would leave the others waiting at the barrier)
    model.check_labels(dataset.labels)
    check_out_dir(out_dir, dataset)
    check_config(out_dir, model, settings)
    state.wait_for_everyone()

    # 2. The main process prepares the folder; the others wait so nobody sees it half made
    if state.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "images").mkdir(exist_ok=True)
        (out_dir / PARTS_DIR).mkdir(exist_ok=True)
        write_config(out_dir, model, dataset, settings, state.num_processes)
        remove_stray_temp_files(out_dir)
        write_skipped(out_dir, dataset)
    state.wait_for_everyone()

    # 3. This process's shard; batches are fixed by the shard, so a resumed run makes the same batches
    with state.split_between_processes(list(dataset.samples)) as shard:
        shard = list(shard)
    input_keys = {s.image_id: s.input_key for s in shard}
    finished = set(finished_rows(out_dir, input_keys))
    already = len([s for s in shard if s.image_id in finished])
    part_path = out_dir / PARTS_DIR / f"process-{state.process_index}.jsonl"
    runner = _BatchRunner(model, out_dir, settings, state.process_index, part_path, log, input_keys)
    bar = tqdm(total=len(shard), initial=already, desc=f"{model.name}", unit="img",
               disable=not (settings.progress and state.is_main_process), dynamic_ncols=True)
    done = set(finished)
    made = 0
    for batch in make_batches(shard, settings.batch_size):
        before = len(done)
        runner.run(batch, done)
        made += len(done) - before
        bar.update(len(done) - before)
    bar.close()

    # 4. Merge the manifest parts into one manifest, in dataset order, each image once
    state.wait_for_everyone()
    if state.is_main_process:
        merge_manifest(out_dir, dataset)
    state.wait_for_everyone()
    return RunResult(out_dir, len(dataset.samples), made, already)


def merge_manifest(out_dir: Path, dataset: Dataset) -> None:
    keys = {s.image_id: s.input_key for s in dataset.samples}  # cached: the main shard is not re-read
    rows = finished_rows(out_dir, keys)
    order = [s.image_id for s in dataset.samples]
    lines = [json.dumps(rows[i]) for i in order if i in rows]
    atomic_write_text(out_dir / MANIFEST, "".join(line + "\n" for line in lines))
    parts = out_dir / PARTS_DIR
    if parts.is_dir():
        for part in parts.glob("*.jsonl"):
            part.unlink()
        parts.rmdir()
