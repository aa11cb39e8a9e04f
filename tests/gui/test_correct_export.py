"""Brush correction saved through the Project and reloaded; export read back in the source geometry."""
import json

import numpy as np
import pytest

from gui_helpers import open_study, wait_idle

sitk = pytest.importorskip("SimpleITK")


def paint_square_correction(qtbot, w, z):
    w.view.set_slice(z)
    w.actions_by_name["brush"].trigger()
    assert w.view.tool == "brush"
    for x in range(40, 50, 3):
        w.view.paint(60, x, radius=4)
    w.view.finish_stroke()
    w.actions_by_name["eraser"].trigger()
    assert w.view.tool == "eraser"
    w.view.paint(60, 40, radius=2)
    w.view.finish_stroke()
    w.actions_by_name["eraser"].trigger()        # off again
    assert w.view.tool is None
    expected = np.zeros((96, 96), np.uint8)
    yy, xx = np.ogrid[:96, :96]
    for x in range(40, 50, 3):
        expected[(yy - 60) ** 2 + (xx - x) ** 2 <= 16] = 1
    expected[(yy - 60) ** 2 + (xx - 40) ** 2 <= 4] = 0
    return expected


def test_brush_correction_saved_and_reloaded(qtbot, window, small_demo_dir, tmp_path):
    w = window
    open_study(qtbot, w, small_demo_dir / "volume" / "ct.nii.gz", tmp_path / "project")
    expected = paint_square_correction(qtbot, w, 3)
    s = w.session
    saved = s.project.correction(s.source_id, s.slice_id(3))
    assert saved is not None and np.array_equal(saved > 0, expected > 0)
    assert 3 in s.corrected_indices()
    assert 3 in w.label_panel.strip._corrected
    # the prediction layer shows the corrected mask in red
    shown = w.view.layer_image("prediction")
    assert shown is not None and np.array_equal(shown[..., 3] > 0, expected > 0)
    # undo removes the last stroke (the eraser), redo brings it back
    w.actions_by_name["undo"].trigger()
    assert s.correction(3)[60, 40] == 1
    w.actions_by_name["redo"].trigger()
    assert s.correction(3)[60, 40] == 0

    # reopen the project folder: the correction is there
    folder = s.project.folder
    s.close_project()
    w.open_path(folder)
    qtbot.waitUntil(lambda: w.session.has_study and not w.jobs.busy, timeout=180000)
    assert np.array_equal(w.session.correction(3), expected)
    assert w.label_panel.strip._corrected == {3}


def test_export_reads_back_with_source_geometry(qtbot, window, small_demo_dir, tmp_path):
    w = window
    src = small_demo_dir / "volume" / "ct.nii.gz"
    open_study(qtbot, w, src, tmp_path / "project")
    expected = paint_square_correction(qtbot, w, 5)
    dlg = w.show_export_dialog()
    assert dlg is not None and dlg.isVisible()
    out = tmp_path / "out" / "mask.nii.gz"
    dlg.path.setText(str(out))
    dlg.export_button.click()
    wait_idle(qtbot, w)
    assert out.is_file(), dlg.result.text()
    assert str(out) in dlg.result.text()
    ref = sitk.ReadImage(str(src))
    got = sitk.ReadImage(str(out))
    assert got.GetSize() == ref.GetSize()
    assert np.allclose(got.GetSpacing(), ref.GetSpacing())
    assert np.allclose(got.GetOrigin(), ref.GetOrigin())
    assert np.allclose(got.GetDirection(), ref.GetDirection())
    arr = sitk.GetArrayFromImage(got)
    assert np.array_equal(arr[5] > 0, expected > 0)
    assert arr.sum() == expected.sum()
    quant = json.loads((tmp_path / "out" / "mask.quant.json").read_text())
    voxel_ml = np.prod(ref.GetSpacing()) / 1000.0
    assert quant["infected_ml"] == pytest.approx(expected.sum() * voxel_ml, rel=1e-3)
    assert (tmp_path / "out" / "mask.quant.csv").is_file()
    # the side panel shows the same numbers
    assert f"{quant['infected_ml']:.1f} mL" in w.quant_panel.study_line.text()
