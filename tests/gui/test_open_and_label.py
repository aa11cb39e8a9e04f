"""Opening the demo study, reading it (window/level, slices, HU readout) and labelling by keys with undo/redo."""
import pytest
from PySide6.QtCore import QPointF, Qt

from gui_helpers import open_study, wait_idle


def test_open_demo_from_help_menu(qtbot, window):
    window.actions_by_name["demo"].trigger()
    qtbot.waitUntil(lambda: window.session.has_study and not window.jobs.busy, timeout=180000)
    s = window.session
    assert s.study.shape == (32, 128, 128)
    assert s.study.is_hu
    # the demo's labels.csv became project labels, and the strip shows them
    counts = s.counts()
    assert counts["infected"] > 0 and counts["clean"] > 0 and counts["unlabelled"] == 0
    assert window.label_panel.strip.labels() == s.label_list()
    assert "ct.nii.gz" in window.windowTitle()
    # lung window by default
    assert window.view.window == (1500.0, -600.0)
    # opening the demo a second time reuses the same files and project
    folder = s.project.folder
    window.actions_by_name["demo"].trigger()
    qtbot.waitUntil(lambda: window.session.has_study and not window.jobs.busy, timeout=180000)
    assert window.session.project.folder == folder


def test_label_by_keys_undo_redo(qtbot, demo_window):
    w = demo_window
    s = w.session
    w.activateWindow()
    w.view.setFocus()
    w.view.set_slice(3)
    sid = s.slice_id(3)
    before = s.project.label(s.source_id, sid)
    target = "infected" if before != "infected" else "clean"
    key = Qt.Key.Key_I if target == "infected" else Qt.Key.Key_C
    qtbot.keyClick(w.view, key)
    assert s.project.label(s.source_id, sid) == target
    assert w.label_panel.strip.labels()[3] == target
    qtbot.keyClick(w.view, Qt.Key.Key_U)
    assert s.project.label(s.source_id, sid) is None
    assert s.counts()["unlabelled"] == 1
    # N goes to the (only) unlabelled slice
    w.view.set_slice(10)
    qtbot.keyClick(w.view, Qt.Key.Key_N)
    assert w.view.index == 3
    qtbot.keyClick(w.view, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert s.project.label(s.source_id, sid) == target
    qtbot.keyClick(w.view, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert s.project.label(s.source_id, sid) == before
    qtbot.keyClick(w.view, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert s.project.label(s.source_id, sid) == target
    # saved the moment it was given: a fresh read of the project folder sees it
    from covidseg_core.project.api import Project
    folder = s.project.folder
    w.session.close_project()
    with Project.open(folder, read_only=True) as p:
        assert p.labels(p.sources[0]["id"]).get(sid) == target


def test_slice_navigation_keys_and_wheel(qtbot, demo_window):
    w = demo_window
    v = w.view
    v.set_slice(5)
    v.setFocus()
    qtbot.keyClick(v, Qt.Key.Key_Down)
    assert v.index == 6
    qtbot.keyClick(v, Qt.Key.Key_PageDown)
    assert v.index == 16
    qtbot.keyClick(v, Qt.Key.Key_PageUp)
    qtbot.keyClick(v, Qt.Key.Key_Up)
    assert v.index == 5
    v.step_slice(-100)
    assert v.index == 0
    assert w.label_panel.strip._current == 0


def test_window_presets_and_hover_readout(qtbot, demo_window):
    w = demo_window
    v = w.view
    w.actions_by_name["bone"].trigger()
    assert v.window == (2500.0, 480.0)
    w.actions_by_name["mediastinum"].trigger()
    assert v.window == (400.0, 40.0)
    levels = v._ct.getLevels()
    assert levels[0] == pytest.approx(-160.0) and levels[1] == pytest.approx(240.0)
    w.actions_by_name["lung"].trigger()
    # HU under the cursor: map the centre pixel to the scene and move the mouse there
    texts = []
    v.hover_info.connect(texts.append)
    scene_pos = v._ct.mapToScene(QPointF(64.5, 64.5))
    v._on_mouse_moved(scene_pos)
    assert texts and "HU" in texts[-1]
    hu = float(w.session.study.array[v.index, 64, 64])
    assert f"{hu:.0f} HU" in texts[-1]


def test_non_hu_image_folder_opens_with_its_labels(qtbot, window, demo_dir, tmp_path):
    open_study(qtbot, window, demo_dir, tmp_path / "img-project")
    s = window.session
    assert s.study.kind == "images" and not s.study.is_hu
    assert s.counts()["unlabelled"] == 0
    assert window.view.window == (255.0, 127.5)


def test_bad_path_shows_one_error_dialog(qtbot, window, tmp_path):
    from PySide6.QtWidgets import QMessageBox
    empty = tmp_path / "empty"
    empty.mkdir()
    window.open_path(empty, project_folder=tmp_path / "p")
    boxes = [b for b in window.findChildren(QMessageBox) if b.objectName() == "errorDialog"]
    assert boxes and "Nothing to read" in boxes[-1].text()
    assert window.session.study is None
    wait_idle(qtbot, window)


def test_welcome_page_links_open_the_demo(qtbot, window):
    assert window.view._stack.currentWidget() is window.view._welcome
    window.view._welcome.linkActivated.emit("demo")
    qtbot.waitUntil(lambda: window.session.has_study and not window.jobs.busy, timeout=180000)
    assert window.view._stack.currentWidget() is window.view._glw
