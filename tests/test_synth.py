"""The lesion synthesiser's invariants: changes stay inside the lung and the mask, seeded, HU and 8-bit units."""
import numpy as np
import pytest

from covidseg_core.synth.calibrate import calibrated_params, lesion_levels
from covidseg_core.synth.lesions import LesionParams, intensity_levels, synthesize
from covidseg_core.synth.source import SyntheticSource


def chest_slice(h=128, w=96, hu=True, seed=0):
    """A body (soft tissue) holding one aerated lung with a few vessels; HU or [0, 1] lung-window units."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    body = ((yy - h / 2) / (h * 0.48)) ** 2 + ((xx - w / 2) / (w * 0.48)) ** 2 < 1
    lung = ((yy - h / 2) / (h * 0.32)) ** 2 + ((xx - w / 2) / (w * 0.3)) ** 2 < 1
    img = np.full((h, w), -1000.0)
    img[body] = 40.0
    img[lung] = -850.0
    for _ in range(6):                              # vessels
        cy, cx = rng.integers(h // 3, 2 * h // 3), rng.integers(w // 3, 2 * w // 3)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < 4] = 0.0
    img += rng.normal(0, 15, img.shape)
    if not hu:
        img = np.clip((img + 1350) / 1500, 0, 1)
    return img.astype(np.float32), lung


@pytest.mark.parametrize("hu", [True, False])
def test_changes_only_inside_lung_and_mask(hu):
    img, lung = chest_slice(hu=hu)
    for seed in range(10):
        out, mask = synthesize(img, lung, np.random.default_rng(seed), value_range=None if hu else (0, 1))
        changed = out != img
        assert mask.any() and changed.any()
        assert not (changed & ~mask).any(), "a pixel outside the lesion mask changed"
        assert not (mask & ~lung).any(), "the lesion mask leaves the lung field"
        # lesions are denser than the lung they sit in
        assert out[mask].mean() > img[mask].mean()


def test_units_follow_the_image():
    """In HU a ground-glass lesion is a raise of roughly 100-700 HU; in [0, 1] the same share of the gap."""
    img, lung = chest_slice(hu=True)
    params = LesionParams(consolidation_share=0.0, ggo_level=(0.3, 0.3), ramp_px=0)
    out, mask = synthesize(img, lung, np.random.default_rng(1), params, value_range=None)
    raise_hu = float(np.median((out - img)[mask]))
    assert 150 < raise_hu < 400          # 0.3 x (40 - (-850)) = 267 HU, with texture
    img01, _ = chest_slice(hu=False)
    out01, mask01 = synthesize(img01, lung, np.random.default_rng(1), params)
    assert abs(float(np.median((out01 - img01)[mask01])) - raise_hu / 1500) < 0.05


def test_only_lesions_large_enough_consolidate():
    """Consolidation pulls a lesion to soft-tissue density; a small one stays ground glass (a small dense blob
    would read as a vessel seen end-on)."""
    img, lung = chest_slice(hu=True)
    levels = intensity_levels(img, lung)

    def median_hu(radius):
        params = LesionParams(n_lesions=(1, 1), radius=radius, consolidation_share=1.0, ggo_level=(0.2, 0.2),
                              ramp_px=0, patchiness=(0.0, 0.0))
        out, mask = synthesize(img, lung, np.random.default_rng(3), params, value_range=None)
        return float(np.median(out[mask]))

    assert median_hu((0.3, 0.4)) > levels.tissue - 0.3 * levels.gap        # large: consolidation
    assert median_hu((0.04, 0.06)) < levels.lung + 0.4 * levels.gap       # small: ground glass (a raise of 0.2)
    with pytest.raises(ValueError, match="consolidation_min_radius"):
        LesionParams(consolidation_min_radius=1.5)


def test_seeded_and_reproducible():
    img, lung = chest_slice(hu=False)
    a = synthesize(img, lung, np.random.default_rng(7))
    b = synthesize(img, lung, np.random.default_rng(7))
    c = synthesize(img, lung, np.random.default_rng(8))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_no_lung_no_lesion():
    img, _ = chest_slice(hu=False)
    out, mask = synthesize(img, np.zeros(img.shape, bool), np.random.default_rng(0))
    assert not mask.any() and np.array_equal(out, img)


def test_out_of_range_parameters_are_refused():
    with pytest.raises(ValueError):
        LesionParams(radius=(0.5, 0.1))
    with pytest.raises(ValueError):
        LesionParams(ggo_level=(0.0, 0.5))


def test_source_is_deterministic_per_epoch_and_skips_slices_without_lung():
    imgs, lungs = zip(*(chest_slice(hu=False, seed=s) for s in range(3)))
    imgs, lungs = np.stack(imgs), np.stack(lungs)
    lungs[2] = False                                   # a slice below the bases
    src = SyntheticSource(imgs, lungs, seed=3, work_shape=(64, 48))
    assert len(src) == 2 and src.n_skipped == 1
    x1, y1 = src.epoch_pairs(5, 6)
    x2, y2 = src.epoch_pairs(5, 6)
    x3, _ = src.epoch_pairs(6, 6)
    assert x1.shape == (6, 1, 64, 48) and y1.shape == (6, 64, 48)
    assert (x1 == x2).all() and (y1 == y2).all() and not (x1 == x3).all()
    assert set(y1.unique().tolist()) <= {0, 1} and y1.any()


def test_calibration_reads_the_level_of_confident_cam_regions():
    img, lung = chest_slice(hu=False)
    lv = intensity_levels(img, lung)
    images, lungs, cams = [], [], []
    for seed in range(8):                    # lesions of level ~0.5 where the CAM is high
        out, mask = synthesize(img, lung, np.random.default_rng(seed),
                               LesionParams(consolidation_share=0, ggo_level=(0.5, 0.5)), lv)
        images.append(out), lungs.append(lung), cams.append(mask.astype(np.float32))
    g = lesion_levels(np.stack(images), np.stack(lungs), np.stack(cams))
    assert len(g) == 8 and 0.35 < np.median(g) < 0.65
    params, note = calibrated_params(np.stack(images), np.stack(lungs), np.stack(cams))
    assert note["calibrated"] and params.ggo_level[0] < 0.5 < params.ggo_level[1]
    few, note = calibrated_params(np.stack(images[:2]), np.stack(lungs[:2]), np.stack(cams[:2]))
    assert not note["calibrated"] and few == LesionParams()
