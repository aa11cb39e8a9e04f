"""A seeded supply of synthetic training pairs for the segmenter, drawn fresh every epoch.

Every epoch draws new lesions on the study's clean slices from (seed, epoch) alone, so the network never sees
the same synthetic lesion twice and a resumed run draws exactly what an uninterrupted one would have. Lesions
are drawn at the slice's own size (where the lung field and the levels were measured) and then brought to the
working size like every other training image. A share of the draws keeps the clean slice unchanged: normal lung
with an all-background target, so the network also learns what is not a lesion.
"""
from __future__ import annotations

import numpy as np

from ..imaging.resize import resize_stack
from .lesions import MIN_LUNG_PIXELS, LesionParams, intensity_levels, synthesize

UNCHANGED_SHARE = 0.15


class SyntheticSource:
    """Synthetic (image, exact mask) pairs from clean slices (n, H, W) in [0, 1] and their lung fields."""

    def __init__(self, images01: np.ndarray, lungs: np.ndarray, params: LesionParams | None = None,
                 seed: int = 0, work_shape: tuple[int, int] | None = None):
        lungs = np.asarray(lungs, dtype=bool)
        usable = lungs.reshape(len(lungs), -1).sum(1) >= MIN_LUNG_PIXELS   # no lung (apex, bases): skipped
        self.images = np.asarray(images01, dtype=np.float32)[usable]
        self.lungs = lungs[usable]
        self.n_skipped = int((~usable).sum())
        self.params = params or LesionParams()
        self.seed = int(seed)
        self.work_shape = tuple(work_shape or self.images.shape[1:])
        self.levels = [intensity_levels(img, lung) for img, lung in zip(self.images, self.lungs)]

    def __len__(self) -> int:
        return len(self.images)

    def epoch_pairs(self, epoch: int, n: int):
        """(x (n, 1, h, w) float32 tensor, y (n, h, w) uint8 tensor 0/1) at the working size."""
        import torch

        if len(self) == 0 or n <= 0:
            raise ValueError("no usable clean slice to draw synthetic lesions on")
        rng = np.random.default_rng([self.seed, int(epoch), 18])
        xs, ys = [], []
        for _ in range(int(n)):
            k = int(rng.integers(len(self)))
            if rng.random() < UNCHANGED_SHARE:
                img, mask = self.images[k], np.zeros(self.images.shape[1:], dtype=bool)
            else:
                img, mask = synthesize(self.images[k], self.lungs[k], rng, self.params, self.levels[k])
            xs.append(img)
            ys.append(mask)
        x = resize_stack(torch.from_numpy(np.stack(xs))[:, None], self.work_shape)
        y = resize_stack(torch.from_numpy(np.stack(ys).astype(np.float32))[:, None], self.work_shape, mode="nearest")
        return x.contiguous(), y[:, 0].to(torch.uint8).contiguous()
