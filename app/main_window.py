"""The main window: layout (view, docks, status bar), menus and actions (actions.py), and the wiring between
them, the session (session.py: the state), the controller (controller.py: the flows) and the job runner
(jobs.py: the one place threads start). No computation and no flow logic here."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, QTimer, Slot
from PySide6.QtWidgets import QDockWidget, QFileDialog, QLabel, QMainWindow, QScrollArea, QVBoxLayout, QWidget

from covidseg_core.errors import CovidSegError, ProjectError
from covidseg_core.events import EpochReport, Message, Progress

from . import results_menu, tasks
from .about import show_about, show_log_file
from .actions import make_actions, make_menus
from .controller import Controller
from .dialogs.export_dialog import ExportDialog
from .dialogs.open_dialogs import (ProjectFolderDialog, SeriesChooser, ask_study_path, default_project_folder,
                                  user_data_dir)
from .dialogs.settings_dialog import SettingsDialog, effective_settings
from .study_files import StudyDrops
from .errors_ui import show_error
from .jobs import JobRunner, run_light
from .panels.attention_gallery import AttentionGallery
from .panels.label_panel import LabelPanel
from .panels.overlay_panel import OverlayPanel
from .panels.quant_panel import QuantPanel
from .panels.study_panel import StudyPanel
from .panels.training_panel import TrainingPanel
from .panel_sync import APP_TITLE, PanelSync
from .prefs import Prefs
from .session import Session
from .slice_view import DEFAULT_OPACITY, LAYERS, WINDOW_PRESETS, SliceView

log = logging.getLogger(__name__)


class MainWindow(QMainWindow):
    def __init__(self, prefs: Prefs | None = None):
        super().__init__()
        self.setObjectName("mainWindow")
        self.setWindowTitle(APP_TITLE)
        self.resize(1400, 900)
        self.prefs = prefs or Prefs()
        self.session = Session(self)
        self.jobs = JobRunner(self)
        self.controller = Controller(self.session, self.jobs, self.prefs, self, self)
        self.ask_questions = True          # False: take the defaults (tests, scripted screenshots)
        self.export_dialog: ExportDialog | None = None
        self._device_text = "Device: …"
        self._environment: dict | None = None

        self.actions_by_name = make_actions(self)
        self.menus = menus = make_menus(self.menuBar(), self.actions_by_name)
        self.view_menu, self.recent_menu = menus["View"], menus["recent"]
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        self.view = SliceView()
        self.setCentralWidget(self.view)
        self.study_panel = StudyPanel(self.actions_by_name)
        self.label_panel = LabelPanel(self.actions_by_name)
        self.overlay_panel = OverlayPanel(self.actions_by_name)
        self.quant_panel = QuantPanel()
        self.training_panel = TrainingPanel(self.actions_by_name["train"], self.actions_by_name["cancel"])
        self.gallery = AttentionGallery()
        self._make_docks()
        self._make_status_bar()
        self._wire()
        self._restore_prefs()
        self.drops = StudyDrops(self)        # files and folders dropped on the window: studies
        self._update_enabled()
        QTimer.singleShot(0, self._probe_device)

    # ------------------------------------------------------------------------------------------ layout
    def _make_docks(self) -> None:
        side = QWidget()
        lay = QVBoxLayout(side)
        for panel in (self.study_panel, self.label_panel, self.overlay_panel, self.quant_panel):
            lay.addWidget(panel)
        lay.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(side)
        scroll.setWidgetResizable(True)
        scroll.setMinimumWidth(360)
        self.side_dock = self._dock("Study", "sideDock", scroll, Qt.DockWidgetArea.RightDockWidgetArea)
        self.train_dock = self._dock("Training", "trainingDock", self.training_panel,
                                     Qt.DockWidgetArea.BottomDockWidgetArea)
        self.gallery_dock = self._dock("Attention", "attentionDock", self.gallery,
                                       Qt.DockWidgetArea.BottomDockWidgetArea)
        self.splitDockWidget(self.train_dock, self.gallery_dock, Qt.Orientation.Horizontal)
        self.resizeDocks([self.train_dock], [300], Qt.Orientation.Vertical)
        for d in (self.side_dock, self.train_dock, self.gallery_dock):
            self.view_menu.addAction(d.toggleViewAction())

    def _dock(self, title: str, name: str, widget: QWidget, area) -> QDockWidget:
        d = QDockWidget(title, self)
        d.setObjectName(name)
        d.setWidget(widget)
        self.addDockWidget(area, d)
        return d

    def _make_status_bar(self) -> None:
        sb = self.statusBar()
        self.hover_label = QLabel("")
        self.hover_label.setObjectName("hoverLabel")
        self.job_label = QLabel("")
        self.device_label = QLabel(self._device_text)
        self.device_label.setObjectName("deviceLabel")
        sb.addWidget(self.hover_label, 1)
        sb.addPermanentWidget(self.job_label)
        sb.addPermanentWidget(self.device_label)

    def _wire(self) -> None:
        s, v, c, j = self.session, self.view, self.controller, self.jobs
        self.panels = PanelSync(self)
        v.link_activated.connect(self._on_welcome_link)
        v.hover_info.connect(self.hover_label.setText)
        v.stroke_finished.connect(self._on_stroke_finished)
        self.label_panel.strip.slice_clicked.connect(v.set_slice)
        self.overlay_panel.visibility_changed.connect(
            lambda n, on: self.actions_by_name[f"show_{n}"].setChecked(on))
        self.overlay_panel.opacity_changed.connect(self._set_layer_opacity)
        self.overlay_panel.brush_size_changed.connect(lambda r: setattr(v, "brush_radius", int(r)))
        s.project_changed.connect(self._on_project_changed)
        c.study_loaded.connect(lambda loaded: [self.training_panel.show_epoch(ev) for ev in loaded.epochs])
        c.training_started.connect(self.training_panel.clear_curves)
        c.exported.connect(lambda r: self.export_dialog is not None and self.export_dialog.set_done(r.files, r.notes))
        c.export_failed.connect(lambda text: self.export_dialog is not None and self.export_dialog.set_failed(text))
        j.started.connect(self._on_job_started)
        j.progress.connect(self._on_progress)
        j.epoch.connect(self._on_epoch)
        j.message.connect(self._on_message)
        j.failed.connect(self._on_job_failed)
        j.cancelled.connect(lambda name: self.training_panel.job_ended(
            f"{name} cancelled. Labels, corrections and earlier runs are kept."))
        j.finished.connect(self._on_job_finished)
        j.busy_changed.connect(lambda _: self._update_enabled())
        v.set_layer_source("prediction", s.mask_for)
        v.set_layer_source("pseudo", s.pseudo_for)
        v.set_layer_source("attention", s.fused_for)

    def _restore_prefs(self) -> None:
        for name in LAYERS:
            visible, opacity = self.prefs.overlay(name, name != "pseudo", DEFAULT_OPACITY[name])
            self.overlay_panel.set_state(name, visible, opacity)
            self.view.set_layer_opacity(name, opacity)
            self.actions_by_name[f"show_{name}"].setChecked(visible)
            self.view.set_layer_visible(name, visible)
        geometry, state = self.prefs.layout()
        if geometry is not None:
            self.restoreGeometry(geometry)
        if state is not None:
            self.restoreState(state)

    # ------------------------------------------------------------------------------------------ WindowPort
    def show_error(self, exc: BaseException) -> None:
        show_error(self, exc)

    def show_status(self, text: str, ms: int = 10000) -> None:
        self.statusBar().showMessage(text, ms)

    def ask_series(self, folder: Path, series: list) -> str | None:
        chooser = SeriesChooser(folder, series, self)
        if not self.ask_questions:
            return chooser.series_uid()
        return chooser.series_uid() if chooser.exec() else None

    def ask_project_folder(self, study_path: Path) -> Path | None:
        if not self.ask_questions:
            return default_project_folder(study_path)
        dlg = ProjectFolderDialog(study_path, self)
        return dlg.folder() if dlg.exec() else None

    # ------------------------------------------------------------------------------------------ actions
    def open_path(self, path: str | Path, project_folder: str | Path | None = None,
                  series_uid: str | None = None) -> None:
        self.controller.open_path(path, project_folder, series_uid)

    def open_demo(self) -> None:
        self.controller.open_demo()

    def choose_study(self) -> None:
        path = ask_study_path(self, "Open", folder=False)
        if path:
            self.open_path(path)

    def choose_image_folder(self) -> None:
        path = ask_study_path(self, "Open", folder=True)
        if path:
            self.open_path(path)

    def choose_study_to_add(self, folder: bool = False) -> None:
        path = ask_study_path(self, "Add", folder=folder)
        if path:
            self.controller.add_study(path)

    def remove_current_study(self) -> None:
        if self.session.has_study and not self.jobs.busy:
            self._try(lambda: self.controller.remove_study(self.session.source_id))

    def choose_project(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a project folder", str(user_data_dir()))
        if path:
            self.open_path(path)

    def _on_welcome_link(self, link: str) -> None:
        {"demo": self.open_demo, "open": self.choose_study, "open_folder": self.choose_image_folder,
         "project": self.choose_project}.get(link, lambda: None)()

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = self.prefs.recent_projects()
        if not recent:
            self.recent_menu.addAction("(none yet)").setEnabled(False)
        for folder in recent:
            self.recent_menu.addAction(folder, lambda f=folder: self.open_path(f))

    def label_current(self, label: str | None) -> None:
        if self.session.has_study:
            self._try(lambda: self.session.set_label(self.view.index, label))

    def go_next_unlabelled(self) -> None:
        if not self.session.has_study:
            return
        i = self.session.next_unlabelled(self.view.index)
        if i is None:
            self.show_status("Every slice is labelled.", 5000)
        else:
            self.view.set_slice(i)

    def undo(self) -> None:
        self._try(lambda: self.session.undo() or self.show_status("Nothing to undo.", 3000))

    def redo(self) -> None:
        self._try(lambda: self.session.redo() or self.show_status("Nothing to redo.", 3000))

    def _try(self, fn) -> None:
        try:
            fn()
        except CovidSegError as exc:
            show_error(self, exc)

    def training_settings(self) -> dict:
        return effective_settings(self.session.project.settings if self.session.project else {})

    def show_settings(self) -> None:
        if self.session.project is None:
            show_error(self, ProjectError("No project is open.", "Open a study or a project first."))
            return
        dlg = SettingsDialog(self.session.project.settings, self)
        if dlg.exec():
            self._try(lambda: self.session.project.update_settings(**dlg.values()))
            self._probe_device()

    def start_training(self) -> None:
        self.controller.start_training(self.training_settings())

    def start_prediction(self) -> None:
        self.controller.start_prediction(self.training_settings())

    # File > Export, Report, Open DICOM SEG: results_menu.py
    def show_export_dialog(self, fmt: str = "nifti") -> ExportDialog | None:
        return results_menu.show_export_dialog(self, fmt)

    def save_report(self, path: str | Path | None = None) -> bool:
        return results_menu.save_report(self, path)

    def choose_seg(self, path: str | Path | None = None) -> None:
        results_menu.choose_seg(self, path)

    def set_tool(self, tool: str, on: bool) -> None:
        other = self.actions_by_name["eraser" if tool == "brush" else "brush"]
        if on:
            other.blockSignals(True)
            other.setChecked(False)
            other.blockSignals(False)
            self.view.set_tool(tool)
            if not self.view.layer_visible("prediction"):
                self.actions_by_name["show_prediction"].setChecked(True)
        elif self.view.tool == tool:
            self.view.set_tool(None)

    @Slot(int, object)
    def _on_stroke_finished(self, index: int, mask: np.ndarray) -> None:
        if not self.session.has_study:
            return
        try:
            path = self.session.save_correction(index, mask)
        except CovidSegError as exc:
            show_error(self, exc)
            return
        self.show_status(f"Correction of slice {index + 1} saved ({path.name}).", 4000)
        if self.session.quantification is not None:
            self.controller.start_quantify()          # the volumes follow the corrected mask

    def set_layer_visible(self, name: str, on: bool) -> None:
        self.view.set_layer_visible(name, on)
        self.overlay_panel.set_state(name, on, self.view.layer_opacity(name))
        self.prefs.set_overlay(name, on, self.view.layer_opacity(name))

    def _set_layer_opacity(self, name: str, opacity: float) -> None:
        self.view.set_layer_opacity(name, opacity)
        self.prefs.set_overlay(name, self.view.layer_visible(name), opacity)

    # ------------------------------------------------------------------------------------------ job signals
    def _on_job_started(self, name: str) -> None:
        self.training_panel.job_started(name)
        self.job_label.setText(f"{name}…")

    def _on_progress(self, ev: Progress) -> None:
        self.training_panel.show_progress(ev)
        if ev.stage == "export" and self.export_dialog is not None:
            self.export_dialog.set_progress(ev.done, ev.total)

    def _on_epoch(self, ev: EpochReport) -> None:
        # each part repaints something: done in separate turns of the event loop (controller.later)
        self.controller.later(("plot", ev.stage, ev.epoch), lambda: self.training_panel.show_epoch(ev))
        if ev.maps:
            self.controller.later(("maps", ev.epoch), lambda: self.session.add_epoch_maps(ev.epoch, ev.maps))

    def _on_message(self, ev: Message) -> None:
        self.show_status(ev.text)
        if ev.level == "warning":
            log.warning("%s", ev.text)

    def _on_job_failed(self, name: str, exc: BaseException) -> None:
        self.training_panel.job_ended(f"{name} failed: {exc}")
        show_error(self, exc)

    def _on_job_finished(self, name: str, outcome: str) -> None:
        self.job_label.setText("")
        if outcome == "done":
            self.training_panel.job_ended(f"Done: {name.lower()}.")

    # ------------------------------------------------------------------------------------------ misc
    def _on_project_changed(self) -> None:
        p = self.session.project
        self.setWindowTitle(APP_TITLE if p is None else f"{p.name} — {APP_TITLE}")
        self.panels.refresh_runs()
        self._probe_device()
        self._update_enabled()


    def _update_enabled(self) -> None:
        has, busy, a = self.session.has_study, self.jobs.busy, self.actions_by_name
        for name in ("infected", "clean", "unlabel", "next_unlabelled", "brush", "eraser", *WINDOW_PRESETS, "fit",
                     "zoom_in", "zoom_out"):
            a[name].setEnabled(has)
        a["train"].setEnabled(has and not busy)
        a["predict"].setEnabled(has and not busy and self.controller.last_run_path() is not None)
        a["cancel"].setEnabled(busy)
        for name in ("export", "export_seg", "report"):
            a[name].setEnabled(has and not busy)
        a["open_seg"].setEnabled(self.session.project is not None and not busy)
        a["settings"].setEnabled(self.session.project is not None)
        several = self.session.project is not None and len(self.session.project.sources) > 1
        for name in ("prev_study", "next_study"):
            a[name].setEnabled(several and not busy)
        a["add_study"].setEnabled(not busy)
        a["add_study_folder"].setEnabled(not busy)
        a["remove_study"].setEnabled(has and not busy)
        a["suggest"].setEnabled(self.session.project is not None and not busy)
        for name in ("open_study", "open_image_folder", "open_project", "demo"):
            a[name].setEnabled(not busy)
        if self.session.project is None:
            a["undo"].setEnabled(False)
            a["redo"].setEnabled(False)

    def _probe_device(self) -> None:
        """Which device training will use, shown in the status bar (torch is imported off the GUI thread)."""
        p = self.session.project
        wanted = (p.settings if p is not None else {}).get("device") or "auto"   # no torch import here

        def show(result: tuple[str, dict]) -> None:
            self._device_text, self._environment = result
            self.device_label.setText(self._device_text)

        def failed(exc: BaseException) -> None:
            self._device_text = f"Device: unknown ({type(exc).__name__}: {exc})"
            self.device_label.setText(self._device_text)
        run_light(lambda: tasks.describe_device(wanted), show, self, failed)

    def show_log(self) -> None:
        show_log_file(self)

    def about(self) -> None:
        show_about(self, self._environment, self._device_text)

    def closeEvent(self, ev) -> None:
        if self.jobs.busy:
            self.jobs.cancel()
            self.jobs.wait(15000)
        self.prefs.set_layout(self.saveGeometry(), self.saveState())
        self.session.close_project()
        super().closeEvent(ev)
