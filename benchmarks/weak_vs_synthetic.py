"""The segmenter under the default time budget on zenodo-dev, split by volume: full supervision (the ceiling),
the paper's weak labels (--synthetic off), label-free synthetic lesions (only), and both (auto); plus the app's
use, where each study trains on its own slice labels.

Train volumes c01-c05, unseen volumes c06, c07, r01, r02, r03 (never seen by any training, stage 1 included).
Every run is a real `covidseg train` job (pipeline.train_job) with the CPU defaults: an 8-minute budget sized by
the planner, the learned lung field, predictions kept inside it. Ground-truth masks train only the ceiling row
(train_on_targets) and the k-slice row (pixel masks of 10 % of the training slices, as corrections would give);
`ceiling_auto` is the default's recipe with expert masks instead of pseudo masks (synthetic lesions on the clean
slices mixed in, as `--synthetic auto` does), the ceiling that the weak default is compared with like for like.

Usage (each run takes about its budget; results are appended to OUT/results.json and finished runs skipped):
  MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000 MALLOC_TOP_PAD_=268435456 \\
  .venv/bin/python benchmarks/weak_vs_synthetic.py --out out/bench_synth --rows ceiling,off,only,auto \\
      --seeds 0 1 --report docs/results_synthetic.md
  ... --rows app --app-volumes c01,c06,r02      # each study trained on its own labels, scored on itself
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from covidseg_core.data import load_slice_set  # noqa: E402
from covidseg_core.constants import SYNTHETIC_MODES  # noqa: E402
from covidseg_core.events import EpochReport, Message, drive  # noqa: E402
from covidseg_core.pipeline import train_job, train_on_targets  # noqa: E402
from covidseg_core.results.metrics import roc_auc  # noqa: E402
from covidseg_core.train_config import TrainConfig  # noqa: E402
from covidseg_core.weak.scoring import slice_scores  # noqa: E402
from _zenodo import DATA, TEST_VOLUMES, parse_args, scores, split  # noqa: E402

log = logging.getLogger("bench")

KEYS = ("dice_mean", "dice_pooled", "sensitivity_mean", "specificity_mean", "sensitivity_pooled",
        "specificity_pooled")
ROWS = {
    "ceiling": "ground-truth masks of the training volumes (full supervision, the ceiling)",
    "ceiling_auto": "ground-truth masks + synthetic lesions on the clean slices (the default's recipe, full "
                    "supervision)",
    "off": "slice labels: CAM pseudo masks (--synthetic off, the paper's method)",
    "only": "label-free: synthetic lesions on clean slices (--synthetic only)",
    "auto": "slice labels + synthetic lesions (--synthetic auto)",
    "pixel10": "the default mode + ground-truth pixel masks of 10 % of the training slices (corrections)",
}


def _log(event) -> None:
    if isinstance(event, EpochReport):
        log.info("%s epoch %d/%d %s (%.0f s)", event.stage, event.epoch, event.epochs,
                 {k: round(v, 4) for k, v in {**event.losses, **event.metrics}.items()}, event.seconds)
    elif isinstance(event, Message):
        log.info("%s", event.text)


class Bench:
    def __init__(self, args):
        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.results_path = self.out / "results.json"
        self.results = json.loads(self.results_path.read_text()) if self.results_path.is_file() else {}
        self.all = load_slice_set(args.data)
        self.vols = np.array(self.all.groups)
        self.train, self.test = split(self.all)

    def save(self, key: str, value: dict) -> None:
        self.results[key] = value
        self.results_path.write_text(json.dumps(self.results, indent=2, default=float))

    def cfg(self, seed: int, **kw) -> TrainConfig:
        size = {"size": self.args.size} if self.args.size else {}
        size |= {"crop": self.args.crop} if self.args.crop else {}
        init = {"init": str(self.args.init)} if self.args.init and "init" not in kw else {}
        lr = {"lr": self.args.lr} if self.args.lr else {}
        return TrainConfig(seed=seed, budget_minutes=self.args.budget, **size, **init, **lr, **kw)

    def run(self, row: str, seed: int) -> dict:
        key = f"{row}-s{seed}"
        if key in self.results:
            return self.results[key]
        t0 = time.monotonic()
        folder = self.out / key
        if row.startswith("ceiling"):
            mix = "auto" if row == "ceiling_auto" else "off"
            metrics = drive(train_on_targets(self.train, self.train.gt_masks.astype(np.uint8), folder,
                                             self.cfg(seed, synthetic="off"), note="ground truth", synthetic=mix),
                            _log)
        else:
            kw = {"synthetic": TrainConfig.synthetic if row == "pixel10" else row}   # pixel10: the default mode
            if row == "pixel10":
                kw["pixel_labels"] = str(self._pixel_masks(seed))
            metrics = drive(train_job(self.args.data, folder, self.cfg(seed, **kw), slices=self.train), _log)
        infected = np.array([lab == "infected" for lab in self.test.labels])
        aucs = [None, None] if row.startswith("ceiling") else \
            [round(roc_auc(p, infected), 4) for p in slice_scores(folder, self.test.images)]
        value = {"row": row, "seed": seed, "unseen": scores(folder, self.test),
                 "classifier_auc_unseen": aucs[0], "slice_auc_unseen": aucs[1],
                 "seconds": round(time.monotonic() - t0, 1), "plan": metrics.get("plan"),
                 "synthetic": (metrics.get("segmenter") or {}).get("synthetic"),
                 "train_report": metrics.get("ground_truth_report")}
        self.save(key, value)
        return value

    def _pixel_masks(self, seed: int) -> Path:
        """Ground-truth masks of 10 % of the training slices, as PNGs named as their images."""
        from PIL import Image

        folder = self.out / f"pixel10-masks-s{seed}"
        if not folder.is_dir():
            folder.mkdir(parents=True)
            rng = np.random.default_rng(seed)
            for i in rng.choice(len(self.train), size=len(self.train) // 10, replace=False):
                Image.fromarray(self.train.gt_masks[i].astype(np.uint8) * 255).save(folder / self.train.ids[i])
        return folder

    def app_run(self, volume: str, seed: int) -> dict:
        """One study trained on its own slice labels at the defaults (as the app trains it), scored on its own
        slices."""
        key = f"app-{volume}-s{seed}"
        if key in self.results:
            return self.results[key]
        study = self.all.subset(np.flatnonzero(self.vols == volume))
        t0 = time.monotonic()
        mode = {"synthetic": self.args.app_synthetic} if self.args.app_synthetic else {}
        metrics = drive(train_job(self.args.data, self.out / key, self.cfg(seed, **mode), slices=study),
                        _log)
        value = {"row": "app", "volume": volume, "seed": seed, "own_slices": scores(self.out / key, study),
                 "seconds": round(time.monotonic() - t0, 1), "plan": metrics.get("plan")}
        self.save(key, value)
        return value


def _mean_spread(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{np.mean(values):.3f}" + (f" ± {np.std(values):.3f}" if len(values) > 1 else "")


def report(bench: Bench, rows: list[str], seeds: list[int], app_volumes: list[str]) -> str:
    lines = ["| segmenter trained on | runs | " + " | ".join(KEYS)
             + " | clean slices marked | classifier AUC | slice AUC |",
             "|---|---|" + "---|" * (len(KEYS) + 3)]
    for row in rows:
        runs = [bench.results[k] for k in (f"{row}-s{s}" for s in seeds) if k in bench.results]
        if not runs:
            continue
        cells = [_mean_spread([r["unseen"][k] for r in runs]) for k in KEYS]
        cells.append(_mean_spread([r["unseen"]["clean_slices_marked"] for r in runs]))
        cells.append(_mean_spread([r.get("classifier_auc_unseen") for r in runs]))
        cells.append(_mean_spread([r.get("slice_auc_unseen") for r in runs]))
        lines.append(f"| {ROWS[row]} | {len(runs)} | " + " | ".join(cells) + " |")
    per_vol = ["", "Dice mean per unseen volume (mean over seeds):", "",
               "| row | " + " | ".join(TEST_VOLUMES) + " |", "|---|" + "---|" * len(TEST_VOLUMES)]
    for row in rows:
        runs = [bench.results[k] for k in (f"{row}-s{s}" for s in seeds) if k in bench.results]
        if runs:
            per_vol.append(f"| {row} | " + " | ".join(
                _mean_spread([r["unseen"]["per_volume_dice_mean"].get(v) for r in runs]) for v in TEST_VOLUMES) + " |")
    app = ["", "The app's use: each study trained on its own slice labels (defaults), scored on its own slices:", "",
           "| study | runs | dice_mean | dice_pooled | specificity_mean | clean slices marked | seconds |",
           "|---|---|---|---|---|---|---|"]
    for v in app_volumes:
        runs = [bench.results[k] for k in (f"app-{v}-s{s}" for s in seeds) if k in bench.results]
        if runs:
            app.append(f"| {v} | {len(runs)} | " + " | ".join(
                _mean_spread([r["own_slices"][k] for r in runs]) for k in
                ("dice_mean", "dice_pooled", "specificity_mean", "clean_slices_marked")) +
                f" | {np.mean([r['seconds'] for r in runs]):.0f} |")
    return "\n".join(lines + per_vol + (app if len(app) > 5 else []))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "bench_synth")
    p.add_argument("--rows", default="ceiling,off,only,auto", help=f"comma list of {', '.join(ROWS)}, app")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--budget", type=float, default=None, help="minutes per run (default: the CPU default)")
    p.add_argument("--size", type=int, default=None, help="working size (default: the planner's choice)")
    p.add_argument("--crop", type=int, default=None, help="train the segmenter on random crops of this side "
                   "(foreground-biased; prediction stays whole-slice)")
    p.add_argument("--init", default=None, help="segmenter start for every row (the ceiling too): prior (the shipped "
                   "one, when the run's network and size fit), none, or a prior file; for unseen-volume rows use a "
                   "prior trained on the training volumes only")
    p.add_argument("--lr", type=float, default=None, help="segmenter peak learning rate (default: TrainConfig's)")
    p.add_argument("--app-volumes", default="c01,c06,r02")
    p.add_argument("--app-synthetic", choices=SYNTHETIC_MODES, default=None,
                   help="--synthetic of the app rows (default: TrainConfig's); use another --out per mode")
    p.add_argument("--report", type=Path, default=None, help="write the markdown tables here too")
    args = parse_args(p, argv)
    bench = Bench(args)
    rows = [r for r in args.rows.split(",") if r and r != "app"]
    app_volumes = args.app_volumes.split(",") if "app" in args.rows.split(",") else []
    for seed in args.seeds:
        for row in rows:
            log.info("row %s seed %d: %s", row, seed, bench.run(row, seed)["unseen"]["dice_mean"])
        for v in app_volumes:
            log.info("app %s seed %d: %s", v, seed, bench.app_run(v, seed)["own_slices"]["dice_mean"])
    table = report(bench, rows, args.seeds, app_volumes)
    print(table)
    if args.report:
        args.report.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
