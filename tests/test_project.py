"""Project: versioned JSON, labels/corrections that survive restarts and kills, undo/redo, clear errors."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from covidseg_core import atomic
from covidseg_core.project import store
from covidseg_core.errors import InputError, LabelError, ProjectError
from covidseg_core.project.api import Project

REPO = Path(__file__).resolve().parents[1]
HELPER = Path(__file__).resolve().parent / "helpers" / "label_writer.py"


@pytest.fixture
def study(tmp_path):
    folder = tmp_path / "study"
    folder.mkdir()
    return folder


@pytest.fixture
def project(tmp_path, study):
    p = Project.create(tmp_path / "proj", name="Chest CT")
    yield p
    p.close()


def _square(size=16, lo=2, hi=6, dtype=bool):
    mask = np.zeros((size, size), dtype)
    mask[lo:hi, lo:hi] = 1
    return mask


def _load_helper():
    spec = importlib.util.spec_from_file_location("label_writer", HELPER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------------- create / open
def test_create_open_round_trip(tmp_path, study):
    folder = tmp_path / "proj"
    with Project.create(folder, name="Chest CT") as p:
        sid = p.add_source(study, "images")
        p.set_label(sid, "a.png", "infected")
        p.update_settings(fusion="max", cls_epochs=3, device="cpu")
        run = p.new_run_dir()
        p.add_run(run, {"dice": 0.5})
    doc = json.loads((folder / "project.json").read_text())
    assert doc["schema"] == "covidseg-project" and doc["version"] == 1
    assert (folder / "journal.jsonl").read_bytes() == b""   # folded into project.json on close
    with Project.open(folder) as p:
        assert p.name == "Chest CT"
        assert [s["id"] for s in p.sources] == [sid]
        assert p.source(sid)["kind"] == "images"
        assert p.source_path(sid) == study
        assert p.labels(sid) == {"a.png": "infected"}
        assert p.settings == {"fusion": "max", "cls_epochs": 3, "device": "cpu"}
        assert [r["path"] for r in p.runs] == [str(run)] and p.runs[0]["summary"] == {"dice": 0.5}
        assert p.warnings == []


def test_open_accepts_the_project_json_path(project):
    folder = project.folder
    project.close()
    with Project.open(folder / "project.json") as p:
        assert p.folder == folder


def test_create_refuses_an_existing_project(project):
    with pytest.raises(ProjectError, match="already a project"):
        Project.create(project.folder)


def test_create_where_nothing_can_be_written(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(ProjectError, match="a file, not a folder"):
        Project.create(blocker)
    with pytest.raises(ProjectError, match="Cannot create the project folder"):
        Project.create(blocker / "sub")


def test_open_explains_what_is_wrong(tmp_path):
    with pytest.raises(ProjectError, match="does not exist"):
        Project.open(tmp_path / "nowhere")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ProjectError, match="not a CovidSeg Assist project"):
        Project.open(tmp_path / "plain")
    other = tmp_path / "other"
    other.mkdir()
    (other / "project.json").write_text('{"schema": "something-else", "version": 1}')
    with pytest.raises(ProjectError, match="not a CovidSeg Assist project file"):
        Project.open(other)


@pytest.mark.parametrize("content", [b'{"schema": "covidseg-project", "vers', b"", b"\xff\xfe garbage",
                                     b'{"schema": "covidseg-project", "version": 1, "sources": {}}'])
def test_corrupt_project_json_is_an_error_and_nothing_is_touched(project, study, content):
    sid = project.add_source(study, "images")
    project.set_label(sid, "a.png", "clean")   # still in the journal
    folder = project.folder
    project.close()
    (folder / "project.json").write_bytes(content)
    for kept in (store.PREV_FILE, store.PREV_JOURNAL_FILE):   # nothing to recover from (test_project_recovery.py)
        (folder / kept).unlink()
    journal_before = (folder / "journal.jsonl").read_bytes()
    with pytest.raises(ProjectError, match="damaged"):
        Project.open(folder)
    assert (folder / "project.json").read_bytes() == content
    assert (folder / "journal.jsonl").read_bytes() == journal_before
    # a failed open releases the folder: after a repair it opens normally
    (folder / "project.json").write_text(json.dumps({"schema": "covidseg-project", "version": 1}))
    Project.open(folder).close()


def test_newer_schema_version_is_refused(project):
    folder = project.folder
    project.close()
    doc = json.loads((folder / "project.json").read_text())
    doc["version"] = 99
    (folder / "project.json").write_text(json.dumps(doc))
    with pytest.raises(ProjectError) as err:
        Project.open(folder)
    assert "made by a newer version" in str(err.value) and "update covidseg assist" in str(err.value).lower()
    assert json.loads((folder / "project.json").read_text())["version"] == 99


def test_older_versions_go_through_the_migration_table(project, study, monkeypatch):
    sid = project.add_source(study, "images")
    project.set_label(sid, "a.png", "infected")
    folder = project.folder
    project.close()
    v1_bytes = (folder / "project.json").read_bytes()

    def v1_to_v2(doc):
        doc["settings"] = {**doc.get("settings", {}), "fusion": "avg"}
        return doc

    monkeypatch.setattr(store, "VERSION", 2)
    monkeypatch.setitem(store.MIGRATIONS, 1, v1_to_v2)
    with Project.open(folder) as p:
        assert p.settings == {"fusion": "avg"} and p.labels(sid) == {"a.png": "infected"}
    assert json.loads((folder / "project.json").read_text())["version"] == 2
    assert (folder / "project.v1.backup.json").read_bytes() == v1_bytes

    monkeypatch.delitem(store.MIGRATIONS, 1)
    (folder / "project.json").write_bytes(v1_bytes)
    with pytest.raises(ProjectError, match="too old"):
        Project.open(folder)


def test_a_second_writer_is_refused_but_a_reader_sees_every_saved_change(project, study):
    sid = project.add_source(study, "images")
    with pytest.raises(ProjectError, match="already open"):
        Project.open(project.folder)
    project.set_labels(sid, {"a.png": "infected", "b.png": "clean"})
    with Project.open(project.folder, read_only=True) as reader:   # no close(): saved before returning
        assert reader.labels(sid) == {"a.png": "infected", "b.png": "clean"}
        with pytest.raises(ProjectError, match="read-only"):
            reader.set_label(sid, "a.png", None)


def test_a_closed_project_refuses_changes(project, study):
    project.close()
    with pytest.raises(ProjectError, match="closed"):
        project.add_source(study, "images")


# ------------------------------------------------------------------------------------------------ sources
def test_sources_store_absolute_and_relative_paths_and_survive_a_move(tmp_path):
    base = tmp_path / "work"
    (base / "data" / "ct1").mkdir(parents=True)
    with Project.create(base / "proj") as p:
        sid = p.add_source(base / "data" / "ct1", "dicom", series_uid="1.2.3")
        assert p.add_source(base / "data" / "ct1", "dicom", series_uid="1.2.3") == sid   # same study
        other = p.add_source(base / "data" / "ct1", "dicom", series_uid="1.2.4")       # other series
        assert other != sid
        record = p.source(sid)
        assert record["path"] == str(base / "data" / "ct1") and record["relpath"] == "../data/ct1"
        assert record["series_uid"] == "1.2.3"
    shutil.move(base, tmp_path / "moved")
    with Project.open(tmp_path / "moved" / "proj") as p:
        assert p.source_path(sid) == tmp_path / "moved" / "data" / "ct1"


def test_bad_sources(project, study):
    with pytest.raises(InputError, match="Unknown kind"):
        project.add_source(study, "jpeg2000")
    with pytest.raises(InputError, match="does not exist"):
        project.add_source(study / "missing", "nifti")
    for call in (lambda: project.set_label("s9", "a.png", "clean"), lambda: project.labels("s9"),
                 lambda: project.remove_source("s9"), lambda: project.correction("s9", "a.png")):
        with pytest.raises(ProjectError, match="no study with id"):
            call()


def test_remove_source_is_undoable_and_ids_are_not_reused(project, study):
    sid = project.add_source(study, "images")
    project.set_label(sid, "a.png", "infected")
    project.save_correction(sid, "a.png", _square())
    project.remove_source(sid)
    assert project.sources == []
    project.undo()
    assert project.labels(sid) == {"a.png": "infected"} and project.correction(sid, "a.png") is not None
    project.redo()
    assert project.sources == []
    (study / "again").mkdir()
    assert project.add_source(study / "again", "images") != sid


# ------------------------------------------------------------------------------------------------- labels
def test_labels_are_restored_after_reopen(project, study):
    sid = project.add_source(study, "dicom", series_uid="1.2.840.1")
    uid = "1.2.840.113619.2.55.3.604688119.971.1.2"
    project.set_label(sid, uid, "infected")
    project.set_label(sid, "slice 7", "Clean ")   # case and spaces are forgiven
    project.set_label(sid, "gone", "clean")
    project.set_label(sid, "gone", None)
    folder = project.folder
    project.close()
    with Project.open(folder) as p:
        assert p.labels(sid) == {uid: "infected", "slice 7": "clean"}
        assert p.label(sid, uid) == "infected" and p.label(sid, "gone") is None
        assert p.counts(sid) == {"infected": 1, "clean": 1, "unlabelled": None}
        assert p.counts(sid, [uid, "slice 7", "x", "y"]) == {"infected": 1, "clean": 1, "unlabelled": 2}


def test_unknown_labels_are_refused_and_nothing_changes(project, study):
    sid = project.add_source(study, "images")
    for bad in ("covid", "", 1, True):
        with pytest.raises(LabelError, match="Unknown slice label"):
            project.set_label(sid, "a.png", bad)
    with pytest.raises(LabelError):   # one bad label: the whole bulk change is refused
        project.set_labels(sid, {"a.png": "clean", "b.png": "maybe"})
    with pytest.raises(InputError, match="slice id"):
        project.set_label(sid, "", "clean")
    assert project.labels(sid) == {} and not project.can_undo


def test_bulk_set_is_one_undo_step(project, study):
    sid = project.add_source(study, "images")
    project.set_label(sid, "s0", "clean")
    project.set_labels(sid, {f"s{i}": "infected" for i in range(10)})
    assert project.counts(sid)["infected"] == 10
    assert project.undo_text == "Label 10 slices"
    assert project.undo()
    assert project.labels(sid) == {"s0": "clean"}
    assert project.undo()
    assert project.labels(sid) == {} and not project.can_undo


def test_undo_redo_semantics(project, study):
    sid = project.add_source(study, "images")
    assert not project.can_undo and not project.can_redo and project.undo() is False
    project.set_label(sid, "a", "infected")
    project.set_label(sid, "a", "clean")
    project.set_label(sid, "a", "clean")   # no change, no undo step
    project.undo()
    assert project.label(sid, "a") == "infected" and project.can_redo
    project.redo()
    assert project.label(sid, "a") == "clean" and not project.can_redo and project.redo() is False
    project.undo()
    project.undo()
    assert project.label(sid, "a") is None and not project.can_undo
    project.redo()
    assert project.label(sid, "a") == "infected" and project.can_redo
    project.set_label(sid, "b", "clean")   # a new change drops what could be redone
    assert not project.can_redo
    folder = project.folder
    project.undo()   # an undo is saved like any change
    project.close()
    with Project.open(folder) as p:
        assert p.labels(sid) == {"a": "infected"} and not p.can_undo   # history is per session


def test_undo_history_is_bounded(project, study):
    project.undo_limit = 5
    sid = project.add_source(study, "images")
    for i in range(8):
        project.set_label(sid, f"s{i}", "clean")
    undone = 0
    while project.undo():
        undone += 1
    assert undone == 5 and len(project.labels(sid)) == 3


# -------------------------------------------------------------------------------------------- corrections
def test_corrections_are_saved_reloaded_and_undone(project, study):
    sid = project.add_source(study, "images")
    first, second = _square(lo=2, hi=6), _square(lo=8, hi=14, dtype=np.uint8) * 255
    path = project.save_correction(sid, "img_001.png", first, expected_shape=(16, 16))
    assert path == project.folder / "corrections" / sid / "img_001.png"
    assert project.corrections(sid) == {"img_001.png": path}
    assert np.array_equal(project.correction(sid, "img_001.png") > 0, first)
    project.save_correction(sid, "img_001.png", second)
    assert np.array_equal(project.correction(sid, "img_001.png"), second)
    project.undo()   # the previous mask comes back, on disk too
    assert np.array_equal(project.correction(sid, "img_001.png") > 0, first)
    project.undo()
    assert project.correction(sid, "img_001.png") is None and not path.exists()
    project.redo()
    project.redo()
    assert project.remove_correction(sid, "img_001.png") and not path.exists()
    assert project.remove_correction(sid, "img_001.png") is False
    project.undo()
    folder = project.folder
    project.close()
    with Project.open(folder) as p:
        stored = p.correction(sid, "img_001.png")
        assert stored.dtype == np.uint8 and set(np.unique(stored)) == {0, 255}
        assert np.array_equal(stored, second)
    assert not list(folder.rglob("*.tmp"))


def test_bad_correction_masks(project, study):
    sid = project.add_source(study, "images")
    with pytest.raises(InputError, match="mask of the wrong size"):
        project.save_correction(sid, "a.png", _square(16), expected_shape=(512, 512))
    with pytest.raises(InputError, match="2-D"):
        project.save_correction(sid, "a.png", np.zeros((2, 16, 16), bool))
    with pytest.raises(InputError, match="only 0 and 1"):
        project.save_correction(sid, "a.png", np.full((4, 4), 127, np.uint8))
    with pytest.raises(InputError, match="boolean or uint8"):
        project.save_correction(sid, "a.png", np.zeros((4, 4), np.float32))
    assert project.corrections(sid) == {} and not project.can_undo


def test_correction_file_names_are_safe_and_unique(project, study):
    sid = project.add_source(study, "images")
    ids = ["1.2.840.10008.5.1.4.1", "a.png", "a.jpg", "A.png", "../evil/name", "CON", "x:y\\z", "Schnitt-ü.png",
           "bad-\udcff-utf8.png"]   # the last: a file name that is not valid UTF-8, as os.listdir gives it
    for slice_id in ids:
        project.save_correction(sid, slice_id, _square())
    project.set_labels(sid, {s: "infected" for s in ids})
    folder = project.folder
    project.close()
    project = Project.open(folder)
    paths = project.corrections(sid)
    assert sorted(project.labels(sid)) == sorted(ids) and sorted(paths) == sorted(ids)
    names = [paths[s].name.lower() for s in ids]
    assert len(set(names)) == len(ids)
    assert paths["1.2.840.10008.5.1.4.1"].name == "1.2.840.10008.5.1.4.1.png"
    for path in paths.values():
        assert path.parent == project.folder / "corrections" / sid and path.is_file()
        assert all(c.isascii() and (c.isalnum() or c in "._-") for c in path.name)
    project.close()


# -------------------------------------------------------------------------------------- runs and settings
def test_runs_keep_their_history(project):
    first, second = project.new_run_dir(), project.new_run_dir(prefix="retrain")
    assert first != second and first.is_dir() and second.is_dir()
    assert first.parent == project.folder / "runs" and second.name.startswith("retrain-")
    project.add_run(first, {"status": "running"})
    project.add_run(second, {"status": "done", "dice": 0.7})
    project.add_run(first, {"status": "done", "dice": 0.6})   # the same run, updated
    assert [(r["path"], r["summary"]["dice"]) for r in project.runs] == [(str(first), 0.6), (str(second), 0.7)]
    with pytest.raises(InputError, match="run summary"):
        project.add_run(first, {"model": object()})
    with pytest.raises(InputError, match="prefix"):
        project.new_run_dir("../x")


def test_settings_are_checked(project):
    project.update_settings(fusion="avg", image_size=256, seed=0)
    project.update_settings(seed=None)
    assert project.settings == {"fusion": "avg", "image_size": 256}
    for bad in ({"fusion": "mean"}, {"device": "gpu"}, {"seg_epochs": 0}, {"image_size": "big"},
                {"budget_minutes": -1}, {"budget_minutes": "8"}, {"budget_minutes": float("nan")}):
        with pytest.raises(InputError):
            project.update_settings(**bad)
    assert project.settings == {"fusion": "avg", "image_size": 256}
    project.update_settings(budget_minutes=0)       # the fixed schedule
    project.update_settings(budget_minutes=2.5)
    assert project.settings["budget_minutes"] == 2.5


# ------------------------------------------------------------------------------------ observers, threads
def test_observers_hear_saved_changes(project, study):
    heard = []
    unsubscribe = project.subscribe(lambda event, payload: heard.append((event, payload)))
    project.subscribe(lambda event, payload: 1 / 0)   # a broken observer does not break the others
    sid = project.add_source(study, "images")
    project.set_labels(sid, {"a": "clean", "b": "infected"})
    project.undo()
    unsubscribe()
    project.redo()
    events = [e for e, _ in heard]
    assert events == ["sources_changed", "labels_changed", "history_changed", "labels_changed", "history_changed"]
    assert heard[1][1] == {"source_id": sid, "slice_ids": ["a", "b"]}
    assert heard[-1][1]["can_redo"] is True and heard[-1][1]["redo_text"] == "Label 2 slices"


def test_two_threads_can_change_the_project_at_once(project, study):
    sid = project.add_source(study, "images")

    def write(prefix):
        for i in range(40):
            project.set_label(sid, f"{prefix}{i}", "infected" if i % 2 else "clean")

    threads = [threading.Thread(target=write, args=(p,)) for p in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    folder = project.folder
    with Project.open(folder, read_only=True) as reader:
        assert len(reader.labels(sid)) == 80 and reader.warnings == []


# -------------------------------------------------------------------------------------------- durability
def test_journal_is_folded_into_snapshots(project, study):
    project.compact_every = 5
    sid = project.add_source(study, "images")
    for i in range(12):
        project.set_label(sid, f"s{i}", "clean")
    lines = (project.folder / "journal.jsonl").read_bytes().splitlines()
    assert 0 < len(lines) < 5
    assert json.loads((project.folder / "project.json").read_text())["journal_seq"] >= 10
    with Project.open(project.folder, read_only=True) as reader:
        assert len(reader.labels(sid)) == 12


def test_a_torn_last_journal_line_is_ignored(project, study, tmp_path):
    sid = project.add_source(study, "images")
    project.set_labels(sid, {"a": "infected", "b": "clean"})
    copy = tmp_path / "crashed"
    shutil.copytree(project.folder, copy)   # as a kill would leave it: changes only in the journal
    torn = store.encode_record(999, [{"op": "labels", "source": sid, "set": {"c": "clean"}}])[:-9]
    with open(copy / "journal.jsonl", "ab") as fh:
        fh.write(torn)
    with Project.open(copy) as p:
        assert p.labels(sid) == {"a": "infected", "b": "clean"}
        assert any("incomplete" in w for w in p.warnings)
        p.set_label(sid, "d", "infected")   # appended after the torn bytes were dropped
    with Project.open(copy) as p:
        assert p.labels(sid) == {"a": "infected", "b": "clean", "d": "infected"} and p.warnings == []


def test_a_failed_save_changes_nothing_and_leaves_no_partial_line(project, study, monkeypatch):
    sid = project.add_source(study, "images")
    project.set_label(sid, "a", "clean")

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "_sync", disk_full)
    with pytest.raises(ProjectError, match="No space left"):
        project.set_label(sid, "a", "infected")
    with pytest.raises(ProjectError, match="No space left"):
        project.save_correction(sid, "a", _square())
    monkeypatch.undo()
    assert project.label(sid, "a") == "clean" and project.undo_text == "Label slice a clean"
    assert project.corrections(sid) == {} and not (project.folder / "corrections" / sid / "a.png").exists()
    project.set_label(sid, "b", "infected")
    with Project.open(project.folder, read_only=True) as reader:
        assert reader.labels(sid) == {"a": "clean", "b": "infected"} and reader.warnings == []


def test_atomic_write_never_leaves_a_torn_file(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    atomic.atomic_write_json(target, {"old": True})
    before = target.read_bytes()

    def refuse(src, dst):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError):
        atomic.atomic_write_json(target, {"new": list(range(1000))})
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_failed_snapshot_keeps_the_old_one_and_the_journal(project, study, monkeypatch):
    sid = project.add_source(study, "images")
    project.compact()
    before = (project.folder / "project.json").read_bytes()
    project.set_label(sid, "a", "infected")

    def refuse(src, dst):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(ProjectError, match="kept in the journal"):
        project.compact()
    project.compact_every = 1
    project.set_label(sid, "b", "clean")   # its snapshot fails too, but the change itself is saved
    monkeypatch.undo()
    assert (project.folder / "project.json").read_bytes() == before
    assert not [p for p in project.folder.iterdir() if p.name.endswith(".tmp")]
    with Project.open(project.folder, read_only=True) as reader:
        assert reader.labels(sid) == {"a": "infected", "b": "clean"}


def _replay_until(helper, tmp_path, steps: int):
    """The state a project must have after the first `steps` changes of the helper's plan."""
    (tmp_path / "oracle-study").mkdir(exist_ok=True)
    oracle = Project.create(tmp_path / f"oracle-{steps}")
    sid = oracle.add_source(tmp_path / "oracle-study", "images")
    for i in range(steps):
        helper.run_step(oracle, sid, i)
    state = _state(oracle, sid)
    oracle.close()
    return state


def _state(project, sid):
    corrections = {s: project.correction(sid, s).tobytes() for s in project.corrections(sid)}
    return project.labels(sid), corrections


@pytest.mark.parametrize("delay", [0.05, 0.3, 0.6, 0.9])
def test_kill_at_any_moment_keeps_every_reported_change(tmp_path, study, delay):
    folder = tmp_path / "proj"
    with Project.create(folder) as p:
        sid = p.add_source(study, "images")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, str(HELPER), str(folder)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    lines: list[str] = []
    writing = threading.Event()   # the first change has been reported: the kill lands mid-loop

    def read():
        for line in child.stdout:
            lines.append(line.strip())
            if line.startswith("done "):
                writing.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while not writing.wait(0.05) and child.poll() is None and time.monotonic() < deadline:
            pass
        assert writing.is_set() and child.poll() is None, child.stderr.read() if child.poll() is not None else ""
        time.sleep(delay)
        assert child.poll() is None, child.stderr.read()   # still writing when killed
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
        reader.join(10)
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL

    done = sum(line.startswith("done ") for line in lines)
    assert done > 0, lines
    last_reported = {}
    for line in lines:
        if line.startswith("saved "):
            _, slice_id, label = line.split(" ")
            last_reported[slice_id] = None if label == "none" else label

    with Project.open(folder) as p:
        got = _state(p, sid)
    # every reported label is there with its value, unless the one unreported change in flight touched it
    helper = _load_helper()
    in_flight = _replay_until(helper, tmp_path, done + 1)
    expected = _replay_until(helper, tmp_path, done)
    touched_in_flight = {s for s in set(expected[0]) | set(in_flight[0]) if expected[0].get(s) != in_flight[0].get(s)}
    for slice_id, label in last_reported.items():
        if slice_id not in touched_in_flight:
            assert got[0].get(slice_id) == label, (slice_id, label)
    # and the whole state is exactly that after the reported changes, or after the one in flight too
    assert got in (expected, in_flight), f"state matches neither {done} nor {done + 1} changes"
