"""DICOM folder -> Study (pydicom): find the series, pick the axial CT one, reject scouts, sort, rescale to HU.

Slices are ordered by their position along the slice normal (cross product of the row and column cosines of
ImageOrientationPatient), never by file name or InstanceNumber, which scanners and exporters do not keep in order.
The geometry matches what SimpleITK's ImageSeriesReader gives for the same files, so exported masks line up.

This module is over 400 lines because those rules (series choice, scout rejection, ordering, rescale, geometry
checks) are one reading of one folder scan; split apart, each piece would need the scan's internals.
"""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from ..errors import InputError
from ..study import Study

log = logging.getLogger(__name__)

# Errors pydicom raises on a truncated or otherwise broken file (and on pixel data it cannot decode).
READ_ERRORS = (InvalidDicomError, OSError, EOFError, ValueError, KeyError, AttributeError, TypeError,
               IndexError, NotImplementedError, RuntimeError)

SCOUT_THICKNESS_MM = 50.0      # no axial CT reconstruction is this thick; scouts record the whole scan length
AXIAL_MIN_COSINE = 0.7         # slice normal within ~45 degrees of the patient's z axis counts as axial
TILT_MAX_DEGREES = 0.5         # angle between the stacking direction and the slice normal before we warn
GAP_FACTOR = 1.5               # a step this many times the median step means missing slices
HINT_SERIES = "choose another series (--series UID on the command line)"
COMPANION_SUFFIXES = {".csv", ".md", ".txt", ".json", ".xml", ".html", ".pdf"}


@dataclass
class SeriesInfo:
    uid: str
    description: str
    modality: str
    n_files: int
    orientation: str           # "axial" | "coronal" | "sagittal" | "oblique" | "unknown"
    is_localizer: bool
    example_file: str
    rows: int = 0
    columns: int = 0
    localizer_reason: str = ""

    @property
    def axial(self) -> bool:
        return self.orientation == "axial"

    def label(self) -> str:
        desc = f"'{self.description}' " if self.description else ""
        return f"{self.modality or '?'} series {desc}{self.uid or '(no SeriesInstanceUID)'}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["axial"] = self.axial
        return d


@dataclass
class _Header:
    path: Path
    ds: Dataset                # header only (no pixel data)


@dataclass
class FolderScan:
    """Every file under a folder, sorted into DICOM image series and the rest."""
    folder: Path
    series: dict[str, list[_Header]] = field(default_factory=dict)
    non_dicom: list[Path] = field(default_factory=list)       # not DICOM at all (text, images, ...)
    non_image: list[Path] = field(default_factory=list)       # DICOM without pixels (DICOMDIR, SR, RTSTRUCT)
    unreadable: list[str] = field(default_factory=list)       # warnings naming broken files

    @property
    def n_dicom_images(self) -> int:
        return sum(len(v) for v in self.series.values())


# --- finding files ------------------------------------------------------------------------------------------

def sniff_dicom(path: Path) -> str:
    """"part10" for a file with the DICM preamble, "raw" for a headerless dataset (starts with a group 0002/0008
    tag, as old exporters write), "" for anything else (a file that cannot be opened too). Reads 132 bytes only."""
    try:
        return _sniff(path)
    except OSError:
        return ""


def _sniff(path: Path) -> str:
    """sniff_dicom, letting an OSError (no permission, an I/O error) through so that it can be reported."""
    with open(path, "rb") as fh:
        head = fh.read(132)
    if len(head) == 132 and head[128:132] == b"DICM":
        return "part10"
    if len(head) >= 8 and head[:2] in (b"\x02\x00", b"\x08\x00") and head[2:4] in (b"\x00\x00", b"\x05\x00",
                                                                                 b"\x08\x00", b"\x10\x00",
                                                                                 b"\x12\x00", b"\x16\x00"):
        return "raw"
    return ""


def _walk_files(folder: Path):
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(root) / name


def folder_has_dicom(folder: Path, recursive: bool = True) -> bool:
    """Whether a folder holds at least one DICOM file (sniffed, not by extension)."""
    files = _walk_files(folder) if recursive else (p for p in sorted(folder.iterdir()) if p.is_file())
    return any(sniff_dicom(p) for p in files)


def _is_image_header(ds: Dataset) -> bool:
    return "Rows" in ds and "Columns" in ds


def scan_folder(folder: str | Path) -> FolderScan:
    """Read the header of every file under `folder` (recursively) and group DICOM images by SeriesInstanceUID."""
    folder = Path(folder)
    scan = FolderScan(folder=folder)
    for path in _walk_files(folder):
        try:
            kind = _sniff(path)
        except OSError as exc:      # not "non-DICOM": we do not know what it is, and it may be a missing slice
            scan.unreadable.append(f"could not read {path} ({exc.strerror or exc}): if it is a slice of the "
                                   "series, it is missing")
            continue
        if not kind:
            scan.non_dicom.append(path)
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=(kind == "raw"))
        except READ_ERRORS as exc:
            scan.unreadable.append(f"skipped unreadable DICOM file {path}: {exc}")
            continue
        if not _is_image_header(ds):
            sop = str(getattr(ds, "SOPClassUID", "") and ds.SOPClassUID.name)
            if "ImageType" in ds or "Image Storage" in sop or (kind == "part10" and "SOPClassUID" not in ds):
                scan.unreadable.append(f"skipped incomplete DICOM file {path} (no image size in its header; "
                                       "truncated?)")
            else:
                scan.non_image.append(path)
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        scan.series.setdefault(uid, []).append(_Header(path, ds))
    for w in scan.unreadable:      # the caller shows them (Study.warnings): logged here only for debugging
        log.debug(w)
    return scan


# --- orientation and scouts ---------------------------------------------------------------------------------

def _cosines(ds: Dataset) -> tuple[np.ndarray, np.ndarray] | None:
    iop = ds.get("ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        return None
    v = np.asarray([float(x) for x in iop], dtype=float)
    row, col = v[:3], v[3:]
    nr, nc = np.linalg.norm(row), np.linalg.norm(col)
    if nr < 1e-6 or nc < 1e-6:
        return None
    return row / nr, col / nc


def _orientation(ds: Dataset) -> str:
    rc = _cosines(ds)
    if rc is None:
        return "unknown"
    normal = np.cross(*rc)
    axis = int(np.argmax(np.abs(normal)))
    if abs(normal[axis]) < AXIAL_MIN_COSINE:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def _image_type(ds: Dataset) -> list[str]:
    it = ds.get("ImageType")
    if it is None:
        return []
    values = [it] if isinstance(it, str) else list(it)
    return [str(v).upper() for v in values]


def _scout_reason(ds: Dataset) -> str:
    """Why this single image is a localizer/scout ("" when it is not)."""
    if "LOCALIZER" in _image_type(ds):
        return "ImageType LOCALIZER"
    thickness = _float(ds.get("SliceThickness"))
    if thickness is not None and thickness > SCOUT_THICKNESS_MM:
        return f"SliceThickness {thickness:g} mm"
    return ""


def _float(value) -> float | None:
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


def _series_info(uid: str, headers: list[_Header]) -> SeriesInfo:
    first = headers[0].ds
    orientations = [_orientation(h.ds) for h in headers]
    orientation = max(set(orientations), key=orientations.count)
    reasons = [_scout_reason(h.ds) for h in headers]
    reason = ""
    if all(reasons):
        reason = reasons[0]
    elif len(headers) <= 2 and orientation not in ("axial", "unknown"):
        reason = f"{len(headers)} {orientation} image(s)"
    return SeriesInfo(uid=uid, description=str(first.get("SeriesDescription", "") or ""),
                      modality=str(first.get("Modality", "") or ""), n_files=len(headers),
                      orientation=orientation, is_localizer=bool(reason), example_file=str(headers[0].path),
                      rows=int(first.get("Rows", 0) or 0), columns=int(first.get("Columns", 0) or 0),
                      localizer_reason=reason)


def list_series(folder: str | Path) -> list[SeriesInfo]:
    """The DICOM image series under a folder, largest first."""
    return series_infos(scan_folder(folder))


def series_infos(scan: FolderScan) -> list[SeriesInfo]:
    infos = [_series_info(uid, hs) for uid, hs in scan.series.items()]
    return sorted(infos, key=lambda s: (-s.n_files, s.uid))


# --- choosing the series ------------------------------------------------------------------------------------

def _choose_series(scan: FolderScan, infos: list[SeriesInfo], series_uid: str | None) -> SeriesInfo:
    folder = scan.folder
    if not infos:
        what = []
        if scan.non_dicom:
            what.append(f"{len(scan.non_dicom)} non-DICOM file(s)")
        if scan.non_image:
            what.append(f"{len(scan.non_image)} DICOM file(s) without images")
        if scan.unreadable:
            what.append(f"{len(scan.unreadable)} unreadable DICOM file(s)")
        found = f" (found {', '.join(what)})" if what else " (it is empty)"
        raise InputError(f"No DICOM images in {folder}{found}.",
                         "Choose a folder of CT DICOM slices, a NIfTI file or a folder of PNG/JPG slices.")
    if series_uid is not None:
        match = [s for s in infos if s.uid == series_uid]
        if not match:
            listing = "; ".join(f"{s.uid} ({s.description or s.modality}, {s.n_files} files)" for s in infos)
            raise InputError(f"No series {series_uid} in {folder}.", f"Series there: {listing}.")
        chosen = match[0]
        if chosen.is_localizer:
            raise InputError(f"{chosen.label()} in {folder} is a scout/localizer ({chosen.localizer_reason}), "
                             "not a stack of axial slices.", "Choose an axial CT series.")
    else:
        usable = [s for s in infos if not s.is_localizer]
        if not usable:
            raise InputError(f"{folder} holds only scout/localizer images "
                             f"({'; '.join(f'{s.label()}: {s.localizer_reason}' for s in infos)}).",
                             "Choose the folder of the axial CT series.")
        ct = [s for s in usable if s.modality.upper() == "CT"]
        if not ct:
            s = usable[0]
            raise InputError(f"{s.label()} in {folder} is {s.modality or 'of unknown modality'}, not CT.",
                             "CovidSeg reads CT only (its values must be Hounsfield units).")
        chosen = max(ct, key=lambda s: (s.axial, s.n_files))
    if chosen.modality.upper() != "CT":
        raise InputError(f"{chosen.label()} in {folder} is not CT (Modality {chosen.modality or 'missing'}).",
                         "CovidSeg reads CT only (its values must be Hounsfield units).")
    return chosen


# --- reading ------------------------------------------------------------------------------------------------

@dataclass
class _Slice:
    path: Path
    ds: Dataset
    pixels: np.ndarray         # HU, float32 (rows, columns)


def _to_hu(ds: Dataset) -> np.ndarray:
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise InputError(f"{ds.filename} is a multi-frame (enhanced) DICOM image.",
                         "Export the series as classic single-frame CT images.")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise InputError(f"{ds.filename} is a colour image, not a CT slice.", "Choose the CT series.")
    # Cast first: uint16 stored values would wrap around with a negative intercept.
    px = ds.pixel_array.astype(np.float32)
    slope = _float(ds.get("RescaleSlope"))
    intercept = _float(ds.get("RescaleIntercept"))
    slope = 1.0 if slope is None or slope == 0 else slope
    intercept = 0.0 if intercept is None else intercept
    return px * np.float32(slope) + np.float32(intercept)


def _read_slices(headers: list[_Header], warnings: list[str]) -> list[_Slice]:
    slices = []
    for h in headers:
        try:
            ds = pydicom.dcmread(h.path, force=(sniff_dicom(h.path) == "raw"))
            # keep the header read earlier, not the full dataset: its pixel bytes would double the memory
            slices.append(_Slice(h.path, h.ds, _to_hu(ds)))
        except READ_ERRORS as exc:
            warnings.append(f"skipped {h.path.name}: its pixel data cannot be read ({exc})")
    return slices


def _keep_majority(slices: list[_Slice], key, what: str, warnings: list[str]) -> list[_Slice]:
    keys = [key(s) for s in slices]
    best = max(set(keys), key=keys.count)
    dropped = [s.path.name for s, k in zip(slices, keys) if k != best]
    if dropped:
        shown = ", ".join(dropped[:5]) + (" ..." if len(dropped) > 5 else "")
        warnings.append(f"skipped {len(dropped)} slice(s) with a different {what} from the rest: {shown}")
    return [s for s, k in zip(slices, keys) if k == best]


def _spacing_warnings(pos: np.ndarray, warnings: list[str]) -> float:
    """Median step along the normal; warns about gaps (missing slices) and uneven steps."""
    steps = np.diff(pos)
    median = float(np.median(steps))
    gaps = np.nonzero(steps > GAP_FACTOR * median)[0]
    if gaps.size:
        shown = ", ".join(f"{steps[g]:.1f} mm between slices {g} and {g + 1} (at {pos[g]:.1f} to {pos[g + 1]:.1f} "
                          f"mm, about {max(round(steps[g] / median) - 1, 1)} missing)" for g in gaps[:3])
        warnings.append(f"{gaps.size} gap(s) in the slice positions: {shown}{' ...' if gaps.size > 3 else ''} "
                        f"(median step {median:.3g} mm): slices are missing, two scans are mixed or the spacing "
                        "changes; distances across a gap are wrong")
    tol = max(0.01 * median, 0.05)
    regular = np.delete(steps, gaps)
    if regular.size and np.max(np.abs(regular - median)) > tol:
        warnings.append(f"uneven slice spacing: steps from {steps.min():.3g} to {steps.max():.3g} mm "
                        f"(median {median:.3g} mm used, the volume is not resampled)")
    return median


def _meta(ds: Dataset, info: SeriesInfo) -> dict:
    def text(tag: str) -> str:
        v = ds.get(tag)
        if v is None:
            return ""
        if isinstance(v, (list, tuple, MultiValue)):
            return "\\".join(str(x) for x in v)
        return str(v)

    meta = {"series_uid": info.uid, "series_description": info.description, "modality": info.modality,
            "manufacturer": text("Manufacturer"), "model": text("ManufacturerModelName"),
            "study_uid": text("StudyInstanceUID"), "patient_position": text("PatientPosition"),
            "body_part": text("BodyPartExamined"), "kernel": text("ConvolutionKernel"),
            "transfer_syntax": str((getattr(ds, "file_meta", None) or {}).get("TransferSyntaxUID", ""))}
    for tag, key in (("SliceThickness", "slice_thickness"), ("KVP", "kvp"),
                     ("GantryDetectorTilt", "gantry_tilt")):
        v = _float(ds.get(tag))
        if v is not None:
            meta[key] = v
    return {k: v for k, v in meta.items() if v != ""}


def read_dicom_series(folder: str | Path, series_uid: str | None = None, scan: FolderScan | None = None) -> Study:
    """Read one CT series from a folder (searched recursively) as a Study in HU.

    Without `series_uid` the axial CT series with the most slices is read; the others are named in the warnings.
    `scan` (from scan_folder) saves reading the headers twice when the caller has them already.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder.", "Choose the folder that holds the DICOM files.")
    scan = scan if scan is not None else scan_folder(folder)
    infos = series_infos(scan)
    chosen = _choose_series(scan, infos, series_uid)
    warnings: list[str] = list(scan.unreadable)
    if len(infos) > 1 and series_uid is None:      # an explicit choice needs no reminder of the others
        rest = [s for s in infos if s is not chosen]
        others = "; ".join(f"{s.uid} ({s.description or s.modality}, {s.n_files} files"
                           f"{', scout: ' + s.localizer_reason if s.is_localizer else ''})" for s in rest[:5])
        others += f"; ... {len(rest) - 5} more" if len(rest) > 5 else ""
        warnings.append(f"folder holds {len(infos)} series; using {chosen.uid} "
                        f"'{chosen.description}' ({chosen.n_files} slices); {HINT_SERIES} (others: {others})")
    # notes and label files beside the slices are expected; anything else may be a slice we cannot read
    odd = [p for p in scan.non_dicom if p.suffix.lower() not in COMPANION_SUFFIXES]
    if odd:
        warnings.append(f"ignored {len(odd)} non-DICOM file(s) (e.g. {odd[0].name})")

    headers = scan.series[chosen.uid]
    scouts = [h for h in headers if _scout_reason(h.ds)]
    if scouts:
        warnings.append(f"skipped {len(scouts)} scout/localizer image(s) of the series (e.g. {scouts[0].path.name}: "
                        f"{_scout_reason(scouts[0].ds)})")
        headers = [h for h in headers if not _scout_reason(h.ds)]

    slices = _read_slices(headers, warnings)
    if not slices:
        raise InputError(f"No readable slice in {chosen.label()} in {folder}.",
                         "The files are damaged; copy the series again from the scanner or PACS.")
    slices = _keep_majority(slices, lambda s: s.pixels.shape, "image size", warnings)
    slices = _keep_majority(
        slices, lambda s: tuple(np.round(np.concatenate(_cosines(s.ds)), 3)) if _cosines(s.ds) else None,
        "orientation", warnings)
    slices = _dedupe_uids(slices, warnings)

    first = slices[0].ds
    ps = first.get("PixelSpacing") or first.get("ImagerPixelSpacing")
    if ps is not None and len(ps) == 2:
        dy, dx = float(ps[0]), float(ps[1])      # PixelSpacing = [row spacing (dy), column spacing (dx)]
    else:
        dy = dx = 1.0
        warnings.append("no PixelSpacing in the files; 1 mm pixels assumed, so sizes in mm are unknown")

    cos = _cosines(first)
    have_pos = cos is not None and all(len(s.ds.get("ImagePositionPatient") or []) == 3 for s in slices)
    if have_pos:
        row, col = cos
        normal = np.cross(row, col)
        ipp = np.array([[float(v) for v in s.ds.ImagePositionPatient] for s in slices])
        pos = ipp @ normal
        order = np.argsort(pos, kind="stable")
        slices, ipp, pos = [slices[i] for i in order], ipp[order], pos[order]
        slices, ipp, pos = _drop_duplicate_positions(slices, ipp, pos, warnings)
        if len(slices) > 1:
            dz = _spacing_warnings(pos, warnings)
            _tilt_warning(first, ipp, normal, warnings)
        else:
            dz = _float(first.get("SpacingBetweenSlices")) or _float(first.get("SliceThickness")) or 1.0
        origin = ipp[0]
    else:
        warnings.append("no ImagePositionPatient/ImageOrientationPatient: slices ordered by InstanceNumber, "
                        "axial orientation and slice thickness assumed")
        slices.sort(key=lambda s: int(s.ds.get("InstanceNumber", 0) or 0))
        row, col, normal = np.eye(3)
        dz = _float(first.get("SpacingBetweenSlices")) or _float(first.get("SliceThickness")) or 1.0
        origin = np.zeros(3)

    direction = np.stack([row, col, normal], axis=1)   # columns: x, y, z axes
    volume = np.stack([s.pixels for s in slices]).astype(np.float32, copy=False)
    slice_ids = [str(s.ds.get("SOPInstanceUID", "") or s.path.name) for s in slices]
    meta = _meta(first, chosen)
    meta["non_dicom_files"] = len(scan.non_dicom)
    if have_pos:      # each slice's own position (a tilted stack is not on the regular grid); a tuple stays out of info
        meta["slice_positions"] = tuple(tuple(float(v) for v in p) for p in ipp)
    for w in warnings:      # shown by the caller from Study.warnings; a second copy on stderr only confused
        log.debug("%s: %s", folder, w)
    return Study(array=volume, spacing=(dx, dy, float(dz)), origin=tuple(origin),
                 direction=tuple(direction.reshape(-1)), slice_ids=slice_ids, is_hu=True, source=str(folder),
                 kind="dicom", warnings=warnings, meta=meta)


def _dedupe_uids(slices: list[_Slice], warnings: list[str]) -> list[_Slice]:
    seen: dict[str, Path] = {}
    kept = []
    for s in slices:
        uid = str(s.ds.get("SOPInstanceUID", "") or "")
        if uid and uid in seen:
            warnings.append(f"skipped {s.path.name}: a copy of {seen[uid].name} (same SOPInstanceUID)")
            continue
        seen[uid] = s.path
        kept.append(s)
    return kept


def _drop_duplicate_positions(slices, ipp, pos, warnings):
    keep = [0]
    for i in range(1, len(slices)):
        if abs(pos[i] - pos[keep[-1]]) < 1e-3:
            warnings.append(f"skipped {slices[i].path.name}: same position as {slices[keep[-1]].path.name} "
                            "(a second acquisition or phase in the same series?)")
        else:
            keep.append(i)
    return [slices[i] for i in keep], ipp[keep], pos[keep]


def _tilt_warning(first: Dataset, ipp: np.ndarray, normal: np.ndarray, warnings: list[str]) -> None:
    stack = ipp[-1] - ipp[0]
    length = float(np.linalg.norm(stack))
    angle = float(np.degrees(np.arccos(np.clip(abs(stack @ normal) / length, 0.0, 1.0)))) if length else 0.0
    tilt = _float(first.get("GantryDetectorTilt")) or 0.0
    if abs(tilt) > 0.01 or angle > TILT_MAX_DEGREES:
        shear = float(np.linalg.norm(stack - (stack @ normal) * normal))
        warnings.append(f"gantry tilt (GantryDetectorTilt {tilt:g} deg, slices stacked {angle:.1f} deg off their "
                        f"normal): slice planes are placed right but shifted up to {shear:.1f} mm in-plane "
                        "relative to each other; 3D measurements across slices are approximate")

