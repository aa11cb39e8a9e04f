"""The app's flows: open a study or project, load a study, train, predict, measure, export. Each flow picks the
job (tasks.py), runs it through the JobRunner (jobs.py, where threads start) and, on the GUI thread, puts its
typed result (tasks.StudyLoaded, PipelineResult, Quantified, Exported) into the Session (session.py, where the
state lives). The window (main_window.py) only wires widgets to this and to the session.

What the controller needs from the window (questions, errors, status lines) is the small `WindowPort`, so the
flows run against any object that has those four methods.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from time import perf_counter
from typing import Protocol

from PySide6.QtCore import QObject, QTimer, Signal

from covidseg_core.errors import CovidSegError, ProjectError
from covidseg_core.project.api import Project
from covidseg_core.project.store import PROJECT_FILE

from . import adding, tasks
from .dialogs.open_dialogs import user_data_dir
from .jobs import JobBusy, JobRunner
from .prefs import Prefs
from .session import Session

log = logging.getLogger(__name__)


class WindowPort(Protocol):
    def ask_series(self, folder: Path, series: list) -> str | None: ...        # None: the user cancelled
    def ask_project_folder(self, study_path: Path) -> Path | None: ...         # None: the user cancelled
    def show_error(self, exc: BaseException) -> None: ...
    def show_status(self, text: str, ms: int = 10000) -> None: ...


class Controller(QObject):
    study_loaded = Signal(object)        # tasks.StudyLoaded, once the session shows the study
    training_started = Signal()
    exported = Signal(object)            # tasks.Exported
    export_failed = Signal(str)
    slice_requested = Signal(str)        # a slice id of the open study to show (a suggestion)

    def __init__(self, session: Session, jobs: JobRunner, prefs: Prefs, window: WindowPort,
                 parent: QObject | None = None):
        super().__init__(parent)
        self.session, self.jobs, self.prefs, self.window = session, jobs, prefs, window
        self._deferred: list[tuple[object, Callable[[], None]]] = []
        self._pending_slice: str | None = None     # a suggested slice to show once its study is loaded
        self._add_after_open: list[Path] = []     # studies dropped together with the one being opened
        session.study_changed.connect(self._deferred.clear)     # updates queued for the previous study

    def run_job(self, name: str, make_job, on_done=None, on_failed=None) -> bool:
        try:
            self.jobs.start(name, make_job, on_done, on_failed)
            return True
        except JobBusy as exc:
            self.window.show_error(exc)
            return False

    # --- GUI updates in their own event-loop turns ---------------------------------------------------------------
    def later(self, key, fn: Callable[[], None]) -> None:
        """Queue a GUI update to run in its own event-loop turn, in order: each repaints something, and no single
        turn may keep the GUI thread (which shares the CPU with training) busy for long."""
        self._deferred.append((key, fn))
        if len(self._deferred) == 1:
            QTimer.singleShot(0, self._run_deferred)

    def _run_deferred(self) -> None:
        if not self._deferred:
            return
        (key, fn), started = self._deferred.pop(0), perf_counter()
        try:
            fn()
        finally:
            if (ms := (perf_counter() - started) * 1000) > 50:    # a stall one can feel; gui_stall.py shows them
                log.info("GUI update %s took %.0f ms", key, ms)
            if self._deferred:
                QTimer.singleShot(0, self._run_deferred)

    def flush_deferred(self) -> None:
        """Run the queued GUI updates now (a job's end, tests)."""
        while self._deferred:
            self._run_deferred()

    # --- opening -----------------------------------------------------------------------------------------------
    def open_path(self, path: str | Path, project_folder: str | Path | None = None,
                  series_uid: str | None = None) -> None:
        """Open a project folder, or a study (with its project, made next to it or where the user says)."""
        path = Path(path).expanduser().absolute()
        self._add_after_open = []          # studies dropped with one opened without a project: none now
        try:
            if (path / PROJECT_FILE).is_file():
                self.open_project(path)
                return
            from covidseg_core.io.loader import detect_kind

            kind = detect_kind(path)
        except CovidSegError as exc:
            self.window.show_error(exc)
            return
        if kind == "dicom-file":
            path, kind = path.parent, "dicom"
        if kind == "dicom" and series_uid is None:     # which series: the headers are read on the job thread
            self.run_job("Reading the DICOM folder", tasks.list_series_job(path),
                         lambda series: self._series_listed(path, series, project_folder))
            return
        self._open_study(path, kind, series_uid, project_folder)

    def _series_listed(self, folder: Path, series: list, project_folder) -> None:
        uid = None
        if len(series) > 1:
            uid = self.window.ask_series(folder, series)
            if uid is None:
                return
        self._open_study(folder, "dicom", uid, project_folder)

    def _open_study(self, path: Path, kind: str, series_uid: str | None, project_folder) -> None:
        if project_folder is None:
            project_folder = self.window.ask_project_folder(path)
            if project_folder is None:
                return
        try:
            folder = Path(project_folder)
            project = Project.open(folder) if (folder / PROJECT_FILE).is_file() else Project.create(folder)
            source_id = project.add_source(path, kind, series_uid)
        except CovidSegError as exc:
            self.window.show_error(exc)
            return
        self.session.set_project(project)
        self.prefs.add_recent_project(project.folder)
        self.load_source(source_id)

    def open_project(self, folder: Path) -> None:
        project = Project.open(folder)
        self.session.set_project(project)
        self.prefs.add_recent_project(project.folder)
        for w in project.warnings:
            self.window.show_status(w)
        sources = [r["id"] for r in project.sources]
        present = [sid for sid in sources if project.source_path(sid).exists()]
        if not present:
            self.window.show_status("This project has no study yet: open one with File > Open study." if not sources
                                    else "The project's studies are missing: File > Locate moved study… finds them.")
            return
        self.load_source(present[-1])

    def load_source(self, source_id: str) -> None:
        def loaded(result: tasks.StudyLoaded) -> None:
            s = self.session
            s.set_study(source_id, result.study)
            n = s.import_study_labels()
            if n:
                self.window.show_status(f"{n} slice labels taken from the study's labels.csv.", 8000)
            self.study_loaded.emit(result)
            pending, self._pending_slice = self._pending_slice, None
            if pending is not None:
                self.slice_requested.emit(pending)
            if result.prediction is not None:
                s.set_prediction(result.prediction, result.run)
            rest, self._add_after_open = self._add_after_open, []
            if rest:
                self.add_studies(rest)             # the last one added is shown (and measured) next
            elif result.prediction is not None:
                self.start_quantify()

        self.run_job("Reading the study", tasks.load_study_job(self.session.project, source_id,
                                                               self.session.studies.get(source_id)), loaded,
                     lambda _exc: setattr(self, "_add_after_open", []))

    # --- many studies ----------------------------------------------------------------------------------------------
    def add_study(self, path: str | Path, series_uid: str | None = None) -> None:
        self.add_studies([path], series_uid)

    def add_studies(self, paths: list, series_uid: str | None = None) -> None:
        """Add studies to the open project (Add study, drag and drop; read on the job thread) and show the last
        one added. The same study twice is said, not added; a path that is no study gets its message and does not
        stop the others. Without a project the first one is opened (its project made as for File > Open) and
        the others are added to it once it is shown."""
        s = self.session
        paths = [Path(p) for p in paths]
        if not paths:
            return
        if s.project is None:
            self.open_path(paths[0], series_uid=series_uid)
            self._add_after_open = paths[1:]
            return

        def added(result: adding.StudiesAdded) -> None:
            for a in result.added:
                s.studies[a.source_id] = a.study
            if result.added:
                self.window.show_status(adding.added_text(result.added), 10000)
                s.studies_changed.emit()
            if result.failed:
                self.window.show_error(adding.not_added_error(result.failed))
            new = [a for a in result.added if a.new] or result.added
            if new:
                self.switch_study(new[-1].source_id)

        self.run_job("Adding studies" if len(paths) > 1 else "Adding the study",
                     adding.add_studies_job(s.project, paths, series_uid), added)

    def switch_study(self, source_id: str) -> None:
        s = self.session
        if s.project is None or source_id == s.source_id or self.jobs.busy:
            return
        if not s.project.source_path(source_id).exists():
            self.window.show_status(f"The study {source_id} is missing (moved or deleted); its labels are kept. "
                                    "Locate moved study… points the project at its new place.", 15000)
            return
        self.load_source(source_id)

    def relocate_study(self, source_id: str, path: str | Path) -> None:
        """A missing study's new place: read and checked on the job thread (the same kind, series and labelled
        slices: covidseg_core.project.studies.relocate_study), then shown with its labels and corrections."""
        s = self.session

        def found(study) -> None:
            s.studies[source_id] = study
            self.window.show_status(f"The study {source_id} is now read from {path}; its labels are kept.", 10000)
            s.studies_changed.emit()
            self.switch_study(source_id)

        self.run_job("Locating the study", tasks.relocate_job(s.project, source_id, Path(path)), found)

    def step_study(self, step: int) -> None:
        """Ctrl+PgUp / Ctrl+PgDown: the previous or next study of the project's list."""
        s = self.session
        if s.project is None:
            return
        ids = [r["id"] for r in s.project.sources]
        if len(ids) < 2:
            return
        here = ids.index(s.source_id) if s.source_id in ids else -1
        self.switch_study(ids[(here + step) % len(ids)])

    def remove_study(self, source_id: str) -> None:
        """Remove a study (undoable while the project is open: Ctrl+Z brings it back with its labels and
        corrections); when it was shown, the next one is."""
        s = self.session
        name = Path(s.project.source_path(source_id)).name
        s.project.remove_source(source_id)        # the study read stays cached: Undo shows it again at once
        self.window.show_status(f"Removed {name} from the project (Ctrl+Z brings it back).", 10000)
        if source_id == s.source_id:
            rest = [r["id"] for r in s.project.sources]
            if rest:
                self.load_source(rest[-1])
            else:
                s.set_study(None, None)

    def go_next_suggestion(self) -> None:
        """S: the unlabelled slice most worth labelling next, in any study. Scored once per run (on the job
        thread); later presses take the next suggestion still unlabelled."""
        s = self.session
        if s.project is None or self.jobs.busy:
            return
        picks = [p for p in s.suggestions if s.project.label(p["source_id"], p["slice_id"]) is None
                 and any(r["id"] == p["source_id"] for r in s.project.sources)]
        if picks:
            self._go_to_pick(picks[0])
            return
        if tasks.last_classifier_run(s.project) is None:
            self.window.show_error(ProjectError("There is no trained run to suggest slices with yet.",
                                                "Label some slices in each study and press Train first."))
            return

        def scored(result: list) -> None:
            s.set_suggestions(result)
            if result:
                self._go_to_pick(result[0])
            else:
                self.window.show_status("Every slice of every study is labelled.", 5000)

        self.run_job("Suggesting slices", tasks.suggest_job(s.project, s.studies), scored)

    def _go_to_pick(self, pick: dict) -> None:
        s = self.session
        if pick["source_id"] != s.source_id:
            self._pending_slice = pick["slice_id"]
            self.switch_study(pick["source_id"])
        else:
            self.slice_requested.emit(pick["slice_id"])
        self.window.show_status(tasks.suggestion_text(pick), 8000)

    def open_demo(self) -> None:
        """Write the demo study into the user's data folder (once) and open it with its project."""
        base = user_data_dir() / "demo"
        volume = base / "study" / "volume" / "ct.nii.gz"
        project = base / "project"
        if volume.is_file():
            self.open_path(volume, project_folder=project)
            return
        self.run_job("Writing the demo study", tasks.write_demo_job(base / "study"),
                     lambda _info: self.open_path(volume, project_folder=project))

    # --- measuring -----------------------------------------------------------------------------------------------
    def start_quantify(self) -> None:
        """The volumes of the mask shown (prediction with corrections), when there is one and no job runs."""
        s = self.session
        if not s.has_study or not s.has_mask() or self.jobs.busy:
            return
        self.run_job("Measuring volumes",
                     tasks.quantify_job(s.project, s.source_id, s.study, s.prediction, s.lungs),
                     lambda q: s.set_quantification(q.result, q.lungs))

    # --- training and prediction -------------------------------------------------------------------------------
    def last_run_path(self) -> Path | None:
        return tasks.last_usable_run(self.session.project) if self.session.project else None

    def start_training(self, settings: dict) -> None:
        s = self.session
        if not s.has_study:
            self.window.show_error(ProjectError("No study is open.",
                                                "Open a study (or Help > Open demo study) first."))
            return
        try:
            make_job = tasks.train_job(s.project, s.source_id, s.study, settings, s.lungs)
        except CovidSegError as exc:
            self.window.show_error(exc)
            return
        s.clear_attention()
        self.training_started.emit()
        self.run_job("Training", make_job, self._show_pipeline_result)

    def start_prediction(self, settings: dict) -> None:
        s = self.session
        run = self.last_run_path()
        if not s.has_study or run is None:
            self.window.show_error(ProjectError("There is no finished run to predict with.", "Press Train first."))
            return
        self.run_job("Predicting", tasks.predict_job(run, s.project, s.source_id, s.study,
                                                     settings.get("device", "auto"), s.lungs),
                     self._show_pipeline_result)

    def _show_pipeline_result(self, result: tasks.PipelineResult) -> None:
        """A train or predict job finished: show its prediction, pseudo masks and volumes (after the epoch
        updates still queued, one part per event-loop turn)."""
        s = self.session
        if result.pseudo:
            self.later(("pseudo",), lambda: s.set_pseudo(result.pseudo))
        if result.fused:
            self.later(("fused",), lambda: s.set_fused_maps(result.fused))
        if result.prediction is not None:
            self.later(("prediction",), lambda: s.set_prediction(result.prediction, result.run))
        if result.quantification is not None:
            q = result.quantification
            self.later(("quant",), lambda: s.set_quantification(q.result, q.lungs))
        self.later(("runs",), s.runs_changed.emit)
        self.later(("suggestions",), lambda: s.set_suggestions([]))    # a new classifier: score again

    # --- export ----------------------------------------------------------------------------------------------------
    def export(self, which: str, path: str | Path, overwrite: bool = False, fmt: str = "nifti") -> None:
        s = self.session

        def done(result: tasks.Exported) -> None:
            if result.quantification is not None:
                s.set_quantification(result.quantification)
            self.exported.emit(result)
            self.window.show_status(f"Exported {result.mask}")

        self.run_job("Exporting", tasks.export_job(s.project, s.source_id, Path(path), which, overwrite, fmt), done,
                     lambda exc: self.export_failed.emit(str(exc)))

    def export_all(self, which: str, folder: str | Path, overwrite: bool = False, fmt: str = "nifti",
                   source_ids: list[str] | None = None) -> None:
        """Every study of the project into one folder, one mask each named from the study (the core's folder
        export); what was left out (nothing to export yet, missing, not DICOM for a SEG) is said."""
        def done(result: tasks.Exported) -> None:
            self.exported.emit(result)
            self.window.show_status(f"Exported into {result.mask}" + (f" ({len(result.notes)} studies left out: "
                                                                      "see the export dialog)" if result.notes else ""))

        self.run_job("Exporting every study", tasks.export_studies_job(self.session.project, Path(folder), which,
                                                                       overwrite, fmt, source_ids), done,
                     lambda exc: self.export_failed.emit(str(exc)))

    # --- report and SEG import -------------------------------------------------------------------------------------
    def report(self, path: str | Path, overwrite: bool = False) -> None:
        s = self.session
        self.run_job("Writing the report", tasks.report_job(s.project, s.source_id, Path(path), overwrite),
                     lambda result: self.window.show_status(f"Report written: {result['report']}"))

    def import_seg(self, path: str | Path) -> None:
        s = self.session

        def done(result) -> None:
            source_id, mask, run = result
            if source_id == s.source_id:
                s.set_prediction(mask, str(run))
                self.window.show_status(f"{Path(path).name} is now the mask of this study (run {run.name}).")
            else:
                self.window.show_status(f"{Path(path).name} is the mask of study {source_id} of the project: "
                                        "open that study to see it.")
            s.runs_changed.emit()

        self.run_job("Reading the DICOM SEG", tasks.import_seg_job(s.project, Path(path)), done)
