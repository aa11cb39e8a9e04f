"""The project's studies: one row per study with its label counts, training status and burden; click one to show
it, Add study / Remove (undoable with Ctrl+Z while the project is open). The buttons trigger the window's
actions, so keys and clicks do the same."""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QColor
from PySide6.QtWidgets import (QGroupBox, QHBoxLayout, QListWidget, QListWidgetItem, QToolButton,
                               QVBoxLayout, QWidget)

from .action_button import action_button

MISSING_COLOR = QColor(200, 120, 60)


def row_text(row: dict) -> str:
    c = row["counts"]
    counts = f"{c.get('infected', 0)} infected · {c.get('clean', 0)} clean"
    if c.get("unlabelled") is not None:
        counts += f" · {c['unlabelled']} unlabelled"
    status = row.get("status") or "not trained"
    if row.get("burden_ml") is not None:
        status += f" · {row['burden_ml']:.1f} mL"
    name = row["name"] + ("" if row["present"] else "  (missing)")
    return f"{name}  [{row['id']}]\n{counts}\n{status}"


class StudyPanel(QGroupBox):
    study_clicked = Signal(str)         # source id

    def __init__(self, actions: dict[str, QAction], parent: QWidget | None = None):
        super().__init__("Studies", parent)
        self.setObjectName("studyPanel")
        self.list = QListWidget()
        self.list.setObjectName("studyList")
        self.list.setMinimumHeight(110)
        self.list.itemClicked.connect(lambda item: self.study_clicked.emit(item.data(Qt.ItemDataRole.UserRole)))
        buttons = QHBoxLayout()
        self.buttons: dict[str, QToolButton] = {}
        for key in ("add_study", "remove_study", "locate_study", "suggest"):
            b = self.buttons[key] = action_button(actions[key], f"study_{key}")
            buttons.addWidget(b)
        layout = QVBoxLayout(self)
        layout.addWidget(self.list)
        layout.addLayout(buttons)

    def set_rows(self, rows: list[dict]) -> None:
        self.list.blockSignals(True)
        self.list.clear()
        for row in rows:
            item = QListWidgetItem(row_text(row))
            item.setData(Qt.ItemDataRole.UserRole, row["id"])
            if not row["present"]:
                item.setForeground(MISSING_COLOR)
                item.setToolTip("The study's files were moved or deleted; its labels are kept. Locate… points the "
                                "project at their new place.")
            self.list.addItem(item)
            if row["current"]:
                item.setSelected(True)
                self.list.setCurrentItem(item)
        self.list.blockSignals(False)
        self.buttons["locate_study"].setVisible(any(not row["present"] for row in rows))    # only when needed

    def selected_id(self) -> str | None:
        item = self.list.currentItem()
        return None if item is None else item.data(Qt.ItemDataRole.UserRole)

    def ids(self) -> list[str]:
        return [self.list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.list.count())]
