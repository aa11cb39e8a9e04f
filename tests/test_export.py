"""`covidseg export`: a project's predicted + corrected masks as NIfTI in the source geometry."""
import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from covidseg_core.demo import write_demo
from covidseg_core.events import drive
from covidseg_core.results.export import export_project, save_prediction
from covidseg_core.errors import ProjectError
from covidseg_core.io.loader import open_study
from covidseg_core.project.api import Project


@pytest.fixture()
def project_with_volume(tmp_path):
    write_demo(tmp_path / "demo", n_slices=10, size=48)
    ct = tmp_path / "demo" / "volume" / "ct.nii.gz"
    project = Project.create(tmp_path / "proj")
    sid = project.add_source(ct, "nifti")
    yield project, sid, open_study(ct)
    project.close()


def test_export_applies_corrections_over_the_prediction_in_source_geometry(project_with_volume, tmp_path):
    project, sid, study = project_with_volume
    pred = np.zeros(study.shape, np.uint8)
    pred[3, 10:20, 10:20] = 1
    run = project.new_run_dir()
    save_prediction(run, sid, pred, study)
    project.add_run(run, {"status": "done"})
    corr = np.zeros(study.shape[1:], np.uint8)
    corr[30:40, 5:9] = 255
    project.save_correction(sid, study.slice_ids[5], corr)

    out = tmp_path / "export" / "masks.nii.gz"
    result = drive(export_project(project, out))
    back = sitk.ReadImage(str(out))
    src = sitk.ReadImage(str(study.source))
    assert back.GetSpacing() == pytest.approx(src.GetSpacing(), abs=1e-5)
    assert back.GetOrigin() == pytest.approx(src.GetOrigin(), abs=1e-5)
    assert back.GetDirection() == pytest.approx(src.GetDirection(), abs=1e-5)
    arr = sitk.GetArrayFromImage(back)
    assert arr[3].sum() == 100 and arr[5].sum() == 40 and arr.sum() == 140
    assert result["corrected_slices"] == 1
    quant = json.loads((tmp_path / "export" / "masks.quant.json").read_text())
    assert quant["infected_ml"] == pytest.approx(140 * np.prod(study.spacing) / 1000, rel=1e-4)

    predicted_only = drive(export_project(project, tmp_path / "p.nii.gz", which="predicted"))
    assert sitk.GetArrayFromImage(sitk.ReadImage(predicted_only["mask"])).sum() == 100


def test_export_without_any_mask_says_to_train_first(project_with_volume, tmp_path):
    project, _, _ = project_with_volume
    with pytest.raises(ProjectError, match="Train"):
        drive(export_project(project, tmp_path / "m.nii.gz"))


def test_cli_export_reports_errors_in_one_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "covidseg_core.cli", "export", "--project", str(tmp_path / "none"),
                          "--out", str(tmp_path / "m.nii.gz")], capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
