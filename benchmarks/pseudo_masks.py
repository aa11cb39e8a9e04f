"""Stage-1 benchmark on zenodo-dev: pseudo-mask quality of the product's stage 1, its fusion modes, the old
threshold lung field, an intensity prior, and refinements that make the masks follow the lesions.

Split by volume: the classifier trains on the labels of the training volumes only (default c01-c05), on the inputs
the product gives it (weak/job.py: Stage1Config defaults, so the learned lung field and lung-masked input); the
other volumes' slices are unlabelled for training (their CAMs are tracked and fused when the classifier calls them
infected, exactly like an unlabelled slice would be). Thresholds are chosen per method on the infected images of
the training volumes only, then applied unchanged to the unseen volumes; the product row uses the product's own
make_pseudo_mask with its default thresholds. Per-study density levels come from each volume's `clean` slices
(its own slice labels, as the radiologist of that study gives them). Ground truth is used for threshold choice on
training volumes and for reporting, never for training.

    MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000 MALLOC_TOP_PAD_=268435456 \\
    .venv/bin/python benchmarks/pseudo_masks.py --seeds 0 1 --cache /tmp/s1 --out docs/results_stage1.md

--old-classifier also trains the classifier as it was before the learned lung field (threshold field, unmasked
input) for the "old stage 1" row. The random walker row needs scikit-image. Prints a markdown report and writes
it (with the exact command) to --out.
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
sys.path.insert(0, str(REPO / "benchmarks"))

from covidseg_core.constants import FOREGROUND, FUSION_MODES, LUNG_METHODS  # noqa: E402
from covidseg_core.events import EpochReport, drive  # noqa: E402
from covidseg_core.imaging.resize import upsample_maps  # noqa: E402
from covidseg_core.imaging.lung_model import compute_lung_fields  # noqa: E402
from covidseg_core.imaging.lungs import density_prior, lung_saliency  # noqa: E402
from covidseg_core.results.metrics import roc_auc, summarize  # noqa: E402
from covidseg_core.weak.classifier_training import compute_cams, train_classifier  # noqa: E402
from covidseg_core.weak.config import Stage1Config  # noqa: E402
from covidseg_core.weak.job import classifier_mask  # noqa: E402
from covidseg_core.weak.pseudo_masks import make_pseudo_mask, relative_cam, remove_small_components  # noqa: E402
from _refine import random_walker_foreground  # noqa: E402

log = logging.getLogger("bench_pseudo")

T_FG_GRID = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
SAL_FG_GRID = (-99.0, 0.0, 0.5, 1.0, 1.5, 2.0)
DENSITY_Q_GRID = (0.5, 0.7, 0.8, 0.9, 0.95)      # per-study level: this quantile of the clean slices' lung saliency
MIN_AREA_GRID = (0.0, 0.0006, 0.0018)            # foreground pieces below this share of the slice are dropped
# random walker seeds: (fg CAM >=, fg saliency >=, bg CAM <, bg below clean-slice quantile q / None: saliency < 0)
RW_GRID = tuple(itertools.product((0.4, 0.6), (0.5, 1.0), (0.1, 0.2), (None, 0.7)))


def load(data: Path):
    from covidseg_core.data import load_slice_set
    return load_slice_set(data)


def classifier_inputs(slices, cfg: Stage1Config, lungs: np.ndarray) -> np.ndarray:
    """What the product's classifier sees (weak/job.py): the working-size slices, times the dilated lung field when
    cfg.mask_input. Here every slice gets its field (the benchmark tracks the unseen volumes' slices too)."""
    return slices.images * classifier_mask(lungs) if cfg.mask_input else slices.images


def cache_key(seed: int, cfg: Stage1Config, n: int) -> str:
    return (f"seed{seed}_e{cfg.cls_epochs}_s{cfg.size}_w{cfg.width}_{cfg.lung_method}"
            f"{'_masked' if cfg.mask_input else ''}_n{n}")


def train_seed(slices, train_vols, seed: int, cfg: Stage1Config, lungs: np.ndarray, cache: Path | None):
    """Train on the training volumes' labels, on the inputs the product gives its classifier; return fused maps of
    the tracked slices (infected training slices and all unseen ones), probabilities of all slices and epoch
    timings (cached per seed and classifier setting, so threshold studies need no retraining)."""
    key = cache_key(seed, cfg, len(slices))
    if cache is not None and (cache / f"{key}.npz").is_file():
        z = np.load(cache / f"{key}.npz", allow_pickle=False)
        log.info("using cached maps %s", key)
        return {k: z[k] for k in z.files}, json.loads((cache / f"{key}.json").read_text())
    labels = [lab if g in train_vols else None for lab, g in zip(slices.labels, slices.groups)]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = dataclasses.replace(cfg, seed=seed)
    seen = classifier_inputs(slices, cfg, lungs)
    track = np.flatnonzero(np.array([lab != "clean" for lab in labels]))   # infected train + all unseen
    t0 = time.monotonic()
    job = train_classifier(seen, labels, cfg, device, track_idx=track)
    epoch_s = []

    def on_event(ev) -> None:
        if isinstance(ev, EpochReport):
            epoch_s.append(ev.seconds)
            log.info("%s epoch %d/%d %.0fs loss %.3f acc %.3f auc %.3f", key, ev.epoch, ev.epochs,
                     ev.seconds, ev.losses["loss"], ev.metrics["accuracy"], ev.metrics["auc"])

    model, bank, history = drive(job, on_event)
    train_s = time.monotonic() - t0
    probs, _ = compute_cams(model, seen, device)
    out = {"track": track, "probs": probs, "count": bank.count,
           **{f"fused_{m}": bank.fused(m) for m in FUSION_MODES}}
    info = {"epoch_seconds": epoch_s, "train_seconds": train_s, "history": history}
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(cache / f"{key}.npz", **out)
        (cache / f"{key}.json").write_text(json.dumps(info, default=float))
    return out, info


def lung_study(slices, lungs):
    gt_l = slices.extra.get("gt_lungs")
    res = {}
    if gt_l is not None:
        have = gt_l.reshape(len(gt_l), -1).any(1)
        s = summarize(list(lungs[have]), list(gt_l[have]))
        res["dice_mean"], res["dice_pooled"] = s["dice_mean"], s["dice_pooled"]
    inf = slices.gt_masks > 0
    res["infection_inside"] = float((lungs & inf).sum() / max(inf.sum(), 1))
    res["infection_inside_gt_lungs"] = float((gt_l & inf).sum() / max(inf.sum(), 1)) if gt_l is not None else None
    return res


def evaluate(fg_masks, gts):
    s = summarize(list(fg_masks), list(gts))
    return {k: s[k] for k in ("dice_mean", "sensitivity_mean", "specificity_mean", "dice_pooled",
                              "sensitivity_pooled", "specificity_pooled", "n_infected")}


def fg_masks(cams, sal, lungs, t_fg, sal_fg):
    return lungs & (cams >= t_fg) & (sal >= sal_fg)


def tune(make, grid, tr_idx, gts_tr):
    """The grid point with the best mean Dice on the training volumes' images `tr_idx`; make(params, idx) gives
    the masks of those images."""
    scores = {p: evaluate(make(p, tr_idx), gts_tr)["dice_mean"] for p in grid}
    return max(scores, key=scores.get)


class Study:
    """Everything the rows share: the infected images scored, their ground truth, lung fields and saliency per
    lung-field method, and each volume's clean-slice saliency (for per-study density levels)."""

    def __init__(self, slices, lungs: dict, eval_idx, is_train, is_test):
        self.slices = slices
        self.idx = eval_idx
        self.gts = slices.gt_masks[eval_idx] > 0
        self.tr = np.flatnonzero(is_train[eval_idx])
        self.te = np.flatnonzero(is_test[eval_idx])
        self.groups = np.array(slices.groups)[eval_idx]
        self.L = {m: f[eval_idx] for m, f in lungs.items()}
        self.sal = {m: np.stack([lung_saliency(slices.images[i], f[i]) for i in eval_idx]) for m, f in lungs.items()}
        # a study's clean slices (by its own slice labels), for the per-study density levels
        clean = [i for i, lab in enumerate(slices.labels) if lab == "clean"]
        self.clean_sal = {}
        for m, f in lungs.items():
            per = {}
            for i in clean:
                per.setdefault(slices.groups[i], []).append(lung_saliency(slices.images[i], f[i])[f[i]])
            self.clean_sal[m] = {g: np.concatenate(v) for g, v in per.items()}

    def level(self, method: str, q: float) -> np.ndarray:
        """Per scored image: its study's clean-slice saliency quantile q (0 when the study has no clean slice)."""
        lv = {g: float(np.quantile(v, q)) if v.size else 0.0 for g, v in self.clean_sal[method].items()}
        return np.array([lv.get(g, 0.0) for g in self.groups], dtype=np.float32)

    def split_scores(self, masks):
        return evaluate(masks[self.tr], self.gts[self.tr]), evaluate(masks[self.te], self.gts[self.te])


def cam_rows(st: Study, maps, lungs_name: str, modes, label: str, seed, rows, cams_out=None):
    """Tuned threshold rows (CAM >= t_fg and saliency >= sal_fg inside the lung field) per fusion mode."""
    pos = {int(s): k for k, s in enumerate(maps["track"])}
    rows_k = [pos[int(i)] for i in st.idx]
    L, sal = st.L[lungs_name], st.sal[lungs_name]
    for mode in modes:
        cams = upsample_maps(maps[f"fused_{mode}"][rows_k], st.gts.shape[1:])
        cams = np.stack([relative_cam(c, lg) for c, lg in zip(cams, L)])
        if cams_out is not None:
            cams_out[mode] = cams
        t_fg, s_fg = tune(lambda p, k: fg_masks(cams[k], sal[k], L[k], *p),
                          itertools.product(T_FG_GRID[1:], SAL_FG_GRID), st.tr, st.gts[st.tr])
        m = fg_masks(cams, sal, L, t_fg, s_fg)
        rows.append((label.format(mode=mode), seed, *st.split_scores(m), f"t_fg={t_fg}, sal_fg={s_fg}"))


def product_row(st: Study, slices, maps, seed, rows, cfg: Stage1Config | None = None, name: str = ""):
    """The product's own pseudo masks (weak/pseudo_masks.make_pseudo_mask with Stage1Config defaults, or `cfg`) from
    the product's fusion mode and lung field: fixed thresholds, nothing tuned here."""
    cfg = cfg or Stage1Config()
    pos = {int(s): k for k, s in enumerate(maps["track"])}
    cams = upsample_maps(maps[f"fused_{cfg.fusion}"][[pos[int(i)] for i in st.idx]], st.gts.shape[1:])
    L, sal = st.L[cfg.lung_method], st.sal[cfg.lung_method]
    levels = st.level(cfg.lung_method, cfg.clean_quantile) if cfg.clean_quantile is not None else [None] * len(L)
    m = np.stack([make_pseudo_mask(slices.images[i], c, lg, cfg, saliency=s, clean_level=lv) == FOREGROUND
                  for i, c, lg, s, lv in zip(st.idx, cams, L, sal, levels)])
    rows.append((name or f"**product stage 1** (make_pseudo_mask, Stage1Config defaults: {cfg.lung_method} lung "
                 f"field, fusion {cfg.fusion})", seed, *st.split_scores(m),
                 f"t_fg={cfg.t_fg}, sal_fg={cfg.sal_fg}, clean_quantile={cfg.clean_quantile}, "
                 f"min_component_frac={cfg.min_component_frac} (fixed)"))


def refinement_rows(st: Study, cams, seed, rows, sel_every: int):
    """Refinements of the learned-lung-field, avg-fusion masks: per-study density levels with a connected-component
    clean-up, and a random walker seeded by confident foreground and background. Settings chosen on the training
    volumes' images (every sel_every-th of them for the random walker, which is slow)."""
    L, sal = st.L["model"], st.sal["model"]
    levels = {q: st.level("model", q) for q in DENSITY_Q_GRID}

    def density(p, k):      # what make_pseudo_mask does with clean_quantile and min_component_frac set
        t, q, frac = p
        fg = L[k] & (cams[k] >= t) & (sal[k] >= levels[q][k][:, None, None])
        return np.stack([remove_small_components(f, round(frac * f.size)) for f in fg])

    p = tune(density, itertools.product(T_FG_GRID, DENSITY_Q_GRID, MIN_AREA_GRID), st.tr, st.gts[st.tr])
    rows.append(("learned lung field + avg + per-study density level + component clean-up (CAM threshold "
                 "re-tuned too)", seed,
                 *st.split_scores(density(p, np.arange(len(st.idx)))),
                 f"t_fg={p[0]}, clean_quantile={p[1]}, min_component_frac={p[2]}"))
    p_area = round(p[2] * L[0].size)

    try:
        import skimage  # noqa: F401
    except ImportError:
        log.warning("scikit-image is not installed: no random walker row")
        return

    def walker(p, k):
        fg_cam, fg_sal, bg_cam, q = p
        lv = levels[q] if q is not None else np.zeros(len(st.idx), np.float32)
        return np.stack([remove_small_components(random_walker_foreground(
            st.slices.images[st.idx[j]], cams[j], L[j], sal[j], fg_cam, fg_sal, bg_cam, lv[j]), p_area)
            for j in k])

    sel = st.tr[::sel_every]
    t0 = time.monotonic()
    p = tune(walker, RW_GRID, sel, st.gts[sel])
    log.info("random walker grid: %.0f s", time.monotonic() - t0)
    q = "aerated (saliency < 0)" if p[3] is None else f"clean-slice saliency P{100 * p[3]:g}"
    rows.append(("learned lung field + avg + random walker (seeded) + component clean-up", seed,
                 *st.split_scores(walker(p, np.arange(len(st.idx)))),
                 f"fg seeds CAM>={p[0]} & sal>={p[1]}; bg seeds CAM<{p[2]} or below {q}; min area {p_area} px"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "zenodo-dev")
    ap.add_argument("--train-volumes", default="c01,c02,c03,c04,c05")
    ap.add_argument("--test-volumes", default="c06,c07,r01,r02,r03")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--cls-epochs", type=int, default=Stage1Config.cls_epochs)
    ap.add_argument("--old-classifier", action="store_true",
                    help="also train the classifier as it was (threshold lung field, unmasked input) for the old row")
    ap.add_argument("--rw-every", type=int, default=2,
                    help="choose the random walker's settings on every k-th training image (it is slow)")
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

    lungs, lung_res, lung_s = {}, {}, {}
    for method in LUNG_METHODS:
        t0 = time.monotonic()
        lungs[method], warning = compute_lung_fields(slices.images, method)
        if warning:
            raise SystemExit(f"lung field '{method}': {warning}")
        lung_s[method] = (time.monotonic() - t0) / len(slices)
        lung_res[method] = lung_study(slices, lungs[method])
    eval_idx = np.flatnonzero(infected_gt & (is_train | is_test))
    st = Study(slices, lungs, eval_idx, is_train, is_test)

    rows = []     # (method, seed, train metrics, unseen metrics, params)
    for method, name in (("threshold", "threshold"), ("model", "learned")):
        prior = np.stack([density_prior(slices.images[i], lg) for i, lg in zip(eval_idx, st.L[method])])
        rows.append((f"intensity prior (lung > P70 of lung), {name} lung field", "-", *st.split_scores(prior),
                     "P70"))
    # saliency alone, thresholds tuned on train volumes like the CAM methods (t_fg = 0)
    L, sal = st.L["model"], st.sal["model"]
    best = tune(lambda s, k: fg_masks(1.0, sal[k], L[k], 0, s), SAL_FG_GRID[1:], st.tr, st.gts[st.tr])
    rows.append(("density saliency alone (tuned on train), learned lung field", "-",
                 *st.split_scores(fg_masks(1.0, sal, L, 0, best)), f"sal>={best}"))

    aucs, timings = [], []
    labelled_test = is_test & np.array([lab is not None for lab in slices.labels])
    y = np.array(slices.labels) == "infected"
    variants = [("product", cfg)]
    if args.old_classifier:
        variants.append(("old", dataclasses.replace(cfg, lung_method="threshold", mask_input=False)))
    for seed in args.seeds:
        for variant, vcfg in variants:
            maps, info = train_seed(slices, train_vols, seed, vcfg, lungs[vcfg.lung_method], args.cache)
            timings.append((seed, variant, info))
            aucs.append({"seed": seed, "variant": variant,
                         "auc_unseen": roc_auc(maps["probs"][labelled_test], y[labelled_test]),
                         "auc_train": roc_auc(maps["probs"][is_train], y[is_train])})
            if variant == "old":
                cam_rows(st, maps, "threshold", ["avg"], "old stage 1: threshold lung field, unmasked classifier, "
                         "fusion {mode} + saliency", seed, rows)
                continue
            product_row(st, slices, maps, seed, rows)
            product_row(st, slices, maps, seed, rows, Stage1Config(clean_quantile=None, min_component_frac=0.0),
                        "product stage 1 without the refinement (clean_quantile=None, min_component_frac=0)")
            cams = {}
            cam_rows(st, maps, "model", FUSION_MODES, "learned lung field + fusion {mode} + saliency", seed, rows,
                     cams)
            cam_rows(st, maps, "threshold", ["avg"], "threshold lung field + fusion {mode} + saliency (same "
                     "classifier)", seed, rows)
            refinement_rows(st, cams["avg"], seed, rows, args.rw_every)
            del maps, cams

    report = render(args, command, rows, aucs, timings, lung_res, lung_s, time.monotonic() - t_all,
                    len(st.tr), len(st.te))
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
    lines += ["", "Classifier AUC (slice labels; *product* = Stage1Config defaults, *old* = threshold lung field, "
              "unmasked input):", ""]
    for a in aucs:
        lines.append(f"- seed {a['seed']}, {a['variant']}: training volumes {_f(a['auc_train'])}, "
                     f"unseen volumes {_f(a['auc_unseen'])}")
    lines += ["", "Lung field (computed from the image) vs zenodo-dev/lungs, all slices:", ""]
    for method, res in lung_res.items():
        lines.append(f"- {method}: Dice mean {_f(res.get('dice_mean'))}, pooled {_f(res.get('dice_pooled'))}; "
                     f"infection pixels inside the field {_f(res['infection_inside'])} "
                     f"(inside the ground-truth lungs: {_f(res.get('infection_inside_gt_lungs'))}); "
                     f"{lung_s[method] * 1000:.0f} ms per slice")
    lines += ["", "Timing (this 2-core CPU, shared with other jobs):", ""]
    for seed, variant, t in timings:
        es = t["epoch_seconds"]
        lines.append(f"- seed {seed}, {variant}: {len(es)} epochs, {np.mean(es):.0f} s per epoch (incl. CAMs of all "
                     f"tracked slices), training {t['train_seconds'] / 60:.1f} min")
    lines += [f"- whole benchmark: {total_s / 60:.1f} min", ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
