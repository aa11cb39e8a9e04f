"""`covidseg predict` prints each warning about the study once (issue 15, item 13)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from synthetic_dicom import write_synthetic_series
from untrained_run import make_untrained_run


def test_each_warning_is_printed_once(tmp_path):
    paths = write_synthetic_series(tmp_path / "series", 6, series_uid="1.2.3", step=2.0, shape=(32, 32),
                                   shuffle_names=False)
    paths[3].unlink()                                   # a gap: one warning
    (tmp_path / "series" / "notes.bin").write_bytes(b"\x00" * 200)   # a non-DICOM file: another
    run = make_untrained_run(tmp_path / "run")
    # a child process: pytest's own log capture would hide the duplicate a user sees
    root = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, "-m", "covidseg_core.cli", "predict", "--run", str(run), "--input",
                          str(tmp_path / "series"), "--out", str(tmp_path / "o")], capture_output=True, text=True,
                         cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, timeout=900)
    err = res.stderr
    assert res.returncode == 0, err
    assert err.count("gap(s) in the slice positions") == 1, err
    assert err.count("non-DICOM file") == 1, err
