"""A refinement measured by benchmarks/pseudo_masks.py and not kept in the product (it did not beat the per-study
density level there, and it needs scikit-image): a random walker seeded by confident foreground and background."""
from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage as ndi


def random_walker_foreground(image01: np.ndarray, cam: np.ndarray, lung: np.ndarray, sal: np.ndarray,
                             fg_cam: float, fg_sal: float, bg_cam: float, bg_sal: float,
                             beta: float = 130.0) -> np.ndarray:
    """Foreground that follows intensity edges: a random walker (scikit-image) on the image inside the lung field,
    seeded with confident foreground (CAM >= fg_cam and saliency >= fg_sal) and confident background (CAM < bg_cam
    or saliency < bg_sal). Outside the lung takes no part. Empty when there is no foreground seed."""
    from skimage.segmentation import random_walker

    lung = np.asarray(lung, dtype=bool)
    fg = lung & (cam >= fg_cam) & (sal >= fg_sal)
    if not fg.any():
        return np.zeros(lung.shape, dtype=bool)
    bg = lung & ~fg & ((cam < bg_cam) | (sal < bg_sal))
    labels = np.zeros(lung.shape, dtype=np.int32)
    labels[~lung] = -1                  # inactive: outside the lung is background by definition
    labels[bg] = 2
    labels[fg] = 1
    # lung pieces without any seed are cut off from the walk: background
    pieces, n = ndi.label(lung)
    seeded = np.zeros(n + 1, dtype=bool)
    seeded[np.unique(pieces[labels > 0])] = True
    labels[lung & ~seeded[pieces]] = -1
    if not (labels == 2).any():       # nothing to walk against: the seeds are the answer
        return fg
    ys, xs = np.nonzero(labels >= 0)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    with warnings.catch_warnings():   # "probability range outside [0, 1]" at the solver's tolerance: harmless
        warnings.simplefilter("ignore", UserWarning)
        crop = random_walker(np.asarray(image01, np.float64)[y0:y1, x0:x1], labels[y0:y1, x0:x1], beta=beta,
                             mode="cg_j", tol=1e-3)
    out = np.zeros(lung.shape, dtype=bool)
    out[y0:y1, x0:x1] = crop == 1
    return out & lung
