"""A run folder holding an untrained segmenter: enough to drive `predict` without training first."""
from __future__ import annotations

from pathlib import Path

from covidseg_core.models.segmenter import build_from_spec
from covidseg_core.runs import BEST, RunFolder
from covidseg_core.train_config import TrainConfig


def make_untrained_run(path: Path, size: int = 32) -> Path:
    cfg = TrainConfig(size=size, base=8)
    options = {**cfg.options(), "lung_method": None}     # no lung field: the test is about files, not masks
    run = RunFolder(path)
    run.create(options, {"path": "synthetic"}, "cpu")
    run.save_checkpoint({"model": build_from_spec(cfg.model_spec()).state_dict(), "epoch": 0,
                         "spec": cfg.model_spec()}, BEST)
    return path
