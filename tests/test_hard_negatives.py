"""Hard-negative sampling (seg/hard_negatives.py): clean training slices the segmenter marks are drawn more often;
the notes merge across torchrun ranks and survive a resume."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from covidseg_core import distributed
from covidseg_core.errors import Cancelled
from covidseg_core.events import CancelToken, EpochReport, drive
from covidseg_core.pipeline import train_job
from covidseg_core.runs import RunFolder
from covidseg_core.seg.hard_negatives import HardNegatives
from covidseg_core.seg.training import SegmenterData
from covidseg_core.train_config import TrainConfig


def _logits(*top: float) -> torch.Tensor:
    """A batch of 4x4 logit maps whose highest probability is each of `top`."""
    out = torch.full((len(top), 1, 4, 4), -9.0)
    out[:, 0, 1, 2] = torch.logit(torch.tensor(top))
    return out


def test_only_background_slices_the_network_marks_are_noted_and_weighted():
    hard = HardNegatives(np.array([True, True, False, True]), weight=3.0)
    assert hard.active and hard.weights() is None                # nothing noted yet: every slice once
    hard.note(np.array([0, 1, 2, -1]), 1, _logits(0.9, 0.2, 0.99, 0.99))   # 2 has a lesion; -1 is synthetic
    assert hard.marked.tolist() == [True, False, False, False]
    assert hard.weights().tolist() == [4.0, 1.0, 1.0, 1.0]
    hard.note(np.array([0]), 2, _logits(0.1))                   # seen again, no longer marked
    assert hard.weights() is None
    assert not HardNegatives(np.array([True]), weight=0.0).active


def test_the_notes_of_two_ranks_merge_to_the_latest(monkeypatch):
    notes = []
    for rank_marks in ((0, [True, False, True]), (1, [False, True, False])):
        hard = HardNegatives(np.ones(3, bool), weight=1.0)
        step = {0: [1, 5, 2], 1: [3, 5, 1]}[rank_marks[0]]       # the step each rank last noted each slice at
        for pos, (when, marked) in enumerate(zip(step, rank_marks[1])):
            hard.note(np.array([pos]), when, _logits(0.9 if marked else 0.1))
        notes.append(hard)
    monkeypatch.setattr(distributed, "active", lambda: True)
    monkeypatch.setattr(distributed, "all_gather", lambda obj: [(h.when.copy(), h.marked.copy()) for h in notes])
    for hard in notes:
        hard.sync()
    # slice 0: rank 1 saw it last (clean); slice 1: both at step 5, one marked it; slice 2: rank 0 saw it last
    assert [h.marked.tolist() for h in notes] == [[False, True, True]] * 2


def test_a_heavier_slice_is_drawn_more_often_and_positions_name_the_images():
    images = torch.arange(4.0)[:, None, None, None].expand(4, 1, 2, 2).contiguous()
    data = SegmenterData(images=images, targets=torch.zeros(4, 2, 2, dtype=torch.uint8), train_idx=np.arange(4),
                         val_idx=np.zeros(0, int))
    counts = np.zeros(4)
    for seed in range(50):
        for x, _, positions in data.epoch_batches(1, np.random.default_rng(seed), 4, 2,
                                                  weights=np.array([1.0, 1.0, 7.0, 1.0])):
            assert (x[:, 0, 0, 0].numpy() == positions).all()
            np.add.at(counts, positions, 1)
    assert counts.sum() == 200 and counts[2] > 2.5 * counts[[0, 1, 3]].max()
    plain = [p for _, _, ps in data.epoch_batches(1, np.random.default_rng(0), 4, 2) for p in ps]
    assert sorted(plain) == [0, 1, 2, 3]                     # no weights: every slice once


def tiny(**overrides) -> TrainConfig:
    return TrainConfig(**{**dict(size=None, cls_epochs=1, seg_epochs=3, base=8, batch_size=4, lr=5e-3,
                                 synthetic="only", hard_negative_weight=3.0), **overrides})


def test_a_resumed_run_draws_what_an_uninterrupted_one_would_have(small_demo, tmp_path, one_torch_thread):
    drive(train_job(small_demo, tmp_path / "whole", tiny(), device="cpu"))
    cancel = CancelToken()
    with pytest.raises(Cancelled):
        for event in train_job(small_demo, tmp_path / "resumed", tiny(), device="cpu", cancel=cancel):
            if isinstance(event, EpochReport) and event.stage == "segmenter" and event.epoch == 2:
                cancel.cancel()
    assert "hard_negatives" in RunFolder(tmp_path / "resumed").load_checkpoint("last.pt")
    drive(train_job(small_demo, tmp_path / "resumed", tiny(), device="cpu"))
    losses = [[r["train_loss"] for r in RunFolder(p).read_epochs("segmenter")]
              for p in (tmp_path / "whole", tmp_path / "resumed")]
    assert len(losses[0]) == 3 and losses[0] == losses[1]
