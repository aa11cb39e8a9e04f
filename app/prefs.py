"""UI preferences kept between sessions through QSettings: recent projects, overlays, window/level, layout.
Training settings are not here: they belong to the project (Project.settings) and are written into each run."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings

from covidseg_core.project.store import PROJECT_FILE

MAX_RECENT = 8


class Prefs:
    def __init__(self, settings: QSettings | None = None):
        self.q = settings or QSettings()

    # recent projects ---------------------------------------------------------------------------------------
    def recent_projects(self) -> list[str]:
        value = self.q.value("recent_projects", [])
        if isinstance(value, str):
            value = [value]
        return [v for v in (value or []) if isinstance(v, str) and (Path(v) / PROJECT_FILE).is_file()]

    def add_recent_project(self, folder: str | Path) -> None:
        folder = str(Path(folder))
        items = [folder] + [p for p in self.recent_projects() if p != folder]
        self.q.setValue("recent_projects", items[:MAX_RECENT])

    # overlays ----------------------------------------------------------------------------------------------
    def overlay(self, name: str, default_visible: bool, default_opacity: float) -> tuple[bool, float]:
        vis = self.q.value(f"overlay/{name}/visible", default_visible)
        op = self.q.value(f"overlay/{name}/opacity", default_opacity)
        vis = vis in (True, "true", "1", 1) if not isinstance(vis, bool) else vis
        try:
            op = min(max(float(op), 0.0), 1.0)
        except (TypeError, ValueError):
            op = default_opacity
        return vis, op

    def set_overlay(self, name: str, visible: bool, opacity: float) -> None:
        self.q.setValue(f"overlay/{name}/visible", bool(visible))
        self.q.setValue(f"overlay/{name}/opacity", float(opacity))

    # window / level (HU studies only: 8-bit images are shown as they are) ----------------------------------
    def hu_window(self, default: tuple[float, float]) -> tuple[float, float]:
        w = self.q.value("hu_window/width", default[0])
        l = self.q.value("hu_window/level", default[1])
        try:
            return float(w), float(l)
        except (TypeError, ValueError):
            return default

    def set_hu_window(self, width: float, level: float) -> None:
        self.q.setValue("hu_window/width", float(width))
        self.q.setValue("hu_window/level", float(level))

    # layout ------------------------------------------------------------------------------------------------
    def layout(self) -> tuple[QByteArray | None, QByteArray | None]:
        g, s = self.q.value("window/geometry"), self.q.value("window/state")
        return (g if isinstance(g, QByteArray) else None, s if isinstance(s, QByteArray) else None)

    def set_layout(self, geometry: QByteArray, state: QByteArray) -> None:
        self.q.setValue("window/geometry", geometry)
        self.q.setValue("window/state", state)
