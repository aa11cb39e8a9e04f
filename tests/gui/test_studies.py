"""Many studies in one window (issue 12): add a second study, the study list with its counts, switch by click and
Ctrl+PgUp/PgDn keeping window/level and zoom, remove with undo, train across both (tiny settings), and the
Suggest action jumping to an unlabelled slice marked on the label strip."""
import os

import numpy as np

import pytest
from PySide6.QtCore import Qt

from gui_helpers import open_study, wait_idle, wait_started_up

TINY = dict(cls_epochs=2, seg_epochs=1, size=32, base=8, batch_size=4, device="cpu", seed=0)
SHOTS = os.environ.get("COVIDSEG_SHOTS")       # a folder: the test saves its screenshots there


@pytest.fixture
def second_study(tmp_path_factory):
    from covidseg_core.demo import write_demo

    out = tmp_path_factory.mktemp("second")
    write_demo(out, seed=1, n_slices=8, size=96)
    return out / "volume" / "ct.nii.gz"


def rows(w):
    return [w.study_panel.list.item(i).text() for i in range(w.study_panel.list.count())]


def test_two_studies_switch_remove_undo_train_and_suggest(qtbot, window, small_demo_dir, second_study, tmp_path):
    w = window
    s = w.session
    open_study(qtbot, w, small_demo_dir / "volume" / "ct.nii.gz", tmp_path / "project")
    s.project.update_settings(**TINY)
    first = s.source_id
    s.project.set_labels(first, {s.study.slice_ids[i]: None for i in (5, 6, 7)})
    assert len(rows(w)) == 1 and "5 unlabelled" not in rows(w)[0] and "3 unlabelled" in rows(w)[0]

    # add a second study: it is shown, its labels.csv taken in, and listed with its counts
    w.controller.add_study(second_study)
    wait_idle(qtbot, w)
    second = s.source_id
    assert second != first and s.study.shape == (8, 96, 96)
    s.project.set_labels(second, {s.study.slice_ids[i]: None for i in (0, 1, 2, 3)})
    assert len(rows(w)) == 2 and "4 unlabelled" in rows(w)[1]
    assert w.study_panel.ids() == [first, second]
    # the same study again is said, not added
    w.controller.add_study(second_study)
    wait_idle(qtbot, w)
    assert len(rows(w)) == 2 and "already in the project" in w.statusBar().currentMessage()

    # label in this study by key, then switch by Ctrl+PgUp keeping window/level and zoom
    w.activateWindow()
    w.view.setFocus()
    w.view.set_slice(0)
    qtbot.keyClick(w.view, Qt.Key.Key_I)
    assert s.project.label(second, s.study.slice_ids[0]) == "infected"
    w.view.set_preset("mediastinum")
    w.view.zoom(2.0)
    zoomed, level = w.view.view_range(), w.view.window
    assert level != (1500.0, -600.0)
    qtbot.keyClick(w.view, Qt.Key.Key_PageUp, Qt.KeyboardModifier.ControlModifier)
    wait_idle(qtbot, w)
    assert s.source_id == first
    assert w.view.window == level
    assert np.ravel(w.view.view_range()) == pytest.approx(np.ravel(zoomed), abs=0.5)
    # a click in the list switches too
    item = w.study_panel.list.item(1)
    w.study_panel.list.itemClicked.emit(item)
    wait_idle(qtbot, w)
    assert s.source_id == second

    # remove the shown study: the other one is shown; Ctrl+Z brings it back with its labels
    w.actions_by_name["remove_study"].trigger()
    wait_idle(qtbot, w)
    assert s.source_id == first and len(rows(w)) == 1
    w.undo()
    qtbot.waitUntil(lambda: len(rows(w)) == 2, timeout=180000)
    assert s.project.label(second, "0") == "infected"

    # train across both studies
    wait_started_up(qtbot, w)
    w.actions_by_name["train"].trigger()
    assert w.jobs.busy
    wait_idle(qtbot, w, timeout=300000)
    qtbot.waitUntil(lambda: s.prediction is not None, timeout=180000)
    summary = s.project.runs[-1]["summary"]
    assert summary["status"] == "done" and summary["sources"] == [first, second]
    assert all("done" in r for r in rows(w))

    # S: the most informative unlabelled slice of any study, marked on the strip
    w.view.setFocus()
    qtbot.keyClick(w.view, Qt.Key.Key_S)
    wait_idle(qtbot, w)
    assert s.suggestions
    pick = s.suggestions[0]
    assert s.source_id == pick["source_id"] and w.view.index == pick["index"]
    assert s.project.label(s.source_id, s.slice_id(w.view.index)) is None
    assert w.view.index in w.label_panel.strip.suggested()
    told = w.statusBar().currentMessage()
    assert f"{pick['probability']:.2f}" in told and f"with the label-free prior {pick['slice_probability']:.2f}" in told
    if SHOTS:
        w.resize(1400, 900)
        qtbot.wait(100)
        w.grab().save(os.path.join(SHOTS, "studies_and_suggestion.png"))
    # labelling it moves the next S on to another suggested slice
    qtbot.keyClick(w.view, Qt.Key.Key_C)
    assert w.view.index not in w.label_panel.strip.suggested()
    before = (s.source_id, w.view.index)
    qtbot.keyClick(w.view, Qt.Key.Key_S)
    wait_idle(qtbot, w)
    assert (s.source_id, w.view.index) != before
    assert s.project.label(s.source_id, s.slice_id(w.view.index)) is None
