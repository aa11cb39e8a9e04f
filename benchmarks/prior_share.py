"""How much of the label-free prior a trained segmenter should keep (TrainConfig.prior_share): re-scores finished
zenodo-dev runs with their fine-tuned weights blended with the prior they started from (seg/prior.py
blend_with_start), for several shares, without training again. Runs that have the prior blended in already are
un-blended first.

A run of weak_vs_synthetic.py's unseen-volume rows (trained on c01-c05) is scored on the training volumes'
ground truth (where a share may be chosen: no mask of theirs trained anything) and on the unseen ones; an app
row's run (one study trained on its own labels) with --volumes V on that study's own slices.

  .venv/bin/python benchmarks/prior_share.py out/bench/auto-s0 out/bench/only-s0 --shares 0,0.25,0.5,0.75,1
  .venv/bin/python benchmarks/prior_share.py out/app/app-c07-s0 --volumes c07
  .venv/bin/python benchmarks/prior_share.py out/bench/auto-s0 --shares 0.25 --scales "1;1,1.25"   # two scales

--scales: each semicolon-separated set of magnifications is scored (predict_masks' `scales`: the mean of the
probabilities of each slice worked at these sizes; 1 is the run's own). --thresholds: the decision thresholds
to score at (predict's own by default), chosen on the training volumes:
  .venv/bin/python benchmarks/prior_share.py out/bench/auto-s0 --shares 0.25 --thresholds 0.3,0.4,0.5
--flip-average: each set is scored both with and without every slice's probabilities averaged with its left-right
mirror's (predict_masks' `flip_average`, on by default since stop 35: twice the network's work).
"""
from __future__ import annotations

import argparse
import itertools
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from covidseg_core.data import load_slice_set  # noqa: E402
from covidseg_core.infer.model import load_run_model  # noqa: E402
from covidseg_core.infer.predict import MIRROR_AVERAGE, THRESHOLD  # noqa: E402
from covidseg_core.runs import BEST, RunFolder  # noqa: E402
from covidseg_core.seg.prior import blend_with_start, default_prior_path, read_prior  # noqa: E402
from _zenodo import DATA, TEST_VOLUMES, TRAIN_VOLUMES, emit, parse_args, scores  # noqa: E402

log = logging.getLogger("bench")
KEYS = ("dice_mean", "sensitivity_mean", "specificity_mean", "clean_slices_marked")


def tuned_weights(run: Path, start: dict) -> dict:
    """The run's best fine-tuned weights, the prior's share taken out again if its checkpoint has one."""
    best = RunFolder(run).load_checkpoint(BEST)
    share = float(best.get("prior_share", 0.0))
    if share >= 1:
        raise SystemExit(f"{run} keeps all of the prior: its fine-tuned weights cannot be recovered")
    if not share:
        return best["model"]
    return {k: (v - share * start[k]) / (1 - share) if v.is_floating_point() else v for k, v in best["model"].items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", type=Path, nargs="+")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--shares", default="0,0.25,0.5,0.75,1")
    p.add_argument("--volumes", default=None, help="score on these volumes' slices only (an app row's own study)")
    p.add_argument("--prior", type=Path, default=None, help="the prior the runs started from (default: shipped)")
    p.add_argument("--scales", default="1", help="semicolon list of comma lists of magnifications to predict at")
    p.add_argument("--thresholds", default=None, help="comma list of decision thresholds (default: predict's)")
    p.add_argument("--flip-average", action="store_true", help="score with and without mirror averaging")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here too")
    args = parse_args(p, argv)
    scale_sets = [tuple(float(s) for s in group.split(",")) for group in args.scales.split(";")]
    cuts = [float(t) for t in args.thresholds.split(",")] if args.thresholds else [THRESHOLD]
    flips = (False, True) if args.flip_average else (MIRROR_AVERAGE,)
    slices = load_slice_set(args.data)
    groups = np.array(slices.groups)
    sets = ({args.volumes: args.volumes.split(",")} if args.volumes else
            {"training c01-c05": TRAIN_VOLUMES, "unseen c06, c07, r01-r03": TEST_VOLUMES})
    start = read_prior(args.prior or default_prior_path())[0]
    results, lines = {}, ["| run | prior share | scales | threshold | volumes | " + " | ".join(KEYS)
                          + " | Dice mean per volume |", "|---|---|---|---|---|" + "---|" * (len(KEYS) + 1)]
    for run in args.runs:
        lm = load_run_model(run, "cpu", engine="torch")
        tuned = tuned_weights(run, start)
        for share in (float(s) for s in args.shares.split(",")):
            lm.model.load_state_dict(blend_with_start(tuned, start, share))
            for scales, cut, flip in itertools.product(scale_sets, cuts, flips):
                label = "+".join(f"{s:g}" for s in scales)
                tag = (("" if scales == (1.0,) else f" x {label}") + ("" if cut == THRESHOLD else f" > {cut:g}")
                       + (" mirrored" if flip else ""))
                label += " mirrored" if flip else ""
                for name, volumes in sets.items():
                    r = scores(run, slices.subset(np.flatnonzero(np.isin(groups, volumes))), lm, scales, cut, flip)
                    results[f"{run.name} @ {share}{tag} on {name}"] = r
                    per = ", ".join(f"{v} {d:.3f}" for v, d in r["per_volume_dice_mean"].items())
                    lines.append(f"| {run.name} | {share} | {label} | {cut:g} | {name} | "
                                 + " | ".join(f"{r[k]:.3f}" for k in KEYS) + f" | {per} |")
                    log.info("%s", lines[-1])
    return emit(lines, results, args.out)


if __name__ == "__main__":
    sys.exit(main())
