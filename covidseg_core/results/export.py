"""A project's masks as NIfTI in the geometry of each source scan, or as a DICOM SEG over the source series, with
the quantification beside them.

Where a slice has a user correction it wins; elsewhere the newest run's prediction for that source is used
(stored at RunFolder.prediction_path by whoever predicted it: the app or `save_prediction`).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import InputError, ProjectError
from ..events import CancelToken, Done, Message, Progress
from ..io.loader import open_study
from ..io.nifti import write_mask_nifti
from ..outputs import refuse_existing, refuse_protected, study_protected
from ..runs import RunFolder
from ..study import Study
from .quantify import quantify, write_quantification

log = logging.getLogger(__name__)

FORMATS = ("nifti", "dicom-seg")
RUN_SETTING_KEYS = ("fusion", "size", "image_size", "cls_epochs", "seg_epochs", "epochs", "seed", "synthetic",
                    "lung_method", "budget_minutes")


def save_prediction(run_dir: str | Path, source_id: str, mask: np.ndarray, study: Study) -> Path:
    """Keep a run's predicted mask of a project source (uint8 0/1, the study's geometry), atomically."""
    return write_mask_nifti((np.asarray(mask) > 0).astype(np.uint8), study,
                            RunFolder(run_dir).prediction_path(source_id))


def latest_prediction_of_run(run_dir: str | Path, source_id: str, shape: tuple[int, int, int]) -> np.ndarray | None:
    """The mask a run saved for a source (uint8 0/1), or None when it has none of that shape."""
    import SimpleITK as sitk

    path = RunFolder(run_dir).prediction_path(source_id)
    if not path.is_file():
        return None
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    return (arr > 0).astype(np.uint8) if arr.shape == tuple(shape) else None


def latest_prediction(project, source_id: str, shape: tuple[int, int, int]) -> tuple[np.ndarray | None, str | None]:
    """The newest run's predicted mask of a source (and the run's path), or (None, None)."""
    import SimpleITK as sitk

    for run in reversed(project.runs):
        path = RunFolder(run["path"]).prediction_path(source_id)
        if not path.is_file():
            continue
        arr = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        if arr.shape != tuple(shape):
            log.warning("prediction %s has shape %s, the study %s: skipped", path, arr.shape, shape)
            continue
        return (arr > 0).astype(np.uint8), run["path"]
    return None, None


def assemble_mask(project, source_id: str, study: Study, which: str = "corrected",
                  prediction: np.ndarray | None = None, run: str | None = None) -> tuple[np.ndarray, dict]:
    """The mask volume of a source: `which` = "predicted" (the prediction only) or "corrected" (prediction with
    every corrected slice replaced by the user's mask). The prediction is the newest run's unless one is given
    (the app passes the one it shows)."""
    if which not in ("predicted", "corrected"):
        raise InputError(f"Unknown mask choice {which!r}.", "Use 'predicted' or 'corrected'.")
    pred = prediction
    if pred is None:
        pred, run = latest_prediction(project, source_id, study.shape)
    mask = (np.asarray(pred) > 0).astype(np.uint8) if pred is not None else np.zeros(study.shape, np.uint8)
    corrected = []
    if which == "corrected":
        for slice_id in project.corrections(source_id):
            if slice_id not in study.slice_ids:
                log.warning("correction for slice %s that the study no longer has: skipped", slice_id)
                continue
            z = study.slice_index(slice_id)
            corr = project.correction(source_id, slice_id)
            if corr.shape != study.shape[1:]:
                raise InputError(f"The correction of slice {slice_id} is {corr.shape[1]}x{corr.shape[0]} but the "
                                 f"slice is {study.shape[2]}x{study.shape[1]} (mask of the wrong size).",
                                 "Remove that correction and draw it again.")
            mask[z] = corr > 0
            corrected.append(slice_id)
    if pred is None and not corrected:
        raise ProjectError(f"The study {source_id} has no predicted or corrected mask yet.",
                           "Train (or correct some slices) before exporting.")
    return mask, {"run": run, "corrected_slices": len(corrected), "which": which}


def export_files(out: str | Path) -> list[Path]:
    """The files an export to `out` writes: the mask (or SEG) and its `.quant.json` / `.quant.csv`."""
    out = Path(out)
    name = out.name
    for suffix in (".nii.gz", ".nii", ".dcm"):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    return [out, *(out.with_name(f"{name}.quant.{ext}") for ext in ("json", "csv"))]


def _check_out_name(out: Path, fmt: str) -> None:
    nifti_name = out.name.endswith(".nii.gz") or out.name.endswith(".nii")
    if fmt not in FORMATS:
        raise InputError(f"Unknown export format {fmt!r}.", f"Use one of {', '.join(FORMATS)}.")
    if fmt == "nifti" and not nifti_name:
        raise InputError(f"{out} is not a NIfTI file name.", "Name the export like masks.nii.gz "
                         "(or pass --format dicom-seg for a DICOM SEG).")
    if fmt == "dicom-seg" and nifti_name:
        raise InputError(f"{out} is a NIfTI file name, but the format is dicom-seg.", "Name the export like "
                         "masks.dcm (or pass --format nifti).")


def choose_source(project, source_id: str | None) -> str:
    """The source to export: the given one, or the project's only one (InputError when there are several)."""
    sources = project.sources
    if not sources:
        raise ProjectError("The project has no study to export.", "Open a study first.")
    if source_id is None:
        if len(sources) > 1:
            ids = ", ".join(s["id"] for s in sources)
            raise InputError(f"The project holds {len(sources)} studies ({ids}).", "Choose one with --source.")
        source_id = sources[0]["id"]
    project.source(source_id)          # ProjectError for an unknown id
    return source_id


def guard_outputs(project, targets: list[Path], overwrite: bool) -> None:
    """Never into a study of the project; over existing files only with `overwrite` (the app asks first)."""
    protected = [p for s in project.sources for p in study_protected(project.source_path(s["id"]),
                                                                     f"the study {s['id']}")]
    for target in targets:
        refuse_protected(target, protected, "Choose an output file outside the studies' files and folders.")
    refuse_existing(targets, overwrite, "Choose another file name, or pass --overwrite to replace them.")


def seg_needs_dicom(record: dict) -> None:
    """InputError when a source is not a DICOM series: a SEG references the images it was drawn on."""
    if record.get("kind") != "dicom":
        what = {"nifti": "a NIfTI volume", "images": "a folder of slice images"}.get(record.get("kind"),
                                                                                    "not a DICOM series")
        raise InputError(f"DICOM SEG export needs a study opened from DICOM files; the study {record['id']} "
                         f"({Path(record['path']).name}) is {what}.",
                         "Export it as NIfTI (--format nifti), or open the DICOM series of the scan.")


def export_project(project, out: str | Path, source_id: str | None = None, which: str = "corrected",
                   cancel: CancelToken | None = None, overwrite: bool = False, fmt: str = "nifti"):
    """Job: write `out` for one source (the only or given one) plus `<out>.quant.{json,csv}`: a NIfTI mask
    (uint8 0/1) when `fmt` is "nifti", a binary DICOM SEG over the source series when "dicom-seg".
    Never into a study of the project; over existing files only with `overwrite` (the app asks first)."""
    out = Path(out)
    _check_out_name(out, fmt)
    source_id = choose_source(project, source_id)
    record = project.source(source_id)
    if fmt == "dicom-seg":
        seg_needs_dicom(record)
    targets = export_files(out)
    guard_outputs(project, targets, overwrite)
    yield Progress("export", 0, 3, "reading the study")
    study = open_study(project.source_path(source_id), series_uid=record.get("series_uid"))
    if cancel:
        cancel.raise_if_cancelled()
    yield Progress("export", 1, 3, "assembling masks")
    mask, info = assemble_mask(project, source_id, study, which)
    seg = None
    if fmt == "dicom-seg":
        from ..io.dicom_seg import write_seg

        for warning in study.warnings:      # a tilted or unevenly spaced series still exports, with its warning
            yield Message(f"{study.source}: {warning}", "warning")
        run_id = Path(info["run"]).name if info.get("run") else None
        seg = write_seg(study, mask, out, run_id=run_id, semiautomatic=info["corrected_slices"] > 0,
                        settings=_run_settings(project, info.get("run")))
    else:
        write_mask_nifti(mask, study, out)
    yield Progress("export", 2, 3, "measuring infected volume")
    quant = quantify(study, mask)
    json_path, csv_path = write_quantification(quant, targets[1].with_suffix(""))
    if not study.is_hu:
        yield Message("The study is not in HU (an image folder): volumes assume 1 mm pixels unless its spacing "
                      "is known.", "warning")
    yield Progress("export", 3, 3, "done")
    result = {"mask": str(out), "format": fmt, "quantification": [str(json_path), str(csv_path)],
              "source": source_id, "infected_ml": quant["infected_ml"],
              "infected_percent": quant["infected_percent"], **info}
    if seg is not None:
        result["seg"] = seg
    yield Done(result)


def _run_settings(project, run: str | None) -> dict:
    """A few settings of the run that made the prediction, for the SEG's algorithm parameters."""
    if not run:
        return {}
    for record in project.runs:
        if record["path"] == run:
            summary = record.get("summary") or {}
            settings = summary.get("settings") if isinstance(summary.get("settings"), dict) else summary
            return {k: v for k, v in settings.items() if isinstance(v, (str, int, float)) and not isinstance(v, bool)
                    and k in RUN_SETTING_KEYS}
    return {}


FOLDER_SUFFIX = {"nifti": "_infection.nii.gz", "dicom-seg": "_infection.dcm"}


def export_names(project, source_ids: list[str], fmt: str = "nifti") -> dict[str, str]:
    """source id -> the export's file name, from the study: `<name>_infection.nii.gz` (`.dcm` for a SEG);
    studies with the same name (two ct.nii.gz in different folders) get their id added, so no export replaces
    another."""
    from ..project.studies import study_name

    names = {sid: study_name(project, sid) for sid in source_ids}
    stems = list(names.values())
    safe = {}
    for sid, name in names.items():
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._") or sid
        if stems.count(name) > 1:
            stem = f"{stem}_{sid}"
        safe[sid] = f"{stem}{FOLDER_SUFFIX[fmt]}"
    return safe


def folder_export_plan(project, fmt: str = "nifti", source_ids: list[str] | None = None
                       ) -> tuple[dict[str, str], list[dict]]:
    """What a folder export (export_studies) writes: source id -> file name (export_names) for each study it
    exports, and the studies it leaves out for the format ({"source", "reason"}: a DICOM SEG needs a study opened
    from DICOM). The app shows the names and asks before replacing any of them."""
    if fmt not in FORMATS:
        raise InputError(f"Unknown export format {fmt!r}.", f"Use one of {', '.join(FORMATS)}.")
    ids = source_ids or [s["id"] for s in project.sources]
    if not ids:
        raise ProjectError("The project has no study to export.", "Add a study first.")
    skipped = []
    if fmt == "dicom-seg":            # a SEG references the DICOM images it was drawn on: other studies skipped
        dicom = []
        for sid in ids:
            kind = project.source(sid).get("kind")
            if kind == "dicom":
                dicom.append(sid)
                continue
            what = {"nifti": "a NIfTI volume", "images": "a folder of slice images"}.get(kind, "not a DICOM series")
            skipped.append({"source": sid,
                            "reason": f"not from DICOM ({what}); a DICOM SEG needs a study opened from DICOM files"})
        if not dicom:
            raise InputError("DICOM SEG export needs a study opened from DICOM files; no study to export is one.",
                             "Export them as NIfTI (--format nifti).")
        ids = dicom
    return export_names(project, ids, fmt), skipped


def export_studies(project, out_dir: str | Path, which: str = "corrected", source_ids: list[str] | None = None,
                   cancel: CancelToken | None = None, overwrite: bool = False, fmt: str = "nifti"):
    """Job: one mask (+ quantification) per study of the project into the folder `out_dir`, named from the
    study (export_names). With `fmt` "dicom-seg", one SEG per study opened from DICOM; the other studies are
    skipped with a note (a SEG references the DICOM images it was drawn on). A study with nothing to export
    yet (no prediction, no correction) or missing is skipped and named in the result; none exported is an
    error. Done({"folder", "format", "studies": [...], "skipped"})."""
    out_dir = Path(out_dir)
    if out_dir.name.lower().endswith((".nii", ".nii.gz", ".dcm")):
        raise InputError(f"{out_dir} is a file name; exporting every study needs a folder.",
                         "Give a folder, or choose one study with --source.")
    names, skipped = folder_export_plan(project, fmt, source_ids)
    for s in skipped:
        yield Message(f"{s['source']} skipped: {s['reason']}. Export it with --format nifti.", "warning")
    ids = list(names)
    targets = [t for sid in ids for t in export_files(out_dir / names[sid])]
    protected = [p for s in project.sources for p in study_protected(project.source_path(s["id"]),
                                                                     f"the study {s['id']}")]
    for target in targets:
        refuse_protected(target, protected, "Choose an output folder outside the studies' files and folders.")
    refuse_existing(targets, overwrite, "Choose another folder, or pass --overwrite to replace them.")
    exported = []
    for k, sid in enumerate(ids):
        if cancel:
            cancel.raise_if_cancelled()
        yield Progress("export", k, len(ids), f"exporting {names[sid]}")
        if not project.source_path(sid).exists():
            skipped.append({"source": sid, "reason": f"the study is missing ({project.source_path(sid)})"})
            continue
        try:
            result = yield from _quiet(export_project(project, out_dir / names[sid], source_id=sid, which=which,
                                                      cancel=cancel, overwrite=overwrite, fmt=fmt))
        except ProjectError as exc:       # nothing to export for this study yet
            skipped.append({"source": sid, "reason": exc.message})
            continue
        except InputError as exc:         # a series that cannot carry a SEG (e.g. UIDs blanked): the others go on
            if fmt != "dicom-seg":
                raise
            skipped.append({"source": sid, "reason": exc.message})
            yield Message(f"{sid} skipped: {exc.message}", "warning")
            continue
        exported.append(result)
    if not exported:
        reasons = "; ".join(f"{s['source']}: {s['reason']}" for s in skipped)
        raise ProjectError(f"No study was exported ({reasons}).",
                           "Train (or correct some slices) before exporting, or export as NIfTI (--format nifti)."
                           if fmt == "dicom-seg" else "Train (or correct some slices) before exporting.")
    yield Progress("export", len(ids), len(ids), "done")
    yield Done({"folder": str(out_dir), "format": fmt, "studies": exported, "skipped": skipped})


def _quiet(job):
    """Relay a one-study export's messages but not its own progress (the folder export counts studies)."""
    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            return stop.value
        if isinstance(event, Done):
            return event.result
        if isinstance(event, Message):
            yield event
