"""Shared test fixtures: the real data folder (skipped when absent); torch threads shared out between the
pytest-xdist workers that `make test` starts (one per core)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_DATA = SHARED / "data"


_OWN_CACHE: list[str] = []


def pytest_configure(config) -> None:
    """Under pytest-xdist every worker is a process with torch's default of one thread per core: N workers on N
    cores would run N*N threads, and idle OpenMP threads spin. Give each worker its share of the cores.
    `covidseg train` keeps decoded slices in a cache (covidseg_core/slice_cache.py): the suite's go to a temporary
    folder (shared by the xdist workers, which inherit it), never to the user's ~/.cache."""
    if "COVIDSEG_CACHE_DIR" not in os.environ:
        _OWN_CACHE.append(tempfile.mkdtemp(prefix="covidseg-test-cache-"))
        os.environ["COVIDSEG_CACHE_DIR"] = _OWN_CACHE[0]
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def pytest_unconfigure(config) -> None:
    for folder in _OWN_CACHE:
        shutil.rmtree(folder, ignore_errors=True)
        os.environ.pop("COVIDSEG_CACHE_DIR", None)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """/work/shared/data (real CT samples and the zenodo development set), or skip the test."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available ({SHARED_DATA} is missing)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small tensors: one torch thread is faster than two, and far faster on a CPU shared with other jobs
    (idle OpenMP threads spin)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory) -> Path:
    """The synthetic demo study at 16 slices of 64 pixels: small enough to train end to end in seconds."""
    from covidseg_core.demo import write_demo

    out = tmp_path_factory.mktemp("small") / "study"
    write_demo(out, n_slices=16, size=64)
    return out
