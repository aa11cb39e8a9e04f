"""Shared test fixtures: the real data folder (skipped when absent)."""
from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_DATA = SHARED / "data"


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
