"""File > Export > NIfTI or DICOM SEG: which mask (predicted, or with the user's corrections), where, and the
volume figures next to it. With several studies in the project it asks once for a folder and writes one mask per
study there, named from the study (`names`, the core's folder export plan). The export itself runs as a job; this
dialog shows its progress and the files written."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel,
                               QLineEdit, QMessageBox, QProgressBar, QPushButton, QRadioButton, QVBoxLayout,
                               QWidget)

from covidseg_core.results.export import export_files


class ExportDialog(QDialog):
    export_requested = Signal(str, str, bool)    # "corrected" | "predicted", path (a folder: every study), replace

    def __init__(self, default_path: Path, has_prediction: bool, n_corrected: int, parent: QWidget | None = None,
                 fmt: str = "nifti", names: list[str] | None = None):
        super().__init__(parent)
        self.fmt = fmt
        self.seg = fmt == "dicom-seg"
        self.names = names            # every study into a folder: the file names it writes there
        what = "DICOM SEG" if self.seg else "NIfTI"
        self.setWindowTitle(f"Export every study's mask as {what}" if names else f"Export masks as {what}")
        self.setObjectName("exportDialog")
        self.corrected = QRadioButton(f"Prediction with my corrections ({n_corrected} corrected slice"
                                      f"{'s' if n_corrected != 1 else ''})")
        self.predicted = QRadioButton("Prediction only")
        self.corrected.setChecked(True)
        self.predicted.setEnabled(has_prediction)
        self.path = QLineEdit(str(default_path))
        self.path.setObjectName("exportPath")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.path, 1)
        row.addWidget(browse)
        self.quant = QLabel("The infected volume (mL, % of lung, per slice and for the study) is written beside "
                            "it as <code>.quant.csv</code> and <code>.quant.json</code>." if names is None else
                            f"One mask per study ({len(names)}), named from the study: "
                            + ", ".join(f"<code>{n}</code>" for n in names)
                            + "; the infected volume of each beside it (<code>.quant.csv</code>, "
                            "<code>.quant.json</code>).")
        self.quant.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.result = QLabel(
            "A binary DICOM Segmentation: a frame for each slice with infection, each referencing its source "
            "image; patient and study copied from the series, new Series and SOP Instance UIDs." if self.seg else
            "The mask is written in the geometry of the source study (spacing, origin, direction), so it lines up "
            "in any viewer.")
        self.result.setObjectName("exportResult")
        self.result.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Mask:", self.corrected)
        form.addRow("", self.predicted)
        form.addRow("File:" if names is None else "Folder:", row)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.export_button = self.buttons.addButton("Export", QDialogButtonBox.ButtonRole.AcceptRole)
        self.export_button.setObjectName("exportButton")
        self.buttons.accepted.connect(self._request)
        self.buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.quant)
        lay.addWidget(self.progress)
        lay.addWidget(self.result)
        lay.addWidget(self.buttons)
        self.resize(620, self.sizeHint().height())

    def _browse(self) -> None:
        if self.names is not None:
            path = QFileDialog.getExistingDirectory(self, "Export every study's mask into", self.path.text())
            if path:
                self.path.setText(path)
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export mask", self.path.text(),
                                              "DICOM SEG (*.dcm)" if self.seg else "NIfTI (*.nii.gz *.nii)")
        if path:
            self.path.setText(path)

    def what(self) -> str:
        return "corrected" if self.corrected.isChecked() else "predicted"

    def _request(self) -> None:
        text = self.path.text().strip()
        suffix = ".dcm" if self.seg else ".nii.gz"
        if self.names is None and not text.lower().endswith((".dcm",) if self.seg else (".nii.gz", ".nii")):
            text += suffix
            self.path.setText(text)
        existing = [p for p in self.targets(text) if p.exists()]
        if existing and not self.confirm_replace(existing):
            return
        self.export_button.setEnabled(False)
        self.progress.setRange(0, 0)
        self.result.setText("Exporting…")
        self.export_requested.emit(self.what(), text, bool(existing))

    def targets(self, text: str) -> list[Path]:
        """The files the export writes: the mask and its quantification, for each study into a folder."""
        if self.names is None:
            return export_files(text)
        return [p for name in self.names for p in export_files(Path(text) / name)]

    def confirm_replace(self, existing: list[Path]) -> bool:
        """An existing export is replaced only when the user says so."""
        names = "\n".join(p.name for p in existing)
        answer = QMessageBox.question(self, "Replace the existing files?",
                                      f"These files already exist in {existing[0].parent}:\n{names}\n\nReplace them?")
        return answer == QMessageBox.StandardButton.Yes

    def set_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)

    def set_done(self, paths: list[str], notes: list[str] = ()) -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self.export_button.setEnabled(True)
        self.result.setText("Written:<br>" + "<br>".join(f"<code>{p}</code>" for p in paths)
                            + "".join(f"<br><span style='color:#e0a040'>{n}</span>" for n in notes))

    def set_failed(self, text: str) -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.export_button.setEnabled(True)
        self.result.setText(f"<span style='color:#ff6b6b'>Not exported:</span> {text}")
