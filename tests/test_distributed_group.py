"""covidseg_core/distributed.py's collective helpers in a real 2-process gloo group (torchrun on the CPU): what
each rank gets back, checked on every rank. The whole-job tests are in test_distributed.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from covidseg_core import distributed

ROOT = Path(__file__).resolve().parents[1]
needs_gloo = pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")

# every rank: its epoch loss and slice count differ; the logged loss must be the slice-weighted mean of all ranks
# (each rank writes its own file: two ranks printing to one pipe may interleave their lines)
SCRIPT = textwrap.dedent("""
    import json
    import pathlib
    import sys
    from covidseg_core import distributed

    with distributed.session("cpu"):
        r = distributed.rank()
        out = {"rank": r,
               "weighted": distributed.mean_over_ranks([0.2, 0.8][r], [3, 1][r]),
               "equal": distributed.mean_over_ranks([1.0, 2.0][r]),
               "gathered": distributed.gather_rows(5, lambda idx: (idx * 10,))[0].tolist()}
        pathlib.Path(sys.argv[1], f"rank{r}.json").write_text(json.dumps(out))
""")


def test_one_process_means_are_the_value_itself():
    assert not distributed.active()
    assert distributed.mean_over_ranks(0.37, 12) == 0.37


@needs_gloo
def test_every_rank_logs_the_same_slice_weighted_mean_loss(tmp_path):
    script = tmp_path / "ranks.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(script), str(tmp_path)], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [row["rank"] for row in rows] == [0, 1]
    for row in rows:
        assert row["weighted"] == pytest.approx((0.2 * 3 + 0.8 * 1) / 4)
        assert row["equal"] == pytest.approx(1.5)
        assert row["gathered"] == [0, 10, 20, 30, 40]
