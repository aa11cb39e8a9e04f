"""`covidseg report`: the one-page PDF of a study's infection burden (issue 13, item 3)."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import SimpleITK as sitk

from covidseg_core.cli import main
from covidseg_core.errors import InputError
from covidseg_core.events import drive
from covidseg_core.io.loader import open_study
from covidseg_core.project.api import Project
from covidseg_core.results.export import assemble_mask, save_prediction
from covidseg_core.results.quantify import lung_fields, quantify
from covidseg_core.results.report import (RESEARCH_STATEMENT, render_report, report_data, report_job,
                                          split_lungs, summary_lines)
from covidseg_core.study import Study
from tests.synthetic_dicom import write_synthetic_series

SETTINGS = {"fusion": "avg", "size": 64, "seed": 3}


@pytest.fixture(scope="module")
def demo_project(tmp_path_factory):
    """The demo volume with its true infection saved as a run's prediction."""
    from covidseg_core.demo import write_demo

    root = tmp_path_factory.mktemp("report")
    write_demo(root / "demo", n_slices=12, size=64)
    ct = root / "demo" / "volume" / "ct.nii.gz"
    study = open_study(ct)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "demo" / "volume" / "infection.nii.gz")))
    project = Project.create(root / "proj")
    sid = project.add_source(ct, "nifti")
    run = project.new_run_dir()
    save_prediction(run, sid, mask, study)
    project.add_run(run, {"status": "done", "settings": SETTINGS})
    yield project, sid, study, (mask > 0).astype(np.uint8), root
    project.close()


def pdf_pages(data: bytes) -> int:
    """Page objects in a PDF (pypdf is not a dependency): '/Type /Page', not '/Type /Pages'."""
    return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", data))


def test_report_is_one_pdf_page_whose_numbers_are_the_quantification(demo_project):
    project, sid, study, mask, root = demo_project
    out = root / "out" / "report.pdf"
    result = drive(report_job(project, out))
    data = out.read_bytes()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    assert pdf_pages(data) == 1
    quant = quantify(study, mask)
    assert result["infected_ml"] == quant["infected_ml"] > 0
    assert result["infected_percent"] == quant["infected_percent"]
    assert result["lung_ml"] == quant["lung_ml"]
    assert result["run"] and result["masks"] == "corrected" and len(result["key_slices"]) == 3
    per_lung = result["per_lung"]
    if per_lung is not None:      # the two sides add up to the whole
        assert per_lung["right"]["infected_ml"] + per_lung["left"]["infected_ml"] == pytest.approx(
            quant["infected_ml"], abs=2e-3)
        assert per_lung["right"]["lung_ml"] + per_lung["left"]["lung_ml"] == pytest.approx(quant["lung_ml"], abs=2e-3)
    with pytest.raises(InputError, match="already exist"):
        drive(report_job(project, out))


def test_report_page_shows_the_numbers_slices_and_statement(demo_project, tmp_path):
    from matplotlib.image import AxesImage
    from matplotlib.text import Text
    from PIL import Image

    project, sid, study, mask, _ = demo_project
    corrected, info = assemble_mask(project, sid, study)
    data = report_data(project, sid, study, corrected, lung_fields(study), info)
    fig = render_report(data, study, corrected)
    texts = "\n".join(t.get_text() for t in fig.findobj(Text))
    for line in summary_lines(data):
        assert line in texts
    assert f"{quantify(study, mask)['infected_ml']:.1f} mL" in texts
    assert RESEARCH_STATEMENT.split(":")[0] in texts and data["run"] in texts
    assert "fusion avg" in texts and "seed 3" in texts
    assert len([a for a in fig.findobj(AxesImage)]) == 6       # three slices, each with its overlay
    png = tmp_path / "page.png"
    fig.savefig(png, dpi=40)
    page = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert page.std() > 20                                     # not blank
    red = (page[..., 0] > 180) & (page[..., 1] < 110) & (page[..., 2] < 110)
    assert red.sum() > 20                                      # the overlay and the burden plot


def test_lungs_split_by_side_and_add_up():
    study = Study(array=np.zeros((2, 20, 40), np.float32), spacing=(1.0, 1.0, 2.0))
    lungs = np.zeros(study.shape, bool)
    lungs[:, 4:16, 3:15] = True          # image left: the patient's right
    lungs[:, 4:16, 25:37] = True
    mask = np.zeros(study.shape, bool)
    mask[0, 5:10, 4:8] = True            # 20 voxels on the right
    split = split_lungs(study, lungs, mask)
    assert split["right"]["infected_ml"] == pytest.approx(20 * 2 / 1000)
    assert split["left"]["infected_ml"] == 0
    assert split["right"]["lung_ml"] == split["left"]["lung_ml"] == pytest.approx(2 * 144 * 2 / 1000)
    one = np.zeros(study.shape, bool)
    one[:, 4:16, 3:37] = True
    assert split_lungs(study, one, mask) is None


def test_report_of_a_dicom_study_names_patient_and_date(tmp_path):
    folder = tmp_path / "ct"
    write_synthetic_series(folder, 4, series_uid="1.2.826.0.1.3680043.8.498.78.1", shape=(24, 24),
                           extra={"PatientID": "P-77", "StudyDate": "20200315", "PatientName": "Doe^John"})
    study = open_study(folder)
    project = Project.create(tmp_path / "proj")
    sid = project.add_source(folder, "dicom")
    mask = np.zeros(study.shape, np.uint8)
    mask[1, 5:9, 5:9] = 1
    run = project.new_run_dir()
    save_prediction(run, sid, mask, study)
    project.add_run(run, {"status": "done", "settings": SETTINGS})
    corrected, info = assemble_mask(project, sid, study)
    data = report_data(project, sid, study, corrected, lung_fields(study), info)
    assert data["identifiers"]["patient_id"] == "P-77" and data["identifiers"]["study_date"] == "20200315"
    from matplotlib.text import Text
    texts = "\n".join(t.get_text() for t in render_report(data, study, corrected).findobj(Text))
    assert "P-77" in texts and "2020-03-15" in texts
    project.close()


def test_cli_report_and_its_bad_input(demo_project, capsys):
    project, _, _, _, root = demo_project
    folder = str(project.folder)
    out = root / "cli" / "r.pdf"
    assert main(["-q", "report", "--project", folder, "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["report"] == str(out) and pdf_pages(out.read_bytes()) == 1
    assert main(["-q", "report", "--project", folder, "--out", str(root / "r.png")]) == 2
    assert "not a PDF file name" in capsys.readouterr().err
    assert main(["-q", "report", "--project", folder, "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
