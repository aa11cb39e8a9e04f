"""The project's changes as data. Every change is a list of ops (dicts `{"op": name, ...}`) written to the
journal and applied to the in-memory state by the function OPS[name], live and when the journal is replayed.
Undo is the list of ops that puts things back (api.Project keeps both). An op that makes no sense (a damaged
journal, a source that is gone) is skipped with a warning, never a crash.

To add a kind of change: write `_apply_<name>(state, op)` and add it to OPS; old journals stay readable.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from ..constants import LABELS

CORRECTIONS_DIR = "corrections"


@dataclass
class ProjectState:
    """What a project holds in memory; project.json is this, plus a header (store.py)."""
    sources: dict[str, dict] = field(default_factory=dict)
    labels: dict[str, dict[str, str]] = field(default_factory=dict)         # source -> slice -> label
    corrections: dict[str, dict[str, str]] = field(default_factory=dict)    # source -> slice -> relative path
    runs: list[dict] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    next_source_number: int = 1
    warnings: list[str] = field(default_factory=list)


def is_correction_path(rel: Any) -> bool:
    """corrections/<source>/<file>: relative, inside the project, portable."""
    if not isinstance(rel, str):
        return False
    parts = PurePosixPath(rel).parts
    return (len(parts) == 3 and parts[0] == CORRECTIONS_DIR and ".." not in parts
            and not PurePosixPath(rel).is_absolute() and "\\" not in rel and ":" not in rel)


def _apply_labels(state: ProjectState, op: dict) -> None:
    sid = op.get("source")
    if sid not in state.sources or not isinstance(op.get("set"), dict):
        state.warnings.append(f"Labels for an unknown source {sid!r} were skipped.")
        return
    labels = state.labels.setdefault(sid, {})
    for slice_id, label in op["set"].items():
        if label is None:
            labels.pop(slice_id, None)
        elif label in LABELS:
            labels[slice_id] = label
        else:
            state.warnings.append(f"An unknown label {label!r} of slice {slice_id!r} was skipped.")


def _apply_correction(state: ProjectState, op: dict) -> None:
    sid, rel = op.get("source"), op.get("file")
    if sid not in state.sources or not isinstance(op.get("slice"), str):
        state.warnings.append(f"A correction for an unknown source {sid!r} was skipped.")
    elif rel is None:
        state.corrections.setdefault(sid, {}).pop(op["slice"], None)
    elif is_correction_path(rel):
        state.corrections.setdefault(sid, {})[op["slice"]] = rel
    else:
        state.warnings.append(f"A correction stored outside the project ({rel!r}) was skipped.")


def _apply_source_put(state: ProjectState, op: dict) -> None:
    """A new source, or one restored by undo (with the labels and corrections it had)."""
    record = op.get("record")
    if not isinstance(record, dict) or not isinstance(record.get("id"), str):
        state.warnings.append("A damaged source entry was skipped.")
        return
    sid = record["id"]
    state.sources[sid] = record
    state.labels[sid] = {}
    state.corrections[sid] = {}
    state.next_source_number = max(state.next_source_number, int(op.get("next", 1)))
    apply_op(state, {"op": "labels", "source": sid, "set": dict(op.get("labels") or {})})
    for slice_id, rel in dict(op.get("corrections") or {}).items():
        apply_op(state, {"op": "correction", "source": sid, "slice": slice_id, "file": rel})


def _apply_source_remove(state: ProjectState, op: dict) -> None:
    sid = op.get("id")
    state.sources.pop(sid, None)
    state.labels.pop(sid, None)
    state.corrections.pop(sid, None)


def _apply_source_move(state: ProjectState, op: dict) -> None:
    """A study whose files moved, pointed at their new place: the same id, labels and corrections."""
    sid = op.get("id")
    if sid not in state.sources or not isinstance(op.get("path"), str):
        state.warnings.append(f"A new place for an unknown study {sid!r} was skipped.")
        return
    state.sources[sid] = {**state.sources[sid], "path": op["path"], "relpath": op.get("relpath")}


def _apply_run_put(state: ProjectState, op: dict) -> None:
    record = op.get("record")
    if isinstance(record, dict) and isinstance(record.get("path"), str):
        paths = [r.get("path") for r in state.runs]
        if record["path"] in paths:   # an update keeps the run's place in the history
            state.runs[paths.index(record["path"])] = record
        else:
            state.runs.append(record)


def _apply_settings(state: ProjectState, op: dict) -> None:
    for key, value in dict(op.get("values") or {}).items():
        if value is None:
            state.settings.pop(key, None)
        else:
            state.settings[key] = value


OPS: dict[str, Callable[[ProjectState, dict], None]] = {
    "labels": _apply_labels,
    "correction": _apply_correction,
    "source_put": _apply_source_put,
    "source_remove": _apply_source_remove,
    "source_move": _apply_source_move,
    "run_put": _apply_run_put,
    "settings": _apply_settings,
}


def apply_op(state: ProjectState, op: dict) -> None:
    """Apply one journal op to the state; an unknown kind is skipped with a warning."""
    kind = op.get("op")
    apply = OPS.get(kind) if isinstance(kind, str) else None
    if apply is None:
        state.warnings.append(f"An unknown change {kind!r} was skipped.")
        return
    apply(state, op)
