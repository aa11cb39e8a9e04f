"""A study whose files moved (issue 12): shown missing with its labels kept, and pointed at its new place
(covidseg_core.project.studies.relocate_study, Project.relocate_source) with its labels and corrections keyed as
before, saved like every change (journal, then snapshot); a place that holds another study is refused."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from covidseg_core.demo import write_demo
from covidseg_core.errors import InputError
from covidseg_core.project.api import Project
from covidseg_core.project.studies import add_study, relocate_study, study_summary


@pytest.fixture
def moved(tmp_path):
    """A project of one demo study (its labels.csv taken in, one correction drawn) and of a second one; then the
    first study's folder is moved away."""
    write_demo(tmp_path / "orig", seed=1, n_slices=6, size=32)
    write_demo(tmp_path / "other", seed=2, n_slices=4, size=32)
    project = Project.create(tmp_path / "project")
    added = add_study(project, tmp_path / "orig" / "volume" / "ct.nii.gz")
    add_study(project, tmp_path / "other" / "volume" / "ct.nii.gz")
    mask = np.zeros((32, 32), np.uint8)
    mask[5:9, 5:12] = 1
    project.save_correction(added.source_id, "2", mask)
    labels = project.labels(added.source_id)
    project.close()
    shutil.move(tmp_path / "orig", tmp_path / "moved")
    return {"project": tmp_path / "project", "sid": added.source_id, "labels": labels, "mask": mask,
            "new": tmp_path / "moved" / "volume" / "ct.nii.gz", "other": tmp_path / "other"}


def test_a_moved_study_is_relocated_with_its_labels_and_corrections(moved, tmp_path):
    sid = moved["sid"]
    with Project.open(moved["project"]) as project:
        info = study_summary(project, sid)
        assert info["present"] is False and info["labels"]["infected"] + info["labels"]["clean"] == 6
        assert project.labels(sid) == moved["labels"] and len(moved["labels"]) == 6
        study = relocate_study(project, sid, moved["new"])
        assert study.n_slices == 6
        assert project.source_path(sid) == moved["new"] and study_summary(project, sid, study)["present"]
        assert project.labels(sid) == moved["labels"]
        assert np.array_equal(project.correction(sid, "2") > 0, moved["mask"] > 0)
        assert not project.can_undo          # not a label change: nothing for Ctrl+Z to take back
        shutil.copytree(project.folder, tmp_path / "killed")      # as a kill leaves it: the move in the journal
    for folder in (tmp_path / "killed", moved["project"]):        # replayed from the journal; from the snapshot
        with Project.open(folder, read_only=True) as again:
            assert again.source_path(sid) == moved["new"]
            assert again.labels(sid) == moved["labels"] and "2" in again.corrections(sid)


def test_a_place_that_holds_another_study_is_refused(moved):
    sid = moved["sid"]
    with Project.open(moved["project"]) as project:
        before = project.source(sid)
        with pytest.raises(InputError, match="is already in the project"):       # the project's other study
            relocate_study(project, sid, moved["other"] / "volume" / "ct.nii.gz")
        shutil.copy(moved["other"] / "volume" / "ct.nii.gz", moved["other"] / "copy.nii.gz")
        with pytest.raises(InputError, match="2 of the 6 slices labelled or corrected") as err:
            relocate_study(project, sid, moved["other"] / "copy.nii.gz")   # 4 slices: slices 4 and 5 are not there
        assert "not the study" in err.value.message and err.value.hint
        with pytest.raises(InputError, match="folder of slice images"):
            relocate_study(project, sid, moved["new"].parent.parent)        # the demo's image folder
        with pytest.raises(InputError, match="does not exist"):
            relocate_study(project, sid, moved["new"].parent / "nothing.nii.gz")
        assert project.source(sid) == before and not project.source_path(sid).exists()
