"""GUI tests run offscreen, with their own settings and data folders (never the user's)."""
import atexit
import os
import shutil
import tempfile

os.environ["QT_QPA_PLATFORM"] = "offscreen"          # before anything imports Qt
_HOME = tempfile.mkdtemp(prefix="covidseg-gui-tests-")
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
os.environ["XDG_DATA_HOME"] = os.path.join(_HOME, "data")
os.environ["XDG_CONFIG_HOME"] = os.path.join(_HOME, "config")
os.environ.setdefault("MALLOC_ARENA_MAX", "2")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings  # noqa: E402

from gui_helpers import open_study  # noqa: E402


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    from covidseg_core.demo import write_demo

    out = tmp_path_factory.mktemp("demo")
    write_demo(out)
    return out


@pytest.fixture(scope="session")
def small_demo_dir(tmp_path_factory) -> Path:
    """A short, small demo study: for tests whose core steps cost per slice (lung fields, training)."""
    from covidseg_core.demo import write_demo

    out = tmp_path_factory.mktemp("small-demo")
    write_demo(out, n_slices=8, size=96)
    return out


@pytest.fixture
def window(qtbot, qapp, tmp_path):
    from app.application import configure_qt_app
    from app.main_window import MainWindow
    from app.prefs import Prefs

    configure_qt_app(qapp)
    prefs = Prefs(QSettings(str(tmp_path / "prefs.ini"), QSettings.Format.IniFormat))
    w = MainWindow(prefs=prefs)
    w.ask_questions = False
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    yield w
    if w.jobs.busy:
        w.jobs.cancel()
        w.jobs.wait(30000)
    w.session.close_project()


@pytest.fixture
def demo_window(qtbot, window, demo_dir, tmp_path):
    open_study(qtbot, window, demo_dir / "volume" / "ct.nii.gz", tmp_path / "project")
    return window
