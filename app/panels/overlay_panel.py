"""Overlay toggles with an opacity each, and the correction tools (brush, eraser, size)."""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (QCheckBox, QGridLayout, QGroupBox, QHBoxLayout, QLabel, QSlider, QSpinBox,
                               QToolButton, QVBoxLayout, QWidget)

LAYER_TITLES = {"prediction": "Prediction / correction", "pseudo": "Pseudo mask (grey = ignored)",
                "attention": "Fused attention"}


class OverlayPanel(QGroupBox):
    visibility_changed = Signal(str, bool)
    opacity_changed = Signal(str, float)
    brush_size_changed = Signal(int)

    def __init__(self, tool_actions: dict[str, QAction], parent: QWidget | None = None):
        super().__init__("Overlays and correction", parent)
        self.setObjectName("overlayPanel")
        grid = QGridLayout()
        self.checks: dict[str, QCheckBox] = {}
        self.sliders: dict[str, QSlider] = {}
        for row, (name, title) in enumerate(LAYER_TITLES.items()):
            cb = QCheckBox(title)
            cb.setObjectName(f"show_{name}")
            cb.toggled.connect(lambda on, n=name: self.visibility_changed.emit(n, on))
            sl = QSlider(Qt.Orientation.Horizontal)
            sl.setObjectName(f"opacity_{name}")
            sl.setRange(0, 100)
            sl.setToolTip("Opacity")
            sl.valueChanged.connect(lambda v, n=name: self.opacity_changed.emit(n, v / 100.0))
            grid.addWidget(cb, row, 0)
            grid.addWidget(sl, row, 1)
            self.checks[name], self.sliders[name] = cb, sl
        tools = QHBoxLayout()
        for key in ("brush", "eraser"):
            b = QToolButton()
            b.setDefaultAction(tool_actions[key])
            b.setObjectName(f"tool_{key}")
            tools.addWidget(b)
        tools.addWidget(QLabel("size"))
        self.brush_size = QSpinBox()
        self.brush_size.setObjectName("brushSize")
        self.brush_size.setRange(1, 40)
        self.brush_size.setValue(4)
        self.brush_size.setSuffix(" px")
        self.brush_size.valueChanged.connect(self.brush_size_changed)
        tools.addWidget(self.brush_size)
        tools.addStretch(1)
        hint = QLabel("Paint on the predicted mask; each stroke is saved as this slice's correction and used as "
                      "pixel supervision at the next training.")
        hint.setWordWrap(True)
        hint.setStyleSheet("color: #9aa3ad;")
        lay = QVBoxLayout(self)
        lay.addLayout(grid)
        lay.addLayout(tools)
        lay.addWidget(hint)

    def set_state(self, name: str, visible: bool, opacity: float) -> None:
        """Set without echoing signals back (used when restoring preferences)."""
        for w in (self.checks[name], self.sliders[name]):
            w.blockSignals(True)
        self.checks[name].setChecked(visible)
        self.sliders[name].setValue(int(round(opacity * 100)))
        for w in (self.checks[name], self.sliders[name]):
            w.blockSignals(False)
