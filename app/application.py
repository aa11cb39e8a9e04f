"""QApplication set-up: logging to a file, the exception hook, the icon, then the main window."""
from __future__ import annotations

import argparse
import logging
import sys

log = logging.getLogger(__name__)

APP_NAME = "CovidSeg Assist"
ORG_NAME = "CovidSeg"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="covidseg gui", description=f"{APP_NAME} desktop app")
    p.add_argument("path", nargs="?", default=None,
                   help="a project folder, or a study (DICOM folder, NIfTI file, image folder) to open")
    p.add_argument("--demo", action="store_true", help="open the demo study")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    return p.parse_args(argv)


def configure_qt_app(app) -> None:
    """Names (QSettings and the log folder depend on them), icon and pyqtgraph defaults. Safe to call twice."""
    import pyqtgraph as pg

    from .icons import app_icon

    app.setApplicationName(APP_NAME)
    app.setOrganizationName(ORG_NAME)
    app.setWindowIcon(app_icon())
    app.setDesktopFileName("covidseg-assist")   # matches packaging/linux/covidseg-assist.desktop (Wayland icons)
    # arrays are (y, x) like the core's slices; no antialiasing cost on big images
    # no antialiasing: the plots repaint while a job runs, and antialiased axes cost the GUI thread most of its time
    pg.setConfigOptions(imageAxisOrder="row-major", antialias=False, background="k", foreground="w")


def run(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from PySide6.QtWidgets import QApplication

    from .errors_ui import install_excepthook, setup_logging

    app = QApplication.instance() or QApplication([sys.argv[0]])
    configure_qt_app(app)
    path = setup_logging(logging.DEBUG if args.verbose else logging.INFO)
    log.info("starting %s (log: %s)", APP_NAME, path)
    install_excepthook()

    from .main_window import MainWindow

    window = MainWindow()
    window.show()
    if args.demo:
        window.open_demo()
    elif args.path:
        window.open_path(args.path)
    code = int(app.exec())
    from PySide6.QtCore import QThreadPool
    QThreadPool.globalInstance().waitForDone(10000)     # a start-up probe may still be importing torch
    return code
