"""DICOM Segmentation objects (highdicom) <-> masks of a study read from a DICOM series.

Writing: one binary SEG per study, one segment (COVID-19 infection, SNOMED CT coded), a frame for each slice that
holds infection, each frame referencing its source image (SOP Instance UID) and placed at that image's position.
Patient and study attributes are copied from the source images by highdicom; Series and SOP Instance UIDs are new.

Reading: a SEG (ours or edited in another tool: 3D Slicer, OHIF, MONAI Label) back to a (z, y, x) 0/1 mask of the
study it references, matched by UIDs, never by file names or positions alone.
"""
from __future__ import annotations

import copy
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..atomic import atomic_write
from ..errors import InputError
from ..study import Study
from . import dicom

log = logging.getLogger(__name__)

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
ALGORITHM_NAME = "CovidSeg Assist"
SEGMENT_LABEL = "COVID-19 infection"
SERIES_NUMBER = 901                # a derived series number well away from the scanner's own
# SNOMED CT: the finding is a morphologically altered structure of the lung, of type COVID-19 (840539006,
# "Disease caused by severe acute respiratory syndrome coronavirus 2", preferred term COVID-19).
CATEGORY = ("49755003", "SCT", "Morphologically Altered Structure")
PROPERTY_TYPE = ("840539006", "SCT", "COVID-19")
ANATOMY = ("39607008", "SCT", "Lung")
POSITION_TOL_MM = 0.01
# what a SEG references its source by (type 1: a SEG cannot be made without them)
REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "FrameOfReferenceUID")
# patient and study attributes highdicom copies (type 2: present, possibly empty)
TYPE2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                "ReferringPhysicianName", "StudyID", "AccessionNumber")


def _code(triple):
    import highdicom as hd

    value, scheme, meaning = triple
    return hd.sr.CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def series_description(run_id: str | None) -> str:
    """The SEG's SeriesDescription (LO: 64 characters at most): what it is and which run made it."""
    text = f"CovidSeg COVID-19 infection {run_id or 'corrections only'}"
    return text[:64]


def _source_headers(study: Study) -> list:
    """The header of each slice's source image, in the study's slice order, with the patient and study
    attributes a SEG must carry present (empty when the source lacks them, as de-identified files often do)."""
    if study.kind != "dicom":
        what = {"nifti": "a NIfTI volume", "images": "an image folder"}.get(study.kind, "not DICOM")
        raise InputError(f"A DICOM SEG needs a study read from DICOM files; {study.source} is {what}.",
                         "Export it as NIfTI (--format nifti), or add the study's DICOM series to the project.")
    scan = dicom.scan_folder(study.source)
    series_uid = study.meta.get("series_uid") or ""
    headers = scan.series.get(series_uid, [])
    by_uid = {str(h.ds.get("SOPInstanceUID", "") or ""): h.ds for h in headers}
    first = headers[0].ds if headers else None
    blank = [k for k in REQUIRED_UIDS if first is None or not str(first.get(k, "") or "")]
    if blank:
        raise InputError(f"The DICOM files of {study.source} have no {', '.join(blank)} (blanked by an anonymiser?): "
                         "a DICOM SEG references its images by these UIDs.",
                         "Export it as NIfTI (--format nifti), or export the series again with its UIDs.")
    missing = [uid for uid in study.slice_ids if uid not in by_uid]
    if missing:
        raise InputError(f"{len(missing)} slice(s) of {study.source} have no SOPInstanceUID to reference "
                         f"(e.g. {missing[0]}).", "Export it as NIfTI instead (--format nifti).")
    sources = []
    for uid in study.slice_ids:
        ds = copy.deepcopy(by_uid[uid])
        for keyword in TYPE2_COPIED:
            if keyword not in ds:
                setattr(ds, keyword, "")
        sources.append(ds)
    return sources


def build_seg(study: Study, mask: np.ndarray, *, run_id: str | None, semiautomatic: bool,
              settings: dict | None = None):
    """The highdicom Segmentation of `mask` (z, y, x; nonzero = infection) over the study's source images."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    mask = np.asarray(mask) > 0
    if mask.shape != study.shape:
        raise InputError(f"Mask of the wrong size: {mask.shape} for a study of {study.shape} (z, y, x).",
                         "Use a mask made for this study.")
    sources = _source_headers(study)
    parameters = {"run": run_id or "none"}
    parameters.update({str(k): str(v) for k, v in (settings or {}).items() if v is not None})
    algorithm = hd.AlgorithmIdentificationSequence(
        name=ALGORITHM_NAME, family=codes.cid7162.ArtificialIntelligence, version=__version__,
        parameters=parameters)
    kind = hd.seg.SegmentAlgorithmTypeValues
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label=SEGMENT_LABEL,
        segmented_property_category=_code(CATEGORY), segmented_property_type=_code(PROPERTY_TYPE),
        algorithm_type=kind.SEMIAUTOMATIC if semiautomatic else kind.AUTOMATIC,
        algorithm_identification=algorithm, anatomic_regions=[_code(ANATOMY)])
    with warnings.catch_warnings():
        # source headers often hold one-component person names; highdicom warns, the copy is still exact
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name.*")
        warnings.filterwarnings("ignore", message=".*omitting all frames is not possible.*")
        try:
            return _segmentation(hd, sources, mask, segment, run_id)
        except (ValueError, TypeError, AttributeError) as exc:     # a source header a SEG cannot reference
            raise InputError(f"The DICOM series in {study.source} cannot carry a DICOM SEG: {exc}",
                             "Export it as NIfTI instead (--format nifti).") from exc


def _segmentation(hd, sources, mask, segment, run_id):
    return hd.seg.Segmentation(
        source_images=sources, pixel_array=mask.astype(np.uint8), segmentation_type="BINARY",
        segment_descriptions=[segment], series_instance_uid=hd.UID(), series_number=SERIES_NUMBER,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=ALGORITHM_NAME,
        manufacturer_model_name=ALGORITHM_NAME, software_versions=__version__, device_serial_number="0",
        series_description=series_description(run_id), content_label="INFECTION",
        content_description="COVID-19 lung infection (research tool, not for diagnosis)",
        content_creator_name="CovidSeg^Assist", omit_empty_frames=True,
        # an empty SpecificCharacterSet in the source means the default repertoire: say nothing
        specific_character_set=str(sources[0].get("SpecificCharacterSet") or "") or None)


def write_seg(study: Study, mask: np.ndarray, out: str | Path, **kw) -> dict:
    """Build the SEG and write it atomically at `out`; a summary of what it holds."""
    seg = build_seg(study, mask, **kw)
    atomic_write(out, lambda tmp: seg.save_as(tmp, enforce_file_format=True))
    infected = int(np.count_nonzero(np.asarray(mask).reshape(study.n_slices, -1).any(1)))
    return {"sop_instance_uid": str(seg.SOPInstanceUID), "series_instance_uid": str(seg.SeriesInstanceUID),
            "referenced_series_uid": study.meta.get("series_uid"), "frames": int(seg.NumberOfFrames),
            "slices_with_infection": infected, "algorithm_type": "SEMIAUTOMATIC" if kw.get("semiautomatic")
            else "AUTOMATIC", "series_description": str(seg.SeriesDescription)}


# --- reading ------------------------------------------------------------------------------------------------

@dataclass
class SegMask:
    """What a SEG file says, independent of any study: its frames keyed by the source image they derive from."""
    path: str
    series_uid: str                          # the SEG's own series
    referenced_series_uids: list[str]
    study_uid: str
    segments: list[dict]                     # number, label, property type, algorithm type
    frames: dict[str, np.ndarray] = field(default_factory=dict)    # source SOP Instance UID -> 0/1 (rows, cols)
    positions: dict[str, tuple[float, ...]] = field(default_factory=dict)   # source UID -> frame position

    def describe(self) -> dict:
        return {"kind": "dicom-seg", "source": self.path, "series_uid": self.series_uid,
                "referenced_series_uids": self.referenced_series_uids, "study_uid": self.study_uid,
                "segments": self.segments, "frames": len(self.frames),
                "infected_pixels": int(sum(int(f.sum()) for f in self.frames.values()))}


def is_seg_file(path: str | Path) -> bool:
    """Whether `path` is a DICOM file whose SOP class is Segmentation Storage (reads the header only)."""
    import pydicom

    path = Path(path)
    if not path.is_file() or not dicom.sniff_dicom(path):
        return False
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True,
                             specific_tags=["SOPClassUID"])
    except dicom.READ_ERRORS:
        return False
    return str(ds.get("SOPClassUID", "")) == SEG_SOP_CLASS


def read_seg(path: str | Path) -> SegMask:
    """A DICOM SEG file -> SegMask (the union of its segments, or the infection segment when labelled so).
    InputError for a file that is not a SEG, or one whose frames do not say which image they derive from."""
    import highdicom as hd
    import pydicom

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist or is not a file.", "Choose a DICOM SEG file (.dcm).")
    if not dicom.sniff_dicom(path):
        raise InputError(f"{path} is not a DICOM file.", "Choose a DICOM Segmentation (SEG) file.")
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except dicom.READ_ERRORS as exc:
        raise InputError(f"Cannot read the DICOM file {path}: {exc}.", "Choose a DICOM SEG file.") from exc
    sop = str(header.get("SOPClassUID", ""))
    if sop != SEG_SOP_CLASS:
        name = getattr(header.get("SOPClassUID"), "name", "") or sop or "no SOP class"
        raise InputError(f"{path} is a DICOM {name} object, not a Segmentation (SEG).",
                         "Choose a DICOM SEG file, e.g. one exported by CovidSeg, 3D Slicer or OHIF.")
    try:
        seg = hd.seg.segread(path)
    except Exception as exc:      # highdicom raises many kinds on a malformed SEG
        raise InputError(f"Cannot read the DICOM SEG {path}: {exc}.", "The file is damaged or not a valid SEG.") \
            from exc
    numbers = list(seg.segment_numbers)
    segments = []
    for n in numbers:
        d = seg.get_segment_description(n)
        segments.append({"number": int(n), "label": str(d.SegmentLabel),
                         "property_type": str(d.SegmentedPropertyTypeCodeSequence[0].CodeMeaning),
                         "algorithm_type": str(d.SegmentAlgorithmType)})
    wanted = [s["number"] for s in segments if s["label"] == SEGMENT_LABEL] or numbers
    refs = [str(s.SeriesInstanceUID) for s in seg.get("ReferencedSeriesSequence", [])]
    frames: dict[str, np.ndarray] = {}
    positions: dict[str, tuple[float, ...]] = {}
    pixels = seg.pixel_array
    if pixels.ndim == 2:
        pixels = pixels[None]
    pffg = seg.PerFrameFunctionalGroupsSequence
    for i, item in enumerate(pffg):
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber) \
            if "SegmentIdentificationSequence" in item else numbers[0]
        if number not in wanted:
            continue
        try:
            uid = str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        except (AttributeError, IndexError) as exc:
            raise InputError(f"Frame {i + 1} of the SEG {path} does not say which image it derives from.",
                             "Only SEGs that reference their source images can be matched to a study.") from exc
        frame = (np.asarray(pixels[i]) > 0).astype(np.uint8)
        frames[uid] = frames[uid] | frame if uid in frames else frame
        if "PlanePositionSequence" in item:
            positions[uid] = tuple(float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient)
    return SegMask(path=str(path), series_uid=str(seg.SeriesInstanceUID), referenced_series_uids=refs,
                   study_uid=str(seg.get("StudyInstanceUID", "")), segments=segments, frames=frames,
                   positions=positions)


def mask_for_study(seg: SegMask, study: Study) -> np.ndarray:
    """The SEG's mask in the study's grid (z, y, x uint8 0/1), matched by SOP Instance UID; InputError when the
    SEG references another series or images the study does not have, or a frame lies elsewhere than its image."""
    series_uid = study.meta.get("series_uid")
    if study.kind != "dicom" or series_uid not in seg.referenced_series_uids:
        refs = ", ".join(seg.referenced_series_uids) or "no series"
        raise InputError(f"The SEG {seg.path} references {refs}, not the series of {study.source} "
                         f"({series_uid or 'not DICOM'}).", "Open the study the SEG was made for.")
    index = {uid: z for z, uid in enumerate(study.slice_ids)}
    unknown = [uid for uid in seg.frames if uid not in index]
    if unknown:
        raise InputError(f"The SEG {seg.path} has frames of {len(unknown)} image(s) that the study "
                         f"{study.source} does not have (e.g. {unknown[0]}).",
                         "Open the whole series the SEG was made for.")
    mask = np.zeros(study.shape, np.uint8)
    for uid, frame in seg.frames.items():
        z = index[uid]
        if frame.shape != study.shape[1:]:
            raise InputError(f"The SEG frame of image {uid} is {frame.shape[1]}x{frame.shape[0]}, the slice "
                             f"{study.shape[2]}x{study.shape[1]}.", "The SEG was made for another image grid.")
        pos = seg.positions.get(uid)
        if pos is not None:
            expected = study_slice_position(study, z)
            if np.max(np.abs(np.asarray(pos) - expected)) > POSITION_TOL_MM:
                raise InputError(f"The SEG frame of image {uid} lies at {tuple(round(v, 3) for v in pos)} mm, the "
                                 f"image at {tuple(round(float(v), 3) for v in expected)} mm.",
                                 "The SEG's geometry does not match its source: re-export it.")
        mask[z] = frame
    return mask


def study_slice_position(study: Study, z: int) -> np.ndarray:
    """ImagePositionPatient of slice z as the source file states it (the study keeps it per slice for DICOM;
    otherwise the position on the study's regular grid)."""
    positions = study.meta.get("slice_positions")
    if positions and len(positions) == study.n_slices:
        return np.asarray(positions[z], dtype=float)
    return study.index_to_physical(z, 0, 0)
