"""Clean slices the segmenter still marks are drawn more often in the next epoch (hard-negative sampling).

A slice whose training target is all background (a slice the user labelled clean, or one left unchanged by the
synthesiser's draw) tells the network "nothing here"; among a study's clean slices the few that hold what looks
like a lesion (a vessel seen end-on, the diaphragm's dome cut through the lung) are where its false marks come
from, and a uniform draw shows each of them as rarely as any other. So the training loop notes, for every real
slice with an all-background target that a step trains on, whether the network's highest probability on it reached
the decision threshold; in the next epoch such a slice is drawn `1 + weight` times as often as the others (the
real part of each epoch drawn with replacement, its size unchanged). Under torchrun every rank notes its own
shards and the notes are merged after each epoch, so all ranks draw the same batches. The notes travel in the
last checkpoint, so a resumed run draws what an uninterrupted one would have.
"""
from __future__ import annotations

import numpy as np
import torch

from .. import distributed

THRESHOLD = 0.5          # predict.THRESHOLD: a probability that would mark a pixel


class HardNegatives:
    """Notes on the training slices (positions in SegmenterData.train_idx) whose target is all background."""

    def __init__(self, background: np.ndarray, weight: float):
        self.background = np.asarray(background, dtype=bool)
        self.weight = float(weight)
        self.marked = np.zeros(len(self.background), dtype=bool)
        self.when = np.full(len(self.background), -1, dtype=np.int64)     # the step of the last note, -1: none
        self.current: tuple[np.ndarray, int] | None = None    # (positions of the batch, -1 synthetic; its step)

    @property
    def active(self) -> bool:
        return self.weight > 0 and bool(self.background.any())

    def wrap(self, loss_fn):
        """`loss_fn(logits, y)` that also notes, for the batch in `current`, which background slices it marks."""
        def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            if self.current is not None:
                self.note(*self.current, logits.detach())
            return loss_fn(logits, y)
        return loss

    def note(self, positions: np.ndarray, step: int, logits: torch.Tensor) -> None:
        top = torch.sigmoid(logits.float().flatten(1).amax(1)).cpu().numpy()
        for pos, p in zip(np.asarray(positions), top):
            if pos >= 0 and self.background[pos]:
                self.marked[pos] = p >= THRESHOLD or (self.when[pos] == step and self.marked[pos])
                self.when[pos] = step

    def sync(self) -> None:
        """Every rank's notes merged, the latest note of each slice winning (a slice in two shards of one step:
        marked if either marked it), the same on every rank."""
        if not distributed.active():
            return
        parts = distributed.all_gather((self.when.copy(), self.marked.copy()))
        when = np.max([w for w, _ in parts], axis=0)
        self.marked = np.logical_or.reduce([m & (w == when) & (w >= 0) for w, m in parts])
        self.when = when

    def weights(self) -> np.ndarray | None:
        """How often each training slice is drawn next epoch, relative to the others; None: uniform, once each."""
        if not self.active or not self.marked.any():
            return None
        return 1.0 + self.weight * self.marked

    def state_dict(self) -> dict:
        return {"marked": self.marked.tolist(), "when": self.when.tolist()}

    def load_state_dict(self, state: dict | None) -> None:
        if state and len(state.get("marked", [])) == len(self.marked):
            self.marked = np.asarray(state["marked"], dtype=bool)
            self.when = np.asarray(state["when"], dtype=np.int64)
