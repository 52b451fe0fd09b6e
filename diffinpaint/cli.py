"""`diffinpaint` command line: parses arguments and calls library functions, nothing else.

    diffinpaint data check DIR
    diffinpaint data demo --out DIR
    diffinpaint data masks --data DIR --protocol box|thin|medium|thick --seed S
    diffinpaint data split DIR --test-fraction F --seed S --out-train TRAIN --out-test TEST
    diffinpaint run --model NAME --data DIR --out RUN
    diffinpaint eval --models telea,ns --data DIR --out EVAL
    diffinpaint train NAME --data DIR --out CKPT      (NAME: every model the toolkit trains)
    diffinpaint report EVAL
    diffinpaint export kaggle RUN --data DIR --out FILE.csv

Bad input (a UserError) ends as one `error: ...` line on stderr and exit code 2, before anything is written.
Anything else is a bug: its traceback is shown (exit code 1) and everything finished so far stays on disk.
The same verbs run under `accelerate launch -m diffinpaint ...` on many processes.
"""
from __future__ import annotations

import argparse
import errno
import json
import sys
from pathlib import Path

from .data import DEFAULT_MAX_PIXELS, DatasetError, load_dataset
from .models import TRAINED, TRAINED_HELP, all_names
from .util.errors import EXIT_BAD_INPUT, UserError

VERBS = {
    "data": "dataset folders: check, demo, masks, split",
    "run": "run one model over a dataset into a run folder",
    "eval": "run models, score holes and whole images, write tables and report",
    "train": "train a model",
    "export": "export a run folder in a competition's submission format",
    "report": "(re)write EVAL/report.html from an eval folder",
}

# OS errors the user fixes by choosing another path or freeing space (anything else from the OS is a bug report)
USER_FIXABLE_OS_ERRORS = {errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.EEXIST, errno.ENOTDIR,
                          errno.EISDIR, errno.EDQUOT, errno.ENAMETOOLONG}


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("run options (every model)")
    group.add_argument("--data", required=True, type=Path, help="dataset folder (images/ + masks.csv or masks/)")
    group.add_argument("--out", required=True, type=Path, help="output folder")
    group.add_argument("--seed", type=int, default=0, help="global seed; each image's seed = f(seed, image id)")
    group.add_argument("--batch-size", type=int, default=1, help="images per model call (default 1)")
    group.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1 ...")
    group.add_argument("--feather", type=int, default=0, metavar="PX",
                       help="blend the fill into the original over PX pixels inside the hole (default 0)")
    group.add_argument("--skip-invalid", action="store_true",
                       help="run the valid images and list the others in RUN/skipped.csv instead of stopping")
    group.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                       help=f"refuse images larger than this many pixels (default {DEFAULT_MAX_PIXELS})")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")
    from .models import add_model_flags

    add_model_flags(parser)  # every model's flags, grouped by model; another model's flag is refused after parsing


def _first_word(argv: list[str], after: str | None = None) -> str | None:
    words = [a for a in argv if not a.startswith("-")]
    if after is not None:
        words = words[words.index(after) + 1:] if after in words else []
    return words[0] if words else None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv`'s verb (all verbs when argv is None). Other verbs get a stub, so `diffinpaint --help`,
    `report` and `data` import no model, no torch training code and no diffusers."""
    parser = argparse.ArgumentParser(prog="diffinpaint", description="Diffusion, GAN and classical inpainting, "
                                     "scored on the masked region and on the whole image.")
    verbs = parser.add_subparsers(dest="verb", required=True)
    wanted = None if argv is None else (_first_word(argv) or "")  # "": no verb typed, stubs only
    for verb, text in VERBS.items():
        if wanted is None or verb == wanted:
            BUILDERS[verb](verbs.add_parser(verb, help=text, description=text), argv)
        else:
            verbs.add_parser(verb, help=text)
    return parser


def _data_parser(data: argparse.ArgumentParser, argv) -> None:
    data_verbs = data.add_subparsers(dest="data_verb", required=True)
    check = data_verbs.add_parser("check", help="validate a dataset folder and summarise it")
    check.add_argument("dir", type=Path)
    check.add_argument("--json", action="store_true", help="print the summary as JSON")
    check.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                       help=f"refuse images larger than this many pixels (default {DEFAULT_MAX_PIXELS})")
    demo = data_verbs.add_parser("demo", help="build a demo dataset from the photos bundled in scikit-image")
    demo.add_argument("--out", required=True, type=Path)
    demo.add_argument("--size", type=int, default=256, help="crop side in pixels (default 256)")
    demo.add_argument("--crops-per-photo", type=int, default=3, help="crops per photo (default 3; 9 photos)")
    demo.add_argument("--holes", type=int, default=2, help="holes per image (default 2)")
    demo.add_argument("--hole-size", type=int, default=75, help="hole side in pixels (default 75)")
    demo.add_argument("--seed", type=int, default=0)
    masks = data_verbs.add_parser("masks", help="write a mask source for a dataset folder")
    masks.add_argument("--data", required=True, type=Path)
    masks.add_argument("--protocol", required=True, choices=["box", "thin", "medium", "thick"])
    masks.add_argument("--seed", type=int, default=0)
    masks.add_argument("--holes", type=int, default=2, help="box protocol: holes per image (default 2)")
    masks.add_argument("--hole-size", type=int, default=75, help="box protocol: hole side (default 75)")
    masks.add_argument("--format", choices=["csv", "png"], default=None,
                       help="masks.csv (box only; the default for box) or masks/*.png (default otherwise)")
    masks.add_argument("--replace", action="store_true", help="replace the dataset's existing mask source")
    split = data_verbs.add_parser("split", help="split a dataset folder into disjoint training and test folders "
                                  "(by image content and group, masks carried along)")
    split.add_argument("data", type=Path, metavar="DATA")
    split.add_argument("--test-fraction", required=True, type=float, help="share of images in the test folder")
    split.add_argument("--seed", type=int, default=0, help="which images go to the test side (default 0)")
    split.add_argument("--out-train", required=True, type=Path, help="new folder for the training images")
    split.add_argument("--out-test", required=True, type=Path, help="new folder for the test images")
    split.add_argument("--group-by", action="append", default=[], metavar="RULE",
                       help="keep each group on one side: `label` (first folder under images/), `regex:PATTERN` "
                            "(searched in the path under images/; its first group or the whole match names the "
                            "group) or a CSV of image,group (csv:FILE or FILE.csv); repeatable. Identical images, "
                            "near-duplicates (perceptual hash) and DATA/groups.csv (written by `data demo`) are "
                            "always kept together")



def _run_parser(run: argparse.ArgumentParser, argv) -> None:
    run.add_argument("--model", required=True, choices=all_names())
    run.add_argument("--checkpoint", default=None, metavar="CKPT",
                     help=f"trained models ({', '.join(TRAINED)}): the --out folder of `diffinpaint train NAME` "
                          "(the same as --NAME-checkpoint)")
    _add_run_options(run)


def _eval_parser(evaluate: argparse.ArgumentParser, argv) -> None:
    evaluate.add_argument("--models", help="comma-separated, e.g. sd,pix2pix,telea,ns (one variant each); only the "
                          "listed models' flags are accepted")
    evaluate.add_argument("--config", metavar="STUDY", help="a study file of named variants ([[model]] tables: name, "
                          "model, checkpoint, options) or a shipped study (no-text-study); model options given here "
                          "apply where a variant does not set them")
    evaluate.add_argument("--runs", type=Path, default=None, help="where run folders go (default EVAL/runs)")
    evaluate.add_argument("--seeds", default=None, metavar="S1,S2,...",
                          help="run every model once per seed (runs/<model>/seed_<s>) and report the spread "
                               "across seeds; deterministic models run once (default: --seed only)")
    evaluate.add_argument("--fid-weights", type=Path, default=None,
                          help="pt_inception-2015-12-05-6726825d.pth for FID/KID/P-IDS/U-IDS on an offline machine")
    evaluate.add_argument("--lpips-weights", type=Path, default=None,
                          help="torchvision's alexnet-owt-7be5be79.pth for LPIPS on an offline machine")
    evaluate.add_argument("--allow-in-sample", action="store_true",
                          help="score trained models on images they were trained on (marked in_sample)")
    evaluate.add_argument("--no-fid", action="store_true", help="skip the Inception metrics (FID/KID/P-IDS/U-IDS)")
    evaluate.add_argument("--cache-dir", type=Path, default=None,
                          help="ground-truth feature cache (default ~/.cache/diffinpaint/features)")
    evaluate.add_argument("--no-report", action="store_true", help="skip report.html")
    evaluate.add_argument("--no-text", action="store_true",
                          help="skip text_rate (the OCR model reading every output and original; ~0.5 s per "
                               "image on 2 CPU cores)")
    evaluate.add_argument("--text-threshold", type=float, default=0.5, metavar="SCORE",
                          help="OCR recognition score from which a string counts as text in a hole (default 0.5)")
    evaluate.add_argument("--clip-model", default="ViT-B-32", metavar="ARCH[:TAG]",
                          help="open_clip model for clip_i/clip_t (default ViT-B-32 = ViT-B-32:openai, OpenAI's "
                               "ViT-B/32 as in the CLIPScore paper and torchmetrics)")
    evaluate.add_argument("--clip-weights", type=Path, default=None,
                          help="open_clip's open_clip_model.safetensors for --clip-model (default: the Hugging Face "
                               "cache); without weights clip_i/clip_t are null")
    _add_run_options(evaluate)


def _train_parser(train: argparse.ArgumentParser, argv) -> None:
    train_verbs = train.add_subparsers(dest="train_verb", required=True)
    wanted = None if argv is None else (_first_word(argv, after="train") or "")
    for name in TRAINED:
        if wanted is None or name == wanted:  # only the chosen model's training code is imported
            from .models import trainable_class
            from .training.trainer import add_arguments as add_train_arguments

            model_cls = trainable_class(name)
            add_train_arguments(train_verbs.add_parser(name, help=TRAINED_HELP[name],
                                                       description=TRAINED_HELP[name]), model_cls)
        else:
            train_verbs.add_parser(name, help=TRAINED_HELP[name])


def _export_parser(export: argparse.ArgumentParser, argv) -> None:
    export_verbs = export.add_subparsers(dest="export_verb", required=True)
    kaggle = export_verbs.add_parser("kaggle", help="hole pixels as the Kaggle photo-reconstruction CSV (id,value)")
    kaggle.add_argument("run_dir", type=Path, metavar="RUN", help="a run folder (`diffinpaint run ... --out RUN`)")
    kaggle.add_argument("--data", required=True, type=Path, help="the dataset the run was made from (masks.csv)")
    kaggle.add_argument("--out", required=True, type=Path, help="the CSV file to write")



def _report_parser(report: argparse.ArgumentParser, argv) -> None:
    from .evaluation import report as report_module

    report_module.add_arguments(report)


BUILDERS = {"data": _data_parser, "run": _run_parser, "eval": _eval_parser, "train": _train_parser,
            "export": _export_parser, "report": _report_parser}


def _print_problems(err: DatasetError) -> None:
    count = len(err.problems)
    print(f"error: {count} problem{'s' if count != 1 else ''} in dataset {err.root} (nothing was written):",
          file=sys.stderr)
    for problem in err.problems:
        print(f"error: {problem}", file=sys.stderr)


def _load(args) -> "object":
    return load_dataset(args.data, skip_invalid=args.skip_invalid, max_pixels=args.max_pixels)


def _run_settings(args):
    from .runner import RunSettings

    return RunSettings(seed=args.seed, batch_size=args.batch_size, device=args.device, feather=args.feather,
                       progress=not args.no_progress)


def _cmd_data(args) -> int:
    if args.data_verb == "split":
        from .data.split import split_dataset

        n_train, n_test = split_dataset(args.data, args.test_fraction, args.seed, args.out_train, args.out_test,
                                        group_by=args.group_by, log=print)
        print(f"{n_train} training images in {args.out_train}, {n_test} test images in {args.out_test}")
        return 0
    if args.data_verb == "check":
        dataset = load_dataset(args.dir, max_pixels=args.max_pixels)
        summary = dataset.summary()
        if args.json:
            print(json.dumps(summary, indent=2))
        else:
            print(f"{summary['root']}: {summary['images']} images, {summary['holes']} holes "
                  f"({summary['mask_source']})")
            print("labels: " + ", ".join(f"{k} {v}" for k, v in summary["labels"].items()))
            print("sizes:  " + ", ".join(f"{k} {v}" for k, v in summary["sizes"].items()))
        return 0
    if args.data_verb == "demo":
        from .data.demo import make_demo_dataset

        out = make_demo_dataset(args.out, size=args.size, crops_per_photo=args.crops_per_photo, holes=args.holes,
                                hole_size=args.hole_size, seed=args.seed)
        print(f"demo dataset written to {out}")
        return 0
    from .data.maskfiles import write_masks

    written = write_masks(args.data, args.protocol, seed=args.seed, holes=args.holes, hole_size=args.hole_size,
                          fmt=args.format, replace=args.replace)
    print(f"{args.protocol} masks written to {args.data / written}")
    return 0


def _cmd_run(args) -> int:
    from .models import build_model, given_options
    from .runner import model_device, process_state, run

    options = given_options(args, [args.model])[args.model]  # another model's flag: refused here, in one line
    if args.checkpoint is not None:
        if args.model not in TRAINED:
            raise UserError(f"--checkpoint is for trained models ({', '.join(TRAINED)}); {args.model} takes none")
        options["checkpoint"] = args.checkpoint
    dataset = _load(args)
    settings = _run_settings(args)
    state = process_state(settings.device)
    model = build_model(args.model, options, device=model_device(state, settings.device))
    result = run(model, dataset, args.out, settings, state=state)
    if state.is_main_process:
        skipped = f", {len(dataset.skipped)} invalid skipped (see skipped.csv)" if dataset.skipped else ""
        print(f"{args.model}: {result.n_images} images in {args.out}{skipped}")
    return 0


def _cmd_eval(args) -> int:
    from .evaluation.evaluate import EvalSettings, Variant, evaluate, format_table, parse_seeds
    from .models import given_options, model_class
    from .runner import process_state

    if (args.models is None) == (args.config is None):
        raise UserError("pass --models a,b (one variant per model) or --config STUDY (named variants), not both")
    if args.config is not None:
        from .evaluation.study import load_study

        variants = load_study(args.config, args)
    else:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        if not models:
            raise UserError("--models is empty; name at least one model, e.g. --models telea,ns")
        for name in models:
            model_class(name)  # unknown names: one line listing the registry
        repeated = sorted({m for m in models if models.count(m) > 1})
        if repeated:
            raise UserError(f"--models {args.models}: {repeated[0]} is listed twice; name each model once (a study "
                            "file, --config, holds several variants of one model)")
        typed = given_options(args, models)
        variants = [Variant(name=m, model=m, options=typed[m]) for m in models]
    seeds = None
    if args.seeds is not None:
        seeds = parse_seeds(args.seeds)
        if args.seed != 0:
            raise UserError(f"--seed {args.seed} and --seeds {args.seeds}: pass one of them")
    dataset = _load(args)
    settings = EvalSettings(variants=variants, out=args.out, runs_dir=args.runs, fid=not args.no_fid,
                            fid_weights=args.fid_weights, lpips_weights=args.lpips_weights, cache_dir=args.cache_dir,
                            report=not args.no_report, seeds=seeds, allow_in_sample=args.allow_in_sample,
                            text=not args.no_text, text_threshold=args.text_threshold, clip_model=args.clip_model,
                            clip_weights=args.clip_weights, run=_run_settings(args))
    state = process_state(settings.run.device)
    summary = evaluate(dataset, settings, state=state)
    if state.is_main_process:
        print(format_table(summary))
        print(f"tables in {args.out} (summary.csv, summary.json, per_image.csv, per_bin.csv)"
              + (f"; report: {args.out / 'report.html'}" if (args.out / "report.html").exists() else ""))
    return 0


def _cmd_report(args) -> int:
    from .evaluation import report as report_module

    return report_module.main(args)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    try:
        if args.verb == "data":
            return _cmd_data(args)
        if args.verb == "run":
            return _cmd_run(args)
        if args.verb == "eval":
            return _cmd_eval(args)
        if args.verb == "train":
            from .training import trainer

            return trainer.main(args)
        if args.verb == "export":
            from .evaluation.export import export_kaggle

            rows = export_kaggle(args.run_dir, args.data, args.out)
            print(f"{rows} values written to {args.out}")
            return 0
        if args.verb == "report":
            return _cmd_report(args)
    except DatasetError as err:
        _print_problems(err)
        return EXIT_BAD_INPUT
    except UserError as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as err:
        if err.errno not in USER_FIXABLE_OS_ERRORS:
            raise  # a bug or a broken machine: keep the traceback
        where = f"{err.filename}: " if err.filename else ""
        print(f"error: {where}{err.strerror or err}; check the path, its permissions and free space", file=sys.stderr)
        return EXIT_BAD_INPUT
    raise AssertionError(f"unhandled verb {args.verb}")
