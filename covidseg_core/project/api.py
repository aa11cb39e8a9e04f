"""Project: a folder holding a user's studies (sources), slice labels, mask corrections, runs and settings.

Every change is on disk before the method that made it returns (see store.py: a journal line fsynced per
change, snapshots written atomically), so a crash or a kill never loses a label the GUI showed as saved.
Label and correction changes can be undone and redone; the history lives in memory for the session.

The project is safe to use from the GUI thread and a worker at once (one lock around every read and change).
Observers registered with `subscribe(callback)` are called as `callback(event, payload)` in the thread that
made the change, after the change is saved; a GUI relays them to its own thread.
Events: "labels_changed" {source_id, slice_ids}, "correction_changed" {source_id, slice_id},
"sources_changed" {source_id, action}, "runs_changed" {path}, "settings_changed" {keys},
"history_changed" {can_undo, can_redo, undo_text, redo_text}.

This module is over 400 lines because it is one class, the Project API, whose every public method follows the
same discipline (take the lock, save the change through the journal, then tell the observers); kept in one file
that discipline can be checked at a glance. What does not need it lives beside it: store.py (files, journal,
lock), ops.py (applying changes), corrections.py (mask files).
"""
from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..atomic import atomic_write_bytes
from ..constants import DEVICES, FUSION_MODES, LABELS, SYNTHETIC_MODES
from ..errors import InputError, LabelError, ProjectError
from . import store
from .corrections import binary_mask, decode_mask, encode_mask, new_correction_name
from .ops import ProjectState, apply_op

log = logging.getLogger(__name__)

SOURCE_KINDS = ("dicom", "nifti", "images")
RUNS_DIR = "runs"

Callback = Callable[[str, dict], None]


def normalise_label(label: Any) -> str | None:
    """'infected' / 'clean' (any case, spaces around) or None for unlabelled; anything else is a LabelError."""
    if label is None:
        return None
    if isinstance(label, str) and label.strip().lower() in LABELS:
        return label.strip().lower()
    raise LabelError(f"Unknown slice label {label!r}.", "Use 'infected', 'clean', or none to clear the label.")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _check_slice_id(slice_id: Any) -> str:
    if not isinstance(slice_id, str) or not slice_id:
        raise InputError(f"A slice id must be a non-empty text, got {slice_id!r}.")
    return slice_id


@dataclass
class _Change:
    """One undoable step: journal ops and file contents both ways (None content = delete the file)."""
    text: str
    forward: list[dict]
    backward: list[dict]
    events_forward: list[tuple[str, dict]]
    events_backward: list[tuple[str, dict]]
    files_forward: list[tuple[str, bytes | None]] = field(default_factory=list)
    files_backward: list[tuple[str, bytes | None]] = field(default_factory=list)


class Project:
    """A project folder. Use `Project.create(folder)` or `Project.open(folder)`; close it (or use `with`)."""

    compact_every = 500     # journal lines between two snapshots of project.json
    undo_limit = 200        # undo steps kept in memory

    def __init__(self, folder: Path, doc: dict, *, read_only: bool, lock: store.FolderLock | None):
        """Private: use create() or open()."""
        self._folder = folder
        self._read_only = read_only
        self._folder_lock = lock
        self._journal: store.Journal | None = None
        self._lock = threading.RLock()
        self._subscribers: list[Callback] = []
        self._undo: list[_Change] = []
        self._redo: list[_Change] = []
        self._closed = False
        self._good_snapshot: bytes | None = None   # the last project.json known good, kept for recovery
        self.warnings: list[str] = []   # what was noticed on open (skipped journal lines, dropped entries)
        self._load_document(doc)

    # ----------------------------------------------------------------------------------------- open / create
    @classmethod
    def create(cls, folder: str | os.PathLike, name: str | None = None) -> Project:
        folder = Path(folder).expanduser().absolute()
        if folder.exists() and not folder.is_dir():
            raise ProjectError(f"{folder} is a file, not a folder.", "Choose a folder for the new project.")
        if (folder / store.PROJECT_FILE).exists():
            raise ProjectError(f"There is already a project in {folder}.",
                               "Open it instead, or choose another folder for the new project.")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ProjectError(f"Cannot create the project folder {folder}: {err.strerror or err}.",
                               "Choose a folder you can write to.") from err
        lock = store.FolderLock(folder)
        try:
            if (folder / store.PROJECT_FILE).exists():   # created by someone else in the meantime
                raise ProjectError(f"There is already a project in {folder}.", "Open it instead.")
            doc = {"schema": store.SCHEMA, "version": store.VERSION, "name": name or folder.name,
                   "created": _now(), "journal_seq": 0, "next_source_number": 1}
            project = cls(folder, doc, read_only=False, lock=lock)
            try:
                atomic_write_bytes(folder / store.JOURNAL_FILE, b"")
                project._good_snapshot = None
                project._write_snapshot()
                project._journal = store.Journal(folder / store.JOURNAL_FILE)
            except OSError as err:
                raise ProjectError(f"Cannot write the project in {folder}: {err.strerror or err}.",
                                   "Choose a folder you can write to, with free space.") from err
        except BaseException:
            lock.release()
            raise
        log.info("created project %s in %s", project.name, folder)
        return project

    @classmethod
    def open(cls, folder: str | os.PathLike, *, read_only: bool = False) -> Project:
        """Open a project folder (or its project.json). read_only: no lock, no writes (e.g. for export)."""
        folder = Path(folder).expanduser().absolute()
        if folder.name == store.PROJECT_FILE and folder.is_file():
            folder = folder.parent
        if not folder.exists():
            raise ProjectError(f"The project folder {folder} does not exist.",
                               "Check the path, or create a new project there.")
        if not folder.is_dir():
            raise ProjectError(f"{folder} is not a folder.", "Choose the folder that holds project.json.")
        snapshot = folder / store.PROJECT_FILE
        if not snapshot.is_file():
            raise ProjectError(f"{folder} is not a CovidSeg Assist project (it has no project.json).",
                               "Choose the folder of an existing project, or create a new project.")
        lock = None if read_only else store.FolderLock(folder)
        project = None
        try:
            try:
                doc, raw, stored_version = store.read_snapshot(snapshot)
                project = cls(folder, doc, read_only=read_only, lock=lock)
                records, warnings = store.read_journal(folder / store.JOURNAL_FILE)
                recovered = False
            except store.DamagedSnapshot as damaged:
                doc, raw, stored_version, records, warnings = store.recover(folder, damaged)
                try:
                    project = cls(folder, doc, read_only=read_only, lock=lock)
                except store.DamagedSnapshot:
                    raise damaged from None
                recovered = True
            project.warnings += warnings
            project._replay(records)
            if recovered:
                # the next snapshot is the new base for recovery: the damaged one never is
                project._good_snapshot = None
                if not read_only:
                    atomic_write_bytes(folder / store.DAMAGED_FILE, snapshot.read_bytes())
            else:
                project._good_snapshot = raw
            if not read_only:
                project._start_writing(raw, stored_version,
                                       journal_has_content=bool(records or warnings or recovered))
        except BaseException:
            if project is not None and project._journal is not None:
                project._journal.close()
            if lock is not None:
                lock.release()
            raise
        for warning in project.warnings:
            log.warning("%s: %s", folder, warning)
        return project

    def _start_writing(self, raw: bytes, stored_version: int, journal_has_content: bool) -> None:
        folder = self._folder
        try:
            if stored_version != store.VERSION:   # keep what an older version wrote before upgrading it
                atomic_write_bytes(folder / f"project.v{stored_version}.backup.json", raw)
            store.remove_stale_temp_files(folder)
            self._journal = store.Journal(folder / store.JOURNAL_FILE)
        except OSError as err:
            raise ProjectError(f"Cannot write to the project folder {folder}: {err.strerror or err}.",
                               "Check the folder's permissions and free space, or open it read-only.") from err
        if journal_has_content or stored_version != store.VERSION:
            self.compact()   # folds the journal in and drops a torn last line before anything is appended

    def close(self) -> None:
        """Fold the journal into project.json and release the folder. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            try:
                if self._journal is not None and self._journal.size:
                    self.compact()
            except ProjectError as err:   # every change is already in the journal; nothing is lost
                log.warning("could not compact the project on close: %s", err)
            finally:
                if self._journal is not None:
                    self._journal.close()
                if self._folder_lock is not None:
                    self._folder_lock.release()
                self._closed = True

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Project({str(self._folder)!r}, name={self._name!r}, sources={len(self._state.sources)})"

    @property
    def folder(self) -> Path:
        return self._folder

    @property
    def name(self) -> str:
        return self._name

    @property
    def read_only(self) -> bool:
        return self._read_only

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------------------------------------- document
    def _load_document(self, doc: dict) -> None:
        """Take a snapshot document in; structural damage is an error, a bad single entry only a warning."""
        where = self._folder / store.PROJECT_FILE

        def expect(key: str, kind: type, default: Any) -> Any:
            value = doc.get(key, default)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise store.DamagedSnapshot(f"The project file {where} is damaged ('{key}' has the wrong type).",
                                   "Restore project.json from a backup.")
            return value

        self._name = str(doc.get("name") or self._folder.name)
        self._created = str(doc.get("created") or _now())
        self._seq = expect("journal_seq", int, 0)
        self._state = ProjectState(next_source_number=expect("next_source_number", int, 1), warnings=self.warnings)
        for record in expect("sources", list, []):
            if isinstance(record, dict) and isinstance(record.get("id"), str) and isinstance(record.get("path"), str):
                self._state.sources[record["id"]] = record
            else:
                self.warnings.append(f"A damaged source entry was skipped: {record!r}")
        self._state.labels = {sid: {} for sid in self._state.sources}
        for sid, labels in expect("labels", dict, {}).items():
            self._apply_op({"op": "labels", "source": sid, "set": labels if isinstance(labels, dict) else {}})
        self._state.corrections = {sid: {} for sid in self._state.sources}
        for sid, files in expect("corrections", dict, {}).items():
            for slice_id, rel in (files.items() if isinstance(files, dict) else ()):
                self._apply_op({"op": "correction", "source": sid, "slice": slice_id, "file": rel})
        self._state.runs = [r for r in expect("runs", list, []) if isinstance(r, dict)]
        self._state.settings = dict(expect("settings", dict, {}))

    def _document(self) -> dict:
        return {
            "schema": store.SCHEMA,
            "version": store.VERSION,
            "name": self._name,
            "created": self._created,
            "modified": _now(),
            "saved_by": f"CovidSeg Assist {__version__}",
            "journal_seq": self._seq,
            "next_source_number": self._state.next_source_number,
            "sources": list(self._state.sources.values()),
            "labels": self._state.labels,
            "corrections": self._state.corrections,
            "runs": self._state.runs,
            "settings": self._state.settings,
        }

    def compact(self) -> None:
        """Write project.json atomically with every change so far, then empty the journal."""
        with self._lock:
            self._check_writable()
            try:
                self._write_snapshot()
                self._journal.reset()
            except OSError as err:
                raise ProjectError(f"Cannot save the project file in {self._folder}: {err.strerror or err}.",
                                   "Check free space and permissions; your changes are kept in the journal.") from err

    def _write_snapshot(self) -> None:
        """project.json with every change so far; first the snapshot it replaces and the journal since then are
        kept (store.py), in an order where a kill at any point leaves a complete set to recover from."""
        folder = self._folder
        data = (json.dumps(self._document(), indent=2) + "\n").encode("utf-8")
        if self._good_snapshot is None:
            prev, since = data, b""
        else:
            journal = folder / store.JOURNAL_FILE
            prev, since = self._good_snapshot, (journal.read_bytes() if journal.is_file() else b"")
        atomic_write_bytes(folder / store.PREV_FILE, prev)
        atomic_write_bytes(folder / store.PREV_JOURNAL_FILE, since)
        atomic_write_bytes(folder / store.PROJECT_FILE, data)
        self._good_snapshot = data

    # ------------------------------------------------------------------------------------ applying changes
    def _apply_op(self, op: dict) -> None:
        apply_op(self._state, op)

    def _replay(self, records: list[dict]) -> None:
        for record in records:
            if record["seq"] <= self._seq:
                continue   # already in the snapshot (the program stopped between snapshot and journal reset)
            for op in record["ops"]:
                if isinstance(op, dict):
                    self._apply_op(op)
            self._seq = record["seq"]

    def _check_writable(self) -> None:
        if self._closed:
            raise ProjectError("The project is closed.", "Open it again to make changes.")
        if self._read_only:
            raise ProjectError("This project was opened read-only.", "Open it normally to make changes.")

    def _perform(self, ops: list[dict], files: list[tuple[str, bytes | None]] = (),
                 undo_files: list[tuple[str, bytes | None]] = ()) -> None:
        """Save then apply one change (caller holds the lock): new files, one journal line, memory, deletions."""
        self._check_writable()
        record = store.encode_record(self._seq + 1, ops)
        try:
            for rel, data in files:
                if data is not None:
                    atomic_write_bytes(self._folder / rel, data)
            self._journal.append(record)
        except OSError as err:
            self._restore_files(undo_files)
            raise ProjectError(f"Could not save the change in {self._folder}: {err.strerror or err}.",
                               "Check free space and permissions, then try again.") from err
        self._seq += 1
        for op in ops:
            self._apply_op(op)
        for rel, data in files:
            if data is None:
                try:
                    (self._folder / rel).unlink(missing_ok=True)
                except OSError:   # the change is saved; a leftover file only costs disk space
                    log.warning("could not delete %s", self._folder / rel)
        if self._journal.records >= self.compact_every:
            try:
                self.compact()
            except ProjectError as err:   # the change itself is safe in the journal
                log.warning("%s", err)

    def _restore_files(self, files: list[tuple[str, bytes | None]]) -> None:
        for rel, data in files:
            try:
                if data is None:
                    (self._folder / rel).unlink(missing_ok=True)
                else:
                    atomic_write_bytes(self._folder / rel, data)
            except OSError:
                log.warning("could not restore %s after a failed save", self._folder / rel)

    def _record(self, change: _Change) -> list[tuple[str, dict]]:
        """Perform a new undoable change (caller holds the lock); a new change clears the redo history."""
        self._perform(change.forward, change.files_forward, change.files_backward)
        self._undo.append(change)
        del self._undo[:-self.undo_limit]
        self._redo.clear()
        return change.events_forward + [self._history_event()]

    # --------------------------------------------------------------------------------------------- observers
    def subscribe(self, callback: Callback) -> Callable[[], None]:
        """Call `callback(event, payload)` after every saved change; returns a function that unsubscribes."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)
        return unsubscribe

    def _emit(self, events: list[tuple[str, dict]]) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for name, payload in events:
            for callback in subscribers:
                try:
                    callback(name, payload)
                except Exception:   # a broken observer must not undo a saved change or stop the others
                    log.exception("project observer failed on %s", name)

    # ---------------------------------------------------------------------------------------------- history
    @property
    def can_undo(self) -> bool:
        with self._lock:
            return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        with self._lock:
            return bool(self._redo)

    @property
    def undo_text(self) -> str:
        """What undo would revert (for an 'Undo ...' menu item); empty when there is nothing."""
        with self._lock:
            return self._undo[-1].text if self._undo else ""

    @property
    def redo_text(self) -> str:
        with self._lock:
            return self._redo[-1].text if self._redo else ""

    def _history_event(self) -> tuple[str, dict]:
        return ("history_changed", {"can_undo": bool(self._undo), "can_redo": bool(self._redo),
                                    "undo_text": self.undo_text, "redo_text": self.redo_text})

    def undo(self) -> bool:
        """Revert the last label or correction change; False when there is nothing to undo."""
        with self._lock:
            if not self._undo:
                return False
            change = self._undo[-1]
            self._perform(change.backward, change.files_backward, change.files_forward)
            self._redo.append(self._undo.pop())
            events = change.events_backward + [self._history_event()]
        self._emit(events)
        return True

    def redo(self) -> bool:
        with self._lock:
            if not self._redo:
                return False
            change = self._redo[-1]
            self._perform(change.forward, change.files_forward, change.files_backward)
            self._undo.append(self._redo.pop())
            events = change.events_forward + [self._history_event()]
        self._emit(events)
        return True

    # ---------------------------------------------------------------------------------------------- sources
    def _paths_for(self, path: Path) -> dict:
        """A path stored absolute, and relative to the project when possible (so a moved project still works)."""
        path = Path(path).expanduser().absolute()
        try:
            rel = Path(os.path.relpath(path, self._folder)).as_posix()
        except ValueError:   # another drive on Windows
            rel = None
        return {"path": str(path), "relpath": rel}

    def _locate(self, record: dict) -> Path:
        rel = record.get("relpath")
        if rel:
            candidate = (self._folder / rel)
            if candidate.exists():
                return Path(os.path.normpath(candidate))
        return Path(record["path"])

    def add_source(self, path: str | os.PathLike, kind: str, series_uid: str | None = None) -> str:
        """Add a study (DICOM folder, NIfTI file, image folder); the same path and series gives the same id."""
        if kind not in SOURCE_KINDS:
            raise InputError(f"Unknown kind of study {kind!r}.", f"Use one of {', '.join(SOURCE_KINDS)}.")
        path = Path(path).expanduser().absolute()
        if not path.exists():
            raise InputError(f"The study {path} does not exist.", "Check the path.")
        with self._lock:
            existing = self.find_source(path, series_uid)
            if existing is not None:
                return existing
            self._check_writable()
            number = self._state.next_source_number
            sid = f"s{number}"
            record = {"id": sid, **self._paths_for(path), "kind": kind, "series_uid": series_uid,
                      "added": _now()}
            self._perform([{"op": "source_put", "record": record, "next": number + 1}])
        self._emit([("sources_changed", {"source_id": sid, "action": "added"})])
        return sid

    def find_source(self, path: str | os.PathLike, series_uid: str | None = None) -> str | None:
        """The id of the source with this path (and series), or None."""
        path = os.path.normcase(os.path.realpath(Path(path).expanduser()))
        with self._lock:
            for sid, record in self._state.sources.items():
                same_path = os.path.normcase(os.path.realpath(self._locate(record))) == path
                if same_path and record.get("series_uid") == series_uid:
                    return sid
        return None

    @property
    def sources(self) -> list[dict]:
        """Copies of the source records: id, path (absolute), relpath, kind, series_uid, added."""
        with self._lock:
            return [dict(r) for r in self._state.sources.values()]

    def source(self, source_id: str) -> dict:
        with self._lock:
            return dict(self._source_record(source_id))

    def source_path(self, source_id: str) -> Path:
        """Where the study is now: relative to the project if it moved along with it, else the absolute path."""
        with self._lock:
            return self._locate(self._source_record(source_id))

    def _source_record(self, source_id: str) -> dict:
        try:
            return self._state.sources[source_id]
        except (KeyError, TypeError):
            raise ProjectError(f"The project has no study with id {source_id!r}.",
                               "Add the study to the project first.") from None

    def relocate_source(self, source_id: str, path: str | os.PathLike) -> None:
        """Point a study whose files moved at their new place; its id, labels and corrections stay as they are
        (keyed by its slices). Saved like every change; not in the undo history (as adding a study). Whether the
        new place holds the same study is for the caller to check (project.studies.relocate_study does)."""
        path = Path(path).expanduser().absolute()
        if not path.exists():
            raise InputError(f"The study {path} does not exist.", "Choose the place the study was moved to.")
        with self._lock:
            record = self._source_record(source_id)
            other = self.find_source(path, record.get("series_uid"))
            if other is not None and other != source_id:
                raise InputError(f"{path} is already in the project, as the study {other}.",
                                 "Choose the place the missing study was moved to.")
            self._check_writable()
            self._perform([{"op": "source_move", "id": source_id, **self._paths_for(path)}])
        self._emit([("sources_changed", {"source_id": source_id, "action": "relocated"})])

    def remove_source(self, source_id: str) -> None:
        """Remove a study with its labels and corrections (undoable; correction files stay until then)."""
        with self._lock:
            record = self._source_record(source_id)
            restore = {"op": "source_put", "record": record, "next": self._state.next_source_number,
                       "labels": dict(self._state.labels.get(source_id, {})),
                       "corrections": dict(self._state.corrections.get(source_id, {}))}
            payload = {"source_id": source_id}
            events = self._record(_Change(
                text=f"Remove study {Path(record['path']).name}",
                forward=[{"op": "source_remove", "id": source_id}], backward=[restore],
                events_forward=[("sources_changed", {**payload, "action": "removed"})],
                events_backward=[("sources_changed", {**payload, "action": "restored"})]))
        self._emit(events)

    # ----------------------------------------------------------------------------------------------- labels
    def set_label(self, source_id: str, slice_id: str, label: str | None) -> None:
        """Label one slice 'infected' or 'clean', or clear it with None. Saved before it returns; undoable."""
        self.set_labels(source_id, {slice_id: label})

    def set_labels(self, source_id: str, labels: Mapping[str, str | None]) -> None:
        """Set many slice labels as one change (one undo step, all or nothing on disk)."""
        wanted = {_check_slice_id(s): normalise_label(v) for s, v in dict(labels).items()}
        with self._lock:
            self._source_record(source_id)
            current = self._state.labels.get(source_id, {})
            after = {s: v for s, v in wanted.items() if current.get(s) != v}
            if not after:
                return
            before = {s: current.get(s) for s in after}
            if len(after) == 1:
                (slice_id, value), = after.items()
                text = f"Label slice {slice_id} {value or 'unlabelled'}"
            else:
                text = f"Label {len(after)} slices"
            event = ("labels_changed", {"source_id": source_id, "slice_ids": list(after)})
            events = self._record(_Change(
                text=text,
                forward=[{"op": "labels", "source": source_id, "set": after}],
                backward=[{"op": "labels", "source": source_id, "set": before}],
                events_forward=[event], events_backward=[event]))
        self._emit(events)

    def label(self, source_id: str, slice_id: str) -> str | None:
        with self._lock:
            self._source_record(source_id)
            return self._state.labels.get(source_id, {}).get(slice_id)

    def labels(self, source_id: str) -> dict[str, str]:
        """slice id -> 'infected' | 'clean' for the labelled slices of a study."""
        with self._lock:
            self._source_record(source_id)
            return dict(self._state.labels.get(source_id, {}))

    def counts(self, source_id: str, slice_ids: list[str] | None = None) -> dict[str, int | None]:
        """How many slices are infected, clean, unlabelled. Without the study's slice ids the project cannot
        know how many are unlabelled: 'unlabelled' is then None."""
        labels = self.labels(source_id)
        if slice_ids is not None:
            labels = {s: labels[s] for s in slice_ids if s in labels}
        values = list(labels.values())
        return {"infected": values.count("infected"), "clean": values.count("clean"),
                "unlabelled": None if slice_ids is None else len(set(slice_ids)) - len(labels)}

    # ------------------------------------------------------------------------------------------ corrections
    def save_correction(self, source_id: str, slice_id: str, mask: np.ndarray,
                        expected_shape: tuple[int, int] | None = None) -> Path:
        """Save the user's pixel mask of a slice as a 0/255 PNG under corrections/. Undoable."""
        _check_slice_id(slice_id)
        png = encode_mask(binary_mask(mask, expected_shape))
        with self._lock:
            self._source_record(source_id)
            rel = (self._state.corrections.get(source_id, {}).get(slice_id)
                   or new_correction_name(source_id, slice_id, self._state.corrections.get(source_id, {}).values()))
            old = self._read_correction_bytes(source_id, slice_id)
            if old == png:
                return self._folder / rel
            op = {"op": "correction", "source": source_id, "slice": slice_id}
            event = ("correction_changed", {"source_id": source_id, "slice_id": slice_id})
            events = self._record(_Change(
                text=f"Correct the mask of slice {slice_id}",
                forward=[{**op, "file": rel}],
                backward=[{**op, "file": rel if old is not None else None}],
                events_forward=[event], events_backward=[event],
                files_forward=[(rel, png)], files_backward=[(rel, old)]))
        self._emit(events)
        return self._folder / rel

    def remove_correction(self, source_id: str, slice_id: str) -> bool:
        """Drop a slice's correction (undoable). False when it had none."""
        with self._lock:
            self._source_record(source_id)
            rel = self._state.corrections.get(source_id, {}).get(slice_id)
            if rel is None:
                return False
            old = self._read_correction_bytes(source_id, slice_id)
            op = {"op": "correction", "source": source_id, "slice": slice_id}
            event = ("correction_changed", {"source_id": source_id, "slice_id": slice_id})
            events = self._record(_Change(
                text=f"Remove the correction of slice {slice_id}",
                forward=[{**op, "file": None}], backward=[{**op, "file": rel}],
                events_forward=[event], events_backward=[event],
                files_forward=[(rel, None)], files_backward=[(rel, old)]))
        self._emit(events)
        return True

    def correction(self, source_id: str, slice_id: str) -> np.ndarray | None:
        """The corrected mask of a slice as uint8 0/255, or None when it has none."""
        with self._lock:
            data = self._read_correction_bytes(source_id, slice_id)
        return None if data is None else decode_mask(data, slice_id)

    def corrections(self, source_id: str) -> dict[str, Path]:
        """slice id -> absolute path of its correction PNG."""
        with self._lock:
            self._source_record(source_id)
            return {s: self._folder / rel for s, rel in self._state.corrections.get(source_id, {}).items()}

    def _read_correction_bytes(self, source_id: str, slice_id: str) -> bytes | None:
        self._source_record(source_id)
        rel = self._state.corrections.get(source_id, {}).get(slice_id)
        if rel is None:
            return None
        try:
            return (self._folder / rel).read_bytes()
        except FileNotFoundError:
            log.warning("the correction file %s is missing", self._folder / rel)
            return None
        except OSError as err:
            raise ProjectError(f"Cannot read the correction {self._folder / rel}: {err.strerror or err}.",
                               "Check the project folder's permissions.") from err

    # ------------------------------------------------------------------------------------- runs and settings
    def new_run_dir(self, prefix: str = "run") -> Path:
        """A new empty folder runs/<prefix>-<timestamp>-<n> for a training run (old runs are never touched)."""
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", prefix or ""):
            raise InputError(f"A run name prefix must be letters, digits, '-' or '_', got {prefix!r}.")
        with self._lock:
            self._check_writable()
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            for n in range(1, 10_000):
                path = self._folder / RUNS_DIR / f"{prefix}-{stamp}-{n}"
                try:
                    path.mkdir(parents=True)
                    return path
                except FileExistsError:
                    continue
                except OSError as err:
                    raise ProjectError(f"Cannot create a run folder in {self._folder}: {err.strerror or err}.",
                                       "Check free space and permissions.") from err
        raise ProjectError("Too many runs were started this second.", "Try again.")

    def add_run(self, path: str | os.PathLike, summary: dict) -> None:
        """Record a run (or update the summary of one already recorded); history is kept, never replaced."""
        summary = store.json_copy(summary, "run summary")
        if not isinstance(summary, dict):
            raise InputError("A run summary must be a dict.")
        with self._lock:
            self._check_writable()
            paths = self._paths_for(Path(path))
            previous = next((r for r in self._state.runs if r.get("path") == paths["path"]), None)
            record = {**paths, "summary": summary,
                      "added": previous.get("added", _now()) if previous else _now(), "updated": _now()}
            self._perform([{"op": "run_put", "record": record}])
        self._emit([("runs_changed", {"path": paths["path"]})])

    @property
    def runs(self) -> list[dict]:
        """Recorded runs, oldest first: path (where it is now), relpath, summary, added, updated."""
        with self._lock:
            return [{**store.json_copy(r, "run"), "path": str(self._locate(r))} for r in self._state.runs]

    @property
    def settings(self) -> dict:
        with self._lock:
            return store.json_copy(self._state.settings, "settings")

    def update_settings(self, **values: Any) -> None:
        """Change training settings (fusion, device, epochs, image size...); None removes a setting."""
        values = store.json_copy(values, "settings")
        for key, value in values.items():
            _check_setting(key, value)
        with self._lock:
            changed = {k: v for k, v in values.items() if self._state.settings.get(k) != v}
            if not changed:
                return
            self._perform([{"op": "settings", "values": changed}])
        self._emit([("settings_changed", {"keys": list(changed)})])


_SETTING_CHOICES = {"fusion": FUSION_MODES, "device": DEVICES, "synthetic": SYNTHETIC_MODES}
_POSITIVE_INT_SETTINGS = ("cls_epochs", "seg_epochs", "epochs", "image_size", "size", "batch_size")


def _check_setting(key: str, value: Any) -> None:
    if value is None:
        return
    if key in _SETTING_CHOICES and value not in _SETTING_CHOICES[key]:
        raise InputError(f"Unknown {key} setting {value!r}.", f"Use one of {', '.join(_SETTING_CHOICES[key])}.")
    if key in _POSITIVE_INT_SETTINGS and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise InputError(f"The {key} setting must be a whole number of at least 1, got {value!r}.")
    if key == "budget_minutes" and (isinstance(value, bool) or not isinstance(value, (int, float))
                                    or not value >= 0 or value == float("inf")):
        raise InputError(f"The budget_minutes setting must be a number of minutes (0: the fixed schedule), "
                         f"got {value!r}.")
    if key == "seed" and (not isinstance(value, int) or isinstance(value, bool)):
        raise InputError(f"The seed setting must be a whole number, got {value!r}.")
