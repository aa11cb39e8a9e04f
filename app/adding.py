"""Adding studies to the open project (Add study, drag and drop): the job that reads and adds them one after the
other on the job thread, and what the user is told afterwards. Built from core calls only; nothing here touches a
widget (the controller shows the texts)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from covidseg_core.errors import InputError
from covidseg_core.events import CancelToken, Done, Progress
from covidseg_core.study import Study


@dataclass
class StudyAdded:
    source_id: str
    study: Study
    new: bool                                  # False: it was in the project already
    labels_imported: int = 0
    path: str = ""                             # what the user gave


@dataclass
class StudiesAdded:
    added: list[StudyAdded]                    # in the order given (duplicates included, new=False)
    failed: list[tuple[str, Exception]]        # a path that is no study, and why (CovidSegError)


def add_studies_job(project, paths: list[Path], series_uid: str | None = None):
    """Read studies and add them to the open project, one after the other (covidseg_core.project.studies.
    add_study: the same study is not added twice; its labels.csv becomes project labels while it has none). A
    path that is not a study does not stop the others: it is handed back with its error.
    Done(StudiesAdded)."""
    from covidseg_core.errors import CovidSegError
    from covidseg_core.project.studies import add_study

    def job(cancel: CancelToken) -> Iterator:
        added, failed = [], []
        for k, path in enumerate(paths):
            cancel.raise_if_cancelled()
            yield Progress("load", k, len(paths), f"Reading {Path(path).name}")
            try:
                a = add_study(project, path, series_uid=series_uid)
            except CovidSegError as exc:
                failed.append((str(path), exc))
                continue
            added.append(StudyAdded(a.source_id, a.study, a.new, a.labels_imported, str(path)))
        yield Progress("load", len(paths), len(paths))
        yield Done(StudiesAdded(added, failed))
    return job


def added_text(added: list[StudyAdded]) -> str:
    """The status line after adding studies: which were added (with the labels taken from their labels.csv), and
    which were in the project already."""
    new = [a for a in added if a.new]
    parts = []
    if new:
        parts.append("Added " + ", ".join(Path(a.path).name for a in new) + ".")
    n = sum(a.labels_imported for a in added)
    if n:
        parts.append(f"{n} slice labels taken from the studies' labels.csv.")
    parts += [f"{Path(a.path).name} is already in the project ({a.source_id})." for a in added if not a.new]
    return " ".join(parts)


def not_added_error(failed: list[tuple[str, Exception]]) -> Exception:
    """What to show for paths that are no study: the error itself for one, all of them in one message for more."""
    if len(failed) == 1:
        return failed[0][1]
    lines = "; ".join(f"{Path(path).name}: {getattr(exc, 'message', str(exc))}" for path, exc in failed)
    return InputError(f"{len(failed)} of the items given are not studies ({lines}).",
                      "Add a DICOM folder, a NIfTI volume (.nii, .nii.gz) or a folder of slice images.")
