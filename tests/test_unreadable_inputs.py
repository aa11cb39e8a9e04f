"""Inputs the user may not read: a clear one-line error, not a PermissionError traceback nor "does not exist"
(issue 15, items 7 and 9). Tests run as root, who reads everything, so the denial is simulated."""
from __future__ import annotations

import builtins
import pathlib

from covidseg_core import cli
from covidseg_core.demo import write_demo


def _one_line(capsys, rc):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("covidseg: error:"), err
    return lines[0]


def test_an_unreadable_input_folder_is_one_clear_line(tmp_path, monkeypatch, capsys):
    write_demo(tmp_path / "study", n_slices=4, size=32)
    locked = tmp_path / "study" / "images"
    real_iterdir = pathlib.Path.iterdir

    def iterdir(self):
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)
    monkeypatch.setattr(pathlib.Path, "iterdir", iterdir)
    line = _one_line(capsys, cli.main(["-q", "info", str(locked)]))
    assert f"Cannot read the folder {locked}: Permission denied" in line


def test_an_unreadable_nifti_is_not_called_missing(tmp_path, monkeypatch, capsys):
    write_demo(tmp_path / "study", n_slices=4, size=32)
    ct = tmp_path / "study" / "volume" / "ct.nii.gz"
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        if str(file) == str(ct):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)
    monkeypatch.setattr(builtins, "open", guarded_open)
    line = _one_line(capsys, cli.main(["-q", "info", str(ct)]))
    assert f"Cannot read {ct}: Permission denied" in line and "does not exist" not in line


def test_gui_with_a_broken_pyside6_says_how_to_install_the_gui_extras(tmp_path):
    """Issue 15, item 8: a PySide6 left half-installed (its package there, shiboken6 gone) is "not installed"."""
    import os
    import subprocess
    import sys

    fake = tmp_path / "site" / "PySide6"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'shiboken6'\", name='shiboken6')\n")
    root = pathlib.Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake.parent), str(root)]),
           "QT_QPA_PLATFORM": "offscreen"}
    res = subprocess.run([sys.executable, "-m", "covidseg_core.cli", "gui"], capture_output=True, text=True,
                         env=env, cwd=root, timeout=900)
    assert res.returncode == 2, res.stderr
    assert "PySide6 is not installed" in res.stderr and "pip install 'covidseg-assist[gui]'" in res.stderr
    assert "Traceback" not in res.stderr
