"""Pseudo masks from a fused CAM and the background cues: foreground / background / ignore.

For an `infected` slice (all thresholds relative to the slice's own statistics):
  foreground  = inside the lung field AND fused CAM >= t_fg AND denser than aerated lung (saliency >= sal_fg)
  background  = outside the lung field OR clearly aerated (saliency < sal_bg) OR fused CAM < t_bg
  ignore      = everything else (no loss in stage 2)
The fused CAM is rescaled by its maximum inside the lung field. A `clean` slice is all background.

Arrays: 0 background, 1 infection, 255 ignore. PNG on disk: 0 background, 255 infection, 127 ignore.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..constants import BACKGROUND, FOREGROUND, IGNORE, PNG_FOREGROUND, PNG_IGNORE
from ..imaging.lungs import lung_saliency


@dataclass
class PseudoMaskParams:
    """Thresholds of the pseudo masks. t_fg and sal_fg: chosen for avg fusion on the infected images of zenodo-dev
    training volumes c01-c05 only (both seeds agreed; docs/results_stage1.md). t_bg, sal_bg: not tuned (they only
    move pixels between background and ignore, which the foreground Dice does not see)."""
    t_fg: float = 0.3       # fused CAM (/ its max in the lung) at or above this may be foreground
    t_bg: float = 0.1       # fused CAM below this is background
    sal_fg: float = 0.0     # saliency (IQRs above the lung median) at or above this may be foreground
    sal_bg: float = 0.0     # saliency below this (less dense than the lung's median) is aerated: background


def relative_cam(fused_cam: np.ndarray, lung: np.ndarray) -> np.ndarray:
    """The fused CAM divided by its maximum inside the lung field (the whole slice when the field is empty)."""
    cam = np.asarray(fused_cam, dtype=np.float32)
    region = cam[lung] if lung.any() else cam
    peak = float(region.max()) if region.size else 0.0
    return cam / peak if peak > 1e-8 else np.zeros_like(cam)


def make_pseudo_mask(image01: np.ndarray, fused_cam: np.ndarray, lung: np.ndarray, config=None,
                     saliency: np.ndarray | None = None) -> np.ndarray:
    """uint8 pseudo mask (0 background, 1 infection, 255 ignore) of one infected slice.

    `config` is anything with t_fg, t_bg, sal_fg, sal_bg (a PseudoMaskParams or a Stage1Config); `saliency`
    may be passed when already computed (lungs.lung_saliency).
    """
    p = config if config is not None else PseudoMaskParams()
    lung = np.asarray(lung, dtype=bool)
    if fused_cam.shape != lung.shape or image01.shape != lung.shape:
        raise ValueError(f"image {image01.shape}, CAM {fused_cam.shape} and lung {lung.shape} must match")
    sal = lung_saliency(image01, lung) if saliency is None else saliency
    cam = relative_cam(fused_cam, lung)
    fg = lung & (cam >= p.t_fg) & (sal >= p.sal_fg)
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
