"""Render docs/report-example.png: the one-page report (`covidseg report`) of the demo study, with its true
infection standing in for a prediction. Run from the repository root: python scripts/report_example.py"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from covidseg_core.demo import write_demo  # noqa: E402
from covidseg_core.io.loader import open_study  # noqa: E402
from covidseg_core.project.api import Project  # noqa: E402
from covidseg_core.results.export import assemble_mask, save_prediction  # noqa: E402
from covidseg_core.results.quantify import lung_fields  # noqa: E402
from covidseg_core.results.report import render_report, report_data  # noqa: E402


def main(out: Path = ROOT / "docs" / "report-example.png") -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_demo(tmp / "demo", n_slices=24, size=128)
        ct = tmp / "demo" / "volume" / "ct.nii.gz"
        study = open_study(ct)
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp / "demo" / "volume" / "infection.nii.gz")))
        with Project.create(tmp / "proj") as project:
            sid = project.add_source(ct, "nifti")
            run = project.new_run_dir()
            save_prediction(run, sid, truth, study)
            project.add_run(run, {"status": "done", "settings": {"fusion": "avg", "size": 128, "seed": 0}})
            mask, info = assemble_mask(project, sid, study)
            data = report_data(project, sid, study, mask, lung_fields(study), info)
        render_report(data, study, mask).savefig(out, dpi=80)
    return out


if __name__ == "__main__":
    print(main())
