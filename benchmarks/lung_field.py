"""Lung-field benchmark on zenodo-dev: the learned lung field vs. the threshold method, by leave-volumes-out folds.

Each fold trains the network (scripts/train_lung_model.py) on the other volumes and scores the held-out ones
against the expert lung masks (zenodo-dev/lungs): lung Dice (pooled over the volume's slices) and the share of
infection pixels (zenodo-dev/masks) inside the field. Every slice is scored twice: as the whole 256x256 slice,
and as its two 256x128 halves predicted one by one and put back side by side (what image folders of half slices
give the pipeline). The threshold method (covidseg_core.imaging.lungs.lung_field) needs no training and is the baseline.

    MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000 MALLOC_TOP_PAD_=268435456 \\
    .venv/bin/python benchmarks/lung_field.py --epochs 6 --models out/lung_folds --out docs/results_lung_field.md

Prints a markdown report (with the command) and writes it to --out. Fold models are kept in --models and reused
when a file for the same fold, epochs and seed is there.
"""
from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from covidseg_core.atomic import atomic_write_text  # noqa: E402
from covidseg_core.imaging.lung_model import THRESHOLD as LUNG_THRESHOLD  # noqa: E402
from covidseg_core.imaging.lung_model import (load_lung_model, parameter_count, predict_lung_fields,  # noqa: E402
                                      threshold_lung_fields)

log = logging.getLogger("bench_lung_field")

DEFAULT_FOLDS = "c01,c06;c02,c07;c03,r01;c04,r02;c05,r03"
TARGET_DICE = 0.95
TARGET_INSIDE = 0.97


def halves_then_whole(fields_fn, images: np.ndarray) -> np.ndarray:
    """Fields of the left and right halves computed separately, put back side by side."""
    half = images.shape[2] // 2
    return np.concatenate([fields_fn(images[:, :, :half]), fields_fn(images[:, :, half:])], axis=2)


def scores(pred: np.ndarray, lungs: np.ndarray, infection: np.ndarray) -> dict:
    """Sums that pool over slices: intersection, sizes, infection kept; and per-slice Dice."""
    inter = (pred & lungs).sum(axis=(1, 2))
    sizes = pred.sum(axis=(1, 2)) + lungs.sum(axis=(1, 2))
    return {"inter": int(inter.sum()), "sizes": int(sizes.sum()),
            "inf_in": int((pred & infection).sum()), "inf": int(infection.sum()),
            "slice_dice": (2 * inter / np.maximum(sizes, 1)).tolist()}


def pooled(parts: list[dict]) -> dict:
    inter = sum(p["inter"] for p in parts)
    sizes = sum(p["sizes"] for p in parts)
    inf_in = sum(p["inf_in"] for p in parts)
    inf = sum(p["inf"] for p in parts)
    slice_dice = [d for p in parts for d in p["slice_dice"]]
    return {"dice": 2 * inter / max(sizes, 1), "inside": inf_in / max(inf, 1),
            "slice_dice_mean": float(np.mean(slice_dice)), "slice_dice_p5": float(np.percentile(slice_dice, 5))}


def fold_model(train_mod, data_dir: Path, train_vols: list[str], args, models: Path | None):
    weight = "" if args.infection_weight == train_mod.INFECTION_WEIGHT else f"_w{args.infection_weight:g}"
    key = f"lung_{'-'.join(train_vols)}_e{args.epochs:g}_s{args.seed}{weight}.safetensors"
    if models is not None and (models / key).is_file():
        log.info("reusing %s", models / key)
        return load_lung_model(models / key, "cpu"), None
    data = train_mod.load_zenodo(data_dir, train_vols)
    model, summary = train_mod.train(data, epochs=args.epochs, seed=args.seed, infection_weight=args.infection_weight)
    if models is not None:
        train_mod.save_model(model, models / key, summary, "benchmarks/lung_field.py (fold model)")
    return model, summary


def per_slice_seconds(fn, images: np.ndarray, repeats: int = 2) -> float:
    fn(images[:2])   # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn(images)
        best = min(best, time.perf_counter() - t)
    return best / len(images)


def timing_rows(model, images256: np.ndarray, mirror: bool, n: int = 16) -> list[str]:
    imgs = images256[:n]
    imgs512 = np.stack([cv2.resize(s, (512, 512), interpolation=cv2.INTER_LINEAR) for s in imgs])
    rows = []
    for label, batch in (("256x256", imgs), ("512x512", imgs512)):
        net = per_slice_seconds(lambda x: predict_lung_fields(model, x, mirror=mirror), batch)
        thr = per_slice_seconds(threshold_lung_fields, batch, repeats=1)
        rows.append(f"| {label} | {1000 * net:.1f} | {1000 * thr:.1f} |")
    return rows


def fmt(v: float) -> str:
    return f"{v:.3f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "zenodo-dev")
    ap.add_argument("--folds", default=DEFAULT_FOLDS, help="held-out volumes: 'c01,c06;c02,c07;...'")
    ap.add_argument("--epochs", type=float, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--infection-weight", type=float, default=1.0, help="as scripts/train_lung_model.py")
    ap.add_argument("--models", type=Path, default=None, help="folder to keep and reuse the fold models")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-mirror", action="store_true", help="one network pass per slice (before stop 33)")
    ap.add_argument("--threshold", type=float, default=LUNG_THRESHOLD,
                    help=f"lung probability above which a pixel is in the field (default {LUNG_THRESHOLD})")
    ap.add_argument("--out", type=Path, default=None, help="write the markdown report here too")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    import train_lung_model as train_mod

    folds = [[v.strip() for v in f.split(",") if v.strip()] for f in args.folds.split(";") if f.strip()]
    everything = train_mod.load_zenodo(args.data)
    all_vols = sorted(set(everything.volumes))
    vols_arr = np.asarray(everything.volumes)
    results: dict[str, dict[str, dict]] = {}     # volume -> method -> scores
    params = None
    model = None
    for held in folds:
        train_vols = [v for v in all_vols if v not in held]
        log.info("fold: train on %s, test on %s", ",".join(train_vols), ",".join(held))
        model, _ = fold_model(train_mod, args.data, train_vols, args, args.models)
        params = parameter_count(model)
        for vol in held:
            sel = vols_arr == vol
            imgs, lungs, inf = everything.images[sel], everything.lungs[sel], everything.infection[sel]
            net_fn = lambda x: predict_lung_fields(model, x, threshold=args.threshold,  # noqa: E731
                                                   mirror=not args.no_mirror)
            results[vol] = {
                "net_whole": scores(net_fn(imgs), lungs, inf),
                "net_halves": scores(halves_then_whole(net_fn, imgs), lungs, inf),
                "thr_whole": scores(threshold_lung_fields(imgs), lungs, inf),
                "thr_halves": scores(halves_then_whole(threshold_lung_fields, imgs), lungs, inf),
            }
            r = {k: pooled([v]) for k, v in results[vol].items()}
            log.info("%s: net Dice %.3f/%.3f inside %.3f/%.3f | thr Dice %.3f/%.3f inside %.3f/%.3f", vol,
                     r["net_whole"]["dice"], r["net_halves"]["dice"], r["net_whole"]["inside"],
                     r["net_halves"]["inside"], r["thr_whole"]["dice"], r["thr_halves"]["dice"],
                     r["thr_whole"]["inside"], r["thr_halves"]["inside"])
    methods = ("net_whole", "net_halves", "thr_whole", "thr_halves")
    lines = ["| held-out volume | slices | net Dice whole | net Dice halves | net infection inside whole | "
             "net infection inside halves | thr Dice whole | thr Dice halves | thr infection inside whole | "
             "thr infection inside halves |", "|" + "---|" * 10]
    for vol in [v for f in folds for v in f]:
        r = {m: pooled([results[vol][m]]) for m in methods}
        n = len(results[vol]["net_whole"]["slice_dice"])
        lines.append(f"| {vol} | {n} | " + " | ".join(fmt(r[m]["dice"]) for m in methods[:2]) + " | "
                     + " | ".join(fmt(r[m]["inside"]) for m in methods[:2]) + " | "
                     + " | ".join(fmt(r[m]["dice"]) for m in methods[2:]) + " | "
                     + " | ".join(fmt(r[m]["inside"]) for m in methods[2:]) + " |")
    overall = {m: pooled([results[v][m] for v in results]) for m in methods}
    n_all = sum(len(results[v]["net_whole"]["slice_dice"]) for v in results)
    lines.append(f"| **all held-out (pooled)** | {n_all} | "
                 + " | ".join(f"**{fmt(overall[m]['dice'])}**" for m in methods[:2]) + " | "
                 + " | ".join(f"**{fmt(overall[m]['inside'])}**" for m in methods[:2]) + " | "
                 + " | ".join(fmt(overall[m]["dice"]) for m in methods[2:]) + " | "
                 + " | ".join(fmt(overall[m]["inside"]) for m in methods[2:]) + " |")
    lines.append("| mean slice Dice (5th percentile) | | "
                 + " | ".join(f"{fmt(overall[m]['slice_dice_mean'])} ({fmt(overall[m]['slice_dice_p5'])})"
                              for m in methods[:2]) + " | | | "
                 + " | ".join(f"{fmt(overall[m]['slice_dice_mean'])} ({fmt(overall[m]['slice_dice_p5'])})"
                              for m in methods[2:]) + " | | |")
    worst = min(min(overall[m]["dice"] for m in methods[:2]), 1.0)
    worst_in = min(overall[m]["inside"] for m in methods[:2])
    met = "met" if worst >= TARGET_DICE and worst_in >= TARGET_INSIDE else "NOT met"
    command = ("MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000 MALLOC_TOP_PAD_=268435456 "
               ".venv/bin/python benchmarks/lung_field.py " + " ".join(shlex.quote(a) for a in
                                                                        (argv or sys.argv[1:])))
    report = [
        "## Lung field: learned network vs. threshold method, leave-volumes-out",
        "",
        f"`{command}`",
        "",
        f"Network: {params:,} parameters{'' if args.no_mirror else ', mirror averaging at inference'}, field at "
        f"probability > {args.threshold:g}, trained "
        f"{args.epochs:g} epochs (seed {args.seed}) per fold on the volumes "
        f"not held out; folds (held out): {'; '.join(', '.join(f) for f in folds)}. Dice is pooled over the "
        "slices; 'infection inside' is the share of ground-truth infection pixels inside the field. 'whole' = the "
        "256x256 slice, 'halves' = each 256x128 half on its own, put back side by side.",
        "",
        *lines,
        "",
        f"Targets (issue 9): Dice >= {TARGET_DICE} and infection inside >= {TARGET_INSIDE:.0%} on unseen volumes: "
        f"**{met}** (worst of whole/halves: Dice {worst:.3f}, inside {worst_in:.3f}).",
        "",
        f"Per-slice time on this machine ({torch.get_num_threads()} torch threads, CPU; the fields of 16 slices in "
        "one call, post-processing included):",
        "",
        "| slice size | network ms/slice | threshold ms/slice |",
        "|---|---|---|",
        *timing_rows(model, everything.images, not args.no_mirror),
        "",
    ]
    text = "\n".join(report)
    print(text)
    if args.out is not None:
        atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
