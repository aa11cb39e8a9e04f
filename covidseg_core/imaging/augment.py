"""Training-time augmentation shared by the classifier (weak/) and the segmenter (seg/).

Measured on zenodo-dev (train c01-c05, unseen c06, c07, r01-r03; docs/results.md): two of the unseen volumes
are stored upside down (anterior at the bottom), and a network trained without vertical flips learned where
lesions usually are (posterior) instead of what they look like: segmenter Dice 0.01 on those volumes, and a
classifier that ranked their slices backwards (AUC 0.05). Flips on both axes, a small rotation/scale/shift and
a window-like intensity jitter (gamma, gain, offset, noise) make both stages look at the lesion itself.

All randomness comes from the numpy Generator passed in (seeded per epoch by the callers), so a resumed run
augments exactly like an uninterrupted one. Batches are torch tensors (N, 1, H, W); a label map `y` (N, H, W)
moves with the image (nearest neighbour, so 0/1/255 stay what they are); `y=None` for image-level labels.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

MAX_ROTATION_DEG = 10.0
MAX_LOG_SCALE = 0.15
MAX_SHIFT = 0.05           # of the image size
GAMMA_LOG_RANGE = 0.3      # gamma in exp(+-0.3): the window's midpoint moves
GAIN_RANGE = 0.1
BIAS_RANGE = 0.05
NOISE_MAX = 0.03


def _per_sample(rng: np.random.Generator, low: float, high: float, n: int) -> torch.Tensor:
    return torch.from_numpy(rng.uniform(low, high, n).astype(np.float32)).view(-1, 1, 1, 1)


def flip(x: torch.Tensor, y: torch.Tensor | None, rng: np.random.Generator, vertical: bool = True):
    """Random left-right and (when `vertical`) up-down flips, each with probability 1/2 per sample."""
    for axis, on in ((-1, True), (-2, vertical)):
        if not on:
            continue
        chosen = torch.from_numpy(rng.random(len(x)) < 0.5)
        if chosen.any():
            x = torch.where(chosen.view(-1, 1, 1, 1), x.flip(axis), x)
            if y is not None:
                y = torch.where(chosen.view(-1, *([1] * (y.ndim - 1))), y.flip(axis), y)
    return x, y


def affine(x: torch.Tensor, y: torch.Tensor | None, rng: np.random.Generator):
    """A small random rotation, scale and shift per sample (outside the image: its border value; label 0)."""
    n, _, h, w = x.shape
    angle = np.deg2rad(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG, n))
    scale = np.exp(rng.uniform(-MAX_LOG_SCALE, MAX_LOG_SCALE, n))
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    tx, ty = rng.uniform(-2 * MAX_SHIFT, 2 * MAX_SHIFT, (2, n))       # affine_grid spans [-1, 1]
    theta = np.stack([np.stack([cos, -sin * h / w, tx], 1), np.stack([sin * w / h, cos, ty], 1)], 1)
    grid = F.affine_grid(torch.from_numpy(theta.astype(np.float32)), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if y is not None:
        y = F.grid_sample(y[:, None].float(), grid, mode="nearest", padding_mode="zeros",
                          align_corners=False)[:, 0].round().to(y.dtype)
    return x, y


def intensity(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Gamma, gain, offset and Gaussian noise of random strength: a different window, another scanner."""
    n = len(x)
    gamma = torch.from_numpy(np.exp(rng.uniform(-GAMMA_LOG_RANGE, GAMMA_LOG_RANGE, n)).astype(np.float32))
    x = x.clamp(0, 1) ** gamma.view(-1, 1, 1, 1)
    x = x * _per_sample(rng, 1 - GAIN_RANGE, 1 + GAIN_RANGE, n) + _per_sample(rng, -BIAS_RANGE, BIAS_RANGE, n)
    noise = torch.from_numpy(rng.standard_normal(x.shape).astype(np.float32))
    return (x + noise * _per_sample(rng, 0, NOISE_MAX, n)).clamp(0, 1)


def augment_batch(x: torch.Tensor, y: torch.Tensor | None, rng: np.random.Generator):
    """Flips, a small affine transform and intensity jitter: what both stages train with."""
    x, y = flip(x, y, rng)
    x, y = affine(x, y, rng)
    return intensity(x, rng), y
