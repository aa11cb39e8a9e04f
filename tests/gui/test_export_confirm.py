"""The export dialog replaces existing files only after the user confirms (issue 15, item 1)."""
from __future__ import annotations

from PySide6.QtWidgets import QMessageBox

from app.dialogs.export_dialog import ExportDialog


def _dialog(qtbot, path):
    dlg = ExportDialog(path, True, 0)
    qtbot.addWidget(dlg)
    requests = []
    dlg.export_requested.connect(lambda which, p, overwrite: requests.append((p, overwrite)))
    return dlg, requests


def test_a_new_export_file_is_written_without_asking(qtbot, tmp_path, monkeypatch):
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: (_ for _ in ()).throw(AssertionError("asked")))
    dlg, requests = _dialog(qtbot, tmp_path / "new.nii.gz")
    dlg.export_button.click()
    assert requests == [(str(tmp_path / "new.nii.gz"), False)]


def test_an_existing_export_is_replaced_only_after_confirmation(qtbot, tmp_path, monkeypatch):
    out = tmp_path / "old.nii.gz"
    (tmp_path / "old.quant.csv").write_text("mine")
    asked = []
    answer = [QMessageBox.StandardButton.No]
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a[2]) or answer[0])
    dlg, requests = _dialog(qtbot, out)
    dlg.export_button.click()
    assert requests == [] and "old.quant.csv" in asked[0]
    assert dlg.export_button.isEnabled()
    answer[0] = QMessageBox.StandardButton.Yes
    dlg.export_button.click()
    assert requests == [(str(out), True)]
