"""NIfTI (and other ITK volume files: .mha, .nrrd) <-> Study and masks, through SimpleITK.

Geometry is carried over unchanged (spacing, origin, direction in SimpleITK's LPS convention), so a mask written
here overlays its CT in any viewer.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..atomic import atomic_write
from ..errors import InputError
from ..study import Study
from .nifti_raw import non_finite_mask

log = logging.getLogger(__name__)

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
HU_AIR_BELOW = -500.0       # CT holds air (about -1000 HU) or padding below this; other volumes rarely go negative
HU_TISSUE_ABOVE = -200.0    # ... and tissue above this


def volume_suffix(path: str | Path) -> str:
    """The volume-file suffix of a path ('.nii.gz', '.nii', ...), or '' when it is none of them."""
    name = Path(path).name.lower()
    return next((s for s in VOLUME_SUFFIXES if name.endswith(s)), "")


def looks_like_hu(array: np.ndarray) -> bool:
    """CT in Hounsfield units holds air (about -1000) and tissue (above -200); masks, MR, 8-bit images do not."""
    finite = array[np.isfinite(array)]
    return bool(finite.size) and float(finite.min()) < HU_AIR_BELOW and float(finite.max()) > HU_TISSUE_ABOVE


def read_nifti(path: str | Path) -> Study:
    """Read a 3D volume file as a Study (array (z, y, x) float32, geometry as SimpleITK reads it)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist.", "Check the path of the NIfTI file.")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(f"Cannot read {path} as a volume: {_first_line(exc)}.",
                         "Choose a NIfTI (.nii/.nii.gz), .mha or .nrrd file of a CT scan.") from exc
    dim, size = reader.GetDimension(), reader.GetSize()
    if dim != 3:
        raise InputError(f"{path} is a {dim}D image (size {' x '.join(str(s) for s in size)}); a 3D CT volume "
                         "(x, y, slices) is expected.",
                         "For 2D slices use a folder of PNG images; for a 4D series extract one 3D volume.")
    if reader.GetNumberOfComponents() != 1:
        raise InputError(f"{path} has {reader.GetNumberOfComponents()} values per voxel (colour or vector image); "
                         "a single-channel CT volume is expected.", "Choose the grey-scale CT volume.")
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"Cannot read the voxels of {path}: {_first_line(exc)}.",
                         "The file may be truncated; export it again.") from exc
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    warnings = []
    if "FLOAT" in image.GetPixelIDTypeAsString().upper():
        array = _replace_non_finite(array, path, warnings)
    is_hu = looks_like_hu(array)
    if not is_hu:
        warnings.append("values do not look like CT Hounsfield units (no air below -500); "
                        "they are used as plain intensities")
    meta = {"format": volume_suffix(path) or path.suffix, "pixel_type": image.GetPixelIDTypeAsString()}
    return Study(array=array, spacing=image.GetSpacing(), origin=image.GetOrigin(), direction=image.GetDirection(),
                 is_hu=is_hu, source=str(path), kind="nifti", warnings=warnings, meta=meta)


def _replace_non_finite(array: np.ndarray, path: Path, warnings: list[str]) -> np.ndarray:
    """NaN/Inf voxels (a failed reconstruction or conversion) become the volume's lowest value, i.e. outside
    the body, with a warning naming how many and where; a volume with no finite voxel is refused."""
    bad = ~np.isfinite(array)
    raw = non_finite_mask(path)     # NIfTI: ITK has already turned NaN into 0
    if raw is not None and raw.shape == array.shape:
        bad |= raw
    n_bad = int(bad.sum())
    if not n_bad:
        return array
    if n_bad == array.size:
        raise InputError(f"{path} holds no usable voxel: every value is NaN or infinite.",
                         "The file is damaged or was written wrongly; export the CT volume again.")
    slices = np.nonzero(bad.reshape(len(array), -1).any(axis=1))[0]
    shown = _ranges(slices.tolist())
    array = np.where(bad, np.float32(array[~bad].min()), array)
    warnings.append(f"{n_bad} voxel(s) are NaN or infinite (slice(s) {shown}): treated as outside the body")
    return array


def _ranges(values: list[int], most: int = 5) -> str:
    """[1, 2, 3, 7] -> '1-3, 7' (at most `most` ranges, then ' ...')."""
    runs: list[list[int]] = []
    for v in values:
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    text = ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in runs[:most])
    return text + (" ..." if len(runs) > most else "")


def _first_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # ITK messages start with a source location; the last line says what went wrong
    return lines[-1] if lines else type(exc).__name__


def study_to_sitk(study: Study, array: np.ndarray) -> sitk.Image:
    """An image holding `array` (z, y, x) in the geometry of `study`."""
    array = np.asarray(array)
    if array.shape != study.shape:
        raise InputError(f"mask of the wrong size: {_zyx(array.shape)} for a study of {_zyx(study.shape)} "
                         f"({study.source}).", "Masks must have one value per voxel of the study.")
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(study.spacing)
    image.SetOrigin(study.origin)
    image.SetDirection(study.direction)
    return image


def _zyx(shape) -> str:
    return "x".join(str(int(v)) for v in shape) + " (slices x rows x columns)"


def write_mask_nifti(mask_zyx: np.ndarray, study: Study, path: str | Path) -> Path:
    """Write a 0/1 uint8 mask in the exact geometry of `study`, atomically. The suffix picks the format."""
    return write_volume((np.asarray(mask_zyx) > 0).astype(np.uint8), study, path)


def write_volume(array_zyx: np.ndarray, study: Study, path: str | Path) -> Path:
    """Write an array (a mask, or HU as int16) in the exact geometry of `study`, atomically. The suffix picks
    the format."""
    path = Path(path)
    if not volume_suffix(path):
        raise InputError(f"Cannot tell the file format of {path.name}.",
                         "Name the file .nii.gz (or .nii, .mha, .nrrd).")
    image = study_to_sitk(study, array_zyx)

    def write(tmp: Path) -> None:
        # the temp name ends with the target's name, so SimpleITK picks the same format (and compression)
        sitk.WriteImage(image, str(tmp), useCompression=not path.name.lower().endswith((".nii", ".mhd", ".nhdr")))

    try:
        return atomic_write(path, write)
    except RuntimeError as exc:
        raise InputError(f"Cannot write {path}: {_first_line(exc)}.",
                         "Check that the folder is writable and the disk not full.") from exc
