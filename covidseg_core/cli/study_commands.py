"""`covidseg demo`, `info`, `export`, `report` and `gui`: studies and projects in, files and JSON out."""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

from ..constants import LUNG_METHODS
from ..errors import CovidSegError
from .output import print_json, run_job


def cmd_demo(args) -> int:
    from ..demo import write_demo

    print_json(write_demo(args.out, seed=args.seed, n_slices=args.slices, size=args.size))
    return 0


def cmd_synth(args) -> int:
    from ..synth.folder import synth_job

    print_json(run_job(synth_job(args.data, args.out, n=args.n, seed=args.seed, labels_csv=args.labels,
                                 lung_method=args.lung_method), args.quiet))
    return 0


def cmd_info(args) -> int:
    from ..io.dicom_seg import is_seg_file

    if is_seg_file(args.path):
        from ..project.api import Project
        from ..results.seg_import import describe_seg

        project = Project.open(args.project, read_only=True) if args.project else None
        try:
            print_json(describe_seg(args.path, project))
        finally:
            if project is not None:
                project.close()
        return 0
    from ..io.loader import describe

    print_json(describe(args.path, series_uid=args.series))
    return 0


def cmd_export(args) -> int:
    from ..project.api import Project
    from ..results.export import export_project, export_studies

    project = Project.open(args.project, read_only=True)
    try:
        if args.out.name.lower().endswith((".nii", ".nii.gz", ".dcm")):       # a file: one study
            job = export_project(project, args.out, source_id=args.source, which=args.masks,
                                 overwrite=args.overwrite, fmt=args.format)
        else:       # a folder: one mask (or SEG) per study, or the one chosen
            job = export_studies(project, args.out, which=args.masks, overwrite=args.overwrite, fmt=args.format,
                                 source_ids=[args.source] if args.source else None)
        result = run_job(job, args.quiet)
    finally:
        project.close()
    print_json(result)
    return 0


def cmd_report(args) -> int:
    from ..project.api import Project
    from ..results.report import report_job

    project = Project.open(args.project, read_only=True)
    try:
        result = run_job(report_job(project, args.out, source_id=args.source, which=args.masks,
                                    overwrite=args.overwrite), args.quiet)
    finally:
        project.close()
    print_json(result)
    return 0


def _importable(module: str) -> bool:
    """Whether `module` can be found; a dotted name imports its package, so a half-removed PySide6 (a leftover
    folder, a missing shiboken6) counts as missing instead of failing in the app with a traceback."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def cmd_gui(args) -> int:
    """A thin launcher: the desktop app is its own program (`python -m app`, the `covidseg-gui` script); the
    core never imports it."""
    path = [str(args.path)] if args.path else []
    if getattr(sys, "frozen", False):          # the desktop bundle: its executable starts the app by default
        return subprocess.call([sys.executable, *path])
    missing = list(dict.fromkeys(m.split(".")[0] for m in ("app", "PySide6", "PySide6.QtWidgets", "pyqtgraph")
                                 if not _importable(m)))
    if missing:
        raise CovidSegError(f"The desktop app cannot start: {', '.join(missing)} is not installed.",
                            "Install the GUI extras: pip install 'covidseg-assist[gui]'.")
    return subprocess.call([sys.executable, "-m", "app", *path])


def add_commands(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("demo", help="write a small synthetic study (labels included)")
    d.add_argument("--out", required=True, type=Path)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--slices", type=int, default=32)
    d.add_argument("--size", type=int, default=128)
    d.set_defaults(func=cmd_demo)

    y = sub.add_parser("synth", help="synthetic lesions on the clean slices of a data set, with exact masks (what "
                       "`train --synthetic` trains on), written as images + masks or as NIfTI")
    y.add_argument("--data", required=True, type=Path, help="image folder (images/ + labels.csv), DICOM folder or "
                   "NIfTI file with a labels CSV")
    y.add_argument("--labels", type=Path, default=None, help="labels CSV when it does not lie with the data")
    y.add_argument("--out", required=True, type=Path, help="a new (or empty) folder outside the data set")
    y.add_argument("-n", type=int, default=32, help="how many synthetic images (1-10000, default 32)")
    y.add_argument("--seed", type=int, default=0, help="0 or more; the same seed gives the same lesions")
    y.add_argument("--lung-field", dest="lung_method", choices=LUNG_METHODS, default="model")
    y.set_defaults(func=cmd_synth)

    i = sub.add_parser("info", help="describe a study (DICOM folder, NIfTI file, image folder) as JSON")
    i.add_argument("path", type=Path)
    i.add_argument("--series", default=None, help="SeriesInstanceUID to read when a folder holds several")
    i.add_argument("--project", default=None, type=Path,
                   help="for a DICOM SEG file: the project whose study it references (its mask is then measured)")
    i.set_defaults(func=cmd_info)

    e = sub.add_parser("export", help="a project's masks as NIfTI in the source geometry, or as a DICOM SEG over "
                       "the source series (+ volumes as CSV/JSON)")
    e.add_argument("--project", required=True, type=Path)
    e.add_argument("--out", required=True, type=Path,
                   help="FILE.nii.gz (nifti) or FILE.dcm (dicom-seg) for one study, or a folder: one "
                   "<study>_infection.nii.gz (or .dcm) per study")
    e.add_argument("--format", choices=("nifti", "dicom-seg"), default="nifti",
                   help="nifti (default): a 0/1 mask volume; dicom-seg: a binary DICOM Segmentation referencing "
                   "each source image (needs a study opened from DICOM; into a folder, the other studies are "
                   "skipped with a note)")
    e.add_argument("--source", default=None, help="source id, when the project holds several studies")
    e.add_argument("--masks", choices=("corrected", "predicted"), default="corrected",
                   help="corrected: predictions with the user's corrections applied (default)")
    e.add_argument("--overwrite", action="store_true", help="replace the export files if they exist")
    e.set_defaults(func=cmd_export)

    r = sub.add_parser("report", help="a one-page PDF: infected volume and %% of lung, burden along the slices, "
                       "key slices with the mask, the run and settings")
    r.add_argument("--project", required=True, type=Path)
    r.add_argument("--out", required=True, type=Path, help="FILE.pdf")
    r.add_argument("--source", default=None, help="source id, when the project holds several studies")
    r.add_argument("--masks", choices=("corrected", "predicted"), default="corrected",
                   help="corrected: predictions with the user's corrections applied (default)")
    r.add_argument("--overwrite", action="store_true", help="replace the report if it exists")
    r.set_defaults(func=cmd_report)

    g = sub.add_parser("gui", help="open the desktop app")
    g.add_argument("path", nargs="?", type=Path, help="a project folder or a study to open")
    g.set_defaults(func=cmd_gui)
