"""No command writes into a study's source files or a job's input folders (symlinks included), and an existing
output is replaced only with --overwrite (issue 15, items 1 and 2)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from covidseg_core import cli
from covidseg_core.demo import write_demo
from covidseg_core.errors import InputError
from covidseg_core.events import drive
from covidseg_core.infer.predict import predict_job
from covidseg_core.io.loader import open_study
from covidseg_core.project.api import Project
from covidseg_core.results.export import export_project, save_prediction
from untrained_run import make_untrained_run


def digest(path: Path) -> dict[str, str]:
    """Every file under `path` (or the file itself) with a hash of its bytes."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def run_cli(capsys, *argv) -> tuple[int, str]:
    rc = cli.main(["-q", *map(str, argv)])
    return rc, capsys.readouterr().err


def assert_refused(rc: int, err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("covidseg: error:"), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("safety") / "study"
    write_demo(out, n_slices=6, size=32)
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return make_untrained_run(tmp_path_factory.mktemp("safety-run") / "run")


@pytest.fixture()
def exportable(demo, tmp_path):
    """A project on a copy of the demo volume with a predicted mask, ready to export."""
    import shutil

    ct = tmp_path / "scan" / "ct.nii.gz"
    ct.parent.mkdir()
    shutil.copy(demo / "volume" / "ct.nii.gz", ct)
    project = Project.create(tmp_path / "proj")
    sid = project.add_source(ct, "nifti")
    study = open_study(ct)
    run_dir = project.new_run_dir()
    save_prediction(run_dir, sid, np.ones(study.shape, np.uint8), study)
    project.add_run(run_dir, {"status": "done"})
    project.close()
    return tmp_path / "proj", ct


# --- export ------------------------------------------------------------------------------------------------

def test_export_refuses_the_studys_own_source_file(exportable, capsys):
    proj, ct = exportable
    before = digest(ct)
    rc, err = run_cli(capsys, "export", "--project", proj, "--out", ct)
    assert_refused(rc, err, "Refusing to write", "the study s1")
    rc, err = run_cli(capsys, "export", "--project", proj, "--out", ct, "--overwrite")
    assert_refused(rc, err, "Refusing to write")
    assert digest(ct) == before


def test_export_refuses_a_symlink_to_the_source_and_a_folder_linked_to_its_folder(exportable, tmp_path, capsys):
    proj, ct = exportable
    before = digest(ct.parent)
    (tmp_path / "link.nii.gz").symlink_to(ct)
    rc, err = run_cli(capsys, "export", "--project", proj, "--out", tmp_path / "link.nii.gz", "--overwrite")
    assert_refused(rc, err, "Refusing to write")
    (tmp_path / "linked-folder").symlink_to(ct.parent, target_is_directory=True)
    rc, err = run_cli(capsys, "export", "--project", proj, "--out", tmp_path / "linked-folder" / "ct.nii.gz")
    assert_refused(rc, err, "Refusing to write")
    assert digest(ct.parent) == before


def test_export_replaces_an_existing_file_only_with_overwrite(exportable, tmp_path, capsys):
    proj, _ = exportable
    out = tmp_path / "exports" / "masks.nii.gz"
    assert run_cli(capsys, "export", "--project", proj, "--out", out)[0] == 0
    out.write_bytes(b"mine")
    rc, err = run_cli(capsys, "export", "--project", proj, "--out", out)
    assert_refused(rc, err, "already exist", "masks.nii.gz", "--overwrite")
    assert out.read_bytes() == b"mine"
    assert run_cli(capsys, "export", "--project", proj, "--out", out, "--overwrite")[0] == 0
    assert out.read_bytes() != b"mine"


def test_export_job_refuses_an_existing_quantification_file(exportable, tmp_path):
    proj, _ = exportable
    (tmp_path / "m.quant.csv").write_text("my notes")
    with Project.open(proj, read_only=True) as project, pytest.raises(InputError, match="m.quant.csv"):
        drive(export_project(project, tmp_path / "m.nii.gz"))
    assert (tmp_path / "m.quant.csv").read_text() == "my notes"


# --- predict -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["images", "masks", "."])
def test_predict_refuses_to_write_into_the_input_or_its_ground_truth(demo, run, capsys, where):
    before = digest(demo)
    rc, err = run_cli(capsys, "predict", "--run", run, "--input", demo / "images", "--out", demo / where,
                      "--overwrite")
    if where == ".":     # beside images/ and masks/: allowed, and nothing of the data set changes
        assert rc == 0, err
        for written in set(digest(demo)) - set(before):
            Path(written).unlink()
    else:
        assert_refused(rc, err, "Refusing to write")
    assert digest(demo) == before


def test_predict_refuses_an_out_folder_linked_into_the_input(demo, run, tmp_path, capsys):
    before = digest(demo)
    (tmp_path / "out").symlink_to(demo / "images", target_is_directory=True)
    rc, err = run_cli(capsys, "predict", "--run", run, "--input", demo / "images", "--out", tmp_path / "out",
                      "--overwrite")
    assert_refused(rc, err, "Refusing to write", "the input")
    rc, err = run_cli(capsys, "predict", "--run", run, "--input", demo, "--out", demo / "images")
    assert_refused(rc, err, "Refusing to write")
    assert digest(demo) == before


def test_predict_refuses_a_mask_file_that_links_to_the_volume(demo, run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "ct_mask.nii.gz").symlink_to(demo / "volume" / "ct.nii.gz")
    with pytest.raises(InputError, match="Refusing to write"):
        drive(predict_job(run, demo / "volume" / "ct.nii.gz", out, overwrite=True))


def test_predict_replaces_existing_masks_only_with_overwrite(demo, run, tmp_path, capsys):
    out = tmp_path / "pred"
    assert run_cli(capsys, "predict", "--run", run, "--input", demo / "volume" / "ct.nii.gz", "--out", out)[0] == 0
    mask = out / "ct_mask.nii.gz"
    stamp = os.stat(mask).st_mtime_ns
    rc, err = run_cli(capsys, "predict", "--run", run, "--input", demo / "volume" / "ct.nii.gz", "--out", out)
    assert_refused(rc, err, "already exist", "ct_mask.nii.gz")
    assert os.stat(mask).st_mtime_ns == stamp
    rc, err = run_cli(capsys, "predict", "--run", run, "--input", demo / "volume" / "ct.nii.gz", "--out", out,
                      "--overwrite")
    assert rc == 0, err
