"""File > Export > DICOM SEG, File > Report and File > Open DICOM SEG as mask (issue 13), on a small synthetic
DICOM series, offscreen."""
import re

import numpy as np
import pydicom
import pytest
from PySide6.QtWidgets import QMessageBox

from gui_helpers import open_study, wait_idle, wait_started_up
from tests.synthetic_dicom import write_synthetic_series

EXTRA = {"PatientID": "P-9", "PatientName": "Test^Patient", "StudyDate": "20200401",
         "FrameOfReferenceUID": "1.2.826.0.1.3680043.8.498.79.5"}


@pytest.fixture()
def dicom_dir(tmp_path):
    folder = tmp_path / "ct"
    write_synthetic_series(folder, 4, series_uid="1.2.826.0.1.3680043.8.498.79.1", shape=(32, 32), extra=EXTRA)
    return folder


def error_boxes(w):
    return [b for b in w.findChildren(QMessageBox) if b.objectName() == "errorDialog" and b.isVisible()]


def test_file_menu_has_export_submenu_report_and_open_seg(window):
    file_menu = window.menus["File"]
    texts = [a.text() for a in file_menu.actions()]
    assert "&Export" in texts and "&Report (PDF)…" in texts and "Open DICOM SE&G as mask…" in texts
    assert [a.text() for a in window.menus["Export"].actions()] == ["Masks as &NIfTI…", "Masks as DICOM &SEG…"]


def test_seg_export_report_and_seg_import(qtbot, window, dicom_dir, tmp_path):
    w = window
    wait_started_up(qtbot, w)          # the first window warms torch up: a busy CPU makes that slow
    open_study(qtbot, w, dicom_dir, tmp_path / "project")
    s = w.session
    mask = np.zeros((32, 32), np.uint8)
    mask[4:12, 6:20] = 1
    s.save_correction(2, mask)

    w.actions_by_name["export_seg"].trigger()
    dlg = w.export_dialog
    assert dlg is not None and dlg.seg and dlg.windowTitle() == "Export masks as DICOM SEG"
    out = tmp_path / "out" / "mask"              # the dialog adds .dcm
    dlg.path.setText(str(out))
    dlg.export_button.click()
    wait_idle(qtbot, w)
    seg_path = tmp_path / "out" / "mask.dcm"
    assert seg_path.is_file(), dlg.result.text()
    ds = pydicom.dcmread(seg_path)
    assert ds.Modality == "SEG" and ds.NumberOfFrames == 1 and ds.PatientID == "P-9"
    assert ds.SegmentSequence[0].SegmentAlgorithmType == "SEMIAUTOMATIC"

    report = tmp_path / "out" / "report.pdf"
    assert w.save_report(report)
    wait_idle(qtbot, w, timeout=60000)
    data = report.read_bytes()
    assert data.startswith(b"%PDF-") and len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", data)) == 1

    s.project.remove_correction(s.source_id, s.slice_id(2))       # the mask must now come from the SEG
    w.choose_seg(seg_path)
    wait_idle(qtbot, w)
    assert s.prediction is not None and np.array_equal(s.prediction[2], mask)
    assert s.prediction.sum() == mask.sum()
    assert any(r["summary"].get("status") == "imported" for r in s.project.runs)


def test_seg_export_of_a_nifti_study_says_it_needs_dicom(qtbot, window, small_demo_dir, tmp_path):
    w = window
    wait_started_up(qtbot, w)
    open_study(qtbot, w, small_demo_dir / "volume" / "ct.nii.gz", tmp_path / "project")
    w.session.save_correction(1, np.ones((96, 96), np.uint8))
    assert w.show_export_dialog("dicom-seg") is None
    (box,) = error_boxes(w)
    assert "needs a study opened from DICOM files" in box.text() + box.informativeText()
