"""`covidseg train` on several processes under torchrun (torch.distributed, data parallel; docs/distributed.md).

Without torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK), or with one process in all, nothing here does
anything: every helper returns its input and the run is today's one-process run, bit for bit.

Under torchrun every rank runs the same job on the same data and draws the same batch order from the same seeded
rngs; `shard` gives each rank its 1/N of every global batch (as DistributedSampler would, padded so all ranks take
the same number of steps), `wrap` puts the network in DistributedDataParallel, and rank 0 alone writes the run
folder (RunFolder asks `is_writer`). What one rank decides for all (the budget plan) goes out with `broadcast`.
torch is imported inside the functions: RunFolder imports this module and must stay light.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os

import numpy as np

from .errors import InputError

log = logging.getLogger(__name__)

BACKEND_ENV = "COVIDSEG_DIST_BACKEND"      # gloo or nccl; default: nccl on CUDA, gloo on the CPU
# a rank blocked on a peer that died gives up after this long (torchrun normally stops it much sooner)
TIMEOUT_S = 1800


@dataclasses.dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1


_ONE = World()
_world = _ONE        # this process's view; local_only() swaps in a one-process one for a while


def env_world(env=os.environ) -> World:
    """The world torchrun describes in `env`; one process when it describes none."""
    if not all(k in env for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
        return _ONE
    return World(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env["LOCAL_RANK"]),
                 int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"])))


def launched(env=os.environ) -> bool:
    """Started by torchrun with more than one process in all."""
    return env_world(env).size > 1


def rank() -> int:
    return _world.rank


def size() -> int:
    return _world.size


def active() -> bool:
    return _world.size > 1


def is_writer() -> bool:
    """Rank 0 (or the only process): the one that writes the run folder and prints progress."""
    return _world.rank == 0


def pick_backend(device: str, world: World, env=os.environ, cuda_available: bool | None = None,
                 gpu_count: int | None = None) -> tuple[str, str]:
    """(backend, this rank's device) for `--device`; an InputError (exit 2) for what cannot work."""
    import torch

    cuda_available = torch.cuda.is_available() if cuda_available is None else cuda_available
    gpu_count = torch.cuda.device_count() if gpu_count is None else gpu_count
    device = (device or "auto").lower()
    on_cuda = device.startswith("cuda") or (device == "auto" and cuda_available)
    backend = env.get(BACKEND_ENV, "nccl" if on_cuda else "gloo").lower()
    if backend not in ("gloo", "nccl"):
        raise InputError(f"{BACKEND_ENV}={backend}: unknown backend.", "Use gloo or nccl.")
    if (backend == "nccl" or on_cuda) and not cuda_available:
        raise InputError(f"{'NCCL' if backend == 'nccl' else '--device ' + device} needs CUDA GPUs, and PyTorch "
                         "sees none here.", f"Train on the CPU: --device cpu (gloo), without {BACKEND_ENV}=nccl.")
    if backend == "nccl" and not on_cuda:
        raise InputError("NCCL runs on CUDA GPUs only, and --device cpu was asked for.",
                         f"Use --device cuda, or unset {BACKEND_ENV} to train on the CPU with gloo.")
    if on_cuda and world.local_size > gpu_count:
        raise InputError(f"{world.local_size} processes per node were started, but this node has {gpu_count} "
                         "CUDA GPU(s): one process per GPU.", f"Use torchrun --nproc-per-node {gpu_count} (or less).")
    return backend, (f"cuda:{world.local_rank}" if on_cuda else "cpu")


def start(device: str) -> str:
    """Join torchrun's process group (when launched by it); the device this rank trains on."""
    global _world
    world = env_world()
    if world.size == 1:
        return device
    import torch
    import torch.distributed as tdist

    backend, device = pick_backend(device, world)
    if device.startswith("cuda"):
        torch.cuda.set_device(world.local_rank)
    tdist.init_process_group(backend, timeout=datetime.timedelta(seconds=TIMEOUT_S))
    _world = world
    log.info("rank %d of %d (%s, %s)", world.rank, world.size, backend, device)
    return device


def stop() -> None:
    global _world
    import torch.distributed as tdist

    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()
    _world = _ONE


@contextlib.contextmanager
def session(device: str):
    """`with session(args.device) as device:` the job runs in torchrun's process group, left at the end."""
    try:
        yield start(device)
    finally:
        if _world.size > 1:
            stop()


@contextlib.contextmanager
def local_only():
    """This rank alone for a while (rank 0 measuring the budget's speed probe): no wrapping, no sharding."""
    global _world
    saved, _world = _world, World(rank=_world.rank)
    try:
        yield
    finally:
        _world = saved


def barrier() -> None:
    if active():
        import torch.distributed as tdist

        tdist.barrier()


@contextlib.contextmanager
def writer_first():
    """The body runs on rank 0 first and on the other ranks after it: they read what rank 0 wrote there."""
    if not is_writer():
        barrier()
    yield
    if is_writer():
        barrier()


def broadcast(obj):
    """Rank 0's `obj` (a picklable value) on every rank."""
    if not active():
        return obj
    import torch.distributed as tdist

    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def wrap(model, device):
    """`model` in DistributedDataParallel (its gradients averaged over the ranks at every step), or itself.
    BatchNorm stays per rank (no SyncBatchNorm): every rank trains on the configured batch size, so its batch
    statistics are those of a one-process run; docs/distributed.md says why."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if getattr(device, "type", "cpu") == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def shard(batch: np.ndarray) -> np.ndarray:
    """This rank's part of one global batch (indices): every size-th from its rank, the batch first padded by
    repeating its start to a multiple of the ranks (DistributedSampler's rule), so no rank gets an empty batch."""
    if not active() or len(batch) == 0:
        return batch
    pad = (-len(batch)) % _world.size
    padded = np.concatenate([batch, np.resize(batch, pad)]) if pad else batch
    return padded[_world.rank::_world.size]


def rank_rng(shared: np.random.Generator, *key: int) -> np.random.Generator:
    """The rng a rank augments with: `shared` on one process; under torchrun one of its own from (key, rank),
    so the ranks, which share the batch order, do not also share their flips and crops."""
    if not active():
        return shared
    return np.random.default_rng([*key, 1000 + _world.rank])


def gather_rows(n: int, compute):
    """`compute(indices)` -> tuple of arrays with one row per index, for range(n): each rank computes every
    size-th index and every rank gets all rows back in order (CAMs of the classifier's epochs)."""
    if not active() or n < _world.size:
        return compute(np.arange(n))
    import torch.distributed as tdist

    mine = np.arange(n)[_world.rank::_world.size]
    parts = [None] * _world.size
    tdist.all_gather_object(parts, (mine, compute(mine)))
    first = parts[0][1]
    out = tuple(np.empty((n, *a.shape[1:]), dtype=a.dtype) for a in first)
    for idx, arrays in parts:
        for o, a in zip(out, arrays):
            o[idx] = a
    return out


def mean_over_ranks(value: float, weight: float = 1.0) -> float:
    """The `weight`-weighted mean of every rank's `value` (an epoch's training loss over each rank's slices),
    the same on every rank; `value` itself on one process. Objects, not tensors: gloo and NCCL alike."""
    if not active():
        return value
    import torch.distributed as tdist

    parts = [None] * _world.size
    tdist.all_gather_object(parts, (float(value) * weight, float(weight)))
    total = sum(w for _, w in parts)
    return sum(v for v, _ in parts) / total if total else float(value)


def gather_to_writer(obj) -> list:
    """Every rank's `obj` in rank order on rank 0 ([obj] on one process; [] on the other ranks)."""
    if not active():
        return [obj]
    import torch.distributed as tdist

    parts = [None] * _world.size if is_writer() else None
    tdist.gather_object(obj, parts, dst=0)
    return parts or []


def my_share(items: list) -> list:
    """Every size-th of `items` from this rank's (work split by slice, e.g. the pseudo masks)."""
    return list(items)[_world.rank::_world.size] if active() else list(items)
