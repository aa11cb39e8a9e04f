"""GUI tests run offscreen, with their own settings and data folders (never the user's)."""
import os
import tempfile

os.environ["QT_QPA_PLATFORM"] = "offscreen"          # before anything imports Qt
_HOME = tempfile.mkdtemp(prefix="covidseg-gui-tests-")
os.environ["XDG_DATA_HOME"] = os.path.join(_HOME, "data")
os.environ["XDG_CONFIG_HOME"] = os.path.join(_HOME, "config")
os.environ.setdefault("MALLOC_ARENA_MAX", "2")

import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings  # noqa: E402


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


def wait_started_up(qtbot, w, timeout=60000):
    """Start-up is over when the device probe (which also warms up torch's lazy imports) has reported."""
    qtbot.waitUntil(lambda: w.device_label.text().startswith("Device: ") and "…" not in w.device_label.text(),
                    timeout=timeout)


def wait_idle(qtbot, w, timeout=30000):
    """Wait until no job runs (and its results were handled)."""
    qtbot.waitUntil(lambda: not w.jobs.busy, timeout=timeout)
    qtbot.wait(20)


def open_study(qtbot, w, path, project_dir):
    w.open_path(path, project_folder=project_dir)
    qtbot.waitUntil(lambda: w.session.has_study and not w.jobs.busy, timeout=30000)
    qtbot.wait(20)


@pytest.fixture
def demo_window(qtbot, window, demo_dir, tmp_path):
    open_study(qtbot, window, demo_dir / "volume" / "ct.nii.gz", tmp_path / "project")
    return window


_DUMP = open(os.path.join(_HOME, "stall-dump.txt"), "w") if os.environ.get("DEBUG_STALL") else None


def max_gap_while(qtbot, predicate, timeout_s=60.0, tick_ms=10):
    """Run the event loop until predicate() is false; return the largest gap between 10 ms timer ticks."""
    from PySide6.QtCore import QTimer

    stamps = []
    if os.environ.get("DEBUG_STALL"):
        import collections, sys, threading, traceback
        main_id = threading.get_ident()
        samples = collections.Counter()
        last = [time.perf_counter()]
        stop = [False]

        def watch():
            while not stop[0]:
                time.sleep(0.01)
                if time.perf_counter() - last[0] > 0.06:
                    fr = sys._current_frames()
                    txt = []
                    for k, v in fr.items():
                        if k == threading.get_ident():
                            continue
                        st = traceback.extract_stack(v)[-3:]
                        txt.append(("MAIN " if k == main_id else "") + " | ".join(
                            f"{Path(x.filename).name}:{x.name}:{x.lineno}" for x in st))
                    samples[" ## ".join(txt)] += 1
        threading.Thread(target=watch, daemon=True).start()
    timer = QTimer()
    timer.setInterval(tick_ms)
    def tick():
        stamps.append(time.perf_counter())
        if os.environ.get("DEBUG_STALL"):
            last[0] = stamps[-1]
            import faulthandler
            faulthandler.cancel_dump_traceback_later()
            faulthandler.dump_traceback_later(0.08, file=_DUMP)
    timer.timeout.connect(tick)
    timer.start()
    end = time.perf_counter() + timeout_s
    while predicate() and time.perf_counter() < end:
        qtbot.wait(5)
    timer.stop()
    if os.environ.get("DEBUG_STALL"):
        stop[0] = True
        import faulthandler
        faulthandler.cancel_dump_traceback_later()
        print("DUMPFILE", _DUMP.name)
        for k, v in samples.most_common(12):
            print("STALL", v, k)
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return (max(gaps) if gaps else 0.0), len(stamps)
