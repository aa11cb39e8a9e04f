"""Synthetic pairs drawn by index, by worker processes and by torchrun ranks (synth/source.py, synth/workers.py,
SegmenterData.epoch_batches): whoever draws a pair, it is the same pair, so neither the worker count nor the
number of ranks changes what a run trains on; a rank draws only the pairs of its own shards."""
from __future__ import annotations

import json
import multiprocessing

import numpy as np
import pytest
import torch

from covidseg_core import distributed
from covidseg_core.distributed import World
from covidseg_core.errors import Cancelled
from covidseg_core.events import CancelToken, Progress, drive
from covidseg_core.pipeline import train_job
from covidseg_core.seg.training import SegmenterData
from covidseg_core.synth.source import SyntheticSource
from covidseg_core.synth.workers import PairWorkers, auto_workers
from covidseg_core.train_config import TrainConfig
from test_synth import chest_slice


@pytest.fixture(scope="module")
def source() -> SyntheticSource:
    imgs, lungs = zip(*(chest_slice(hu=False, seed=s) for s in range(3)))
    return SyntheticSource(np.stack(imgs), np.stack(lungs), seed=5, work_shape=(64, 48))


def test_a_pair_is_the_same_whatever_else_is_drawn(source):
    x, y = source.epoch_pairs(2, 6)
    xs, ys = source.pairs(2, [4, 1])
    assert torch.equal(xs, x[[4, 1]]) and torch.equal(ys, y[[4, 1]])
    assert not torch.equal(source.pairs(3, [4])[0], xs[:1])          # another epoch, other lesions


def test_worker_processes_draw_exactly_the_pairs_of_the_training_process(source):
    with PairWorkers(source, 2) as workers:
        x, y = workers.collect(workers.submit(7, [0, 3, 5, 2]))
        assert len(multiprocessing.active_children()) == 2
    inline_x, inline_y = source.pairs(7, [0, 3, 5, 2])
    assert torch.equal(x, inline_x) and torch.equal(y, inline_y)
    assert not multiprocessing.active_children()                      # stopped on leaving the block


class Counting:
    """A source that records which pairs were drawn."""
    def __init__(self, source):
        self.source, self.drawn = source, []

    def __len__(self):
        return len(self.source)

    def native_pairs(self, epoch, indices):
        self.drawn += [int(i) for i in indices]
        return self.source.native_pairs(epoch, indices)

    def to_work(self, pairs):
        return self.source.to_work(pairs)

    def epoch_pairs(self, epoch, n):
        return self.source.epoch_pairs(epoch, n)


def _batches(source, rank: int | None, monkeypatch):
    """One epoch of batch 4 (global) over 6 real slices and 6 synthetic pairs, as rank `rank` of 2 (None: one
    process); returns the batches and the pairs drawn."""
    if rank is not None:
        monkeypatch.setattr(distributed, "_world", World(rank=rank, size=2, local_rank=rank, local_size=2))
    counting = Counting(source)
    real = torch.full((6, 1, 64, 48), -1.0) - torch.arange(6.0)[:, None, None, None]    # told apart by value
    data = SegmenterData(images=real, targets=torch.zeros(6, 64, 48, dtype=torch.uint8), train_idx=np.arange(6),
                         val_idx=np.zeros(0, int), synthetic=counting, synthetic_share=0.5)
    batches = list(data.epoch_batches(1, np.random.default_rng(0), 12, 4))
    monkeypatch.setattr(distributed, "_world", World())
    return batches, sorted(counting.drawn)


def test_each_rank_draws_only_the_pairs_of_its_shards(source, monkeypatch):
    whole, drawn = _batches(source, None, monkeypatch)
    (r0, drawn0), (r1, drawn1) = (_batches(source, r, monkeypatch) for r in (0, 1))
    assert drawn == list(range(6)) and sorted(drawn0 + drawn1) == drawn and drawn0 and drawn1
    for (x, y), (x0, y0), (x1, y1) in zip(whole, r0, r1):     # shard's rule: every second item from the rank's
        assert torch.equal(x[0::2], x0) and torch.equal(x[1::2], x1)
        assert torch.equal(y[0::2], y0) and torch.equal(y[1::2], y1)


def test_workers_are_used_on_a_gpu_and_leave_a_core_to_each_rank():
    assert auto_workers("cpu", cpus=16) == 0
    assert auto_workers("cuda", cpus=16) == 4
    assert auto_workers("cuda", ranks_on_node=8, cpus=16) == 1
    assert auto_workers("cuda", ranks_on_node=8, cpus=8) == 0


def tiny(**overrides) -> TrainConfig:
    return TrainConfig(**{**dict(size=None, cls_epochs=1, seg_epochs=2, base=8, batch_size=4, lr=5e-3,
                                 synthetic="only"), **overrides})


def test_a_run_with_workers_trains_exactly_like_one_without_and_resumes_with_another_count(
        small_demo, tmp_path, one_torch_thread):
    drive(train_job(small_demo, tmp_path / "plain", tiny(data_workers=0), device="cpu"))
    drive(train_job(small_demo, tmp_path / "workers", tiny(data_workers=2), device="cpu"))
    losses = [[(r["stage"], r.get("train_loss", r.get("loss"))) for r in map(json.loads, open(p / "epochs.jsonl"))]
              for p in (tmp_path / "plain", tmp_path / "workers")]
    assert losses[0] == losses[1]
    assert not multiprocessing.active_children()
    # the worker count is how, not what: the finished run accepts the same command with another count
    drive(train_job(small_demo, tmp_path / "workers", tiny(data_workers=0), device="cpu"))


def test_cancelling_a_run_stops_its_workers(small_demo, tmp_path, one_torch_thread):
    cancel = CancelToken()

    def on_event(event):
        if isinstance(event, Progress) and event.stage == "segmenter":
            assert len(multiprocessing.active_children()) == 1
            cancel.cancel()

    with pytest.raises(Cancelled):
        drive(train_job(small_demo, tmp_path / "run", tiny(data_workers=1), device="cpu", cancel=cancel), on_event)
    assert not multiprocessing.active_children()
