"""Slice labels: the buttons (which trigger the window's actions, so keys and clicks do the same), the counts, and a
strip that shows every slice's label by colour (click it to go to a slice)."""
from __future__ import annotations

from PySide6.QtCore import QRectF, QSize, Qt, Signal
from PySide6.QtGui import QAction, QColor, QPainter, QPen
from PySide6.QtWidgets import QGridLayout, QGroupBox, QLabel, QToolButton, QVBoxLayout, QWidget

from .action_button import action_button

LABEL_COLORS = {"infected": QColor(226, 74, 51), "clean": QColor(70, 170, 90), None: QColor(85, 90, 100)}
CORRECTED_COLOR = QColor(255, 209, 102)
SUGGESTED_COLOR = QColor(90, 170, 255)


class SliceStrip(QWidget):
    """One thin cell per slice, coloured by label; the current slice outlined; corrected slices dotted; slices
    suggested for labelling marked with a blue bar underneath."""

    slice_clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("sliceStrip")
        self._labels: list[str | None] = []
        self._corrected: set[int] = set()
        self._suggested: set[int] = set()
        self._current = -1
        self.setMinimumHeight(26)
        self.setMouseTracking(True)

    def sizeHint(self) -> QSize:
        return QSize(300, 30)

    def set_labels(self, labels: list[str | None]) -> None:
        self._labels = list(labels)
        self.update()

    def set_corrected(self, indices) -> None:
        self._corrected = set(indices)
        self.update()

    def set_current(self, index: int) -> None:
        self._current = index
        self.update()

    def set_suggested(self, indices) -> None:
        self._suggested = set(indices)
        self.update()

    def suggested(self) -> set[int]:
        return set(self._suggested)

    def labels(self) -> list[str | None]:
        return list(self._labels)

    def _index_at(self, x: float) -> int:
        n = len(self._labels)
        return -1 if n == 0 else int(min(max(x / max(self.width(), 1) * n, 0), n - 1))

    def mousePressEvent(self, ev):
        i = self._index_at(ev.position().x())
        if i >= 0:
            self.slice_clicked.emit(i)

    def mouseMoveEvent(self, ev):
        i = self._index_at(ev.position().x())
        if i >= 0:
            lab = self._labels[i] or "unlabelled"
            self.setToolTip(f"Slice {i + 1}: {lab}{' (corrected)' if i in self._corrected else ''}"
                            f"{' (suggested: label it next)' if i in self._suggested else ''}")
            if ev.buttons() & Qt.MouseButton.LeftButton:
                self.slice_clicked.emit(i)

    def paintEvent(self, ev):
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(30, 33, 38))
        n = len(self._labels)
        if n == 0:
            p.end()
            return
        w, h = self.width(), self.height()
        cell = w / n
        gap = 1.0 if cell > 4 else 0.0
        for i, lab in enumerate(self._labels):
            p.fillRect(QRectF(i * cell, 4, max(cell - gap, 1.0), h - 8), LABEL_COLORS.get(lab, LABEL_COLORS[None]))
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(CORRECTED_COLOR)
        for i in self._corrected:
            if 0 <= i < n:
                p.drawEllipse(QRectF(i * cell + cell / 2 - 2, 0, 4, 4))
        p.setBrush(SUGGESTED_COLOR)
        for i in self._suggested:
            if 0 <= i < n:
                p.drawRect(QRectF(i * cell, h - 4, max(cell - gap, 1.0), 4))
        if 0 <= self._current < n:
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.setPen(QPen(QColor(255, 255, 255), 2))
            p.drawRect(QRectF(self._current * cell, 2, max(cell, 2), h - 4))
        p.end()


class LabelPanel(QGroupBox):
    """Label buttons, counts and the slice strip. The actions (with their shortcuts) belong to the main window."""

    def __init__(self, actions: dict[str, QAction], parent: QWidget | None = None):
        super().__init__("Slice labels", parent)
        self.setObjectName("labelPanel")
        grid = QGridLayout()
        order = ["infected", "clean", "unlabel", "next_unlabelled", "undo", "redo"]
        self.buttons: dict[str, QToolButton] = {}
        for k, key in enumerate(order):
            b = self.buttons[key] = action_button(actions[key], f"label_{key}")
            grid.addWidget(b, k // 2, k % 2)
        self.current_label = QLabel("")
        self.current_label.setObjectName("currentLabel")
        self.counts = QLabel("")
        self.counts.setObjectName("labelCounts")
        self.counts.setWordWrap(True)
        self.strip = SliceStrip()
        layout = QVBoxLayout(self)
        layout.addWidget(self.current_label)
        layout.addLayout(grid)
        layout.addWidget(self.strip)
        layout.addWidget(self.counts)
        self.set_counts({"infected": 0, "clean": 0, "unlabelled": 0})

    def set_counts(self, counts: dict[str, int]) -> None:
        inf, cle, unl = counts.get("infected", 0), counts.get("clean", 0), counts.get("unlabelled", 0)
        self.counts.setText(f"<span style='color:#e24a33'>■</span> infected <b>{inf}</b> &nbsp; "
                            f"<span style='color:#46aa5a'>■</span> clean <b>{cle}</b> &nbsp; "
                            f"<span style='color:#8a8f99'>■</span> unlabelled <b>{unl}</b>")

    def set_current(self, index: int, label: str | None, corrected: bool) -> None:
        text = f"Slice {index + 1}: <b>{label or 'unlabelled'}</b>"
        if corrected:
            text += " &nbsp;<span style='color:#ffd166'>● corrected</span>"
        self.current_label.setText(text)
        self.strip.set_current(index)
