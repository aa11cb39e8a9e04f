"""For the current slice: the classifier's CAM after every epoch so far, then the fused map, filled in as the
epochs finish. This is where the user sees attention fusion at work (METHOD.md, stage 1 step 4)."""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QPushButton, QScrollArea, QVBoxLayout, QWidget)

from .image_utils import blend_heat, rgb_to_pixmap
from .session import AttentionHistory

THUMB = 112


class _Thumb(QWidget):
    def __init__(self, rgb: np.ndarray, caption: str, highlight: bool = False):
        super().__init__()
        pic = QLabel()
        pic.setPixmap(rgb_to_pixmap(rgb))
        pic.setAlignment(Qt.AlignmentFlag.AlignCenter)
        if highlight:
            pic.setStyleSheet("border: 2px solid #ffd166;")
        cap = QLabel(caption)
        cap.setAlignment(Qt.AlignmentFlag.AlignCenter)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.setSpacing(2)
        lay.addWidget(pic)
        lay.addWidget(cap)


class AttentionGallery(QWidget):
    """A horizontal strip of thumbnails: epoch 1 .. n CAMs, then the fused map."""

    go_to_slice = Signal(str)        # a slice id that has maps (when the current one has none)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("attentionGallery")
        self._title = QLabel("Attention maps")
        self._title.setObjectName("attentionTitle")
        self._jump = QPushButton("Show a slice with maps")
        self._jump.setVisible(False)
        self._jump.clicked.connect(self._on_jump)
        self._jump_target: str | None = None
        self._row = QHBoxLayout()
        self._row.setContentsMargins(0, 0, 0, 0)
        self._row.addStretch(1)
        holder = QWidget()
        holder.setLayout(self._row)
        self._scroll = QScrollArea()
        self._scroll.setWidget(holder)
        self._scroll.setWidgetResizable(True)
        self._scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self._scroll.setMinimumHeight(THUMB + 50)
        head = QHBoxLayout()
        head.addWidget(self._title, 1)
        head.addWidget(self._jump)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(head)
        lay.addWidget(self._scroll, 1)
        self.thumb_count = 0          # epochs + fused shown now (tests read it)

    def _clear(self) -> None:
        while self._row.count() > 1:
            item = self._row.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.thumb_count = 0

    def show_history(self, slice_label: str, gray01: np.ndarray | None, hist: AttentionHistory | None,
                     other_slice: str | None = None) -> None:
        """Show the maps of one slice. `other_slice`: a slice id that has maps, offered when this one has none."""
        self._clear()
        self._jump_target = other_slice
        if hist is None or (not hist.cams and hist.fused is None):
            self._title.setText(f"Attention maps — {slice_label}: none yet. The classifier reports them for "
                                "some infected slices after each epoch.")
            self._jump.setVisible(other_slice is not None)
            return
        self._jump.setVisible(False)
        self._title.setText(f"Attention maps — {slice_label}: CAM after each classifier epoch, then the fused map")
        widgets = [_Thumb(blend_heat(gray01, cam, THUMB), f"epoch {epoch}") for epoch, cam in sorted(hist.cams,
                                                                                                  key=lambda c: c[0])]
        if hist.fused is not None:
            widgets.append(_Thumb(blend_heat(gray01, hist.fused, THUMB), f"fused (to epoch {hist.fused_epoch})",
                                  highlight=True))
        for k, w in enumerate(widgets):
            self._row.insertWidget(k, w)
        self.thumb_count = len(widgets)
        self._scroll.horizontalScrollBar().setValue(self._scroll.horizontalScrollBar().maximum())

    def _on_jump(self) -> None:
        if self._jump_target is not None:
            self.go_to_slice.emit(self._jump_target)
