"""Small synthetic slices for stage-1 tests: a body (40 HU) with two dark lungs (-850 HU) and, on infected
slices, brighter blobs (-300..0 HU) inside a lung as infection."""
from __future__ import annotations

import numpy as np

from covidseg_core.data import SliceSet
from covidseg_core.imaging.windowing import apply_window, LUNG_WINDOW


def ellipse(shape, cy, cx, ry, rx):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def synthetic_slice(rng: np.random.Generator, infected: bool, size: int = 64):
    shape = (size, size)
    hu = np.full(shape, -1000.0, dtype=np.float32)
    s = size / 64.0
    hu[ellipse(shape, 32 * s, 32 * s, 27 * s, 30 * s)] = 40.0
    lungs = np.zeros(shape, bool)
    for cx in (18 * s, 46 * s):
        lungs |= ellipse(shape, 31 * s, cx, 19 * s, 10 * s)
    hu[lungs] = -850.0
    mask = np.zeros(shape, np.uint8)
    if infected:
        for _ in range(rng.integers(1, 3)):
            ys, xs = np.nonzero(lungs)
            k = rng.integers(len(ys))
            r = rng.uniform(3.0, 6.0) * s
            blob = ellipse(shape, ys[k], xs[k], r, r * rng.uniform(0.7, 1.3)) & lungs
            hu[blob] = rng.uniform(-300.0, 0.0)
            mask |= blob.astype(np.uint8)
    hu += rng.normal(0, 25, shape).astype(np.float32)
    return hu, mask, lungs


def synthetic_slice_set(n_infected: int = 24, n_clean: int = 24, seed: int = 0, size: int = 64) -> SliceSet:
    rng = np.random.default_rng(seed)
    labels = ["infected"] * n_infected + ["clean"] * n_clean
    order = rng.permutation(len(labels))
    labels = [labels[i] for i in order]
    imgs, masks, lungs = [], [], []
    for lab in labels:
        hu, m, lu = synthetic_slice(rng, lab == "infected", size)
        imgs.append(apply_window(hu, *LUNG_WINDOW))
        masks.append(m)
        lungs.append(lu)
    ids = [f"s{i:03d}.png" for i in range(len(labels))]
    ss = SliceSet(images=np.stack(imgs), ids=ids, labels=labels, groups=["synthetic"] * len(labels),
                  gt_masks=np.stack(masks), has_gt=np.ones(len(labels), bool))
    ss.extra["lungs"] = np.stack(lungs)
    return ss
