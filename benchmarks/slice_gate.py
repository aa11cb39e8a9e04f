"""Masks gated by the slice probability: finished zenodo-dev runs re-scored with every predicted mask emptied on
the slices whose probability of infection (the run's classifier alone, or the product's slice probability: the
classifier's averaged with the label-free prior's evidence, weak/scoring.py) is under a cut. No training.

A run of weak_vs_synthetic.py's unseen-volume rows is scored on the training volumes and the unseen ones; an app
row's run (one study trained on its own labels, so its classifier saw every slice's label) with --volumes V.

  .venv/bin/python benchmarks/slice_gate.py out/bench/auto-s0 out/bench/auto-s1 --cuts 0,0.05,0.1,0.2,0.3,0.5
  .venv/bin/python benchmarks/slice_gate.py out/app/app-c07-s0 --volumes c07
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from covidseg_core.data import load_slice_set  # noqa: E402
from covidseg_core.events import drive  # noqa: E402
from covidseg_core.infer.model import load_run_model  # noqa: E402
from covidseg_core.infer.predict import predict_masks  # noqa: E402
from covidseg_core.results.metrics import summarize  # noqa: E402
from covidseg_core.weak.scoring import slice_scores  # noqa: E402
from _zenodo import DATA, TEST_VOLUMES, TRAIN_VOLUMES, emit, parse_args  # noqa: E402

log = logging.getLogger("bench")
KEYS = ("dice_mean", "dice_pooled", "sensitivity_mean", "clean_slices_marked", "infected_slices_emptied")


def gated_scores(preds: np.ndarray, gts: np.ndarray, probs: np.ndarray, cut: float) -> dict:
    """The metrics of `preds` (n, H, W) against `gts` once the slices with probability < cut are emptied."""
    keep = probs >= cut
    gated = preds * keep[:, None, None]
    infected = gts.reshape(len(gts), -1).any(1)
    out = summarize(list(gated), list(gts))
    out["clean_slices_marked"] = float(gated.reshape(len(gts), -1).any(1)[~infected].mean())
    out["infected_slices_emptied"] = float((~keep)[infected].mean())
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", type=Path, nargs="+")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--cuts", default="0,0.05,0.1,0.2,0.3,0.5", help="comma list of slice-probability cuts")
    p.add_argument("--volumes", default=None, help="score on these volumes' slices only (an app row's own study)")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here too")
    args = parse_args(p, argv)
    cuts = [float(c) for c in args.cuts.split(",")]
    slices = load_slice_set(args.data)
    groups = np.array(slices.groups)
    sets = ({args.volumes: args.volumes.split(",")} if args.volumes else
            {"training c01-c05": TRAIN_VOLUMES, "unseen c06, c07, r01-r03": TEST_VOLUMES})
    results, lines = {}, ["| run | volumes | gated by | cut | " + " | ".join(KEYS) + " |",
                          "|---|---|---|---|" + "---|" * len(KEYS)]
    for run in args.runs:
        lm = load_run_model(run, "cpu", engine="torch")
        for name, volumes in sets.items():
            part = slices.subset(np.flatnonzero(np.isin(groups, volumes)))
            preds = drive(predict_masks(lm, part.images))
            classifier, product = slice_scores(run, part.images)
            for by, probs in (("classifier", classifier), ("slice probability", product)):
                for cut in cuts:
                    r = gated_scores(preds, part.gt_masks, probs, cut)
                    results[f"{run.name} on {name} by {by} >= {cut:g}"] = r
                    lines.append(f"| {run.name} | {name} | {by} | {cut:g} | "
                                 + " | ".join(f"{r[k]:.3f}" for k in KEYS) + " |")
                    log.info("%s", lines[-1])
    return emit(lines, results, args.out)


if __name__ == "__main__":
    sys.exit(main())
