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
