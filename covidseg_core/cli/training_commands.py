"""`covidseg pseudo` (stage 1 alone) and `covidseg train` (the whole pipeline), with their shared options."""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..constants import FUSION_MODES, LUNG_METHODS, PSEUDO_CUES, SYNTHETIC_MODES
from .output import print_json, run_job


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def worker_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value <= 64:
        raise argparse.ArgumentTypeError(f"{value} must lie between 0 and 64 (0: draw in the training process)")
    return value


def budget_minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of minutes") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be a positive number of minutes (0: the fixed schedule)")
    return value


def unit_fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:       # NaN fails this too
        raise argparse.ArgumentTypeError(f"{text} must lie between 0 and 1")
    return value


BUDGET_HELP = ("train for about MINUTES in all: the speed of both stages is measured on their first steps and "
               "their epochs are sized to fit (README, 'Training on a time budget'). Default: 8 on a CPU (at size "
               "128 and width 16 unless --size is given), none on CUDA. 0 = the fixed schedule (30 + 40 epochs at "
               "size 256). An explicit --cls-epochs or --seg-epochs wins for its stage; the budget then sizes the "
               "other. A budget too small for one epoch trains one, with a warning")


def _add_stage1_options(p: argparse.ArgumentParser, project: bool = False) -> None:
    data_help = "image folder (images/ + labels.csv), DICOM folder or NIfTI file with a labels CSV"
    if project:
        where = p.add_mutually_exclusive_group(required=True)
        where.add_argument("--data", type=Path, help=data_help)
        where.add_argument("--project", type=Path, help="a project folder: train on the labels and corrections "
                           "of every study in it (covidseg project add), predict each, record the run there")
    else:
        p.add_argument("--data", required=True, type=Path, help=data_help)
    p.add_argument("--labels", type=Path, default=None, help="labels CSV when it does not lie with the data")
    p.add_argument("--out", required=True, type=Path, help="run folder (created; re-run the same command to resume)")
    p.add_argument("--fusion", choices=FUSION_MODES, default=None,
                   help="attention fusion of the per-epoch CAMs (default avg)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--size", type=positive_int, default=None,
                   help="longer side slices are scaled to for training and prediction (default 256; for a budgeted "
                   "run on a CPU 128, or the slices' own size if smaller)")
    p.add_argument("--cls-epochs", type=positive_int, default=None,
                   help="classifier epochs (wins over --budget for stage 1; default: the budget's choice, or 30)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--lung-field", dest="lung_method", choices=LUNG_METHODS, default=None,
                   help="model: the learned lung field shipped with covidseg (default); threshold: the image-"
                   "threshold method (the fallback when the model file is missing or damaged)")
    p.add_argument("--fast", action="store_true",
                   help="small, quick preset (about a minute on the demo on a laptop CPU)")


def _train_config(args, seg: bool):
    from ..train_config import TrainConfig, fast_config

    overrides = {k: v for k, v in {
        "fusion": args.fusion, "size": args.size, "cls_epochs": args.cls_epochs, "seed": args.seed,
        "budget_minutes": getattr(args, "budget", None), "lung_method": args.lung_method,
        "synthetic": getattr(args, "synthetic", None) if seg else None,
        "init": getattr(args, "init", None) if seg else None,
        "prior_share": getattr(args, "prior_share", None) if seg else None,
        "seg_epochs": getattr(args, "seg_epochs", None) if seg else None,
        "data_workers": getattr(args, "data_workers", None) if seg else None,
        "pixel_labels": str(args.pixel_labels.resolve()) if getattr(args, "pixel_labels", None) else None,
    }.items() if v is not None}
    return fast_config(**overrides) if args.fast else TrainConfig(**overrides)


def cmd_train(args) -> int:
    from .. import distributed
    from ..pipeline import train_job

    cfg = _train_config(args, seg=True)
    if args.project is not None:
        return _train_project(args, cfg)
    # under torchrun (docs/distributed.md) every rank trains; rank 0 alone prints and writes the run
    with distributed.session(args.device) as device:
        metrics = run_job(train_job(args.data, args.out, cfg, device=device, labels_csv=args.labels,
                                    slices=_slice_loader(args)),
                          quiet=args.quiet or not distributed.is_writer())
        if distributed.is_writer():
            print_json({"run": str(args.out), **(metrics or {})})
    return 0


def _slice_loader(args):
    """The data read through the slice cache (decoded once, by rank 0 under torchrun), or None: a plain read."""
    if args.no_cache:
        return None
    from functools import partial

    from ..slice_cache import load_slice_set_cached

    return partial(load_slice_set_cached, cache_dir=args.cache_dir)


def _cache_dir(args):
    """The slice cache folder of a `train --project` (None with --no-cache)."""
    from ..slice_cache import default_cache_dir

    return None if args.no_cache else (args.cache_dir or default_cache_dir())


def _train_project(args, cfg) -> int:
    from .. import distributed
    from ..errors import InputError
    from ..project_training import open_for_training, project_train_job

    if args.labels is not None or args.pixel_labels is not None:
        raise InputError("--labels and --pixel-labels do not go with --project: the project holds the labels and "
                         "corrections.", "Add labels with: covidseg project add PROJECT STUDY --labels CSV.")
    # under torchrun rank 0 alone writes the project and the run (project_training.py)
    with distributed.session(args.device) as device, open_for_training(args.project) as project:
        metrics = run_job(project_train_job(project, args.out, cfg, device=device, cache_dir=_cache_dir(args)),
                          quiet=args.quiet or not distributed.is_writer())
        if distributed.is_writer():
            print_json({"run": str(args.out), **(metrics or {})})
    return 0


def cmd_pseudo(args) -> int:
    from .. import distributed
    from ..data import load_slice_set
    from ..pseudo_job import pseudo_job

    cfg = _train_config(args, seg=False)
    # under torchrun every rank trains stage 1 to rank 0's plan; rank 0 alone decodes, prints and writes the run
    with distributed.session(args.device) as device:
        slices = (_slice_loader(args) or load_slice_set)(args.data, args.labels)
        metrics = run_job(pseudo_job(slices, args.out, cfg, device=device, cue=args.cue),
                          quiet=args.quiet or not distributed.is_writer())
        if distributed.is_writer():
            print_json({"run": str(args.out), **(metrics or {})})
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pseudo", help="stage 1 alone: labels -> classifier -> fused CAMs -> pseudo masks")
    _add_stage1_options(p)
    p.add_argument("--budget", type=budget_minutes, default=None, metavar="MINUTES",
                   help="train the classifier for about MINUTES in all, pseudo masks included (measured on its "
                   "first epoch, at size 128 on a CPU unless --size is given; --cls-epochs wins). Default: no "
                   "budget, the fixed 30 epochs at size 256")
    p.add_argument("--cue", choices=PSEUDO_CUES, default="prior",
                   help="where an infected slice's pseudo mask comes from: prior (default) = the label-free "
                   "segmenter prior shipped with covidseg, inside the lung field; cam = the fused CAM and the "
                   "density cue (the paper's method, what `train --synthetic off` uses)")
    _add_cache_options(p)
    p.set_defaults(func=cmd_pseudo)

    t = sub.add_parser("train", help="labels -> classifier -> fused CAMs -> pseudo masks -> segmenter "
                       "(resumable: re-run the same command on the same --out)")
    _add_stage1_options(t, project=True)
    t.add_argument("--seg-epochs", type=positive_int, default=None,
                   help="segmenter epochs (wins over --budget for stage 2; default: the budget's choice, or 40)")
    budget = t.add_mutually_exclusive_group()
    budget.add_argument("--budget", type=budget_minutes, default=None, metavar="MINUTES", help=BUDGET_HELP)
    budget.add_argument("--no-budget", dest="budget", action="store_const", const=0.0,
                        help="the fixed schedule on any device (same as --budget 0)")
    t.add_argument("--synthetic", choices=SYNTHETIC_MODES, default=None,
                   help="synthetic lesions drawn on the clean slices, with exact masks: only (default, best on unseen "
                   "patients) trains on them and the clean slices; auto also uses the pseudo masks the label-free "
                   "prior makes of the infected slices; off is the paper's method (CAM pseudo masks only). Without a "
                   "clean slice: off, with a note")
    t.add_argument("--init", default=None, metavar="prior|none|FILE",
                   help="where the segmenter starts: prior (default) = the label-free prior shipped with covidseg "
                   "(trained on synthetic lesions only) when it fits the run's network and size, else random "
                   "weights; none = random weights; FILE = another prior file (scripts/train_synthetic_prior.py)")
    t.add_argument("--prior-share", type=unit_fraction, default=None, metavar="0-1",
                   help="how much of the prior's weights the trained segmenter keeps (default 0.25): the study's "
                   "slices fine-tune the prior and the result is blended with it, which held up better on patients "
                   "neither saw; 0 = the fine-tuned weights alone. Only when the segmenter starts from a prior")
    t.add_argument("--pixel-labels", type=Path, default=None,
                   help="folder of PNG masks (0/255, named as the images) for some slices: full supervision "
                   "for those slices")
    t.add_argument("--data-workers", type=worker_count, default=None, metavar="N",
                   help="processes that draw the synthetic lesions ahead of the training steps (default: 0 on a CPU, "
                   "where the steps use every core; up to 4 on a GPU). Never changes what the run learns")
    _add_cache_options(t)
    t.set_defaults(func=cmd_train)


def _add_cache_options(p: argparse.ArgumentParser) -> None:
    cache = p.add_mutually_exclusive_group()
    cache.add_argument("--cache-dir", type=Path, default=None, metavar="DIR",
                       help="where --data's decoded slices are kept, memory-mapped, for every torchrun process and "
                       "later runs (decoded once; a changed file is decoded again). Default: $COVIDSEG_CACHE_DIR, "
                       "else $XDG_CACHE_HOME/covidseg/slices or ~/.cache/covidseg/slices. One that cannot be "
                       "written: the data is read without it, with a warning")
    cache.add_argument("--no-cache", action="store_true",
                       help="read --data without the slice cache (every torchrun process decodes it)")
