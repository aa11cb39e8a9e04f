"""Many studies in one window, their files (issue 12): export every study into one folder from the app (one mask
per study, each in its own source's geometry; existing files replaced only after the user says so), studies added
by dropping files and folders on the window, and a study whose files moved shown missing and relocated."""
from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication, QMessageBox, QWidget

from gui_helpers import open_study, wait_idle

sitk = pytest.importorskip("SimpleITK")


@pytest.fixture
def two_sources(tmp_path):
    """Two small studies with different geometry: the demo as written, and another demo volume given its own
    spacing, origin and direction (as a second patient's scan would have); and the first one's image folder."""
    from covidseg_core.demo import write_demo

    base = tmp_path / "data"
    write_demo(base / "a", seed=1, n_slices=6, size=64)
    write_demo(base / "b", seed=2, n_slices=5, size=48)
    b = base / "b" / "volume" / "ct.nii.gz"
    img = sitk.ReadImage(str(b))
    img.SetSpacing((0.7, 0.8, 2.5))
    img.SetOrigin((-12.0, 30.5, 101.0))
    img.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    other = base / "b" / "patient_b.nii.gz"
    sitk.WriteImage(img, str(other))
    return {"a": base / "a" / "volume" / "ct.nii.gz", "b": other, "a_images": base / "a"}


def square(shape, y, x, r=5):
    m = np.zeros(shape, np.uint8)
    m[y - r:y + r, x - r:x + r] = 1
    return m


def drop(w, paths, target=None):
    """A drop of local files and folders on the window (or on one of its widgets), as a file manager sends it."""
    mime = QMimeData()
    mime.setUrls([p if isinstance(p, QUrl) else QUrl.fromLocalFile(str(p)) for p in paths])
    target = target or w
    pos = QPointF(target.width() / 2, target.height() / 2)
    enter = QDragEnterEvent(pos.toPoint(), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(target, enter)
    if not enter.isAccepted():
        return False
    ev = QDropEvent(pos, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(target, ev)
    return ev.isAccepted()


def error_boxes(w):
    return [b for b in w.findChildren(QMessageBox) if b.objectName() == "errorDialog" and b.isVisible()]


# --- export every study ----------------------------------------------------------------------------------------

def test_export_every_study_into_one_folder_in_each_source_geometry(qtbot, window, two_sources, tmp_path,
                                                                     monkeypatch):
    w = window
    s = w.session
    open_study(qtbot, w, two_sources["a"], tmp_path / "project")
    w.controller.add_study(two_sources["b"])
    wait_idle(qtbot, w)
    ids = [r["id"] for r in s.project.sources]
    assert len(ids) == 2 and s.source_id == ids[1]
    # a correction in each study (no training needed: the mask is the user's)
    s.save_correction(2, square((48, 48), 20, 24))
    study_a = s.studies[ids[0]]
    s.project.save_correction(ids[0], study_a.slice_ids[3], square((64, 64), 30, 30), expected_shape=(64, 64))

    dlg = w.show_export_dialog()
    assert dlg is not None and dlg.names == ["ct_infection.nii.gz", "patient_b_infection.nii.gz"]
    assert "every study" in dlg.windowTitle() and "patient_b_infection.nii.gz" in dlg.quant.text()
    out = tmp_path / "exports"
    dlg.path.setText(str(out))
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: (_ for _ in ()).throw(AssertionError("asked")))
    dlg.export_button.click()
    wait_idle(qtbot, w)
    written = sorted(p.name for p in out.glob("*.nii.gz"))
    assert written == ["ct_infection.nii.gz", "patient_b_infection.nii.gz"], dlg.result.text()
    assert "patient_b_infection.nii.gz" in dlg.result.text()
    for src, name, z, expected in ((two_sources["a"], "ct_infection.nii.gz", 3, square((64, 64), 30, 30)),
                                   (two_sources["b"], "patient_b_infection.nii.gz", 2, square((48, 48), 20, 24))):
        ref, got = sitk.ReadImage(str(src)), sitk.ReadImage(str(out / name))
        assert got.GetSize() == ref.GetSize()
        assert np.allclose(got.GetSpacing(), ref.GetSpacing())
        assert np.allclose(got.GetOrigin(), ref.GetOrigin())
        assert np.allclose(got.GetDirection(), ref.GetDirection())
        arr = sitk.GetArrayFromImage(got)
        assert np.array_equal(arr[z] > 0, expected > 0) and int(arr.sum()) == int(expected.sum())
    assert sitk.ReadImage(str(out / "patient_b_infection.nii.gz")).GetDirection()[1] == pytest.approx(1.0)

    # again into the same folder: the user is asked; No leaves the files as they were, Yes replaces them
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    asked, answer = [], [QMessageBox.StandardButton.No]
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a[2]) or answer[0])
    s.project.remove_correction(ids[1], s.study.slice_ids[2])
    dlg.export_button.click()
    wait_idle(qtbot, w)
    assert asked and "patient_b_infection.nii.gz" in asked[0] and "ct_infection.quant.json" in asked[0]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    answer[0] = QMessageBox.StandardButton.Yes
    dlg.export_button.click()
    wait_idle(qtbot, w)
    # study b has nothing to export now: it is said, and its old file is left alone; a is replaced
    assert "not exported" in dlg.result.text() and ids[1] in dlg.result.text()
    assert (out / "ct_infection.nii.gz").stat().st_mtime_ns != before["ct_infection.nii.gz"]
    assert (out / "patient_b_infection.nii.gz").stat().st_mtime_ns == before["patient_b_infection.nii.gz"]


def test_export_every_study_refuses_a_folder_inside_a_study(qtbot, window, two_sources, tmp_path, monkeypatch):
    w = window
    s = w.session
    open_study(qtbot, w, two_sources["a"], tmp_path / "project")
    w.controller.add_study(two_sources["a_images"])
    wait_idle(qtbot, w)
    w.controller.add_study(two_sources["b"])
    wait_idle(qtbot, w)
    s.save_correction(1, square((48, 48), 20, 24))
    dlg = w.show_export_dialog()
    assert len(dlg.names) == 3
    inside = two_sources["a_images"] / "images"         # a folder study's own folder is never written into
    dlg.path.setText(str(inside))
    dlg.export_button.click()
    wait_idle(qtbot, w)
    assert "Not exported" in dlg.result.text() and "Refusing" in dlg.result.text(), dlg.result.text()
    assert not list(inside.glob("*_infection*"))


# --- drag and drop ---------------------------------------------------------------------------------------------

def test_dropping_files_and_folders_adds_them_as_studies(qtbot, window, two_sources, tmp_path):
    w = window
    s = w.session
    # no project yet: the first is opened (its project made next to it), the second added to that project
    assert drop(w, [two_sources["a"], two_sources["b"]])
    qtbot.waitUntil(lambda: s.project is not None and len(s.project.sources) == 2 and not w.jobs.busy,
                    timeout=180000)
    wait_idle(qtbot, w)
    assert [r["kind"] for r in s.project.sources] == ["nifti", "nifti"]
    assert s.source_id == s.project.sources[1]["id"] and s.study.shape == (5, 48, 48)
    assert w.study_panel.list.count() == 2

    # the same study again: said, not added; an image folder with it is added
    assert drop(w, [two_sources["b"], two_sources["a_images"]])
    wait_idle(qtbot, w)
    assert len(s.project.sources) == 3 and s.project.sources[2]["kind"] == "images"
    assert "already in the project" in w.statusBar().currentMessage()
    assert s.source_id == s.project.sources[2]["id"]

    # bad input: a clear message (what is wrong, what to do), the good one still added, no traceback
    bad = tmp_path / "notes.txt"
    bad.write_text("not a scan")
    third = tmp_path / "c"
    from covidseg_core.demo import write_demo
    write_demo(third, seed=3, n_slices=4, size=32)
    assert drop(w, [bad, third / "volume" / "ct.nii.gz"])
    wait_idle(qtbot, w)
    assert len(s.project.sources) == 4
    boxes = error_boxes(w)
    assert boxes and "notes.txt is not a file CovidSeg can read" in boxes[-1].text()
    assert "Traceback" not in boxes[-1].text() and "Unexpected" not in boxes[-1].windowTitle()
    for b in boxes:
        b.close()
    # two bad ones: one message naming both
    missing = tmp_path / "gone.nii.gz"
    assert drop(w, [bad, missing])
    wait_idle(qtbot, w)
    text = error_boxes(w)[-1].text()
    assert "2 of the items given are not studies" in text and "notes.txt" in text and "gone.nii.gz" in text
    assert len(s.project.sources) == 4


def test_drops_land_anywhere_on_the_window_and_only_local_paths_are_taken(qtbot, window, two_sources):
    w = window
    # what Qt does with a drag: the widget under the cursor, or the nearest parent that takes drops
    for widget in (w.view, w.study_panel.list, w.training_panel, w.gallery):
        for child in [widget, *widget.findChildren(QWidget)]:
            target = child
            while target is not None and not target.acceptDrops():
                target = target.parentWidget()
            assert target is w, f"{child} would take the drop itself"
    # a web link is not a study: the drag is refused, nothing happens
    assert not drop(w, [QUrl("https://example.org/ct.nii.gz")])
    assert w.session.project is None and not w.jobs.busy
    assert drop(w, [two_sources["a"]])
    qtbot.waitUntil(lambda: w.session.has_study and not w.jobs.busy, timeout=180000)


def test_a_project_folder_dropped_alone_is_opened(qtbot, window, two_sources, tmp_path):
    w = window
    open_study(qtbot, w, two_sources["a"], tmp_path / "project")
    w.session.set_project(None)
    assert drop(w, [tmp_path / "project"])
    qtbot.waitUntil(lambda: w.session.has_study and not w.jobs.busy, timeout=180000)
    assert w.session.project.folder == tmp_path / "project"
    # with other items: said, nothing opened or added
    assert drop(w, [tmp_path / "project", two_sources["b"]])
    assert "project folder" in error_boxes(w)[-1].text() and len(w.session.project.sources) == 1


# --- a study whose files moved ----------------------------------------------------------------------------------

def test_a_moved_study_is_shown_missing_with_its_labels_and_relocated(qtbot, window, two_sources, tmp_path):
    import shutil

    from app.study_files import locate_study

    w = window
    s = w.session
    orig = tmp_path / "orig"
    shutil.copytree(two_sources["a"].parent.parent, orig)
    open_study(qtbot, w, orig / "volume" / "ct.nii.gz", tmp_path / "project")
    sid = s.source_id
    s.set_label(0, None)                  # the user's own change on top of the labels.csv taken in
    labels = s.label_list()
    assert labels[0] is None and labels.count("infected") + labels.count("clean") == 5
    assert w.label_panel.strip._labels == labels
    s.save_correction(3, square((64, 64), 30, 30))
    s.set_project(None)
    shutil.move(orig, tmp_path / "moved")

    # reopened: listed as missing with its label counts; nothing shown, no error dialog
    w.open_path(tmp_path / "project")
    qtbot.waitUntil(lambda: s.project is not None and not w.jobs.busy, timeout=180000)
    assert not s.has_study and not error_boxes(w)
    row = w.study_panel.list.item(0)
    infected, clean = labels.count("infected"), labels.count("clean")
    assert "(missing)" in row.text() and f"{infected} infected · {clean} clean" in row.text()
    assert "Locate" in row.toolTip() and w.actions_by_name["locate_study"].isEnabled()
    assert w.study_panel.buttons["locate_study"].isVisible()
    assert "missing" in w.statusBar().currentMessage()
    w.study_panel.list.itemClicked.emit(row)                 # a click says what to do, and reads nothing
    assert not w.jobs.busy and "Locate" in w.statusBar().currentMessage()

    # another study is refused with a clear message; the study stays missing
    locate_study(w, two_sources["b"])
    wait_idle(qtbot, w)
    assert "patient_b.nii.gz is not the study" in error_boxes(w)[-1].text()
    assert not s.project.source_path(sid).exists() and not s.has_study

    # relocated: shown again with its labels and correction, keyed as before
    locate_study(w, tmp_path / "moved" / "volume" / "ct.nii.gz")
    qtbot.waitUntil(lambda: s.has_study and not w.jobs.busy, timeout=180000)
    wait_idle(qtbot, w)
    assert s.source_id == sid and s.project.source_path(sid) == tmp_path / "moved" / "volume" / "ct.nii.gz"
    assert s.label_list() == labels and w.label_panel.strip._labels == labels
    assert w.label_panel.strip._corrected == {3}
    assert "(missing)" not in w.study_panel.list.item(0).text()
    assert not w.actions_by_name["locate_study"].isEnabled()
    assert not w.study_panel.buttons["locate_study"].isVisible()
    # kept when the project is opened again
    s.set_project(None)
    w.open_path(tmp_path / "project")
    qtbot.waitUntil(lambda: s.has_study and not w.jobs.busy, timeout=180000)
    assert s.label_list() == labels
