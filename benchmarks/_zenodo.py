"""What the zenodo-dev benchmarks share: the volume split and how a run is scored on held-out slices."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from covidseg_core.events import drive
from covidseg_core.infer.model import load_run_model
from covidseg_core.infer.predict import MIRROR_AVERAGE, THRESHOLD, predict_masks
from covidseg_core.results.metrics import summarize

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "zenodo-dev"
TRAIN_VOLUMES = ("c01", "c02", "c03", "c04", "c05")
TEST_VOLUMES = ("c06", "c07", "r01", "r02", "r03")


def parse_args(parser, argv=None):
    """The benchmark's options with logging set up; exits with status 2 and a one-line log when --data (zenodo-dev,
    default DATA) is missing."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not args.data.is_dir():
        logging.getLogger("bench").error("zenodo-dev not found at %s (it lives in ../shared/data)", args.data)
        raise SystemExit(2)
    return args


def split(slices):
    """(training-volume slices, unseen-volume slices) of a zenodo-dev SliceSet."""
    vols = np.array(slices.groups)
    return (slices.subset(np.flatnonzero(np.isin(vols, TRAIN_VOLUMES))),
            slices.subset(np.flatnonzero(np.isin(vols, TEST_VOLUMES))))


def scores(run: Path, test, lm=None, scales=(1.0,), threshold: float = THRESHOLD,
           flip_average: bool = MIRROR_AVERAGE) -> dict:
    """A run's predicted masks (as `covidseg predict` makes them) against the ground truth of `test`: the metrics
    of results.metrics.summarize, the share of clean slices with any mark, Dice mean per volume, seconds. `lm`:
    the run's model already loaded (and changed: benchmarks/prior_share.py); `scales`, `threshold` and
    `flip_average` as predict_masks'."""
    lm = lm or load_run_model(run, "auto")
    t0 = time.monotonic()
    preds = drive(predict_masks(lm, test.images, scales=scales, threshold=threshold,
                                flip_average=flip_average))
    out = summarize(list(preds), list(test.gt_masks))
    gts = test.gt_masks.reshape(len(test), -1).any(1)
    out["clean_slices_marked"] = float(preds.reshape(len(test), -1).any(1)[~gts].mean()) if (~gts).any() else None
    out["per_volume_dice_mean"] = {
        v: round(summarize(list(preds[k]), list(test.gt_masks[k]))["dice_mean"], 4)
        for v in sorted(set(test.groups)) for k in [np.array(test.groups) == v]}
    out["predict_seconds"] = round(time.monotonic() - t0, 1)
    return out


def emit(table_lines: list[str], results: dict, out: Path | None) -> int:
    """A results-only benchmark's ending: its markdown table on stdout, its results as JSON in `out` (if given)."""
    print("\n".join(table_lines))
    if out:
        out.write_text(json.dumps(results, indent=2) + "\n")
    return 0
