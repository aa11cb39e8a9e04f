"""The real pipeline (covidseg_core.pipeline) run from the window with the smallest settings: per-epoch maps
reach the attention strip, the prediction overlay appears, the run is recorded, Cancel leaves a cancelled run,
and every network forward of the training runs on the job thread, with one core left to the GUI, while the GUI
thread handles events (no clock: benchmarks/gui_stall.py measures the stalls)."""
import os
import threading

import pytest

from gui_helpers import ForwardThreads, GuiPing, open_study, wait_idle, wait_started_up

pytest.importorskip("torch")

TINY = dict(cls_epochs=3, seg_epochs=2, size=32, base=8, batch_size=4, device="cpu", seed=0)


@pytest.fixture
def small_window(qtbot, window, small_demo_dir, tmp_path):
    open_study(qtbot, window, small_demo_dir / "volume" / "ct.nii.gz", tmp_path / "project")
    window.session.project.update_settings(**TINY)
    return window


def test_real_training_fills_strip_and_overlays(qtbot, small_window):
    w = small_window
    s = w.session
    wait_started_up(qtbot, w)
    epochs_seen = []
    w.jobs.epoch.connect(lambda ev: epochs_seen.append((ev.stage, ev.epoch, len(ev.maps))))
    # draw a correction first: it must reach the run as pixel supervision
    w.view.set_slice(2)
    w.view.paint(40, 40, radius=5, erase=False)
    w.view.finish_stroke()
    # from inside the job's first network forward, the job waits until the GUI thread has handled an event it posted
    ping = GuiPing(lambda: w.jobs.busy)
    answered = []
    with ForwardThreads() as forwards:
        def ping_in_a_forward(module, args):
            if not answered and threading.get_ident() != ping.gui_thread:
                answered.append(ping.from_job())
        from torch.nn.modules.module import register_module_forward_pre_hook
        handle = register_module_forward_pre_hook(ping_in_a_forward)
        try:
            w.actions_by_name["train"].trigger()
            assert w.jobs.busy
            wait_idle(qtbot, w, timeout=600000)
        finally:
            handle.remove()
    qtbot.waitUntil(lambda: s.quantification is not None, timeout=180000)
    # the work ran on the job thread, with torch on one core fewer than the machine has; the GUI thread handled
    # the event the job posted from inside a forward pass, while the job was busy
    assert forwards.threads and ping.gui_thread not in forwards.threads
    assert forwards.torch_threads == {max(1, (os.cpu_count() or 2) - 1)}
    assert answered == [True] and ping.answers == [(ping.gui_thread, True)]
    assert [e[:2] for e in epochs_seen if e[0] == "classifier"] == [("classifier", 1), ("classifier", 2),
                                                                    ("classifier", 3)]
    assert [e[:2] for e in epochs_seen if e[0] == "segmenter"] == [("segmenter", 1), ("segmenter", 2)]
    assert all(n > 0 for st, _, n in epochs_seen if st == "classifier")
    # a slice the classifier reported maps for: one CAM per epoch and the fused map
    reported = [sid for sid, h in s.attention.items() if h.cams]
    assert reported
    w.view.set_slice(s.study.slice_index(reported[0]))
    assert w.gallery.thumb_count == 4
    assert w.view.layer_image("attention") is not None
    assert s.prediction.shape == s.study.array.shape
    assert w.view.layer_image("prediction") is not None
    # the run is in the project history with its prediction saved for export; corrections went in as pixels
    runs = s.project.runs
    assert runs and runs[-1]["summary"]["status"] == "done"
    assert runs[-1]["summary"]["pixel_labels"] == 1
    from pathlib import Path
    assert (Path(runs[-1]["path"]) / "predictions" / f"{s.source_id}.nii.gz").is_file()
    assert s.quantification is not None and "mL" in w.quant_panel.study_line.text()
    assert "classifier loss" in w.training_panel.curve_names()
    # "Predict with the last run" gives the same masks again
    first = s.prediction.copy()
    assert w.actions_by_name["predict"].isEnabled()
    w.actions_by_name["predict"].trigger()
    wait_idle(qtbot, w, timeout=600000)
    qtbot.wait(100)
    assert (s.prediction == first).all()
    # reopening the project shows that run's prediction and loss curves again
    folder = s.project.folder
    s.close_project()
    w.open_path(folder)
    qtbot.waitUntil(lambda: w.session.has_study and w.session.prediction is not None, timeout=180000)
    assert (w.session.prediction == first).all()
    assert {"classifier loss", "segmenter train", "segmenter val"} <= set(w.training_panel.curve_names())


def test_cancel_real_training_records_a_cancelled_run(qtbot, small_window):
    w = small_window
    w.session.project.update_settings(cls_epochs=200)
    w.actions_by_name["train"].trigger()
    qtbot.waitUntil(lambda: bool(w.training_panel.curve_names()), timeout=600000)
    w.actions_by_name["cancel"].trigger()
    wait_idle(qtbot, w, timeout=180000)
    assert "cancelled" in w.training_panel.status.text()
    assert w.session.prediction is None
    assert w.session.project.runs[-1]["summary"]["status"] == "cancelled"
