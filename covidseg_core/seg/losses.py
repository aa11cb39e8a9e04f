"""The segmenter's loss: the log-Tversky + focal mix of METHOD.md Stage 2 (the classifier's is weak/losses.py).

Target convention for the whole project: an integer tensor with 0 = background, 1 = infection and
255 (`IGNORE`) = no label; ignored pixels contribute nothing to any term.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..constants import IGNORE


def _flatten_pair(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Accept (N, 1, H, W) or (N, H, W) for either; return both as (N, H*W)."""
    if logits.ndim == 4 and logits.shape[1] == 1:
        logits = logits[:, 0]
    if target.ndim == 4 and target.shape[1] == 1:
        target = target[:, 0]
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape")
    return logits.reshape(logits.shape[0], -1), target.reshape(target.shape[0], -1)


def tversky_focal_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None, *,
                       ignore_index: int = IGNORE, alpha: float = 0.7, beta: float = 0.3,
                       gamma_t: float = 0.3, w_t: float = 0.8, w_f: float = 0.2, focal_gamma: float = 2.0,
                       smooth: float = 1.0) -> torch.Tensor:
    """L = w_t * (-ln TI)^gamma_t + w_f * Focal, a scalar.

    TI = (TP + s) / (TP + alpha*FN + beta*FP + s) on soft predictions, pooled over all valid pixels of the
    batch (alpha weighs misses, beta false alarms). Pooling over the batch and the smoothing s keep it defined
    when the batch has no foreground: TI then only falls as predicted foreground grows. Focal is the mean of
    (1 - p_t)^focal_gamma * BCE over valid pixels. Valid pixels are those where `target != ignore_index`,
    and also `valid` is True when a mask is given. With no valid pixel at all the loss is 0 (with a graph).

    gamma_t=0.3, w_t=0.8, w_f=0.2 follow the exponential-logarithmic loss (Wong et al. 2018), which the
    paper's mix is modelled on; its own values were lost with its formulas.
    """
    if valid is not None:
        _, valid = _flatten_pair(logits, valid)
    logits, target = _flatten_pair(logits, target)
    logits = logits.float()  # sums over many pixels: keep them out of fp16 under autocast
    keep = target != ignore_index
    if valid is not None:
        keep = keep & valid.bool()
    fg = (target == 1) & keep
    if bool(((target != 0) & ~fg & keep).any()):
        raise ValueError(f"target may hold only 0, 1 and {ignore_index}; got {torch.unique(target).tolist()}")
    keep_f, fg_f = keep.float(), fg.float()
    n_valid = keep_f.sum()
    if n_valid == 0:
        return logits.sum() * 0.0

    prob = torch.sigmoid(logits) * keep_f
    tp = (prob * fg_f).sum()
    fn = ((1.0 - prob) * fg_f).sum()
    fp = (prob * (1.0 - fg_f)).sum()  # prob is already 0 on ignored pixels
    ti = (tp + smooth) / (tp + alpha * fn + beta * fp + smooth)
    # clamp: the gradient of x**gamma at x=0 is infinite for gamma < 1
    tversky_term = (-torch.log(ti)).clamp_min(1e-6) ** gamma_t

    bce = F.binary_cross_entropy_with_logits(logits, fg_f, reduction="none")
    p_t = torch.exp(-bce)
    focal = (((1.0 - p_t) ** focal_gamma) * bce * keep_f).sum() / n_valid
    return w_t * tversky_term + w_f * focal
