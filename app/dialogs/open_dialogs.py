"""Questions asked while opening a study: which DICOM series, and where to keep its project folder."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QStandardPaths
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QFileDialog, QHBoxLayout, QLabel, QLineEdit, QListWidget,
                               QListWidgetItem, QPushButton, QVBoxLayout, QWidget)


def ask_study_path(parent, verb: str, folder: bool) -> Path | None:
    """A study chosen by the user (a file: NIfTI volume or a DICOM file standing for its series; or a folder:
    DICOM or slice images), or None. `verb`: "Open" or "Add"."""
    if folder:
        path = QFileDialog.getExistingDirectory(parent, f"{verb} a DICOM folder or a folder of slice images",
                                                str(Path.home()))
        return Path(path) if path else None
    path, _ = QFileDialog.getOpenFileName(parent, f"{verb} a NIfTI volume or a DICOM file of the series",
                                          str(Path.home()),
                                          "CT studies (*.nii *.nii.gz *.mha *.nrrd *.dcm);;All files (*)")
    if not path:
        return None
    p = Path(path)       # a DICOM file stands for its folder (the whole series)
    return p.parent if p.suffix.lower() == ".dcm" or not p.suffix else p


def user_data_dir() -> Path:
    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    return Path(base) if base else Path.home() / ".covidseg"


def default_project_folder(study_path: Path) -> Path:
    """Next to the study when that folder is writable, else in the user's data folder."""
    study_path = Path(study_path).absolute()
    stem = study_path.name
    for suffix in (".gz", ".nii", ".mha", ".nrrd"):
        stem = stem[: -len(suffix)] if stem.lower().endswith(suffix) else stem
    parent = study_path.parent
    candidate = parent / f"{stem}.covidseg"
    try:
        writable = parent.is_dir() and (candidate.exists() or _can_write(parent))
    except OSError:
        writable = False
    return candidate if writable else user_data_dir() / "projects" / f"{stem}.covidseg"


def _can_write(folder: Path) -> bool:
    import os
    return os.access(folder, os.W_OK)


class SeriesChooser(QDialog):
    """Pick one series of a DICOM folder that holds several (scouts and non-axial ones are marked)."""

    def __init__(self, folder: Path, series: list, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Choose a series")
        self.setObjectName("seriesChooser")
        self.list = QListWidget()
        best = 0
        for k, s in enumerate(series):
            note = []
            if s.is_localizer:
                note.append("scout/localizer")
            if s.orientation != "axial":
                note.append(s.orientation)
            text = (f"{s.description or '(no description)'} — {s.modality}, {s.n_files} images, "
                    f"{s.columns}x{s.rows}" + (f"  [{', '.join(note)}]" if note else ""))
            item = QListWidgetItem(text)
            item.setData(256, s.uid)
            self.list.addItem(item)
            if s.axial and not s.is_localizer and s.n_files > series[best].n_files:
                best = k
        self.list.setCurrentRow(best)
        self.list.itemDoubleClicked.connect(lambda _: self.accept())
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel(f"{folder} holds {len(series)} series. Which one should be opened?"))
        lay.addWidget(self.list)
        lay.addWidget(buttons)
        self.resize(640, 320)

    def series_uid(self) -> str | None:
        item = self.list.currentItem()
        return None if item is None else item.data(256)


class ProjectFolderDialog(QDialog):
    """Where to keep the project (labels, corrections, runs) of a study opened directly."""

    def __init__(self, study_path: Path, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Project folder")
        self.setObjectName("projectFolderDialog")
        default = default_project_folder(study_path)
        self.edit = QLineEdit(str(default))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        data_btn = QPushButton("Use my data folder")
        data_btn.clicked.connect(lambda: self.edit.setText(str(user_data_dir() / "projects" / default.name)))
        row = QHBoxLayout()
        row.addWidget(self.edit, 1)
        row.addWidget(browse)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        text = QLabel(f"Labels, corrections and training runs for<br><code>{study_path}</code><br>are kept in a "
                      "project folder. An existing project there is opened; otherwise a new one is made.")
        text.setWordWrap(True)
        lay.addWidget(text)
        lay.addLayout(row)
        lay.addWidget(data_btn)
        lay.addWidget(buttons)
        self.resize(620, self.sizeHint().height())

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Project folder", str(Path(self.edit.text()).parent))
        if path:
            self.edit.setText(path)

    def folder(self) -> Path:
        return Path(self.edit.text().strip()).expanduser()
