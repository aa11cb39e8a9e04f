"""Open whatever the user points at: a volume file, a DICOM folder or a folder of slice images -> Study."""
from __future__ import annotations

import logging
from pathlib import Path

from ..errors import InputError, LabelError
from ..study import Study
from . import dicom, images, nifti

log = logging.getLogger(__name__)

ACCEPTED = ("a folder of CT DICOM files, a NIfTI/.mha/.nrrd volume file, or a folder of PNG/JPG slices "
            "(or one with an images/ subfolder)")


def _has_images(folder: Path) -> bool:
    return bool(images.list_images(images.image_dir(folder)))


def _volume_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and nifti.volume_suffix(p))


def _check_readable(path: Path) -> None:
    """A file we may not read is said to be so (readers further down would call it missing or not a study)."""
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise InputError(f"Cannot read {path}: {exc.strerror or exc}.",
                         "Check that you may read the file (its permissions).") from exc


def detect_kind(path: str | Path) -> str:
    """"nifti", "dicom" or "images" for a path open_study can read; InputError naming the path otherwise."""
    path = Path(path)
    try:
        exists = path.exists()
    except OSError as exc:      # a folder on the way that we may not enter
        raise InputError(f"Cannot reach {path}: {exc.strerror or exc}.",
                         "Check the permissions of the folders that lead to it.") from exc
    if not exists:
        raise InputError(f"{path} does not exist.", f"Choose {ACCEPTED}.")
    if path.is_file():
        _check_readable(path)
        if nifti.volume_suffix(path):
            return "nifti"
        if dicom.sniff_dicom(path):
            return "dicom-file"
        if path.suffix.lower() in images.IMAGE_SUFFIXES:
            raise InputError(f"{path} is a single image.", "Choose the folder that holds the slice images.")
        raise InputError(f"{path} is not a file CovidSeg can read.", f"Choose {ACCEPTED}.")
    if not path.is_dir():
        raise InputError(f"{path} is neither a file nor a folder.", f"Choose {ACCEPTED}.")
    try:
        return _folder_kind(path)
    except OSError as exc:      # no permission to list the folder (or a failing disk)
        raise InputError(f"Cannot read the folder {exc.filename or path}: {exc.strerror or exc}.",
                         "Check that you may read it (its permissions), or copy the study somewhere readable.") from exc


def _folder_kind(path: Path) -> str:
    # DICOM files at the top level win over a stray preview image; images win over DICOM deeper down
    if dicom.folder_has_dicom(path, recursive=False):
        return "dicom"
    if _has_images(path):
        return "images"
    if dicom.folder_has_dicom(path, recursive=True):
        return "dicom"
    volumes = _volume_files(path)
    if volumes:
        names = ", ".join(p.name for p in volumes[:3]) + (" ..." if len(volumes) > 3 else "")
        raise InputError(f"{path} holds {len(volumes)} volume file(s) ({names}), not one study.",
                         "Choose one of the volume files itself.")
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    content = "it is empty" if not entries else f"none of its {len(entries)} entries is a DICOM file or an image"
    raise InputError(f"Nothing to read in {path}: {content}.", f"Choose {ACCEPTED}.")


def open_study(path: str | Path, labels_csv: str | Path | None = None, series_uid: str | None = None) -> Study:
    """Read a study. `labels_csv` (file,label) keys slices by file name for image folders; for DICOM/NIfTI by
    slice index (0 = first slice in the volume's order) or slice id (SOPInstanceUID). Without it, a labels.csv
    in the image or DICOM folder, or `<name>.labels.csv` / `labels.csv` beside a volume file, is used."""
    return _open(Path(path), labels_csv, series_uid)[0]


def _open(path: Path, labels_csv, series_uid) -> tuple[Study, dicom.FolderScan | None]:
    kind = detect_kind(path)
    if series_uid is not None and kind not in ("dicom", "dicom-file"):
        raise InputError(f"--series only applies to DICOM folders; {path} is not one.", "Leave out --series.")
    scan = None
    if kind == "images":
        return images.read_image_folder(path, labels_csv=labels_csv), None
    if kind == "nifti":
        study = nifti.read_nifti(path)
    else:
        folder = path.parent if kind == "dicom-file" else path
        # one file of a series: read its series from the folder it is in
        uid = series_uid or (_series_of(path) if kind == "dicom-file" else None)
        scan = dicom.scan_folder(folder)
        study = dicom.read_dicom_series(folder, series_uid=uid, scan=scan)
    if labels_csv is not None:
        _attach_volume_labels(study, Path(labels_csv))
    else:
        _attach_found_labels(study, path, kind)
    return study, scan


def _volume_labels_candidates(path: Path, kind: str) -> list[Path]:
    if kind == "nifti":
        stem = path.name[: -len(nifti.volume_suffix(path))]
        return [path.with_name(f"{stem}.labels.csv"), path.parent / "labels.csv"]
    folder = path.parent if kind == "dicom-file" else path
    return [folder / "labels.csv"]


def _attach_found_labels(study: Study, path: Path, kind: str) -> None:
    """A labels CSV lying with a volume is used like an image folder's labels.csv; a wrong one is only warned
    about, since the user did not ask for it."""
    csv_path = next((p for p in _volume_labels_candidates(path, kind) if p.is_file()), None)
    if csv_path is None:
        return
    try:
        _attach_volume_labels(study, csv_path)
    except LabelError as exc:
        study.warnings.append(f"labels file {csv_path.name} next to the study was not used: {exc.message}")


def _series_of(path: Path) -> str | None:
    import pydicom
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except dicom.READ_ERRORS as exc:
        raise InputError(f"Cannot read the DICOM file {path}: {exc}.", "Choose the folder of the series.") from exc
    return str(ds.get("SeriesInstanceUID", "")) or None


def _attach_volume_labels(study: Study, csv_path: Path) -> None:
    if not csv_path.is_file():
        raise LabelError(f"Labels file {csv_path} does not exist.", "Check the path.")
    rows = images.read_labels_csv(csv_path)
    n = study.n_slices
    known = set(study.slice_ids) | {str(i) for i in range(n)}
    unknown = sorted(k for k in rows if k not in known)
    if unknown:
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise LabelError(f"{csv_path} names {len(unknown)} slice(s) that are not in {study.source} "
                         f"({n} slices): {shown}.",
                         f"For a volume, the file column holds a slice index 0..{n - 1} or a SOPInstanceUID.")
    study.meta["labels_csv"] = str(csv_path)
    study.meta["labels"] = rows


def describe(path: str | Path, series_uid: str | None = None) -> dict:
    """What `covidseg info` prints: the study summary, plus the series list for a DICOM folder."""
    study, scan = _open(Path(path), None, series_uid)
    info = study.describe()
    if scan is not None:
        info["series"] = [s.to_dict() for s in dicom.series_infos(scan)]
    return info
