"""Lung field and density saliency: synthetic slices (HU and 8-bit), consolidations kept, half slices, real data."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from covidseg_core.imaging.lungs import density_prior, lung_field, lung_saliency, otsu_threshold
from covidseg_core.imaging.windowing import LUNG_WINDOW, apply_window

from stage1_synthetic import ellipse, synthetic_slice

SHARED = Path(__file__).resolve().parents[2] / "shared"
ZENODO = SHARED / "data" / "zenodo-dev"


def dice(a, b):
    return 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)


def test_otsu_splits_two_levels():
    v = np.concatenate([np.full(100, 0.2), np.full(100, 0.8)])
    assert 0.2 <= otsu_threshold(v) < 0.8


@pytest.mark.parametrize("eight_bit", [False, True])
def test_lung_field_matches_synthetic_lungs(eight_bit):
    rng = np.random.default_rng(3)
    hu, _, lungs = synthetic_slice(rng, infected=False, size=128)
    img = apply_window(hu, *LUNG_WINDOW)
    if eight_bit:   # an exported 8-bit slice, read back as /255
        img = np.round(img * 255).astype(np.uint8) / 255.0
    field = lung_field(img)
    assert field.dtype == bool and field.shape == img.shape
    assert dice(field, lungs) >= 0.9
    assert not field[:5].any() and not field[:, :5].any()      # air around the body is not lung


def test_consolidation_at_the_pleura_stays_inside_the_field():
    rng = np.random.default_rng(0)
    hu, _, lungs = synthetic_slice(rng, infected=False, size=128)
    # a dense consolidation (soft-tissue bright) against the lateral pleura of the left lung. (One that fills
    # the whole posterior third of a lung is still lost: nothing in the image then shows where the lung ends.)
    lesion = lungs & ellipse(hu.shape, 62, 20, 14, 10)
    hu[lesion] = 30.0
    field = lung_field(apply_window(hu, *LUNG_WINDOW))
    assert (field & lesion).sum() / lesion.sum() >= 0.85
    assert dice(field, lungs) >= 0.85


def test_half_slice_lung_touching_the_cut_is_kept():
    rng = np.random.default_rng(1)
    hu, _, lungs = synthetic_slice(rng, infected=False, size=128)
    half = apply_window(hu[:, 40:], *LUNG_WINDOW)     # cut through the left lung: it touches the left edge
    field = lung_field(half)
    assert dice(field, lungs[:, 40:]) >= 0.85


def test_empty_and_flat_slices_give_an_empty_field():
    assert not lung_field(np.zeros((64, 64), np.float32)).any()
    assert not lung_field(np.ones((64, 64), np.float32)).any()
    with pytest.raises(ValueError):
        lung_field(np.zeros((2, 64, 64), np.float32))


def test_saliency_favours_denser_tissue():
    rng = np.random.default_rng(2)
    hu, mask, lungs = synthetic_slice(rng, infected=True, size=128)
    img = apply_window(hu, *LUNG_WINDOW)
    sal = lung_saliency(img, lungs)
    assert np.median(sal[mask > 0]) > 1.0 > np.median(sal[lungs & (mask == 0)])
    assert (sal[~lungs] == 0).all()
    prior = density_prior(img, lungs)
    assert prior.sum() == pytest.approx(0.3 * lungs.sum(), rel=0.1)
    assert not (prior & ~lungs).any()


@pytest.fixture(scope="module")
def zenodo_sample():
    if not (ZENODO / "labels.csv").is_file():
        pytest.skip("../shared/data/zenodo-dev is absent")
    from PIL import Image
    names = sorted(p.name for p in (ZENODO / "images").glob("*.png"))[::50]
    load = lambda d, n: np.asarray(Image.open(ZENODO / d / n))   # noqa: E731
    return [(load("images", n) / 255.0, load("lungs", n) > 0, load("masks", n) > 0) for n in names]


def test_lung_field_on_real_half_slices(zenodo_sample):
    dices, inside, total = [], 0, 0
    for img, gt_lung, gt_inf in zenodo_sample:
        field = lung_field(img)
        if gt_lung.any():
            dices.append(dice(field, gt_lung))
        inside += (field & gt_inf).sum()
        total += gt_inf.sum()
    # measured on the whole set: Dice ~0.88, ~72% of infection inside (see docs/results_stage1.md)
    assert np.mean(dices) >= 0.8
    assert inside / total >= 0.6
