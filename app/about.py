"""Help > Show the log file and Help > About: what the app runs on (versions, the training device)."""
from __future__ import annotations

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QMessageBox, QWidget

from .errors_ui import log_path
from .panel_sync import APP_TITLE


def show_log_file(parent: QWidget) -> None:
    path = log_path()
    if path is None:
        return
    QMessageBox.information(parent, "Log file", f"The log is written to:\n{path}")
    QDesktopServices.openUrl(QUrl.fromLocalFile(str(path.parent)))


def show_about(parent: QWidget, environment: dict | None, device_text: str) -> None:
    """`environment` comes from the device probe (torch is never imported on the GUI thread); until the probe
    has answered, the installed torch version is read from the package metadata."""
    from importlib.metadata import PackageNotFoundError, version

    from covidseg_core import __version__

    env = environment
    if env is None:
        try:
            env = {"torch": version("torch"), "cuda": "(still checking)"}
        except PackageNotFoundError:
            env = {"torch": "not installed", "cuda": "-"}
    QMessageBox.about(parent, f"About {APP_TITLE}",
                      f"<b>{APP_TITLE}</b> {__version__}<br>Weakly supervised segmentation of COVID-19 lung "
                      "infection on chest CT from slice labels, with attention fusion.<br><br>"
                      f"torch {env['torch']}, CUDA {env['cuda'] or 'none (CPU build)'}<br>"
                      f"Training device: {device_text}<br><br>"
                      "Not a medical device: every mask must be checked by a radiologist.")
