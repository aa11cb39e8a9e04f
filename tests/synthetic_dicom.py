"""Small synthetic DICOM files built with pydicom, for loader tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def write_synthetic_dicom(path: Path, pixels: np.ndarray, *, series_uid: str, position=(0.0, 0.0, 0.0),
                          orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0), pixel_spacing=(0.7, 0.6),
                          modality: str = "CT", image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
                          slice_thickness: float = 2.0, instance: int = 1, slope: float = 1.0,
                          intercept: float = -1024.0, description: str = "synthetic",
                          sop_uid: str | None = None, extra: dict | None = None) -> Path:
    """One single-frame DICOM image (uint16 stored values) written with pydicom; `extra` sets more attributes
    by keyword."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop_class = "1.2.840.10008.5.1.4.1.1.2" if modality == "CT" else "1.2.840.10008.5.1.4.1.1.4"
    sop_uid = sop_uid or generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesDescription = description
    ds.ImageType = list(image_type)
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = [float(v) for v in pixel_spacing]
    ds.SliceThickness = slice_thickness
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint16).tobytes()
    for keyword, value in (extra or {}).items():      # e.g. patient and study attributes
        setattr(ds, keyword, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_synthetic_series(folder: Path, n: int, *, series_uid: str, step: float = 2.5, z0: float = 0.0,
                           shape=(8, 10), prefix: str = "im", shuffle_names: bool = True, **kw) -> list[Path]:
    """`n` axial slices, slice k at z0 + k*step holding value 1024 + 10*k (HU = 10*k); file names (and
    InstanceNumbers) deliberately do not follow the positions when `shuffle_names`."""
    paths = []
    order = list(range(n))[::-1] if shuffle_names else list(range(n))
    for name_idx, k in enumerate(order):
        px = np.full(shape, 1024 + 10 * k, dtype=np.uint16)
        px[0, 0] = 1024 + 10 * k + 1          # marks row 0 / column 0 so flips would show
        paths.append(write_synthetic_dicom(folder / f"{prefix}{name_idx:03d}.dcm", px, series_uid=series_uid,
                                           position=(-5.0, -7.0, z0 + k * step), instance=name_idx + 1, **kw))
    return paths
