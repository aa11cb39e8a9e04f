"""A study's decoded slices kept on disk, memory-mapped: decoded once, read by every torchrun rank and later runs.

`load_slice_set_cached` returns what `data.load_slice_set` returns, but the arrays come from an entry of the cache
folder (`default_cache_dir`): images.npy (float32) and the ground truth, opened read-only with
`np.load(mmap_mode="r")`, plus entry.json (ids, labels, groups, shapes). An entry is named by a key made without
decoding anything: the resolved input path, the path, size and mtime_ns of every file it is read from (and of the
labels CSV), the cache's format and the source of the modules that decode. Touching a file gives a new entry.

An entry is written whole into a temporary folder beside it and renamed into place; one found damaged (a file
missing or cut short, unreadable JSON) is dropped and rebuilt. A cache that cannot be written is a warning and a
plain load, never a failure. The cached SliceSet has no `study` (not cached; `covidseg train` does not use it).
Under torchrun rank 0 alone decodes (docs/distributed.md, "The slice cache"). `open_study_shared` does the same
for the studies of a project (`train --project`): rank 0 reads each study and publishes its slices in [0, 1], the
other ranks map them (`MappedStudy`) instead of decoding the study again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import distributed
from .atomic import fsync_dir
from .data import SliceSet, load_slice_set

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CACHE_ENV = "COVIDSEG_CACHE_DIR"
META_NAME = "entry.json"
# the modules whose code decides the decoded arrays: a change to any of them must not reuse old entries
_READERS = ("data.py", "study.py", "io/loader.py", "io/images.py", "io/dicom.py", "io/nifti.py",
            "io/nifti_raw.py", "imaging/windowing.py")


def default_cache_dir(env=os.environ) -> Path:
    """$COVIDSEG_CACHE_DIR, else $XDG_CACHE_HOME/covidseg/slices, else ~/.cache/covidseg/slices."""
    if env.get(CACHE_ENV):
        return Path(env[CACHE_ENV]).expanduser()
    return Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "covidseg" / "slices"


def _reader_digest() -> str:
    h = hashlib.sha256()
    root = Path(__file__).parent
    for name in _READERS:
        try:
            h.update(name.encode() + b"\0" + (root / name).read_bytes())
        except OSError:          # an installed package without sources: the format version alone
            h.update(name.encode() + b"\0missing")
    return h.hexdigest()[:16]


def _walk(folder: Path, seen: set | None = None):
    """Every file under `folder`, symbolic links to folders followed once (a data set's images/ may be one)."""
    seen = set() if seen is None else seen
    st = folder.stat()
    if (st.st_dev, st.st_ino) in seen:
        return
    seen.add((st.st_dev, st.st_ino))
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_dir():
            yield from _walk(Path(entry.path), seen)
        elif entry.is_file():
            yield Path(entry.path)


def _stat_row(p: Path, base: Path) -> list:
    st = p.stat()
    return [p.relative_to(base).as_posix(), st.st_size, st.st_mtime_ns]


def source_inputs(path: str | Path, labels_csv: str | Path | None = None) -> dict:
    """What the key is made of (no image is decoded): every file the load may read, with size and mtime_ns.
    A volume file: itself and the files beside it (its labels CSV); a DICOM file: its folder; a folder: all of it."""
    from .io.dicom import sniff_dicom
    from .io.nifti import volume_suffix

    path = Path(path).resolve()
    path.stat()         # a missing path is an OSError here (the plain load then says what is wrong)
    if path.is_dir():
        base, files = path, list(_walk(path))
    elif volume_suffix(path):
        base, files = path.parent, [p for p in sorted(path.parent.iterdir()) if p.is_file()]
    else:
        base, files = path.parent, list(_walk(path.parent)) if sniff_dicom(path) else [path]
    inputs = {"format": FORMAT_VERSION, "readers": _reader_digest(), "path": str(path),
              "files": [_stat_row(p, base) for p in files], "labels_csv": None}
    if labels_csv is not None:
        csv = Path(labels_csv).resolve()
        inputs["labels_csv"] = [str(csv), *_stat_row(csv, csv.parent)[1:]]
    return inputs


def entry_key(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:32]


def _write_synced(path: Path, array: np.ndarray | None = None, text: str = "") -> None:
    with open(path, "wb") as fh:
        if array is None:
            fh.write(text.encode("utf-8"))
        else:
            np.save(fh, array, allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())


def write_entry(folder: Path, slices: SliceSet, inputs: dict) -> Path:
    """Publish `slices` as the entry `folder`: written in a temporary folder beside it, then renamed into place.
    Another process that published the same entry first wins; ours is dropped."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{folder.name}-", dir=folder.parent))
    try:
        _write_synced(tmp / "images.npy", np.ascontiguousarray(slices.images, dtype=np.float32))
        if slices.gt_masks is not None:
            _write_synced(tmp / "gt_masks.npy", np.ascontiguousarray(slices.gt_masks, dtype=np.uint8))
            _write_synced(tmp / "has_gt.npy", np.asarray(slices.has_gt, dtype=bool))
        meta = {"format": FORMAT_VERSION, "key": folder.name, "n": len(slices), "shape": list(slices.images.shape),
                "gt": slices.gt_masks is not None, "ids": list(slices.ids), "labels": list(slices.labels),
                "groups": list(slices.groups), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "inputs": inputs}
        _write_synced(tmp / META_NAME, text=json.dumps(meta))        # last: an entry without it is no entry
        fsync_dir(tmp)
        try:
            os.rename(tmp, folder)       # a folder: os.replace would not replace a non-empty one either
        except OSError:
            if not folder.is_dir():
                raise
            log.info("slice cache entry %s was written by another process meanwhile", folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    fsync_dir(folder.parent)
    return folder


def _mapped(path: Path, shape: tuple, dtype) -> np.ndarray:
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
    if arr.shape != shape or arr.dtype != np.dtype(dtype):
        raise ValueError(f"{path.name} is {arr.dtype} {arr.shape}, expected {np.dtype(dtype)} {shape}")
    return np.asarray(arr)      # a plain read-only ndarray view of the map, not an np.memmap


def open_entry(folder: Path) -> SliceSet:
    """The SliceSet of a written entry, its arrays memory-mapped read-only; ValueError/OSError when damaged."""
    meta = json.loads((folder / META_NAME).read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT_VERSION or meta.get("key") != folder.name:
        raise ValueError(f"format {meta.get('format')} / key {meta.get('key')} do not match")
    shape = tuple(int(v) for v in meta["shape"])
    n = shape[0] if shape else -1
    if not (len(shape) == 3 and n == meta["n"] == len(meta["ids"]) == len(meta["labels"]) == len(meta["groups"])):
        raise ValueError(f"entry.json lists {len(meta['ids'])} slices for images of shape {shape}")
    images, gt, has = _mapped(folder / "images.npy", shape, np.float32), None, None
    if meta["gt"]:
        gt, has = _mapped(folder / "gt_masks.npy", shape, np.uint8), _mapped(folder / "has_gt.npy", (n,), bool)
    return SliceSet(images=images, ids=list(meta["ids"]), labels=list(meta["labels"]),
                    groups=list(meta["groups"]), gt_masks=gt, has_gt=has)


def _plain(path, labels_csv, why: str) -> SliceSet:
    log.warning("slice cache not used (%s): reading %s without it", why, path)
    return load_slice_set(path, labels_csv)


def _find_or_build(path: Path, labels_csv, cache_dir) -> tuple[SliceSet, Path | None]:
    """This process's load: the entry for `path` when it is there and whole, else decoded and written."""
    cache = Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser()
    try:
        inputs = source_inputs(path, labels_csv)
    except OSError as exc:      # missing or unreadable data: load_slice_set says what is wrong in its own words
        log.info("slice cache not used: cannot list %s (%s)", path, exc)
        return load_slice_set(path, labels_csv), None
    slices, folder = _entry(cache, inputs, lambda: load_slice_set(path, labels_csv))
    if slices is None:
        return _plain(path, labels_csv, f"the cache folder {cache} lies inside the data, never written"), None
    return slices, folder


def _entry(cache: Path, inputs: dict, build: Callable[[], SliceSet]) -> tuple[SliceSet | None, Path | None]:
    """The entry of `inputs` in `cache`: (its mapped SliceSet, its folder) when it is there and whole, else
    `build()` written as it (older entries of the same data dropped); (what build gave, None) when the cache
    cannot be written; (None, None) when the cache folder lies inside the data."""
    src, where = Path(inputs["path"]), cache.resolve()
    if where == src or src in where.parents:
        return None, None
    folder = cache / entry_key(inputs)
    try:
        slices = open_entry(folder)
        log.info("slice cache hit: %s (%d slices)", folder, len(slices))
        return slices, folder
    except (OSError, ValueError, KeyError, TypeError) as exc:
        if os.path.isdir(folder):       # no entry yet is no news
            log.warning("slice cache entry %s is damaged (%s): rebuilding it", folder, exc)
    shutil.rmtree(folder, ignore_errors=True)
    started = time.monotonic()
    slices = build()
    try:
        write_entry(folder, slices, inputs)
        cached = open_entry(folder)
    except (OSError, ValueError) as exc:
        log.warning("slice cache folder %s cannot be written (%s): %s is read without it", cache, exc, src)
        return slices, None
    log.info("slice cache entry %s written (%d slices, %.1f s)", folder, len(slices), time.monotonic() - started)
    _drop_stale(cache, folder.name, inputs)
    return cached, folder


def _identity(inputs: dict) -> tuple:
    """What an entry is an entry of: the data path, the labels CSV, and for a project's study its series."""
    return (inputs["path"], inputs["labels_csv"] and inputs["labels_csv"][0], inputs.get("study", False),
            inputs.get("series_uid"))


def _drop_stale(cache: Path, keep: str, inputs: dict) -> None:
    """Entries of the same data (`_identity`) but older files or readers: replaced by `keep`, removed (an entry
    of a large study takes gigabytes). A process still mapping one keeps its pages (POSIX unlink)."""
    for meta in cache.glob(f"*/{META_NAME}"):
        if meta.parent.name == keep:
            continue
        try:
            stale = _identity(json.loads(meta.read_text(encoding="utf-8"))["inputs"]) == _identity(inputs)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if stale:
            log.info("slice cache: removing %s, an older entry of %s", meta.parent, inputs["path"])
            shutil.rmtree(meta.parent, ignore_errors=True)


def load_slice_set_cached(path: str | Path, labels_csv: str | Path | None = None,
                          cache_dir: str | Path | None = None) -> SliceSet:
    """`load_slice_set(path, labels_csv)` through the cache in `cache_dir` (default: `default_cache_dir()`).
    Under torchrun rank 0 finds or builds the entry while the others wait, then they map the same files."""
    path = Path(path)
    if not distributed.active():
        return _find_or_build(path, labels_csv, cache_dir)[0]
    slices, folder = _from_rank_0(lambda: _find_or_build(path, labels_csv, cache_dir))
    if distributed.is_writer():
        return slices
    if folder is None:
        return _plain(path, labels_csv, "rank 0 did not use the cache")
    try:
        return open_entry(folder)
    except (OSError, ValueError, KeyError, TypeError) as exc:   # a cache folder that is not shared between nodes
        return _plain(path, labels_csv, f"rank 0's entry {folder} is not readable here: {exc}; give --cache-dir "
                      "a folder all nodes see")


def _from_rank_0(publish: Callable[[], tuple[object, Path | None]]) -> tuple[object, Path | None]:
    """Under torchrun: rank 0 runs `publish` -> (its result, the cache entry it found or wrote, or None) and tells
    the other ranks where the entry is; they get (None, the entry or None), or raise rank 0's error, so that a
    failure to read ends (or leaves out) the same thing on every rank."""
    if distributed.is_writer():
        try:
            result, folder = publish()
        except Exception as exc:
            try:
                pickle.dumps(exc)
                distributed.broadcast(("error", exc))
            except Exception:
                distributed.broadcast(("error", RuntimeError(f"rank 0 could not read the data: {exc}")))
            raise
        distributed.broadcast(("ok", None if folder is None else str(folder)))
        return result, folder
    outcome, value = distributed.broadcast(None)
    if outcome == "error":
        raise value
    return None, None if value is None else Path(value)


@dataclass
class MappedStudy:
    """What training needs of a study, mapped from a cache entry: its slices in [0, 1] and their ids (a torchrun
    rank other than 0 trains with it; it is never predicted or exported, which rank 0 does with the study)."""
    images01: np.ndarray
    slice_ids: list[str]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images01.shape)

    @property
    def n_slices(self) -> int:
        return int(self.images01.shape[0])

    def unit_range(self, z: int | None = None) -> np.ndarray:
        return self.images01 if z is None else self.images01[z]


def _study_entry(path: Path, series_uid: str | None, study, cache_dir) -> Path | None:
    """Rank 0: the entry of `study`'s slices in [0, 1], found or written now; None when the cache cannot serve."""
    try:
        inputs = {**source_inputs(path), "study": True, "series_uid": series_uid}
    except OSError as exc:
        log.info("slice cache not used: cannot list %s (%s)", path, exc)
        return None
    n = study.n_slices
    folder = _entry(Path(cache_dir).expanduser(), inputs, lambda: SliceSet(
        images=np.asarray(study.unit_range(), dtype=np.float32), ids=list(study.slice_ids), labels=[None] * n,
        groups=[""] * n))[1]
    if folder is None:
        log.warning("slice cache %s not used for the study %s: every rank reads it itself", cache_dir, path)
    return folder


def open_study_shared(path: str | Path, series_uid: str | None, read: Callable[[], object], cache_dir=None):
    """`read()` (a project's study) in one process, or with no `cache_dir`. Under torchrun rank 0 reads it and
    publishes its slices in the cache; the other ranks map them (MappedStudy) rather than decode it again, or read
    it themselves when rank 0 could not publish (a warning). A study rank 0 cannot read fails on every rank with
    rank 0's error, so that every rank leaves the same studies out."""
    if not distributed.active() or cache_dir is None:
        return read()

    def publish():
        study = read()
        return study, _study_entry(Path(path), series_uid, study, cache_dir)

    study, folder = _from_rank_0(publish)
    if distributed.is_writer():
        return study
    if folder is not None:
        try:
            entry = open_entry(folder)
            log.info("study %s mapped from rank 0's slice cache entry %s", path, folder)
            return MappedStudy(entry.images, list(entry.ids))
        except (OSError, ValueError, KeyError, TypeError) as exc:   # a cache folder that nodes do not share
            log.warning("rank 0's slice cache entry %s is not readable here (%s): reading %s", folder, exc, path)
    return read()
