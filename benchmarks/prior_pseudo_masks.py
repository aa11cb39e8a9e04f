"""Pseudo masks from the label-free prior against the CAM's and the intensity prior, on zenodo-dev's infected
half slices, for the training volumes (c01-c05) and the unseen ones (c06, c07, r01-r03).

Every row uses the product's own functions at the slice's native size: the learned lung field of the labelled
slices (weak/job.labelled_lung_fields), the prior's probabilities (weak/prior_cue.prior_maps) and the mask rule
(prior_pseudo_mask); "foreground" is scored against the expert infection masks (ignore counts as not infection,
as in stage 1's own report). The prior never saw an infection mask and was trained on the clean slices of
c01-c05 only (its model card), so on c06-r03 it is a model of patients it never met. The CAM row reads the
pseudo masks a `covidseg train` run wrote (`--cam-run RUN`, trained on c01-c05's labels with --synthetic off), so
it covers the training volumes only. No training here: a few minutes on a CPU.

  .venv/bin/python benchmarks/prior_pseudo_masks.py [--cam-run RUN] [--out docs/measurements/prior_pseudo.json]
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from covidseg_core.data import load_slice_set  # noqa: E402
from covidseg_core.imaging.lungs import density_prior  # noqa: E402
from covidseg_core.results.metrics import summarize  # noqa: E402
from covidseg_core.runs import slice_png_name  # noqa: E402
from covidseg_core.weak.config import Stage1Config  # noqa: E402
from covidseg_core.weak.job import labelled_lung_fields  # noqa: E402
from covidseg_core.weak.prior_cue import prior_maps, prior_pseudo_mask  # noqa: E402
from covidseg_core.weak.pseudo_masks import from_png_values  # noqa: E402
from _zenodo import DATA, emit, parse_args, split  # noqa: E402

log = logging.getLogger("bench")
KEYS = ("dice_mean", "dice_pooled", "sensitivity_mean", "specificity_mean")


def score(masks: list, gts: list, groups: list) -> dict:
    out = {k: round(v, 4) for k, v in summarize(masks, gts).items() if k in KEYS}
    out["per_volume_dice_mean"] = {v: round(summarize([m for m, g in zip(masks, groups) if g == v],
                                                      [t for t, g in zip(gts, groups) if g == v])["dice_mean"], 4)
                                   for v in sorted(set(groups))}
    return out


def rows_for(slices, cam_run: Path | None) -> dict:
    inf = slices.indices("infected")
    lungs, _ = labelled_lung_fields(slices, Stage1Config.lung_method)
    maps, note = prior_maps(slices.images[inf], torch.device("cpu"))
    log.info("%s", note)
    gts = [slices.gt_masks[i] > 0 for i in inf]
    groups = [slices.groups[i] for i in inf]
    rows = {
        "intensity prior (lung > P70 of lung)": score([density_prior(slices.images[i], lungs[i]) for i in inf],
                                                      gts, groups),
        "label-free prior (cue prior, the default)": score(
            [prior_pseudo_mask(maps[k], lungs[i], Stage1Config.min_component_frac) == 1 for k, i in enumerate(inf)],
            gts, groups)}
    if cam_run is not None:
        files = [cam_run / "pseudo" / slice_png_name(slices.ids[i]) for i in inf]
        if all(f.is_file() for f in files):
            rows["CAM + density (cue cam, the paper's method)"] = score(
                [from_png_values(np.array(Image.open(f))) == 1 for f in files], gts, groups)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--cam-run", type=Path, default=None, help="a train run on c01-c05 whose pseudo/ holds CAM masks")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here too")
    args = parse_args(p, argv)
    train, test = split(load_slice_set(args.data))
    results = {"training volumes c01-c05": rows_for(train, args.cam_run),
               "unseen volumes c06, c07, r01-r03": rows_for(test, None)}
    lines = ["| volumes | pseudo masks of infected slices | " + " | ".join(KEYS) + " | Dice mean per volume |",
             "|---|---|" + "---|" * (len(KEYS) + 1)]
    for where, rows in results.items():
        for name, r in rows.items():
            per = ", ".join(f"{v} {d:.3f}" for v, d in r["per_volume_dice_mean"].items())
            lines.append(f"| {where} | {name} | " + " | ".join(f"{r[k]:.3f}" for k in KEYS) + f" | {per} |")
    return emit(lines, results, args.out)


if __name__ == "__main__":
    sys.exit(main())
