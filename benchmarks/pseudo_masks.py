"""Stage-1 benchmark on zenodo-dev: pseudo-mask quality of fusion none / max / avg vs. an intensity prior.

Split by volume: the classifier trains on the labels of the training volumes only (default c01-c05); the other
volumes' slices are unlabelled for training (their CAMs are tracked and fused when the classifier calls them
infected, exactly like an unlabelled slice would be). Pseudo-mask thresholds are chosen per fusion mode on the
infected images of the training volumes only, then applied unchanged to the unseen volumes. Ground truth is
used for threshold choice on training volumes and for reporting, never for training.

    MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000 MALLOC_TOP_PAD_=268435456 \\
    .venv/bin/python benchmarks/pseudo_masks.py --seeds 0 1 --out docs/results_stage1.md

Prints a markdown report and writes it (with the exact command) to --out.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from covidseg_core.constants import FUSION_MODES  # noqa: E402
from covidseg_core.events import EpochReport, drive  # noqa: E402
from covidseg_core.imaging.resize import upsample_maps  # noqa: E402
from covidseg_core.imaging.lungs import density_prior, lung_field, lung_saliency  # noqa: E402
from covidseg_core.results.metrics import roc_auc, summarize  # noqa: E402
from covidseg_core.weak.classifier_training import compute_cams, train_classifier  # noqa: E402
from covidseg_core.weak.config import Stage1Config  # noqa: E402
from covidseg_core.weak.pseudo_masks import relative_cam  # noqa: E402

log = logging.getLogger("bench_pseudo")

T_FG_GRID = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
SAL_FG_GRID = (-99.0, 0.0, 0.5, 1.0, 1.5, 2.0)


def load(data: Path):
    from covidseg_core.data import load_slice_set
    return load_slice_set(data)


def train_seed(slices, train_vols, seed: int, cfg: Stage1Config, cache: Path | None):
    """Train on the training volumes' labels; return fused maps for all slices, test-volume probabilities and
    epoch timings (cached per seed so threshold studies need no retraining)."""
    key = f"seed{seed}_e{cfg.cls_epochs}_s{cfg.size}_w{cfg.width}_n{len(slices)}"
    if cache is not None and (cache / f"{key}.npz").is_file():
        z = np.load(cache / f"{key}.npz", allow_pickle=False)
        log.info("using cached maps %s", key)
        return {k: z[k] for k in z.files}, json.loads((cache / f"{key}.json").read_text())
    labels = [lab if g in train_vols else None for lab, g in zip(slices.labels, slices.groups)]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = dataclasses.replace(cfg, seed=seed)
    track = np.flatnonzero(np.array([lab != "clean" for lab in labels]))   # infected train + all unseen
    t0 = time.monotonic()
    job = train_classifier(slices.images, labels, cfg, device, track_idx=track)
    epoch_s = []

    def on_event(ev) -> None:
        if isinstance(ev, EpochReport):
            epoch_s.append(ev.seconds)
            log.info("seed %d epoch %d/%d %.0fs loss %.3f acc %.3f auc %.3f", seed, ev.epoch, ev.epochs,
                     ev.seconds, ev.losses["loss"], ev.metrics["accuracy"], ev.metrics["auc"])

    model, bank, history = drive(job, on_event)
    train_s = time.monotonic() - t0
    probs, _ = compute_cams(model, slices.images, device)
    out = {"track": track, "probs": probs, "count": bank.count,
           **{f"fused_{m}": bank.fused(m) for m in FUSION_MODES}}
    info = {"epoch_seconds": epoch_s, "train_seconds": train_s, "history": history}
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(cache / f"{key}.npz", **out)
        (cache / f"{key}.json").write_text(json.dumps(info, default=float))
    return out, info


def lung_study(slices):
    lungs = np.stack([lung_field(im) for im in slices.images])
    gt_l = slices.extra.get("gt_lungs")
    res = {}
    if gt_l is not None:
        have = gt_l.reshape(len(gt_l), -1).any(1)
        s = summarize(list(lungs[have]), list(gt_l[have]))
        res["dice_mean"], res["dice_pooled"] = s["dice_mean"], s["dice_pooled"]
    inf = slices.gt_masks > 0
    res["infection_inside"] = float((lungs & inf).sum() / max(inf.sum(), 1))
    res["infection_inside_gt_lungs"] = float((gt_l & inf).sum() / max(inf.sum(), 1)) if gt_l is not None else None
    return lungs, res


def evaluate(fg_masks, gts):
    s = summarize(list(fg_masks), list(gts))
    return {k: s[k] for k in ("dice_mean", "sensitivity_mean", "specificity_mean", "dice_pooled",
                              "sensitivity_pooled", "specificity_pooled", "n_infected")}


def fg_masks(cams, sal, lungs, t_fg, sal_fg):
    return lungs & (cams >= t_fg) & (sal >= sal_fg)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "zenodo-dev")
    ap.add_argument("--train-volumes", default="c01,c02,c03,c04,c05")
    ap.add_argument("--test-volumes", default="c06,c07,r01,r02,r03")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--cls-epochs", type=int, default=Stage1Config.cls_epochs)
    ap.add_argument("--cache", type=Path, default=None, help="folder to keep per-seed maps (reused when present)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--every", type=int, default=1, help="use every k-th slice only (quick checks of this script)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    command = "MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000 MALLOC_TOP_PAD_=268435456 " \
              ".venv/bin/python benchmarks/pseudo_masks.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    t_all = time.monotonic()
    slices = load(args.data)
    if args.every > 1:
        slices = slices.subset(np.arange(0, len(slices), args.every))
    gt_lung_dir = args.data / "lungs"
    if gt_lung_dir.is_dir():
        from covidseg_core.io.images import read_gray
        slices.extra["gt_lungs"] = np.stack([read_gray(gt_lung_dir / sid) > 0 for sid in slices.ids])
    train_vols = set(args.train_volumes.split(","))
    test_vols = set(args.test_volumes.split(","))
    groups = np.array(slices.groups)
    infected_gt = slices.gt_masks.reshape(len(slices), -1).any(1)
    is_train = np.isin(groups, list(train_vols))
    is_test = np.isin(groups, list(test_vols))
    cfg = Stage1Config(cls_epochs=args.cls_epochs)

    t0 = time.monotonic()
    lungs, lung_res = lung_study(slices)
    lung_s = (time.monotonic() - t0) / len(slices)
    eval_idx = np.flatnonzero(infected_gt & (is_train | is_test))
    sal = np.stack([lung_saliency(slices.images[i], lungs[i]) for i in eval_idx])
    L = lungs[eval_idx]
    gts = slices.gt_masks[eval_idx] > 0
    tr = is_train[eval_idx]
    te = is_test[eval_idx]

    rows = []     # (method, seed, split, metrics, params)
    prior = np.stack([density_prior(slices.images[i], lungs[i]) for i in eval_idx])
    rows.append(("intensity prior (lung > P70 of lung)", "-", evaluate(prior[tr], gts[tr]),
                 evaluate(prior[te], gts[te]), "P70"))
    # saliency alone, thresholds tuned on train volumes like the CAM methods (t_fg = 0)
    best = max(SAL_FG_GRID[1:], key=lambda s: evaluate(fg_masks(np.ones_like(sal), sal, L, 0, s)[tr],
                                                       gts[tr])["dice_mean"])
    m = fg_masks(np.ones_like(sal), sal, L, 0, best)
    rows.append(("density saliency alone (tuned on train)", "-", evaluate(m[tr], gts[tr]), evaluate(m[te], gts[te]),
                 f"sal>={best}"))

    aucs, timings = [], []
    for seed in args.seeds:
        maps, info = train_seed(slices, train_vols, seed, cfg, args.cache)
        timings.append(info)
        labelled_test = is_test & np.array([lab is not None for lab in slices.labels])
        aucs.append({"seed": seed, "auc_unseen": roc_auc(maps["probs"][labelled_test],
                                                         np.array(slices.labels)[labelled_test] == "infected"),
                     "auc_train": roc_auc(maps["probs"][is_train],
                                          np.array(slices.labels)[is_train] == "infected")})
        pos = {int(s): k for k, s in enumerate(maps["track"])}
        rows_k = [pos[int(i)] for i in eval_idx]
        for mode in FUSION_MODES:
            cams = upsample_maps(maps[f"fused_{mode}"][rows_k], gts.shape[1:])
            cams = np.stack([relative_cam(c, l) for c, l in zip(cams, L)])
            grid = {}
            for t_fg, s_fg in itertools.product(T_FG_GRID[1:], SAL_FG_GRID):
                grid[(t_fg, s_fg)] = evaluate(fg_masks(cams[tr], sal[tr], L[tr], t_fg, s_fg), gts[tr])["dice_mean"]
            t_fg, s_fg = max(grid, key=grid.get)
            m = fg_masks(cams, sal, L, t_fg, s_fg)
            rows.append((f"CAM fusion {mode} + lung field + saliency", seed, evaluate(m[tr], gts[tr]),
                         evaluate(m[te], gts[te]), f"t_fg={t_fg}, sal_fg={s_fg}"))
            # the CAM alone (inside the lung field), tuned the same way
            cam_only = {t: evaluate(fg_masks(cams[tr], sal[tr], L[tr], t, -99.0), gts[tr])["dice_mean"]
                        for t in T_FG_GRID[1:]}
            t_only = max(cam_only, key=cam_only.get)
            m = fg_masks(cams, sal, L, t_only, -99.0)
            rows.append((f"CAM fusion {mode} in lung field (no saliency)", seed, evaluate(m[tr], gts[tr]),
                         evaluate(m[te], gts[te]), f"t_fg={t_only}"))
        del maps

    report = render(args, command, rows, aucs, timings, lung_res, lung_s, time.monotonic() - t_all,
                    int(tr.sum()), int(te.sum()))
    sys.stdout.write(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)


def _f(x):
    return "nan" if x is None or x != x else f"{x:.3f}"


def render(args, command, rows, aucs, timings, lung_res, lung_s, total_s, n_tr, n_te) -> str:
    lines = ["## Stage 1: pseudo masks on zenodo-dev (split by volume)", "",
             "Command (repository root; CPU shared with other jobs while it ran, so timings are pessimistic):", "",
             "```", command, "```", "",
             f"Classifier trained on the labels of volumes {args.train_volumes} only; pseudo-mask thresholds chosen "
             f"per method on the infected images of those volumes ({n_tr} images) and applied unchanged to the "
             f"unseen volumes {args.test_volumes} ({n_te} infected images). Metrics: foreground of the pseudo "
             "mask vs ground truth (ignore counts as not infection); *mean* = mean over infected images, "
             "*pooled* = over all their pixels.", "",
             "| method | seed | train Dice mean | train Dice pooled | train sens | train spec | unseen Dice mean | "
             "unseen Dice pooled | unseen sens | unseen spec | thresholds |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, seed, a, b, params in rows:
        lines.append(f"| {name} | {seed} | {_f(a['dice_mean'])} | {_f(a['dice_pooled'])} | "
                     f"{_f(a['sensitivity_mean'])} | {_f(a['specificity_mean'])} | {_f(b['dice_mean'])} | "
                     f"{_f(b['dice_pooled'])} | {_f(b['sensitivity_mean'])} | {_f(b['specificity_mean'])} | {params} |")
    lines += ["", "Per fusion mode, mean over seeds (Dice mean, train / unseen):", ""]
    by = {}
    for name, seed, a, b, _ in rows:
        by.setdefault(name, []).append((a["dice_mean"], b["dice_mean"]))
    for name, v in by.items():
        v = np.array(v)
        lines.append(f"- {name}: {v[:, 0].mean():.3f} / {v[:, 1].mean():.3f}"
                     + (f" (+- {v[:, 0].std():.3f} / {v[:, 1].std():.3f} over {len(v)} seeds)" if len(v) > 1 else ""))
    lines += ["", "Classifier AUC (slice labels):", ""]
    for a in aucs:
        lines.append(f"- seed {a['seed']}: training volumes {_f(a['auc_train'])}, unseen volumes {_f(a['auc_unseen'])}")
    lines += ["", "Lung field (computed from the image) vs zenodo-dev/lungs:", "",
              f"- Dice mean {_f(lung_res.get('dice_mean'))}, pooled {_f(lung_res.get('dice_pooled'))}; "
              f"infection pixels inside the field {_f(lung_res['infection_inside'])} "
              f"(inside the ground-truth lungs: {_f(lung_res.get('infection_inside_gt_lungs'))}); "
              f"{lung_s * 1000:.0f} ms per slice", "",
              "Timing (this 2-core CPU, shared):", ""]
    for seed, t in zip(args.seeds, timings):
        es = t["epoch_seconds"]
        lines.append(f"- seed {seed}: {len(es)} epochs, {np.mean(es):.0f} s per epoch (incl. CAMs of all tracked "
                     f"slices), training {t['train_seconds'] / 60:.1f} min")
    lines += [f"- whole benchmark: {total_s / 60:.1f} min", ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
