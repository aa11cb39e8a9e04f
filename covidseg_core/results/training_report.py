"""What a training run reports against the data set's ground truth (`masks/`): reporting only, never training.

The segmenter's masks on every slice with ground truth and on its validation slices, and the pseudo masks it was
trained on next to it (does the segmenter beat its own targets?). RUN/metrics.json keeps it as
"ground_truth_report".
"""
from __future__ import annotations

import numpy as np

from ..infer.model import load_run_model
from ..infer.predict import predict_masks
from ..runs import RunFolder
from .metrics import summarize


def ground_truth_report(model_run: RunFolder, slices, targets, has_target, source, val_idx, device, cancel):
    """Reporting only: the segmenter's and the pseudo masks' agreement with the data set's ground truth."""
    have = np.flatnonzero(slices.has_gt) if slices.has_gt is not None else np.zeros(0, int)
    if len(have) == 0:
        return None
    lm = load_run_model(model_run.path, device)
    preds = yield from predict_masks(lm, slices.images[have], cancel=cancel)
    gts = slices.gt_masks[have]
    report = {"note": "ground truth (masks/) is used for this report only, never for training",
              "segmenter_all": summarize(list(preds), list(gts))}
    val_set = set(int(i) for i in val_idx)
    in_val = [k for k, i in enumerate(have) if int(i) in val_set]
    if in_val:
        report["segmenter_validation"] = summarize([preds[k] for k in in_val], [gts[k] for k in in_val])
    pseudo = [k for k, i in enumerate(have) if source[i] == "pseudo"]
    if pseudo:
        report["pseudo_masks"] = summarize([targets[have[k]] == 1 for k in pseudo], [gts[k] for k in pseudo])
        report["segmenter_on_pseudo_slices"] = summarize([preds[k] for k in pseudo], [gts[k] for k in pseudo])
    return report
