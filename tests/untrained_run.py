"""A run folder holding an untrained segmenter: enough to drive `predict` without training first."""
from __future__ import annotations

from pathlib import Path

import torch

from covidseg_core.models.segmenter import build_from_spec
from covidseg_core.runs import BEST, RunFolder
from covidseg_core.train_config import TrainConfig


def make_untrained_run(path: Path, size: int = 32, lung_method: str | None = None, head_bias: float = 0.0,
                       epoch: int = 0) -> Path:
    """`lung_method` None: no lung field (tests about files, not masks). `head_bias` > 0 makes the network mark
    much of the slice, so the masks have content."""
    cfg = TrainConfig(size=size, base=8)
    model = build_from_spec(cfg.model_spec()).eval()
    with torch.no_grad():
        model.head.bias += head_bias
    run = RunFolder(path)
    run.create({**cfg.options(), "lung_method": lung_method}, {"path": "synthetic"}, "cpu")
    run.save_checkpoint({"model": model.state_dict(), "epoch": epoch, "spec": cfg.model_spec()}, BEST)
    return path
