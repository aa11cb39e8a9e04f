"""`covidseg project create|add|info|suggest` (a project of many studies) and `covidseg suggest`."""
from __future__ import annotations

import argparse
from pathlib import Path

from .output import print_json
from .training_commands import positive_int


def _open(folder: Path, read_only: bool = False):
    from ..project.api import Project

    return Project.open(folder, read_only=read_only)


def cmd_create(args) -> int:
    from ..project.api import Project

    with Project.create(args.project, name=args.name) as project:
        print_json({"project": str(project.folder), "name": project.name, "studies": []})
    return 0


def cmd_add(args) -> int:
    from ..project.studies import add_study, study_summary

    with _open(args.project) as project:
        added = add_study(project, args.study, labels_csv=args.labels, series_uid=args.series)
        info = study_summary(project, added.source_id, added.study)
        info.update(added=added.new, labels_imported=added.labels_imported)
        if not added.new:
            info["note"] = f"this study is already in the project as {added.source_id}: it was not added again"
    print_json(info)
    return 0


def cmd_info(args) -> int:
    from ..project.studies import study_summary

    project = _open(args.project, read_only=True)
    try:
        studies = [study_summary(project, s["id"]) for s in project.sources]
        total = {k: sum((s["labels"].get(k) or 0) for s in studies) for k in ("infected", "clean")}
        print_json({"project": str(project.folder), "name": project.name, "studies": studies,
                    "labels": total, "runs": len(project.runs), "warnings": list(project.warnings)})
    finally:
        project.close()
    return 0


def cmd_suggest(args) -> int:
    from ..infer.device import configure_cpu_threads
    from ..suggest import suggest_slices

    configure_cpu_threads()
    project = _open(args.project, read_only=True)
    try:
        picks = suggest_slices(project, args.run, n=args.n)
    finally:
        project.close()
    print_json({"project": str(project.folder), "run": str(args.run) if args.run else None, "suggestions": picks})
    return 0


def _suggest_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", type=Path, default=None,
                   help="run whose classifier scores the slices (default: the project's newest trained run)")
    p.add_argument("-n", type=positive_int, default=20, help="how many slices to suggest (default 20)")
    p.set_defaults(func=cmd_suggest)


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("project", help="a project of many studies: create, add a study, info, suggest")
    psub = p.add_subparsers(dest="project_command", required=True)

    c = psub.add_parser("create", help="a new, empty project folder")
    c.add_argument("project", type=Path)
    c.add_argument("--name", default=None, help="the project's name (default: the folder's)")
    c.set_defaults(func=cmd_create)

    a = psub.add_parser("add", help="add a study (NIfTI file, DICOM folder, image folder) with its labels")
    a.add_argument("project", type=Path)
    a.add_argument("study", type=Path)
    a.add_argument("--labels", type=Path, default=None,
                   help="labels CSV (file,label): slice index or id for a volume, file name for an image folder; "
                   "default: the study's own labels.csv. Taken in only while the study has no labels yet")
    a.add_argument("--series", default=None, help="SeriesInstanceUID when a DICOM folder holds several")
    a.set_defaults(func=cmd_add)

    i = psub.add_parser("info", help="the project's studies and their label counts as JSON")
    i.add_argument("project", type=Path)
    i.set_defaults(func=cmd_info)

    s = psub.add_parser("suggest", help="the unlabelled slices most worth labelling next, ranked, as JSON")
    s.add_argument("project", type=Path)
    _suggest_options(s)

    t = sub.add_parser("suggest", help="same as `project suggest`: the slices most worth labelling next")
    t.add_argument("--project", required=True, type=Path)
    _suggest_options(t)
