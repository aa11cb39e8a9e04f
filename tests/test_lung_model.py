"""The learned lung field: packaged weights load, damaged weights give a clear error and a threshold fallback,
slices without lung give an empty field, and on real zenodo-dev slices it agrees with the expert lung masks."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from covidseg_core.errors import CovidSegError
from covidseg_core.imaging.lung_model import (LungModelError, compute_lung_fields, default_weights_path,
                                              load_lung_model, parameter_count, predict_lung_fields,
                                              predict_lung_probabilities, threshold_lung_fields)

SHARED = Path(__file__).resolve().parents[2] / "shared"
ZENODO = SHARED / "data" / "zenodo-dev"
# slices spread over several volumes and levels (apex to base of the kept middle 60%)
REAL_SLICES = ("c02_0165", "c05_0600", "c07_0741", "r02_1316", "r03_1430")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)


@pytest.fixture(scope="module")
def model(one_torch_thread):
    return load_lung_model(device="cpu")


def test_packaged_weights_load_as_a_small_network(model):
    assert default_weights_path().is_file()
    assert default_weights_path().with_suffix(".md").is_file()       # the model card ships beside it
    assert 50_000 < parameter_count(model) < 1_000_000
    assert not model.training


@pytest.mark.parametrize("damage", ["truncated", "random bytes", "flipped weight bytes", "missing"])
def test_damaged_weights_give_a_clear_error_and_a_threshold_fallback(tmp_path, damage, caplog):
    path = tmp_path / "lung_field.safetensors"
    shutil.copyfile(default_weights_path(), path)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(len(data)))
    elif damage == "flipped weight bytes":       # header intact, a few weights changed
        arr = bytearray(data)
        for i in range(len(arr) - 4000, len(arr) - 3000, 97):
            arr[i] ^= 0xFF
        path.write_bytes(bytes(arr))
    else:
        path.unlink()
    with pytest.raises(LungModelError) as err:
        load_lung_model(path, device="cpu")
    assert isinstance(err.value, CovidSegError)
    message = str(err.value)
    assert str(path) in message
    assert ("missing" if damage == "missing" else "damaged") in message
    assert "train_lung_model.py" in message or "Reinstall" in message        # says what to do

    rng = np.random.default_rng(1)
    images = np.clip(rng.normal(0.5, 0.2, (2, 64, 64)), 0, 1).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="covidseg_core.imaging.lung_model"):
        fields, warning = compute_lung_fields(images, method="model", path=path, device="cpu")
    assert warning is not None and "threshold" in warning and str(path) in warning
    assert any("threshold" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(fields, threshold_lung_fields(images))


def test_method_threshold_and_unknown_method():
    images = np.zeros((1, 32, 32), np.float32)
    fields, warning = compute_lung_fields(images, method="threshold")
    assert warning is None and fields.shape == images.shape and not fields.any()
    with pytest.raises(ValueError):
        compute_lung_fields(images, method="otsu")


@pytest.mark.parametrize("value", [0.0, 0.23, 0.45, 0.9, 1.0])
def test_slices_without_lung_give_an_empty_field(model, value):
    """All air (0 or the lung window's air level 0.23), uniform soft tissue, saturated: no lung, no error."""
    rng = np.random.default_rng(2)
    images = np.clip(value + rng.normal(0, 0.01, (2, 256, 256)), 0, 1).astype(np.float32)
    fields = predict_lung_fields(model, images)
    assert fields.dtype == bool and fields.shape == images.shape
    assert not fields.any()
    assert predict_lung_fields(model, np.zeros((0, 64, 64), np.float32)).shape == (0, 64, 64)


def _real_slices(shared_data: Path):
    if not ZENODO.is_dir():
        pytest.skip("zenodo-dev is not available")

    def whole(sub: str, name: str) -> np.ndarray:
        halves = [cv2.imread(str(ZENODO / sub / f"{name}_{side}.png"), cv2.IMREAD_GRAYSCALE) for side in "LR"]
        assert all(h is not None for h in halves), name
        return np.hstack(halves)

    images = np.stack([whole("images", n) for n in REAL_SLICES]).astype(np.float32) / 255.0
    lungs = np.stack([whole("lungs", n) for n in REAL_SLICES]) > 127
    return images, lungs


def test_real_slices_whole_half_and_512_agree_with_expert_lungs(model, shared_data):
    images, lungs = _real_slices(shared_data)
    whole = predict_lung_fields(model, images)
    assert whole.shape == images.shape and whole.dtype == bool
    assert dice(whole, lungs) >= 0.9
    assert min(dice(f, g) for f, g in zip(whole, lungs)) >= 0.8

    left = predict_lung_fields(model, np.ascontiguousarray(images[:, :, :128]))
    right = predict_lung_fields(model, np.ascontiguousarray(images[:, :, 128:]))
    assert left.shape == (len(images), 256, 128)
    assert dice(np.concatenate([left, right], axis=2), lungs) >= 0.9

    big = np.stack([cv2.resize(s, (512, 512), interpolation=cv2.INTER_LINEAR) for s in images])
    field512 = predict_lung_fields(model, big)
    assert field512.shape == (len(images), 512, 512)
    small = np.stack([cv2.resize(f.astype(np.uint8), (256, 256), interpolation=cv2.INTER_NEAREST) > 0
                      for f in field512])
    assert dice(small, lungs) >= 0.9

    one = predict_lung_fields(model, images[0])                     # one 2D slice in, one 2D field out
    assert one.shape == (256, 256) and dice(one, whole[0]) > 0.99


def test_mirror_averaging_gives_the_mirrored_slice_the_mirrored_field(model):
    # with mirror averaging the answer no longer depends on which side the patient's right lung is on; a mistake
    # in flipping the second pass back would break this. Half-slice shapes (no padding), an asymmetric input.
    rng = np.random.default_rng(3)
    images = np.full((2, 256, 128), 0.7, np.float32)
    cv2.ellipse(images[0], (50, 120), (30, 80), 10, 0, 360, 0.15, -1)
    cv2.ellipse(images[1], (80, 140), (25, 60), -20, 0, 360, 0.2, -1)
    images = np.clip(images + rng.normal(0, 0.03, images.shape), 0, 1).astype(np.float32)
    prob = predict_lung_probabilities(model, images)
    prob_mirrored = predict_lung_probabilities(model, np.ascontiguousarray(images[:, :, ::-1]))
    np.testing.assert_allclose(prob_mirrored[:, :, ::-1], prob, atol=1e-5)
    plain = predict_lung_probabilities(model, images, mirror=False)
    assert np.abs(plain - prob).max() > 1e-3                   # the averaging does change the answer


def test_compute_lung_fields_uses_the_packaged_model(shared_data):
    images, lungs = _real_slices(shared_data)
    fields, warning = compute_lung_fields(images[:2], device="cpu")
    assert warning is None
    assert dice(fields, lungs[:2]) >= 0.9


def test_weights_ship_as_package_data():
    """pip installs (wheels) carry covidseg_core/resources/ only when pyproject names it as package data."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["covidseg_core"]
    assert "resources/*.safetensors" in patterns and "resources/*.md" in patterns
    assert default_weights_path().parent == root / "covidseg_core" / "resources"


def test_clean_field_keeps_aerated_lungs_and_drops_tissue_blobs():
    """Two dark (aerated) lungs are kept with their small holes filled; a bright tissue blob the network might
    call lung, a third component and specks below the minimum area are dropped."""
    from covidseg_core.imaging.lung_model import clean_field

    img = np.full((128, 128), 0.9, np.float32)              # soft tissue
    mask = np.zeros((128, 128), bool)
    for x0 in (10, 70):                                    # two lungs: dark, in the mask, a vessel hole each
        img[20:100, x0:x0 + 40] = 0.3
        mask[20:100, x0:x0 + 40] = True
        mask[50:53, x0 + 20:x0 + 23] = False
    mask[105:125, 40:90] = True                            # a tissue blob (below the lung bases)
    mask[2:4, 2:4] = True                                  # a speck
    field = clean_field(mask, img)
    assert field[20:100, 10:50].all() and field[20:100, 70:110].all()     # holes filled
    assert not field[105:125].any() and not field[2:4, 2:4].any()
    # without the image (no aeration check) the blob is one of the two largest components only if it is larger
    assert clean_field(mask).sum() == field.sum()


def _clean_field_on_the_whole_slice(mask, max_lungs=2, min_area_frac=0.004, hole_max_frac=0.05):
    """The reference clean_field (no aeration check): holes filled on the whole slice, as before the bounding-box
    speed-up."""
    from scipy import ndimage as ndi

    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = [1 + int(k) for k in np.argsort(areas)[::-1] if areas[k] >= min_area_frac * mask.size][:max_lungs]
    field = np.zeros_like(mask)
    for k in keep:
        lung = lab == k
        holes, nh = ndi.label(ndi.binary_fill_holes(lung) & ~lung)
        if nh:
            small = np.flatnonzero(np.bincount(holes.ravel())[1:] <= hole_max_frac * lung.sum()) + 1
            lung |= np.isin(holes, small)
        field |= lung
    return field


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), blur=st.sampled_from([1.5, 3.0, 6.0]), level=st.floats(0.3, 0.7))
def test_clean_field_fills_the_same_holes_as_on_the_whole_slice(seed, blur, level):
    """Filling each component's holes within its bounding box (the speed-up) gives the whole-slice answer, also for
    components that touch the slice's edge and holes that touch their box's edge."""
    from scipy import ndimage as ndi

    from covidseg_core.imaging.lung_model import clean_field

    rng = np.random.default_rng(seed)
    noise = ndi.gaussian_filter(rng.random((72, 96)), blur)
    mask = noise > np.quantile(noise, level)
    assert np.array_equal(clean_field(mask), _clean_field_on_the_whole_slice(mask))
