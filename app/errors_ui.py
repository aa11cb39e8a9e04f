"""How the app tells the user about errors: one dialog for every CovidSegError, and a log file for the rest.

A CovidSegError's text already says what is wrong and what to do, so it is shown as it is. Anything else is a
bug: its traceback goes to the log file and the dialog says where that file is, so it can be sent to us.
"""
from __future__ import annotations

import logging
import sys
import tempfile
import traceback
from logging.handlers import RotatingFileHandler
from pathlib import Path

from PySide6.QtCore import QStandardPaths
from PySide6.QtWidgets import QApplication, QMessageBox, QWidget

from covidseg_core.errors import Cancelled, CovidSegError

log = logging.getLogger(__name__)

_log_path: Path | None = None


def log_dir() -> Path:
    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    folder = Path(base) / "logs" if base else Path(tempfile.gettempdir()) / "covidseg-logs"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:               # read-only home: fall back to the temp folder
        folder = Path(tempfile.gettempdir()) / "covidseg-logs"
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def setup_logging(level: int = logging.INFO, path: Path | None = None) -> Path:
    """Log to a rotating file (and keep warnings on stderr). Returns the log file path."""
    global _log_path
    path = path or (log_dir() / "covidseg-app.log")
    root = logging.getLogger()
    if not any(isinstance(h, RotatingFileHandler) and Path(h.baseFilename) == path for h in root.handlers):
        fh = RotatingFileHandler(path, maxBytes=2_000_000, backupCount=3, encoding="utf-8")
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"))
        root.addHandler(fh)
    root.setLevel(min(root.level or level, level))
    _log_path = path
    return path


def log_path() -> Path | None:
    return _log_path


def error_text(exc: BaseException) -> tuple[str, str]:
    """(title, text) for an exception: a user message for CovidSegError, the log path for anything else."""
    if isinstance(exc, Cancelled):
        return "Cancelled", str(exc)
    if isinstance(exc, CovidSegError):
        return "CovidSeg Assist", str(exc)
    where = f"\n\nDetails were written to:\n{_log_path}" if _log_path else ""
    return ("Unexpected error",
            f"Something went wrong that should not have: {type(exc).__name__}: {exc}.{where}\n\n"
            "Your labels and corrections are saved. Please send the log file to the maintainers.")


def show_error(parent: QWidget | None, exc: BaseException) -> None:
    """Show any exception the same way. Unexpected ones are logged with their traceback first."""
    if not isinstance(exc, CovidSegError):
        log.error("unexpected error", exc_info=(type(exc), exc, exc.__traceback__))
    title, text = error_text(exc)
    box = QMessageBox(QMessageBox.Icon.Warning if isinstance(exc, CovidSegError) else QMessageBox.Icon.Critical,
                      title, text, QMessageBox.StandardButton.Ok, parent)
    box.setObjectName("errorDialog")
    box.setTextInteractionFlags(box.textInteractionFlags())
    if QApplication.platformName() == "offscreen":
        box.show()            # tests and screenshots: never block on a modal loop nobody can click
    else:
        box.exec()


def show_warnings(parent: QWidget | None, title: str, intro: str, warnings: list[str]) -> QMessageBox:
    """Things the user should know but that did not stop anything (e.g. gaps between DICOM slices). Non-modal."""
    box = QMessageBox(QMessageBox.Icon.Information, title, intro, QMessageBox.StandardButton.Ok, parent)
    box.setObjectName("warningsDialog")
    box.setInformativeText("\n\n".join(f"• {w}" for w in warnings))
    box.setModal(False)
    box.show()
    return box


def install_excepthook() -> None:
    """Uncaught exceptions in slots: log them and show the dialog instead of letting Qt abort."""
    def hook(exc_type, exc, tb):
        if issubclass(exc_type, KeyboardInterrupt):
            sys.__excepthook__(exc_type, exc, tb)
            return
        log.error("uncaught exception:\n%s", "".join(traceback.format_exception(exc_type, exc, tb)))
        if QApplication.instance() is not None:
            try:
                show_error(QApplication.activeWindow(), exc)
            except RuntimeError:          # the dialog itself failed: the log still has everything
                log.exception("could not show the error dialog")
    sys.excepthook = hook
