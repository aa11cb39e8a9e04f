"""Helpers for the GUI tests (a module of its own: `conftest` names clash between test folders)."""
import os
import time
from pathlib import Path

_DEBUG_DIR = __import__("tempfile").gettempdir()


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


_DUMP = open(os.path.join(_DEBUG_DIR, "covidseg-stall-dump.txt"), "w") if os.environ.get("DEBUG_STALL") else None


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
