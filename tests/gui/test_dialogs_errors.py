"""Errors shown the same way (user errors with what to do, bugs with the log path), the series chooser, the
settings dialog, recent projects."""
import sys
from pathlib import Path

from PySide6.QtWidgets import QMessageBox

from gui_helpers import open_study, wait_idle

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # tests/ for the synthetic DICOM writer


def error_boxes(w):
    return [b for b in w.findChildren(QMessageBox) if b.objectName() == "errorDialog"]


def test_unexpected_exception_dialog_names_the_log_file(qtbot, window, tmp_path):
    from app import errors_ui
    log = errors_ui.setup_logging(path=tmp_path / "app.log")
    errors_ui.install_excepthook()
    try:
        raise ZeroDivisionError("boom")
    except ZeroDivisionError:
        sys.excepthook(*sys.exc_info())
    texts = [b.text() for b in qtbot_boxes()]
    assert any(str(log) in t and "ZeroDivisionError" in t for t in texts)
    assert "boom" in log.read_text()
    sys.excepthook = sys.__excepthook__


def qtbot_boxes():
    from PySide6.QtWidgets import QApplication
    return [w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox) and w.isVisible()]


def test_too_few_labels_is_a_user_error(qtbot, window, small_demo_dir, tmp_path):
    w = window
    open_study(qtbot, w, small_demo_dir / "volume" / "ct.nii.gz", tmp_path / "p")
    s = w.session
    s.project.set_labels(s.source_id, {sid: None for sid in s.study.slice_ids})
    s.project.update_settings(cls_epochs=1, seg_epochs=1, size=32, base=8, device="cpu")
    w.actions_by_name["train"].trigger()
    wait_idle(qtbot, w, timeout=180000)
    boxes = error_boxes(w)
    assert boxes, "no error dialog"
    text = boxes[-1].text()
    assert "label" in text.lower()
    assert "Traceback" not in text and "Details were written" not in text    # a user error, not a bug
    assert boxes[-1].windowTitle() == "CovidSeg Assist"
    # refused before anything started (labels are checked first): no run, failed or half-made, is recorded
    assert not s.project.runs


def test_dicom_folder_with_two_series_uses_the_chooser(qtbot, window, tmp_path):
    from synthetic_dicom import write_synthetic_series
    folder = tmp_path / "dicom"
    write_synthetic_series(folder, 6, series_uid="1.2.3.1", shape=(16, 16), prefix="a", description="lung")
    write_synthetic_series(folder, 3, series_uid="1.2.3.2", shape=(16, 16), prefix="b", description="short")
    from app.dialogs.open_dialogs import SeriesChooser
    from covidseg_core.io.dicom import list_series
    chooser = SeriesChooser(folder, list_series(folder))
    assert chooser.list.count() == 2
    assert chooser.series_uid() == "1.2.3.1"         # the longest axial series is proposed
    open_study(qtbot, window, folder, tmp_path / "p")
    s = window.session
    assert s.study.n_slices == 6
    assert s.project.sources[0]["series_uid"] == "1.2.3.1"


def test_settings_dialog_saves_into_the_project(qtbot, demo_window):
    from app.dialogs.settings_dialog import SettingsDialog
    w = demo_window
    dlg = SettingsDialog(w.session.project.settings, w)
    dlg.fusion.setCurrentIndex(dlg.fusion.findData("max"))
    dlg.cls_epochs.setValue(5)
    w.session.project.update_settings(**dlg.values())
    assert w.session.project.settings["fusion"] == "max"
    assert w.training_settings()["cls_epochs"] == 5
    from app.tasks import train_config
    cfg = train_config(w.training_settings())
    assert cfg.fusion == "max" and cfg.cls_epochs == 5


def test_settings_default_to_the_device_not_the_fast_preset(qtbot, demo_window, monkeypatch):
    """A new project trains at what the core decides for the device: on CUDA the full size and schedule, on a
    CPU a time budget (never the 128-pixel --fast preset everywhere)."""
    import torch

    from app.dialogs.settings_dialog import SettingsDialog
    from app.tasks import train_config
    from covidseg_core.budget import AUTO, CPU_SIZE
    from covidseg_core.infer.device import resolve_device
    from covidseg_core.pipeline import new_plan
    w = demo_window
    for key in ("cls_epochs", "seg_epochs", "size", "budget_minutes"):
        w.session.project.update_settings(**{key: None})
    dlg = SettingsDialog(w.session.project.settings, w)
    assert dlg.cls_epochs.text() == "automatic" and dlg.length.currentData() == "auto"
    assert not dlg.budget.isEnabled()
    w.session.project.update_settings(**dlg.values())
    cfg = train_config(w.training_settings())
    assert (cfg.size, cfg.cls_epochs, cfg.seg_epochs, cfg.budget_minutes, cfg.crop, cfg.fast) == \
        (AUTO, None, None, None, None, False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    gpu = new_plan(cfg, resolve_device(w.training_settings()["device"]), native_side=512)
    assert gpu.budget_s is None and gpu.size == 256
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cpu = new_plan(cfg, resolve_device("auto"), native_side=512)
    assert cpu.budget_s and cpu.size == CPU_SIZE

    # a time budget of 3 minutes, then the fixed schedule
    dlg.length.setCurrentIndex(dlg.length.findData("budget"))
    assert dlg.budget.isEnabled()
    dlg.budget.setValue(3.0)
    w.session.project.update_settings(**dlg.values())
    assert train_config(w.training_settings()).budget_minutes == 3.0
    dlg = SettingsDialog(w.session.project.settings, w)
    assert dlg.length.currentData() == "budget" and dlg.budget.value() == 3.0
    dlg.length.setCurrentIndex(dlg.length.findData("fixed"))
    w.session.project.update_settings(**dlg.values())
    assert train_config(w.training_settings()).budget_minutes == 0


def test_recent_projects_and_reopening(qtbot, demo_window):
    w = demo_window
    folder = str(w.session.project.folder)
    assert w.prefs.recent_projects()[0] == folder
    w._fill_recent_menu()
    assert folder in [a.text() for a in w.recent_menu.actions()]


def test_study_warnings_are_shown(qtbot, window, tmp_path):
    from synthetic_dicom import write_synthetic_series
    folder = tmp_path / "gappy"
    paths = write_synthetic_series(folder, 8, series_uid="1.2.3.9", shape=(16, 16), shuffle_names=False)
    paths[4].unlink()                       # a missing slice: a gap the loader warns about
    open_study(qtbot, window, folder, tmp_path / "p")
    assert window.session.study.warnings
    boxes = [b for b in window.findChildren(QMessageBox) if b.objectName() == "warningsDialog"]
    assert boxes and "gap" in boxes[-1].informativeText()
