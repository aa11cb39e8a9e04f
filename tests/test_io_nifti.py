"""NIfTI -> Study: 3D only, HU detection, geometry kept; volume-file dispatch in the loader."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from covidseg_core.errors import InputError
from covidseg_core.io.loader import open_study
from covidseg_core.io.nifti import read_nifti, study_to_sitk, write_mask_nifti


def _write(path, array, spacing=(0.8, 0.9, 2.5), origin=(10.0, -20.0, 30.0), direction=None):
    image = sitk.GetImageFromArray(array)
    if array.ndim == 3:
        image.SetSpacing(spacing)
        image.SetOrigin(origin)
        if direction is not None:
            image.SetDirection(direction)
    sitk.WriteImage(image, str(path))
    return path


def test_ct_volume_geometry_and_hu(tmp_path):
    arr = np.full((4, 5, 6), -1000, dtype=np.int16)
    arr[2, 3, 4] = 40
    flipped = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    path = _write(tmp_path / "ct.nii.gz", arr, direction=flipped)
    study = read_nifti(path)
    assert study.kind == "nifti" and study.is_hu and study.shape == (4, 5, 6)
    assert study.array.dtype == np.float32 and study.array[2, 3, 4] == 40
    assert study.spacing == pytest.approx((0.8, 0.9, 2.5))
    assert study.origin == pytest.approx((10.0, -20.0, 30.0))
    assert study.direction == pytest.approx(flipped)
    assert str(path) == study.source


def test_non_ct_values_are_intensities(tmp_path):
    study = read_nifti(_write(tmp_path / "mr.nii.gz", np.arange(60, dtype=np.uint8).reshape(3, 4, 5)))
    assert not study.is_hu and study.warnings


def test_2d_nifti_is_rejected(tmp_path):
    path = _write(tmp_path / "slice.nii.gz", np.zeros((5, 6), np.int16))
    with pytest.raises(InputError, match="2D image") as err:
        read_nifti(path)
    assert "slice.nii.gz" in str(err.value) and "3D" in str(err.value)


def test_4d_nifti_is_rejected(tmp_path):
    vol = sitk.GetImageFromArray(np.zeros((3, 5, 6), np.int16))
    path = tmp_path / "series4d.nii.gz"
    sitk.WriteImage(sitk.JoinSeries([vol, vol]), str(path))
    with pytest.raises(InputError, match="4D image") as err:
        open_study(path)
    assert "series4d.nii.gz" in str(err.value) and "3D" in str(err.value)


def test_colour_volume_is_rejected(tmp_path):
    path = tmp_path / "rgb.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 5, 6, 3), np.uint8), isVector=True), str(path))
    with pytest.raises(InputError, match="3 values per voxel"):
        read_nifti(path)


def test_garbage_file_with_nifti_name(tmp_path):
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(b"this is not a nifti file at all")
    with pytest.raises(InputError, match="broken.nii.gz"):
        open_study(path)


def test_folder_of_volumes_asks_for_one_file(tmp_path):
    for name in ("a.nii.gz", "b.nii.gz"):
        _write(tmp_path / name, np.zeros((2, 3, 4), np.int16))
    with pytest.raises(InputError, match="volume file"):
        open_study(tmp_path)


def test_other_itk_formats_dispatch(tmp_path):
    arr = np.full((3, 4, 5), -1000, np.int16)
    arr[1] = 50
    for name in ("ct.mha", "ct.nrrd", "ct.nii"):
        study = open_study(_write(tmp_path / name, arr))
        assert study.kind == "nifti" and study.shape == (3, 4, 5) and study.is_hu


def test_series_option_is_refused_for_volumes(tmp_path):
    path = _write(tmp_path / "ct.nii.gz", np.full((2, 3, 4), -1000, np.int16))
    with pytest.raises(InputError, match="--series"):
        open_study(path, series_uid="1.2.3")


def test_real_nifti_matches_sitk(shared_data):
    path = shared_data / "ct-samples/totalseg_ct/nifti/example_ct_sm.nii.gz"
    study = read_nifti(path)
    ref = sitk.ReadImage(str(path))
    assert study.is_hu and study.shape == (30, 101, 122)
    assert study.spacing == pytest.approx(ref.GetSpacing())
    assert study.direction == pytest.approx(ref.GetDirection())     # LPS-flipped x and y
    assert study.direction[0] == -1.0 and study.direction[4] == -1.0
    np.testing.assert_array_equal(study.array, sitk.GetArrayFromImage(ref).astype(np.float32))
    labels = read_nifti(shared_data / "ct-samples/totalseg_ct/nifti/example_seg_dicom_labels.nii.gz")
    assert not labels.is_hu


def test_mask_written_is_uint8_binary_atomic_and_in_place(tmp_path):
    oblique = tuple(sitk.VersorTransform((0.2, 0.3, 0.9), 0.4).GetMatrix())
    study = read_nifti(_write(tmp_path / "ct.nii.gz", np.full((3, 4, 5), -1000, np.int16), direction=oblique))
    mask = np.zeros(study.shape, dtype=np.float32)
    mask[1, 2, 3] = 0.7
    out = write_mask_nifti(mask, study, tmp_path / "out" / "mask.nii.gz")
    back = sitk.ReadImage(str(out))
    assert back.GetPixelID() == sitk.sitkUInt8
    assert back.GetDirection() == pytest.approx(oblique, abs=1e-6)
    assert back.GetOrigin() == pytest.approx(study.origin) and back.GetSpacing() == pytest.approx(study.spacing)
    assert back.TransformIndexToPhysicalPoint((3, 2, 1)) == pytest.approx(tuple(study.index_to_physical(1, 2, 3)))
    arr = sitk.GetArrayFromImage(back)
    assert arr.max() == 1 and arr.sum() == 1 and arr[1, 2, 3] == 1
    assert [p.name for p in out.parent.iterdir()] == ["mask.nii.gz"]     # no temp file left behind
    with open(out, "rb") as fh:
        assert fh.read(2) == b"\x1f\x8b"                                   # gzip, as the name says


def test_mask_needs_a_known_suffix(tmp_path):
    study = read_nifti(_write(tmp_path / "ct.nii.gz", np.full((2, 3, 4), -1000, np.int16)))
    with pytest.raises(InputError, match=r"\.nii\.gz"):
        write_mask_nifti(np.zeros(study.shape), study, tmp_path / "mask.bin")


def test_study_to_sitk_checks_shape(tmp_path):
    study = read_nifti(_write(tmp_path / "ct.nii.gz", np.full((2, 3, 4), -1000, np.int16)))
    assert study_to_sitk(study, np.zeros(study.shape, np.uint8)).GetSize() == (4, 3, 2)
    with pytest.raises(InputError, match="mask of the wrong size"):
        study_to_sitk(study, np.zeros((2, 4, 3), np.uint8))


def test_labels_beside_a_volume_are_found(tmp_path):
    path = _write(tmp_path / "ct.nii.gz", np.full((3, 4, 5), -1000, np.int16))
    (tmp_path / "ct.labels.csv").write_text("file,label\n0,clean\n2,infected\n")
    study = open_study(path)
    assert study.meta["labels"]["2"]["label"] == "infected"
    (tmp_path / "ct.labels.csv").write_text("file,label\n9,clean\n")     # slice 9 of 3: not used, only warned
    study = open_study(path)
    assert "labels" not in study.meta and any("ct.labels.csv" in w for w in study.warnings)
