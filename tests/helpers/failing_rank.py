"""`torchrun ... tests/helpers/failing_rank.py train ...`: the `covidseg` command, except that rank 1 fails at the
second segmenter step of epoch 2 (by then rank 0 has checkpointed epoch 1: rank 1 could not have reached that step
without it). Used only by tests/test_distributed.py, to see a failing rank end the job and the run resume."""
import os
import sys

from covidseg_core.cli import main
from covidseg_core.errors import TrainingError
from covidseg_core.train_step import TrainStep

if os.environ.get("RANK") == "1":
    real_step = TrainStep.__call__
    seen = {"n": 0}

    def failing_step(self, x, y, *, rng=None, where=""):
        if self.what == "segmenter" and where == "at epoch 2":
            seen["n"] += 1
            if seen["n"] == 2:
                raise TrainingError("forced failure of rank 1 (test)")
        return real_step(self, x, y, rng=rng, where=where)

    TrainStep.__call__ = failing_step

if __name__ == "__main__":
    sys.exit(main())
