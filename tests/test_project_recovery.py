"""A project.json damaged outside the program is rebuilt from the kept snapshot and the journal (issue 15)."""
from __future__ import annotations

import json

import pytest

from covidseg_core.errors import ProjectError
from covidseg_core.project import store
from covidseg_core.project.api import Project

SLICES = [f"s{n:03d}.png" for n in range(40)]


def label_of(n: int) -> str:
    return "infected" if n % 3 == 0 else "clean"


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "study").mkdir()
    return tmp_path / "proj"


def truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def labelled_over_sessions(folder, study, sessions: int) -> dict[str, str]:
    """Labels set over several open/close sessions (each close compacts); what the project must hold."""
    expected = {}
    with Project.create(folder) as project:
        sid = project.add_source(study, "images")
    per = len(SLICES) // sessions
    for k in range(sessions):
        with Project.open(folder) as project:
            for n in range(k * per, (k + 1) * per):
                project.set_label(sid, SLICES[n], label_of(n))
                expected[SLICES[n]] = label_of(n)
    return expected


@pytest.mark.parametrize("sessions", [1, 3])
def test_a_truncated_project_json_is_rebuilt_with_every_label(folder, tmp_path, sessions):
    expected = labelled_over_sessions(folder, tmp_path / "study", sessions)
    truncate(folder / "project.json")
    damaged_bytes = (folder / "project.json").read_bytes()
    with Project.open(folder) as project:
        assert project.labels("s1") == expected
        assert any("rebuilt" in w for w in project.warnings)
    assert (folder / store.DAMAGED_FILE).read_bytes() == damaged_bytes
    with Project.open(folder) as project:       # the repaired file opens without recovery
        assert project.labels("s1") == expected and not project.warnings
    truncate(folder / "project.json", keep=0.0)  # and a second damage is recovered as well
    with Project.open(folder) as project:
        assert project.labels("s1") == expected


def test_labels_still_in_the_journal_are_recovered(folder, tmp_path):
    expected = labelled_over_sessions(folder, tmp_path / "study", 2)
    project = Project.open(folder)
    project.set_label("s1", SLICES[0], "clean")           # in the journal only: the program is killed here
    expected[SLICES[0]] = "clean"
    project._journal.close()
    project._folder_lock.release()
    truncate(folder / "project.json", keep=0.3)
    with Project.open(folder, read_only=True) as read_only:   # read-only: recovered in memory, nothing written
        assert read_only.labels("s1") == expected
    assert not (folder / store.DAMAGED_FILE).exists()
    with Project.open(folder) as project:
        assert project.labels("s1") == expected
    assert json.loads((folder / "project.json").read_text())["labels"]["s1"] == expected


def test_a_wrongly_structured_project_json_is_recovered_too(folder, tmp_path):
    expected = labelled_over_sessions(folder, tmp_path / "study", 1)
    doc = json.loads((folder / "project.json").read_text())
    doc["labels"] = ["not", "a", "dict"]
    (folder / "project.json").write_text(json.dumps(doc))
    with Project.open(folder) as project:
        assert project.labels("s1") == expected


def test_without_a_kept_snapshot_the_damage_is_still_a_clear_error(folder, tmp_path):
    labelled_over_sessions(folder, tmp_path / "study", 1)
    (folder / store.PREV_FILE).write_bytes(b"{")
    truncate(folder / "project.json")
    with pytest.raises(ProjectError, match="damaged"):
        Project.open(folder)
