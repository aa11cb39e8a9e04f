"""CAM extraction and attention fusion across epochs (the paper's core idea, after OAA).

After every epoch t, for each infected training slice that the classifier currently calls infected, the new
CAM_t (divided by its maximum) is fused into an accumulated map M:
  avg:  M_t = ((n-1) * M_{t-1} + CAM_t) / n, n = number of maps fused so far (the paper's choice)
  max:  M_t = max(M_{t-1}, CAM_t)             (OAA's default)
  none: M = the last epoch's CAM (plain CAM, the baseline)

Fusion does not change how the classifier trains, so one FusionBank keeps all three at once (cheap at CAM
resolution); `fused(mode)` hands out the one asked for. A slice the classifier never called infected has
nothing fused: its map falls back to its last CAM.
"""
from __future__ import annotations

import numpy as np
import torch

from ..constants import FUSION_MODES
from ..errors import InputError


def check_fusion(mode: str) -> str:
    mode = (mode or "").lower()
    if mode not in FUSION_MODES:
        raise InputError(f"Unknown fusion '{mode}'.", "Use avg, max or none.")
    return mode


def normalise_cams(cams: torch.Tensor) -> torch.Tensor:
    """(N, h, w) non-negative CAMs -> each divided by its own maximum (all-zero maps stay zero)."""
    peak = cams.flatten(1).amax(dim=1).clamp_min(1e-8)
    return cams / peak[:, None, None]


class FusionBank:
    """Accumulated maps of a fixed list of slices, at CAM resolution, for all fusion modes at once."""

    def __init__(self, n: int, shape: tuple[int, int]):
        self.last = np.zeros((n, *shape), dtype=np.float32)
        self.avg = np.zeros((n, *shape), dtype=np.float32)
        self.max = np.zeros((n, *shape), dtype=np.float32)
        self.count = np.zeros(n, dtype=np.int64)

    def update(self, idx: np.ndarray, cams: np.ndarray, called_infected: np.ndarray) -> None:
        """CAMs (normalised, (k, h, w)) of the slices `idx` from this epoch; fuse those called infected."""
        idx = np.asarray(idx, dtype=int)
        self.last[idx] = cams
        sel = np.asarray(called_infected, dtype=bool)
        if not sel.any():
            return
        i, c = idx[sel], cams[sel]
        self.count[i] += 1
        n = self.count[i][:, None, None].astype(np.float32)
        self.avg[i] = ((n - 1) * self.avg[i] + c) / n
        self.max[i] = np.maximum(self.max[i], c)

    def fused(self, mode: str, idx: np.ndarray | None = None) -> np.ndarray:
        """The fused maps (k, h, w) of slices `idx` (all when None) for `mode`."""
        mode = check_fusion(mode)
        idx = np.arange(len(self.count)) if idx is None else np.asarray(idx, dtype=int)
        if mode == "none":
            return self.last[idx].copy()
        acc = (self.avg if mode == "avg" else self.max)[idx].copy()
        never = self.count[idx] == 0
        acc[never] = self.last[idx][never]
        return acc
