"""How a project folder is kept on disk: a snapshot, a journal of changes since, and a lock.

- `project.json` is a snapshot of the whole project, always replaced atomically (temp file, fsync, rename). It
  records `journal_seq`, the number of the last change it includes.
- `journal.jsonl` gets one line per change, written with a single write() and fsynced before the change is
  reported done, so saving a label costs one small append instead of rewriting the whole project.
- On open the snapshot is read and the journal lines after `journal_seq` are replayed. A kill can only tear the
  line being written, which was never reported done: it is skipped (with a warning), never a crash.
- `project.lock` holds an OS lock while a project is open for writing, so two windows cannot interleave changes.
- Each compaction first keeps the snapshot it replaces as `project.prev.json` and the journal lines since it as
  `journal.prev.jsonl`. A project.json damaged outside the program (a truncated copy, a failing disk) is then
  rebuilt from those two plus the journal, and the damaged file is kept as `project.damaged.json`.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

from ..errors import InputError, ProjectError

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None
try:  # Windows
    import msvcrt
except ImportError:
    msvcrt = None

log = logging.getLogger(__name__)

SCHEMA = "covidseg-project"
VERSION = 1
PROJECT_FILE = "project.json"
JOURNAL_FILE = "journal.jsonl"
LOCK_FILE = "project.lock"
PREV_FILE = "project.prev.json"
PREV_JOURNAL_FILE = "journal.prev.jsonl"
DAMAGED_FILE = "project.damaged.json"


class DamagedSnapshot(ProjectError):
    """project.json cannot be parsed or has the wrong structure: a case for recovery from the kept snapshot."""

# Format upgrades: MIGRATIONS[v] turns a version-v document into a version-(v+1) one. Empty while only v1 exists;
# when v2 comes, add MIGRATIONS[1] here and older projects open transparently (their v1 file is kept as a backup).
MIGRATIONS: dict[int, Callable[[dict], dict]] = {}


def migrate(doc: dict, where: Path) -> dict:
    """Bring a snapshot document to VERSION, or say clearly why it cannot be read."""
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise ProjectError(f"The project file {where} has no valid format version ({version!r}).",
                           "The file is damaged; restore it from a backup.")
    if version > VERSION:
        raise ProjectError(
            f"The project in {where.parent} was made by a newer version of CovidSeg Assist "
            f"(project format {version}; this version reads up to {VERSION}).",
            "Update CovidSeg Assist to open it.")
    while version < VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise ProjectError(f"The project format {version} in {where} is too old for this version.",
                               "Open it with an older CovidSeg Assist and save it again.")
        doc = step(dict(doc))
        version += 1
        doc["version"] = version
    return doc


def read_snapshot(path: Path) -> tuple[dict, bytes, int]:
    """Read and migrate project.json. Returns (document, the raw bytes, the version it was stored in)."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ProjectError(f"Cannot read the project file {path}: {err.strerror or err}.",
                           "Check that the folder is readable.") from err
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DamagedSnapshot(f"The project file {path} is damaged and cannot be read ({err}).",
                           "Restore project.json from a backup; nothing in the folder was changed.") from err
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ProjectError(f"{path} is not a CovidSeg Assist project file.",
                           "Choose the folder of a CovidSeg Assist project.")
    stored_version = doc.get("version")
    doc = migrate(doc, path)
    return doc, raw, stored_version


def recover(folder: Path, damaged: DamagedSnapshot) -> tuple[dict, bytes, int, list[dict], list[str]]:
    """The kept snapshot (project.prev.json) with the journal lines after it, for a damaged project.json:
    (document, its bytes, its stored version, journal records, warnings). Re-raises `damaged` when there is
    nothing to recover from."""
    prev = folder / PREV_FILE
    if not prev.is_file():
        raise damaged
    try:
        doc, raw, stored_version = read_snapshot(prev)
    except ProjectError:
        raise damaged from None
    older, warnings_older = read_journal(folder / PREV_JOURNAL_FILE)
    newer, warnings = read_journal(folder / JOURNAL_FILE)
    records = sorted({r["seq"]: r for r in older + newer}.values(), key=lambda r: r["seq"])
    base = doc.get("journal_seq", 0)
    seqs = [r["seq"] for r in records if r["seq"] > base]
    expected = list(range(base + 1, base + 1 + len(seqs)))
    notes = [f"{damaged.message.rstrip('.')}; it was rebuilt from {PREV_FILE} and {len(seqs)} journaled "
             f"change(s), and the damaged file is kept as {DAMAGED_FILE}."]
    if seqs != expected:
        notes.append("Some changes between the kept snapshot and the journal are missing: check the labels.")
    return doc, raw, stored_version, records, notes + warnings_older + warnings


def read_journal(path: Path) -> tuple[list[dict], list[str]]:
    """The well-formed records of a journal, and warnings about the lines that were skipped."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return [], []
    except OSError as err:
        raise ProjectError(f"Cannot read the project journal {path}: {err.strerror or err}.",
                           "Check that the folder is readable.") from err
    records: list[dict] = []
    warnings: list[str] = []
    lines = raw.split(b"\n")
    last = len(lines) - 1
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        record = _parse_record(line)
        if record is not None:
            records.append(record)
        elif number == last:
            # the change being written when the program stopped: it was never reported saved
            warnings.append("The last change before the program stopped was incomplete and was skipped.")
        else:
            warnings.append(f"Line {number + 1} of the project journal is damaged and was skipped.")
    return records, warnings


def _parse_record(line: bytes) -> dict | None:
    try:
        record = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if (not isinstance(record, dict) or not isinstance(record.get("seq"), int)
            or not isinstance(record.get("ops"), list)):
        return None
    return record


def encode_record(seq: int, ops: list[dict]) -> bytes:
    # ASCII escapes: any slice id (even a file name that is not valid UTF-8) survives the round trip
    return (json.dumps({"seq": seq, "ops": ops}, separators=(",", ":")) + "\n").encode("ascii")


def _sync(fd: int) -> None:
    (os.fdatasync if hasattr(os, "fdatasync") else os.fsync)(fd)


class Journal:
    """Append-only change log. Each append is one write() plus fsync; a failed append is cut off again."""

    def __init__(self, path: Path):
        self.path = path
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0)
        self._fd = os.open(path, flags, 0o644)
        self.size = os.fstat(self._fd).st_size
        self.records = 0   # appended since the last reset

    def append(self, data: bytes) -> None:
        try:
            written = 0
            while written < len(data):
                written += os.write(self._fd, data[written:])
            _sync(self._fd)
        except OSError:
            # e.g. disk full mid-line: cut the partial line off so the next change does not merge with it
            try:
                os.ftruncate(self._fd, self.size)
            except OSError:
                log.warning("could not cut a partial journal line off %s", self.path)
            raise
        self.size += len(data)
        self.records += 1

    def reset(self) -> None:
        """Empty the journal once a snapshot holds everything in it."""
        os.ftruncate(self._fd, 0)
        _sync(self._fd)
        self.size = 0
        self.records = 0

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class FolderLock:
    """An OS lock on project.lock: released by the OS even when the process is killed."""

    def __init__(self, folder: Path):
        path = folder / LOCK_FILE
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise ProjectError(f"Cannot write to the project folder {folder}: {err.strerror or err}.",
                               "Choose a folder you can write to, or open the project read-only.") from err
        try:
            if fcntl is not None:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            elif msvcrt is not None:  # pragma: no cover - Windows
                msvcrt.locking(self._fd, msvcrt.LK_NBLCK, 1)
        except OSError as err:
            os.close(self._fd)
            raise ProjectError(f"The project in {folder} is already open in another CovidSeg Assist "
                               "window or process.",
                               "Close it there first, or open it read-only.") from err

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)   # closing the descriptor drops the lock
            self._fd = -1


def remove_stale_temp_files(folder: Path) -> None:
    """Temp files an interrupted atomic write left behind (never the published files themselves)."""
    patterns = [f".{PROJECT_FILE}.*.tmp", "corrections/*/.*.tmp"]
    for pattern in patterns:
        for tmp in folder.glob(pattern):
            try:
                tmp.unlink()
            except OSError:
                log.debug("could not remove stale temp file %s", tmp)


def json_copy(value: Any, what: str) -> Any:
    """A deep copy through JSON, so that what is stored is exactly what will be read back."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise InputError(f"The {what} cannot be saved in the project ({err}).",
                         "Use plain numbers, strings, lists and dicts.") from err
