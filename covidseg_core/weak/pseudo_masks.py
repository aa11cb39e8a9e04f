"""Pseudo masks from a fused CAM and the background cues: foreground / background / ignore.

For an `infected` slice (all thresholds relative to the slice's own statistics):
  foreground  = inside the lung field AND fused CAM >= t_fg AND denser than aerated lung (saliency >= sal_fg)
                AND denser than the study's clean slices' level (clean_quantile), in pieces of a minimum size
  background  = outside the lung field OR clearly aerated (saliency < sal_bg) OR fused CAM < t_bg
  ignore      = everything else (no loss in stage 2)
The fused CAM is rescaled by its maximum inside the lung field. A `clean` slice is all background.

Arrays: 0 background, 1 infection, 255 ignore. PNG on disk: 0 background, 255 infection, 127 ignore.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..constants import BACKGROUND, FOREGROUND, IGNORE, PNG_FOREGROUND, PNG_IGNORE
from ..imaging.lungs import lung_saliency


@dataclass
class PseudoMaskParams:
    """Thresholds of the pseudo masks. t_fg and sal_fg: chosen for avg fusion on the infected images of zenodo-dev
    training volumes c01-c05 only, with the threshold lung field (both seeds agreed; not re-tuned for the learned
    lung field, see docs/results_stage1.md). t_bg, sal_bg: not tuned (they only
    move pixels between background and ignore, which the foreground Dice does not see)."""
    t_fg: float = 0.3       # fused CAM (/ its max in the lung) at or above this may be foreground
    t_bg: float = 0.1       # fused CAM below this is background
    sal_fg: float = 0.0     # saliency (IQRs above the lung median) at or above this may be foreground
    sal_bg: float = 0.0     # saliency below this (less dense than the lung's median) is aerated: background
    # refinement: a per-study density level and a connected-component clean-up. Chosen at the thresholds above on
    # the infected images of zenodo-dev c01-c05 (learned lung field, avg fusion, seed 0): Dice mean 0.237 -> 0.251
    # there, 0.239 -> 0.282 on the unseen volumes c06, c07, r01-r03 (docs/results_stage1.md)
    clean_quantile: float | None = 0.7    # foreground must also be denser than this quantile of the lung saliency
                                          # of the study's `clean` slices, so they would come out nearly empty
                                          # (None: off; a study without clean slices uses all studies' level)
    min_component_frac: float = 0.0018    # foreground pieces smaller than this share of the slice are dropped
                                          # (60 pixels of a 256x128 half slice)


def relative_cam(fused_cam: np.ndarray, lung: np.ndarray) -> np.ndarray:
    """The fused CAM divided by its maximum inside the lung field (the whole slice when the field is empty)."""
    cam = np.asarray(fused_cam, dtype=np.float32)
    region = cam[lung] if lung.any() else cam
    peak = float(region.max()) if region.size else 0.0
    return cam / peak if peak > 1e-8 else np.zeros_like(cam)


def make_pseudo_mask(image01: np.ndarray, fused_cam: np.ndarray, lung: np.ndarray, config=None,
                     saliency: np.ndarray | None = None, clean_level: float | None = None) -> np.ndarray:
    """uint8 pseudo mask (0 background, 1 infection, 255 ignore) of one infected slice.

    `config` is anything with the fields of PseudoMaskParams (a PseudoMaskParams or a Stage1Config); `saliency`
    may be passed when already computed (lungs.lung_saliency). `clean_level`: the study's healthy-lung density
    level (clean_density_level); with config.clean_quantile set, foreground must reach it. Foreground pieces
    smaller than config.min_component_frac of the slice become ignore.
    """
    p = config if config is not None else PseudoMaskParams()
    lung = np.asarray(lung, dtype=bool)
    if fused_cam.shape != lung.shape or image01.shape != lung.shape:
        raise ValueError(f"image {image01.shape}, CAM {fused_cam.shape} and lung {lung.shape} must match")
    sal = lung_saliency(image01, lung) if saliency is None else saliency
    cam = relative_cam(fused_cam, lung)
    fg = lung & (cam >= p.t_fg) & (sal >= p.sal_fg)
    if getattr(p, "clean_quantile", None) is not None and clean_level is not None:
        fg &= sal >= clean_level
    fg = remove_small_components(fg, round(getattr(p, "min_component_frac", 0.0) * lung.size))
    bg = ~lung | (sal < p.sal_bg) | (cam < p.t_bg)
    out = np.full(lung.shape, IGNORE, dtype=np.uint8)
    out[bg] = BACKGROUND
    out[fg & ~bg] = FOREGROUND
    return out


def clean_pseudo_mask(shape: tuple[int, int]) -> np.ndarray:
    return np.zeros(shape, dtype=np.uint8)


def to_png_values(mask: np.ndarray) -> np.ndarray:
    """0/1/255 array -> 0/255/127 PNG values."""
    out = np.zeros(mask.shape, dtype=np.uint8)
    out[mask == FOREGROUND] = PNG_FOREGROUND
    out[mask == IGNORE] = PNG_IGNORE
    return out


def from_png_values(png: np.ndarray) -> np.ndarray:
    """0/255/127 PNG values -> 0/1/255 array (values in between go to the nearest of the three)."""
    png = np.asarray(png)
    out = np.zeros(png.shape, dtype=np.uint8)
    out[png >= 192] = FOREGROUND
    out[(png >= 64) & (png < 192)] = IGNORE
    return out


# --- refinement: foreground that follows the lesion's edges ------------------------------------------------------

def clean_density_level(saliencies, lungs, quantile: float) -> float | None:
    """The study's healthy-lung density level: the `quantile` of the saliency (lungs.lung_saliency) over the
    lung pixels of its `clean` slices, so that at most 1 - quantile of a clean slice's lung lies above it.
    None when the study has no clean slice with lung."""
    vals = [np.asarray(s)[np.asarray(m, bool)] for s, m in zip(saliencies, lungs)]
    vals = [v for v in vals if v.size]
    if not vals:
        return None
    return float(np.quantile(np.concatenate(vals), quantile))


def remove_small_components(mask: np.ndarray, min_area: int) -> np.ndarray:
    """The mask without its 8-connected components smaller than `min_area` pixels."""
    mask = np.asarray(mask, dtype=bool)
    if min_area <= 1 or not mask.any():
        return mask
    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, dtype=bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area
    return keep[lab]
