"""Inputs that used to give a silent wrong answer, or a misleading message (issue 15, items 3, 4, 5, 11)."""
from __future__ import annotations

import builtins

import numpy as np
import pytest
import SimpleITK as sitk

from covidseg_core.data import load_slice_set
from covidseg_core.errors import InputError, LabelError
from covidseg_core.io import dicom
from covidseg_core.io.images import read_labels_csv
from covidseg_core.io.nifti import read_nifti
from synthetic_dicom import write_synthetic_series


# --- item 3: conflicting rows in labels.csv --------------------------------------------------------------

def test_conflicting_duplicate_rows_are_refused_naming_the_rows(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("file,label\na.png,infected\nb.png,clean\n\na.png,clean\nb.png,clean\n")
    with pytest.raises(LabelError) as err:
        read_labels_csv(csv)
    assert "a.png (line 2: infected, line 5: clean)" in str(err.value) and "b.png" not in str(err.value)


def test_identical_duplicate_rows_are_harmless(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("file,label\na.png,infected\na.png,Infected\n")
    assert read_labels_csv(csv)["a.png"]["label"] == "infected"


def test_cells_past_the_header_are_ignored_not_a_crash(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("file,label\na.png,infected,extra,cells\n")
    assert read_labels_csv(csv)["a.png"]["label"] == "infected"


# --- item 11: a header-only labels.csv --------------------------------------------------------------------

def test_a_header_only_labels_csv_is_named_as_empty(small_demo, tmp_path):
    import shutil

    shutil.copytree(small_demo / "images", tmp_path / "data" / "images")
    (tmp_path / "data" / "labels.csv").write_text("file,label\n")
    with pytest.raises(LabelError) as err:
        load_slice_set(tmp_path / "data")
    assert "labels no slice" in str(err.value) and "Add a labels.csv" not in str(err.value)


# --- item 4: NaN / Inf voxels -----------------------------------------------------------------------------

def _volume(path, array):
    sitk.WriteImage(sitk.GetImageFromArray(array.astype(np.float32)), str(path))
    return path


@pytest.mark.parametrize("name", ["v.nii.gz", "v.nii", "v.mha"])
def test_nan_and_inf_voxels_are_named_and_treated_as_outside_the_body(tmp_path, name):
    array = np.full((6, 8, 8), 40.0, np.float32)
    array[:, 0, 0] = -1000.0
    array[2, 3:5, 3:5] = np.nan
    array[3, 1, 1] = np.inf
    array[5, 2, 2] = -np.inf
    study = read_nifti(_volume(tmp_path / name, array))
    assert np.isfinite(study.array).all()
    assert study.array[2, 3, 3] == -1000.0 and study.array[3, 1, 1] == -1000.0
    text = " ".join(study.warnings)
    assert "6 voxel(s) are NaN or infinite (slice(s) 2-3, 5)" in text and "outside the body" in text


@pytest.mark.parametrize("name", ["v.nii.gz", "v.mha"])
def test_an_all_nan_volume_is_refused(tmp_path, name):
    path = _volume(tmp_path / name, np.full((3, 4, 4), np.nan))
    with pytest.raises(InputError, match="every value is NaN"):
        read_nifti(path)


# --- item 5: an unreadable DICOM file ---------------------------------------------------------------------

def test_an_unreadable_dicom_file_is_named_with_why_and_the_gap_it_leaves(tmp_path, monkeypatch):
    paths = write_synthetic_series(tmp_path / "series", 6, series_uid="1.2.3", step=2.0, shuffle_names=False)
    locked = paths[3]
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):   # root reads any file: deny one the way chmod 000 would
        if str(file) == str(locked):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)
    monkeypatch.setattr(builtins, "open", guarded_open)
    study = dicom.read_dicom_series(tmp_path / "series")
    text = " | ".join(study.warnings)
    assert study.n_slices == 5
    assert f"could not read {locked} (Permission denied)" in text and "non-DICOM" not in text
    assert "4.0 mm between slices 2 and 3 (at 4.0 to 8.0 mm, about 1 missing)" in text
