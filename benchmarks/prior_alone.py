"""The shipped label-free prior as a segmenter on its own (no fine-tuning on any study), at several decision
thresholds, on zenodo-dev's training volumes (c01-c05, whose clean slices it was trained on) and unseen volumes
(c06, c07, r01-r03).

It answers two questions the stage-2 tables raise: how much the budgeted fine-tuning of `covidseg train` adds to
its starting point, and whether the decision threshold (0.5, predict.THRESHOLD) is a lever on unseen patients.
Masks go through the product's own path (the learned lung field, then postprocess.finish_masks), as `covidseg
predict` makes them; thresholds may only be chosen on the training volumes' rows. No training: a few minutes.

  .venv/bin/python benchmarks/prior_alone.py [--thresholds 0.2,0.3,0.4,0.5,0.6] [--out FILE.json] [--prior FILE]
      [--flip-average] [--median] [--sizes 128,144,160,128+160]

`--median`: the slices median-filtered first, over 1.5 of the prior's working pixels (3 native pixels here); tried
in stop 28 for stage 1's pseudo masks and not kept (docs/results.md, "The prior's pseudo masks made from
median-filtered slices").

`--sizes`: the prior run at other working sizes than the one it was trained at (it is fully convolutional, so a
larger size shows it the lungs magnified); `A+B` averages the probabilities of sizes A and B. Each size is a row.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

from covidseg_core.data import load_slice_set  # noqa: E402
from covidseg_core.events import drive  # noqa: E402
from covidseg_core.imaging.lung_model import compute_lung_fields  # noqa: E402
from covidseg_core.infer.postprocess import finish_masks  # noqa: E402
from covidseg_core.infer.predict import predict_probabilities  # noqa: E402
from covidseg_core.infer.prior_model import load_prior_model  # noqa: E402
from covidseg_core.results.metrics import summarize  # noqa: E402
from _zenodo import DATA, TEST_VOLUMES, TRAIN_VOLUMES, emit, parse_args  # noqa: E402

log = logging.getLogger("bench")
KEYS = ("dice_mean", "dice_pooled", "sensitivity_mean", "specificity_mean")


def score(masks: np.ndarray, gts: np.ndarray, groups: np.ndarray) -> dict:
    out = {k: round(v, 4) for k, v in summarize(list(masks), list(gts)).items() if k in KEYS}
    clean = ~gts.reshape(len(gts), -1).any(1)
    out["clean_slices_marked"] = round(float(masks.reshape(len(masks), -1).any(1)[clean].mean()), 3)
    out["per_volume_dice_mean"] = {v: round(summarize(list(masks[groups == v]), list(gts[groups == v]))["dice_mean"],
                                            4) for v in sorted(set(groups))}
    return out


def median_filtered(images: np.ndarray, size: int) -> np.ndarray:
    """Each slice median-filtered over 1.5 pixels of the working size `size`, in native pixels."""
    from scipy import ndimage as ndi

    from covidseg_core.imaging.resize import working_shape

    n, h, w = images.shape
    work = working_shape(h, w, size)
    width = round(1.5 * max(h / work[0], w / work[1]))
    return np.stack([ndi.median_filter(np.asarray(im, np.float32), size=width, mode="nearest") for im in images])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--thresholds", default="0.2,0.3,0.4,0.5,0.6")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here too")
    p.add_argument("--prior", type=Path, default=None, help="another prior file (default: the shipped one)")
    p.add_argument("--flip-average", action="store_true",
                   help="average each slice's probabilities with its mirror image's (predict_probabilities)")
    p.add_argument("--median", action="store_true",
                   help="median-filter the slices first (1.5 of the prior's working pixels wide)")
    p.add_argument("--sizes", default=None,
                   help="comma list of working sizes to run the prior at (A+B: the mean of both); default: its own")
    args = parse_args(p, argv)
    slices = load_slice_set(args.data)
    lm, note = load_prior_model(torch.device("cpu"), args.prior)
    if lm is None:
        log.error("%s", note)
        return 2
    log.info("%s at size %d on %d slices", note, lm.size, len(slices))
    images = median_filtered(slices.images, lm.size) if args.median else slices.images
    probs = {}

    def probabilities(size: int) -> np.ndarray:
        if size not in probs:
            probs[size] = drive(predict_probabilities(dataclasses.replace(lm, size=size), images,
                                                      flip_average=args.flip_average))
        return probs[size]

    lungs, warning = compute_lung_fields(slices.images, "model")
    if warning:
        log.warning("%s", warning)
    groups = np.array(slices.groups)
    results = {}
    for sizes in (args.sizes or str(lm.size)).split(","):
        prob = np.mean([probabilities(int(s)) for s in sizes.split("+")], axis=0)
        tag = "" if args.sizes is None else f" (size {sizes})"
        for thr in (float(t) for t in args.thresholds.split(",")):
            masks = finish_masks(prob >= thr, lungs)
            for where, volumes in (("training c01-c05", TRAIN_VOLUMES), ("unseen c06, c07, r01-r03", TEST_VOLUMES)):
                k = np.isin(groups, volumes)
                results[f"{where} @ {thr}{tag}"] = score(masks[k], slices.gt_masks[k] > 0, groups[k])
    lines = ["| volumes @ threshold | " + " | ".join(KEYS) + " | clean slices marked | Dice mean per volume |",
             "|---|" + "---|" * (len(KEYS) + 2)]
    for name, r in results.items():
        per = ", ".join(f"{v} {d:.3f}" for v, d in r["per_volume_dice_mean"].items())
        lines.append(f"| {name} | " + " | ".join(f"{r[k]:.3f}" for k in KEYS)
                     + f" | {r['clean_slices_marked']:.0%} | {per} |")
    return emit(lines, results, args.out)


if __name__ == "__main__":
    sys.exit(main())
