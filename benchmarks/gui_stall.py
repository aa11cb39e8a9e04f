"""How long the app's GUI thread stalls while a training runs (issue 14, item 4): the measurement the tests no
longer make (a test that asserts a wall-clock time fails on a busy machine).

Opens the demo study in the offscreen app (a fresh project in --out), presses Train with the project's default
settings (or the --set overrides), and while the job runs a 10 ms QTimer on the GUI thread stamps each tick. A
gap between two ticks longer than the interval is time the GUI thread could not handle events: the table prints
the distribution of the gaps (median, 99th percentile, worst) and the slowest moments, with the torch thread
count the job used and the load average (numbers from a shared machine only compare within one run).

  QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/gui_stall.py --out out/gui_stall
  QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/gui_stall.py --out out/gui_stall --set budget_minutes=1
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TICK_MS = 10


def parse_value(text: str):
    """--set values: JSON where it parses (numbers, null, true), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def stall_table(gaps_s: list[float], tick_ms: int = TICK_MS) -> str:
    """Markdown table of the tick gaps in ms: median, 99th percentile, worst, and how many exceed 50/100 ms."""
    import numpy as np

    if not gaps_s:
        return "no ticks recorded"
    g = np.asarray(gaps_s) * 1000.0
    rows = [("ticks", f"{len(g)}"), ("median gap ms", f"{np.median(g):.1f}"),
            ("99th percentile ms", f"{np.percentile(g, 99):.1f}"), ("worst ms", f"{g.max():.1f}"),
            ("gaps > 50 ms", f"{int((g > 50).sum())}"), ("gaps > 100 ms", f"{int((g > 100).sum())}")]
    head = [f"| GUI thread, {tick_ms} ms timer | value |", "|---|---:|"]
    return "\n".join(head + [f"| {a} | {b} |" for a, b in rows])


class SlowTurns(logging.Handler):
    """Collects the controller's "GUI update ... took N ms" lines (app/controller.py: over 50 ms), with the
    time they were logged: which update a long gap was."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.seen: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((time.perf_counter(), record.getMessage()))


class StallWatch(threading.Thread):
    """When the GUI thread's timer is STACK_AFTER_S late, records once per stall where the GUI thread is (its
    innermost frames in this repository's code): what a long gap was spent on."""
    STACK_AFTER_S = 0.15

    def __init__(self, gui_ident: int, stamps: list[float]):
        super().__init__(daemon=True)
        self.gui, self.stamps, self.stacks = gui_ident, stamps, []
        self.running = True

    def run(self) -> None:
        import traceback

        caught = None
        while self.running:
            time.sleep(0.02)
            last = self.stamps[-1] if self.stamps else None
            if last is None or last == caught or time.perf_counter() - last < self.STACK_AFTER_S:
                continue
            caught = last
            frame = sys._current_frames().get(self.gui)
            ours = [f for f in traceback.extract_stack(frame) if str(ROOT) in f.filename and ".venv" not in f.filename]
            self.stacks.append((last, [f"{Path(f.filename).relative_to(ROOT)}:{f.lineno} {f.name}" for f in ours[-4:]]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="The GUI thread's stall distribution while the app trains on the demo.")
    p.add_argument("--out", type=Path, default=None, help="scratch folder (demo study, project); default: a temp dir")
    p.add_argument("--slices", type=int, default=32, help="demo slices (the app's demo: 32)")
    p.add_argument("--size", type=int, default=128, help="demo slice size (the app's demo: 128)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a project setting for this training (e.g. budget_minutes=1); default: the app's defaults")
    p.add_argument("--timeout-min", type=float, default=60.0, help="give up after this long")
    args = p.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="covidseg-gui-stall-"))
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("XDG_DATA_HOME", str(out / "xdg-data"))       # never the user's settings or data
    os.environ.setdefault("XDG_CONFIG_HOME", str(out / "xdg-config"))

    from PySide6.QtCore import QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from app.application import configure_qt_app
    from app.main_window import MainWindow
    from app.prefs import Prefs
    from covidseg_core.demo import write_demo

    study = out / f"demo_{args.slices}x{args.size}"
    if not (study / "volume" / "ct.nii.gz").is_file():
        write_demo(study, n_slices=args.slices, size=args.size)
    project = out / "project"
    shutil.rmtree(project, ignore_errors=True)          # this script's own scratch project: a fresh one per run

    slow = SlowTurns()
    controller_log = logging.getLogger("app.controller")
    controller_log.setLevel(logging.INFO)
    controller_log.addHandler(slow)
    app = QApplication.instance() or QApplication([sys.argv[0]])
    configure_qt_app(app)
    w = MainWindow(prefs=Prefs(QSettings(str(out / "prefs.ini"), QSettings.Format.IniFormat)))
    w.ask_questions = False
    w.show()

    def pump_until(cond, timeout_s):
        end = time.monotonic() + timeout_s
        while not cond():
            if time.monotonic() > end:
                raise SystemExit(f"timed out after {timeout_s:.0f} s")
            app.processEvents()
            time.sleep(0.005)

    pump_until(lambda: w.device_label.text().startswith("Device: ") and "…" not in w.device_label.text(), 600)
    w.open_path(study / "volume" / "ct.nii.gz", project_folder=project)
    pump_until(lambda: w.session.has_study and not w.jobs.busy, 600)
    settings = {k: parse_value(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    if settings:
        w.session.project.update_settings(**settings)
    w.view.set_slice(w.session.study.n_slices // 2)

    job_threads = []
    import torch
    from torch.nn.modules.module import register_module_forward_hook
    gui = threading.get_ident()
    seen = set()

    def hook(module, inputs, output):
        t = threading.get_ident()
        if t not in seen:
            seen.add(t)
            job_threads.append((t == gui, torch.get_num_threads()))
    handle = register_module_forward_hook(hook)

    stamps: list[float] = []
    timer = QTimer()
    timer.setInterval(TICK_MS)
    timer.timeout.connect(lambda: stamps.append(time.perf_counter()))
    collections: list[tuple[float, float, int, int]] = []      # (start, seconds, generation, objects collected)
    gc_started = {}

    def on_gc(phase, info):
        if phase == "start":
            gc_started["at"] = time.perf_counter()
        elif "at" in gc_started and time.perf_counter() - gc_started["at"] > 0.05:
            collections.append((gc_started["at"], time.perf_counter() - gc_started["at"], info["generation"],
                                info["collected"]))
    gc.callbacks.append(on_gc)
    watch = StallWatch(gui, stamps)
    watch.start()
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    w.actions_by_name["train"].trigger()
    timer.start()
    # run the event loop the way the app does (app.exec), stopping once the job ended
    stop = QTimer()
    stop.setInterval(50)
    stop.timeout.connect(lambda: (not w.jobs.busy) and app.quit())
    stop.start()
    deadline = QTimer()
    deadline.setSingleShot(True)
    deadline.timeout.connect(app.quit)
    deadline.start(int(args.timeout_min * 60_000))
    app.exec()
    timer.stop()
    stop.stop()
    seconds = time.perf_counter() - t0
    handle.remove()
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    worst = sorted(range(len(gaps)), key=lambda i: -gaps[i])[:5]
    status = w.training_panel.status.text()
    print(f"\ntraining on the demo ({args.slices}x{args.size}), settings: {settings or 'the defaults'}; "
          f"{seconds:.1f} s wall; status: {status!r}")
    print(f"cores {os.cpu_count()}; forwards ran on: "
          + ", ".join(f"{'GUI' if g else 'job'} thread with {n} torch threads" for g, n in job_threads)
          + f"; load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f}\n")
    print(stall_table(gaps))
    if worst:
        print("\nworst gaps at (s after Train): "
              + ", ".join(f"{stamps[i] - t0:.1f} s: {gaps[i] * 1000:.0f} ms" for i in sorted(worst)))
    watch.running = False
    gc.callbacks.remove(on_gc)
    for at, secs, gen, n in collections:
        print(f"garbage collection (generation {gen}, {n} objects freed) at {at - t0:.1f} s took {secs * 1000:.0f} ms")
    for at, frames in watch.stacks:
        print(f"GUI thread late at {at - t0:.1f} s, in: " + " <- ".join(reversed(frames)))
    if slow.seen:
        print("slow GUI-thread updates (s after Train): "
              + ", ".join(f"{at - t0:.1f} s: {text}" for at, text in slow.seen))
    if w.jobs.busy:
        w.jobs.cancel()
        w.jobs.wait(60000)
    w.session.close_project()
    return 0 if gaps else 1


if __name__ == "__main__":
    sys.exit(main())
