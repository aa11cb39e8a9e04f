"""The studies of a project as the rest of the engine needs them: adding one (kind detected, a duplicate said so,
its labels taken in), a summary per study (label counts, present or missing), and every study's slices as one
training input (a SliceSet whose slice ids are namespaced by study, so that pseudo masks, CAMs and pixel labels
of two studies never share a file name).

Studies of different image sizes are resampled to one shape for training (the most common one); prediction and
export always work at each study's own size and geometry.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..constants import LABELS
from ..data import SliceSet
from ..errors import CovidSegError, InputError, LabelError
from ..study import Study

log = logging.getLogger(__name__)

ID_SEPARATOR = "__"     # <source id>__<slice id>: a slice of a project's combined training set


def training_slice_id(source_id: str, slice_id: str) -> str:
    return f"{source_id}{ID_SEPARATOR}{slice_id}"


def split_training_id(training_id: str) -> tuple[str, str]:
    source_id, _, slice_id = training_id.partition(ID_SEPARATOR)
    return source_id, slice_id


def study_name(project, source_id: str) -> str:
    """A short readable name of a study: its file name without the volume suffix, or its folder's name."""
    path = project.source_path(source_id)
    name = path.name
    for suffix in (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or source_id
    return name or source_id


def open_source(project, source_id: str, cache_dir=None) -> Study:
    """Read a study of the project where it is now (InputError naming the study when it moved or vanished).
    With `cache_dir`, under torchrun the ranks other than 0 get rank 0's slices from the slice cache instead
    (slice_cache.open_study_shared: a MappedStudy, enough to train on)."""
    from ..io.loader import open_study
    from ..slice_cache import open_study_shared

    path = project.source_path(source_id)
    series_uid = project.source(source_id).get("series_uid")

    def read() -> Study:
        if not path.exists():
            raise InputError(f"The study {source_id} ({path}) is missing: it was moved or deleted.",
                             "Put it back, or point the project at its new place (the app's Studies panel: Locate…).")
        return open_study(path, series_uid=series_uid)

    return open_study_shared(path, series_uid, read, cache_dir)


def import_labels(project, source_id: str, study: Study) -> int:
    """Labels that came with the study (its labels.csv, or the --labels file read with it) become project labels,
    only when the project has none yet for this study, so the user's own labels are never overwritten."""
    if project.labels(source_id):
        return 0
    rows = study.meta.get("labels") or {}
    index_of = {str(i): sid for i, sid in enumerate(study.slice_ids)}
    known = set(study.slice_ids)
    labels = {}
    for key, row in rows.items():
        label = row.get("label") if isinstance(row, dict) else row
        sid = key if key in known else index_of.get(key)
        if sid is not None and label in LABELS:
            labels[sid] = label
    if labels:
        project.set_labels(source_id, labels)
    return len(labels)


KIND_TEXT = {"nifti": "a NIfTI volume", "dicom": "a DICOM series", "images": "a folder of slice images"}


def relocate_study(project, source_id: str, path: str | Path) -> Study:
    """A study whose files moved or were renamed: read it at its new place, check that it is the same study (the
    same kind, the DICOM series it had, every slice labelled or corrected in it), and point the project at it, so
    its labels and corrections, keyed by its slices, show again. Returns the study read there."""
    from ..io.loader import detect_kind, open_study

    path = Path(path).expanduser().absolute()
    kind = detect_kind(path)
    if kind == "dicom-file":
        path, kind = path.parent, "dicom"
    record = project.source(source_id)
    if kind != record.get("kind"):
        raise InputError(f"{path} is {KIND_TEXT.get(kind, kind)}, but the study {source_id} is "
                         f"{KIND_TEXT.get(record.get('kind'), record.get('kind'))}.",
                         "Choose the file or folder the study was moved to.")
    other = project.find_source(path, record.get("series_uid"))
    if other not in (None, source_id):       # said before anything is read
        raise InputError(f"{path} is already in the project, as the study {other}.",
                         "Choose the place the missing study was moved to.")
    study = open_study(path, series_uid=record.get("series_uid"))
    uid = record.get("series_uid")
    if uid and study.meta.get("series_uid") not in (None, uid):
        raise InputError(f"{path} holds another DICOM series than the study {source_id}.",
                         "Choose the folder the study's series was moved to.")
    kept = set(project.labels(source_id)) | set(project.corrections(source_id))
    lost = sorted(kept - set(study.slice_ids))
    if lost:
        raise InputError(f"{path} is not the study {source_id}: {len(lost)} of the {len(kept)} slices labelled or "
                         f"corrected in it are not there (e.g. {lost[0]}).",
                         "Choose the file or folder the study was moved to.")
    project.relocate_source(source_id, path)
    log.info("study %s relocated to %s", source_id, path)
    return study


@dataclass
class Added:
    source_id: str
    study: Study
    new: bool                 # False: the study was in the project already (nothing was added)
    labels_imported: int = 0


def add_study(project, path: str | Path, labels_csv: str | Path | None = None,
              series_uid: str | None = None) -> Added:
    """Read a study (NIfTI/MHA file, DICOM folder or file, image folder) and add it to the project; the same
    study (same file, same series) is not added twice. Labels from `labels_csv` (or the study's own labels.csv)
    are taken in when the project has none for it yet."""
    from ..io.loader import detect_kind, open_study

    path = Path(path).expanduser().absolute()
    kind = detect_kind(path)
    if kind == "dicom-file":
        path, kind = path.parent, "dicom"
    study = open_study(path, labels_csv=labels_csv, series_uid=series_uid)
    uid = study.meta.get("series_uid") if kind == "dicom" else None
    if kind == "dicom" and uid is None:
        uid = series_uid
    existing = project.find_source(path, uid)
    if existing is None and uid is not None:
        existing = next((s["id"] for s in project.sources if s.get("series_uid") == uid), None)
    if existing is not None:
        n = import_labels(project, existing, study) if labels_csv is not None else 0
        return Added(existing, study, False, n)
    source_id = project.add_source(path, kind, uid)
    return Added(source_id, study, True, import_labels(project, source_id, study))


def study_summary(project, source_id: str, study: Study | None = None) -> dict:
    """What `covidseg project info` says about one study: id, name, path, kind, present or missing, slices and
    label counts (unlabelled only when the study could be read), corrections."""
    record = project.source(source_id)
    path = project.source_path(source_id)
    info = {"id": source_id, "name": study_name(project, source_id), "path": str(path), "kind": record.get("kind"),
            "series_uid": record.get("series_uid"), "present": path.exists()}
    slice_ids = None
    if study is None and info["present"]:
        try:
            study = open_source(project, source_id)
        except CovidSegError as exc:
            info["error"] = exc.message
    if study is not None:
        slice_ids = list(study.slice_ids)
        info["slices"] = study.n_slices
        info["shape"] = list(study.shape)
    info["labels"] = project.counts(source_id, slice_ids)
    info["corrections"] = len(project.corrections(source_id))
    info["training"] = training_status(project, source_id)
    return info


def training_status(project, source_id: str) -> dict | None:
    """The newest run that trained on this study: its status ("running", "done", "failed", "cancelled") and
    path, or None. A run of the project that names no sources (the one-study runs) counts for its source."""
    for run in reversed(project.runs):
        summary = run.get("summary") or {}
        sources = summary.get("sources") or ([summary["source"]] if summary.get("source") else [])
        if source_id in sources:
            return {"status": summary.get("status"), "run": run["path"]}
    return None


@dataclass
class StudyPart:
    """Where one study's slices sit in the combined training set."""
    source_id: str
    name: str
    study: Study
    start: int
    stop: int


@dataclass
class ProjectSlices:
    slices: SliceSet                           # every study's slices, ids <source>__<slice id>
    parts: list[StudyPart]
    skipped: list[str] = field(default_factory=list)   # why a study is not in the set (missing, unreadable)

    def part(self, source_id: str) -> StudyPart:
        return next(p for p in self.parts if p.source_id == source_id)


def common_shape(shapes: list[tuple[int, int]]) -> tuple[int, int]:
    """The slice shape most studies have (ties: the largest), what the others are resampled to."""
    return max(set(shapes), key=lambda s: (shapes.count(s), s[0] * s[1]))


def project_slices(project, studies: dict[str, Study] | None = None, source_ids: list[str] | None = None,
                   cache_dir=None) -> ProjectSlices:
    """Every study's slices in [0, 1] with the project's labels, as one SliceSet (groups: the study, so the
    validation split goes by study when there are several). `studies` may pass studies already read (the app
    does). A study that is missing or unreadable is left out and named in `skipped`; none readable is an error.
    `cache_dir`: the slice cache that torchrun's ranks share the studies through (open_source)."""
    studies = dict(studies or {})
    ids = source_ids if source_ids is not None else [s["id"] for s in project.sources]
    if not ids:
        raise InputError("The project has no study.", "Add one: covidseg project add PROJECT STUDY.")
    skipped: list[str] = []
    read: list[tuple[str, Study]] = []
    for sid in ids:
        study = studies.get(sid)
        if study is None:
            try:
                study = open_source(project, sid, cache_dir)
            except CovidSegError as exc:
                skipped.append(f"study {sid} left out: {exc.message}")
                continue
        read.append((sid, study))
    if not read:
        raise InputError("No study of the project can be read: " + "; ".join(skipped),
                         "Put the studies back where they were, or add them again.")
    shape = common_shape([tuple(s.shape[1:]) for _, s in read])
    images, slice_ids, labels, groups, parts = [], [], [], [], []
    start = 0
    for sid, study in read:
        unit = study.unit_range().astype(np.float32)
        if tuple(unit.shape[1:]) != shape:
            import torch

            from ..imaging.resize import resize_stack

            unit = resize_stack(torch.from_numpy(np.ascontiguousarray(unit))[:, None], shape)[:, 0].numpy()
            unit = np.clip(unit, 0.0, 1.0).astype(np.float32)
            log.info("study %s resampled from %s to %s for training", sid, study.shape[1:], shape)
        own = project.labels(sid)
        images.append(unit)
        slice_ids += [training_slice_id(sid, s) for s in study.slice_ids]
        labels += [own.get(s) for s in study.slice_ids]
        groups += [sid] * study.n_slices
        parts.append(StudyPart(sid, study_name(project, sid), study, start, start + study.n_slices))
        start += study.n_slices
    slices = SliceSet(images=np.concatenate(images), ids=slice_ids, labels=labels, groups=groups,
                      study=read[0][1] if len(read) == 1 else None)
    return ProjectSlices(slices, parts, skipped)


def check_labelled(combined: ProjectSlices, minimum: int = 1) -> None:
    """Training needs labelled slices of both kinds: say which study has what when there are too few."""
    counts = combined.slices.counts()
    if counts["infected"] >= minimum and counts["clean"] >= minimum:
        return
    per = []
    for part in combined.parts:
        labs = combined.slices.labels[part.start:part.stop]
        per.append(f"{part.name} ({part.source_id}): {labs.count('infected')} infected, {labs.count('clean')} clean")
    raise LabelError(f"No study has enough labelled slices to train: {'; '.join(per)}.",
                     f"Label at least {minimum} slice(s) 'infected' and {minimum} 'clean' (a few dozen of each works "
                     "much better), in any of the studies.")


def write_pixel_labels(project, combined: ProjectSlices, folder: Path) -> int:
    """The user's corrections of every study as the core's --pixel-labels folder (PNG 0/255 named by training
    slice id, at the training shape). Returns how many."""
    from PIL import Image

    from ..atomic import atomic_write
    from ..imaging.resize import to_shape
    from ..runs import slice_png_name

    shape = tuple(combined.slices.images.shape[1:])
    n = 0
    for part in combined.parts:
        for slice_id in project.corrections(part.source_id):
            if slice_id not in part.study.slice_ids:
                continue
            mask = project.correction(part.source_id, slice_id)
            if mask is None:
                continue
            mask = to_shape(mask, shape, nearest=True)
            name = slice_png_name(training_slice_id(part.source_id, slice_id))
            atomic_write(folder / name, lambda tmp, m=mask: Image.fromarray(m).save(tmp, format="PNG"))
            n += 1
    return n
