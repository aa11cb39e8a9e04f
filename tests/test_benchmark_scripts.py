"""The benchmark scripts are not run by the suite (too slow), but they must at least start."""
import pathlib
import subprocess
import sys

import pytest

BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


# _name.py files are modules the scripts share, not scripts
@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.py") if not p.name.startswith("_")))
def test_benchmark_script_parses_its_options(script):
    # a liveness bound, not a speed bound: some scripts import torch and the whole core before parsing, which
    # took over 120 s on a 2-core machine busy with other jobs
    res = subprocess.run([sys.executable, str(BENCH / script), "--help"], capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "usage" in res.stdout.lower()
