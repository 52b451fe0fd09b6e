"""The `sd` model's own cost per diffusion family: `StableDiffusionModel.inpaint` (sizing, conditioning, the pipeline
call, the resize back) against a plain call of the same diffusers pipeline object on the same inputs already prepared
at the model's size, and the throughput of full-size families on a GPU.

No weights needed. `--scale tiny` (default): each family's tiny random pipeline from tests/sd_tiny.py, saved to a
temporary folder and loaded through `--sd-model` as a user would. `--scale full`: full-size architectures with random
weights, built in memory on the device (configs below, from the released repositories' config.json files; speed does
not depend on the weights' values): SDXL inpainting, SD3 medium, FLUX.1 Fill (12B) - a GPU's work.

    python eval/bench_sd_families.py --threads 1                          # CPU, every family, tiny
    python eval/bench_sd_families.py --scale full --device cuda --families sdxl,sd3,flux-fill --steps 8 \\
        --batch 1,4 --resolution 1024 --repeats 3 --out eval/results/sd_families_gpu.json

Timing: `repeats` rounds after one untimed call of each path; within a round the two paths alternate which goes
first; the overhead is the ratio of the medians, from process CPU time on a CPU (less sensitive to other processes on
a shared machine than wall time, which is reported too) and from wall time (synchronised) on a GPU. The filled holes
of the two paths are compared (max |difference|). Each run rewrites the JSON records it measured and the .md table.
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # sd_tiny.py: the tiny random pipelines
sys.path.insert(0, str(Path(__file__).parent))  # machine.py
from machine import code_version, machine_info, peak_memory, run_child  # noqa: E402

from diffinpaint.models.sd import FAMILIES, Settings, StableDiffusionModel, conditioning  # noqa: E402

TINY_FAMILIES = ["sd", "sd-base", "sdxl", "sdxl-base", "sd3", "flux-fill", "kandinsky2.2"]

# ---------------------------------------------------------------------------------------------- full-size configs
CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768)
CLIP_G = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
              max_position_embeddings=77, hidden_act="gelu", projection_dim=1280)
T5_XXL = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
              relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
              dense_act_fn="gelu_new", is_gated_act=True, is_encoder_decoder=False, use_cache=False)
VAE_SDXL = dict(block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
                up_block_types=["UpDecoderBlock2D"] * 4, latent_channels=4, layers_per_block=2, sample_size=1024,
                scaling_factor=0.13025, force_upcast=True)
VAE_16 = dict(VAE_SDXL, latent_channels=16, use_quant_conv=False, use_post_quant_conv=False, force_upcast=True)
SDXL_UNET = dict(sample_size=128, in_channels=9, out_channels=4, layers_per_block=2,
                 block_out_channels=[320, 640, 1280], attention_head_dim=[5, 10, 20], cross_attention_dim=2048,
                 down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                 up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                 transformer_layers_per_block=[1, 2, 10], use_linear_projection=True, addition_embed_type="text_time",
                 addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816)
SD3_MEDIUM = dict(sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
                  num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                  pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192)
FLUX_FILL = dict(patch_size=1, in_channels=384, out_channels=64, num_layers=19, num_single_layers=38,
                 attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
                 guidance_embeds=True, axes_dims_rope=[16, 56, 56])
# published parameter counts, checked when the architectures are built (meta device: no memory, no time)
PARAMETERS = {"sdxl": {"unet": 2_567_478_084, "vae": 83_653_863, "text_encoder": 123_060_480,
                       "text_encoder_2": 694_659_840},
              "sd3": {"transformer": 2_028_328_000, "text_encoder_3": 4_762_310_656},
              "flux-fill": {"transformer": 11_902_391_360, "text_encoder_2": 4_762_310_656}}


def build_full(family: str):
    """A full-size pipeline of the family with random weights, built on the current default device and dtype."""
    import diffusers
    from transformers import (CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config,
                              T5EncoderModel)

    from diffinpaint.models.sd import build_clip_tokenizer
    from sd_tiny import build_t5_tokenizer

    with torch.device("cpu"):  # schedulers keep their tables on the CPU (and cannot be built on the meta device)
        euler = diffusers.EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                                 beta_schedule="scaled_linear", timestep_spacing="leading")
        sd3_flow = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
        flux_flow = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                                                              max_shift=1.15, base_image_seq_len=256,
                                                              max_image_seq_len=4096)
    clip_l = CLIPTextModel(CLIPTextConfig(**CLIP_L))
    if family == "sdxl":
        return diffusers.StableDiffusionXLInpaintPipeline(
            vae=diffusers.AutoencoderKL(**VAE_SDXL), text_encoder=clip_l, tokenizer=build_clip_tokenizer(),
            text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_G)), tokenizer_2=build_clip_tokenizer(),
            unet=diffusers.UNet2DConditionModel(**SDXL_UNET), requires_aesthetics_score=False, scheduler=euler)
    if family == "sd3":
        return diffusers.StableDiffusion3InpaintPipeline(
            transformer=diffusers.SD3Transformer2DModel(**SD3_MEDIUM),
            scheduler=sd3_flow,
            vae=diffusers.AutoencoderKL(**dict(VAE_16, scaling_factor=1.5305, shift_factor=0.0609)),
            text_encoder=CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_L)), tokenizer=build_clip_tokenizer(),
            text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_G)), tokenizer_2=build_clip_tokenizer(),
            text_encoder_3=T5EncoderModel(T5Config(**T5_XXL)), tokenizer_3=build_t5_tokenizer())
    if family == "flux-fill":
        return diffusers.FluxFillPipeline(
            transformer=diffusers.FluxTransformer2DModel(**FLUX_FILL),
            scheduler=flux_flow,
            vae=diffusers.AutoencoderKL(**dict(VAE_16, scaling_factor=0.3611, shift_factor=0.1159)),
            text_encoder=clip_l, tokenizer=build_clip_tokenizer(), text_encoder_2=T5EncoderModel(T5Config(**T5_XXL)),
            tokenizer_2=build_t5_tokenizer())
    raise SystemExit(f"--scale full: no full-size configuration for {family} (sdxl, sd3, flux-fill)")


def check_parameter_counts(families: list[str]) -> dict:
    """Build each full-size architecture on the meta device and count its parameters against the release's."""
    counts = {}
    for family in families:
        with torch.device("meta"):
            pipe = build_full(family)
        counts[family] = {}
        for name, expected in PARAMETERS[family].items():
            got = sum(p.numel() for p in getattr(pipe, name).parameters())
            counts[family][name] = got
            if got != expected:
                raise SystemExit(f"{family} {name}: {got:,} parameters, the release has {expected:,}")
    return counts


# ---------------------------------------------------------------------------------------------- measuring
def load_model(family: str, args, tmp: Path) -> StableDiffusionModel:
    settings = dict(steps=args.steps, resolution=args.resolution, dtype=args.dtype, compile=args.compile)
    if args.scale == "tiny":
        from sd_tiny import SAVERS

        folder = Path(SAVERS[family](tmp / family))
        if family == "kandinsky2.2":
            settings["kandinsky_prior"] = f"{folder}-prior"
        return StableDiffusionModel(Settings(sd_model=str(folder), **settings), device=args.device)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[
        args.dtype or FAMILIES[family].cuda_dtype]
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # random init straight in the run's dtype, on the device: seconds, not minutes
    try:
        with torch.device(args.device):
            pipe = build_full(family)
    finally:
        torch.set_default_dtype(previous)
    return StableDiffusionModel(Settings(sd_model=f"random-weights:{family}", **settings), device=args.device,
                                pipeline=pipe)


def direct(model: StableDiffusionModel, images, masks, prompt, negative, seeds):
    """The same pipeline object called as diffusers documents it, on inputs already at the model's size."""
    f, pipe = model.family, model.pipe
    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    h, w = images.shape[-2:]
    if f.key == "kandinsky2.2":  # diffusers' combined pipeline, one image per call (see families._kandinsky)
        return torch.cat([torch.from_numpy(pipe(
            prompt=prompt, negative_prompt=negative or None, image=images[i:i + 1] * 2 - 1, mask_image=masks[i:i + 1],
            height=h, width=w, num_inference_steps=model.steps, guidance_scale=model.guidance,
            prior_guidance_scale=model.prior_guidance, prior_num_inference_steps=model.prior_steps,
            generator=generators[i], output_type="np").images).permute(0, 3, 1, 2) for i in range(len(seeds))])
    kwargs = dict(prompt=[prompt] * len(seeds), image=images, mask_image=masks, height=h, width=w,
                  num_inference_steps=model.steps, guidance_scale=model.guidance, generator=generators,
                  output_type="pt")
    if f.negative_prompt:
        kwargs["negative_prompt"] = [negative] * len(seeds)
    if f.strength is not None:
        kwargs["strength"] = model.strength
    return pipe(**kwargs).images.float().cpu()


def measure(family: str, model: StableDiffusionModel, args, batch: int, build_s: float) -> dict:
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    size = model.model_size(args.resolution or model.resolution, args.resolution or model.resolution)
    g = torch.Generator().manual_seed(0)
    images = F.interpolate(torch.rand(batch, 3, 8, 8, generator=g), size=size, mode="bilinear", align_corners=False)
    masks = torch.zeros(batch, 1, *size)
    masks[..., size[0] // 4: 3 * size[0] // 4, size[1] // 4: 3 * size[1] // 4] = 1  # a quarter of the image
    seeds, labels = list(range(batch)), [None] * batch
    prompt, negative = model.prompts.for_label(None)
    prepared = [conditioning(images[i], masks[i], size, model.cell) for i in range(batch)]  # not timed
    image_in, mask_in = torch.stack([x for x, _ in prepared]), torch.stack([m for _, m in prepared])
    # the time `ours` spends inside the pipeline call: the rest is the wrapper's own work, measured directly
    from diffinpaint.models.sd import families

    real_call, inside = families.call, {"wall": 0.0, "cpu": 0.0}

    def timed_call(*a, **k):
        sync()
        wall, cpu = time.perf_counter(), time.process_time()
        out = real_call(*a, **k)
        sync()
        inside["wall"] += time.perf_counter() - wall
        inside["cpu"] += time.process_time() - cpu
        return out

    def ours():
        families.call = timed_call
        try:
            return model.inpaint(images, masks, seeds=seeds, labels=labels)
        finally:
            families.call = real_call

    paths = {"ours": ours, "direct": lambda: direct(model, image_in, mask_in, prompt, negative, seeds)}
    times = {name: {"wall": [], "cpu": []} for name in paths}
    wrapper = {"wall": [], "cpu": []}
    outputs = {}
    with torch.inference_mode():
        for name, fn in paths.items():  # warm-up (and, on a GPU, compilation and allocator growth)
            outputs[name] = fn()
        for r in range(args.repeats):
            for name in (["ours", "direct"] if r % 2 == 0 else ["direct", "ours"]):
                inside.update(wall=0.0, cpu=0.0)
                sync()
                wall, cpu = time.perf_counter(), time.process_time()
                paths[name]()
                sync()
                times[name]["wall"].append(time.perf_counter() - wall)
                times[name]["cpu"].append(time.process_time() - cpu)
                if name == "ours":
                    for k in wrapper:
                        wrapper[k].append(times[name][k][-1] - inside[k])
    hole = masks.expand_as(images) > 0
    diff = float((outputs["ours"][hole] - outputs["direct"].float().cpu()[hole]).abs().max())
    med = {name: {k: statistics.median(v) for k, v in t.items()} for name, t in times.items()}
    basis = "wall" if cuda else "cpu"
    memory, memory_kind = peak_memory(device)
    return {"family": family, "scale": args.scale, "device": args.device, "dtype": model.dtype_name,
            "batch": batch, "size": list(size), "steps": model.steps, "guidance": model.guidance,
            "repeats": args.repeats, "build_seconds": round(build_s, 2),
            "seconds_per_batch": {name: med[name]["wall"] for name in med},
            "cpu_seconds_per_batch": {name: med[name]["cpu"] for name in med},
            "all_seconds": times, "overhead_basis": basis,
            "overhead": med["ours"][basis] / med["direct"][basis] - 1,
            "wrapper_seconds": statistics.median(wrapper[basis]),
            "wrapper_share": statistics.median(wrapper[basis]) / med["direct"][basis],
            "images_per_second": batch / med["ours"][basis],
            "seconds_per_step": med["ours"][basis] / model.steps,
            "max_abs_diff_in_hole": diff, "peak_memory_mib": round(memory), "peak_memory_kind": memory_kind}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--families", default=",".join(TINY_FAMILIES), help="comma-separated family keys")
    p.add_argument("--scale", choices=["tiny", "full"], default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], default=None, help="default: the family's")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--resolution", type=int, default=256, help="model input side (square photos); 0 = family's")
    p.add_argument("--batch", default="2", help="comma-separated batch sizes")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--child-timeout", type=float, default=1800, help="seconds per family (each runs in a child)")
    p.add_argument("--check-parameters", action="store_true",
                   help="only build the full-size architectures on the meta device and check parameter counts")
    p.add_argument("--out", type=Path, default=None, help="JSON records; the .md table is written beside it")
    args = p.parse_args(argv)
    args.resolution = args.resolution or None
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    if args.check_parameters:
        print(json.dumps(check_parameter_counts(families), indent=2))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    records = []
    if len(families) > 1:  # each family in a fresh process: its own peak memory, no heap left by the others
        rest = [a for a in (argv if argv is not None else sys.argv[1:])]
        for k in ("--families", "--out"):
            if k in rest:
                i = rest.index(k)
                del rest[i:i + 2]
        for family in families:
            result, why = run_child(__file__, [*rest, "--families", family], timeout=args.child_timeout)
            if result is None:
                print(f"{family}: {why}", file=sys.stderr)
                continue
            records += result["records"]
            for r in result["records"]:
                print(f"{family:13s} batch {r['batch']}: ours/direct {r['overhead']:+.1%}, wrapper's own work "
                      f"{r['wrapper_share']:.1%} ({r['overhead_basis']}); max |diff| in hole "
                      f"{r['max_abs_diff_in_hole']:.1e}", file=sys.stderr)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            model = load_model(families[0], args, Path(tmp))  # once: full-size models take a while to build
            build_s = time.perf_counter() - t
            for batch in (int(b) for b in args.batch.split(",")):
                record = measure(families[0], model, args, batch, build_s)
                records.append(record)
                print(f"{families[0]:13s} batch {batch}: ours {record['seconds_per_batch']['ours']:.3f} s, direct "
                      f"{record['seconds_per_batch']['direct']:.3f} s (wall); overhead {record['overhead']:+.1%} "
                      f"({record['overhead_basis']}), wrapper's own work {record['wrapper_share']:.1%}; "
                      f"max |diff| in hole {record['max_abs_diff_in_hole']:.1e}", file=sys.stderr)
    report = {"machine": machine_info(), "commit": code_version(),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(["python", "eval/bench_sd_families.py", *(argv or sys.argv[1:])]),
              "records": records}
    print(json.dumps(report))  # one line: the parent of a per-family child reads it
    if args.out:
        write(args.out, report)
    return 0


def write(path: Path, report: dict) -> None:
    previous = json.loads(path.read_text()) if path.exists() else {"records": []}
    key = ("family", "scale", "device", "dtype", "batch", "size", "steps")
    now = {tuple(str(r[k]) for k in key) for r in report["records"]}
    report["records"] = [r for r in previous["records"] if tuple(str(r[k]) for k in key) not in now] + \
        report["records"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    m = report["machine"]
    lines = [f"# sd families: the wrapper's cost ({path.stem})", "",
             f"Machine: {m['cpu']}, {m['cpu_cores']} cores ({m['torch_threads']} torch threads)"
             + (f", GPU {m['gpu']}" if "gpu" in m else ", no GPU")
             + f"; torch {m['torch']}, diffusers {m['diffusers']}, transformers {m['transformers']}; commit "
             f"{report['commit']}; {report['date']}.", "", f"Command: `{report['command']}`", "",
             "`ours` = `StableDiffusionModel.inpaint` on square photos at the model's size (sizing, conditioning, "
             "pipeline call, resize back); `direct` = the same pipeline object called as diffusers documents it on "
             "the inputs already prepared. Medians over the repeats, from process CPU time on a CPU (wall time on a "
             "GPU; wall time is in the JSON). `ours/direct − 1` compares two noisy timings; `wrapper` is measured directly: the time `ours` "
             "spends outside the pipeline call (sizing, conditioning, resize back, generators), as a share of the "
             "direct call. Random weights.", "",
             "| family | scale | device | dtype | batch | model size | steps | ours s/batch | direct s/batch | "
             "ours/direct − 1 | wrapper | images/s | s/step | max abs diff in hole | peak MiB |",
             "|---|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["records"]:
        s = r["cpu_seconds_per_batch"] if r["overhead_basis"] == "cpu" else r["seconds_per_batch"]
        lines.append(f"| {r['family']} | {r['scale']} | {r['device']} | {r['dtype']} | {r['batch']} | "
                     f"{r['size'][0]}×{r['size'][1]} | {r['steps']} | {s['ours']:.3f} | {s['direct']:.3f} | "
                     f"{r['overhead']:+.1%} ({r['overhead_basis']}) | {r.get('wrapper_share', float('nan')):.2%} | "
                     f"{r['images_per_second']:.3g} | "
                     f"{r['seconds_per_step']:.3g} | {r['max_abs_diff_in_hole']:.1e} | {r['peak_memory_mib']} |")
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
