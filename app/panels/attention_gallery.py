"""For the current slice: the classifier's CAM after every epoch so far, then the fused map, filled in as the
epochs finish. This is where the user sees attention fusion at work (METHOD.md, stage 1 step 4)."""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QPushButton, QScrollArea, QSizePolicy, QVBoxLayout,
                               QWidget)

from ..image_utils import blend_heat, rgb_to_pixmap
from ..session import AttentionHistory

THUMB = 112


class _Thumb(QWidget):
    def __init__(self, rgb: np.ndarray, caption: str, highlight: bool = False):
        super().__init__()
        pic = QLabel()
        pic.setPixmap(rgb_to_pixmap(rgb))
        pic.setAlignment(Qt.AlignmentFlag.AlignCenter)
        pic.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        if highlight:
            pic.setStyleSheet("border: 2px solid #ffd166;")
        cap = QLabel(caption)
        cap.setAlignment(Qt.AlignmentFlag.AlignCenter)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.setSpacing(2)
        lay.addWidget(pic)
        lay.addWidget(cap)
        lay.addStretch(1)


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
        self._fused_widget = None
        while self._row.count() > 1:
            item = self._row.takeAt(0)
            if item.widget() is not None:
                item.widget().hide()          # deleted at the next event-loop turn; gone from view now
                item.widget().deleteLater()
        self.thumb_count = 0

    def show_history(self, slice_label: str, gray01: np.ndarray | None, hist: AttentionHistory | None,
                     other_slice: str | None = None) -> None:
        """Show the maps of one slice. `other_slice`: a slice id that has maps, offered when this one has none.

        When only new epochs arrived for the slice already shown, only their thumbnails are added (this runs on
        the GUI thread while training runs, after every epoch)."""
        self._jump_target = other_slice
        if hist is None or (not hist.cams and hist.fused is None):
            self._clear()
            self._shown = None
            self._title.setText(f"Attention maps — {slice_label}: none yet. The classifier reports them for "
                                "some infected slices after each epoch.")
            self._jump.setVisible(other_slice is not None)
            return
        self._jump.setVisible(False)
        self._title.setText(f"Attention maps — {slice_label}: CAM after each classifier epoch, then the fused map")
        cams = sorted(hist.cams, key=lambda c: c[0])
        epochs = [e for e, _ in cams]
        key = (slice_label, id(gray01) if gray01 is None else gray01.shape, float(gray01.mean()) if gray01 is not None
               else 0.0)
        shown = getattr(self, "_shown", None)
        if shown is not None and shown[0] == key and epochs[:len(shown[1])] == shown[1]:
            new = cams[len(shown[1]):]          # same slice and display: append the new epochs only
            start = len(shown[1])
            self._remove_fused()
        else:
            self._clear()
            new, start = cams, 0
        for k, (epoch, cam) in enumerate(new):
            self._row.insertWidget(start + k, _Thumb(blend_heat(gray01, cam, THUMB), f"epoch {epoch}"))
        n = len(cams)
        if hist.fused is not None:
            caption = f"fused (to epoch {hist.fused_epoch})" if hist.fused_epoch else "fused (final, from the run)"
            self._fused_widget = _Thumb(blend_heat(gray01, hist.fused, THUMB), caption, highlight=True)
            self._row.insertWidget(n, self._fused_widget)
            n += 1
        self._shown = (key, epochs)
        self.thumb_count = n
        self._scroll.horizontalScrollBar().setValue(self._scroll.horizontalScrollBar().maximum())

    def _remove_fused(self) -> None:
        w = getattr(self, "_fused_widget", None)
        if w is not None:
            self._row.removeWidget(w)
            w.hide()
            w.deleteLater()
            self._fused_widget = None

    def _on_jump(self) -> None:
        if self._jump_target is not None:
            self.go_to_slice.emit(self._jump_target)
