"""Training settings of the project (fusion, synthetic lesions, training length, epochs, image size, device, seed). Saved in the
project through Project.update_settings and written into every run's config by the core.

"Automatic" (None) leaves a setting to the core, which decides on the job thread from the device and the time
budget (covidseg_core/budget.py): on a CUDA GPU the full size and schedule, on a CPU a time budget at a size and
width it can afford. The app never forces the --fast preset."""
from __future__ import annotations

from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout, QLabel, QSpinBox,
                               QVBoxLayout, QWidget)

from covidseg_core.budget import DEFAULT_CPU_BUDGET_MIN   # plain data: no torch on the GUI thread
from covidseg_core.train_config import TrainConfig         # plain data too


def defaults() -> dict:
    """What the app trains with when the project has no setting yet: average fusion as in the paper, the rest
    decided by the core for the device (None = automatic)."""
    return {"fusion": "avg", "synthetic": TrainConfig.synthetic, "device": "auto", "seed": 0, "budget_minutes": None,
            "cls_epochs": None, "seg_epochs": None, "size": None}


FUSION_TEXT = {"avg": "average (the paper's choice)", "max": "maximum (OAA)", "none": "none (plain CAM of the last "
                                                                                         "epoch)"}
SYNTHETIC_TEXT = {"only": "synthetic lesions on clean slices (recommended: best on unseen patients)",
                  "auto": "synthetic lesions + pseudo masks of the infected slices (label-free prior)",
                  "off": "attention maps' pseudo masks only (the paper's method)"}
DEVICE_TEXT = {"auto": "automatic (GPU when there is one)", "cpu": "CPU", "cuda": "GPU (CUDA)"}
LENGTH_TEXT = {"auto": f"automatic (GPU: full schedule; CPU: about {DEFAULT_CPU_BUDGET_MIN:g} min)",
               "budget": "a time budget", "fixed": "the fixed schedule (30 + 40 epochs)"}
AUTOMATIC = "automatic"


def effective_settings(project_settings: dict) -> dict:
    return {**defaults(), **{k: v for k, v in project_settings.items() if v is not None}}


def length_mode(budget_minutes) -> str:
    if budget_minutes is None:
        return "auto"
    return "fixed" if float(budget_minutes) == 0 else "budget"


class SettingsDialog(QDialog):
    def __init__(self, settings: dict, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Training settings")
        self.setObjectName("settingsDialog")
        s = effective_settings(settings)
        self.fusion = self._combo(FUSION_TEXT, s["fusion"])
        self.synthetic = self._combo(SYNTHETIC_TEXT, s["synthetic"])
        self.length = self._combo(LENGTH_TEXT, length_mode(s["budget_minutes"]))
        self.budget = QDoubleSpinBox()
        self.budget.setRange(0.5, 24 * 60)
        self.budget.setDecimals(1)
        self.budget.setSuffix(" min")
        self.budget.setValue(float(s["budget_minutes"] or DEFAULT_CPU_BUDGET_MIN))
        self.length.currentIndexChanged.connect(self._sync_budget)
        self._sync_budget()
        # 0 shows "automatic": the budget (or the fixed schedule) decides; a number wins for its stage
        self.cls_epochs = self._spin(0, 500, s["cls_epochs"] or 0, special=AUTOMATIC)
        self.seg_epochs = self._spin(0, 500, s["seg_epochs"] or 0, special=AUTOMATIC)
        self.image_size = self._spin(0, 1024, s["size"] or 0, step=32, suffix=" px", special=AUTOMATIC)
        self.device = self._combo(DEVICE_TEXT, s["device"])
        self.seed = self._spin(0, 2**31 - 1, s["seed"])
        form = QFormLayout()
        form.addRow("Attention fusion:", self.fusion)
        form.addRow("Pixel supervision:", self.synthetic)
        form.addRow("Training length:", self.length)
        form.addRow("Time budget:", self.budget)
        form.addRow("Classifier epochs:", self.cls_epochs)
        form.addRow("Segmenter epochs:", self.seg_epochs)
        form.addRow("Image size for the networks:", self.image_size)
        form.addRow("Device:", self.device)
        form.addRow("Random seed:", self.seed)
        note = QLabel("A time budget measures the speed of this computer and sizes both stages to fit; epochs you "
                      "set win for their stage. Saved in the project and recorded in every run (plan.json), so a "
                      "run can be repeated.")
        note.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(note)
        lay.addWidget(buttons)

    @staticmethod
    def _combo(texts: dict, current: str) -> QComboBox:
        box = QComboBox()
        for key, text in texts.items():
            box.addItem(text, key)
        box.setCurrentIndex(list(texts).index(current) if current in texts else 0)
        return box

    @staticmethod
    def _spin(lo: int, hi: int, value: int, step: int = 1, suffix: str = "", special: str = "") -> QSpinBox:
        sb = QSpinBox()
        sb.setRange(lo, hi)
        sb.setSingleStep(step)
        sb.setValue(int(value))
        sb.setSuffix(suffix)
        if special:
            sb.setSpecialValueText(special)
        return sb

    def _sync_budget(self) -> None:
        self.budget.setEnabled(self.length.currentData() == "budget")

    def budget_minutes(self) -> float | None:
        mode = self.length.currentData()
        return None if mode == "auto" else 0.0 if mode == "fixed" else float(self.budget.value())

    def values(self) -> dict:
        """The settings as the project keeps them; None (automatic) removes a setting."""
        def auto(spin: QSpinBox) -> int | None:
            return spin.value() or None
        return {"fusion": self.fusion.currentData(), "synthetic": self.synthetic.currentData(),
                "budget_minutes": self.budget_minutes(),
                "cls_epochs": auto(self.cls_epochs), "seg_epochs": auto(self.seg_epochs),
                "size": auto(self.image_size), "device": self.device.currentData(), "seed": self.seed.value()}
