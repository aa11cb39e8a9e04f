"""A DICOM SEG brought back into a project: matched to the study it references by UIDs, as a mask layer.

A mask exported here (results/export.py) and edited in another tool (3D Slicer, OHIF, MONAI Label) comes back
as a (z, y, x) 0/1 mask of the project's study, or is refused with the UID it references named.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io import dicom
from ..io.dicom_seg import SegMask, mask_for_study, read_seg
from ..io.loader import open_study
from ..study import Study
from .quantify import quantify


def find_seg_source(project, seg: SegMask) -> tuple[str, Study]:
    """The project's DICOM study whose series the SEG references (opened), or InputError naming the UID."""
    refs = set(seg.referenced_series_uids)
    for record in project.sources:
        if record.get("kind") != "dicom" or (record.get("series_uid") and record["series_uid"] not in refs):
            continue
        path = project.source_path(record["id"])
        try:
            scan = dicom.scan_folder(path)
        except OSError:
            continue
        if not refs & set(scan.series):
            continue
        study = open_study(path, series_uid=record.get("series_uid"))
        if study.meta.get("series_uid") in refs:
            return record["id"], study
    shown = ", ".join(sorted(refs)) or "no series"
    raise InputError(f"The SEG {seg.path} references the series {shown}, which is not a study of the project.",
                     "Add that DICOM series to the project first.")


def load_seg(project, path: str | Path) -> tuple[str, Study, np.ndarray, SegMask]:
    """A SEG file -> (source id, study, mask (z, y, x) uint8 0/1, the SEG as read)."""
    seg = read_seg(path)
    source_id, study = find_seg_source(project, seg)
    return source_id, study, mask_for_study(seg, study), seg


def describe_seg(path: str | Path, project=None) -> dict:
    """What `covidseg info` prints for a SEG: its series, segments and frames; with a project, the study it
    matches and the infected volume of its mask."""
    seg = read_seg(path)
    info = seg.describe()
    if project is not None:
        source_id, study, mask, _ = load_seg(project, path)
        quant = quantify(study, mask)
        info.update({"project_source": source_id, "study": study.source,
                     "slices_with_infection": int(np.count_nonzero(mask.reshape(study.n_slices, -1).any(1))),
                     "infected_ml": quant["infected_ml"], "infected_percent": quant["infected_percent"]})
    return info


def import_seg(project, path: str | Path) -> tuple[str, np.ndarray, Path]:
    """Bring a SEG back as the newest mask of the study it references: saved as the prediction of a new run
    folder (runs/seg-import-...), recorded with the SEG's path, so the app shows it and export and report use it.
    (source id, mask, run folder)."""
    from .export import save_prediction

    source_id, study, mask, seg = load_seg(project, path)
    run = project.new_run_dir("seg-import")
    save_prediction(run, source_id, mask, study)
    project.add_run(run, {"status": "imported", "source": source_id, "imported_from": str(Path(path).resolve()),
                          "seg_series_uid": seg.series_uid, "segments": [s["label"] for s in seg.segments]})
    return source_id, mask, run
