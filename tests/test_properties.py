"""Property-based tests (Hypothesis) of what parses user input (issue 15, "beyond the list"): the labels CSV
reader, project journal replay after a kill, and the slice order of DICOM headers."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from covidseg_core.errors import LabelError  # noqa: E402
from covidseg_core.io.images import read_labels_csv  # noqa: E402
from covidseg_core.project.api import Project  # noqa: E402

SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                          HealthCheck.too_slow])


# --- labels CSV: any bytes give a result or a LabelError -------------------------------------------------

CSV_PIECES = st.sampled_from(["file", "label", ",", "\n", "\r\n", '"', "infected", "clean", "INFECTED ", "a.png",
                              "b.png", "none", "x", "\ufeff", "\x00", " ", ";"])


@settings(SETTINGS, max_examples=150)
@given(st.one_of(st.binary(max_size=300),
                 st.lists(CSV_PIECES, max_size=40).map(lambda p: "".join(p).encode("utf-8")),
                 st.lists(CSV_PIECES, max_size=40).map(lambda p: ("file,label\n" + "".join(p)).encode("utf-8"))))
def test_labels_csv_reader_returns_labels_or_a_label_error(data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "labels.csv"
        path.write_bytes(data)
        try:
            rows = read_labels_csv(path)
        except LabelError as err:
            assert err.message
            return
    assert all(isinstance(k, str) and k for k in rows)
    assert all(r["label"] in ("infected", "clean", None) for r in rows.values())


# --- journal replay: a killed project always reopens to a prefix of what was acknowledged ----------------

OPS = st.lists(st.one_of(
    st.tuples(st.just("label"), st.integers(0, 4), st.sampled_from(["infected", "clean", None])),
    st.tuples(st.just("correct"), st.integers(0, 4), st.integers(1, 15)),
    st.just(("undo",)), st.just(("redo",))), min_size=1, max_size=12)


def _state(project, sid) -> tuple:
    return tuple(sorted(project.labels(sid).items())), tuple(sorted(project.corrections(sid)))


@settings(SETTINGS, max_examples=30)
@given(ops=OPS, cut=st.floats(0.0, 1.0))
def test_journal_replay_after_a_kill_is_a_prefix_of_what_was_acknowledged(ops, cut):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "study").mkdir()
        project = Project.create(tmp / "proj")
        sid = project.add_source(tmp / "study", "images")
        project.compact()                        # the study is in the snapshot; the changes go to the journal
        states = [_state(project, sid)]          # after each acknowledged change
        lines = [(tmp / "proj" / "journal.jsonl").stat().st_size]
        for op in ops:
            if op[0] == "label":
                project.set_label(sid, f"s{op[1]}.png", op[2])
            elif op[0] == "correct":
                mask = np.zeros((4, 4), np.uint8)
                mask.flat[: op[2]] = 255
                project.save_correction(sid, f"s{op[1]}.png", mask)
            elif not (project.undo() if op[0] == "undo" else project.redo()):
                continue
            states.append(_state(project, sid))
            lines.append((tmp / "proj" / "journal.jsonl").stat().st_size)
        # the kill: the journal is cut at any byte, the folder copied as it is, the process never closes
        killed = tmp / "killed"
        shutil.copytree(tmp / "proj", killed)
        journal = killed / "journal.jsonl"
        data = journal.read_bytes()
        keep = int(round(cut * len(data)))
        journal.write_bytes(data[:keep])
        with Project.open(killed, read_only=True) as back:
            got = _state(back, sid)
        # changes whose record survived whole; a cut that drops only the last newline leaves a complete record,
        # which is replayed (the change being written: a state the user saw, never a mix)
        whole = sum(1 for size in lines[1:] if size - 1 <= keep)
        assert got == states[whole]
        project._journal.close()
        project._folder_lock.release()


# --- DICOM: slices come out in the order of their positions, whatever the file names --------------------

@settings(SETTINGS, max_examples=15)
@given(positions=st.lists(st.integers(-400, 400), min_size=2, max_size=7, unique=True), data=st.data())
def test_dicom_slices_are_sorted_by_position_whatever_the_file_order(positions, data):
    from covidseg_core.io.dicom import read_dicom_series
    from synthetic_dicom import write_synthetic_dicom

    names = data.draw(st.permutations(range(len(positions))))
    with tempfile.TemporaryDirectory() as tmp:
        for k, z in enumerate(positions):
            px = np.full((4, 4), 1024 + (z + 400), dtype=np.uint16)      # the value tells the position
            write_synthetic_dicom(Path(tmp) / f"f{names[k]:02d}.dcm", px, series_uid="1.2.3",
                                  position=(0.0, 0.0, z * 0.5), instance=names[k] + 1)
        study = read_dicom_series(tmp)
    assert [int(v) - 400 for v in study.array[:, 0, 0]] == sorted(positions)   # HU = stored - 1024
