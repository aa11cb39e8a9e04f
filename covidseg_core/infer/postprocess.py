"""From probabilities to the masks a radiologist sees: infection lies inside the lungs, and specks are noise.

Measured on zenodo-dev's unseen volumes (a segmenter trained on synthetic lesions, docs/results.md): keeping only
predictions inside the lung field raised Dice mean from 0.35 to 0.47 and specificity from 0.96 to 0.99 (the
network otherwise also marks the chest wall, the table and bowel gas), and dropping components smaller than
about 0.05 % of the slice more than halved the clean slices with any mark for a loss of 0.004 Dice.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

MIN_COMPONENT_FRAC = 0.0005   # of the slice's area; 16 px on a 256x128 half slice, 131 px at 512x512


def drop_specks(mask: np.ndarray, min_frac: float = MIN_COMPONENT_FRAC) -> np.ndarray:
    """A 2D mask without the connected components smaller than `min_frac` of its area."""
    mask = np.asarray(mask, dtype=bool)
    min_px = max(1, int(round(min_frac * mask.size)))
    lab, n = ndi.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    keep = sizes >= min_px
    keep[0] = False
    return keep[lab]


def finish_masks(masks: np.ndarray, lungs: np.ndarray | None) -> np.ndarray:
    """uint8 (n, H, W) 0/1: predictions inside the lung fields (when given), without specks."""
    out = np.asarray(masks, dtype=bool)
    if lungs is not None:
        out = out & np.asarray(lungs, dtype=bool)
    return np.stack([drop_specks(m) for m in out]).astype(np.uint8) if len(out) else out.astype(np.uint8)
