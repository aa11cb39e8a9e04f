"""Image-folder studies, labels CSV checks and the synthetic demo."""
import numpy as np
import pytest
from PIL import Image

from covidseg_core.demo import make_demo_volume, write_demo
from covidseg_core.errors import InputError, LabelError
from covidseg_core.io.images import read_image_folder


def _png(path, arr, mode=None):
    Image.fromarray(arr, mode=mode).save(path) if mode else Image.fromarray(arr).save(path)


def test_demo_volume_has_lesions_only_in_lungs_and_labels_match():
    hu, mask, labels = make_demo_volume(seed=1, n_slices=20, size=96)
    assert hu.shape == mask.shape == (20, 96, 96)
    assert "infected" in labels and "clean" in labels
    for z, lab in enumerate(labels):
        assert (mask[z].sum() > 0) == (lab == "infected")
    # lesions are denser than the aerated lung around them and lie inside the body
    assert hu[mask > 0].mean() > -600
    assert hu.min() < -900 and hu.max() > 500          # air and bone present: HU, not intensities


def test_demo_is_a_chest_ct_with_labels_a_reader_would_give():
    from scipy import ndimage

    from covidseg_core.phantom.chest import MIN_LESION_PIXELS

    hu, mask, labels = make_demo_volume()
    again, mask_again, _ = make_demo_volume()
    assert np.array_equal(hu, again) and np.array_equal(mask, mask_again)          # seeded
    assert not np.array_equal(make_demo_volume(seed=1)[1], mask)
    # air around the patient, aerated lung, fat, soft tissue and bone, each near its HU
    assert abs(np.median(hu[:, :4, :4]) + 1000) < 30
    mid = hu[len(hu) // 2]
    lung = mid[(mid > -980) & (mid < -600)]
    assert lung.size > 0.15 * mid.size and -900 < np.median(lung) < -780
    assert ((mid > -130) & (mid < -70)).mean() > 0.03 and ((mid > 20) & (mid < 80)).mean() > 0.05
    assert (hu > 700).any(axis=(1, 2)).all()                       # a vertebra or ribs on every slice
    # lesions on some slices only, none at the apex; every piece of lesion is big enough to see
    n_inf = labels.count("infected")
    assert 0.25 * len(labels) <= n_inf <= 0.6 * len(labels) and labels[-1] == "clean"
    for z in np.flatnonzero(mask.any(axis=(1, 2))):
        lab, n = ndimage.label(mask[z])
        assert ndimage.sum(mask[z], lab, range(1, n + 1)).min() >= MIN_LESION_PIXELS
    # denser than the lung they sit in: ground glass raises it by 100 HU or more, consolidation more
    shown = mask > 0
    around = ndimage.binary_dilation(shown, iterations=3, structure=np.ones((1, 3, 3), bool)) & ~shown & (hu < -600)
    assert np.median(hu[shown]) > np.median(hu[around]) + 100


def test_write_demo_gives_both_forms(tmp_path):
    info = write_demo(tmp_path / "d", n_slices=12, size=64)
    imgs = read_image_folder(tmp_path / "d")
    assert imgs.n_slices == 12 and imgs.shape[1:] == (64, 64) and not imgs.is_hu
    labels = imgs.meta["labels"]
    assert sum(r["label"] == "infected" for r in labels.values()) == info["infected"]
    assert (tmp_path / "d" / "volume" / "ct.nii.gz").is_file()
    assert len(list((tmp_path / "d" / "masks").glob("*.png"))) == 12


def test_rgb_image_is_converted_with_a_warning(tmp_path):
    _png(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    _png(tmp_path / "b.png", np.full((8, 8, 3), 100, np.uint8))
    study = read_image_folder(tmp_path)
    assert study.shape == (2, 8, 8)
    assert any("b.png" in w and "gray" in w for w in study.warnings)


def test_16_bit_images_keep_their_range(tmp_path):
    arr = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    Image.fromarray(arr).save(tmp_path / "a.png")
    study = read_image_folder(tmp_path)
    assert study.array.max() == 63000 and study.meta["bits"] == 16


def test_mixed_sizes_are_refused_with_the_sizes_named(tmp_path):
    _png(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    _png(tmp_path / "b.png", np.zeros((8, 10), np.uint8))
    with pytest.raises(InputError, match="different sizes"):
        read_image_folder(tmp_path)


def test_labels_naming_missing_files_or_unknown_labels(tmp_path):
    _png(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "labels.csv").write_text("file,label\na.png,infected\nghost.png,clean\n")
    with pytest.raises(LabelError, match="ghost.png"):
        read_image_folder(tmp_path)
    (tmp_path / "labels.csv").write_text("file,label\na.png,sick\n")
    with pytest.raises(LabelError, match="unknown label 'sick'"):
        read_image_folder(tmp_path)
    (tmp_path / "labels.csv").write_text("name,class\na.png,infected\n")
    with pytest.raises(LabelError, match="file,label"):
        read_image_folder(tmp_path)


def test_empty_and_unreadable_image_folders(tmp_path):
    with pytest.raises(InputError, match="No PNG/JPG"):
        read_image_folder(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="broken.png"):
        read_image_folder(tmp_path)
