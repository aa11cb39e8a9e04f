"""The studies' files, as the user hands them over. Drag and drop onto the main window: files and folders dropped
(a DICOM folder or file, a NIfTI volume, a folder of slice images) become studies of the project by the same path
as File > Add study (controller.add_studies: read on the job thread, the same study twice said and not added, a
path that is no study gets its message); a project folder dropped on its own is opened. Locate moved study: a study
whose files moved is pointed at their new place (controller.relocate_study). Wiring only: no flow logic here."""
from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QEvent, QMimeData, QObject
from PySide6.QtWidgets import QWidget

from covidseg_core.errors import InputError
from covidseg_core.project.store import PROJECT_FILE

log = logging.getLogger(__name__)


def dropped_paths(mime: QMimeData | None) -> list[Path]:
    """The local files and folders of a drag (web links and other data are not studies)."""
    if mime is None or not mime.hasUrls():
        return []
    return [Path(u.toLocalFile()) for u in mime.urls() if u.isLocalFile() and u.toLocalFile()]


class StudyDrops(QObject):
    """Makes the whole window a drop target: the window takes drags of local paths, and its child widgets that
    would take drops of their own (the graphics views) leave them to it, so a drop lands anywhere in it."""

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        for child in window.findChildren(QWidget):
            if child.acceptDrops():
                child.setAcceptDrops(False)
        window.setAcceptDrops(True)
        window.installEventFilter(self)

    def eventFilter(self, obj, ev) -> bool:
        kind = ev.type()
        if kind in (QEvent.Type.DragEnter, QEvent.Type.DragMove):
            if dropped_paths(ev.mimeData()):
                ev.acceptProposedAction()
            else:
                ev.ignore()
            return True
        if kind == QEvent.Type.Drop:
            paths = dropped_paths(ev.mimeData())
            if not paths:
                ev.ignore()
                return True
            ev.acceptProposedAction()
            self.drop(paths)
            return True
        return False

    def drop(self, paths: list[Path]) -> None:
        log.info("dropped: %s", ", ".join(map(str, paths)))
        projects = [p for p in paths if (p / PROJECT_FILE).is_file()]
        if not projects:
            self.window.controller.add_studies(paths)
        elif len(paths) == 1:
            self.window.open_path(projects[0])
        else:
            self.window.show_error(InputError(f"{projects[0].name} is a project folder, dropped together with "
                                              "other items.", "Drop a project folder on its own to open it, or "
                                              "drop studies (DICOM folders, NIfTI files, image folders) to add them."))


def locate_study(window, path: str | Path | None = None) -> None:
    """File > Locate moved study…: the missing study selected in the Studies list (or the only missing one), and
    its new place (asked for unless given: a file for a NIfTI volume, a folder for DICOM or slice images)."""
    from .dialogs.open_dialogs import ask_study_path

    s = window.session
    missing = [r["id"] for r in s.study_rows() if not r["present"]]
    selected = window.study_panel.selected_id()
    source_id = selected if selected in missing else (missing[0] if len(missing) == 1 else None)
    if not missing:
        window.show_status("No study of the project is missing.", 5000)
        return
    if source_id is None:
        window.show_error(InputError(f"{len(missing)} studies are missing; which one moved?",
                                     "Click the missing study in the Studies list, then Locate moved study…."))
        return
    if path is None:
        path = ask_study_path(window, "Locate", folder=s.project.source(source_id).get("kind") != "nifti")
        if not path:
            return
    window.controller.relocate_study(source_id, path)
