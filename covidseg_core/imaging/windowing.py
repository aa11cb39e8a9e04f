"""Intensity windowing: HU -> [0, 1] through a window, and what the networks see (`to_unit_range`)."""
from __future__ import annotations

import numpy as np

LUNG_WINDOW = (1500.0, -600.0)         # (width, level) in HU
MEDIASTINUM_WINDOW = (400.0, 40.0)
BONE_WINDOW = (2500.0, 480.0)


def apply_window(hu: np.ndarray, width: float, level: float) -> np.ndarray:
    """HU -> [0, 1] float32 through a window (width, level)."""
    lo = level - width / 2.0
    return np.clip((np.asarray(hu, dtype=np.float32) - lo) / width, 0.0, 1.0).astype(np.float32)


def to_unit_range(array: np.ndarray, is_hu: bool, bits: int = 8) -> np.ndarray:
    """What the networks see: HU in the lung window, 8-bit images as they are (already windowed), scaled to [0,1].

    16-bit images without HU are scaled by their own 0.5-99.5 percentiles, since their range is unknown.
    """
    a = np.asarray(array, dtype=np.float32)
    if is_hu:
        return apply_window(a, *LUNG_WINDOW)
    if bits <= 8:
        return np.clip(a / 255.0, 0.0, 1.0)
    lo, hi = np.percentile(a, [0.5, 99.5])
    return np.clip((a - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)
