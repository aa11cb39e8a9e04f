"""A panel button that mirrors one of the window's actions (text, enabled state, shortcut tooltip)."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QSizePolicy, QToolButton


def action_button(action: QAction, object_name: str) -> QToolButton:
    """A text-only button that stretches to share its row, named for tests and screenshots."""
    b = QToolButton()
    b.setDefaultAction(action)
    b.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
    b.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
    b.setObjectName(object_name)
    return b
