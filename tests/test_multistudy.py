"""Many studies in one project (issue 12): `covidseg project create|add|info|suggest`, `train --project`,
`export --project --out DIR`, the combined training set, suggestions, and a project written before multi-study
opening unchanged.

One tiny training run on two small demo studies (different seeds and image sizes) is shared by the module."""
from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest
import SimpleITK as sitk

from covidseg_core import cli
from covidseg_core.demo import write_demo
from covidseg_core.project.api import Project
from covidseg_core.project.studies import add_study, project_slices, study_summary, training_slice_id
from covidseg_core.seg.targets import split_validation
from covidseg_core.suggest import rank_slices, suggest_slices

LEGACY = Path(__file__).parent / "data" / "legacy_project_v1"
TINY = ["--fast", "--cls-epochs", "1", "--seg-epochs", "1", "--size", "64", "--init", "none"]


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    """Small tensors: one torch thread (conftest.one_torch_thread)."""


def run_cli(capsys, *argv) -> tuple[int, dict | None, str]:
    rc = cli.main(["-q", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, (json.loads(out) if rc == 0 and out.strip() else None), err


def _partial_labels(volume_dir: Path, keep: int, out: Path) -> Path:
    """The first `keep` rows of a demo volume's labels.csv (the other slices stay unlabelled)."""
    with open(volume_dir / "labels.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    with open(out, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows[: keep + 1])
    return out


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("studies")
    write_demo(base / "a", seed=1, n_slices=12, size=48)
    write_demo(base / "b", seed=2, n_slices=12, size=64)
    return {"a": base / "a" / "volume" / "ct.nii.gz", "b": base / "b" / "volume" / "ct.nii.gz",
            "a_labels": _partial_labels(base / "a" / "volume", 8, base / "a_labels.csv"),
            "b_labels": _partial_labels(base / "b" / "volume", 6, base / "b_labels.csv")}


@pytest.fixture(scope="module")
def trained(studies, tmp_path_factory):
    """A project of the two studies (8 and 6 slices labelled), trained once with tiny settings."""

    base = tmp_path_factory.mktemp("trained")
    project, run = base / "project", base / "run"
    assert cli.main(["-q", "project", "create", str(project)]) == 0
    for name in ("a", "b"):
        assert cli.main(["-q", "project", "add", str(project), str(studies[name]),
                         "--labels", str(studies[f"{name}_labels"])]) == 0
    assert cli.main(["-q", "train", "--project", str(project), "--out", str(run), *TINY]) == 0
    return project, run


# --- the project commands ------------------------------------------------------------------------------------

def test_project_create_add_info_and_a_duplicate_is_not_added(studies, tmp_path, capsys):
    p = tmp_path / "p"
    rc, out, _ = run_cli(capsys, "project", "create", p)
    assert rc == 0 and out["studies"] == []
    rc, out, _ = run_cli(capsys, "project", "add", p, studies["a"], "--labels", studies["a_labels"])
    assert rc == 0 and out["added"] is True and out["id"] == "s1"
    assert out["labels"] == {"infected": 5, "clean": 3, "unlabelled": 4}
    rc, out, _ = run_cli(capsys, "project", "add", p, studies["b"])       # its own labels.csv: all 12
    assert rc == 0 and out["id"] == "s2" and out["labels"]["unlabelled"] == 0
    rc, out, _ = run_cli(capsys, "project", "add", p, studies["a"])
    assert rc == 0 and out["added"] is False and out["id"] == "s1" and "already in the project" in out["note"]
    rc, info, _ = run_cli(capsys, "project", "info", p)
    assert rc == 0
    assert [s["id"] for s in info["studies"]] == ["s1", "s2"]
    assert [s["slices"] for s in info["studies"]] == [12, 12]
    assert info["studies"][0]["labels"] == {"infected": 5, "clean": 3, "unlabelled": 4}
    assert info["studies"][1]["labels"] == {"infected": 1, "clean": 11, "unlabelled": 0}
    assert info["labels"] == {"infected": 6, "clean": 14}
    assert all(s["present"] and s["training"] is None for s in info["studies"])


def test_a_moved_study_is_missing_keeps_its_labels_and_is_left_out_of_training(studies, tmp_path, capsys):
    shutil.copytree(studies["a"].parent, tmp_path / "moved")
    p = tmp_path / "p"
    with Project.create(p) as project:
        sid = add_study(project, tmp_path / "moved" / "ct.nii.gz").source_id
        add_study(project, studies["b"])
    shutil.rmtree(tmp_path / "moved")
    rc, info, _ = run_cli(capsys, "project", "info", p)
    assert rc == 0
    missing = info["studies"][0]
    assert missing["id"] == sid and missing["present"] is False and missing["labels"]["infected"] == 5
    with Project.open(p, read_only=True) as project:
        combined = project_slices(project)
    assert [part.source_id for part in combined.parts] == ["s2"]
    assert combined.skipped and "missing" in combined.skipped[0]


def test_training_without_labels_says_what_to_label(studies, tmp_path, capsys):
    p = tmp_path / "p"
    with Project.create(p) as project:
        sid = add_study(project, studies["a"]).source_id
        project.set_labels(sid, {s: None for s in project.labels(sid)})
    rc, _, err = run_cli(capsys, "train", "--project", p, "--out", tmp_path / "run", *TINY)
    assert rc == 2
    assert "No study has enough labelled slices" in err and "ct (s1): 0 infected, 0 clean" in err
    assert not (tmp_path / "run").exists()


# --- the combined training set -------------------------------------------------------------------------------

def test_studies_of_different_sizes_train_together_split_by_study(studies, tmp_path):
    with Project.create(tmp_path / "p") as project:
        a = add_study(project, studies["a"], labels_csv=studies["a_labels"]).source_id
        b = add_study(project, studies["b"], labels_csv=studies["b_labels"]).source_id
        combined = project_slices(project)
        assert combined.slices.images.shape == (24, 64, 64)      # 48-pixel study resampled to the common 64
        assert combined.slices.ids[0] == training_slice_id(a, "0") and combined.slices.ids[12] == f"{b}__0"
        assert combined.slices.counts() == {"infected": 6, "clean": 8, "unlabelled": 10}
        labelled = np.flatnonzero([lab is not None for lab in combined.slices.labels])
        train, val = split_validation(combined.slices.groups, labelled, 0.2, 0)
        val_groups = {combined.slices.groups[i] for i in val}
        assert len(val) and len(val_groups) == 1                 # whole studies validate
        assert not val_groups & {combined.slices.groups[i] for i in train}
        # one study: blocks of neighbouring slices, as before
        one = project_slices(project, source_ids=[a])
        lab1 = np.flatnonzero([lab is not None for lab in one.slices.labels])
        train1, val1 = split_validation(one.slices.groups, lab1, 0.2, 0)
        assert len(val1) and len(train1)


def test_train_project_trains_on_every_study_and_predicts_each(trained, studies, capsys):
    project, run = trained
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["complete"]
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["n_slices"] == 24 and config["data"]["labels"]["unlabelled"] == 10
    for sid, src in (("s1", studies["a"]), ("s2", studies["b"])):
        pred = sitk.ReadImage(str(run / "predictions" / f"{sid}.nii.gz"))
        ref = sitk.ReadImage(str(src))
        assert pred.GetSize() == ref.GetSize() and np.allclose(pred.GetSpacing(), ref.GetSpacing())
    assert sorted(p.name for p in (run / "pseudo").iterdir())[0].startswith("s1__")
    rc, info, _ = run_cli(capsys, "project", "info", project)
    assert rc == 0 and [s["training"]["status"] for s in info["studies"]] == ["done", "done"]
    with Project.open(project, read_only=True) as p:
        summary = p.runs[-1]["summary"]
    assert summary["sources"] == ["s1", "s2"] and set(summary["infected_ml"]) == {"s1", "s2"}


def test_corrections_of_every_study_become_pixel_labels(trained, tmp_path):
    from covidseg_core.project.studies import write_pixel_labels

    project, _ = trained
    with Project.open(project, read_only=True) as p:
        combined = project_slices(p)
    mask = np.zeros((48, 48), np.uint8)
    mask[10:20, 10:20] = 1
    copy = tmp_path / "copy"
    shutil.copytree(project, copy)
    with Project.open(copy) as p:
        p.save_correction("s1", "3", mask)
        p.save_correction("s2", "1", np.zeros((64, 64), np.uint8))
        n = write_pixel_labels(p, combined, tmp_path / "px")
    assert n == 2 and sorted(f.name for f in (tmp_path / "px").iterdir()) == ["s1__3.png", "s2__1.png"]
    from PIL import Image
    assert np.asarray(Image.open(tmp_path / "px" / "s1__3.png")).shape == (64, 64)


def test_export_writes_one_mask_per_study_in_its_geometry(trained, studies, tmp_path, capsys):
    project, _ = trained
    out = tmp_path / "exports"
    rc, result, err = run_cli(capsys, "export", "--project", project, "--out", out)
    assert rc == 0, err
    names = sorted(p.name for p in out.glob("*.nii.gz"))
    assert names == ["ct_s1_infection.nii.gz", "ct_s2_infection.nii.gz"]
    for sid, src in (("s1", studies["a"]), ("s2", studies["b"])):
        mask, ref = sitk.ReadImage(str(out / f"ct_{sid}_infection.nii.gz")), sitk.ReadImage(str(src))
        assert mask.GetSize() == ref.GetSize()
        assert np.allclose(mask.GetOrigin(), ref.GetOrigin()) and np.allclose(mask.GetSpacing(), ref.GetSpacing())
        assert (out / f"ct_{sid}_infection.quant.json").is_file()
    rc, _, err = run_cli(capsys, "export", "--project", project, "--out", out)
    assert rc == 2 and "already exist" in err                      # never over earlier files without --overwrite
    # the single-study form keeps working
    rc, one, err = run_cli(capsys, "export", "--project", project, "--out", tmp_path / "one.nii.gz", "--source", "s2")
    assert rc == 0 and one["source"] == "s2", err
    rc, _, err = run_cli(capsys, "export", "--project", project, "--out", tmp_path / "two.nii.gz")
    assert rc == 2 and "--source" in err


# --- suggestions ---------------------------------------------------------------------------------------------

def test_ranking_prefers_uncertain_spread_slices_of_little_labelled_studies():
    probs = np.array([0.02, 0.5, 0.49, 0.9, 0.97, 0.55, 0.3, 0.01, 0.6, 0.95, 0.02, 0.45])
    other = np.full(24, 0.99)
    other[20] = 0.5
    cands = {"s1": {"probabilities": probs, "labelled": {5, 9}, "n_labelled": 2},
             "s2": {"probabilities": other, "labelled": set(range(12)), "n_labelled": 12}}
    picks = rank_slices(cands, 6)
    assert (picks[0]["source_id"], picks[0]["index"]) == ("s1", 1)       # the most uncertain
    assert ("s1", 2) not in [(p["source_id"], p["index"]) for p in picks[:3]]   # not its neighbour next
    assert ("s2", 20) in [(p["source_id"], p["index"]) for p in picks]   # the other study gets its turn
    assert all(p["index"] not in cands[p["source_id"]]["labelled"] for p in picks)
    assert len({(p["source_id"], p["index"]) for p in picks}) == len(picks)
    # next to a labelled slice, the most uncertain slice waits for the others
    near = rank_slices({"s1": {"probabilities": probs, "labelled": {0, 3}, "n_labelled": 2}}, 1)
    assert near[0]["index"] == 11
    assert len(rank_slices(cands, 100)) == 10 + 12                       # every unlabelled slice, then stop
    # `explore`: how much a sure slice is worth beside an uncertain one; large, the spread decides
    probs = np.full(32, 0.99)
    probs[1] = 0.5                                                       # uncertain, but next to labelled 0
    one = {"s1": {"probabilities": probs, "labelled": {0}, "n_labelled": 1}}
    assert rank_slices(one, 1)[0]["index"] == 1
    assert rank_slices(one, 1, explore=1.0)[0]["index"] != 1


def test_project_suggest_ranks_unlabelled_slices_of_every_study(trained, capsys):
    project, run = trained
    rc, out, err = run_cli(capsys, "project", "suggest", project, "--run", run, "-n", "6")
    assert rc == 0, err
    picks = out["suggestions"]
    assert [p["rank"] for p in picks] == list(range(1, 7))
    with Project.open(project, read_only=True) as p:
        for pick in picks:
            assert p.label(pick["source_id"], pick["slice_id"]) is None
            assert 0.0 <= pick["probability"] <= 1.0 and 0.0 <= pick["slice_probability"] <= 1.0
    assert {p["source_id"] for p in picks[:4]} == {"s1", "s2"}
    # ranked by the classifier's own doubt; the radiologist is told the run's probability (with the prior's evidence)
    assert any(abs(p["slice_probability"] - p["probability"]) > 1e-4 for p in picks)
    rc, again, _ = run_cli(capsys, "suggest", "--project", project, "-n", "6")   # the newest run by default
    assert rc == 0 and again["suggestions"] == picks


def test_suggest_without_a_run_says_train_first(studies, tmp_path):
    from covidseg_core.errors import RunError

    with Project.create(tmp_path / "p") as project:
        add_study(project, studies["a"])
        with pytest.raises(RunError, match="Train first|no trained run"):
            suggest_slices(project)


# --- projects written before multi-study -----------------------------------------------------------------------

@pytest.fixture
def legacy(tmp_path) -> Path:
    """tests/data/legacy_project_v1: made by the code before this change (one NIfTI study with labels, a removed
    study, a correction and a label still in the journal, a run, settings), with its study regenerated."""
    write_demo(tmp_path / "study", seed=3, n_slices=8, size=48)
    shutil.copytree(LEGACY, tmp_path / "project")
    return tmp_path / "project"


def test_a_project_written_before_multistudy_opens_unchanged(legacy, capsys):
    before = {p.name: p.read_bytes() for p in legacy.iterdir() if p.is_file()}
    with Project.open(legacy, read_only=True) as project:
        assert project.warnings == []
        assert [s["id"] for s in project.sources] == ["s1"]
        assert project.labels("s1") == {"0": "clean", "1": "clean", "3": "infected", "4": "infected", "6": "clean"}
        assert project.correction("s1", "4").sum() == 255 * 10 * 18
        assert project.settings == {"fusion": "avg", "cls_epochs": 1, "seg_epochs": 2}
        summary = study_summary(project, "s1")
    assert {p.name: p.read_bytes() for p in legacy.iterdir() if p.is_file()} == before   # read-only: untouched
    assert summary["present"] and summary["slices"] == 8
    assert summary["labels"] == {"infected": 2, "clean": 3, "unlabelled": 3} and summary["corrections"] == 1
    assert summary["training"]["status"] == "done"
    rc, info, _ = run_cli(capsys, "project", "info", legacy)
    assert rc == 0 and info["studies"][0]["labels"]["unlabelled"] == 3
    with Project.open(legacy) as project:           # writable: the journal is folded in, nothing lost
        sid = add_study(project, legacy.parent / "study").source_id
        assert sid == "s3"                          # ids of removed studies are never reused
        assert project.labels("s1")["6"] == "clean"
    with Project.open(legacy, read_only=True) as project:
        assert [s["id"] for s in project.sources] == ["s1", "s3"]
        assert len(project.labels("s1")) == 5 and project.corrections("s1")
