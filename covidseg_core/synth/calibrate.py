"""Lesion levels that resemble this patient's disease: measured where the classifier is confident.

On each infected slice, the pixels of the lung field where the fused CAM is high and the tissue is denser than
aerated lung are taken as "confidently lesion"; their level g = (median - lung level) / (tissue - lung level)
is the quantity the synthesiser draws (lesions.py). The ground-glass range becomes the 10th-90th percentile of
those levels, widened a little and kept inside sane bounds, so one odd slice cannot make every lesion invisible
or every lesion a consolidation. Too few confident slices: the defaults stay.
"""
from __future__ import annotations

import logging

import numpy as np

from .lesions import LesionParams, intensity_levels

log = logging.getLogger(__name__)

MIN_SLICES = 5            # confident slices needed before the study's own range replaces the default
CAM_CONFIDENT = 0.6       # fused CAM (relative to its maximum in the lung) at or above this
MIN_PIXELS = 20
BOUNDS = (0.1, 1.0)


def lesion_levels(images: np.ndarray, lungs: np.ndarray, cams: np.ndarray) -> np.ndarray:
    """g of the confident CAM region of each slice that has one (1D array, possibly empty)."""
    levels = []
    for img, lung, cam in zip(images, lungs, cams):
        lung = np.asarray(lung, dtype=bool)
        if lung.sum() < 100:
            continue
        peak = float(cam[lung].max())
        if peak <= 0:
            continue
        lv = intensity_levels(img, lung)
        region = lung & (cam / peak >= CAM_CONFIDENT) & (img > lv.lung)
        if region.sum() < MIN_PIXELS or lv.gap <= 0:
            continue
        levels.append((float(np.median(img[region])) - lv.lung) / lv.gap)
    return np.asarray(levels, dtype=np.float64)


def calibrated_params(images: np.ndarray, lungs: np.ndarray, cams: np.ndarray,
                      base: LesionParams | None = None) -> tuple[LesionParams, dict]:
    """(params, note): the base parameters with the study's lesion level range, and what was measured."""
    base = base or LesionParams()
    g = lesion_levels(images, lungs, cams)
    if len(g) < MIN_SLICES:
        return base, {"calibrated": False, "confident_slices": int(len(g))}
    lo, hi = np.percentile(g, [10, 90])
    lo = float(np.clip(lo * 0.8, *BOUNDS))
    hi = float(np.clip(max(hi * 1.2, lo + 0.1), *BOUNDS))
    log.info("lesion levels calibrated on %d slices: g %.2f-%.2f", len(g), lo, hi)
    return base.with_levels(lo, hi), {"calibrated": True, "confident_slices": int(len(g)),
                                      "ggo_level": [round(lo, 3), round(hi, 3)]}
