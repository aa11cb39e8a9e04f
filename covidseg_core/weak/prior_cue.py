"""Pseudo masks from the label-free prior: the shipped segmenter trained on synthetic lesions only
(seg/prior.py), run on the slices the radiologist labelled `infected`; and the prior's evidence that a slice
shows infection at all (weak/scoring.py averages it with the classifier's probability).

Why: on zenodo-dev the CAM pseudo masks reach Dice mean 0.275 on the infected slices of c01-c05, these masks 0.505
(benchmarks/prior_pseudo_masks.py; docs/results.md, "Pseudo masks from the label-free prior"); keeping only the
prior's pixels that the CAM also attends to lowered it (0.34-0.40, exploratory), so the CAM is not combined. The
slice label still decides where foreground may be: a `clean` slice stays all background.

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
EVIDENCE_SHARE = 0.05       # of the lung field: the prior's evidence is the mean of its highest probabilities there


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


def prior_slice_evidence(images01: np.ndarray, lungs: np.ndarray, device: torch.device) -> np.ndarray | None:
    """(n,) the prior's evidence that each slice (n, H, W) in [0, 1] shows infection: the mean of its highest
    probabilities over EVIDENCE_SHARE of the slice's lung field (same shape; 0 where there is no lung); None when
    the prior cannot be used.

    Why: on zenodo-dev's unseen volumes the stage-1 classifier trained on c01-c05 ranks slices with AUC 0.68-0.82
    (6 epochs, three seeds), its mean with this label-free number with 0.83-0.91 (docs/results.md, "Stage 1
    classifier"). The share was chosen by that mean's AUC on the training volumes (0.01 % to 20 %: 5 % best, a
    plateau from 5 to 10 %). Computed from float probabilities: prior_maps' uint8 saturates at 255 on most
    infected slices."""
    from ..infer.predict import predict_probabilities
    from ..infer.prior_model import load_prior_model

    lm, _ = load_prior_model(device)
    if lm is None:
        return None
    images01 = np.asarray(images01, dtype=np.float32)
    lungs = np.asarray(lungs, dtype=bool)
    evidence = np.zeros(len(images01), np.float32)
    for start in range(0, len(images01), CHUNK):
        prob = drive(predict_probabilities(lm, images01[start:start + CHUNK], stage="slice scores"))
        for k, (p, lung) in enumerate(zip(prob, lungs[start:start + CHUNK])):
            evidence[start + k] = top_share_mean(p, lung)
    return evidence


def top_share_mean(prob: np.ndarray, lung: np.ndarray, share: float = EVIDENCE_SHARE) -> float:
    """The mean of the highest `share` (at least one pixel) of the probabilities inside `lung`; 0 without lung."""
    inside = np.asarray(prob, dtype=np.float32)[np.asarray(lung, dtype=bool)]
    if inside.size == 0:
        return 0.0
    top = max(1, int(round(share * inside.size)))
    return float(np.partition(inside, inside.size - top)[inside.size - top:].mean())


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
