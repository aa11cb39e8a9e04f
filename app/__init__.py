"""CovidSeg Assist desktop app (PySide6 + pyqtgraph). It drives covidseg_core and adds no algorithm of its own.

`main(argv)` is the entry point of `python -m app [PATH]`, the `covidseg-gui` script and the desktop bundle.

Module map:
  application.py     QApplication set-up (logging, exception hook, icon), then the main window
  main_window.py     layout, menus, actions (tables in actions.py): wiring only
  panel_sync.py      which panels show again when the session changes
  controller.py      the flows: open, load, train, predict, measure, export; typed results into the session
  session.py         the state: open project and study, prediction, pseudo masks, attention maps, lung fields
  tasks.py           the jobs the controller runs (generators over covidseg_core), and their result types
  jobs.py            the one place threads start: a job on a worker thread, its events relayed as Qt signals
  slice_view.py      the CT view with overlays and the brush; panels/ and dialogs/ the rest of the window
  errors_ui.py, prefs.py, icons.py, image_utils.py   error dialogs and the log, preferences, icons, thumbnails
"""
from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from .application import run

    return run(argv)
