"""What is open: the project, one study of it, and what the runs made for that study (prediction, pseudo masks,
attention maps, lung fields, quantification). This is where the app's state lives. The panels show it; they
change it only through these methods, which go through the Project (every label and correction is saved by the
core before the call returns).

The Project calls its subscribers in whichever thread made a change (a job may add a run); the callback only emits
a signal, which Qt delivers on the GUI thread.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Signal, Slot

from covidseg_core.errors import CovidSegError
from covidseg_core.project.api import Project
from covidseg_core.study import Study

log = logging.getLogger(__name__)


@dataclass
class AttentionHistory:
    """The maps the trainer reported for one slice: one CAM per classifier epoch, and the latest fused map."""
    cams: list[tuple[int, np.ndarray]] = field(default_factory=list)    # (epoch, cam)
    fused: np.ndarray | None = None
    fused_epoch: int = 0


class Session(QObject):
    project_changed = Signal()
    study_changed = Signal()
    labels_changed = Signal(list)          # slice ids
    corrections_changed = Signal(list)     # slice ids
    history_changed = Signal(dict)         # can_undo, can_redo, undo_text, redo_text
    runs_changed = Signal()
    settings_changed = Signal()
    results_changed = Signal()             # prediction / pseudo masks / quantification
    attention_changed = Signal(list)       # slice ids with new maps
    studies_changed = Signal()             # a study added, removed or restored; labels or runs of any study
    suggestions_changed = Signal()

    _project_event = Signal(str, dict)     # relayed from the Project's callback (any thread)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.project: Project | None = None
        self.source_id: str | None = None
        self.study: Study | None = None
        self.prediction: np.ndarray | None = None          # (z, y, x) uint8 0/1 from the last prediction
        self.prediction_run: str | None = None
        self.pseudo: dict[str, np.ndarray] = {}            # slice id -> 0/127/255 pseudo mask
        self.attention: dict[str, AttentionHistory] = {}   # slice id -> maps reported during training
        self.quantification: dict | None = None
        self.lungs: np.ndarray | None = None                # lung fields of the study, once measured
        self.studies: dict[str, Study] = {}                 # source id -> the studies read so far (switching)
        self.suggestions: list[dict] = []                  # covidseg_core.suggest picks, best first
        self._unsubscribe = None
        self._correction_cache: dict[str, np.ndarray | None] = {}
        self._project_event.connect(self._on_project_event)

    # --- project -------------------------------------------------------------------------------------------
    def set_project(self, project: Project | None) -> None:
        self.close_project()
        self.project = project
        if project is not None:
            self._unsubscribe = project.subscribe(lambda ev, payload: self._project_event.emit(ev, dict(payload)))
        self.project_changed.emit()

    def close_project(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self.set_study(None, None)
        self.studies = {}
        self.suggestions = []
        if self.project is not None:
            try:
                self.project.close()
            except CovidSegError as exc:          # every change is already saved; only the compaction failed
                log.warning("closing the project: %s", exc)
        self.project = None

    @Slot(str, dict)
    def _on_project_event(self, event: str, payload: dict) -> None:
        if event in ("sources_changed", "labels_changed", "runs_changed"):
            if event == "labels_changed":
                self._drop_labelled_suggestions(payload.get("source_id"), payload.get("slice_ids") or [])
            self.studies_changed.emit()
        if payload.get("source_id") not in (None, self.source_id):
            return
        if event == "labels_changed":
            self.labels_changed.emit(list(payload.get("slice_ids", [])))
        elif event == "correction_changed":
            sid = payload.get("slice_id")
            self._correction_cache.pop(sid, None)
            self.corrections_changed.emit([sid])
        elif event == "history_changed":
            self.history_changed.emit(payload)
        elif event == "runs_changed":
            self.runs_changed.emit()
        elif event == "settings_changed":
            self.settings_changed.emit()

    # --- studies of the project ---------------------------------------------------------------------------
    def study_rows(self) -> list[dict]:
        """One row per study for the study list: id, name, present, counts (unlabelled once the study was read),
        training status, burden (infected mL of the newest finished run that measured it), current."""
        if self.project is None:
            return []
        from covidseg_core.project.studies import study_name, training_status

        rows = []
        for record in self.project.sources:
            sid = record["id"]
            study = self.studies.get(sid)
            status = training_status(self.project, sid)
            burden = None
            for run in reversed(self.project.runs):
                ml = ((run.get("summary") or {}).get("infected_ml") or None)
                if isinstance(ml, dict) and ml.get(sid) is not None:
                    burden = ml[sid]
                    break
            rows.append({"id": sid, "name": study_name(self.project, sid),
                         "present": self.project.source_path(sid).exists(),
                         "counts": self.project.counts(sid, study.slice_ids if study else None),
                         "status": status["status"] if status else None, "burden_ml": burden,
                         "current": sid == self.source_id})
        return rows

    def set_suggestions(self, picks: list[dict]) -> None:
        self.suggestions = list(picks)
        self.suggestions_changed.emit()

    def _drop_labelled_suggestions(self, source_id, slice_ids) -> None:
        before = len(self.suggestions)
        gone = set(slice_ids)
        self.suggestions = [p for p in self.suggestions if not (p["source_id"] == source_id and p["slice_id"] in gone)]
        if len(self.suggestions) != before:
            self.suggestions_changed.emit()

    def suggested_indices(self) -> list[int]:
        """Slices of the open study that are suggested for labelling."""
        if not self.has_study:
            return []
        return [p["index"] for p in self.suggestions if p["source_id"] == self.source_id]

    # --- study ---------------------------------------------------------------------------------------------
    def set_study(self, source_id: str | None, study: Study | None) -> None:
        self.source_id = source_id
        self.study = study
        if source_id is not None and study is not None:
            self.studies[source_id] = study
        self.prediction = None
        self.prediction_run = None
        self.pseudo = {}
        self.attention = {}
        self.quantification = None
        self.lungs = None
        self._correction_cache = {}
        self.study_changed.emit()

    @property
    def has_study(self) -> bool:
        return self.study is not None and self.project is not None and self.source_id is not None

    def slice_id(self, index: int) -> str:
        return self.study.slice_ids[index]

    def import_study_labels(self) -> int:
        """Labels that came with the study (labels.csv) become project labels, once: only when the project has
        none yet for this study, so the user's own labels are never overwritten. Returns how many."""
        if not self.has_study:
            return 0
        from covidseg_core.project.studies import import_labels

        return import_labels(self.project, self.source_id, self.study)

    # --- labels --------------------------------------------------------------------------------------------
    def label_list(self) -> list[str | None]:
        if not self.has_study:
            return []
        labels = self.project.labels(self.source_id)
        return [labels.get(s) for s in self.study.slice_ids]

    def label_of(self, index: int) -> str | None:
        return self.project.label(self.source_id, self.slice_id(index)) if self.has_study else None

    def set_label(self, index: int, label: str | None) -> None:
        if self.has_study:
            self.project.set_label(self.source_id, self.slice_id(index), label)

    def counts(self) -> dict[str, int]:
        if not self.has_study:
            return {"infected": 0, "clean": 0, "unlabelled": 0}
        return self.project.counts(self.source_id, self.study.slice_ids)

    def next_unlabelled(self, after: int) -> int | None:
        labels = self.label_list()
        n = len(labels)
        for k in range(1, n + 1):
            i = (after + k) % n
            if labels[i] is None:
                return i
        return None

    def undo(self) -> bool:
        return bool(self.project and self.project.undo())

    def redo(self) -> bool:
        return bool(self.project and self.project.redo())

    # --- corrections and the mask shown --------------------------------------------------------------------
    def correction(self, index: int) -> np.ndarray | None:
        """The user's corrected mask of a slice, 0/1 uint8, or None."""
        if not self.has_study:
            return None
        sid = self.slice_id(index)
        if sid not in self._correction_cache:
            m = self.project.correction(self.source_id, sid)
            self._correction_cache[sid] = None if m is None else (m > 0).astype(np.uint8)
        return self._correction_cache[sid]

    def corrected_indices(self) -> list[int]:
        if not self.has_study:
            return []
        ids = set(self.project.corrections(self.source_id))
        return [i for i, s in enumerate(self.study.slice_ids) if s in ids]

    def save_correction(self, index: int, mask: np.ndarray) -> Path:
        mask = (np.asarray(mask) > 0).astype(np.uint8)
        path = self.project.save_correction(self.source_id, self.slice_id(index), mask,
                                            expected_shape=self.study.array.shape[1:])
        self._correction_cache[self.slice_id(index)] = mask
        return path

    def mask_for(self, index: int) -> np.ndarray | None:
        """What the prediction layer shows: the correction where the user made one, else the prediction."""
        corr = self.correction(index)
        if corr is not None:
            return corr
        return None if self.prediction is None else self.prediction[index]

    def has_mask(self) -> bool:
        """Something to measure or export: a prediction, or at least one correction."""
        return self.prediction is not None or bool(self.corrected_indices())

    # --- results of runs -----------------------------------------------------------------------------------
    def set_prediction(self, mask_zyx: np.ndarray | None, run: str | None = None) -> None:
        if self.study is None:
            return
        if mask_zyx is not None and mask_zyx.shape != self.study.array.shape:
            raise ValueError(f"prediction {mask_zyx.shape} does not match the study {self.study.array.shape}")
        self.prediction = None if mask_zyx is None else (np.asarray(mask_zyx) > 0).astype(np.uint8)
        self.prediction_run = run
        self.results_changed.emit()

    def set_pseudo(self, pseudo: dict[str, np.ndarray]) -> None:
        self.pseudo = dict(pseudo)
        self.results_changed.emit()

    def set_quantification(self, result: dict | None, lungs: np.ndarray | None = None) -> None:
        self.quantification = result
        if lungs is not None:
            self.lungs = lungs
        self.results_changed.emit()

    def clear_attention(self) -> None:
        self.attention = {}
        self.attention_changed.emit([])

    def add_epoch_maps(self, epoch: int, maps: dict[str, dict[str, Any]]) -> None:
        """Keep each reported slice's CAM of this epoch and its fused map so far."""
        for sid, m in maps.items():
            hist = self.attention.setdefault(sid, AttentionHistory())
            if m.get("cam") is not None:
                hist.cams = [c for c in hist.cams if c[0] != epoch] + [(epoch, np.asarray(m["cam"], np.float32))]
            if m.get("fused") is not None:
                hist.fused = np.asarray(m["fused"], np.float32)
                hist.fused_epoch = epoch
        self.attention_changed.emit(list(maps))

    def set_fused_maps(self, fused: dict[str, np.ndarray]) -> None:
        """The run's final fused CAM of every infected slice (RUN/cams): shown where training reported none."""
        for sid, m in fused.items():
            hist = self.attention.setdefault(sid, AttentionHistory())
            if hist.fused is None or not hist.cams:
                hist.fused = np.asarray(m, np.float32)
        self.attention_changed.emit(list(fused))

    def attention_for(self, index: int) -> AttentionHistory | None:
        return self.attention.get(self.slice_id(index)) if self.study is not None else None

    def fused_for(self, index: int) -> np.ndarray | None:
        hist = self.attention_for(index)
        return None if hist is None else hist.fused

    def pseudo_for(self, index: int) -> np.ndarray | None:
        return self.pseudo.get(self.slice_id(index)) if self.study is not None else None
