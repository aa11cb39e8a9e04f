"""Synthetic pairs drawn ahead in worker processes while the network trains on the batch before (issue 17 item 4).

Drawing a lesion is NumPy / OpenCV work on the CPU (milliseconds per pair at 256 pixels, more at 512) and the
training step does not wait for it when workers draw the next batches' pairs meanwhile: on a GPU the step takes
less time than drawing its pairs, so without them the GPU mostly waits. The pairs are the same whoever draws them
(each has its own random stream, source.draw_pair), so the worker count never changes what a run learns.
Workers are spawned (not forked: the parent holds torch's threads), each given the source's slices once, and
stopped when the training loop ends, whether it finished, failed or was cancelled. With 0 workers `submit`
draws at once in this process (the plain loop).
"""
from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np

from .source import SyntheticSource, draw_pair

log = logging.getLogger(__name__)

MAX_AUTO_WORKERS = 4
_source: tuple | None = None          # in a worker process: (images, lungs, levels, params, seed)


def auto_workers(device_type: str, ranks_on_node: int = 1, cpus: int | None = None) -> int:
    """Workers per process when not given: none on the CPU (the training step already uses every core, and
    benchmarks/synthetic_workers.py measured no gain there); on a GPU up to MAX_AUTO_WORKERS, leaving a core for
    each process on the node."""
    if device_type != "cuda":
        return 0
    cpus = cpus or os.cpu_count() or 1
    return max(0, min(MAX_AUTO_WORKERS, cpus // max(1, ranks_on_node) - 1))


def _init_worker(images, lungs, levels, params, seed) -> None:
    global _source
    import cv2

    cv2.setNumThreads(1)          # one core per worker: the workers are the parallelism
    _source = (images, lungs, levels, params, seed)


def _draw(epoch: int, indices: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    images, lungs, levels, params, seed = _source
    return [draw_pair(images, lungs, levels, params, seed, epoch, i) for i in indices]


class PairWorkers:
    """`with PairWorkers(source, n) as workers:` `workers.collect(workers.submit(epoch, indices))` gives what
    `source.pairs(epoch, indices)` gives, drawn by `n` worker processes (split into one chunk per worker)."""

    def __init__(self, source: SyntheticSource, n_workers: int):
        self.source = source
        self.n = int(n_workers) if len(source) else 0
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> PairWorkers:
        if self.n > 0:
            s = self.source
            self._pool = ProcessPoolExecutor(self.n, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init_worker,
                                             initargs=(s.images, s.lungs, s.levels, s.params, s.seed))
            log.info("%d worker process(es) draw the synthetic pairs", self.n)
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def submit(self, epoch: int, indices) -> list[Future] | list:
        """Start drawing pairs `indices` of `epoch`; hand the result to `collect`."""
        indices = [int(i) for i in indices]
        if self._pool is None or not indices:
            return self.source.native_pairs(epoch, indices)
        chunks = [c.tolist() for c in np.array_split(np.array(indices), min(self.n, len(indices)))]
        return [self._pool.submit(_draw, epoch, c) for c in chunks]

    def collect(self, pending):
        """The pairs `submit` started, at the working size (source.to_work)."""
        if pending and isinstance(pending[0], Future):
            pending = [pair for f in pending for pair in f.result()]
        return self.source.to_work(pending)
