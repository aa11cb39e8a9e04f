"""The panels follow the session: for each session signal (and slice or window change of the view), which
panels and layers show it again. Part of the main window's wiring, kept apart so that main_window.py stays the
layout and the actions."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject

from .errors_ui import show_warnings
from .slice_view import WINDOW_PRESETS

APP_TITLE = "CovidSeg Assist"


class PanelSync(QObject):
    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.session = s = window.session
        v = window.view
        v.slice_changed.connect(self.on_slice_changed)
        v.window_changed.connect(self.on_window_changed)
        window.gallery.go_to_slice.connect(self.go_to_slice_id)
        s.study_changed.connect(self.on_study_changed)
        s.labels_changed.connect(self.on_labels_changed)
        s.corrections_changed.connect(self.on_corrections_changed)
        s.history_changed.connect(self.on_history_changed)
        s.results_changed.connect(self.on_results_changed)
        s.attention_changed.connect(self.on_attention_changed)
        s.runs_changed.connect(self.refresh_runs)
        s.studies_changed.connect(self.refresh_studies)
        s.project_changed.connect(self.refresh_studies)
        s.suggestions_changed.connect(self.on_suggestions_changed)
        window.study_panel.study_clicked.connect(window.controller.switch_study)
        window.controller.slice_requested.connect(self.go_to_slice_id)
        self._shown_shape = None        # the slice shape on screen: a study of the same shape keeps the zoom

    def on_study_changed(self) -> None:
        w = self.window
        s = self.session
        study = s.study
        if study is None:
            w.view.set_volume(None)
        else:
            keep = w.view.view_range() if self._shown_shape == tuple(study.shape[1:]) else None
            window = w.prefs.hu_window(w.view.window) if study.is_hu else None
            w.view.set_volume(study.array, study.is_hu, study.spacing, window)
            w.view.set_view_range(keep)          # switching studies keeps window/level (prefs) and zoom
            self._shown_shape = tuple(study.shape[1:])
            name = Path(study.source).name
            w.setWindowTitle(f"{name} — {s.project.name} — {APP_TITLE}")
            if study.warnings:
                show_warnings(w, "Study read with warnings", f"{name} was opened, but note:", study.warnings)
        self.on_labels_changed([])
        self.on_corrections_changed([])
        w.quant_panel.set_result(None, None)
        w.training_panel.clear_curves()          # the curves belong to the previous study's training
        self.refresh_studies()
        self.on_suggestions_changed()
        w._update_enabled()
        self.on_slice_changed(w.view.index)

    def on_labels_changed(self, _ids: list) -> None:
        w = self.window
        s = self.session
        w.label_panel.strip.set_labels(s.label_list())
        w.label_panel.set_counts(s.counts())
        self.update_current_label()

    def on_corrections_changed(self, _ids: list) -> None:
        w = self.window
        w.label_panel.strip.set_corrected(self.session.corrected_indices())
        w.view.discard_edit()
        self.update_current_label()

    def on_history_changed(self, info: dict) -> None:
        w = self.window
        a = w.actions_by_name
        a["undo"].setEnabled(bool(info.get("can_undo")))
        a["redo"].setEnabled(bool(info.get("can_redo")))
        a["undo"].setToolTip(info.get("undo_text") or "Undo")
        a["redo"].setToolTip(info.get("redo_text") or "Redo")

    def on_results_changed(self) -> None:
        w = self.window
        w.view.refresh_layers()
        what = "prediction with corrections" if self.session.corrected_indices() else "prediction"
        w.quant_panel.set_result(self.session.quantification, what)
        w.quant_panel.set_slice(w.view.index)
        w._update_enabled()

    def on_attention_changed(self, slice_ids: list) -> None:
        w = self.window
        s = self.session
        if s.study is None:
            return
        if not slice_ids or s.slice_id(w.view.index) in slice_ids:
            self.update_gallery()
            w.controller.later(("layers",), w.view.refresh_layers)
        elif not s.attention_for(w.view.index):
            self.update_gallery()      # keep the "show a slice with maps" offer current

    def on_slice_changed(self, index: int) -> None:
        w = self.window
        if not self.session.has_study or index < 0:
            return
        self.update_current_label()
        w.quant_panel.set_slice(index)
        self.update_gallery()

    def update_current_label(self) -> None:
        w = self.window
        s, i = self.session, w.view.index
        if s.has_study and i >= 0:
            w.label_panel.set_current(i, s.label_of(i), i in set(s.corrected_indices()))

    def update_gallery(self) -> None:
        w = self.window
        s, i = self.session, w.view.index
        if s.study is None or i < 0:
            return
        hist = s.attention_for(i)
        other = None
        if hist is None and s.attention:       # the nearest slice the trainer reports maps for
            index_of = {sid: k for k, sid in enumerate(s.study.slice_ids)}
            other = min(s.attention, key=lambda sid: abs(index_of.get(sid, 10**9) - i))
        w.gallery.show_history(f"slice {i + 1}", w.view.gray(i), hist, other)

    def go_to_slice_id(self, slice_id: str) -> None:
        w = self.window
        if self.session.study is not None and slice_id in self.session.study.slice_ids:
            w.view.set_slice(self.session.study.slice_index(slice_id))

    def refresh_studies(self) -> None:
        w = self.window
        rows = self.session.study_rows()
        w.study_panel.set_rows(rows)
        w._update_enabled()
        w.actions_by_name["locate_study"].setEnabled(any(not r["present"] for r in rows))

    def on_suggestions_changed(self) -> None:
        self.window.label_panel.strip.set_suggested(self.session.suggested_indices())

    def refresh_runs(self) -> None:
        w = self.window
        p = self.session.project
        w.training_panel.set_runs(p.runs if p is not None else [])

    def on_window_changed(self, width: float, level: float) -> None:
        w = self.window
        if w.view.is_hu:
            w.prefs.set_hu_window(width, level)
        for name, preset in WINDOW_PRESETS.items():
            act = w.actions_by_name[name]
            act.blockSignals(True)
            act.setChecked(w.view.is_hu and (width, level) == preset)
            act.blockSignals(False)
        if self.session.study is not None:
            self.update_gallery()
