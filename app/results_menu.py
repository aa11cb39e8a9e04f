"""The main window's File menu for results: Export > NIfTI / DICOM SEG (the export dialog), Report (a PDF) and
Open DICOM SEG as mask. Wiring only: the work runs as jobs through the controller (controller.py, tasks.py)."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QFileDialog, QMessageBox

from covidseg_core.errors import CovidSegError, ProjectError

from .dialogs.export_dialog import ExportDialog
from .errors_ui import show_error


def show_export_dialog(window, fmt: str = "nifti") -> ExportDialog | None:
    """File > Export > NIfTI / DICOM SEG: the dialog, once the study has a mask (and, for a SEG, came from DICOM).
    With several studies in the project: every study into one folder (export_all_dialog)."""
    s = window.session
    if not s.has_study:
        show_error(window, ProjectError("No study is open.", "Open a study and train (or predict) first."))
        return None
    if len(s.project.sources) > 1:
        return export_all_dialog(window, fmt)
    if not s.has_mask():
        show_error(window, ProjectError("There is no mask to export yet.",
                                        "Press Train (or Predict with the last run), or draw corrections."))
        return None
    if fmt == "dicom-seg":
        from covidseg_core.results.export import seg_needs_dicom

        try:
            seg_needs_dicom(s.project.source(s.source_id))
        except CovidSegError as exc:
            show_error(window, exc)
            return None
    suffix = ".dcm" if fmt == "dicom-seg" else ".nii.gz"
    default = s.project.folder / "exports" / f"{Path(s.study.source).name.split('.')[0]}_infection{suffix}"
    dlg = ExportDialog(default, s.prediction is not None, len(s.corrected_indices()), window, fmt=fmt)
    dlg.export_requested.connect(lambda which, path, overwrite: window.controller.export(which, path, overwrite, fmt))
    return _show(window, dlg)


def export_all_dialog(window, fmt: str) -> ExportDialog | None:
    """Every study of the project into one folder, one mask each, named from the study as the core's folder
    export names them (folder_export_plan); the studies a SEG cannot be made for are named in the dialog, and a
    study with nothing to export yet is named when the export is done."""
    from covidseg_core.results.export import folder_export_plan

    from .tasks import last_usable_run

    p = window.session.project
    try:
        names, skipped = folder_export_plan(p, fmt)
    except CovidSegError as exc:
        show_error(window, exc)
        return None
    n_corrected = sum(len(p.corrections(sid)) for sid in names)
    has_prediction = window.session.prediction is not None or last_usable_run(p) is not None
    dlg = ExportDialog(p.folder / "exports", has_prediction, n_corrected, window, fmt=fmt, names=list(names.values()))
    if skipped:
        dlg.result.setText("<br>".join(f"{s['source']} not exported: {s['reason']}" for s in skipped))
    ids = list(names)          # the studies listed now (one added while the dialog is open is not written)
    dlg.export_requested.connect(lambda which, folder, overwrite: window.controller.export_all(which, folder,
                                                                                             overwrite, fmt, ids))
    return _show(window, dlg)


def _show(window, dlg: ExportDialog) -> ExportDialog:
    window.export_dialog = dlg
    dlg.show()
    return dlg


def save_report(window, path: str | Path | None = None) -> bool:
    """File > Report: the one-page PDF of the open study; an existing file is replaced only when confirmed."""
    s = window.session
    if not s.has_study or not s.has_mask():
        show_error(window, ProjectError("There is no mask to report on yet.",
                                        "Press Train (or Predict with the last run), or draw corrections."))
        return False
    if path is None:
        default = s.project.folder / "exports" / f"{Path(s.study.source).name.split('.')[0]}_report.pdf"
        path, _ = QFileDialog.getSaveFileName(window, "Save the report", str(default), "PDF (*.pdf)")
        if not path:
            return False
    path = Path(path)
    if path.suffix.lower() != ".pdf":
        path = path.with_name(path.name + ".pdf")
    overwrite = path.exists()
    if overwrite and QMessageBox.question(window, "Replace the existing report?",
                                          f"{path} already exists. Replace it?") != QMessageBox.StandardButton.Yes:
        return False
    window.controller.report(path, overwrite)
    return True


def choose_seg(window, path: str | Path | None = None) -> None:
    """File > Open DICOM SEG as mask: matched to the project's study by the UIDs it references."""
    if window.session.project is None:
        show_error(window, ProjectError("No project is open.", "Open the study the SEG was made for first."))
        return
    if path is None:
        path, _ = QFileDialog.getOpenFileName(window, "Open a DICOM SEG", str(window.session.project.folder),
                                              "DICOM SEG (*.dcm);;All files (*)")
        if not path:
            return
    window.controller.import_seg(path)
