"""The classifier's loss: class-balanced BCE on image-level labels (the segmenter's is seg/losses.py)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def balanced_bce(logits: torch.Tensor, targets: torch.Tensor, pos_fraction: float | None = None) -> torch.Tensor:
    """Class-balanced BCE for image-level labels: positives and negatives weigh half each.

    `pos_fraction` is the share of positives in the training set; without it the batch's own share is used
    (and a batch holding one class only gets the plain mean BCE of that class).
    """
    logits = logits.reshape(-1).float()
    targets = targets.reshape(-1).to(logits.dtype)
    if logits.shape != targets.shape:
        raise ValueError(f"{logits.numel()} logits for {targets.numel()} targets")
    if logits.numel() == 0:
        return logits.sum() * 0.0
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if pos_fraction is not None:
        if not 0.0 < pos_fraction < 1.0:
            raise ValueError(f"pos_fraction must lie strictly between 0 and 1, not {pos_fraction}")
        weights = torch.where(targets > 0.5, 0.5 / pos_fraction, 0.5 / (1.0 - pos_fraction))
        return (weights * bce).mean()
    pos = targets > 0.5
    n_pos = int(pos.sum())
    if n_pos == 0 or n_pos == targets.numel():
        return bce.mean()
    return 0.5 * bce[pos].mean() + 0.5 * bce[~pos].mean()
