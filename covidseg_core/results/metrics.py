"""Metrics: Dice, sensitivity, specificity on binary masks (per image and pooled), and the ROC AUC of scores.

Edge cases, defined once here:
- Dice = 2TP / (2TP + FP + FN). When ground truth and prediction are both empty it is 1.0 (the two masks
  agree exactly); when only one of them is empty it is 0.0.
- Sensitivity = TP / (TP + FN) is undefined (NaN) when the ground truth has no positive pixel.
- Specificity = TN / (TN + FP) is undefined (NaN) when the ground truth has no negative pixel.
- `summarize` averages per-image values over the images whose ground truth contains infection only (so the
  means never meet an undefined sensitivity; an image that is infection everywhere has no specificity and is
  left out of that mean); with no such image the means are NaN. The pooled values sum
  TP/FP/TN/FN over every pixel of every image, clean images included.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
from scipy.stats import rankdata


class Confusion(NamedTuple):
    tp: int
    fp: int
    tn: int
    fn: int


def as_mask(a) -> np.ndarray:
    """A boolean mask from a bool or integer array (non-zero = positive). Floats are refused: a probability
    map must be thresholded by the caller, not silently at 0."""
    a = np.asarray(a)
    if a.dtype == bool:
        return a
    if np.issubdtype(a.dtype, np.integer):
        return a != 0
    raise TypeError(f"a mask must be bool or integer, not {a.dtype}; threshold probabilities first")


def confusion(pred, gt) -> Confusion:
    """Pixel counts (TP, FP, TN, FN) of a predicted mask against the ground truth of the same shape."""
    pred, gt = as_mask(pred), as_mask(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    tp = int(np.count_nonzero(pred & gt))
    fp = int(np.count_nonzero(pred & ~gt))
    fn = int(np.count_nonzero(~pred & gt))
    return Confusion(tp=tp, fp=fp, tn=int(gt.size) - tp - fp - fn, fn=fn)


def dice(c: Confusion) -> float:
    denom = 2 * c.tp + c.fp + c.fn
    return 1.0 if denom == 0 else 2 * c.tp / denom


def sensitivity(c: Confusion) -> float:
    denom = c.tp + c.fn
    return math.nan if denom == 0 else c.tp / denom


def specificity(c: Confusion) -> float:
    denom = c.tn + c.fp
    return math.nan if denom == 0 else c.tn / denom


def summarize(preds: Iterable, gts: Iterable) -> dict:
    """Metrics over pairs of masks (images may differ in size). Keys: dice/sensitivity/specificity _mean
    (over images whose ground truth has infection) and _pooled (over all pixels), n_images, n_infected, and
    clean_with_prediction (images without infection where something was predicted)."""
    total = Confusion(0, 0, 0, 0)
    per_image: list[Confusion] = []
    n_images = clean_with_prediction = 0
    for pred, gt in zip(preds, gts, strict=True):
        c = confusion(pred, gt)
        n_images += 1
        total = Confusion(*(a + b for a, b in zip(total, c)))
        if c.tp + c.fn > 0:
            per_image.append(c)
        elif c.fp > 0:
            clean_with_prediction += 1

    def mean(metric) -> float:
        values = [v for v in map(metric, per_image) if not math.isnan(v)]
        return float(np.mean(values)) if values else math.nan

    return {
        "dice_mean": mean(dice), "sensitivity_mean": mean(sensitivity), "specificity_mean": mean(specificity),
        "dice_pooled": dice(total), "sensitivity_pooled": sensitivity(total),
        "specificity_pooled": specificity(total),
        "n_images": n_images, "n_infected": len(per_image), "clean_with_prediction": clean_with_prediction,
    }


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U from average ranks, so ties count half); NaN when one class is
    missing."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores, method="average")
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
