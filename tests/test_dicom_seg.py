"""DICOM SEG export (highdicom) and reading a SEG back as a mask of the project's study (issue 13).

The core tests run on a small synthetic DICOM series written with pydicom; the real series in
../shared/data/ct-samples (3 slices, 20 JPEG 2000 slices, a tilted gantry) are used when present."""
from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from covidseg_core.cli import main
from covidseg_core.errors import InputError, ProjectError
from covidseg_core.events import Message, drive
from covidseg_core.io.dicom_seg import SEG_SOP_CLASS, read_seg
from covidseg_core.io.loader import open_study
from covidseg_core.project.api import Project
from covidseg_core.results.export import export_project, save_prediction
from covidseg_core.results.seg_import import import_seg, load_seg
from tests.synthetic_dicom import write_synthetic_dicom, write_synthetic_series

PATIENT = {"PatientName": "Doe^Jane", "PatientID": "P-0042", "PatientBirthDate": "19600101", "PatientSex": "F",
           "StudyDate": "20200402", "StudyTime": "101500", "AccessionNumber": "ACC1", "StudyID": "S1",
           "ReferringPhysicianName": "Who^Doctor", "FrameOfReferenceUID": "1.2.826.0.1.3680043.8.498.77.5"}
SERIES_UID = "1.2.826.0.1.3680043.8.498.77.1"


def frame_source_uid(item) -> str:
    return str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)


def make_project(tmp_path, study_path, kind="dicom", series_uid=None):
    project = Project.create(tmp_path / "proj")
    sid = project.add_source(study_path, kind, series_uid=series_uid)
    return project, sid


def add_prediction(project, sid, study, mask, settings=None):
    run = project.new_run_dir()
    save_prediction(run, sid, mask, study)
    project.add_run(run, {"status": "done", "settings": settings or {"fusion": "avg", "size": 64}})
    return run


def lesion_mask(study, slices):
    """Asymmetric blobs on the given slices (so a flipped axis or a swapped frame would show)."""
    mask = np.zeros(study.shape, np.uint8)
    _, ny, nx = study.shape
    for k, z in enumerate(slices):
        mask[z, 1: ny // 2, 2 + k: nx - 3] = 1
        mask[z, ny - 2, nx - 1] = 1
    return mask


@pytest.fixture()
def dicom_series(tmp_path):
    folder = tmp_path / "ct"
    write_synthetic_series(folder, 6, series_uid=SERIES_UID, shape=(12, 16), extra=PATIENT)
    return folder


@pytest.fixture()
def seg_project(tmp_path, dicom_series):
    study = open_study(dicom_series)
    project, sid = make_project(tmp_path, dicom_series)
    mask = lesion_mask(study, [1, 4])
    run = add_prediction(project, sid, study, mask)
    yield project, sid, study, mask, run
    project.close()


def test_seg_export_references_each_source_image_and_copies_patient(seg_project, tmp_path):
    project, sid, study, mask, run = seg_project
    out = tmp_path / "out" / "infection.dcm"
    result = drive(export_project(project, out, fmt="dicom-seg"))
    assert result["format"] == "dicom-seg" and result["seg"]["frames"] == 2
    assert (tmp_path / "out" / "infection.quant.json").is_file()

    ds = pydicom.dcmread(out)
    src = pydicom.dcmread(next(dicom_file for dicom_file in sorted((tmp_path / "ct").iterdir())))
    assert ds.SOPClassUID == SEG_SOP_CLASS and ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                    "AccessionNumber"):
        assert str(ds[keyword].value) == str(src[keyword].value), keyword
    assert ds.SeriesInstanceUID != SERIES_UID and ds.SOPInstanceUID not in study.slice_ids
    assert run.name in ds.SeriesDescription
    # the source series is referenced with every one of its images
    (ref_series,) = ds.ReferencedSeriesSequence
    assert ref_series.SeriesInstanceUID == SERIES_UID
    assert {str(i.ReferencedSOPInstanceUID) for i in ref_series.ReferencedInstanceSequence} == set(study.slice_ids)
    # one segment, coded: COVID-19 (SNOMED CT), automatic (no corrections), our name and version
    (segment,) = ds.SegmentSequence
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "840539006"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
    assert segment.SegmentedPropertyCategoryCodeSequence[0].CodingSchemeDesignator == "SCT"
    assert segment.SegmentAlgorithmType == "AUTOMATIC"
    assert segment.SegmentAlgorithmName == "CovidSeg Assist"
    from covidseg_core import __version__
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmVersion == __version__ and algorithm.AlgorithmName == "CovidSeg Assist"
    # frames only for the infected slices, each over its own source image, at that image's position
    assert ds.NumberOfFrames == 2
    frames = ds.pixel_array.reshape(2, *study.shape[1:])
    for item, frame in zip(ds.PerFrameFunctionalGroupsSequence, frames):
        z = study.slice_ids.index(frame_source_uid(item))
        assert z in (1, 4)
        np.testing.assert_array_equal(frame, mask[z])
        np.testing.assert_allclose([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient],
                                   study.index_to_physical(z, 0, 0), atol=1e-4)


def test_seg_round_trip_equals_the_nifti_export(seg_project, tmp_path):
    project, sid, study, mask, _ = seg_project
    drive(export_project(project, tmp_path / "m.dcm", fmt="dicom-seg"))
    drive(export_project(project, tmp_path / "n.nii.gz"))
    import highdicom as hd

    seg = hd.seg.segread(tmp_path / "m.dcm")      # highdicom parses it back as a valid SEG
    by_uid = seg.get_pixels_by_source_instance(study.slice_ids, segment_numbers=[1],
                                               assert_missing_frames_are_empty=True)[..., 0]
    nifti = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "n.nii.gz")))
    np.testing.assert_array_equal(by_uid, nifti)
    np.testing.assert_array_equal(by_uid, mask)
    source_id, back_study, back, _ = load_seg(project, tmp_path / "m.dcm")
    assert source_id == sid and back_study.slice_ids == study.slice_ids
    np.testing.assert_array_equal(back, mask)


def test_an_imported_seg_becomes_the_mask_that_export_uses(seg_project, tmp_path):
    project, sid, study, mask, _ = seg_project
    drive(export_project(project, tmp_path / "first.dcm", fmt="dicom-seg"))
    ds = pydicom.dcmread(tmp_path / "first.dcm")          # "edited in another tool": the second frame cleared
    frames = ds.pixel_array.reshape(-1, *study.shape[1:]).copy()
    frames[1] = 0
    from pydicom.pixels import pack_bits
    ds.PixelData = pack_bits(frames.ravel())
    ds.save_as(tmp_path / "edited.dcm")
    source_id, back, run = import_seg(project, tmp_path / "edited.dcm")
    expected = mask.copy()
    expected[study.slice_ids.index(frame_source_uid(ds.PerFrameFunctionalGroupsSequence[1]))] = 0
    assert source_id == sid and run.name.startswith("seg-import")
    np.testing.assert_array_equal(back, expected)
    assert project.runs[-1]["summary"]["status"] == "imported"
    drive(export_project(project, tmp_path / "again.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "again.nii.gz"))), expected)


def test_corrections_make_the_segment_semiautomatic(seg_project, tmp_path):
    project, sid, study, mask, _ = seg_project
    corr = np.zeros(study.shape[1:], np.uint8)
    corr[3:6, 3:9] = 255
    project.save_correction(sid, study.slice_ids[2], corr)
    result = drive(export_project(project, tmp_path / "c.dcm", fmt="dicom-seg"))
    assert result["seg"]["algorithm_type"] == "SEMIAUTOMATIC" and result["seg"]["frames"] == 3
    ds = pydicom.dcmread(tmp_path / "c.dcm")
    assert ds.SegmentSequence[0].SegmentAlgorithmType == "SEMIAUTOMATIC"
    _, _, back, _ = load_seg(project, tmp_path / "c.dcm")
    assert back[2].sum() == 18 and back.sum() == mask.sum() + 18


def test_study_not_from_dicom_is_refused_clearly(tmp_path):
    from covidseg_core.demo import write_demo

    write_demo(tmp_path / "demo", n_slices=4, size=32)
    ct = tmp_path / "demo" / "volume" / "ct.nii.gz"
    project, sid = make_project(tmp_path, ct, kind="nifti")
    add_prediction(project, sid, open_study(ct), np.ones(open_study(ct).shape, np.uint8))
    with pytest.raises(InputError, match="DICOM SEG export needs a study opened from DICOM files") as err:
        drive(export_project(project, tmp_path / "m.dcm", fmt="dicom-seg"))
    assert "--format nifti" in err.value.hint
    assert not (tmp_path / "m.dcm").exists()
    project.close()


def test_series_a_seg_cannot_reference_is_refused_clearly(tmp_path):
    folder = tmp_path / "ct"
    write_synthetic_series(folder, 3, series_uid=SERIES_UID, shape=(12, 16))      # no FrameOfReferenceUID
    study = open_study(folder)
    project, sid = make_project(tmp_path, folder)
    add_prediction(project, sid, study, lesion_mask(study, [1]))
    with pytest.raises(InputError, match="have no FrameOfReferenceUID"):
        drive(export_project(project, tmp_path / "m.dcm", fmt="dicom-seg"))
    assert not (tmp_path / "m.dcm").exists()
    project.close()


def test_export_without_prediction_says_so(tmp_path, dicom_series):
    project, _ = make_project(tmp_path, dicom_series)
    with pytest.raises(ProjectError, match="no predicted or corrected mask"):
        drive(export_project(project, tmp_path / "m.dcm", fmt="dicom-seg"))
    assert not (tmp_path / "m.dcm").exists()
    project.close()


def test_seg_of_another_series_is_refused_with_its_uid(seg_project, tmp_path):
    project, *_ = seg_project
    other = tmp_path / "other"
    write_synthetic_series(other, 3, series_uid="1.2.826.0.1.3680043.8.498.77.99", shape=(12, 16), extra=PATIENT)
    other_project, osid = make_project(tmp_path / "o", other)
    ostudy = open_study(other)
    add_prediction(other_project, osid, ostudy, lesion_mask(ostudy, [0]))
    drive(export_project(other_project, tmp_path / "other.dcm", fmt="dicom-seg"))
    other_project.close()
    with pytest.raises(InputError, match=r"1\.2\.826\.0\.1\.3680043\.8\.498\.77\.99.*not a study of the project"):
        load_seg(project, tmp_path / "other.dcm")


def test_non_seg_dicom_and_non_dicom_are_refused_as_masks(tmp_path, dicom_series):
    ct_file = sorted(dicom_series.iterdir())[0]
    with pytest.raises(InputError, match="CT Image Storage object, not a Segmentation"):
        read_seg(ct_file)
    text = tmp_path / "notes.dcm"
    text.write_text("hello")
    with pytest.raises(InputError, match="not a DICOM file"):
        read_seg(text)


def test_cli_export_dicom_seg_info_and_overwrite(seg_project, tmp_path, capsys):
    project, sid, study, mask, _ = seg_project
    folder = str(project.folder)
    project.close()
    out = tmp_path / "cli.dcm"
    assert main(["-q", "export", "--project", folder, "--format", "dicom-seg", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["seg"]["frames"] == 2
    assert main(["-q", "export", "--project", folder, "--format", "dicom-seg", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already exist" in err and err.count("\n") == 1
    assert main(["-q", "export", "--project", folder, "--format", "dicom-seg", "--out", str(out),
                 "--overwrite"]) == 0
    capsys.readouterr()
    assert main(["info", str(out), "--project", folder]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "dicom-seg" and info["project_source"] == sid
    assert info["referenced_series_uids"] == [SERIES_UID] and info["frames"] == 2
    assert info["infected_pixels"] == int(mask.sum())
    assert info["infected_ml"] == pytest.approx(mask.sum() * np.prod(study.spacing) / 1000, abs=1e-3)
    # a SEG into the study's own folder is refused: export never writes into a source
    assert main(["-q", "export", "--project", folder, "--format", "dicom-seg",
                 "--out", str(tmp_path / "ct" / "seg.dcm")]) == 2
    assert "Refusing to write" in capsys.readouterr().err


def test_cli_dicom_seg_of_a_nifti_name_is_refused(seg_project, tmp_path, capsys):
    project, *_ = seg_project
    folder = str(project.folder)
    project.close()
    assert main(["-q", "export", "--project", folder, "--format", "dicom-seg", "--out",
                 str(tmp_path / "m.nii.gz")]) == 2
    assert "NIfTI file name, but the format is dicom-seg" in capsys.readouterr().err


# --- the real series in ../shared (skipped when absent) -------------------------------------------------------

REAL = {"ct3slice": "ct-samples/dicom_dcmqi_ct3slice",
        "totalseg20_jpeg2000": "ct-samples/totalseg_ct/dicom_series",
        "ge_tilt": "ct-samples/dicom_dcm_qa_ct_ge_tilt"}


def with_uids_restored(src, folder):
    """A copy of the 20-slice series, whose anonymiser blanked its UIDs, with UIDs put back (the JPEG 2000 pixel
    data kept as they are): the SOP Instance UID from each file's meta header, new study and series UIDs."""
    from pydicom.uid import generate_uid

    study_uid, series_uid = generate_uid(), generate_uid()
    folder.mkdir()
    for path in sorted(src.iterdir()):
        if path.suffix == ".md":
            continue
        ds = pydicom.dcmread(path)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.save_as(folder / path.name)
    return folder


def test_series_with_blanked_uids_is_refused_clearly(shared_data, tmp_path):
    src = shared_data / REAL["totalseg20_jpeg2000"]
    study = open_study(src)
    project, sid = make_project(tmp_path, src)
    add_prediction(project, sid, study, lesion_mask(study, [3]))
    with pytest.raises(InputError, match="have no StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID"):
        drive(export_project(project, tmp_path / "m.dcm", fmt="dicom-seg"))
    assert not (tmp_path / "m.dcm").exists()
    project.close()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REAL))
def test_real_series_round_trip(shared_data, tmp_path, name):
    src = shared_data / REAL[name]
    if name == "totalseg20_jpeg2000":
        src = with_uids_restored(src, tmp_path / "totalseg20")
        assert pydicom.dcmread(next(src.iterdir())).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
    study = open_study(src)
    project, sid = make_project(tmp_path, src)
    mask = lesion_mask(study, [0, study.n_slices - 1])
    add_prediction(project, sid, study, mask)
    events = []
    result = drive(export_project(project, tmp_path / f"{name}.dcm", fmt="dicom-seg"), events.append)
    drive(export_project(project, tmp_path / f"{name}_nifti.nii.gz"))
    assert result["seg"]["frames"] == 2
    if name == "ge_tilt":      # exports, with the geometry warning said
        assert any(isinstance(e, Message) and "gantry tilt" in e.text for e in events)

    ds = pydicom.dcmread(tmp_path / f"{name}.dcm")
    frames = ds.pixel_array.reshape(-1, *study.shape[1:])
    headers = {str(h.SOPInstanceUID): h for h in (pydicom.dcmread(p, stop_before_pixels=True)
                                                  for p in src.rglob("*") if p.is_file() and p.suffix != ".md")}
    for item, frame in zip(ds.PerFrameFunctionalGroupsSequence, frames):
        uid = frame_source_uid(item)
        np.testing.assert_allclose([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient],
                                   [float(v) for v in headers[uid].ImagePositionPatient], atol=1e-3)
        np.testing.assert_array_equal(frame, mask[study.slice_ids.index(uid)])
    assert str(ds.PatientID) == str(headers[study.slice_ids[0]].get("PatientID", ""))
    _, _, back, _ = load_seg(project, tmp_path / f"{name}.dcm")
    nifti = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / f"{name}_nifti.nii.gz")))
    np.testing.assert_array_equal(back, nifti)
    np.testing.assert_array_equal(back, mask)
    project.close()


def test_cli_folder_export_one_seg_per_dicom_study_others_skipped(seg_project, tmp_path, capsys):
    """`export --format dicom-seg --out DIR` with a DICOM and a NIfTI study: the DICOM study gets its SEG, the
    NIfTI one is skipped with a warning and listed with its reason; as nifti both are written."""
    project, sid, study, mask, run = seg_project
    vol = tmp_path / "vol.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 10, 10), np.int16)), str(vol))
    other = project.add_source(vol, "nifti")
    save_prediction(run, other, np.ones((4, 10, 10), np.uint8), open_study(vol))
    folder = str(project.folder)
    project.close()
    out = tmp_path / "segs"
    assert main(["export", "--project", folder, "--format", "dicom-seg", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert sorted(p.name for p in out.iterdir()) == ["ct_infection.dcm", "ct_infection.quant.csv",
                                                     "ct_infection.quant.json"]
    assert [r["source"] for r in result["studies"]] == [sid] and result["studies"][0]["seg"]["frames"] == 2
    assert result["skipped"][0]["source"] == other and "not from DICOM" in result["skipped"][0]["reason"]
    assert f"{other} skipped" in captured.err and "--format nifti" in captured.err
    assert read_seg(out / "ct_infection.dcm").referenced_series_uids == [SERIES_UID]
    assert main(["-q", "export", "--project", folder, "--format", "dicom-seg", "--out", str(out)]) == 2
    assert "already exist" in capsys.readouterr().err
    assert main(["-q", "export", "--project", folder, "--out", str(tmp_path / "nii")]) == 0
    assert len(json.loads(capsys.readouterr().out)["studies"]) == 2
    # only the NIfTI study chosen: nothing can be a SEG, said in one line
    assert main(["-q", "export", "--project", folder, "--format", "dicom-seg", "--out", str(tmp_path / "none"),
                 "--source", other]) == 2
    err = capsys.readouterr().err
    assert "needs a study opened from DICOM" in err and err.count("\n") == 1
    assert not (tmp_path / "none").exists()
