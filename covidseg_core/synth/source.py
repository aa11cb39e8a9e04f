"""A seeded supply of synthetic training pairs for the segmenter, drawn fresh every epoch.

Every epoch draws new lesions on the study's clean slices from (seed, epoch) alone, so the network never sees
the same synthetic lesion twice and a resumed run draws exactly what an uninterrupted one would have. Each pair
has a random stream of its own, from (seed, epoch, its index), so any subset of an epoch's pairs can be drawn in
any order, by any process (a torchrun rank draws only the pairs of its shards; synth/workers.py draws them in
worker processes) and comes out the same. Lesions are drawn at the slice's own size (where the lung field and
the levels were measured) and then brought to the working size like every other training image. A share of the
draws keeps the clean slice unchanged: normal lung with an all-background target, so the network also learns
what is not a lesion.
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

    def native_pairs(self, epoch: int, indices) -> list[tuple[np.ndarray, np.ndarray]]:
        """Pairs `indices` of `epoch` at the slices' own size: (image float32, bool mask) each."""
        if len(self) == 0:
            raise ValueError("no usable clean slice to draw synthetic lesions on")
        return [draw_pair(self.images, self.lungs, self.levels, self.params, self.seed, epoch, i) for i in indices]

    def to_work(self, pairs: list[tuple[np.ndarray, np.ndarray]]):
        """(x (n, 1, h, w) float32 tensor, y (n, h, w) uint8 tensor 0/1) at the working size."""
        import torch

        x = resize_stack(torch.from_numpy(np.stack([p[0] for p in pairs]))[:, None], self.work_shape)
        y = resize_stack(torch.from_numpy(np.stack([p[1] for p in pairs]).astype(np.float32))[:, None],
                         self.work_shape, mode="nearest")
        return x.contiguous(), y[:, 0].to(torch.uint8).contiguous()

    def pairs(self, epoch: int, indices):
        """Pairs `indices` of `epoch` at the working size, as `to_work` gives them."""
        return self.to_work(self.native_pairs(epoch, indices))

    def epoch_pairs(self, epoch: int, n: int):
        """The first `n` pairs of `epoch` at the working size (`to_work`)."""
        if len(self) == 0 or n <= 0:
            raise ValueError("no usable clean slice to draw synthetic lesions on")
        return self.pairs(epoch, range(int(n)))


def draw_pair(images: np.ndarray, lungs: np.ndarray, levels: list, params: LesionParams, seed: int, epoch: int,
              index: int) -> tuple[np.ndarray, np.ndarray]:
    """Pair `index` of `epoch`: a clean slice picked, then left unchanged or given lesions, all from the pair's
    own stream (a plain function of its arguments, so a worker process draws the same pair)."""
    rng = np.random.default_rng([int(seed), int(epoch), 18, int(index)])
    k = int(rng.integers(len(images)))
    if rng.random() < UNCHANGED_SHARE:
        return images[k], np.zeros(images.shape[1:], dtype=bool)
    return synthesize(images[k], lungs[k], rng, params, levels[k])
