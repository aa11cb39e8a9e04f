"""The main window: menus, actions, docks and the wiring between the session, the job runner and the widgets.
No computation here: slow work goes through jobs.py, state through session.py."""
from __future__ import annotations

import logging
from pathlib import Path
import numpy as np
from PySide6.QtCore import Qt, QTimer, QUrl, Slot
from PySide6.QtGui import QAction, QActionGroup, QDesktopServices, QKeySequence
from PySide6.QtWidgets import (QDockWidget, QFileDialog, QLabel, QMainWindow, QMessageBox, QScrollArea,
                               QVBoxLayout, QWidget)

from covidseg_core.errors import CovidSegError, ProjectError
from covidseg_core.events import EpochReport, Message, Progress
from covidseg_core.project import Project

from . import pipeline
from .attention_gallery import AttentionGallery
from .errors_ui import log_path, show_error, show_warnings
from .export_dialog import ExportDialog
from .jobs import JobBusy, JobRunner
from .label_panel import LabelPanel
from .open_dialogs import ProjectFolderDialog, SeriesChooser, default_project_folder, user_data_dir
from .overlay_panel import OverlayPanel
from .prefs import Prefs
from .quant_panel import QuantPanel
from .session import Session
from .settings_dialog import SettingsDialog, effective_settings
from .slice_view import DEFAULT_OPACITY, LAYERS, WINDOW_PRESETS, SliceView
from .training_panel import TrainingPanel

log = logging.getLogger(__name__)

APP_TITLE = "CovidSeg Assist"


class MainWindow(QMainWindow):
    def __init__(self, prefs: Prefs | None = None):
        super().__init__()
        self.setObjectName("mainWindow")
        self.setWindowTitle(APP_TITLE)
        self.resize(1400, 900)
        self.prefs = prefs or Prefs()
        self.session = Session(self)
        self.jobs = JobRunner(self)
        self.ask_questions = True          # False: take the defaults (tests, scripted screenshots)
        self.export_dialog: ExportDialog | None = None
        self._lungs: np.ndarray | None = None   # lung fields of the open study, once measured
        self._device_text = "Device: …"
        self._deferred: list[tuple[object, object]] = []

        self._make_actions()
        self._make_menus()
        self.view = SliceView()
        self.setCentralWidget(self.view)
        self.label_panel = LabelPanel(self.actions_by_name)
        self.overlay_panel = OverlayPanel(self.actions_by_name)
        self.quant_panel = QuantPanel()
        self.training_panel = TrainingPanel(self.actions_by_name["train"], self.actions_by_name["cancel"])
        self.gallery = AttentionGallery()
        self._make_docks()
        self._make_status_bar()
        self._wire()
        self._restore_prefs()
        self._update_enabled()
        QTimer.singleShot(0, self._probe_device)

    # ------------------------------------------------------------------------------------------ construction
    def _action(self, name: str, text: str, slot, shortcuts=(), checkable: bool = False, tip: str = "") -> QAction:
        a = QAction(text, self)
        a.setObjectName(f"action_{name}")
        if shortcuts:
            a.setShortcuts([QKeySequence(s) for s in shortcuts])
            a.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        a.setCheckable(checkable)
        if tip or shortcuts:
            keys = " / ".join(QKeySequence(s).toString(QKeySequence.SequenceFormat.NativeText) for s in shortcuts)
            a.setToolTip(f"{tip or text.replace('&', '')}" + (f" ({keys})" if keys else ""))
        if slot is not None:
            (a.toggled if checkable else a.triggered).connect(slot)
        self.addAction(a)          # shortcuts work even when the action is in no visible menu
        self.actions_by_name[name] = a
        return a

    def _make_actions(self) -> None:
        self.actions_by_name: dict[str, QAction] = {}
        A = self._action
        A("open_study", "Open &study…", self.choose_study, ["Ctrl+O"],
          tip="Open a DICOM folder, a NIfTI file or a folder of slice images")
        A("open_image_folder", "Open image &folder…", self.choose_image_folder)
        A("open_project", "Open &project…", self.choose_project, ["Ctrl+Shift+O"])
        A("export", "&Export masks as NIfTI…", self.show_export_dialog, ["Ctrl+E"])
        A("settings", "Training &settings…", self.show_settings, ["Ctrl+,"])
        A("quit", "&Quit", self.close, ["Ctrl+Q"])
        A("lung", "&Lung window", lambda: self.view.set_preset("lung"), ["1"])
        A("mediastinum", "&Mediastinum window", lambda: self.view.set_preset("mediastinum"), ["2"])
        A("bone", "&Bone window", lambda: self.view.set_preset("bone"), ["3"])
        A("fit", "&Fit to window", lambda: self.view.fit(), ["F"])
        A("zoom_in", "Zoom &in", lambda: self.view.zoom(1.25), ["Ctrl++", "Ctrl+="])
        A("zoom_out", "Zoom &out", lambda: self.view.zoom(0.8), ["Ctrl+-"])
        A("prev_slice", "Previous slice", lambda: self.view.step_slice(-1), ["Up", "Left"])
        A("next_slice", "Next slice", lambda: self.view.step_slice(1), ["Down", "Right"])
        A("prev_page", "10 slices back", lambda: self.view.step_slice(-10), ["PgUp"])
        A("next_page", "10 slices on", lambda: self.view.step_slice(10), ["PgDown"])
        A("infected", "&Infected", lambda: self.label_current("infected"), ["I"], tip="Label this slice infected")
        A("clean", "&Clean", lambda: self.label_current("clean"), ["C"], tip="Label this slice clean")
        A("unlabel", "&Unlabel", lambda: self.label_current(None), ["U", "Backspace"], tip="Remove the label")
        A("next_unlabelled", "&Next unlabelled", self.go_next_unlabelled, ["N"])
        A("undo", "Undo", self.undo, ["Ctrl+Z"])
        A("redo", "Redo", self.redo, ["Ctrl+Shift+Z", "Ctrl+Y"])
        A("train", "▶ &Train", self.start_training, ["Ctrl+T"],
          tip="Train the classifier and the segmenter on the labels, then predict this study")
        A("predict", "&Predict with the last run", self.start_prediction, ["Ctrl+P"])
        A("cancel", "■ Cancel", self.jobs.cancel, ["Esc"], tip="Cancel the running job")
        A("brush", "Brush", lambda on: self._set_tool("brush", on), ["B"], checkable=True,
          tip="Paint infection on the mask")
        A("eraser", "Eraser", lambda on: self._set_tool("eraser", on), ["E"], checkable=True,
          tip="Erase infection from the mask")
        A("demo", "Open &demo study", self.open_demo, tip="Build a small synthetic study with labels and open it")
        A("show_log", "Show the &log file", self._show_log)
        A("about", "&About", self._about)
        for name in LAYERS:
            A(f"show_{name}", f"Show {name}", lambda on, n=name: self._set_layer_visible(n, on), checkable=True)
        self.actions_by_name["show_prediction"].setShortcut(QKeySequence("P"))
        self.actions_by_name["show_attention"].setShortcut(QKeySequence("A"))
        presets = QActionGroup(self)
        for name in ("lung", "mediastinum", "bone"):
            self.actions_by_name[name].setCheckable(True)
            presets.addAction(self.actions_by_name[name])
        self.actions_by_name["lung"].setChecked(True)
        presets.setExclusionPolicy(QActionGroup.ExclusionPolicy.ExclusiveOptional)

    def _make_menus(self) -> None:
        a = self.actions_by_name
        mb = self.menuBar()
        m = mb.addMenu("&File")
        for name in ("open_study", "open_image_folder", "open_project"):
            m.addAction(a[name])
        self.recent_menu = m.addMenu("Open &recent project")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        m.addSeparator()
        m.addAction(a["export"])
        m.addSeparator()
        m.addAction(a["settings"])
        m.addSeparator()
        m.addAction(a["quit"])
        m = mb.addMenu("&View")
        for name in ("lung", "mediastinum", "bone"):
            m.addAction(a[name])
        m.addSeparator()
        for name in ("fit", "zoom_in", "zoom_out"):
            m.addAction(a[name])
        m.addSeparator()
        for name in LAYERS:
            m.addAction(a[f"show_{name}"])
        self.view_menu = m
        m = mb.addMenu("&Label")
        for name in ("infected", "clean", "unlabel", "next_unlabelled"):
            m.addAction(a[name])
        m.addSeparator()
        m.addAction(a["undo"])
        m.addAction(a["redo"])
        m = mb.addMenu("&Train")
        for name in ("train", "predict", "cancel"):
            m.addAction(a[name])
        m.addSeparator()
        m.addAction(a["settings"])
        m = mb.addMenu("&Correct")
        m.addAction(a["brush"])
        m.addAction(a["eraser"])
        m = mb.addMenu("&Help")
        m.addAction(a["demo"])
        m.addAction(a["show_log"])
        m.addAction(a["about"])

    def _make_docks(self) -> None:
        side = QWidget()
        lay = QVBoxLayout(side)
        lay.addWidget(self.label_panel)
        lay.addWidget(self.overlay_panel)
        lay.addWidget(self.quant_panel)
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
        s, v = self.session, self.view
        v.slice_changed.connect(self._on_slice_changed)
        v.link_activated.connect(self._on_welcome_link)
        v.hover_info.connect(self.hover_label.setText)
        v.window_changed.connect(self._on_window_changed)
        v.stroke_finished.connect(self._on_stroke_finished)
        self.label_panel.strip.slice_clicked.connect(v.set_slice)
        self.gallery.go_to_slice.connect(self._go_to_slice_id)
        self.overlay_panel.visibility_changed.connect(
            lambda n, on: self.actions_by_name[f"show_{n}"].setChecked(on))
        self.overlay_panel.opacity_changed.connect(self._set_layer_opacity)
        self.overlay_panel.brush_size_changed.connect(lambda r: setattr(v, "brush_radius", int(r)))
        s.study_changed.connect(self._on_study_changed)
        s.labels_changed.connect(self._on_labels_changed)
        s.corrections_changed.connect(self._on_corrections_changed)
        s.history_changed.connect(self._on_history_changed)
        s.results_changed.connect(self._on_results_changed)
        s.attention_changed.connect(self._on_attention_changed)
        s.runs_changed.connect(self._refresh_runs)
        s.project_changed.connect(self._on_project_changed)
        j = self.jobs
        j.started.connect(self._on_job_started)
        j.progress.connect(self._on_progress)
        j.epoch.connect(self._on_epoch)
        j.message.connect(self._on_message)
        j.failed.connect(self._on_job_failed)
        j.cancelled.connect(self._on_job_cancelled)
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

    # ------------------------------------------------------------------------------------------ opening
    def run_job(self, name: str, make_job, on_done=None) -> bool:
        try:
            self.jobs.start(name, make_job, on_done)
            return True
        except JobBusy as exc:
            show_error(self, exc)
            return False

    def choose_study(self) -> None:
        start = str(Path.home())
        path, _ = QFileDialog.getOpenFileName(self, "Open a NIfTI volume or a DICOM file of the series", start,
                                              "CT studies (*.nii *.nii.gz *.mha *.nrrd *.dcm);;All files (*)")
        if not path:
            return
        p = Path(path)
        # a DICOM file stands for its folder (the whole series)
        self.open_path(p.parent if p.suffix.lower() == ".dcm" or not p.suffix else p)

    def choose_image_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a DICOM folder or a folder of slice images",
                                                str(Path.home()))
        if path:
            self.open_path(path)

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
            a = self.recent_menu.addAction("(none yet)")
            a.setEnabled(False)
        for folder in recent:
            self.recent_menu.addAction(folder, lambda f=folder: self.open_path(f))

    def open_path(self, path: str | Path, project_folder: str | Path | None = None,
                  series_uid: str | None = None) -> None:
        """Open a project folder, or a study (with its project, made next to it or where the user says)."""
        path = Path(path).expanduser().absolute()
        try:
            if (path / "project.json").is_file():
                self.open_project(path)
                return
            from covidseg_core.io.loader import detect_kind

            kind = detect_kind(path)
            if kind == "dicom-file":
                path, kind = path.parent, "dicom"
            if kind == "dicom" and series_uid is None:
                series_uid = self._ask_series(path)
                if series_uid == "":
                    return
            if project_folder is None:
                project_folder = self._ask_project_folder(path)
                if project_folder is None:
                    return
            project = self._open_or_create_project(Path(project_folder))
            source_id = project.add_source(path, kind, series_uid)
        except CovidSegError as exc:
            show_error(self, exc)
            return
        self.session.set_project(project)
        self.prefs.add_recent_project(project.folder)
        self._load_source(source_id)

    def _ask_series(self, folder: Path) -> str | None:
        """None: the folder holds one series; '' : the user cancelled; else the chosen series uid."""
        from covidseg_core.io.dicom import list_series

        series = list_series(folder)
        if len(series) <= 1:
            return None
        chooser = SeriesChooser(folder, series, self)
        if not self.ask_questions:
            return chooser.series_uid()
        return chooser.series_uid() if chooser.exec() else ""

    def _ask_project_folder(self, study_path: Path) -> Path | None:
        if not self.ask_questions:
            return default_project_folder(study_path)
        dlg = ProjectFolderDialog(study_path, self)
        return dlg.folder() if dlg.exec() else None

    @staticmethod
    def _open_or_create_project(folder: Path) -> Project:
        if (folder / "project.json").is_file():
            return Project.open(folder)
        return Project.create(folder)

    def open_project(self, folder: Path) -> None:
        project = Project.open(folder)
        self.session.set_project(project)
        self.prefs.add_recent_project(project.folder)
        for w in project.warnings:
            self.statusBar().showMessage(w, 10000)
        sources = project.sources
        if not sources:
            self.statusBar().showMessage("This project has no study yet: open one with File > Open study.", 10000)
            return
        self._load_source(sources[-1]["id"])

    def _load_source(self, source_id: str) -> None:
        def loaded(result: dict) -> None:
            self._lungs = None
            self.session.set_study(source_id, result["study"])
            n = self.session.import_study_labels()
            if n:
                self.statusBar().showMessage(f"{n} slice labels taken from the study's labels.csv.", 8000)
            for ev in result.get("epochs") or []:
                self.training_panel.show_epoch(ev)       # the curves of the run whose prediction is shown
            if result.get("prediction") is not None:
                self.session.set_prediction(result["prediction"], result.get("run"))
                self._start_quantify()

        self.run_job("Reading the study", pipeline.load_study_job(self.session.project, source_id), loaded)

    def _start_quantify(self) -> None:
        s = self.session
        mask = s.mask_volume(corrected=True)
        if mask is None or self.jobs.busy:
            return

        def done(result) -> None:
            quant, self._lungs = result
            s.set_quantification(quant)

        self.run_job("Measuring volumes", pipeline.quantify_job(s.study, mask, self._lungs), done)

    def open_demo(self) -> None:
        """Write the demo study into the user's data folder (once) and open it with its project."""
        base = user_data_dir() / "demo"
        volume = base / "study" / "volume" / "ct.nii.gz"
        project = base / "project"

        def written(_result) -> None:
            self.open_path(volume, project_folder=project)

        if volume.is_file():
            written(None)
            return
        self.run_job("Writing the demo study", pipeline.write_demo_job(base / "study"), written)

    # ------------------------------------------------------------------------------------------ labels
    def label_current(self, label: str | None) -> None:
        if not self.session.has_study:
            return
        try:
            self.session.set_label(self.view.index, label)
        except CovidSegError as exc:
            show_error(self, exc)

    def go_next_unlabelled(self) -> None:
        if not self.session.has_study:
            return
        i = self.session.next_unlabelled(self.view.index)
        if i is None:
            self.statusBar().showMessage("Every slice is labelled.", 5000)
        else:
            self.view.set_slice(i)

    def undo(self) -> None:
        self._history_step(self.session.undo, "undo")

    def redo(self) -> None:
        self._history_step(self.session.redo, "redo")

    def _history_step(self, step, what: str) -> None:
        try:
            if not step():
                self.statusBar().showMessage(f"Nothing to {what}.", 3000)
        except CovidSegError as exc:
            show_error(self, exc)

    # ------------------------------------------------------------------------------------------ training
    def training_settings(self) -> dict:
        return effective_settings(self.session.project.settings if self.session.project else {})

    def show_settings(self) -> None:
        if self.session.project is None:
            show_error(self, ProjectError("No project is open.", "Open a study or a project first."))
            return
        dlg = SettingsDialog(self.session.project.settings, self)
        if dlg.exec():
            try:
                self.session.project.update_settings(**dlg.values())
            except CovidSegError as exc:
                show_error(self, exc)
            self._probe_device()

    def start_training(self) -> None:
        s = self.session
        if not s.has_study:
            show_error(self, ProjectError("No study is open.", "Open a study (or Help > Open demo study) first."))
            return
        settings = self.training_settings()
        try:
            make_job = pipeline.train_job(s.project, s.source_id, s.study, settings, self._lungs)
        except CovidSegError as exc:
            show_error(self, exc)
            return
        s.clear_attention()
        self.training_panel.clear_curves()
        self.run_job("Training", make_job, self._on_pipeline_done)

    def start_prediction(self) -> None:
        s = self.session
        run = self._last_run_path()
        if not s.has_study or run is None:
            show_error(self, ProjectError("There is no finished run to predict with.", "Press Train first."))
            return
        device = self.training_settings().get("device", "auto")
        self.run_job("Predicting", pipeline.predict_job(run, s.project, s.source_id, s.study, device, self._lungs),
                     self._on_pipeline_done)

    def _on_pipeline_done(self, result: dict) -> None:
        """A train or predict job finished: show its prediction, pseudo masks and volumes (after the epoch
        updates still queued, one part per event-loop turn)."""
        if not result:
            return
        s = self.session
        if result.get("lungs") is not None:
            self._lungs = result["lungs"]
        if result.get("pseudo") is not None:
            self._later(("pseudo",), lambda: s.set_pseudo(result["pseudo"]))
        if result.get("fused"):
            self._later(("fused",), lambda: s.set_fused_maps(result["fused"]))
        if result.get("prediction") is not None:
            self._later(("prediction",), lambda: s.set_prediction(result["prediction"], result.get("run")))
        if result.get("quantification") is not None:
            self._later(("quant",), lambda: s.set_quantification(result["quantification"]))
        self._later(("runs",), self._refresh_runs)

    def _last_run_path(self) -> Path | None:
        return pipeline.last_usable_run(self.session.project) if self.session.project else None

    # ------------------------------------------------------------------------------------------ correction
    def _set_tool(self, tool: str, on: bool) -> None:
        other = "eraser" if tool == "brush" else "brush"
        if on:
            self.actions_by_name[other].blockSignals(True)
            self.actions_by_name[other].setChecked(False)
            self.actions_by_name[other].blockSignals(False)
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
            self.statusBar().showMessage(f"Correction of slice {index + 1} saved ({path.name}).", 4000)
        except CovidSegError as exc:
            show_error(self, exc)
            return
        if self.session.quantification is not None:
            self._start_quantify()          # the volumes follow the corrected mask

    # ------------------------------------------------------------------------------------------ export
    def show_export_dialog(self) -> ExportDialog | None:
        s = self.session
        if not s.has_study:
            show_error(self, ProjectError("No study is open.", "Open a study and train (or predict) first."))
            return None
        n_corr = len(s.corrected_indices())
        if s.prediction is None and n_corr == 0:
            show_error(self, ProjectError("There is no mask to export yet.",
                                          "Press Train (or Predict with the last run), or draw corrections."))
            return None
        default = s.project.folder / "exports" / f"{Path(s.study.source).name.split('.')[0]}_infection.nii.gz"
        dlg = ExportDialog(default, s.prediction is not None, n_corr, self)
        dlg.export_requested.connect(self.export_masks)
        self.export_dialog = dlg
        dlg.show()
        return dlg

    def export_masks(self, what: str, path: str) -> None:
        s = self.session
        target = Path(path)

        def done(result: dict) -> None:
            if result.get("quantification_result") is not None:
                s.set_quantification(result["quantification_result"])
            paths = [result["mask"], *result.get("quantification", [])]
            if self.export_dialog is not None:
                self.export_dialog.set_done(paths)
            self.statusBar().showMessage(f"Exported {result['mask']}", 10000)

        self.run_job("Exporting", pipeline.export_job(s.project, s.source_id, target, what), done)

    # ------------------------------------------------------------------------------------------ job signals
    def _on_job_started(self, name: str) -> None:
        self.training_panel.job_started(name)
        self.job_label.setText(f"{name}…")

    def _on_progress(self, ev: Progress) -> None:
        self.training_panel.show_progress(ev)
        if ev.stage == "export" and self.export_dialog is not None:
            self.export_dialog.set_progress(ev.done, ev.total)

    def _on_epoch(self, ev: EpochReport) -> None:
        # each part repaints something; done in separate turns of the event loop so that no single turn keeps
        # the GUI thread (which shares the CPU with training) busy for long
        self._later(("plot", ev.stage, ev.epoch), lambda: self.training_panel.show_epoch(ev))
        if ev.maps:
            self._later(("maps", ev.epoch), lambda: self.session.add_epoch_maps(ev.epoch, ev.maps))

    def _later(self, key, fn) -> None:
        """Queue a GUI update to run in its own event-loop turn, in order (see _on_epoch)."""
        self._deferred.append((key, fn))
        if len(self._deferred) == 1:
            QTimer.singleShot(0, self._run_deferred)

    def _run_deferred(self) -> None:
        if not self._deferred:
            return
        _key, fn = self._deferred.pop(0)
        try:
            fn()
        finally:
            if self._deferred:
                QTimer.singleShot(0, self._run_deferred)

    def flush_deferred(self) -> None:
        """Run the queued GUI updates now (a job's end, tests)."""
        while self._deferred:
            self._run_deferred()

    def _on_message(self, ev: Message) -> None:
        self.statusBar().showMessage(ev.text, 10000)
        if ev.level == "warning":
            log.warning("%s", ev.text)

    def _on_job_failed(self, name: str, exc: BaseException) -> None:
        self.training_panel.job_ended(f"{name} failed: {exc}")
        if name == "Exporting" and self.export_dialog is not None:
            self.export_dialog.set_failed(str(exc))
        show_error(self, exc)

    def _on_job_cancelled(self, name: str) -> None:
        self.training_panel.job_ended(f"{name} cancelled. Labels, corrections and earlier runs are kept.")

    def _on_job_finished(self, name: str, outcome: str) -> None:
        self.job_label.setText("")
        if outcome == "done":
            self.training_panel.job_ended(f"Done: {name.lower()}.")

    # ------------------------------------------------------------------------------------------ session signals
    def _on_project_changed(self) -> None:
        p = self.session.project
        self.setWindowTitle(APP_TITLE if p is None else f"{p.name} — {APP_TITLE}")
        self._refresh_runs()
        self._probe_device()
        self._update_enabled()

    def _on_study_changed(self) -> None:
        self._deferred.clear()          # updates queued for the previous study
        s = self.session
        study = s.study
        if study is None:
            self.view.set_volume(None)
        else:
            window = self.prefs.hu_window(self.view.window) if study.is_hu else None
            self.view.set_volume(study.array, study.is_hu, study.spacing, window)
            name = Path(study.source).name
            self.setWindowTitle(f"{name} — {s.project.name} — {APP_TITLE}")
            if study.warnings:
                show_warnings(self, "Study read with warnings", f"{name} was opened, but note:", study.warnings)
        self._on_labels_changed([])
        self._on_corrections_changed([])
        self.quant_panel.set_result(None, None)
        self.training_panel.clear_curves()          # the curves belong to the previous study's training
        self._update_enabled()
        self._on_slice_changed(self.view.index)

    def _on_labels_changed(self, _ids: list) -> None:
        s = self.session
        self.label_panel.strip.set_labels(s.label_list())
        self.label_panel.set_counts(s.counts())
        self._update_current_label()

    def _on_corrections_changed(self, _ids: list) -> None:
        self.label_panel.strip.set_corrected(self.session.corrected_indices())
        self.view.discard_edit()
        self._update_current_label()

    def _on_history_changed(self, info: dict) -> None:
        a = self.actions_by_name
        a["undo"].setEnabled(bool(info.get("can_undo")))
        a["redo"].setEnabled(bool(info.get("can_redo")))
        a["undo"].setToolTip(info.get("undo_text") or "Undo")
        a["redo"].setToolTip(info.get("redo_text") or "Redo")

    def _on_results_changed(self) -> None:
        self.view.refresh_layers()
        q = self.session.quantification
        what = "prediction with corrections" if self.session.corrected_indices() else "prediction"
        self.quant_panel.set_result(q, what)
        self.quant_panel.set_slice(self.view.index)
        self._update_enabled()

    def _on_attention_changed(self, slice_ids: list) -> None:
        s = self.session
        if s.study is None:
            return
        if not slice_ids or s.slice_id(self.view.index) in slice_ids:
            self._update_gallery()
            self._later(("layers",), self.view.refresh_layers)
        elif not s.attention_for(self.view.index):
            self._update_gallery()      # keep the "show a slice with maps" offer current

    def _on_slice_changed(self, index: int) -> None:
        if not self.session.has_study or index < 0:
            return
        self._update_current_label()
        self.quant_panel.set_slice(index)
        self._update_gallery()

    def _update_current_label(self) -> None:
        s = self.session
        if not s.has_study or self.view.index < 0:
            return
        i = self.view.index
        self.label_panel.set_current(i, s.label_of(i), i in set(s.corrected_indices()))

    def _update_gallery(self) -> None:
        s = self.session
        i = self.view.index
        if s.study is None or i < 0:
            return
        hist = s.attention_for(i)
        other = None
        if hist is None and s.attention:
            # the nearest slice the trainer reports maps for
            index_of = {sid: k for k, sid in enumerate(s.study.slice_ids)}
            other = min(s.attention, key=lambda sid: abs(index_of.get(sid, 10**9) - i))
        gray = self._gray(i)
        self.gallery.show_history(f"slice {i + 1}", gray, hist, other)

    def _gray(self, index: int) -> np.ndarray:
        lo, hi = self.view.window[1] - self.view.window[0] / 2, self.view.window[1] + self.view.window[0] / 2
        return np.clip((self.session.study.array[index] - lo) / max(hi - lo, 1e-6), 0, 1)

    def _go_to_slice_id(self, slice_id: str) -> None:
        if self.session.study is not None and slice_id in self.session.study.slice_ids:
            self.view.set_slice(self.session.study.slice_index(slice_id))

    def _refresh_runs(self) -> None:
        p = self.session.project
        self.training_panel.set_runs(p.runs if p is not None else [])

    def _on_window_changed(self, width: float, level: float) -> None:
        if self.view.is_hu:
            self.prefs.set_hu_window(width, level)
        for name, preset in WINDOW_PRESETS.items():
            act = self.actions_by_name[name]
            act.blockSignals(True)
            act.setChecked(self.view.is_hu and (width, level) == preset)
            act.blockSignals(False)
        if self.session.study is not None:
            self._update_gallery()

    # ------------------------------------------------------------------------------------------ overlays
    def _set_layer_visible(self, name: str, on: bool) -> None:
        self.view.set_layer_visible(name, on)
        self.overlay_panel.set_state(name, on, self.view.layer_opacity(name))
        self.prefs.set_overlay(name, on, self.view.layer_opacity(name))

    def _set_layer_opacity(self, name: str, opacity: float) -> None:
        self.view.set_layer_opacity(name, opacity)
        self.prefs.set_overlay(name, self.view.layer_visible(name), opacity)

    # ------------------------------------------------------------------------------------------ misc
    def _update_enabled(self) -> None:
        has = self.session.has_study
        busy = self.jobs.busy
        a = self.actions_by_name
        for name in ("infected", "clean", "unlabel", "next_unlabelled", "brush", "eraser", "lung", "mediastinum",
                     "bone", "fit", "zoom_in", "zoom_out"):
            a[name].setEnabled(has)
        a["train"].setEnabled(has and not busy)
        a["predict"].setEnabled(has and not busy and self._last_run_path() is not None)
        a["cancel"].setEnabled(busy)
        a["export"].setEnabled(has and not busy)
        a["settings"].setEnabled(self.session.project is not None)
        for name in ("open_study", "open_image_folder", "open_project", "demo"):
            a[name].setEnabled(not busy)
        if self.session.project is None:
            a["undo"].setEnabled(False)
            a["redo"].setEnabled(False)

    def _probe_device(self) -> None:
        """Which device training will use, shown in the status bar (torch is imported off the GUI thread)."""
        p = self.session.project
        wanted = (p.settings if p is not None else {}).get("device") or "auto"   # no torch import here
        from .jobs import run_light

        def probe() -> tuple[str, dict]:
            from covidseg_core.runs import environment_info

            text = pipeline.describe_device(wanted)     # warms torch up first: environment_info is safe after it
            return text, environment_info()

        def show(result: tuple[str, dict]) -> None:
            self._device_text, self._environment = result
            self.device_label.setText(self._device_text)
        run_light(probe, show, self)

    def _show_log(self) -> None:
        path = log_path()
        if path is None:
            return
        QMessageBox.information(self, "Log file", f"The log is written to:\n{path}")
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(path.parent)))

    def _about(self) -> None:
        from importlib.metadata import PackageNotFoundError, version

        from covidseg_core import __version__

        env = getattr(self, "_environment", None)    # filled by the device probe (torch is never imported here)
        if env is None:
            try:
                env = {"torch": version("torch"), "cuda": "(still checking)"}
            except PackageNotFoundError:
                env = {"torch": "not installed", "cuda": "-"}
        QMessageBox.about(self, f"About {APP_TITLE}",
                          f"<b>{APP_TITLE}</b> {__version__}<br>Weakly supervised segmentation of COVID-19 lung "
                          "infection on chest CT from slice labels, with attention fusion.<br><br>"
                          f"torch {env['torch']}, CUDA {env['cuda'] or 'none (CPU build)'}<br>"
                          f"Training device: {self._device_text}<br><br>"
                          "Not a medical device: every mask must be checked by a radiologist.")

    def closeEvent(self, ev) -> None:
        if self.jobs.busy:
            self.jobs.cancel()
            self.jobs.wait(15000)
        self.prefs.set_layout(self.saveGeometry(), self.saveState())
        self.session.close_project()
        super().closeEvent(ev)
