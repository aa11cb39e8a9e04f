"""Infected volume (mL) and share of the lung volume (%), for the study and the current slice, as the core's
covidseg_core.results.quantify computed them."""
from __future__ import annotations

from PySide6.QtWidgets import QFormLayout, QGroupBox, QLabel, QVBoxLayout, QWidget


class QuantPanel(QGroupBox):
    def __init__(self, parent: QWidget | None = None):
        super().__init__("Quantification", parent)
        self.setObjectName("quantPanel")
        self._result: dict | None = None
        self.study_line = QLabel("—")
        self.study_line.setObjectName("quantStudy")
        self.slice_line = QLabel("—")
        self.slice_line.setObjectName("quantSlice")
        self.source_line = QLabel("")
        self.source_line.setWordWrap(True)
        self.source_line.setStyleSheet("color: #9aa3ad;")
        form = QFormLayout()
        form.addRow("Study:", self.study_line)
        form.addRow("This slice:", self.slice_line)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.source_line)
        self.set_result(None, None)

    def set_result(self, result: dict | None, what: str | None) -> None:
        self._result = result
        if result is None:
            self.study_line.setText("—")
            self.slice_line.setText("—")
            self.source_line.setText("Train (or predict) to measure the infected volume.")
            return
        self.study_line.setText(f"<b>{result['infected_ml']:.1f} mL</b> infected, "
                                f"<b>{result['infected_percent']:.1f} %</b> of {result['lung_ml']:.0f} mL lung")
        self.source_line.setText(f"From the {what or 'mask'}; voxel {result['voxel_ml'] * 1000:.2f} mm³"
                                 + ("" if result.get("values") == "HU" else
                                    " (image without HU: the lung field is found from intensities)"))

    def set_slice(self, index: int) -> None:
        if self._result is None or not (0 <= index < len(self._result.get("slices", []))):
            self.slice_line.setText("—")
            return
        row = self._result["slices"][index]
        self.slice_line.setText(f"{row['infected_ml']:.2f} mL, {row['infected_percent']:.1f} % of "
                                f"{row['lung_ml']:.1f} mL lung")
