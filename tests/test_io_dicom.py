"""DICOM folder -> Study: series choice, scout rejection, sorting, HU, geometry against SimpleITK, bad input."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from synthetic_dicom import write_synthetic_dicom, write_synthetic_series
from covidseg_core.errors import InputError
from covidseg_core.io.dicom import list_series, read_dicom_series
from covidseg_core.io.loader import describe, open_study

SERIES_A = "1.2.826.0.1.3680043.8.498.100"
SERIES_B = "1.2.826.0.1.3680043.8.498.200"


def sitk_read_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def assert_same_as_sitk(study, folder: Path) -> None:
    ref = sitk_read_series(folder)
    np.testing.assert_allclose(study.spacing, ref.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(study.origin, ref.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(study.direction, ref.GetDirection(), atol=1e-5)
    np.testing.assert_array_equal(study.array, sitk.GetArrayFromImage(ref).astype(np.float32))


# --- real series ---------------------------------------------------------------------------------------------

def test_totalseg_jpeg2000_series(shared_data):
    folder = shared_data / "ct-samples/totalseg_ct/dicom_series"
    study = read_dicom_series(folder)
    assert study.kind == "dicom" and study.is_hu
    assert study.shape == (20, 512, 512)
    assert study.array.dtype == np.float32
    assert study.array.min() == pytest.approx(-1024) and study.array.max() == pytest.approx(1839)
    np.testing.assert_allclose(study.spacing, (0.9765625, 0.9765625, 2.0), atol=1e-6)
    np.testing.assert_allclose(study.direction, np.eye(3).ravel(), atol=1e-6)
    assert study.origin[2] == pytest.approx(-804.5)       # lowest slice first, whatever the file order
    assert study.slice_ids[0].endswith("16592") and study.slice_ids[-1].endswith("16573")
    assert study.meta["transfer_syntax"] == "1.2.840.10008.1.2.4.90"
    assert_same_as_sitk(study, folder)


def test_ct3slice_uses_positions_not_thickness(shared_data):
    folder = shared_data / "ct-samples/dicom_dcmqi_ct3slice"
    study = read_dicom_series(folder)
    assert study.n_slices == 3
    assert study.spacing[2] == pytest.approx(1.0, abs=1e-6)        # IPP step, not SliceThickness 1.25
    np.testing.assert_allclose(study.spacing[:2], (0.810547, 0.810547), atol=1e-6)
    assert study.array.min() == -3024                               # padding outside the field of view kept
    assert study.meta["modality"] == "CT" and study.meta["manufacturer"] == "GE MEDICAL SYSTEMS"
    assert study.meta["non_dicom_files"] == 1                         # MANIFEST.md is ignored, and counted
    assert_same_as_sitk(study, folder)


def test_tiny16_gap_is_reported(shared_data):
    study = read_dicom_series(shared_data / "ct-samples/dicom_pydicom_tiny16/77654033/CT2")
    assert study.n_slices == 4
    gap = [w for w in study.warnings if "gap" in w]
    assert gap and "202.5 mm" in gap[0]
    assert study.spacing[2] == pytest.approx(1.25, abs=1e-3)


def test_tiny16_scouts_rejected_and_axial_series_sorted(shared_data):
    folder = shared_data / "ct-samples/dicom_pydicom_tiny16/98892001"
    infos = {s.description: s for s in list_series(folder)}
    assert infos["Scout"].is_localizer and not infos["Scout"].axial
    assert not infos["SmartScore - Gated 0.5 sec"].is_localizer and infos["SmartScore - Gated 0.5 sec"].axial
    study = read_dicom_series(folder)
    assert study.meta["series_description"] == "SmartScore - Gated 0.5 sec"
    assert study.n_slices == 5
    assert any("holds 2 series" in w and "--series" in w for w in study.warnings)
    # files are named in descending z; the volume must ascend along the normal (0, 0, 1)
    assert study.origin[2] == pytest.approx(-1.2375, abs=1e-4)
    assert study.spacing[2] == pytest.approx(2.5, abs=1e-4)
    assert_same_as_sitk(study, folder / "CT5N")
    with pytest.raises(InputError, match="scout/localizer"):
        read_dicom_series(folder / "CT2N")


def test_gantry_tilt_and_uneven_spacing_warned(shared_data):
    study = read_dicom_series(shared_data / "ct-samples/dicom_dcm_qa_ct_ge_tilt")
    assert study.n_slices == 28
    text = " | ".join(study.warnings)
    assert "gantry tilt" in text and "18.5" in text
    assert "uneven slice spacing" in text
    normal = study.direction_matrix()[:, 2]
    np.testing.assert_allclose(normal, (0.0, 0.3173047, 0.9483237), atol=1e-5)


def test_describe_lists_series(shared_data):
    info = describe(shared_data / "ct-samples/dicom_pydicom_tiny16/98892001")
    assert info["slices"] == 5 and info["values"] == "HU"
    assert {s["description"] for s in info["series"]} == {"Scout", "SmartScore - Gated 0.5 sec"}


def test_truncated_file_is_skipped_with_a_warning(shared_data, tmp_path):
    folder = tmp_path / "ct3"
    shutil.copytree(shared_data / "ct-samples/dicom_dcmqi_ct3slice", folder)
    broken = folder / "02.dcm"
    broken.chmod(0o644)
    broken.write_bytes(broken.read_bytes()[:300_000])
    study = read_dicom_series(folder)
    assert study.n_slices == 2
    assert any("02.dcm" in w for w in study.warnings)
    assert study.spacing[2] == pytest.approx(2.0, abs=1e-6)


# --- synthetic series ----------------------------------------------------------------------------------------

def test_sorted_by_position_and_rescaled(tmp_path):
    write_synthetic_series(tmp_path, 6, series_uid=SERIES_A, step=2.5, z0=-10.0, slope=2.0, intercept=-1000.0,
                           pixel_spacing=(0.7, 0.6))
    study = read_dicom_series(tmp_path)
    # slice k holds stored 1024 + 10k -> HU = 2*(1024+10k) - 1000; files were written in reverse order
    expected = np.array([2 * (1024 + 10 * k) - 1000 for k in range(6)], dtype=np.float32)
    np.testing.assert_array_equal(study.array[:, 3, 3], expected)
    assert study.array[0, 0, 0] == expected[0] + 2               # row 0 / column 0 marker not flipped
    assert study.spacing == pytest.approx((0.6, 0.7, 2.5))      # PixelSpacing is [dy, dx]
    assert study.origin == pytest.approx((-5.0, -7.0, -10.0))
    assert study.warnings == []
    assert_same_as_sitk(study, tmp_path)


def test_uint16_is_cast_before_a_negative_intercept(tmp_path):
    px = np.zeros((4, 4), dtype=np.uint16)                       # stored 0 -> -1024 HU, not 64512
    for k in range(2):
        write_synthetic_dicom(tmp_path / f"{k}.dcm", px, series_uid=SERIES_A, position=(0, 0, k))
    assert read_dicom_series(tmp_path).array.max() == -1024


def test_two_series_pick_the_larger_or_by_uid(tmp_path):
    write_synthetic_series(tmp_path / "a", 3, series_uid=SERIES_A, description="small")
    write_synthetic_series(tmp_path / "b", 5, series_uid=SERIES_B, description="large")
    study = read_dicom_series(tmp_path)
    assert study.meta["series_uid"] == SERIES_B and study.n_slices == 5
    assert any("holds 2 series" in w and SERIES_A in w for w in study.warnings)
    other = read_dicom_series(tmp_path, series_uid=SERIES_A)
    assert other.n_slices == 3 and other.meta["series_description"] == "small"
    with pytest.raises(InputError, match="No series 9.9.9"):
        read_dicom_series(tmp_path, series_uid="9.9.9")


def test_only_scouts_is_an_error(tmp_path):
    px = np.zeros((6, 6), dtype=np.uint16)
    write_synthetic_dicom(tmp_path / "s1.dcm", px, series_uid=SERIES_A, orientation=(0, 1, 0, 0, 0, -1),
                          image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), slice_thickness=600.0)
    write_synthetic_dicom(tmp_path / "s2.dcm", px, series_uid=SERIES_A, orientation=(1, 0, 0, 0, 0, -1),
                          instance=2, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), slice_thickness=600.0)
    with pytest.raises(InputError, match="only scout/localizer") as err:
        read_dicom_series(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_non_axial_pair_without_localizer_tag_is_a_scout(tmp_path):
    px = np.zeros((6, 6), dtype=np.uint16)
    write_synthetic_dicom(tmp_path / "s1.dcm", px, series_uid=SERIES_A, orientation=(0, 1, 0, 0, 0, -1),
                          image_type=("ORIGINAL", "PRIMARY"))
    write_synthetic_series(tmp_path, 3, series_uid=SERIES_B)
    infos = {s.uid: s for s in list_series(tmp_path)}
    assert infos[SERIES_A].is_localizer and infos[SERIES_A].orientation == "sagittal"
    assert read_dicom_series(tmp_path).meta["series_uid"] == SERIES_B


def test_scout_image_inside_an_axial_series_is_dropped(tmp_path):
    write_synthetic_series(tmp_path, 4, series_uid=SERIES_A)
    write_synthetic_dicom(tmp_path / "zz_scout.dcm", np.zeros((8, 10), np.uint16), series_uid=SERIES_A,
                          image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), position=(0, 0, 300))
    study = read_dicom_series(tmp_path)
    assert study.n_slices == 4
    assert any("scout" in w and "zz_scout.dcm" in w for w in study.warnings)


def test_mr_series_is_rejected(tmp_path):
    write_synthetic_series(tmp_path, 3, series_uid=SERIES_A, modality="MR", description="T1 axial")
    with pytest.raises(InputError, match=r"MR series 'T1 axial'.*not CT") as err:
        read_dicom_series(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_empty_folder(tmp_path):
    with pytest.raises(InputError) as err:
        open_study(tmp_path)
    assert str(tmp_path) in str(err.value) and "empty" in str(err.value)


def test_folder_of_text_files(tmp_path):
    (tmp_path / "notes.txt").write_text("not a scan")
    (tmp_path / "readme.md").write_text("# hello")
    with pytest.raises(InputError) as err:
        open_study(tmp_path)
    msg = str(err.value)
    assert str(tmp_path) in msg and "DICOM" in msg and "NIfTI" in msg
    with pytest.raises(InputError, match="No DICOM images"):
        read_dicom_series(tmp_path)


def test_missing_path(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        open_study(tmp_path / "nowhere")


def test_single_dicom_file_opens_its_series(tmp_path):
    paths = write_synthetic_series(tmp_path, 4, series_uid=SERIES_A)
    write_synthetic_series(tmp_path / "other", 6, series_uid=SERIES_B)
    study = open_study(paths[1])
    assert study.meta["series_uid"] == SERIES_A and study.n_slices == 4


def test_non_dicom_file_among_slices_is_ignored_and_counted(tmp_path):
    write_synthetic_series(tmp_path, 3, series_uid=SERIES_A)
    (tmp_path / "notes.txt").write_text("index")
    (tmp_path / "preview.bin").write_bytes(b"\x89PNG....")
    study = open_study(tmp_path)
    assert study.n_slices == 3 and study.meta["non_dicom_files"] == 2
    assert any("ignored 1 non-DICOM file" in w and "preview.bin" in w for w in study.warnings)


def test_volume_labels_csv_by_index(tmp_path):
    write_synthetic_series(tmp_path / "ct", 3, series_uid=SERIES_A)
    csv = tmp_path / "labels.csv"
    csv.write_text("file,label\n0,clean\n2,infected\n")
    study = open_study(tmp_path / "ct", labels_csv=csv)
    assert study.meta["labels"]["2"]["label"] == "infected"
    csv.write_text("file,label\n7,clean\n")
    with pytest.raises(InputError, match="not in"):
        open_study(tmp_path / "ct", labels_csv=csv)


def test_labels_csv_inside_dicom_folder_is_found(tmp_path):
    write_synthetic_series(tmp_path, 3, series_uid=SERIES_A)
    (tmp_path / "labels.csv").write_text("file,label\n1,infected\n")
    study = open_study(tmp_path)
    assert study.meta["labels"]["1"]["label"] == "infected"
    assert not any("non-DICOM" in w for w in study.warnings)


def test_synthetic_tilt_gap_and_uneven_steps_are_warned(tmp_path):
    c, s = np.cos(np.radians(15)), np.sin(np.radians(15))
    write_synthetic_series(tmp_path / "tilt", 4, series_uid=SERIES_A, orientation=(1, 0, 0, 0, c, -s))
    tilted = read_dicom_series(tmp_path / "tilt")
    assert any("gantry tilt" in w and "15.0 deg" in w for w in tilted.warnings)
    np.testing.assert_allclose(tilted.direction_matrix()[:, 2], (0, s, c), atol=1e-6)
    assert tilted.spacing[2] == pytest.approx(2.5 * c, abs=1e-4)    # distance between the slice planes

    px = np.zeros((4, 4), np.uint16)
    for i, z in enumerate([0.0, 2.0, 4.0, 6.5, 8.5, 40.0]):
        write_synthetic_dicom(tmp_path / "gap" / f"{i}.dcm", px, series_uid=SERIES_B, position=(0, 0, z))
    gappy = read_dicom_series(tmp_path / "gap")
    text = " | ".join(gappy.warnings)
    assert "1 gap(s)" in text and "31.5 mm between slices 4 and 5" in text
    assert "uneven slice spacing" in text
    assert gappy.spacing[2] == pytest.approx(2.0)


def test_an_explicit_series_choice_gets_no_several_series_warning(shared_data):
    from covidseg_core.io.dicom import list_series, read_dicom_series

    folder = shared_data / "ct-samples" / "dicom_pydicom_tiny16" / "98892001"
    default = read_dicom_series(folder)
    assert any("series" in w for w in default.warnings)
    chosen = read_dicom_series(folder, series_uid=[s for s in list_series(folder) if not s.is_localizer][0].uid)
    assert not any("holds 2 series" in w for w in chosen.warnings)
