"""Pseudo masks from the label-free prior: the shipped segmenter trained on synthetic lesions only
(seg/prior.py), run on the slices the radiologist labelled `infected`.

Why: on zenodo-dev the CAM pseudo masks reach Dice mean 0.275 on the infected slices of c01-c05, these masks 0.505
(benchmarks/prior_pseudo_masks.py; docs/results.md, "Pseudo masks from the label-free prior"); keeping only the
prior's pixels that the CAM also attends to lowered it (0.34-0.40, exploratory), so the CAM is not combined. The slice label
still decides where foreground may be: a `clean` slice stays all background.

For an `infected` slice:
  foreground = inside the lung field AND prior probability >= FG_PROBABILITY, in pieces of a minimum size
  ignore     = inside the lung field AND prior probability >= IGNORE_PROBABILITY (the lesion's uncertain rim),
               and foreground pieces too small to keep
  background = everything else
"""
from __future__ import annotations

import numpy as np
import torch

from ..constants import BACKGROUND, FOREGROUND, IGNORE
from ..events import drive
from .pseudo_masks import remove_small_components

FG_PROBABILITY = 0.5        # infer/predict.THRESHOLD, the product's own (not imported: it pulls in all of I/O)
IGNORE_PROBABILITY = 0.25
CHUNK = 64                  # slices predicted at a time: the maps are kept as uint8, not as float32 volumes


def prior_maps(images01: np.ndarray, device: torch.device) -> tuple[np.ndarray | None, str]:
    """(the prior's probabilities as uint8 (n, H, W) = round(255 p), at the images' own size, or None when the
    prior cannot be used; a note saying which). The prior predicts at the working size it was trained at,
    whatever the run's size."""
    from ..infer.predict import predict_probabilities
    from ..infer.prior_model import load_prior_model     # weights read only when the prior cue is used

    lm, note = load_prior_model(device)
    if lm is None:
        return None, f"{note}: pseudo masks come from the CAM"
    images01 = np.asarray(images01, dtype=np.float32)
    maps = np.zeros(images01.shape, np.uint8)
    for start in range(0, len(images01), CHUNK):
        prob = drive(predict_probabilities(lm, images01[start:start + CHUNK], stage="pseudo"))
        maps[start:start + CHUNK] = np.round(prob * 255).astype(np.uint8)
    return maps, f"pseudo masks of the infected slices from {note}"


def prior_pseudo_mask(prob: np.ndarray, lung: np.ndarray, min_component_frac: float = 0.0) -> np.ndarray:
    """uint8 pseudo mask (0 background, 1 infection, 255 ignore) of one infected slice from the prior's
    probabilities (floats in [0, 1], or prior_maps' uint8) and its lung field (same shape)."""
    prob = np.asarray(prob)
    prob = prob / np.float32(255) if prob.dtype == np.uint8 else prob.astype(np.float32)
    lung = np.asarray(lung, dtype=bool)
    if prob.shape != lung.shape:
        raise ValueError(f"probabilities {prob.shape} and lung {lung.shape} must match")
    fg = lung & (prob >= FG_PROBABILITY)
    kept = remove_small_components(fg, round(min_component_frac * lung.size))
    out = np.full(lung.shape, BACKGROUND, dtype=np.uint8)
    out[lung & (prob >= IGNORE_PROBABILITY)] = IGNORE
    out[kept] = FOREGROUND
    return out
