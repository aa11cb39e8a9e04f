"""Help > About names the versions a support request needs: app, torch, CUDA and the training device."""
import torch
from PySide6.QtWidgets import QMessageBox

from covidseg_core import __version__


def test_about_shows_app_torch_cuda_and_device(window, monkeypatch):
    shown = {}
    monkeypatch.setattr(QMessageBox, "about", lambda parent, title, text: shown.update(title=title, text=text))
    window.actions_by_name["about"].trigger()
    text = shown["text"]
    assert __version__ in text and torch.__version__ in text
    assert "CUDA" in text and "Training device" in text
