"""The app icon, drawn with QPainter (same design as resources/icon.svg) so no image plugin is needed."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QIcon, QPainter, QPainterPath, QPen, QPixmap

RESOURCES = Path(__file__).resolve().parents[1] / "resources"


def _lung(mirror: bool) -> QPainterPath:
    def x(v: float) -> float:
        return 256 - v if mirror else v
    p = QPainterPath(QPointF(x(118), 62))
    p.cubicTo(QPointF(x(84), 58), QPointF(x(52), 96), QPointF(x(50), 150))
    p.cubicTo(QPointF(x(48), 192), QPointF(x(76), 208), QPointF(x(104), 200))
    p.cubicTo(QPointF(x(118), 196), QPointF(x(120), 184), QPointF(x(120), 170))
    p.closeSubpath()
    return p


def draw_icon(size: int) -> QPixmap:
    pm = QPixmap(size, size)
    pm.fill(Qt.GlobalColor.transparent)
    p = QPainter(pm)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.scale(size / 256.0, size / 256.0)
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(QColor("#1d2633"))
    p.drawRoundedRect(QRectF(8, 8, 240, 240), 44, 44)
    p.setBrush(QColor("#3a4656"))
    p.drawEllipse(QPointF(128, 132), 100, 92)
    p.setBrush(QColor("#0e141c"))
    p.drawPath(_lung(False))
    p.drawPath(_lung(True))
    p.setBrush(QColor("#8a97a8"))
    p.drawRoundedRect(QRectF(121, 40, 14, 46), 7, 7)
    lesion = QColor("#e4572e")
    lesion.setAlphaF(0.85)
    p.setBrush(QBrush(lesion))
    p.setPen(QPen(QColor("#ffd166"), 5))
    p.drawEllipse(QPointF(170, 144), 22, 26)
    p.end()
    return pm


def app_icon() -> QIcon:
    icon = QIcon()
    for s in (16, 24, 32, 48, 64, 128, 256):
        icon.addPixmap(draw_icon(s))
    return icon
