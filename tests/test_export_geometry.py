"""An exported mask must sit exactly on its CT: same grid, and a voxel set at (z, y, x) lands at the physical point
SimpleITK gives for that index of the source."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from covidseg_core.errors import InputError
from covidseg_core.io.loader import open_study
from covidseg_core.io.nifti import write_mask_nifti

SOURCES = {
    "ct3slice": "ct-samples/dicom_dcmqi_ct3slice",
    "totalseg20": "ct-samples/totalseg_ct/dicom_series",
    "chest_nifti": "ct-samples/totalseg_ct/nifti/chest_cta_aorta_ct_cropped.nii.gz",
    "flipped_nifti": "ct-samples/totalseg_ct/nifti/example_ct_sm.nii.gz",     # direction (-1, -1, 1)
}


def sitk_reference(path) -> sitk.Image:
    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path)))
        return reader.Execute()
    return sitk.ReadImage(str(path))


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_exported_mask_lines_up_with_source(shared_data, tmp_path, name):
    src = shared_data / SOURCES[name]
    study = open_study(src)
    ref = sitk_reference(src)
    nz, ny, nx = study.shape
    z, y, x = nz - 1, ny // 3, (2 * nx) // 3          # asymmetric, so a flipped axis would move it
    mask = np.zeros(study.shape, dtype=np.uint8)
    mask[z, y, x] = 1

    out = write_mask_nifti(mask, study, tmp_path / f"{name}_mask.nii.gz")
    back = sitk.ReadImage(str(out))

    assert back.GetSize() == ref.GetSize()
    np.testing.assert_allclose(back.GetSpacing(), ref.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(back.GetOrigin(), ref.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(back.GetDirection(), ref.GetDirection(), atol=1e-5)

    arr = sitk.GetArrayFromImage(back)
    assert arr.dtype == np.uint8 and int(arr.sum()) == 1 and arr[z, y, x] == 1
    expected = np.array(ref.TransformIndexToPhysicalPoint((x, y, z)))
    np.testing.assert_allclose(back.TransformIndexToPhysicalPoint((x, y, z)), expected, atol=1e-4)
    np.testing.assert_allclose(study.index_to_physical(z, y, x), expected, atol=1e-4)
    # the source voxel at that point is the same one the study holds at (z, y, x)
    assert study.array[z, y, x] == pytest.approx(float(ref[x, y, z]))


def test_wrong_size_mask_is_refused(shared_data, tmp_path):
    study = open_study(shared_data / SOURCES["ct3slice"])
    out = tmp_path / "mask.nii.gz"
    with pytest.raises(InputError, match="mask of the wrong size"):
        write_mask_nifti(np.zeros((2, 512, 512), np.uint8), study, out)
    assert not out.exists()


def test_wrong_size_mask_refused_without_real_data(tmp_path):
    from covidseg_core.study import Study
    study = Study(array=np.zeros((3, 4, 5), np.float32), spacing=(0.5, 0.5, 2.0))
    with pytest.raises(InputError, match="mask of the wrong size"):
        write_mask_nifti(np.zeros((3, 5, 4), np.uint8), study, tmp_path / "m.nii.gz")
    assert list(tmp_path.iterdir()) == []
