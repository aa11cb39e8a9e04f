"""Commands of `covidseg` beyond demo/info: pipeline stages (pseudo, train, predict, evaluate). Wired into
cli.build_parser. Progress goes to stderr, the result as one JSON object to stdout."""
from __future__ import annotations

import argparse
import os
from pathlib import Path


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _add_stage1_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=Path,
                   help="image folder (images/ + labels.csv), DICOM folder or NIfTI file with a labels CSV")
    p.add_argument("--labels", type=Path, default=None, help="labels CSV when it does not lie with the data")
    p.add_argument("--out", required=True, type=Path, help="run folder (created; re-run the same command to resume)")
    p.add_argument("--fusion", choices=("avg", "max", "none"), default=None,
                   help="attention fusion of the per-epoch CAMs (default avg)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--size", type=_positive_int, default=None,
                   help="longer side slices are scaled to for training and prediction (default 256)")
    p.add_argument("--cls-epochs", type=_positive_int, default=None, help="classifier epochs")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--fast", action="store_true",
                   help="small, quick preset (about a minute on the demo on a laptop CPU)")


def _train_config(args, seg: bool):
    from .training import TrainConfig, fast_config

    overrides = {k: v for k, v in {
        "fusion": args.fusion, "size": args.size, "cls_epochs": args.cls_epochs, "seed": args.seed,
        "seg_epochs": getattr(args, "seg_epochs", None) if seg else None,
        "pixel_labels": str(args.pixel_labels.resolve()) if getattr(args, "pixel_labels", None) else None,
    }.items() if v is not None}
    return fast_config(**overrides) if args.fast else TrainConfig(**overrides)


def cmd_train(args) -> int:
    from .cli import _print_json, _run_job
    from .training import train_job

    cfg = _train_config(args, seg=True)
    metrics = _run_job(train_job(args.data, args.out, cfg, device=args.device, labels_csv=args.labels),
                       quiet=args.quiet)
    _print_json({"run": str(args.out), **(metrics or {})})
    return 0


def cmd_pseudo(args) -> int:
    from .cli import _print_json, _run_job
    from .data import load_slice_set
    from .inference import resolve_device
    from .runs import RunFolder
    from .stage1 import run_stage1
    from .training import _stage1_config

    cfg = _train_config(args, seg=False)
    device = resolve_device(args.device)
    slices = load_slice_set(args.data, args.labels)
    metrics = _run_job(run_stage1(slices, args.out, _stage1_config(cfg, device), None), quiet=args.quiet)
    _print_json({"run": str(args.out), **(metrics or {})})
    return 0


def cmd_predict(args) -> int:
    from .cli import _print_json, _run_job
    from .inference import configure_cpu_threads, predict_job

    configure_cpu_threads()
    summary = _run_job(predict_job(args.run, args.input, args.out, device=args.device, batch_size=args.batch_size,
                                   series_uid=args.series, precision=args.precision), quiet=args.quiet)
    _print_json(summary)
    return 0


def cmd_evaluate(args) -> int:
    from .cli import _print_json
    from .evaluate import evaluate_folders

    _print_json(evaluate_folders(args.pred, args.gt))
    return 0


def register(sub, commands: dict) -> None:
    """Add the pipeline sub-commands to the parser."""
    # Idle OpenMP threads spin by default; on a busy or shared CPU that made training ~10x slower (measured on
    # the 2-core dev machine). Passive waiting costs little on an idle machine. Must be set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    p = sub.add_parser("pseudo", help="stage 1 alone: labels -> classifier -> fused CAMs -> pseudo masks")
    _add_stage1_options(p)
    p.set_defaults(func=cmd_pseudo)

    t = sub.add_parser("train", help="labels -> classifier -> fused CAMs -> pseudo masks -> segmenter "
                       "(resumable: re-run the same command on the same --out)")
    _add_stage1_options(t)
    t.add_argument("--seg-epochs", type=_positive_int, default=None, help="segmenter epochs")
    t.add_argument("--pixel-labels", type=Path, default=None,
                   help="folder of PNG masks (0/255, named as the images) for some slices: full supervision "
                   "for those slices")
    t.set_defaults(func=cmd_train)

    r = sub.add_parser("predict", help="masks for a study: PNGs for an image folder, NIfTI for a DICOM/NIfTI volume")
    r.add_argument("--run", required=True, type=Path, help="run folder made by `covidseg train`")
    r.add_argument("--input", required=True, type=Path, help="image folder, DICOM folder or NIfTI file")
    r.add_argument("--out", required=True, type=Path, help="output folder")
    r.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    r.add_argument("--batch-size", type=_positive_int, default=None)
    r.add_argument("--series", default=None, help="SeriesInstanceUID when a DICOM folder holds several")
    r.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="auto: bf16 on CPUs with AMX/AVX-512 BF16 (2-3x faster, masks differ in ~0.05%% of "
                   "pixels), mixed precision on CUDA; fp32: full precision everywhere")
    r.set_defaults(func=cmd_predict)

    e = sub.add_parser("evaluate", help="Dice / sensitivity / specificity of predicted masks as JSON")
    e.add_argument("--pred", required=True, type=Path, help="folder of predicted masks")
    e.add_argument("--gt", required=True, type=Path, help="folder of ground-truth masks (or a data set with masks/)")
    e.set_defaults(func=cmd_evaluate)

    commands.update({"pseudo": cmd_pseudo, "train": cmd_train, "predict": cmd_predict, "evaluate": cmd_evaluate})
