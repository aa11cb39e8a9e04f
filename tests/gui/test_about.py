"""Help > About names the versions a support request needs: app, torch, CUDA and the training device."""
from PySide6.QtWidgets import QMessageBox

from covidseg_core import __version__
from gui_helpers import wait_idle


def test_about_shows_app_torch_cuda_and_device(window, qtbot, monkeypatch):
    import torch

    qtbot.waitUntil(lambda: getattr(window, "_environment", None) is not None, timeout=180000)
    wait_idle(qtbot, window)
    shown = {}
    monkeypatch.setattr(QMessageBox, "about", lambda parent, title, text: shown.update(title=title, text=text))
    window.actions_by_name["about"].trigger()
    text = shown["text"]
    assert __version__ in text and torch.__version__ in text
    assert f"CUDA {torch.version.cuda or 'none (CPU build)'}" in text
    assert "Training device: " + window.device_label.text() in text
