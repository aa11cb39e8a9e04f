"""The window's reaction to a training job: epoch maps reach the attention strip, loss curves grow, overlays
appear when it is done, Cancel works, and the work runs on the job thread while the GUI thread handles
events. The job here is a test double of the core's train job (tasks.train_job is replaced);
test_training_real.py runs the real one."""
import threading
import time

import numpy as np
import pytest
from covidseg_core.events import Done, EpochReport, Progress

from app import tasks
from gui_helpers import GuiPing, wait_idle, wait_started_up


def burn_cpu(seconds):
    """Work like a training batch: torch ops (which release the GIL) on one thread."""
    import torch
    x = torch.rand(256, 256)
    t = time.perf_counter()
    while time.perf_counter() - t < seconds:
        x = torch.tanh(x @ x.T / 256.0)


def fake_train_job(study, epochs=4, step_s=0.03, steps_per_epoch=5, seg_epochs=2, threads=None, ping=None):
    ids = study.slice_ids
    shape = study.array.shape[1:]
    chosen = [ids[len(ids) // 2], ids[len(ids) // 2 + 1]]
    yy, xx = np.mgrid[:64, :64]

    def job(cancel):
        for e in range(1, epochs + 1):
            for b in range(steps_per_epoch):
                cancel.raise_if_cancelled()
                if threads is not None:
                    threads.append(threading.get_ident())
                burn_cpu(step_s)
                yield Progress("classifier", b + 1, steps_per_epoch, f"epoch {e}", eta_s=5.0)
                if ping is not None:     # the job goes on once the GUI thread handled an event posted now
                    ping.answered.append(ping.from_job())
            cam = np.exp(-((yy - 20 - 5 * e) ** 2 + (xx - 30) ** 2) / 80.0).astype(np.float32)
            yield EpochReport("classifier", e, epochs, losses={"loss": 1.0 / e}, metrics={"accuracy": 0.5 + e / 10},
                              maps={sid: {"cam": cam, "fused": cam * 0.9} for sid in chosen}, seconds=0.1)
            if ping is not None:         # ... and after each epoch's maps (the GUI's heaviest update)
                ping.answered.append(ping.from_job())
        for e in range(1, seg_epochs + 1):
            yield EpochReport("segmenter", e, seg_epochs, losses={"loss": 0.5 / e, "val_loss": 0.6 / e})
        pred = np.zeros(study.array.shape, np.uint8)
        pred[:, shape[0] // 3: shape[0] // 2, shape[1] // 4: shape[1] // 3] = 1
        pseudo = {sid: np.full(shape, 127, np.uint8) for sid in chosen}
        yield Done(tasks.PipelineResult(run=None, prediction=pred, pseudo=pseudo))
    return job


@pytest.fixture
def fake_training(monkeypatch):
    calls = []

    def train_job(project, source_id, study, settings, lungs):
        calls.append(settings)
        return fake_train_job(study, **calls_kwargs)
    calls_kwargs = {}
    monkeypatch.setattr(tasks, "train_job", train_job)
    return calls, calls_kwargs


def test_epochs_fill_the_attention_strip_and_overlays_appear(qtbot, demo_window, fake_training):
    w = demo_window
    calls, _ = fake_training
    s = w.session
    mid = s.study.n_slices // 2
    w.view.set_slice(mid)
    counts = []
    w.session.attention_changed.connect(lambda ids: counts.append(w.gallery.thumb_count))
    w.actions_by_name["train"].trigger()
    assert calls and calls[0]["fusion"] in ("avg", "max", "none")
    wait_idle(qtbot, w)
    qtbot.waitUntil(lambda: w.session.prediction is not None, timeout=180000)
    # the strip was filled in epoch by epoch (the window's slot runs before this one's lambda)
    assert counts == [0, 2, 3, 4, 5]              # cleared at the start; then epochs so far + the fused map
    assert w.gallery.thumb_count == 5
    assert set(w.training_panel.curve_names()) == {"classifier loss", "segmenter loss", "segmenter val_loss"}
    # overlays: prediction and fused attention on this slice; pseudo mask when switched on
    assert w.view.layer_image("prediction") is not None
    assert w.view.layer_image("prediction")[..., 3].any()
    assert w.view.layer_image("attention") is not None
    w.overlay_panel.checks["pseudo"].setChecked(True)
    assert w.view.layer_image("pseudo") is not None
    w.overlay_panel.checks["attention"].setChecked(False)
    assert w.view.layer_image("attention") is None
    # a slice without maps offers to jump to one that has them
    w.view.set_slice(0)
    assert w.gallery.thumb_count == 0 and w.gallery._jump.isVisibleTo(w.gallery)
    w.gallery._jump.click()
    assert w.view.index in (mid, mid + 1)
    assert "Done" in w.training_panel.progress.format() or "Done" in w.training_panel.status.text()


def test_cancel_training(qtbot, demo_window, fake_training):
    w = demo_window
    _, kwargs = fake_training
    kwargs.update(epochs=500, step_s=0.02)
    w.actions_by_name["train"].trigger()
    qtbot.waitUntil(lambda: bool(w.training_panel.curve_names()), timeout=120000)
    assert not w.actions_by_name["train"].isEnabled()
    assert w.actions_by_name["cancel"].isEnabled()
    w.training_panel.cancel_button.click()
    wait_idle(qtbot, w, timeout=120000)
    assert "cancelled" in w.training_panel.status.text()
    assert w.session.prediction is None
    assert w.actions_by_name["train"].isEnabled()


def test_training_runs_on_the_job_thread_and_the_window_handles_events_meanwhile(qtbot, demo_window,
                                                                                   fake_training):
    """No clock: the training's steps run on the job thread, and after each progress update and each epoch's maps
    the job waits until the GUI thread has handled an event posted then (GuiPing), so the window's event loop ran
    between every two updates while the job was busy. How long the GUI thread stalls is measured by
    benchmarks/gui_stall.py."""
    w = demo_window
    _, kwargs = fake_training
    wait_started_up(qtbot, w)
    ping = GuiPing(lambda: w.jobs.busy)
    ping.answered = []
    threads = []
    kwargs.update(epochs=3, step_s=0.005, steps_per_epoch=4, threads=threads, ping=ping)
    w.view.set_slice(w.session.study.n_slices // 2)
    w.actions_by_name["train"].trigger()
    wait_idle(qtbot, w, timeout=180000)
    qtbot.waitUntil(lambda: w.session.prediction is not None, timeout=180000)
    assert len(threads) == 12 and ping.gui_thread not in threads
    assert ping.answered == [True] * (12 + 3)
    assert ping.answers == [(ping.gui_thread, True)] * (12 + 3)
