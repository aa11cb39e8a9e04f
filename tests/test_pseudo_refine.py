"""Pseudo-mask refinement: per-study density level from the clean slices, connected-component clean-up."""
from __future__ import annotations

import numpy as np
import pytest

from covidseg_core.constants import FOREGROUND
from covidseg_core.data import SliceSet
from covidseg_core.weak.config import Stage1Config
from covidseg_core.weak.job import study_clean_levels
from covidseg_core.weak.pseudo_masks import (PseudoMaskParams, clean_density_level, make_pseudo_mask,
                                             remove_small_components)


def test_remove_small_components_keeps_the_large_ones():
    m = np.zeros((20, 20), bool)
    m[1:3, 1:3] = True          # 4 px
    m[10:16, 10:16] = True      # 36 px
    out = remove_small_components(m, 5)
    assert not out[1:3, 1:3].any() and out[10:16, 10:16].all()
    assert (remove_small_components(m, 0) == m).all()
    assert not remove_small_components(np.zeros((4, 4), bool), 3).any()


def test_clean_density_level_is_the_quantile_of_clean_lung_saliency():
    lung = np.zeros((10, 10), bool)
    lung[2:8, 2:8] = True
    sal = np.where(lung, np.linspace(0, 1, 100).reshape(10, 10), 99.0)   # 99 outside the lung: ignored
    lv = clean_density_level([sal], [lung], 0.9)
    assert lv == pytest.approx(np.quantile(sal[lung], 0.9))
    assert (sal[lung] > lv).mean() <= 0.1 + 1 / 36     # one pixel of interpolation
    assert clean_density_level([sal], [np.zeros_like(lung)], 0.9) is None
    assert clean_density_level([], [], 0.9) is None


def _slice(shape=(32, 32)):
    lung = np.zeros(shape, bool)
    lung[4:28, 4:28] = True
    cam = np.zeros(shape, np.float32)
    cam[4:28, 4:20] = 1.0
    sal = np.zeros(shape, np.float32)
    sal[6:14, 6:14] = 3.0        # a dense lesion, 64 px, under the CAM
    sal[20, 8] = 3.0             # a dense speck, 1 px, under the CAM
    sal[16:26, 6:18] = 0.5       # faint density, under the CAM
    return np.full(shape, 0.5, np.float32), cam, lung, sal


def test_make_pseudo_mask_with_density_level_and_clean_up():
    image, cam, lung, sal = _slice()
    plain = make_pseudo_mask(image, cam, lung, PseudoMaskParams(sal_fg=0.0), saliency=sal) == FOREGROUND
    assert plain[6:14, 6:14].all() and plain[20, 8] and plain[16:26, 6:18].all()
    p = PseudoMaskParams(sal_fg=0.0, clean_quantile=0.9, min_component_frac=4 / 1024)
    refined = make_pseudo_mask(image, cam, lung, p, saliency=sal, clean_level=1.0)
    fg = refined == FOREGROUND
    assert fg[6:14, 6:14].all()                  # the dense lesion stays
    assert not fg[16:26, 6:18].any()             # below the study's clean-slice level: not foreground
    assert not fg[20, 8]                         # a speck under min_component_frac: dropped
    assert not fg[:, 20:].any()                  # outside the CAM as before
    # no level for this study (no clean slice): only the clean-up applies
    fg2 = make_pseudo_mask(image, cam, lung, p, saliency=sal, clean_level=None) == FOREGROUND
    assert fg2[16:26, 6:18].all() and fg2[6:14, 6:14].all()


def test_study_clean_levels_per_group_with_a_pooled_fallback():
    rng = np.random.default_rng(0)
    n, shape = 6, (32, 32)
    images = np.full((n, *shape), 0.3, np.float32) + rng.normal(0, 0.02, (n, *shape)).astype(np.float32)
    images[2:4, 10:20, 10:20] += 0.4             # study b's clean slices hold denser spots (e.g. vessels)
    lungs = np.zeros((n, *shape), bool)
    lungs[:, 4:28, 4:28] = True
    slices = SliceSet(images=images, ids=[str(i) for i in range(n)],
                      labels=["clean", "clean", "clean", "clean", "infected", "infected"],
                      groups=["a", "a", "b", "b", "a", "c"])
    off = study_clean_levels(slices, images, lungs, Stage1Config())
    assert off == {} if Stage1Config().clean_quantile is None else set(off) == {"a", "b", None}
    levels = study_clean_levels(slices, images, lungs, Stage1Config(clean_quantile=0.95))
    assert set(levels) == {"a", "b", None}       # study c has no clean slice: it gets the pooled level
    assert levels["b"] > levels["a"]


def test_bad_refinement_options_are_input_errors():
    from covidseg_core.errors import InputError
    from covidseg_core.weak.config import check_inputs
    slices = SliceSet(images=np.zeros((1, 8, 8), np.float32), ids=["0"], labels=["clean"], groups=["a"])
    for bad in (dict(clean_quantile=1.5), dict(clean_quantile=0.0), dict(min_component_frac=-0.1)):
        with pytest.raises(InputError):
            check_inputs(slices, Stage1Config(**bad))
