"""Training settings of the project (fusion, epochs, image size, device, seed). Saved in the project through
Project.update_settings and written into every run's config by the core."""
from __future__ import annotations

from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QFormLayout, QLabel, QSpinBox, QVBoxLayout,
                               QWidget)

from covidseg_core.train_config import FAST_PRESET      # plain data: no torch on the GUI thread


def defaults() -> dict:
    """What the app trains with when the project has no setting yet: the core's fast preset (one study, a
    laptop CPU: about a minute on the demo), average fusion as in the paper."""
    return {"fusion": "avg", "device": "auto", "seed": 0, **FAST_PRESET}


FUSION_TEXT = {"avg": "average (the paper's choice)", "max": "maximum (OAA)", "none": "none (plain CAM of the last "
                                                                                         "epoch)"}
DEVICE_TEXT = {"auto": "automatic (GPU when there is one)", "cpu": "CPU", "cuda": "GPU (CUDA)"}


def effective_settings(project_settings: dict) -> dict:
    return {**defaults(), **{k: v for k, v in project_settings.items() if v is not None}}


class SettingsDialog(QDialog):
    def __init__(self, settings: dict, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Training settings")
        self.setObjectName("settingsDialog")
        s = effective_settings(settings)
        self.fusion = QComboBox()
        for key, text in FUSION_TEXT.items():
            self.fusion.addItem(text, key)
        self.fusion.setCurrentIndex(list(FUSION_TEXT).index(s["fusion"]) if s["fusion"] in FUSION_TEXT else 0)
        self.cls_epochs = self._spin(1, 500, s["cls_epochs"])
        self.seg_epochs = self._spin(1, 500, s["seg_epochs"])
        self.image_size = self._spin(32, 1024, s["size"], step=32, suffix=" px")
        self.device = QComboBox()
        for key, text in DEVICE_TEXT.items():
            self.device.addItem(text, key)
        self.device.setCurrentIndex(list(DEVICE_TEXT).index(s["device"]) if s["device"] in DEVICE_TEXT else 0)
        self.seed = self._spin(0, 2**31 - 1, s["seed"])
        form = QFormLayout()
        form.addRow("Attention fusion:", self.fusion)
        form.addRow("Classifier epochs:", self.cls_epochs)
        form.addRow("Segmenter epochs:", self.seg_epochs)
        form.addRow("Image size for the networks:", self.image_size)
        form.addRow("Device:", self.device)
        form.addRow("Random seed:", self.seed)
        note = QLabel("Saved in the project and recorded in every run, so a run can be repeated.")
        note.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(note)
        lay.addWidget(buttons)

    @staticmethod
    def _spin(lo: int, hi: int, value: int, step: int = 1, suffix: str = "") -> QSpinBox:
        sb = QSpinBox()
        sb.setRange(lo, hi)
        sb.setSingleStep(step)
        sb.setValue(int(value))
        sb.setSuffix(suffix)
        return sb

    def values(self) -> dict:
        return {"fusion": self.fusion.currentData(), "cls_epochs": self.cls_epochs.value(),
                "seg_epochs": self.seg_epochs.value(), "size": self.image_size.value(),
                "device": self.device.currentData(), "seed": self.seed.value()}
